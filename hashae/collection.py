"""Collection: an indexed image folder in one HDF5 file (layout in store.py).

``Collection(path).index(folder)`` trains a model if the store has none, encodes new and changed
files, drops deleted ones and commits atomically; ``search`` / ``query`` / ``radius_search``
answer similarity queries through a HammingIndex built from the stored codes.
"""
from __future__ import annotations

import errno
import fcntl
import os
import warnings
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from .codes import as_codes
from .store import StoreError, StoreReader

SEGMENT_ITEMS = 2048  # items per journal segment: the work an interrupted run can lose


class Hit(NamedTuple):
    path: str
    distance: int
    id: int


@dataclass
class IndexReport:
    """What an index run did; ``str()`` is the one-line summary the CLI prints."""

    indexed: int
    unchanged: int
    removed: int
    skipped: list
    items: int
    seconds: float
    trained: bool
    resumed: int = 0

    def __str__(self) -> str:
        rate = self.indexed / self.seconds if self.seconds > 0 else 0.0
        extra = f", {self.resumed} resumed from an interrupted run" if self.resumed else ""
        return (f"indexed {self.indexed} new or changed, {self.unchanged} unchanged, {self.removed} removed, "
                f"{len(self.skipped)} skipped{extra}; {self.items} items in the collection "
                f"({self.seconds:.1f} s, {rate:.1f} images/s)")


class StoreBusy(RuntimeError):
    """Another process is indexing into the same store."""


def default_store(folder: str) -> str:
    """``indexes/<folder name>.h5``, relative to the current directory."""
    name = os.path.basename(os.path.normpath(os.path.abspath(folder))) or "collection"
    return os.path.join("indexes", f"{name}.h5")


