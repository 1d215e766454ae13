"""Files that appear whole or not at all: write to a temporary name, fsync, rename. Any failure
to write becomes one StoreWriteError line, and what was committed before is untouched."""
from __future__ import annotations

import io
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


class FailSafeFile(io.RawIOBase):
    """A file object for h5py's file-object driver that never reports a write failure to HDF5.
    The first OSError (disk full, file-size limit) is kept in ``error``; from then on the file's
    contents live in memory, so HDF5 reads back what it wrote and finishes normally, and the
    caller raises ``error`` and deletes the file. h5py can crash the process when HDF5 meets a
    write error while closing a file; this way HDF5 never meets one."""

    def __init__(self, path: str):
        super().__init__()
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.pos = self.end = 0
        self.error: OSError | None = None
        self.memory: bytearray | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else self.pos + pos if whence == 1 else self.end + pos
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, b) -> int:
        n = max(0, min(len(b), self.end - self.pos))
        if self.memory is not None:
            b[:n] = self.memory[self.pos:self.pos + n]
        else:
            data = os.pread(self.fd, n, self.pos)
            b[:len(data)] = data
            b[len(data):n] = bytes(n - len(data))
        self.pos += n
        return n

    def write(self, b) -> int:
        view = memoryview(b).cast("B")
        n = len(view)
        if self.memory is None:
            try:
                done = 0
                while done < n:
                    done += os.pwrite(self.fd, view[done:], self.pos + done)
            except OSError as e:
                self._to_memory(e)
        if self.memory is not None:
            if len(self.memory) < self.pos + n:
                self.memory.extend(bytes(self.pos + n - len(self.memory)))
            self.memory[self.pos:self.pos + n] = view
        self.pos += n
        self.end = max(self.end, self.pos)
        return n

    def truncate(self, size=None) -> int:
        size = self.pos if size is None else size
        if self.memory is None:
            try:
                os.ftruncate(self.fd, size)
            except OSError as e:
                self._to_memory(e)
        if self.memory is not None:
            del self.memory[size:]
            self.memory.extend(bytes(size - len(self.memory)))
        self.end = size
        return size

    def _to_memory(self, error: OSError) -> None:
        self.error = error
        data = os.pread(self.fd, self.end, 0)
        self.memory = bytearray(data) + bytes(self.end - len(data))

    def fsync(self) -> None:
        if self.error is None:
            try:
                os.fsync(self.fd)
            except OSError as e:
                self.error = e

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()
