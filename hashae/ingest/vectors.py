"""Vector files: where the rows of a vector collection come from, read a block at a time.

A source is a ``.npy`` array (read a block at a time, never unpickled), an HDF5 dataset named as
``file.h5:/path/in/file``, or a folder of ``.npy`` parts read in natural name order, such as
clip-retrieval's ``img_emb/`` (whose ``../metadata/metadata_N.parquet`` files give the item names
when pyarrow is installed). Each row has an id: a line of ``--ids``, the parquet name, or its
row number; and a digest of its values, which is how an index run sees a row change.
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from dataclasses import dataclass

import h5py
import numpy as np

BLOCK_ROWS = 8192  # rows read at a time: bounded memory for files larger than RAM
NAME_COLUMNS = ("image_path", "url", "caption", "path", "id")  # clip-retrieval metadata, in order


class VectorSourceError(ValueError):
    """A vector file that cannot be used as given; one-line message."""


@dataclass
class Part:
    """One array of a source: its rows are rows ``start .. start + len(array)`` of the source."""

    array: object  # NpyFile or h5py dataset, (rows, dim)
    start: int
    name: str


class VectorSource:
    """The rows of a vector file or folder, as one (n, dim) array read in blocks."""

    def __init__(self, spec: str, ids_file: str | None = None):
        self.spec = spec
        self._files: list = []  # open h5py files, closed by close()
        self.parts = self._open(spec)
        dims = {p.array.shape[1] for p in self.parts}
        if len(dims) != 1:
            first = self.parts[0]
            other = next(p for p in self.parts if p.array.shape[1] != first.array.shape[1])
            raise VectorSourceError(f"{other.name} has {other.array.shape[1]} values a row, {first.name} has "
                                    f"{first.array.shape[1]}: every part of a source has the same width")
        self.dim = dims.pop()
        self.n = sum(len(p.array) for p in self.parts)
        self._ids = self._read_ids(ids_file) if ids_file else self._metadata_ids()
        self.named = self._ids is not None  # False: items are named by their row numbers

    # ------------------------------------------------------------------ opening
    def _open(self, spec: str) -> list:
        path, _, inner = spec.partition(":") if _h5_spec(spec) else (spec, "", "")
        path = os.path.expanduser(path)
        if os.path.isdir(path):
            names = sorted((n for n in os.listdir(path) if n.endswith(".npy")), key=_natural)
            if not names:
                raise VectorSourceError(f"{path}: no .npy files in this folder")
            parts, start = [], 0
            for n in names:
                a = _npy(os.path.join(path, n))
                parts.append(Part(a, start, n))
                start += len(a)
            return parts
        if not os.path.exists(path):
            raise VectorSourceError(f"{path}: no such file")
        if inner or h5py.is_hdf5(path):
            return [Part(self._h5(path, inner or None), 0, spec)]
        return [Part(_npy(path), 0, path)]

    def _h5(self, path: str, inner: str | None):
        """An HDF5 dataset, refused unless it is a plain 2-D numeric dataset stored in the file
        itself (no links, external storage or virtual mappings: they read other files)."""
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise VectorSourceError(f"{path}: not a readable HDF5 file ({e})") from None
        self._files.append(f)
        if inner is None:
            found = []
            f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) and obj.ndim == 2 else None)
            if len(found) != 1:
                raise VectorSourceError(f"{path} holds {len(found)} 2-D datasets: name one as {path}:/path/in/file")
            inner = found[0]
        link = f.get(inner, getlink=True)
        if link is None:
            raise VectorSourceError(f"{path}: no dataset {inner!r}")
        if not isinstance(link, h5py.HardLink):
            raise VectorSourceError(f"{path}:{inner} is a {type(link).__name__}; name the dataset itself")
        ds = f[inner]
        if not isinstance(ds, h5py.Dataset):
            raise VectorSourceError(f"{path}:{inner} is a group, not a dataset")
        if ds.is_virtual or ds.external:
            raise VectorSourceError(f"{path}:{inner} keeps its values in other files; copy them into the file")
        _check_array(ds, f"{path}:{inner}")
        return ds

    def _read_ids(self, ids_file: str) -> list:
        try:
            with open(os.path.expanduser(ids_file), encoding="utf-8", errors="surrogateescape") as f:
                ids = f.read().splitlines()
        except OSError as e:
            raise VectorSourceError(f"{ids_file}: cannot read ids ({e.strerror})") from None
        if len(ids) != self.n:
            raise VectorSourceError(f"{ids_file} has {len(ids)} lines but {self.spec} has {self.n} rows: "
                                    "give one id per row")
        _check_ids(ids, ids_file)
        return ids

    def _metadata_ids(self) -> list | None:
        """Item names from clip-retrieval's metadata parquet files beside an ``img_emb``-style
        folder, when every part has one and pyarrow is installed; otherwise None (row numbers)."""
        folder = os.path.expanduser(self.spec)
        if not os.path.isdir(folder):
            return None
        meta = os.path.join(os.path.dirname(os.path.abspath(folder)), "metadata")
        files = [os.path.join(meta, re.sub(r"^[a-z]+_emb", "metadata", p.name)[:-4] + ".parquet") for p in self.parts]
        if not all(os.path.isfile(f) for f in files):
            return None
        try:
            import pyarrow.parquet as pq
        except ImportError:
            warnings.warn(f"{meta} has item names, but reading them needs pyarrow (pip install pyarrow); "
                          "items are named by row number", stacklevel=3)
            return None
        ids = []
        for part, file in zip(self.parts, files):
            names = pq.read_schema(file).names
            column = next((c for c in NAME_COLUMNS if c in names), None)
            if column is None:
                raise VectorSourceError(f"{file} has none of the columns {', '.join(NAME_COLUMNS)} to name items by")
            values = pq.read_table(file, columns=[column]).column(0).to_pylist()
            if len(values) != len(part.array):
                raise VectorSourceError(f"{file} has {len(values)} rows but {part.name} has {len(part.array)}")
            ids += ["" if v is None else str(v) for v in values]
        _check_ids(ids, meta)
        return ids

    # ------------------------------------------------------------------ reading
    def ids(self, start: int, stop: int) -> list:
        """The ids of rows ``start .. stop``: given names, or the row numbers as text."""
        if self._ids is not None:
            return self._ids[start:stop]
        return [str(i) for i in range(start, stop)]

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start .. stop`` as float32 (n, dim), across part boundaries."""
        out = []
        for p in self.parts:
            a, b = max(start, p.start), min(stop, p.start + len(p.array))
            if a < b:
                out.append(np.asarray(p.array[a - p.start:b - p.start], np.float32))
        return np.concatenate(out) if out else np.empty((0, self.dim), np.float32)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The rows at sorted row numbers ``rows``, read a contiguous range at a time."""
        if not len(rows):
            return np.empty((0, self.dim), np.float32)
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        if hi - lo <= 4 * len(rows):
            return self.rows(lo, hi)[rows - lo]
        return np.concatenate([self.rows(int(r), int(r) + 1) for r in rows])

    def blocks(self, block: int = BLOCK_ROWS):
        """(start, rows) of the whole source, ``block`` rows at a time."""
        for s in range(0, self.n, block):
            yield s, self.rows(s, min(s + block, self.n))

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files = []

    def __enter__(self) -> "VectorSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_rows(rows: np.ndarray, start: int, dim: int) -> None:
    """Refuse a block with a row of NaN or infinity, naming the first such row."""
    if rows.shape[1:] != (dim,):
        raise VectorSourceError(f"rows have {rows.shape[1:]} values, expected {dim}")
    bad = ~np.isfinite(rows).all(1)
    if bad.any():
        raise VectorSourceError(f"row {start + int(np.argmax(bad))} holds NaN or infinity; fix or drop that row")


def digests(rows: np.ndarray) -> np.ndarray:
    """A 63-bit digest (int64 >= 0) of each row's float32 values: what tells a changed row."""
    rows = np.ascontiguousarray(rows, np.float32)
    out = np.empty(len(rows), np.int64)
    for i, r in enumerate(rows):
        out[i] = int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8).digest(), "little") >> 1
    return out


