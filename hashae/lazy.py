"""Package attributes loaded on first use: a package names what it exports and from where, so
that importing it (the CLI reading a config, ``import hashae``) loads no torch or FAISS."""
from __future__ import annotations

import importlib
import sys


def lazy_attributes(package: str, exports: dict):
    """A module's ``__getattr__`` and ``__dir__`` for ``package``: ``exports`` maps a name to
    the module that defines it (absolute, or relative to the package); a value is cached on the
    package once loaded, and ``dir()`` lists the exports before they are."""
    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(exports))
    return __getattr__, __dir__
