"""Files that appear whole or not at all: write to a temporary name, fsync, rename. Any failure
to write becomes one StoreWriteError line, and what was committed before is untouched."""
from __future__ import annotations

import os


class StoreWriteError(OSError):
    """Writing a store or journal failed (disk full, read-only location...); nothing committed
    before it is affected."""


def write_guard(path: str):
    """Context manager turning any failure to write ``path`` into a one-line StoreWriteError."""
    return _WriteGuard(path)


class _WriteGuard:
    def __init__(self, path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is not None and issubclass(kind, (OSError, RuntimeError)) and not isinstance(exc, StoreWriteError):
            reason = first_line(exc)
            for hint in ("File too large", "No space left", "Read-only", "Permission denied", "Disk quota"):
                if hint.lower() in reason.lower():
                    reason = hint
            raise StoreWriteError(getattr(exc, "errno", None) or 0,
                                  f"cannot write {self.path}: {reason}; the previous collection is unchanged") from None
        return False


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(tmp: str, final: str) -> None:
    """fsync ``tmp``, rename it over ``final`` and fsync the folder, so a crash leaves one or
    the other."""
    with write_guard(final):
        fsync_path(tmp)
        os.replace(tmp, final)
        fsync_path(os.path.dirname(os.path.abspath(final)))


def first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:200] if s else type(e).__name__
