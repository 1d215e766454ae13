"""Items: the rows of a collection as one record of columns, so that code moving items around
(the indexer, the journal, the store) never unpacks positional tuples. A new column is a field
here and an entry in layout.ITEM_COLUMNS."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np

from ..ingest.perceptual import BITS as HASH_BITS
from ..ingest.perceptual import ALL_FIELDS as ALL_HASH_FIELDS  # ...and those of each picture's centre
from ..ingest.perceptual import FIELDS as HASH_FIELDS  # each column (n, PHASH_BYTES) uint8

PHASH_BYTES = HASH_BITS // 8
# values per row of /items/stats: model.statistics.stored_stats's width, 4 statistics x 3
# channels and the edges' colour disagreement (not imported from there, which would load torch
# for every reader; a test checks)
STATS_WIDTH = 13


@dataclass
class Items:
    """Row i of every column is one item. ``path`` may be any sequence with len and slicing
    (a lazy one for millions of items); the others are numpy arrays."""

    path: Sequence[str]  # relative to the collection's folder, '/'-separated
    size: np.ndarray  # (n,) int64 file size in bytes
    mtime: np.ndarray  # (n,) int64 modification time, ns since the epoch
    code: np.ndarray  # (n, bits // 8) uint8 packed codes, FAISS bit order
    phash: np.ndarray | None = None  # (n, 8) uint8 perceptual hashes; None for codes alone
    # (n,) float32 reconstruction error through the code (outlier scores); None: not computed
    error: np.ndarray | None = None
    # (n, 8) uint8 pHash of the mirrored picture and dHash (ingest/perceptual.py); None: not computed
    phash_mirror: np.ndarray | None = None
    dhash: np.ndarray | None = None
    # (n, 8) uint8 pHash and dHash of each picture's centre (ranking and duplicates find crops by them)
    phash_centre: np.ndarray | None = None
    dhash_centre: np.ndarray | None = None
    # (n, STATS_WIDTH) float32 channel statistics of the model's input (model/statistics.py;
    # outlier scores); None: not computed (codes alone, vectors, an earlier hashae)
    stats: np.ndarray | None = None
    # (n,) float32 distance of the model's input from its linear twin's subspace (outlier
    # scores; model/network.py HashNet.residual); None: not computed (a model without a twin)
    residual: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.path)
        self.size = np.asarray(self.size, np.int64).reshape(-1)
        self.mtime = np.asarray(self.mtime, np.int64).reshape(-1)
        self.code = np.ascontiguousarray(self.code, dtype=np.uint8)
        if self.code.ndim != 2:
            raise ValueError(f"codes must be 2-D (n, bits // 8), got shape {self.code.shape}")
        for name in ALL_HASH_FIELDS:
            if getattr(self, name) is not None:
                setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=np.uint8).reshape(-1, PHASH_BYTES))
        for name in ("error", "residual"):
            if getattr(self, name) is not None:
                setattr(self, name, np.asarray(getattr(self, name), np.float32).reshape(-1))
        if self.stats is not None:
            self.stats = np.ascontiguousarray(self.stats, dtype=np.float32).reshape(-1, STATS_WIDTH)
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and len(value) != n:
                raise ValueError(f"items have {n} paths but {len(value)} rows of {f.name}")

    def __len__(self) -> int:
        return len(self.path)

    @property
    def nbytes(self) -> int:
        return self.code.shape[1]

    @property
    def hashes(self) -> dict | None:
        """The perceptual hash columns {name: (n, 8)} (the centre's where present), or None
        unless every one of the whole picture's is present."""
        cols = {name: getattr(self, name) for name in ALL_HASH_FIELDS}
        if any(cols[name] is None for name in HASH_FIELDS):
            return None
        return {name: c for name, c in cols.items() if c is not None}

    @classmethod
    def empty(cls, nbytes: int, phash: bool = True, error: bool = True, stats: bool = True) -> "Items":
        z = np.empty(0, np.int64)
        hashes = {name: np.empty((0, PHASH_BYTES), np.uint8) for name in ALL_HASH_FIELDS} if phash else {}
        return cls([], z, z, np.empty((0, nbytes), np.uint8), error=np.empty(0, np.float32) if error else None,
                   stats=np.empty((0, STATS_WIDTH), np.float32) if stats else None, **hashes)

    def take(self, rows) -> "Items":
        """The items at ``rows`` (an index array or boolean mask), in that order."""
        rows = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows, np.int64)
        return Items([self.path[i] for i in rows], **{f.name: None if getattr(self, f.name) is None
                                                      else getattr(self, f.name)[rows]
                                                      for f in fields(self) if f.name != "path"})

    @classmethod
    def concat(cls, parts: list, nbytes: int) -> "Items":
        """All rows of ``parts`` in order; an optional column (hashes, errors) is kept only if
        every part has it."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty(nbytes)

        def joined(name):
            cols = [getattr(p, name) for p in parts]
            return None if any(c is None for c in cols) else np.concatenate(cols)
        return cls([x for p in parts for x in p.path], **{f.name: joined(f.name) for f in fields(cls)
                                                          if f.name != "path"})

    def sorted(self) -> "Items":
        """The same items ordered by path (the order a store keeps)."""
        order = sorted(range(len(self)), key=self.path.__getitem__)
        return self if order == list(range(len(self))) else self.take(order)
