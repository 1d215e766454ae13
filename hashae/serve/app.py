"""``hashae serve``: a read-only web page and JSON API over one collection (Starlette + uvicorn).

A thin layer over hashae.Collection: the model and the index are loaded once and reused, and a
new collection file (an index run committed: the store's generation changed) is picked up on
the next request. Files are served by item id only, never by a path from the request. Bound to
anything but loopback, the server needs a token, and every request must carry it.
"""
from __future__ import annotations

import hmac
import ipaddress
import mimetypes
import os
import threading
from functools import lru_cache

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..collection import MAP_ITEMS, Collection, groups_from_labels
from ..ingest import ImageError, decode_bytes, thumbnail_jpeg
from ..model.config import describe_settings
from ..output import json_safe
from ..search.clustering import centre_order
from ..search.methods import CLUSTER_METHODS, DEFAULT_METHOD
from ..storage import StoreError
from . import pages

MAX_UPLOAD_BYTES = 32 << 20
MAX_UPLOAD_PIXELS = 50_000_000
MAX_K = 1000
TOKEN_COOKIE = "hashae_token"


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Service:
    """The collection behind the server: opened once, reopened when its file is replaced by a
    commit. All use goes through ``use()``, one request at a time (h5py and the cached index
    are not thread-safe; each search takes milliseconds)."""

    def __init__(self, store: str, folder: str | None = None):
        self.store, self.folder = store, folder
        self.lock = threading.Lock()
        self.coll: Collection | None = None
        self.stamp = None
        self.cache: dict = {}  # (generation, what) -> result
        with self.lock:
            self._current()

    def _current(self) -> Collection:
        st = os.stat(self.store)
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self.coll is None or stamp != self.stamp:
            fresh = Collection.open(self.store, self.folder)
            if self.coll is None or fresh.generation != self.coll.generation:
                fresh.model  # noqa: B018 - loaded once per generation
                old, self.coll, self.cache = self.coll, fresh, {}
                if old is not None:
                    old.close()
            else:
                fresh.close()
            self.stamp = stamp
        return self.coll

    def use(self, fn):
        with self.lock:
            return fn(self._current())

    def cached(self, key, fn):
        """``fn(collection)``, computed once per generation of the file."""
        def run(coll):
            k = (coll.generation, key)
            if k not in self.cache:
                self.cache[k] = fn(coll)
            return self.cache[k]
        return self.use(run)


