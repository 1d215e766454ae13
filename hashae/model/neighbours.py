"""Nearest neighbours of the training inputs, the positives of the neighbour term.

Crops and flips teach the code what one image looks like; they cannot say that two photos of
an object from nearby angles, or two expressions of a face, belong together. The nearest
neighbours in PCA-reduced pixel space mostly do (the idea of neighbourhood positives in
unsupervised hashing, e.g. SSDH, Yang et al. 2018, and of NNCLR, Dwibedi et al. 2021), so
fine-tuning also asks each image's code to pick out a view of one of them.

Among photos of many kinds the nearest few are mostly of other classes, and pulling them
together costs more than it gives. A gate keeps a neighbour only when it is nearer than the
image's own augmented views are to it: what the crops already teach is "the same", and a
neighbour inside that radius is as good as a view.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np
import torch

from .pca import range_finder

PCA_DIMS = 64  # enough to rank neighbours by shape; denoises, and makes the search cheap
PCA_SAMPLE = 10_000  # rows the PCA is fitted on: bounded memory on large folders
# a part whose sample is larger than this both ways (rows and values) is reduced by a randomized
# range finder: faiss's exact PCA of 10,000 colour pictures of 32x32 took 38 s, the range finder
# 2.6 s (bench/README.md, "Gated neighbours for colour images"); every default grey model of the
# shared sets stays below it, and keeps its exact PCA
EXACT_PCA_MAX = 2048
GATE_DRAWS = 2  # augmented views whose mean distance is an image's own radius
CHUNK = 4096
SHARED_BUDGET = 1 << 23  # list entries compared at once by shared_neighbours (64 MB of int64)


@dataclass(frozen=True)
class Positives:
    """The neighbour term's positives: for each of the sorted training rows ``rows``, the
    positions into them of its nearest neighbours (``table``, (rows, k)) and which of them
    passed the gate (``kept``, the same shape; None: all)."""
    rows: np.ndarray
    table: np.ndarray
    kept: np.ndarray | None = None


@dataclass(frozen=True)
class Gate:
    """Which of an image's nearest neighbours count as positives. ``ratio`` > 0: those nearer
    (squared) than ``ratio`` times the image's mean squared distance to ``view(inputs)``, its
    augmented views. ``shared`` > 0: those with which it shares at least that many of the two
    images' 2k nearest (shared_neighbours). Where both are set, a neighbour passes both."""
    ratio: float = 0.0
    view: Callable | None = None
    shared: int = 0

    def __post_init__(self):
        if self.ratio > 0 and self.view is None:
            raise ValueError("a gate with a ratio needs view, the function that makes the augmented views")


def flat(x: torch.Tensor) -> torch.Tensor:
    """Each row's values as one vector: an image's pixels, a vector as it is."""
    return x.flatten(1)


def gradient_histograms(x: torch.Tensor, cells: int = 4, bins: int = 8) -> torch.Tensor:
    """Histograms of gradient orientation (Dalal & Triggs 2005) of the grey image in a
    ``cells`` x ``cells`` grid, (n, bins * cells**2): each pixel's central-difference gradient
    votes its magnitude into one of ``bins`` unsigned orientations, and each cell's histogram
    is scaled to unit length. Strokes and edges by direction, where pixels see them only
    where they lie: a glyph or a face drawn a few pixels aside keeps its histograms."""
    g = x.mean(1)  # (n, h, w): grey
    gx, gy = torch.zeros_like(g), torch.zeros_like(g)
    gx[:, :, 1:-1] = g[:, :, 2:] - g[:, :, :-2]
    gy[:, 1:-1, :] = g[:, 2:, :] - g[:, :-2, :]
    which = ((torch.atan2(gy, gx) % math.pi) * (bins / math.pi)).long().clamp(max=bins - 1)
    magnitude = torch.hypot(gx, gy)
    # one orientation at a time: a (n, bins, h, w) tensor of votes would hold 8x the grey pixels
    hist = torch.stack([torch.nn.functional.adaptive_avg_pool2d(magnitude * (which == b), cells)
                        for b in range(bins)], 1)  # (n, bins, cells, cells)
    return (hist / (hist.norm(dim=1, keepdim=True) + 1e-3)).flatten(1)


