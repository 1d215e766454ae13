"""One writer per store: an exclusive ``flock`` on ``<store>.lock`` that removes its own file
safely when the run ends."""
from __future__ import annotations

import errno
import fcntl
import os


class StoreBusy(RuntimeError):
    """Another process is indexing into the same store."""


class StoreLock:
    """An exclusive ``flock`` on ``<store>.lock``: one writer per store; released by the kernel
    if the process dies, so a crash never leaves a stale lock. The holder deletes the file
    before it lets go; a writer that locked a file deleted meanwhile sees that it is no longer
    the one at the path and tries again, so two writers never hold different files."""

    def __init__(self, path: str):
        self.path = f"{path}.lock"
        self.fd = None

    def __enter__(self) -> "StoreLock":
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise StoreBusy(f"{self.path[:-5]}: another hashae index is writing this collection; "
                                    "wait for it to finish") from None
                raise
            if _same_file(fd, self.path):
                self.fd = fd
                return self
            os.close(fd)  # the last holder deleted this file after we opened it

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.path)  # still locked, so no other writer holds this file
            except OSError:
                pass
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _same_file(fd: int, path: str) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


