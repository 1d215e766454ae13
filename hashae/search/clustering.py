"""Clustering packed codes: exact codes (the semantic-hashing address), Hamming-radius connected
components, k-means in Hamming space with binary centroids, and communities of the codes'
neighbour graph (graph.py).

Every method returns int64 labels, one per row, numbered by group size (0 is the largest group,
ties by first occurrence), so labels are stable and comparable across runs.
"""
from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix, csgraph

from ..codes import as_codes, hamming, unpack
from ..progress import Progress
from .index import HammingIndex
from .methods import CLUSTER_METHODS, DEFAULT_METHOD


def default_radius(bits: int) -> int:
    """Radius of ``cluster(method="radius")`` when none is given: bits // 32 (2 at 64 bits), at
    least 1. (Near duplicates use the wider ``duplicate_radius``.)"""
    return max(1, bits // 32)


def cluster(codes: np.ndarray, method: str = DEFAULT_METHOD, *, radius: int | None = None, k: int | None = None,
            seed: int = 0, restarts: int = 4, iterations: int = 30, progress: bool | None = None) -> np.ndarray:
    """Group rows of packed ``codes``; returns int64 labels (see the module docstring).

    ``method="graph"`` (the default): communities of the codes' k-nearest-neighbour graph
    (search.graph), ``k`` of them or, without ``k``, as many as the graph's modularity chooses;
    ``"exact"``: identical codes; ``"radius"``: connected components of the graph that
    joins codes within Hamming distance ``radius``; ``"kmeans"``: ``k`` clusters, binary
    centroids, best of ``restarts`` seeded runs. ``progress``: a bar on stderr (default: when
    it is a terminal) for the slow methods."""
    codes = as_codes(codes)
    if method == "exact":
        return exact_groups(codes)
    if method == "radius":
        if radius is None or int(radius) < 0:
            raise ValueError("method='radius' needs radius >= 0")
        return radius_components(codes, int(radius), progress=progress)
    if method == "kmeans":
        if k is None or int(k) < 1:
            raise ValueError("method='kmeans' needs k >= 1")
        return binary_kmeans(codes, int(k), seed=seed, restarts=restarts, iterations=iterations,
                             progress=progress)[0]
    if method == "graph":
        if k is not None and int(k) < 1:
            raise ValueError("method='graph' needs k >= 1 (or no k: the graph chooses)")
        from .graph import graph_clusters
        return graph_clusters(codes, None if k is None else int(k), seed=seed, progress=progress).labels
    raise ValueError(f"method must be one of {', '.join(CLUSTER_METHODS)}, got {method!r}")


def centre_order(codes: np.ndarray) -> np.ndarray:
    """Rows of ``codes`` (one group's) ordered by Hamming distance to the group's centre, the
    per-bit majority code, nearest first (ties in row order): the members that show a group best."""
    codes = as_codes(codes)
    if len(codes) == 0:
        return np.empty(0, np.int64)
    centre = np.packbits(unpack(codes).mean(0) > 0.5, bitorder="little")
    return np.argsort(hamming(codes, centre[None, :]), kind="stable")


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber labels so that 0 is the largest group (ties: the group seen first)."""
    labels = np.asarray(labels, np.int64)
    if len(labels) == 0:
        return labels
    uniq, first, inverse, counts = np.unique(labels, return_index=True, return_inverse=True, return_counts=True)
    order = np.lexsort((first, -counts))  # by size desc, then first occurrence
    rank = np.empty(len(uniq), np.int64)
    rank[order] = np.arange(len(uniq))
    return rank[inverse]


def unique_rows(codes: np.ndarray):
    """(unique codes, inverse) treating each row as one opaque key."""
    view = np.ascontiguousarray(codes).view(np.dtype((np.void, codes.shape[1]))).ravel()
    _, first, inverse = np.unique(view, return_index=True, return_inverse=True)
    return codes[first], inverse.ravel()


def exact_groups(codes: np.ndarray) -> np.ndarray:
    if len(codes) == 0:
        return np.empty(0, np.int64)
    return relabel_by_size(unique_rows(codes)[1])


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component id (the smallest member) of each of ``n`` nodes given edges a[i]-b[i], by
    scipy.sparse.csgraph on the sparse edge list (memory linear in the edges)."""
    if len(a) == 0:
        return np.arange(n, dtype=np.int64)
    graph = coo_matrix((np.ones(len(a), np.int8), (np.asarray(a), np.asarray(b))), shape=(n, n)).tocsr()
    _, comp = csgraph.connected_components(graph, directed=False)
    _, first = np.unique(comp, return_index=True)  # scipy numbers components by first member
    return first[comp].astype(np.int64)


def radius_components(codes: np.ndarray, radius: int, block: int = 4096, progress: bool | None = None) -> np.ndarray:
    """Connected components at Hamming distance <= radius. Identical codes are merged first
    (always connected), so the range searches run over distinct codes only."""
    if len(codes) == 0:
        return np.empty(0, np.int64)
    uniq, inverse = unique_rows(codes)
    if radius == 0:
        return relabel_by_size(inverse)
    index = HammingIndex.from_codes(uniq)
    method = index.choose_method(len(uniq), radius)  # decided for all blocks together
    src, dst = [], []
    with Progress(len(uniq), "radius", unit="codes", enabled=progress) as bar:
        for s in range(0, len(uniq), block):
            q, ids, _ = index.radius_pairs(uniq[s:s + block], radius, method)
            q += s
            keep = ids > q  # each edge once
            src.append(q[keep])
            dst.append(ids[keep])
            bar.update(min(block, len(uniq) - s))
    a = np.concatenate(src) if src else np.empty(0, np.int64)
    b = np.concatenate(dst) if dst else np.empty(0, np.int64)
    comp = connected_components(len(uniq), a, b)
    return relabel_by_size(comp[inverse])


def binary_kmeans(codes: np.ndarray, k: int, seed: int = 0, restarts: int = 4, iterations: int = 30,
                  progress: bool | None = None):
    """k-means in Hamming space: assignment by FAISS exact search against the centroids,
    centroids by per-bit majority vote, k-means++ seeding; the restart with the lowest total
    distance wins. Returns (labels, centroids (k, bytes) uint8, total distance)."""
    n = len(codes)
    if n == 0:
        return np.empty(0, np.int64), np.empty((0, codes.shape[1]), np.uint8), 0
    k = min(k, n)
    bits = unpack(codes)
    rng = np.random.default_rng(seed)
    best = None
    restarts = max(1, restarts)
    with Progress(restarts * iterations, "k-means", unit="it", enabled=progress) as bar:
        for r in range(restarts):
            centroids = _kmeanspp(codes, k, rng)
            labels = None
            for it in range(iterations):
                dist, assign = HammingIndex.from_codes(centroids).search(codes, 1)
                assign, dist = assign[:, 0], dist[:, 0]
                if labels is not None and np.array_equal(assign, labels):
                    bar.update(iterations - it)  # converged: the remaining iterations are skipped
                    break
                labels = assign
                centroids = _majority(bits, labels, k, dist)
                bar.update(1, restart=r + 1, distance=float(dist.mean()))
            total = int(dist.sum())
            if best is None or total < best[2]:
                best = (labels, centroids, total)
    labels, centroids, total = best
    return relabel_by_size(labels), centroids, total


def _kmeanspp(codes: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding with Hamming distance; sampled over at most 20k rows for speed."""
    sample = codes if len(codes) <= 20_000 else codes[rng.choice(len(codes), 20_000, replace=False)]
    chosen = [int(rng.integers(len(sample)))]
    d = np.full(len(sample), np.inf)
    for _ in range(1, k):
        index = HammingIndex.from_codes(sample[chosen[-1:]])
        d = np.minimum(d, index.search(sample, 1)[0][:, 0].astype(float))
        w = d ** 2
        chosen.append(int(rng.choice(len(sample), p=w / w.sum())) if w.sum() > 0 else int(rng.integers(len(sample))))
    return sample[chosen].copy()


def _majority(bits, labels, k, dist):
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    ones = np.stack([np.bincount(labels, weights=bits[:, j], minlength=k) for j in range(bits.shape[1])], axis=1)
    new = np.packbits(ones * 2 > counts[:, None], axis=1, bitorder="little")
    empty = np.flatnonzero(counts == 0)
    if len(empty):  # re-seed empty clusters with the worst-fitting points
        far = np.argsort(-dist, kind="stable")[: len(empty)]
        new[empty] = np.packbits(bits[far], axis=1, bitorder="little")
    return new
