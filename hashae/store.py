"""The collection file: one HDF5 file per indexed folder, layout version 1.

The layout (datasets, attributes, types) is documented in README.md, "File layout"; this module
is the only code that writes or reads it. Non-UTF-8 file names are stored as their raw bytes
and read back with surrogateescape, so every POSIX name round-trips.

A committed file is never modified in place: ``write_store`` writes a complete new file beside
it, fsyncs it and renames it over the old one (atomic on POSIX), so a crash leaves either the
old or the new store, never a torn one. Work in progress lives in a journal (journal.py).

Everything read from a file is validated (types, shapes, sizes) before use: collections are
shared between people, and a file can be truncated, corrupted or hand-crafted.
"""
from __future__ import annotations

import json
import os
import time
import uuid

import h5py
import numpy as np

from .codes import check_bits

FORMAT, FORMAT_VERSION = "hashae", 1
CHUNK_ROWS = 8192
STR = h5py.string_dtype("utf-8")
PHASH_BYTES = 8  # /items/phash: 64-bit perceptual hashes (perceptual.py)
MAX_ITEMS = 1 << 34  # a declared row count above this is a hostile or broken file
# a dataset may declare far more rows than the file stores (unallocated chunks read as fill
# values): refuse numeric data declaring over 64 MiB beyond 100x what is actually stored
SPARSE_SLACK, SPARSE_RATIO = 64 << 20, 100


class StoreError(ValueError):
    """A collection file that is missing, not a hashae file, or inconsistent; one-line message."""


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
            reason = _first_line(exc)
            for hint in ("File too large", "No space left", "Read-only", "Permission denied", "Disk quota"):
                if hint.lower() in reason.lower():
                    reason = hint
            raise StoreWriteError(getattr(exc, "errno", None) or 0,
                                  f"cannot write {self.path}: {reason}; the previous collection is unchanged") from None
        return False