class Collection:
    """An image collection stored in one HDF5 file at ``path`` (created by the first ``index``)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._reader: StoreReader | None = None
        self._index = None
        self._model = None

    # ------------------------------------------------------------------ reading
    @classmethod
    def open(cls, path) -> "Collection":
        """Open an existing collection, validating the file (raises StoreError)."""
        c = cls(path)
        c.reader  # noqa: B018 - validates now
        return c

    @classmethod
    def create(cls, path, codes: np.ndarray, paths, *, folder: str = "", model=None,
               phash: np.ndarray | None = None) -> "Collection":
        """A collection from codes you already have: ``codes`` (N, bits/8) uint8 and ``paths``
        (a sequence of N relative paths; slices of it are read a block at a time), optionally
        ``phash`` (N, 8) uint8 from ``hashae.phash`` for verified duplicates. Refuses to
        overwrite an existing file."""
        from .store import write_store
        codes = as_codes(codes)
        if len(codes) != len(paths):
            raise ValueError(f"{len(codes)} codes but {len(paths)} paths")
        if os.path.exists(path):
            raise FileExistsError(f"{path} already exists")
        zeros = np.zeros(len(codes), np.int64)
        with StoreLock(os.fspath(path)):
            write_store(os.fspath(path), bits=codes.shape[1] * 8, folder=folder, codes=codes, paths=paths,
                        sizes=zeros, mtimes=zeros, skipped=[], model=model,
                        phash=None if phash is None else as_codes(phash, 8))
        return cls.open(path)

    @property
    def reader(self) -> StoreReader:
        if self._reader is None:
            self._reader = StoreReader(self.path)
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader = self._index = self._model = None

    def __enter__(self) -> "Collection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.reader.n

    @property
    def bits(self) -> int:
        return self.reader.bits

    @property
    def folder(self) -> str:
        return self.reader.folder

    @property
    def codes(self) -> np.ndarray:
        return self.reader.codes()

    @property
    def phash(self) -> np.ndarray | None:
        """64-bit perceptual hashes (N, 8) uint8 of the items, used to confirm near duplicates;
        None for a collection made from codes alone."""
        return self.reader.phash()

    def paths(self, ids=None) -> list:
        """Relative paths of all items, or of the given item ids (in that order)."""
        return self.reader.paths(ids)

    @property
    def skipped(self) -> list:
        return self.reader.skipped()

    @property
    def model(self):
        if self._model is None:
            self._model = self.reader.model()
        return self._model

    def item_path(self, rel: str) -> str:
        """Absolute path of an item inside the collection's folder; refuses paths that would
        leave it (absolute or '..'), since the file may come from someone else."""
        if not rel or os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/"):
            raise StoreError(f"refusing item path outside the collection folder: {rel!r}")
        return os.path.join(self.folder, rel)

    def info(self) -> dict:
        r = self.reader
        a = r.attrs()
        return {
            "path": self.path, "folder": r.folder, "items": r.n, "skipped": r.n_skipped,
            "bits": r.bits, "format_version": a.get("format_version"),
            "created": a.get("created"), "updated": a.get("updated"),
            "file_size": os.path.getsize(self.path), "model": r.model_config(),
        }

    # ------------------------------------------------------------------ search
    @property
    def hamming_index(self):
        """A HammingIndex over the stored codes, built on first use."""
        from .index import HammingIndex
        if self._index is None:
            self._index = HammingIndex(self.bits)
            if len(self):
                self._index.add(self.codes)
        return self._index

    def encode_files(self, files: Sequence[str]) -> np.ndarray:
        """Codes of image files with the collection's model; an unreadable file raises ImageError."""
        from .images import ImageError, load_image
        cfg = self.model.config
        arrays = []
        for f in files:
            try:
                arrays.append(load_image(f, cfg.image_size, cfg.channels))
            except ImageError as e:
                raise ImageError(f"{f}: {e}") from None
        return self.model.encode(np.stack(arrays)) if arrays else np.empty((0, self.bits // 8), np.uint8)

    def search_codes(self, codes: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        return self.hamming_index.search(as_codes(codes, self.bits // 8), k)

    def search(self, images, k: int = 10) -> list:
        """Nearest items of each query (image files, or images as an array): lists of Hit."""
        codes = self.encode_files(images) if _is_paths(images) else self.model.encode(images)
        d, i = self.search_codes(codes, k)
        return [self._hits(di, ii) for di, ii in zip(d, i)]

    def radius_search(self, images, radius: int, limit: int | None = None) -> list:
        """All items within Hamming distance ``radius`` of each query, nearest first."""
        codes = self.encode_files(images) if _is_paths(images) else self.model.encode(images)
        out = []
        for ids, dist in self.hamming_index.radius_search(codes, radius):
            out.append(self._hits(dist[:limit], ids[:limit]))
        return out

    def _hits(self, dist, ids) -> list:
        keep = ids >= 0
        dist, ids = dist[keep], ids[keep]
        return [Hit(p, int(d), int(i)) for p, d, i in zip(self.paths(ids), dist, ids)]

    def query(self, files: Sequence[str], k: int | None = 10, radius: int | None = None) -> list:
        """What ``hashae query --json`` prints: [{"query", "hits": [{"path", "distance"}]}].

        A query file that is itself an item is listed first among the hits at distance 0."""
        files = list(files)
        if radius is not None:
            results = self.radius_search(files, radius, limit=k)
        else:
            results = self.search(files, k or 10)
        out = []
        for f, hits in zip(files, results):
            hits = self._self_first(f, hits, k)
            out.append({"query": f, "hits": [{"path": h.path, "distance": h.distance} for h in hits]})
        return out

    def _self_first(self, file: str, hits: list, k: int | None) -> list:
        try:
            rel = os.path.relpath(os.path.abspath(file), self.folder).replace(os.sep, "/")
        except ValueError:
            return hits
        if rel.startswith("../") or not hits or hits[0].distance > 0:
            return hits
        own = [h for h in hits if h.path == rel]
        if own:
            return own + [h for h in hits if h.path != rel]
        row = self.reader.find_path(rel)  # the item shares its code with more than k others
        if row is None:
            return hits
        return [Hit(rel, 0, row)] + hits[: (k - 1) if k else None]

    # ------------------------------------------------------------------ grouping
    def clusters(self, method: str = "exact", **kwargs) -> list:
        """Groups of item paths, largest first (see hashae.cluster for methods and arguments)."""
        from .clustering import cluster
        labels = cluster(self.codes, method, **kwargs)
        return groups_from_labels(labels, self.paths())

    def duplicates(self, radius: int | None = None, verify: bool = True, confirm: int | None = None,
                   progress: bool | None = None) -> list:
        """Groups (size >= 2) of near-duplicate items, largest first: items joined when their
        codes are within Hamming distance ``radius`` (default bits // 16, e.g. 4 at 64 bits) and,
        with ``verify``, their 64-bit perceptual hashes differ in at most ``confirm`` bits
        (default 12, see perceptual.py): look-alike photos share semantic codes, copies share
        both. With ``verify``, nearly equal hashes (4 bits) also pair items whose codes an edit
        moved further (``clustering.near_duplicates``). ``verify=False`` groups by codes alone.
        ``progress``: a bar on stderr (default: when it is a terminal)."""
        from .clustering import duplicate_radius, near_duplicates
        r = duplicate_radius(self.bits) if radius is None else int(radius)
        if r < 0:
            raise ValueError("radius must be >= 0")
        phash = self.phash if verify else None
        if verify and phash is None:
            warnings.warn(f"{self.path} has no perceptual hashes (built from codes alone or by an earlier "
                          "hashae; re-index its folder to add them): groups are by semantic codes only, "
                          "so look-alikes may be joined", stacklevel=2)
        labels = near_duplicates(self.codes, r, phash, confirm, progress=progress)
        return [g for g in groups_from_labels(labels, self.paths()) if len(g) >= 2]

    # ------------------------------------------------------------------ indexing
    def index(self, folder: str | None = None, *, bits: int | None = None, model=None, config=None,
              workers: int = 2, progress: bool | None = None, auto_channels: bool = True,
              segment: int = SEGMENT_ITEMS) -> IndexReport:
        """Index ``folder`` (default: the one this store was built from) into this store.

        Trains a model first if the store has none and no ``model`` (a SemanticHasher) is
        given, using ``config`` (a HasherConfig; default: HasherConfig(bits=bits)); with
        ``auto_channels`` a folder of grey images gets a one-channel model. Re-runs are
        incremental; an interrupted run is continued by the next one. See indexer.py."""
        from .indexer import run_index
        self.close()
        report = run_index(self, folder, bits=bits, model=model, config=config, workers=workers,
                           progress=progress, auto_channels=auto_channels, segment=segment)
        self.close()
        return report


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


def groups_from_labels(labels: np.ndarray, paths: list) -> list:
    """Lists of paths per label, in label order (labels from hashae.cluster: largest first)."""
    if len(labels) == 0:
        return []
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    return [[paths[i] for i in part] for part in np.split(order, bounds)]


def _is_paths(images) -> bool:
    return isinstance(images, (list, tuple)) and all(isinstance(x, (str, os.PathLike)) for x in images)

