"""Pixel-space nearest neighbours of the training images, the positives of the neighbour term.

Crops and flips teach the code what one image looks like; they cannot say that two photos of
an object from nearby angles, or two expressions of a face, belong together. The nearest
neighbours in PCA-reduced pixel space mostly do (the idea of neighbourhood positives in
unsupervised hashing, e.g. SSDH, Yang et al. 2018, and of NNCLR, Dwibedi et al. 2021), so
fine-tuning also asks each image's code to pick out a view of one of them.
"""
from __future__ import annotations

import faiss
import numpy as np

PCA_DIMS = 64  # enough to rank neighbours by shape; denoises, and makes the search cheap
PCA_SAMPLE = 10_000  # rows the PCA is fitted on: bounded memory on large folders
CHUNK = 4096


def pixel_neighbours(batch, idx: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """For each row of ``idx`` (sorted), the ``k`` nearest other rows of ``idx`` by Euclidean
    distance of PCA-reduced pixels; ``batch(indices)`` returns image tensors. Returns an
    (len(idx), k) array of positions into ``idx``; streams the images in chunks."""
    n = len(idx)
    k = min(k, n - 1)
    if k < 1:
        return np.zeros((n, 0), np.int64)
    rng = np.random.default_rng(seed)
    sample = idx if n <= PCA_SAMPLE else np.sort(rng.choice(idx, PCA_SAMPLE, replace=False))
    x = _pixels(batch, sample)
    dims = min(PCA_DIMS, x.shape[1], len(sample))
    pca = faiss.PCAMatrix(x.shape[1], dims)
    pca.train(x)
    del x
    # each image is read and projected once: the projections (n x 64 floats) are what the
    # index holds anyway, and the queries are the same rows
    reduced = np.concatenate([pca.apply(_pixels(batch, idx[s:s + CHUNK])) for s in range(0, n, CHUNK)])
    index = faiss.IndexFlatL2(dims)
    index.add(reduced)
    out = np.empty((n, k), np.int64)
    for s in range(0, n, CHUNK):
        _, found = index.search(reduced[s:s + CHUNK], k + 1)
        for r, row in enumerate(found):  # drop the row itself (first, unless tied with a duplicate)
            own = s + r
            row = row[row != own]
            out[own] = row[:k] if len(row) >= k else np.resize(row, k)
    return out


def _pixels(batch, idx: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(batch(idx).flatten(1).numpy(), dtype=np.float32)
