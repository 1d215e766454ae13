"""Nearest neighbours of the training inputs, the positives of the neighbour term.

Crops and flips teach the code what one image looks like; they cannot say that two photos of
an object from nearby angles, or two expressions of a face, belong together. The nearest
neighbours in PCA-reduced pixel space mostly do (the idea of neighbourhood positives in
unsupervised hashing, e.g. SSDH, Yang et al. 2018, and of NNCLR, Dwibedi et al. 2021), so
fine-tuning also asks each image's code to pick out a view of one of them.
"""
from __future__ import annotations

import faiss
import numpy as np
import torch

PCA_DIMS = 64  # enough to rank neighbours by shape; denoises, and makes the search cheap
PCA_SAMPLE = 10_000  # rows the PCA is fitted on: bounded memory on large folders
CHUNK = 4096


def flat(x: torch.Tensor) -> torch.Tensor:
    """Each row's values as one vector: an image's pixels, a vector as it is."""
    return x.flatten(1)


def nearest_neighbours(batch, idx: np.ndarray, k: int, seed: int = 0, parts=(flat,)) -> np.ndarray:
    """For each row of ``idx`` (sorted), the ``k`` nearest other rows of ``idx`` by Euclidean
    distance of PCA-reduced descriptors; ``batch(indices)`` returns input tensors, and each of
    ``parts`` turns them into one part of the descriptor (several parts: each standardised per
    value, reduced, and scaled to a mean square norm of 1, so that each counts alike). Returns an
    (len(idx), k) array of positions into ``idx``; streams the inputs in chunks."""
    n = len(idx)
    k = min(k, n - 1)
    if k < 1:
        return np.zeros((n, 0), np.int64)
    rng = np.random.default_rng(seed)
    sample = idx if n <= PCA_SAMPLE else np.sort(rng.choice(idx, PCA_SAMPLE, replace=False))
    x = batch(sample)
    reducers = [_Reducer(_numpy(part(x)), standardise=len(parts) > 1) for part in parts]
    del x

    def describe(rows):
        x = batch(rows)
        return np.hstack([r(_numpy(part(x))) for r, part in zip(reducers, parts)])

    # each input is read and described once: the descriptors (n x 64 floats a part) are what
    # the index holds anyway, and the queries are the same rows
    reduced = np.ascontiguousarray(np.concatenate([describe(idx[s:s + CHUNK]) for s in range(0, n, CHUNK)]))
    index = faiss.IndexFlatL2(reduced.shape[1])
    index.add(reduced)
    out = np.empty((n, k), np.int64)
    for s in range(0, n, CHUNK):
        _, found = index.search(reduced[s:s + CHUNK], k + 1)
        for r, row in enumerate(found):  # drop the row itself (first, unless tied with a duplicate)
            own = s + r
            row = row[row != own]
            out[own] = row[:k] if len(row) >= k else np.resize(row, k)
    return out


class _Reducer:
    """A PCA to PCA_DIMS fitted on a sample; with ``standardise``, each value is first scaled
    to the sample's spread and the result to a mean square norm of 1."""

    def __init__(self, x: np.ndarray, standardise: bool):
        self.mean, self.std = x.mean(0), np.ones(x.shape[1], np.float32)
        if standardise:
            std = x.std(0)
            self.std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
            x = (x - self.mean) / self.std
        dims = min(PCA_DIMS, x.shape[1], len(x))
        self.pca = faiss.PCAMatrix(x.shape[1], dims)
        self.pca.train(np.ascontiguousarray(x, dtype=np.float32))
        self.standardise, self.scale = standardise, 1.0
        if standardise:
            self.scale = 1.0 / max(float(np.sqrt((self.pca.apply(np.ascontiguousarray(x, np.float32)) ** 2)
                                                 .sum(1).mean())), 1e-12)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if not self.standardise:  # faiss's PCA centres the values itself
            return self.pca.apply(x)
        return self.pca.apply(np.ascontiguousarray((x - self.mean) / self.std, dtype=np.float32)) * self.scale


def _numpy(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.numpy(), dtype=np.float32)
