"""Outlier scores from what a collection knows about each item: how badly its binary code
reconstructs it (``error``), how far its code lies from its nearest codes, and how far its
perceptual hash lies from its nearest hashes. Pure functions over arrays; higher scores fit the
collection less. bench/outliers.py compares the scores.
"""
from __future__ import annotations

import numpy as np

from ..codes import as_codes
from .index import HammingIndex

NEIGHBOURS = 10  # k of the neighbour-based scores
# up to this many items the neighbours come from an exhaustive scan; above it from an
# inverted-file index over all of them (HammingIndex.use_ivf: about sqrt(n) lists, NPROBE
# visited per item), so the cost is n x NPROBE x sqrt(n) rather than n x n. It replaced a scan
# of a seeded sample of 200,000, which missed exact copies outside the sample and agreed less
# with the exhaustive scores (bench/README.md, "Outliers": "Past 200,000 items")
EXACT_MAX = 200_000
NPROBE = 64
BLOCK = 4096  # queries per FAISS call: bounds the (block, k) result arrays
METHODS = ("error", "knn", "relative", "combined", "union", "joint")
DEFAULT = "joint"  # chosen by bench/outliers.py: six shared sets and the sample (bench/README.md, "Outliers")
# a vector collection's default: the larger of the error's and the code distance's ranks. It has
# no hashes or statistics, and with only two signals Fisher's sum let a modest rank on both
# outweigh a top rank on one (bench/outliers.py --vectors; bench/README.md, "Outliers": "Vector
# collections")
VECTOR_DEFAULT = "union"