def nearest_neighbours(batch, idx: np.ndarray, k: int, seed: int = 0, parts=(flat,), gate: Gate | None = None):
    """For each row of ``idx`` (sorted), the ``k`` nearest other rows of ``idx`` by Euclidean
    distance of PCA-reduced descriptors; ``batch(indices)`` returns input tensors, and each of
    ``parts`` turns them into one part of the descriptor (several parts: each standardised per
    value, reduced, and scaled to a mean square norm of 1, so that each counts alike). Returns
    Positives(idx, table, kept): ``table`` (len(idx), k) holds positions into ``idx``; streams
    the inputs in chunks.

    With a ``gate`` (Gate), ``kept`` (len(idx), k) says which neighbours pass it; without one
    it is None."""
    n = len(idx)
    k = min(k, n - 1)
    if k < 1:
        return Positives(idx, np.zeros((n, 0), np.int64), None if gate is None else np.zeros((n, 0), bool))
    rng = np.random.default_rng(seed)
    sample = idx if n <= PCA_SAMPLE else np.sort(rng.choice(idx, PCA_SAMPLE, replace=False))
    x = batch(sample)
    reducers = [_Reducer(_numpy(part(x)), standardise=len(parts) > 1, seed=seed) for part in parts]
    del x

    def describe(x):
        return np.hstack([r(_numpy(part(x))) for r, part in zip(reducers, parts)])

    # each input is read and described once: the descriptors (n x 64 floats a part) are what
    # the index holds anyway, and the queries are the same rows. With a gate, the same read
    # also gives each row's radius: its mean squared distance to GATE_DRAWS augmented views
    described, radius = [], np.zeros(n, np.float64)
    for s in range(0, n, CHUNK):
        x = batch(idx[s:s + CHUNK])
        described.append(describe(x))
        for _ in range(GATE_DRAWS if gate is not None and gate.ratio > 0 else 0):
            radius[s:s + len(x)] += ((describe(gate.view(x)) - described[-1]) ** 2).sum(1) / GATE_DRAWS
    reduced = np.ascontiguousarray(np.concatenate(described))
    index = faiss.IndexFlatL2(reduced.shape[1])
    index.add(reduced)
    wide = min(2 * k, n - 1) if gate is not None and gate.shared else k  # the shared count reads 2k
    out, dist = np.empty((n, wide), np.int64), np.empty((n, wide), np.float32)
    for s in range(0, n, CHUNK):
        found_dist, found = index.search(reduced[s:s + CHUNK], wide + 1)
        for r, row in enumerate(found):  # drop the row itself (first, unless tied with a duplicate)
            own = s + r
            mine = row != own
            row, d = row[mine], found_dist[r][mine]
            out[own] = row[:wide] if len(row) >= wide else np.resize(row, wide)
            dist[own] = d[:wide] if len(d) >= wide else np.resize(d, wide)
    if gate is None:
        return Positives(idx, out, None)
    kept = np.ones((n, k), bool)
    if gate.ratio > 0:
        kept &= dist[:, :k] < gate.ratio * radius[:, None]
    if gate.shared:
        kept &= shared_neighbours(out, k) >= gate.shared
    return Positives(idx, np.ascontiguousarray(out[:, :k]), kept)


def shared_neighbours(lists: np.ndarray, k: int) -> np.ndarray:
    """(n, k): for each row and each of its first ``k`` neighbours (``lists``, (n, m) positions
    into the rows, nearest first), how many of their m nearest the two share, plus one if the
    row is among the neighbour's (shared-nearest-neighbour similarity, Jarvis & Patrick 1973).
    A pair inside one dense class shares many; two strangers that happen to be near share few."""
    n, m = lists.shape
    out = np.empty((n, k), np.int64)
    rows = max(1, min(CHUNK, SHARED_BUDGET // max(1, k * 2 * m)))  # bounded for any neighbour_k
    for s in range(0, n, rows):
        mine = lists[s:s + rows]
        theirs = lists[mine[:, :k]]  # (c, k, m): each neighbour's own list
        # a list holds each row once, so equal neighbours in the sorted pair of lists are the shared ones
        both = np.sort(np.concatenate([np.broadcast_to(mine[:, None, :], theirs.shape), theirs], axis=-1), axis=-1)
        common = (both[..., 1:] == both[..., :-1]).sum(-1)
        back = (theirs == np.arange(s, s + len(mine))[:, None, None]).any(-1)
        out[s:s + len(mine)] = common + back
    return out


class _Reducer:
    """A PCA to PCA_DIMS fitted on a sample; with ``standardise``, each value is first scaled
    to the sample's spread and the result to a mean square norm of 1."""

    def __init__(self, x: np.ndarray, standardise: bool, seed: int = 0):
        self.mean, self.std = x.mean(0), np.ones(x.shape[1], np.float32)
        if standardise:
            std = x.std(0)
            self.std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
            x = (x - self.mean) / self.std
        dims = min(PCA_DIMS, x.shape[1], len(x))
        self.pca = self.directions = None
        x = np.ascontiguousarray(x, dtype=np.float32)
        if min(x.shape) <= EXACT_PCA_MAX:
            self.pca = faiss.PCAMatrix(x.shape[1], dims)
            self.pca.train(x)
        else:
            self.centre = x.mean(0)
            self.directions = top_directions(x - self.centre, dims, seed)
        self.standardise, self.scale = standardise, 1.0
        if standardise:
            self.scale = 1.0 / max(float(np.sqrt((self._project(x) ** 2).sum(1).mean())), 1e-12)

    def _project(self, x: np.ndarray) -> np.ndarray:
        if self.pca is not None:  # faiss's PCA centres the values itself
            return self.pca.apply(np.ascontiguousarray(x, dtype=np.float32))
        return (x - self.centre) @ self.directions

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if not self.standardise:
            return self._project(x)
        return self._project((x - self.mean) / self.std) * self.scale


def top_directions(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The top ``k`` principal directions (d, k) of centred rows ``x``: a randomized range
    finder with two power iterations (Halko, Martinsson & Tropp 2011), about as exact for
    ranking neighbours and far cheaper than a d x d eigendecomposition."""
    x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    width = min(k + 10, *x.shape)
    start = torch.from_numpy(np.random.default_rng(seed).standard_normal((x.shape[1], width)).astype(np.float32))
    _, vt = range_finder(lambda m: x @ m, lambda y: x.T @ y, start)
    return np.ascontiguousarray(vt[:k].T.numpy())


def _numpy(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.numpy(), dtype=np.float32)