def encode_path(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def decode_paths(ds: h5py.Dataset, sel=slice(None)) -> list:
    return list(ds.asstr("utf-8", "surrogateescape")[sel]) if ds.shape[0] else []


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dataset(g: h5py.Group, name: str, data: np.ndarray, dtype) -> None:
    """A chunked dataset, resizable along rows."""
    shape = tuple(np.shape(data))
    g.create_dataset(name, shape=shape, maxshape=(None,) + shape[1:], dtype=dtype,
                     chunks=(max(1, min(CHUNK_ROWS, shape[0])),) + shape[1:], data=data if shape[0] else None)


PATH_BLOCK = 1 << 16  # paths converted per write: ~10 MB of Python objects at a time


def _string_dataset(g: h5py.Group, name: str, texts) -> None:
    """A chunked, resizable UTF-8 string dataset, converted and written a block at a time so that
    millions of paths never exist as one big array of bytes objects."""
    n = len(texts)
    ds = g.create_dataset(name, shape=(n,), maxshape=(None,), dtype=STR, chunks=(max(1, min(CHUNK_ROWS, n)),))
    for s in range(0, n, PATH_BLOCK):
        ds[s:s + PATH_BLOCK] = np.array([encode_path(t) for t in texts[s:s + PATH_BLOCK]], dtype=object)


def write_store(path: str, *, bits: int, folder: str, codes: np.ndarray, paths: list, sizes, mtimes,
                skipped: list, model, attrs: dict | None = None, created: float | None = None,
                phash: np.ndarray | None = None) -> str:
    """Write a complete store to ``path`` atomically (temporary file, fsync, rename); returns
    the new generation id. ``model`` is a fitted SemanticHasher or None; ``phash`` the items'
    perceptual hashes (N, 8) uint8, or None for codes that came without images."""
    check_bits(bits)
    codes = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1, bits // 8)
    if not (len(codes) == len(paths) == len(sizes) == len(mtimes)):
        raise ValueError("codes, paths, sizes and mtimes must have one row per item")
    if phash is not None:
        phash = np.ascontiguousarray(phash, dtype=np.uint8).reshape(-1, PHASH_BYTES)
        if len(phash) != len(codes):
            raise ValueError("phash must have one row per item")
    generation = uuid.uuid4().hex
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with write_guard(path), h5py.File(tmp, "w", libver=("earliest", "v110")) as f:
            now = time.time()
            f.attrs.update({
                "format": FORMAT, "format_version": FORMAT_VERSION, "bits": bits,
                "folder": os.path.abspath(folder) if folder else "", "generation": generation,
                "created": created or now, "updated": now,
                "hashae_version": __import__("hashae").__version__,
            })
            for k, v in (attrs or {}).items():
                f.attrs[k] = v
            _dataset(f, "codes", codes, np.uint8)
            items = f.create_group("items")
            _string_dataset(items, "path", paths)
            _dataset(items, "size", np.asarray(sizes, np.int64), np.int64)
            _dataset(items, "mtime", np.asarray(mtimes, np.int64), np.int64)
            items["mtime"].attrs["unit"] = "ns since the epoch"
            if phash is not None:
                _dataset(items, "phash", phash, np.uint8)
                items["phash"].attrs["method"] = "pHash: 8x8 lowest DCT of 32x32 grey > median, FAISS bit order"
            sk = f.create_group("skipped")
            _dataset(sk, "path", np.array([encode_path(p) for p, _ in skipped], dtype=object), STR)
            _dataset(sk, "reason", np.array([r.encode("utf-8", "replace") for _, r in skipped], dtype=object), STR)
            if model is not None:
                model.save(f.create_group("model"))
                f.attrs["image_size"] = model.config.image_size
                f.attrs["channels"] = model.config.channels
        with write_guard(path):
            fsync_path(tmp)
            os.replace(tmp, path)
            fsync_path(os.path.dirname(os.path.abspath(path)))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return generation


def _guarded(method):
    """Damage found after opening (lazy reads of a corrupted file) is a StoreError too."""
    import functools

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (StoreError, IndexError):
            raise
        except Exception as e:  # h5py raises OSError, RuntimeError, KeyError, ValueError... on bad bytes
            raise StoreError(f"{self.path}: damaged collection file ({type(e).__name__}: {_first_line(e)})") from None
    return wrapper


class StoreReader:
    """Read-only, validated view of a collection file; datasets are read lazily."""

    def __init__(self, path: str):
        self.path = path
        if not os.path.exists(path):
            raise StoreError(f"{path}: no such collection (build one with `hashae index FOLDER --store {path}`)")
        try:
            self.file = h5py.File(path, "r")
        except OSError as e:
            raise StoreError(f"{path}: not a readable HDF5 file ({_first_line(e)})") from None
        try:
            self._validate()
        except StoreError:
            self.file.close()
            raise
        except Exception as e:  # anything h5py raises on a damaged file
            self.file.close()
            raise StoreError(f"{path}: damaged collection file ({type(e).__name__}: {_first_line(e)})") from None

    def _validate(self) -> None:
        f, p = self.file, self.path
        if f.attrs.get("format") != FORMAT:
            raise StoreError(f"{p}: not a hashae collection (no format='hashae' attribute)")
        version = f.attrs.get("format_version")
        if not isinstance(version, (int, np.integer)) or version != FORMAT_VERSION:
            shown = version.item() if isinstance(version, np.generic) else version
            raise StoreError(f"{p}: collection format version {shown!r}; this hashae reads version {FORMAT_VERSION}")
        bits = f.attrs.get("bits")
        try:
            self.bits = check_bits(bits)
        except ValueError as e:
            raise StoreError(f"{p}: {e}") from None
        n = self._check(f, "codes", (None, self.bits // 8), "u1")
        for name, dt in (("items/path", "O"), ("items/size", "i"), ("items/mtime", "i")):
            if self._check(f, name, (None,), dt) != n:
                raise StoreError(f"{p}: /{name} has a different number of rows than /codes")
        self.has_phash = "items/phash" in f
        if self.has_phash and self._check(f, "items/phash", (None, PHASH_BYTES), "u1") != n:
            raise StoreError(f"{p}: /items/phash has a different number of rows than /codes")
        m = self._check(f, "skipped/path", (None,), "O")
        if self._check(f, "skipped/reason", (None,), "O") != m:
            raise StoreError(f"{p}: /skipped/path and /skipped/reason differ in length")
        self.n, self.n_skipped = n, m
        self.folder = _text_attr(f, "folder")
        self.generation = _text_attr(f, "generation")

    def _check(self, f: h5py.File, name: str, shape: tuple, kind: str) -> int:
        ds = f.get(name)
        if not isinstance(ds, h5py.Dataset):
            raise StoreError(f"{self.path}: /{name} is missing")
        if len(ds.shape) != len(shape) or any(s is not None and a != s for a, s in zip(ds.shape, shape)):
            raise StoreError(f"{self.path}: /{name} has shape {ds.shape}, expected {shape}")
        ok = (h5py.check_string_dtype(ds.dtype) is not None) if kind == "O" else (
            ds.dtype.kind in kind and (kind != "u1" or ds.dtype == np.uint8))
        if not ok:
            raise StoreError(f"{self.path}: /{name} has dtype {ds.dtype}")
        if ds.shape[0] > MAX_ITEMS:
            raise StoreError(f"{self.path}: /{name} declares {ds.shape[0]} rows")
        if kind != "O":
            declared = ds.size * ds.dtype.itemsize
            if declared > SPARSE_SLACK + SPARSE_RATIO * ds.id.get_storage_size():
                raise StoreError(f"{self.path}: /{name} declares {ds.shape[0]} rows but the file holds "
                                 f"{ds.id.get_storage_size()} bytes of it")
        return ds.shape[0]

    # lazy accessors ------------------------------------------------------------------
    @_guarded
    def codes(self) -> np.ndarray:
        return self.file["codes"][()] if self.n else np.empty((0, self.bits // 8), np.uint8)

    @_guarded
    def paths(self, ids=None) -> list:
        ds = self.file["items/path"]
        if ids is None:
            return decode_paths(ds)
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return []
        uniq, inverse = np.unique(ids, return_inverse=True)  # h5py wants increasing indices
        if uniq[0] < 0 or uniq[-1] >= self.n:
            raise IndexError(f"item ids out of range 0..{self.n - 1}")
        vals = decode_paths(ds, uniq)
        return [vals[i] for i in inverse]

    @_guarded
    def find_path(self, path: str, block: int = PATH_BLOCK) -> int | None:
        """Row of the item with this relative path, or None; reads the paths a block at a time."""
        ds, key = self.file["items/path"], encode_path(path)
        for s in range(0, self.n, block):
            rows = np.flatnonzero(ds[s:s + block] == key)
            if len(rows):
                return s + int(rows[0])
        return None

    @_guarded
    def phash(self) -> np.ndarray | None:
        """The items' perceptual hashes (N, 8) uint8; None for stores without them (written from
        codes alone, or by an earlier hashae)."""
        if not self.has_phash:
            return None
        return self.file["items/phash"][()] if self.n else np.empty((0, PHASH_BYTES), np.uint8)

    @_guarded
    def sizes(self) -> np.ndarray:
        return self.file["items/size"][()].astype(np.int64)

    @_guarded
    def mtimes(self) -> np.ndarray:
        return self.file["items/mtime"][()].astype(np.int64)

    @_guarded
    def skipped(self) -> list:
        return list(zip(decode_paths(self.file["skipped/path"]), decode_paths(self.file["skipped/reason"])))

    @_guarded
    def has_model(self) -> bool:
        return "model" in self.file

    @_guarded
    def model(self):
        from .hasher import SemanticHasher
        if not self.has_model():
            raise StoreError(f"{self.path}: this collection has no model yet (run `hashae index` on it)")
        try:
            return SemanticHasher.load(self.file["model"])
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise StoreError(f"{self.path}: model is damaged or invalid ({_first_line(e)})") from None

    @_guarded
    def attrs(self) -> dict:
        out = {}
        for k, v in self.file.attrs.items():
            out[k] = v.item() if isinstance(v, np.generic) else (v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
        return out

    @_guarded
    def model_config(self) -> dict | None:
        if not self.has_model():
            return None
        text = self.file["model"].attrs.get("config")
        try:
            return json.loads(text.decode() if isinstance(text, bytes) else text)
        except (TypeError, ValueError, AttributeError):
            return None

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "StoreReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _text_attr(f, name) -> str:
    v = f.attrs.get(name, "")
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return v if isinstance(v, str) else ""


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:200] if s else type(e).__name__