def _int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPError(400, f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise HTTPError(400, f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _item_id(request: Request, coll: Collection) -> int:
    raw = request.path_params["item_id"]
    if not raw.isdigit() or int(raw) >= len(coll):
        raise HTTPError(404, f"no item {raw!r}")
    return int(raw)


def _hits(hits: list) -> list:
    """Hits as the API's JSON: [{"path", "distance", "id"}]."""
    return [h._asdict() for h in hits]


def _groups(method: str, k: int | None, radius: int | None):
    """Item ids per group, largest group first, as `hashae cluster` / `hashae duplicates` group."""
    def compute(coll: Collection) -> list:
        if method == "duplicates":
            return [ids.tolist() for ids in coll.ids_of(coll.duplicates(progress=False))]
        labels = coll.cluster_labels(method, k=k, radius=radius, progress=False)
        return groups_from_labels(labels, range(len(coll)))
    return compute


def _group_params(request: Request, default_method: str) -> tuple:
    method = request.query_params.get("method", default_method)
    if method not in (*CLUSTER_METHODS, "duplicates"):
        raise HTTPError(400, f"method must be {', '.join(CLUSTER_METHODS[:-1])} or {CLUSTER_METHODS[-1]}")
    k = _int(request, "k", 0, 0, 100_000) or None
    radius = request.query_params.get("radius")
    return method, k, None if radius is None else _int(request, "radius", 0, 0, 256)


def create_app(store: str, folder: str | None = None, token: str | None = None) -> Starlette:
    """The ASGI app over the collection at ``store`` (see the module docstring)."""
    service = Service(store, folder)
    if service.coll.kind != "images":  # its pages are pictures
        service.coll.close()
        raise StoreError(f"{store} is a collection of vectors; the server shows images (query vectors with "
                         "`hashae query --vector`)")

    def describe_model(coll) -> str:
        return describe_settings(coll.reader.model_config())

    def home(request):
        page_no = _int(request, "page", 0, 0, 10**9)

        def render(coll):
            n = len(coll)
            ids = list(range(page_no * pages.PER_PAGE, min(n, (page_no + 1) * pages.PER_PAGE)))
            return pages.home(coll.info(), describe_model(coll), list(zip(ids, coll.paths(ids))), page_no,
                              -(-n // pages.PER_PAGE))
        return HTMLResponse(service.use(render))

    def item_page(request):
        def render(coll):
            i = _item_id(request, coll)
            hits = coll.similar(i, 24, exclude_self=True)
            return pages.item(i, coll.paths([i])[0], [(h.id, h.path, h.distance) for h in hits])
        return HTMLResponse(service.use(render))

    def group_page(title, base, default_method):
        def endpoint(request):
            method, k, radius = _group_params(request, default_method)
            page_no = _int(request, "page", 0, 0, 10**9)
            members = service.cached(("groups", method, k, radius), _groups(method, k, radius))
            first = page_no * pages.GROUPS_PER_PAGE
            codes = service.cached(("codes",), lambda coll: coll.codes)
            # each group's members nearest its centre code first: the ones that show what it is
            shown_groups = [[g[j] for j in centre_order(codes[g])] for g in members[first:first + pages.GROUPS_PER_PAGE]]

            def render(coll):
                flat = [i for g in shown_groups for i in g[:pages.GROUP_THUMBS]]
                names = dict(zip(flat, coll.paths(flat))) if flat else {}
                rows = [[(i, names.get(i, "")) for i in g] for g in shown_groups]
                params = {"method": method} if base == "/clusters" else {}
                return pages.groups(title, rows, first, len(members), page_no,
                                    -(-len(members) // pages.GROUPS_PER_PAGE), base, params)
            return HTMLResponse(service.use(render))
        return endpoint

    def map_page(request):
        max_items = _int(request, "max_items", MAP_ITEMS, 1, 5000)
        layout = service.cached(("map", max_items), lambda coll: coll.map_layout(max_items))

        def render(coll):
            placed = [(int(i), p, int(c), int(r)) for i, p, (c, r) in zip(layout.ids, coll.paths(layout.ids),
                                                                          layout.cells)]
            return pages.map_page(placed, layout.side, len(coll))
        return HTMLResponse(service.use(render))

    def outliers_page(request):
        n = _int(request, "n", 60, 1, 1000)
        found = service.cached(("outliers", n), lambda coll: coll.outliers(n))
        return HTMLResponse(pages.outliers_page([(o.id, o.path, o.score) for o in found]))

    def api_info(request):
        return JSONResponse(json_safe(service.use(lambda c: c.info(skipped_files=True))))

    async def api_search(request: Request):
        k = _int(request, "k", 10, 1, MAX_K)
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            raise HTTPError(411, "a Content-Length header is required")
        if int(length) > MAX_UPLOAD_BYTES:
            raise HTTPError(413, f"upload of {int(length):,} bytes; at most {MAX_UPLOAD_BYTES:,}")
        try:
            form = await request.form(max_files=1, max_fields=4)
        except Exception as e:  # noqa: BLE001 - a malformed body, whatever the parser says
            raise HTTPError(400, f"not a multipart form with an image field ({type(e).__name__})") from None
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise HTTPError(400, "the form needs a file field named 'image'")
        data = await upload.read()
        name = upload.filename or "upload"

        def run(coll):
            cfg = coll.model.config
            try:
                picture = decode_bytes(data, cfg.image_size, MAX_UPLOAD_PIXELS, thumb=True)
            except ImageError as e:
                raise HTTPError(400, f"{name}: {e}") from None
            return {"query": name, "hits": _hits(coll.search(coll.picture_queries([picture]), k)[0])}
        from starlette.concurrency import run_in_threadpool
        return JSONResponse(await run_in_threadpool(service.use, run))

    def api_similar(request):
        k = _int(request, "k", 10, 1, MAX_K)

        def run(coll):
            i = _item_id(request, coll)
            return {"query": coll.paths([i])[0], "hits": _hits(coll.similar(i, k))}
        return JSONResponse(service.use(run))

    def api_groups(default_method):
        def endpoint(request):
            method, k, radius = _group_params(request, default_method)
            members = service.cached(("groups", method, k, radius), _groups(method, k, radius))

            def run(coll):
                paths = coll.paths()
                return [{"cluster": n, "paths": [paths[i] for i in g]} for n, g in enumerate(members)]
            return JSONResponse(service.use(run))
        return endpoint

    def thumb(request):
        def run(coll):
            i = _item_id(request, coll)
            return _thumbnail(coll.item_file(i), coll.generation)
        return Response(service.use(run), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    def image(request):
        path = service.use(lambda coll: coll.item_file(_item_id(request, coll)))
        media = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media, headers={"Content-Disposition": "inline"})

    routes = [
        Route("/", home), Route("/items/{item_id}", item_page),
        Route("/clusters", group_page("clusters", "/clusters", DEFAULT_METHOD)),
        Route("/duplicates", group_page("near duplicates", "/duplicates", "duplicates")),
        Route("/api/info", api_info), Route("/api/search", api_search, methods=["POST"]),
        Route("/api/items/{item_id}/similar", api_similar),
        Route("/api/clusters", api_groups(DEFAULT_METHOD)), Route("/api/duplicates", api_groups("duplicates")),
        Route("/thumbs/{item_id}", thumb), Route("/images/{item_id}", image),
        Route("/map", map_page), Route("/outliers", outliers_page),
    ]

    async def on_http_error(request, exc: HTTPError):
        return _error(request, exc.status, str(exc))

    async def on_store_error(request, exc):
        message = str(exc).splitlines()[0]
        status = 404 if "outside" in message else 403 if "not indexed by you" in message else 503
        return _error(request, status, message)

    app = Starlette(routes=routes, exception_handlers={HTTPError: on_http_error, StoreError: on_store_error})
    if token:
        app.add_middleware(TokenCheck, token=token)
    return app


@lru_cache(maxsize=4096)
def _thumbnail(path: str, generation: str) -> bytes:
    try:
        return thumbnail_jpeg(path)
    except ImageError as e:
        raise HTTPError(404, f"cannot show this item: {e}") from None


def _error(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status)
    return HTMLResponse(pages.page("error", f'<h1>Error {status}</h1><p class="error">{pages.esc(message)}</p>'),
                        status_code=status)


class TokenCheck:
    """Every request must carry the token: ``Authorization: Bearer TOKEN``, the cookie a browser
    gets after opening any page with ``?token=TOKEN``, or that query parameter itself."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        given = request.query_params.get("token")
        auth = request.headers.get("authorization", "")
        candidates = [given, auth[7:] if auth.lower().startswith("bearer ") else None, request.cookies.get(TOKEN_COOKIE)]
        if not any(c is not None and hmac.compare_digest(c.encode(), self.token) for c in candidates):
            response = _error(request, 401, "this server needs its token (?token=..., or Authorization: Bearer ...)")
            return await response(scope, receive, send)

        async def send_with_cookie(message):
            if given is not None and message["type"] == "http.response.start":
                cookie = f"{TOKEN_COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/".encode()
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)
        return await self.app(scope, receive, send_with_cookie)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> str | None:
    """The token to require (given, else $HASHAE_TOKEN); refuses a non-loopback address without one."""
    token = token or os.environ.get("HASHAE_TOKEN") or None
    if not is_loopback(host) and not token:
        raise ValueError(f"--host {host} is not loopback: anyone who can reach it could read the collection; "
                         "set --token (or HASHAE_TOKEN), which every request must then carry")
    return token


def serve(store: str, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
          folder: str | None = None) -> None:
    """Run the server until interrupted; refuses a non-loopback address without a token."""
    import uvicorn
    token = check_bind(host, token)
    app = create_app(store, folder, token)
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)
