"""Near duplicates: items whose pictures are copies of one picture. Semantic codes alone join
look-alikes (two photos of bees on flowers can share a code); perceptual hashes alone miss what
an edit moves (a crop, a rotation) and join flat pictures whose low frequencies look alike. A
pair is kept when either view is convincing and the other is not against it.
bench/duplicates.py measures every rule and chose the defaults (bench/README.md)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..codes import as_codes, hamming
from ..ingest.perceptual import Perceptual
from ..progress import Progress
from .clustering import connected_components, radius_components, relabel_by_size, unique_rows
from .index import HammingIndex

# With every perceptual hash (pHash, its mirror's, dHash; collections indexed by this hashae),
# with D the bits (of 128) in which two items' pHash and dHash differ, mirrored or not,
# whichever is closer, and C the codes' Hamming distance (counted as at 64 bits), a pair is a
# copy when either view is convincing and the other is not against it:
#   D <= PERCEPTUAL // 2                 the hashes alone (a greyscale copy: D <= 4, while its
#                                        codes, which see colour, may be 50 bits apart)
#   D <= PERCEPTUAL and C <= 16          the hashes, with codes that agree on 3/4 of their bits
#   D + C <= PERCEPTUAL + 6              both together: crops and rotations move the hashes,
#                                        and the codes vouch for them
# PERCEPTUAL is the largest value that joined no two unrelated photos on any of three sets of
# thousands (bench/duplicates.py); at 20, a floodlit obelisk and a sandal on dark ground (D 19,
# codes 10 bits apart) were joined
PERCEPTUAL = 18
# A cropped copy's hashes can be 20-27 bits from its original's while its whole picture is within
# a few bits of the original's centre (ingest/perceptual.py): D is then also read as the centre's
# distance, either way round, plus CENTRE_MARGIN bits. Without the margin two photos of different
# cars on white, centred alike, were joined on cifar10_test (centre 18-19 bits apart); with it,
# none (bench/README.md, "Near duplicates")
CENTRE_MARGIN = 4
# A copy rotated by a few degrees has black corners that its whole picture's hashes see (median
# D 20 on 309 rotated photos) and the two centres do not (median 13): D is also read as the
# two centres' distance plus CENTRES_MARGIN bits (bench/README.md, "Near duplicates")
CENTRES_MARGIN = 0
# candidate pairs for that check come from codes within the radius, and from pHashes within
# CLOSE or dHashes within DHASH_CLOSE bits (either orientation): FAISS multi-hash searches,
# where a radius of 18 in 128 bits would be an all-pairs scan. The dHash radius of 6 finds more
# crops and rotations than 4 (recall 0.893 against 0.867 on edited copies, bench/README.md)
# but its search grows as n^2 / 512 (9 s against 1 s at 100,000 random hashes, per
# orientation), so above DHASH_WIDE_ITEMS distinct dHashes it is 4
DHASH_CLOSE, DHASH_WIDE_ITEMS = 6, 100_000
# The rule for collections with the pHash alone (built by an earlier hashae or from codes): a
# code pair counts if the pHashes differ in at most CONFIRM of 64 bits; hashes within CLOSE make
# a pair when the codes still agree on three quarters of their bits (brightening moves codes)
CONFIRM = 12
CLOSE = 4


def duplicate_radius(bits: int) -> int:
    """Semantic radius of near-duplicate candidates when none is given: bits // 16 (4 at 64
    bits), at least 1. Wider than ``default_radius``, since the perceptual check removes the
    look-alikes a wider radius lets in (bench/duplicates.py)."""
    return max(1, bits // 16)


def near_duplicates(codes: np.ndarray, radius: int, phash: np.ndarray | Perceptual | None = None,
                    confirm: int | None = None, close: int | None = None, block: int = 4096,
                    max_pairs: int = 1 << 22, progress: bool | None = None) -> np.ndarray:
    """Labels (as ``cluster``) of near-duplicate groups: connected components of item pairs
    that pass the perceptual check.

    ``phash`` a ``Perceptual`` record (``hashae.perceptual_hashes``): candidates are codes
    within ``radius`` and hashes within ``close`` (pHash, default CLOSE) or DHASH_CLOSE bits
    (dHash; CLOSE above DHASH_WIDE_ITEMS items; negative ``close``: neither), each also against
    the mirror's and the centre's, and centre against centre; a pair is kept when its 128 perceptual bits
    (``perceptual_distance``) differ in at most half of ``confirm`` (default PERCEPTUAL) bits,
    in at most ``confirm`` with codes that agree on three quarters of their bits, or in at
    most ``confirm`` + 6 with the codes' distance added. ``phash`` an (N, 8) pHash array: codes within ``radius``
    whose pHashes are within ``confirm`` (default CONFIRM) of 64 bits, and pHashes within
    ``close`` whose codes agree on three quarters of their bits. Without ``phash``: codes within
    ``radius`` (``radius_components``). Candidates are verified ``max_pairs`` at a time, so
    memory stays bounded however dense the codes."""
    codes = as_codes(codes)
    if phash is None:
        return radius_components(codes, radius, progress=progress)
    full = isinstance(phash, Perceptual)
    hashes = phash if full else as_codes(phash, 8)
    limit = 128 if full else 64
    if confirm is not None and not 0 <= int(confirm) <= limit:
        raise ValueError(f"confirm must be 0 to {limit} bits, got {confirm}")
    close = CLOSE if close is None else int(close)
    n = len(codes)
    if len(hashes) != n:
        raise ValueError(f"{n} codes but {len(hashes)} perceptual hashes")
    if n == 0:
        return np.empty(0, np.int64)
    # items equal in code and every hash are duplicates outright: pair up only the distinct
    # rows, which keeps bursts of near-identical files (video frames) cheap
    keys = [codes] + ([getattr(hashes, name) for name in hashes.names] if full else [hashes])
    both, same = unique_rows(np.hstack(keys))
    if len(both) < n:
        parts = np.cumsum([k.shape[1] for k in keys])[:-1]
        sub = np.split(both, parts, axis=1)
        labels = near_duplicates(sub[0], radius, Perceptual(*sub[1:]) if full else sub[1], confirm, close, block,
                                 max_pairs, progress)
        return relabel_by_size(labels[same])
    rule = _Rule.full(codes, hashes, confirm) if full else _Rule.phash_only(codes, hashes, confirm, radius, close)
    # (keys searched, queries: None to search the keys against themselves, radius)
    searches = [(_Groups.of(codes), None, int(radius))]
    if close >= 0 and full:
        ph, dh = _Groups.of(hashes.phash), _Groups.of(hashes.dhash)
        wide = DHASH_CLOSE if len(dh.keys) <= DHASH_WIDE_ITEMS else CLOSE
        searches += [(ph, None, close), (ph, _Groups.of(hashes.phash_mirror), close),
                     (dh, None, wide), (dh, _Groups.of(hashes.dhash_mirror), wide)]
        if hashes.has_centre:  # each item's centre against the others' whole pictures (crops) and centres
            pc, dc = _Groups.of(hashes.phash_centre), _Groups.of(hashes.dhash_centre)
            searches += [(ph, pc, close), (dh, dc, wide), (pc, None, close), (dc, None, wide)]
    elif close >= 0:
        searches.append((_Groups.of(hashes), None, close))
    src, dst, tally = [], [], {"pairs": 0}
    total = sum(len((k if q is None else q).keys) for k, q, _ in searches)
    with Progress(total, "duplicates", unit="keys", enabled=progress) as bar:
        for keys, queries, r in searches:
            for a, b in _verified_pairs(keys, queries, r, rule, block, max_pairs, bar, tally):
                src.append(a)
                dst.append(b)
    a = np.concatenate(src) if src else np.empty(0, np.int64)
    b = np.concatenate(dst) if dst else np.empty(0, np.int64)
    return relabel_by_size(connected_components(n, a, b))


def perceptual_distance(hashes: Perceptual, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """D of the rule for item pairs (a[i], b[i]): the bits (of 128) in which their pHash and
    dHash differ, mirrored or not, or one's centre and the other's whole picture differ plus
    CENTRE_MARGIN, or their two centres differ plus CENTRES_MARGIN, whichever is least."""
    seen = hashes.distance(a, b)
    if hashes.has_centre:
        centre = np.minimum(hashes.centre_distance(a, b, hashes), hashes.centre_distance(b, a, hashes))
        seen = np.minimum(seen, centre + CENTRE_MARGIN)
        seen = np.minimum(seen, hashes.centres_distance(a, b) + CENTRES_MARGIN)
    return seen


@dataclass(frozen=True)
class _Rule:
    """The check every candidate pair (a, b) of item index arrays must pass."""

    codes: np.ndarray
    hashes: Perceptual | np.ndarray
    confirm: int
    radius: int | None = None  # the pHash-only rule's code radius and hash closeness; None in the full rule
    close: int | None = None

    @classmethod
    def full(cls, codes, hashes: Perceptual, confirm):
        return cls(codes, hashes, PERCEPTUAL if confirm is None else int(confirm))

    @classmethod
    def phash_only(cls, codes, phash, confirm, radius, close):
        return cls(codes, phash, CONFIRM if confirm is None else int(confirm), int(radius), close)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        code = hamming(self.codes[a], self.codes[b])
        if self.radius is not None:
            seen = hamming(self.hashes[a], self.hashes[b])
            return ((code <= self.radius) & (seen <= self.confirm)) | \
                ((seen <= self.close) & (code <= self.codes.shape[1] * 8 // 4))
        seen = perceptual_distance(self.hashes, a, b)
        code64 = code * 64 // (self.codes.shape[1] * 8)  # codes of any length count as at 64 bits
        return (seen <= self.confirm // 2) | ((seen <= self.confirm) & (code64 <= 16)) | \
            (seen + code64 <= self.confirm + 6)


@dataclass(frozen=True)
class _Groups:
    """Items grouped by a key: the distinct keys, and for key k its items
    ``members[starts[k]:starts[k] + counts[k]]``."""

    keys: np.ndarray
    members: np.ndarray
    starts: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, keys: np.ndarray) -> "_Groups":
        uniq, inverse = unique_rows(keys)
        counts = np.bincount(inverse, minlength=len(uniq))
        return cls(uniq, np.argsort(inverse, kind="stable"), np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)


def _verified_pairs(db: _Groups, queries: _Groups | None, radius: int, accept, block, max_pairs, bar, tally):
    """Item pairs (a, b) that ``accept`` keeps among those whose keys are within ``radius``: the
    distinct query keys (default: ``db``'s own, each pair of keys once) searched against
    ``db``'s, each pair of keys expanded to its items in chunks of at most ``max_pairs``;
    ``tally["pairs"]`` counts the pairs checked."""
    own = queries is None
    q = db if own else queries
    index = HammingIndex.from_codes(db.keys)
    method = index.choose_method(len(q.keys), radius)
    for s in range(0, len(q.keys), block):
        u, v, _ = index.radius_pairs(q.keys[s:s + block], radius, method)
        u += s
        if own:  # each pair of keys once, and each key with itself (items sharing it)
            keep = v >= u
            u, v = u[keep], v[keep]
        sizes = q.counts[u] * db.counts[v]
        small = np.flatnonzero(sizes <= max_pairs)
        bounds = np.searchsorted(np.cumsum(sizes[small]), np.arange(max_pairs, int(sizes[small].sum()), max_pairs))
        chunks = (_item_pairs(u[part], v[part], q, db, own) for part in np.split(small, bounds))
        for a, b in itertools.chain(chunks, _big_pairs(u, v, np.flatnonzero(sizes > max_pairs), q, db, own,
                                                       max_pairs)):
            ok = accept(a, b)
            tally["pairs"] += len(a)
            yield a[ok], b[ok]
        bar.update(min(block, len(q.keys) - s), pairs=tally["pairs"])


def _item_pairs(u, v, q: _Groups, db: _Groups, own: bool):
    """Every pair of items (a, b) with a's key q.keys[u[i]] and b's db.keys[v[i]]; an item never
    with itself, and with ``own`` (one grouping) each pair inside a key's group once."""
    cu, cv = q.counts[u], db.counts[v]
    sizes = cu * cv
    pair = np.repeat(np.arange(len(u)), sizes)
    t = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    i, j = t // cv[pair], t % cv[pair]
    a = q.members[q.starts[u[pair]] + i]
    b = db.members[db.starts[v[pair]] + j]
    keep = ((u[pair] != v[pair]) | (i < j)) if own else (a != b)
    return a[keep], b[keep]


def _big_pairs(u, v, big, q: _Groups, db: _Groups, own: bool, max_pairs):
    """_item_pairs for key pairs with more than ``max_pairs`` item pairs (thousands of items on
    one key), a slice of rows at a time."""
    for k in big:
        first = q.members[q.starts[u[k]]:q.starts[u[k]] + q.counts[u[k]]]
        second = db.members[db.starts[v[k]]:db.starts[v[k]] + db.counts[v[k]]]
        rows = max(1, max_pairs // len(second))
        for r in range(0, len(first), rows):
            i = np.repeat(np.arange(r, min(r + rows, len(first))), len(second))
            j = np.tile(np.arange(len(second)), len(i) // len(second))
            a, b = first[i], second[j]
            keep = (i < j) if (own and u[k] == v[k]) else (a != b)
            yield a[keep], b[keep]