def _h5_spec(spec: str) -> bool:
    """``file.h5:/path``: a colon after an HDF5 file name (a plain path may hold colons too)."""
    path, sep, _ = spec.partition(":")
    return bool(sep) and os.path.isfile(os.path.expanduser(path)) and not os.path.exists(os.path.expanduser(spec))


class NpyFile:
    """A 2-D ``.npy`` array read by explicit file reads, rows ``a[i:j]`` at a time: unlike a
    memory map, what it has read does not stay resident, so memory follows the block size and
    not the file. The header is parsed by numpy's own format module; object arrays (pickles)
    are refused, since loading them runs code."""

    def __init__(self, path: str):
        self.path = path
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                if version not in ((1, 0), (2, 0)):  # 3.0 only differs for non-Latin-1 field names
                    raise ValueError(f".npy format version {version[0]}.{version[1]}")
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read(f)
                self.offset = f.tell()
            size = os.path.getsize(path)
        except (ValueError, OSError) as e:
            raise VectorSourceError(f"{path}: not a readable .npy array ({str(e).splitlines()[0]})") from None
        if dtype.hasobject:
            raise VectorSourceError(f"{path}: not a readable .npy array (it holds Python objects, which are "
                                    "never unpickled)")
        self.shape, self.dtype, self.ndim = tuple(shape), dtype, len(shape)
        if self.ndim == 2 and fortran and shape[0] > 1 and shape[1] > 1:
            raise VectorSourceError(f"{path} is stored column by column (Fortran order); save it with "
                                    "numpy.ascontiguousarray first")
        rows = shape[0] if self.ndim else 1
        self.row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64)) if self.ndim else dtype.itemsize
        if self.offset + rows * self.row_bytes > size:
            raise VectorSourceError(f"{path}: truncated ({size} bytes, its header promises "
                                    f"{self.offset + rows * self.row_bytes})")

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(len(self))
        count = max(0, stop - start)
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * self.row_bytes)
            data = np.fromfile(f, dtype=self.dtype, count=count * self.shape[1])
        if len(data) != count * self.shape[1]:
            raise VectorSourceError(f"{self.path}: rows {start}..{stop} could not be read (file truncated?)")
        return data.reshape(count, self.shape[1])


def _npy(path: str) -> NpyFile:
    a = NpyFile(path)
    _check_array(a, path)
    return a


def _check_array(a, where: str) -> None:
    if a.ndim != 2:
        raise VectorSourceError(f"{where} has shape {tuple(a.shape)}; vectors are a 2-D array (rows, values)")
    if a.dtype.kind not in "uif":
        raise VectorSourceError(f"{where} holds {a.dtype}; vectors must be numbers")
    if a.shape[1] < 1:
        raise VectorSourceError(f"{where} has rows of no values")


def _check_ids(ids: list, where: str) -> None:
    seen = {}
    for line, i in enumerate(ids, 1):
        if not i or "\x00" in i:
            raise VectorSourceError(f"{where}: id {line} is empty or holds a NUL")
        if i in seen:
            raise VectorSourceError(f"{where}: id {i!r} is given twice (rows {seen[i] - 1} and {line - 1}); "
                                    "ids name one row each")
        seen[i] = line


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
