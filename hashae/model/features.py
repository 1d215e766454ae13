"""Feature bits: a few bits of the whole image's colour and texture statistics beside the learnt code.

A learnt 64-bit code trained on a folder ranks photos of one kind of scene (land cover, a
colour photo set) below a few numbers per channel that need no training: on eurosat_val the
channel statistics alone beat it (bench/README.md). Giving 8 of the 64 bits to those statistics,
hashed by ITQ (Gong & Lazebnik 2011) after a random Fourier lift of a Gaussian kernel (Rahimi &
Recht 2007; Raginsky & Lazebnik 2009: four numbers per channel become a feature that ITQ can
give every bit), raised the worst of the six shared sets on each of three seeds
(bench/README.md, "Feature bits, the default"). Everything is fitted once on the training
images and kept as arrays (buffers of this module, stored with the weights), so encoding is a
fixed function and a file holds no code.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .augment import random_views
from .statistics import image_stats

LIFT = 1024  # random Fourier features of the standardised statistics
ITQ_ITERATIONS = 50
SAMPLE = 1000  # rows whose median distance sets the kernel's width
NOISE_SAMPLE = 2048  # rows whose augmented views set how far a bit's value moves under an edit


def statistic_count(channels: int) -> int:
    """Values of image_stats per image: mean, spread and two gradient energies per channel."""
    return 4 * channels


def principal_directions(x: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean of rows ``x`` (n, d) and their top ``dims`` principal directions (d, dims), from
    the covariance's eigendecomposition (cheaper than an SVD of x when n >> d)."""
    mean = x.mean(0)
    xc = x - mean
    vals, vecs = np.linalg.eigh(xc.T @ xc / max(len(x) - 1, 1))
    return mean, vecs[:, ::-1][:, :dims]


def itq_rotation(v: np.ndarray, seed: int, iterations: int = ITQ_ITERATIONS) -> np.ndarray:
    """Iterative quantisation (Gong & Lazebnik 2011): the orthogonal rotation (k, k) of the
    projected rows ``v`` (n, k) that brings them nearest to their signs."""
    k = v.shape[1]
    r, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((k, k)))
    for _ in range(iterations):
        b = np.where(v @ r >= 0, 1.0, -1.0)
        u, _, vt = np.linalg.svd(b.T @ v)
        r = (u @ vt).T
    return r


def kernel_width(x: np.ndarray, rng: np.random.Generator) -> float:
    """The median distance between rows of a sample of ``x``: the Gaussian kernel's width."""
    sample = x[rng.choice(len(x), min(len(x), SAMPLE), replace=False)]
    # a row at a time: the same sums as one broadcast, without its (SAMPLE, SAMPLE, d) array
    d2 = np.stack([((row - sample) ** 2).sum(-1) for row in sample])
    return float(np.sqrt(np.median(d2[d2 > 0]))) if (d2 > 0).any() else 1.0


def fourier_parameters(x: np.ndarray, rng: np.random.Generator, dims: int = LIFT) -> tuple[np.ndarray, np.ndarray]:
    """Random Fourier features of a Gaussian kernel as wide as the median distance between rows
    of ``x`` (kernel_width): the weight (d, dims) and phase (dims,) that ``fourier_lift`` takes."""
    width = kernel_width(x, rng)
    weight = rng.standard_normal((x.shape[1], dims)) / width
    return weight, rng.uniform(0, 2 * np.pi, dims)


def fourier_lift(x: np.ndarray, weight: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Rows (n, d) -> their random Fourier features (n, dims), whose dot products approximate
    the Gaussian kernel (Rahimi & Recht 2007)."""
    return math.sqrt(2 / weight.shape[1]) * np.cos(x @ weight + phase)


class FeatureBits(nn.Module):
    """Image statistics -> standardised -> random Fourier lift -> ITQ projection: ``bits`` code
    logits whose signs are the feature bits, scaled so that an augmentation-sized edit moves
    each by about the code layer's training noise (what two-stage ranking assumes of a bit)."""

    def __init__(self, channels: int, bits: int):
        super().__init__()
        f = statistic_count(channels)
        self.register_buffer("mean", torch.zeros(f))
        self.register_buffer("spread", torch.ones(f))
        self.register_buffer("lift_weight", torch.zeros(f, LIFT))
        self.register_buffer("lift_phase", torch.zeros(LIFT))
        self.register_buffer("centre", torch.zeros(LIFT))
        self.register_buffer("projection", torch.zeros(LIFT, bits))
        self.register_buffer("scale", torch.ones(bits))

    def lifted(self, x: torch.Tensor) -> torch.Tensor:
        """Images (n, C, S, S) in [0, 1] -> their lifted statistics (n, LIFT)."""
        f = (image_stats(x) - self.mean) / self.spread
        return math.sqrt(2 / LIFT) * torch.cos(f @ self.lift_weight + self.lift_phase)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (n, C, S, S) in [0, 1] -> feature logits (n, bits); a bit is logit > 0."""
        return (self.lifted(x) - self.centre) @ self.projection * self.scale

    @torch.no_grad()
    def fit(self, batch, rows: np.ndarray, seed: int, noise_std: float, crop_min: float,
            batch_size: int = 1024) -> "FeatureBits":
        """Fit every array on the images ``batch(rows[i:j])`` gives (n, C, S, S) in [0, 1]."""
        stats = np.concatenate([image_stats(batch(rows[s:s + batch_size])).double().numpy()
                                for s in range(0, len(rows), batch_size)])
        mean, spread = stats.mean(0), stats.std(0)
        spread[spread < 1e-12] = 1.0
        z = (stats - mean) / spread
        weight, phase = fourier_parameters(z, np.random.default_rng(seed))
        lifted = fourier_lift(z, weight, phase)
        centre, directions = principal_directions(lifted, len(self.scale))
        projected = (lifted - centre) @ directions
        projection = directions @ itq_rotation(projected, seed)
        for name, value in (("mean", mean), ("spread", spread), ("lift_weight", weight), ("lift_phase", phase),
                            ("centre", centre), ("projection", projection)):
            getattr(self, name).copy_(torch.from_numpy(np.ascontiguousarray(value)).float())
        self.scale.copy_(self._edit_scale(batch, rows, seed, noise_std, crop_min))
        return self

    def _edit_scale(self, batch, rows, seed, noise_std, crop_min) -> torch.Tensor:
        """Per bit: ``noise_std`` over how far an augmented view (random_views) moves its value,
        measured on up to NOISE_SAMPLE rows with torch's generator forked, so that the fit's
        own random stream is what it would be without feature bits."""
        picked = rows[np.random.default_rng(seed).permutation(len(rows))[:NOISE_SAMPLE]]
        self.scale.fill_(1.0)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            x = batch(np.sort(picked))
            moved = (self(random_views(x, crop_min)) - self(x)).std(0) if len(x) > 1 else torch.zeros(len(self.scale))
        return torch.where(moved > 1e-12, noise_std / moved.clamp_min(1e-12), torch.ones_like(moved))