def neighbour_table(codes: np.ndarray, k: int = NEIGHBOURS, exact_max: int = EXACT_MAX, nprobe: int = NPROBE,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(distances, ids), each (n, k): every item's k nearest other items in Hamming space, by an
    exhaustive scan up to ``exact_max`` items and above it by a seeded inverted-file index over
    all of them visiting ``nprobe`` lists (approximate: a distance may come out a little long,
    never short). An item is never its own neighbour; exact copies are (a copy shares its list)."""
    codes = as_codes(codes)
    n = len(codes)
    k = max(1, min(k, n - 1))
    index = HammingIndex.from_codes(codes)
    if n > exact_max:
        index.use_ivf(nprobe, seed=seed)
    dist, ids = np.empty((n, k), np.int32), np.empty((n, k), np.int64)
    for s in range(0, n, BLOCK):
        d, i = index.search(codes[s:s + BLOCK], k + 1)
        d = np.where(i >= 0, d, index.bits)  # none found in the lists visited: as far as codes go
        dist[s:s + len(i)], ids[s:s + len(i)] = without_self(d, i, np.arange(s, s + len(i)))
    return dist, ids


def without_self(dist: np.ndarray, ids: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """k + 1 hits per query (distances, ids) -> k: each query's own row (``rows``) left out where
    it was found, else the farthest hit."""
    n, k = ids.shape[0], ids.shape[1] - 1
    own = ids == rows[:, None]
    keep = np.ones_like(own)
    keep[np.arange(n), np.where(own.any(1), own.argmax(1), k)] = False
    return dist[keep].reshape(n, k), ids[keep].reshape(n, k)


def percentile_ranks(x: np.ndarray) -> np.ndarray:
    """Each value's rank among all as a fraction in (0, 1]; ties share their mean rank."""
    from scipy.stats import rankdata
    return rankdata(x) / max(len(x), 1)


def joint_evidence(*signals: np.ndarray) -> np.ndarray:
    """Fisher's combination of several scores (higher = odder): each item's percentile rank
    in each score read as an empirical tail probability p = 1 - rank + 1/(2n), and -sum(log p).
    An item far out on one score counts, and one fairly high on all counts more."""
    n = len(signals[0])
    return sum(-np.log(1 - percentile_ranks(s) + 0.5 / n) for s in signals)


def column_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, spread, known): each column's mean and standard deviation over the rows whose
    values are all finite numbers (``known``), in float64; a spread under 1e-12 (a constant
    column) is 1, so that the column is only shifted."""
    known = np.isfinite(x).all(1)
    if not known.any():
        return np.zeros(x.shape[1]), np.ones(x.shape[1]), known
    rows = x[known]
    mean, spread = rows.mean(0, dtype=np.float64), rows.std(0, dtype=np.float64)
    return mean, np.where(spread < 1e-12, 1.0, spread), known


def standardised(x: np.ndarray, moments: tuple | None = None) -> np.ndarray:
    """Columns of ``x`` (n, d) shifted to mean 0 and scaled to spread 1 over the rows, float64
    (``moments``: column_moments of ``x``, or of the whole of which ``x`` is a block); a row
    with a value that is not a finite number (unknown) reads as the mean, 0."""
    x = np.asarray(x)
    mean, spread, known = moments if moments is not None else column_moments(x)
    z = (x - mean) / spread
    z[~known] = 0.0
    return z


def statistics_norm(stats: np.ndarray, block: int = 1 << 16) -> np.ndarray:
    """How unusual each item's colour and texture summary is (``stats``: /items/stats, (n, d)):
    the squared norm of its standardised statistics, the squared distance from the collection's
    typical item in units of each statistic's spread; 0 for an unknown row. No neighbour search,
    and ``block`` rows at a time, so it costs little at any size."""
    stats = np.asarray(stats)
    mean, spread, known = column_moments(stats)
    out = np.empty(len(stats))
    for s in range(0, len(stats), block):
        out[s:s + block] = np.square(standardised(stats[s:s + block], (mean, spread, known[s:s + block]))).sum(1)
    return out


def outlier_scores(error: np.ndarray | None, codes: np.ndarray, method: str = DEFAULT,
                   k: int = NEIGHBOURS, table: tuple | None = None, *, phash: np.ndarray | None = None,
                   stats: np.ndarray | None = None, residual: np.ndarray | None = None) -> np.ndarray:
    """One score per item, higher = fits the collection less.

    ``error``: reconstruction error through the code; ``knn``: mean Hamming distance to the k
    nearest codes; ``relative``: error divided by the median error of those neighbours (an item
    that is harder to rebuild than its look-alikes, not merely a detailed image); ``combined``:
    the mean of the percentile ranks of ``error`` and ``knn``; ``union``: the larger of the
    percentile ranks of ``error`` and of ``near``, the mean distance to the k nearest
    perceptual hashes (``phash``, (n, 8) uint8; without them ``near`` is ``knn``: a vector
    collection's default, VECTOR_DEFAULT); ``joint`` (the default for images):
    ``joint_evidence`` of ``error``, ``knn``, ``near`` (where there are hashes),
    ``statistics_norm`` of ``stats`` (each item's channel statistics, (n, d), where given) and
    ``residual`` (each item's distance from the model's linear twin, the pixels' principal
    subspace, (n,), where given). The error misses plain alien images, code distances those the
    code cannot tell apart, hash distances detailed images whose hashes scatter, the statistics
    odd images that are odd in their layout only; the residual sees pixels that no mix of the
    collection's main patterns makes, as noise is. ``table``: a ``neighbour_table`` of the codes
    already computed. Without errors (codes alone), every method but ``error`` falls back to
    ``knn``."""
    if method not in METHODS:
        raise ValueError(f"outlier method must be one of {', '.join(METHODS)}, got {method!r}")
    if error is None and method == "error":
        raise ValueError("this collection has no reconstruction errors (re-index its folder to add them)")
    n = len(codes)
    if n < 2:
        return np.zeros(n) if error is None else np.asarray(error, np.float64).copy()
    if method == "error":
        return np.asarray(error, np.float64).copy()
    near = None  # mean distance to the k nearest perceptual hashes, where a method uses it
    if error is not None and phash is not None and method in ("union", "joint"):
        near = neighbour_table(phash, k)[0].mean(1).astype(np.float64)
        if method == "union":  # needs no neighbours among the codes
            return np.maximum(percentile_ranks(np.asarray(error, np.float64)), percentile_ranks(near))
    dist, ids = table if table is not None else neighbour_table(codes, k)
    knn = dist.mean(1).astype(np.float64)
    if error is None or method == "knn":
        return knn
    error = np.asarray(error, np.float64)
    if method == "relative":
        return error / np.maximum(np.median(error[ids], axis=1), 1e-12)
    if method == "combined":
        return (percentile_ranks(error) + percentile_ranks(knn)) / 2
    if method == "union":  # without hashes
        return np.maximum(percentile_ranks(error), percentile_ranks(knn))
    signals = [error, knn] + ([near] if near is not None else [])
    if stats is not None:
        signals.append(statistics_norm(stats))
    if residual is not None:
        signals.append(np.asarray(residual, np.float64))
    return joint_evidence(*signals)
