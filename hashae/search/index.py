"""HammingIndex: exact k-NN and Hamming-radius search over packed codes with FAISS binary indexes.

k-NN uses ``IndexBinaryFlat`` (exhaustive, SIMD popcount: exact and hard to beat below ~10^8
codes). Radius search is semantic hashing's "address lookup": every item within distance r.
For small r on large collections it uses ``IndexBinaryMultiHash`` built on demand: split the
code into r + 1 substrings; by pigeonhole, any code within distance r agrees exactly with the
query on at least one of them, so hash lookups on the substrings find every candidate and
the exact distance filters them. That is exact, and its cost grows with the number of
candidates rather than the collection. FAISS's binary ``range_search`` counts distances
``< radius``; this class takes the inclusive radius a user means.
"""
from __future__ import annotations

import os

import faiss
import numpy as np

from ..codes import as_codes, check_bits

# "auto" radius search hashes only when it pays (bench/scale.py, bench/search.py, 64 bits):
# below ~50k items a scan costs about what a hash lookup does; building the hash tables costs
# about 5,000 exhaustive queries (1M codes: 0.93 s against 0.15 ms a scan), so a few queries
# scan, and many queries (clustering) or an index already built hash
HASH_MIN_ITEMS = 50_000
HASH_BUILD_QUERIES = 5_000
MAX_SUBSTRING_BITS = 64


class HammingIndex:
    """``HammingIndex(bits)``; ``.add(codes)``; ``.search(codes, k) -> (distances, ids)``;
    ``.radius_search(codes, r) -> [(ids, distances)]``; ``.save(path)`` / ``HammingIndex.load(path)``."""

    def __init__(self, bits: int):
        self.bits = check_bits(bits)
        self.nbytes = self.bits // 8
        self.flat = faiss.IndexBinaryFlat(self.bits)
        self._multihash: dict = {}  # nhash -> IndexBinaryMultiHash, built on first use

    @classmethod
    def from_codes(cls, codes: np.ndarray) -> "HammingIndex":
        codes = as_codes(codes)
        index = cls(codes.shape[1] * 8)
        index.add(codes)
        return index

    @property
    def ntotal(self) -> int:
        return int(self.flat.ntotal)

    def __len__(self) -> int:
        return self.ntotal

    def add(self, codes: np.ndarray) -> None:
        """Append codes; their ids continue from the current size."""
        codes = as_codes(codes, self.nbytes)
        self.flat.add(codes)
        for mh in self._multihash.values():
            mh.add(codes)

    def search(self, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest items of each query: (distances int32, ids int64), each (nq, k),
        nearest first; ids are -1 (distance bits+1) where the index holds fewer than k items."""
        codes = as_codes(codes, self.nbytes)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        kk = min(k, self.ntotal)
        if kk == 0:
            return (np.full((len(codes), k), self.bits + 1, np.int32), np.full((len(codes), k), -1, np.int64))
        d, i = self.flat.search(codes, kk)
        if kk < k:
            d = np.pad(d, ((0, 0), (0, k - kk)), constant_values=self.bits + 1)
            i = np.pad(i, ((0, 0), (0, k - kk)), constant_values=-1)
        return d.astype(np.int32, copy=False), i.astype(np.int64, copy=False)

    def radius_search(self, codes: np.ndarray, radius: int, method: str = "auto") -> list:
        """All items within Hamming distance ``radius`` (inclusive) of each query, nearest first
        (ties by id): a list of (ids int64, distances int32), one pair per query.

        ``method``: "flat" (exhaustive), "hash" (multi-index hashing) or "auto"."""
        codes = as_codes(codes, self.nbytes)
        query, ids, dist = self.radius_pairs(codes, radius, method)
        lims = np.searchsorted(query, np.arange(len(codes) + 1))
        return [(ids[a:b], dist[a:b]) for a, b in zip(lims[:-1].tolist(), lims[1:].tolist())]

    def radius_pairs(self, codes: np.ndarray, radius: int, method: str = "auto"):
        """radius_search as three flat arrays (query row int64, item id int64, distance int32),
        sorted by query, distance, id: for callers that handle millions of pairs at once."""
        codes = as_codes(codes, self.nbytes)
        radius = int(radius)
        if radius < 0:
            raise ValueError(f"radius must be >= 0, got {radius}")
        if method == "auto":
            method = self.choose_method(len(codes), radius)
        if method == "hash":
            if not self._hash_ok(radius):
                raise ValueError(f"hash radius search needs radius < bits/8, got {radius} for {self.bits} bits")
            index = self._multihash_for(radius + 1)
        elif method == "flat":
            index = self.flat
        else:
            raise ValueError(f"method must be 'auto', 'flat' or 'hash', got {method!r}")
        if len(codes) == 0 or self.ntotal == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int32)
        lims, dist, ids = index.range_search(codes, radius + 1)  # FAISS: strictly below its radius
        # one sort for all queries rather than one per query in Python, which dominated radius
        # clustering of a million codes
        query = np.repeat(np.arange(len(codes), dtype=np.int64), np.diff(lims.astype(np.int64)))
        order = np.lexsort((ids, dist, query))
        return query[order], ids[order].astype(np.int64, copy=False), dist[order].astype(np.int32, copy=False)

    def choose_method(self, n_queries: int, radius: int) -> str:
        """What "auto" picks for ``n_queries`` queries at ``radius``: "hash" or "flat"."""
        if self.ntotal < HASH_MIN_ITEMS or not self._hash_ok(radius):
            return "flat"
        return "hash" if radius + 1 in self._multihash or n_queries >= HASH_BUILD_QUERIES else "flat"

    def _hash_ok(self, radius: int) -> bool:
        nhash = radius + 1
        return self.bits // nhash >= 8 and self.bits // nhash <= MAX_SUBSTRING_BITS

    def _multihash_for(self, nhash: int):
        mh = self._multihash.get(nhash)
        if mh is None:
            b = self.bits // nhash  # substrings of b bits; bits beyond nhash*b only lengthen codes
            mh = faiss.IndexBinaryMultiHash(self.bits, nhash, b)
            if self.ntotal:
                mh.add(self.reconstruct_all())
            self._multihash[nhash] = mh
        return mh

    def reconstruct_all(self) -> np.ndarray:
        """The stored codes, (ntotal, bits/8) uint8, in id order."""
        if self.ntotal == 0:
            return np.empty((0, self.nbytes), np.uint8)
        return faiss.vector_to_array(self.flat.xb).reshape(-1, self.nbytes)

    def save(self, path: str | os.PathLike) -> None:
        """Write the flat index in FAISS's own binary format (plain arrays; no code executes on load)."""
        faiss.write_index_binary(self.flat, os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "HammingIndex":
        flat = faiss.read_index_binary(os.fspath(path))
        if not isinstance(flat, faiss.IndexBinaryFlat):
            flat = faiss.downcast_IndexBinary(flat)
        if not isinstance(flat, faiss.IndexBinaryFlat):
            raise ValueError(f"{path}: not a flat binary FAISS index")
        index = cls(flat.d)
        index.flat = flat
        return index
