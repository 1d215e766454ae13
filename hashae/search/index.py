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
# ...and only with substrings of at least this many bits: with 2^b buckets per substring, each
# query's candidates number about (r + 1) * n / 2^b, and below 11 bits a scan was faster (64
# bits, radius 6: 9-bit substrings took 1.75-6.7x as long as a scan; bench/README.md, "Search speed")
HASH_MIN_SUBSTRING_BITS = 11
# k-NN over more codes than this uses an inverted-file index (IndexBinaryIVF) instead of an
# exhaustive scan (bench/distributed.py: where a scan stops answering in interactive time)
IVF_MIN_ITEMS = 100_000_000
NPROBE = 32  # IVF lists visited per query: the recall/speed setting


class HammingIndex:
    """``HammingIndex(bits)``; ``.add(codes)``; ``.search(codes, k) -> (distances, ids)``;
    ``.radius_search(codes, r) -> [(ids, distances)]``; ``.save(path)`` / ``HammingIndex.load(path)``.

    ``HammingIndex.build(parts)`` picks the layout for a collection: one exhaustive index, one
    per part of a sharded collection (FAISS's IndexBinaryShards, searched in threads, exact), or
    above ``IVF_MIN_ITEMS`` codes an inverted-file index (approximate; ``nprobe`` trades speed
    for recall)."""

    def __init__(self, bits: int):
        self.bits = check_bits(bits)
        self.nbytes = self.bits // 8
        self.flat = faiss.IndexBinaryFlat(self.bits)
        self._multihash: dict = {}  # nhash -> IndexBinaryMultiHash, built on first use
        self._shards: list = []  # one IndexBinaryFlat per part; then self.flat is their IndexBinaryShards
        self.ivf = None  # an IndexBinaryIVF answering k-NN instead of self.flat

    @classmethod
    def build(cls, parts: list, ivf_min_items: int = IVF_MIN_ITEMS, nprobe: int = NPROBE) -> "HammingIndex":
        """An index over the codes of ``parts`` (a list of (n_i, bits/8) arrays, ids in order):
        sharded when there are several parts, with an IVF for k-NN from ``ivf_min_items``."""
        parts = [as_codes(p) for p in parts]
        index = cls(parts[0].shape[1] * 8)
        if len(parts) > 1:
            index.flat = faiss.IndexBinaryShards(index.bits, True, True)  # threaded, successive ids
        for p in parts:
            index.add(p)
        if index.ntotal >= ivf_min_items:
            index.use_ivf(nprobe)
        return index

    @property
    def sharded(self) -> bool:
        return bool(self._shards)

    def use_ivf(self, nprobe: int = NPROBE, nlist: int | None = None, seed: int = 0) -> None:
        """Answer k-NN with an inverted-file index: the codes are split into ``nlist`` lists
        (default about sqrt(n), at most 65,536) by binary k-means on a sample, and a query
        scans the ``nprobe`` nearest lists. Radius search stays exact."""
        codes = self.reconstruct_all()
        n = len(codes)
        nlist = int(nlist or min(65_536, max(1, int(np.sqrt(n)))))
        quantizer = faiss.IndexBinaryFlat(self.bits)
        ivf = faiss.IndexBinaryIVF(quantizer, self.bits, nlist)
        ivf.cp.seed = seed
        sample = codes if n <= 64 * nlist else codes[np.random.default_rng(seed).choice(n, 64 * nlist, replace=False)]
        ivf.train(sample)
        ivf.add(codes)
        ivf.nprobe = max(1, min(int(nprobe), nlist))
        self._quantizer, self.ivf = quantizer, ivf  # the IVF does not own its quantizer

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
        """Append codes; their ids continue from the current size (a new part when sharded)."""
        codes = as_codes(codes, self.nbytes)
        if isinstance(self.flat, faiss.IndexBinaryShards):
            shard = faiss.IndexBinaryFlat(self.bits)
            shard.add(codes)
            self._shards.append(shard)
            self.flat.add_shard(shard)
        else:
            self.flat.add(codes)
        if self.ivf is not None:
            self.ivf.add(codes)
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
        d, i = (self.ivf if self.ivf is not None else self.flat).search(codes, kk)
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
        # FAISS's shards have no range search: each part is searched, its ids offset by the parts before it
        parts = self._shards if index is self.flat and self._shards else [index]
        offsets = np.cumsum([0] + [p.ntotal for p in parts[:-1]])
        found = [_pairs(p, codes, radius, offset) for p, offset in zip(parts, offsets)]
        query, ids, dist = (np.concatenate(column) for column in zip(*found))
        # one sort for all queries rather than one per query in Python, which dominated radius
        # clustering of a million codes
        order = np.lexsort((ids, dist, query))
        return query[order], ids[order], dist[order].astype(np.int32, copy=False)

    def choose_method(self, n_queries: int, radius: int) -> str:
        """What "auto" picks for ``n_queries`` queries at ``radius``: "hash" or "flat"."""
        if (self.ntotal < HASH_MIN_ITEMS or not self._hash_ok(radius)
                or self._substring_bits(radius) < HASH_MIN_SUBSTRING_BITS):
            return "flat"
        return "hash" if radius + 1 in self._multihash or n_queries >= HASH_BUILD_QUERIES else "flat"

    def _substring_bits(self, radius: int) -> int:
        """Bits of each of the radius + 1 substrings multi-index hashing splits a code into."""
        return self.bits // (radius + 1)

    def _hash_ok(self, radius: int) -> bool:
        return 8 <= self._substring_bits(radius) <= MAX_SUBSTRING_BITS

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
        flats = self._shards or [self.flat]
        return np.concatenate([faiss.vector_to_array(f.xb).reshape(-1, self.nbytes) for f in flats])

    def save(self, path: str | os.PathLike) -> None:
        """Write the codes as one flat index in FAISS's own binary format (plain arrays; no code
        executes on load)."""
        flat = self.flat
        if self._shards:
            flat = faiss.IndexBinaryFlat(self.bits)
            flat.add(self.reconstruct_all())
        faiss.write_index_binary(flat, os.fspath(path))

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


def _pairs(index, codes: np.ndarray, radius: int, offset: int = 0):
    """FAISS's range search at an inclusive radius (FAISS counts distances strictly below) as
    flat (query row, item id + ``offset``, distance) arrays, unsorted."""
    lims, dist, ids = index.range_search(codes, radius + 1)
    query = np.repeat(np.arange(len(codes), dtype=np.int64), np.diff(lims.astype(np.int64)))
    return query, ids.astype(np.int64) + offset, dist
