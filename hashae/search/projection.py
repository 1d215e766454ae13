"""A 2-D map of codes: t-SNE (scikit-learn) in Hamming space places similar codes together, and
a linear assignment (scipy) snaps the points to grid cells so that pictures never overlap.
Pure functions over arrays; bounded by the number of codes given (sample above a few thousand)."""
from __future__ import annotations

import numpy as np

from ..codes import as_codes
from .outliers import neighbour_table

ITERATIONS = 500  # of t-SNE's optimiser: the layout settles well before sklearn's default 1000
MAX_GRID = 2500  # above this many points the O(n^3) assignment costs seconds: points stay where t-SNE put them


def embed_2d(codes: np.ndarray, seed: int = 0, iterations: int = ITERATIONS) -> np.ndarray:
    """(n, 2) coordinates in [0, 1] of packed codes: t-SNE, seeded, on the Hamming distances to
    each code's nearest codes (a sparse graph from FAISS, never an all-pairs matrix)."""
    codes = as_codes(codes)
    n = len(codes)
    if n <= 3:  # t-SNE needs a neighbourhood; a line says as much for so few
        return np.c_[np.linspace(0, 1, n) if n > 1 else np.zeros(n), np.zeros(n)]
    import scipy.sparse as sp
    from sklearn.manifold import TSNE
    perplexity = min(30.0, (n - 1) / 3)
    k = min(n - 1, int(3 * perplexity + 1))  # the neighbours t-SNE's perplexity needs
    dist, ids = neighbour_table(codes, k)
    # each row: the code itself first (t-SNE counts it), then its k nearest other codes; a stored
    # 0 off the diagonal would read as "no edge", so exact copies sit a hair apart instead
    cols = np.c_[np.arange(n), ids]
    vals = np.c_[np.zeros(n), dist / (codes.shape[1] * 8) + 1e-6]
    graph = sp.csr_matrix((vals.ravel(), cols.ravel(), np.arange(0, n * (k + 1) + 1, k + 1)), shape=(n, n))
    xy = TSNE(n_components=2, metric="precomputed", perplexity=perplexity, init="random", random_state=seed,
              max_iter=iterations, n_jobs=1).fit_transform(graph)
    xy -= xy.min(0)
    return xy / np.maximum(xy.max(0), 1e-12)


def grid_cells(xy: np.ndarray) -> tuple[np.ndarray, int]:
    """Grid cells (n, 2) (column, row) for points in [0, 1]^2, one point per cell, placed to keep
    the points' layout (least total squared displacement), and the grid's side. Above MAX_GRID
    points, each point takes the nearest cell and cells may be shared."""
    n = len(xy)
    side = max(1, int(np.ceil(np.sqrt(n * 1.15))))  # a little slack lets clusters keep their shape
    if n > MAX_GRID:
        return np.minimum((xy * side).astype(int), side - 1), side
    from scipy.optimize import linear_sum_assignment
    centres = (np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2) + 0.5) / side
    cost = ((xy[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    rows, cells = linear_sum_assignment(cost)
    out = np.empty((n, 2), int)
    out[rows] = np.c_[cells % side, cells // side]
    return out, side
