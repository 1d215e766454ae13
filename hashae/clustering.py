"""Clustering packed codes: exact codes (the semantic-hashing address), Hamming-radius connected
components, and k-means in Hamming space with binary centroids.

Every method returns int64 labels, one per row, numbered by group size (0 is the largest group,
ties by first occurrence), so labels are stable and comparable across runs.
"""
from __future__ import annotations

import itertools

import numpy as np

from .codes import as_codes, hamming, unpack
from .index import HammingIndex
from .progress import Progress

METHODS = ("exact", "radius", "kmeans")


def default_radius(bits: int) -> int:
    """Radius of ``cluster(method="radius")`` when none is given: bits // 32 (2 at 64 bits), at
    least 1. (Near duplicates use the wider ``duplicate_radius``.)"""
    return max(1, bits // 32)


def cluster(codes: np.ndarray, method: str = "exact", *, radius: int | None = None, k: int | None = None,
            seed: int = 0, restarts: int = 4, iterations: int = 30, progress: bool | None = None) -> np.ndarray:
    """Group rows of packed ``codes``; returns int64 labels (see the module docstring).

    ``method="exact"``: identical codes; ``"radius"``: connected components of the graph that
    joins codes within Hamming distance ``radius``; ``"kmeans"``: ``k`` clusters, binary
    centroids, best of ``restarts`` seeded runs. ``progress``: a bar on stderr (default: when
    it is a terminal) for the two slow methods."""
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
    raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


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


def _unique_rows(codes: np.ndarray):
    """(unique codes, inverse) treating each row as one opaque key."""
    view = np.ascontiguousarray(codes).view(np.dtype((np.void, codes.shape[1]))).ravel()
    _, first, inverse = np.unique(view, return_index=True, return_inverse=True)
    return codes[first], inverse.ravel()


def exact_groups(codes: np.ndarray) -> np.ndarray:
    if len(codes) == 0:
        return np.empty(0, np.int64)
    return relabel_by_size(_unique_rows(codes)[1])


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component id (the smallest member) of each of ``n`` nodes given edges a[i]-b[i]:
    min-label propagation with pointer jumping, all vectorised."""
    labels = np.arange(n, dtype=np.int64)
    if len(a) == 0:
        return labels
    while True:
        m = np.minimum(labels[a], labels[b])
        new = labels.copy()
        np.minimum.at(new, a, m)
        np.minimum.at(new, b, m)
        while True:  # pointer jumping: follow labels to their roots
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, labels):
            return labels
        labels = new


def radius_components(codes: np.ndarray, radius: int, block: int = 4096, progress: bool | None = None) -> np.ndarray:
    """Connected components at Hamming distance <= radius. Identical codes are merged first
    (always connected), so the range searches run over distinct codes only."""
    if len(codes) == 0:
        return np.empty(0, np.int64)
    uniq, inverse = _unique_rows(codes)
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


def duplicate_radius(bits: int) -> int:
    """Semantic radius of near-duplicate candidates when none is given: bits // 16 (4 at 64
    bits), at least 1. Wider than ``default_radius``, since the perceptual check removes the
    look-alikes a wider radius lets in (bench/duplicates.py)."""
    return max(1, bits // 16)


def near_duplicates(codes: np.ndarray, radius: int, phash: np.ndarray | None = None,
                    confirm: int | None = None, close: int | None = None, block: int = 4096,
                    max_pairs: int = 1 << 22, progress: bool | None = None) -> np.ndarray:
    """Labels (as ``cluster``) of near-duplicate groups: connected components of item pairs
    whose codes are within Hamming ``radius`` and, when ``phash`` (N, 8) is given, whose
    perceptual hashes are within ``confirm`` bits (default perceptual.CONFIRM), together with
    pairs whose hashes are within ``close`` bits (default perceptual.CLOSE; negative: none)
    and whose codes still agree on three quarters of their bits. Without ``phash`` this is
    ``radius_components``. Candidate pairs are verified ``max_pairs`` at a time, so memory
    stays bounded however dense the codes."""
    codes = as_codes(codes)
    if confirm is not None and not 0 <= int(confirm) <= 64:
        raise ValueError(f"confirm must be 0 to 64 bits, got {confirm}")
    if phash is None:
        return radius_components(codes, radius, progress=progress)
    from .perceptual import CLOSE, CONFIRM
    confirm = CONFIRM if confirm is None else int(confirm)
    close = CLOSE if close is None else int(close)
    phash = as_codes(phash, 8)
    n = len(codes)
    if len(phash) != n:
        raise ValueError(f"{n} codes but {len(phash)} perceptual hashes")
    if n == 0:
        return np.empty(0, np.int64)
    # items equal in both code and hash are duplicates outright: pair up only the distinct
    # (code, hash) rows, which keeps bursts of near-identical files (video frames) cheap
    both, same = _unique_rows(np.hstack([codes, phash]))
    if len(both) < n:
        labels = near_duplicates(both[:, :codes.shape[1]], radius, both[:, codes.shape[1]:], confirm, close, block,
                                 max_pairs, progress)
        return relabel_by_size(labels[same])
    # two sources of candidates, each checked by the other key: codes within the radius whose
    # pictures match (look-alikes share codes, copies share both), and nearly equal hashes whose
    # codes an edit moved further (brightness, contrast); a hash match alone would join flat or
    # textured pictures of different things, whose low frequencies all look alike
    sources = [(codes, radius, phash, confirm)]
    if close >= 0:
        sources.append((phash, close, codes, codes.shape[1] * 8 // 4))
    grouped = [_unique_rows(key) for key, *_ in sources]
    src, dst, tally = [], [], {"pairs": 0}
    with Progress(sum(len(g[0]) for g in grouped), "duplicates", unit="keys", enabled=progress) as bar:
        for (uniq, inverse), (_, r, other, limit) in zip(grouped, sources):
            for a, b in _verified_pairs(uniq, inverse, r, other, limit, block, max_pairs, bar, tally):
                src.append(a)
                dst.append(b)
    a = np.concatenate(src) if src else np.empty(0, np.int64)
    b = np.concatenate(dst) if dst else np.empty(0, np.int64)
    return relabel_by_size(connected_components(n, a, b))


def _verified_pairs(uniq, inverse, radius, other, limit, block, max_pairs, bar, tally):
    """Item pairs (a, b) whose keys (distinct keys ``uniq``, item i's is ``uniq[inverse[i]]``)
    are within ``radius`` and whose ``other`` rows are within ``limit``: a radius search over
    the distinct keys, each pair of keys expanded to its items in chunks of at most
    ``max_pairs``; ``tally["pairs"]`` counts the pairs checked."""
    members = np.argsort(inverse, kind="stable")  # items grouped by their key
    counts = np.bincount(inverse, minlength=len(uniq))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    index = HammingIndex.from_codes(uniq)
    method = index.choose_method(len(uniq), radius)
    for s in range(0, len(uniq), block):
        u, v, _ = index.radius_pairs(uniq[s:s + block], radius, method)
        u += s
        keep = v >= u  # each pair of keys once, and each key with itself (items sharing it)
        u, v = u[keep], v[keep]
        sizes = counts[u] * counts[v]
        small = np.flatnonzero(sizes <= max_pairs)
        bounds = np.searchsorted(np.cumsum(sizes[small]), np.arange(max_pairs, int(sizes[small].sum()), max_pairs))
        chunks = (_item_pairs(u[part], v[part], members, starts, counts) for part in np.split(small, bounds))
        for a, b in itertools.chain(chunks, _big_pairs(u, v, np.flatnonzero(sizes > max_pairs), members, starts,
                                                       counts, max_pairs)):
            ok = hamming(other[a], other[b]) <= limit
            tally["pairs"] += len(a)
            yield a[ok], b[ok]
        bar.update(min(block, len(uniq) - s), pairs=tally["pairs"])


def _item_pairs(u, v, members, starts, counts):
    """Every pair of items (a, b) with a's code u[i] and b's code v[i]; for u[i] == v[i] only the
    pairs inside that code's group, each once."""
    cu, cv = counts[u], counts[v]
    sizes = cu * cv
    pair = np.repeat(np.arange(len(u)), sizes)
    t = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    i, j = t // cv[pair], t % cv[pair]
    a = members[starts[u[pair]] + i]
    b = members[starts[v[pair]] + j]
    keep = (u[pair] != v[pair]) | (i < j)
    return a[keep], b[keep]


def _big_pairs(u, v, big, members, starts, counts, max_pairs):
    """_item_pairs for code pairs with more than ``max_pairs`` item pairs (thousands of items on
    one code), a slice of rows at a time."""
    for k in big:
        first = members[starts[u[k]]:starts[u[k]] + counts[u[k]]]
        second = members[starts[v[k]]:starts[v[k]] + counts[v[k]]]
        rows = max(1, max_pairs // len(second))
        for r in range(0, len(first), rows):
            i = np.repeat(np.arange(r, min(r + rows, len(first))), len(second))
            j = np.tile(np.arange(len(second)), len(i) // len(second))
            keep = (i < j) if u[k] == v[k] else np.ones(len(i), bool)
            yield first[i[keep]], second[j[keep]]


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
