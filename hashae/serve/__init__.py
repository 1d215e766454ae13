"""The web page and HTTP API over a collection (`hashae serve`); needs the serve extra
(Starlette, uvicorn, python-multipart). ``pages`` renders HTML, ``app`` routes requests to
hashae.Collection."""
from .app import check_bind, create_app, serve

__all__ = ["check_bind", "create_app", "serve"]
