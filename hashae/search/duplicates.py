"""Near duplicates: items whose semantic codes and perceptual hashes both say "the same
picture". Semantic codes alone join look-alikes (two photos of bees on flowers can share a
code); the pHash check keeps copies. bench/duplicates.py measures both and chose the defaults
(bench/README.md)."""
from __future__ import annotations

import itertools

import numpy as np

from ..codes import as_codes, hamming
from ..progress import Progress
from .clustering import connected_components, radius_components, relabel_by_size, unique_rows
from .index import HammingIndex

# a code pair counts only if the pHashes differ in at most this many of 64 bits: edited copies
# differ by up to ~14 bits, unrelated photos by 32 on average, and chance pairs grow with the
# square of the collection
CONFIRM = 12
# hashes this close make a pair even when an edit (brightness) moved the codes past the radius,
# provided the codes still agree on 3/4 of their bits: flat or textured pictures of different
# things can share a hash, and only the codes tell them apart
CLOSE = 4


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
    perceptual hashes are within ``confirm`` bits (default CONFIRM), together with
    pairs whose hashes are within ``close`` bits (default CLOSE; negative: none)
    and whose codes still agree on three quarters of their bits. Without ``phash`` this is
    ``radius_components``. Candidate pairs are verified ``max_pairs`` at a time, so memory
    stays bounded however dense the codes."""
    codes = as_codes(codes)
    if confirm is not None and not 0 <= int(confirm) <= 64:
        raise ValueError(f"confirm must be 0 to 64 bits, got {confirm}")
    if phash is None:
        return radius_components(codes, radius, progress=progress)
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
    both, same = unique_rows(np.hstack([codes, phash]))
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
    grouped = [unique_rows(key) for key, *_ in sources]
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
