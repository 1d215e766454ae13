"""The input kind's seam: a user's array -> float batches in the network's layout.

Images: (n, C, S, S), (n, S, S, C) or, for one channel, (n, S, S); uint8 in [0, 255] or float
in [0, 1]. Files become such arrays in ingest/decode.py (``model_input``). Vectors: (n, d)
numbers (embeddings, features, word counts); files of them are read by ingest/vectors.py.
``as_input`` picks the adapter for a model's kind; ``for_data`` picks the kind for data.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .config import ModelConfig
from .pca import streamed_directions


def in_any_order(idx, read):
    """``read(idx)`` for indices in any order and with repeats: h5py reads want sorted,
    distinct rows, so those are read once and put in the asked order."""
    idx = np.asarray(idx)
    if len(idx) > 1 and not (idx[1:] > idx[:-1]).all():
        uniq, inverse = np.unique(idx, return_inverse=True)
        return read(uniq)[inverse.ravel()]
    return read(idx)


def as_input(data, cfg: ModelConfig):
    """The adapter for ``cfg``'s input kind over ``data``."""
    return VectorArray(data, cfg) if cfg.is_vector else ImageArray(data, cfg)


def for_data(cfg, data):
    """``cfg`` (a HasherConfig) made to fit ``data`` before training: a 2-D array given to an
    image config, or any array given to a vector config without ``dim``, makes a vector model
    of the array's width; counts (non-negative integers) are scaled by log(1 + x)."""
    shape = getattr(data, "shape", None)
    if shape is None or len(shape) != 2:
        return cfg
    if cfg.is_vector and cfg.dim:
        return cfg
    changes = dict(kind="vector", dim=int(shape[1]))
    if cfg.arch != "mlp":
        changes["arch"] = "mlp"
    if looks_like_counts(np.asarray(data[:min(len(data), 4096)])):
        changes["scaling"] = "log"
    return cfg.replace(**changes)


def looks_like_counts(sample: np.ndarray) -> bool:
    """Word counts and the like: non-negative integers (any dtype), mostly zeros, some above 1.
    Dense non-negative integers (uint8 pixels) are not counts."""
    if sample.dtype.kind not in "uif" or not sample.size or not np.isfinite(sample).all():
        return False
    return bool((sample >= 0).all() and (sample == np.round(sample)).all() and sample.max() > 1
                and (sample == 0).mean() > 0.5)


class VectorArray:
    """Adapter from a user's (n, d) array (numpy, memmap or h5py dataset) to float32 batches,
    log(1 + x) first under ``scaling='log'``; a row with NaN or infinity (or, for counts, a
    negative value) is refused by number, since one bad row would poison every weight."""

    def __init__(self, vectors, cfg: ModelConfig):
        if isinstance(vectors, (list, tuple)):
            vectors = np.asarray(vectors, np.float32) if len(vectors) else np.empty((0, cfg.dim), np.float32)
        if not hasattr(vectors, "shape") or not hasattr(vectors, "dtype"):
            vectors = np.asarray(vectors)
        shape = tuple(vectors.shape)
        if len(shape) != 2 or shape[1] != cfg.dim:
            what = "images" if len(shape) in (3, 4) else "an array"
            raise ValueError(f"this model takes {cfg.describe_input()}, shape (n, {cfg.dim}); got {what} of shape "
                             f"{shape}" + (" (a model for images is trained on images)" if len(shape) in (3, 4) else ""))
        if vectors.dtype.kind not in "uif":
            raise ValueError(f"vectors must be numeric, got dtype {vectors.dtype}")
        self.vectors, self.cfg = vectors, cfg

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Rows at ``idx`` as checked float32 (before scaling); any order and repeats are fine."""
        return in_any_order(idx, self._rows)

    def _rows(self, idx: np.ndarray) -> np.ndarray:
        a = np.asarray(self.vectors[idx], dtype=np.float32)
        bad = ~np.isfinite(a).all(1)
        if self.cfg.scaling == "log":
            bad |= (a < 0).any(1)
        if bad.any():
            row = int(idx[np.argmax(bad)])
            what = "a negative count" if np.isfinite(a[np.argmax(bad)]).all() else "NaN or infinity"
            raise ValueError(f"row {row} holds {what}; fix or drop that row")
        return a

    def batch(self, idx: np.ndarray) -> torch.Tensor:
        a = self.rows(idx)
        if self.cfg.scaling == "log":
            np.log1p(a, out=a)
        return torch.from_numpy(np.ascontiguousarray(a))

    def moments(self, idx: np.ndarray, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and standard deviation of the (scaled) rows at ``idx``; a constant
        dimension gets 1, so it adds nothing instead of dividing by zero."""
        total = torch.zeros(self.cfg.dim, dtype=torch.float64)
        squares = torch.zeros(self.cfg.dim, dtype=torch.float64)
        for s in range(0, len(idx), batch_size):
            x = self.batch(idx[s:s + batch_size]).double()
            total += x.sum(0)
            squares += x.pow(2).sum(0)
        n = max(len(idx), 1)
        mean = total / n
        std = (squares / n - mean.pow(2)).clamp_min(0).sqrt()
        std[std < 1e-6 * (1 + mean.abs())] = 1.0
        return mean.float(), std.float()

    def principal_directions(self, idx: np.ndarray, mean: torch.Tensor, scale: torch.Tensor, k: int, seed: int,
                             batch_size: int = 4096) -> tuple[torch.Tensor, float]:
        """The top ``k`` principal directions (k, d) of the rows at ``idx`` standardised by
        ``mean`` and ``scale`` (zero rows past the rank), and the root mean variance along them.
        A randomized range finder with two power iterations (Halko, Martinsson & Tropp 2011)
        that reads the rows in batches: memory is (n + d) x (k + 10), never d x d."""
        n = len(idx)

        def rows(start, stop):
            return (self.batch(idx[start:stop]).double() - mean.double()) / scale.double()

        directions, sv = streamed_directions(rows, n, self.cfg.dim, k, seed, batch_size)
        spread = float(sv.pow(2).sum().div(max(n, 1) * max(len(sv), 1)).sqrt())
        return directions, spread if spread > 0 else 1.0


class ImageArray:
    """Adapter from a user's image array (numpy, memmap or h5py dataset) to float batches in the
    model's (n, C, S, S) layout, converting one batch at a time to keep memory bounded."""

    def __init__(self, images, cfg: ModelConfig):
        if isinstance(images, (list, tuple)):
            images = np.stack([np.asarray(a) for a in images]) if len(images) else np.empty((0, *cfg.input_shape))
        if not hasattr(images, "shape") or not hasattr(images, "dtype"):
            images = np.asarray(images)
        c, s = cfg.channels, cfg.image_size
        shape = tuple(images.shape[1:])
        if shape == (c, s, s):
            self.layout = "chw"
        elif shape == (s, s, c):
            self.layout = "hwc"
        elif c == 1 and shape == (s, s):
            self.layout = "hw"
        elif len(shape) == 1:
            raise ValueError(f"this model takes {cfg.describe_input()}; got vectors of shape {tuple(images.shape)} "
                             "(a model for vectors is trained on vectors: hashae index-vectors)")
        else:
            raise ValueError(
                f"images have shape {tuple(images.shape)}; this model takes (n, {c}, {s}, {s}), (n, {s}, {s}, {c})"
                + (f" or (n, {s}, {s})" if c == 1 else "")
                + ": resize them (hashae.load_images does) or set image_size/channels in the config"
            )
        if images.dtype.kind not in "uif":
            raise ValueError(f"images must be numeric (uint8 0..255 or float 0..1), got dtype {images.dtype}")
        self.images, self.cfg = images, cfg
        self.scale = 1 / 255 if images.dtype == np.uint8 else 1.0

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, idx: np.ndarray) -> torch.Tensor:
        """Images at ``idx`` in that order; any order and repeats are fine."""
        return in_any_order(idx, self._batch)

    def _batch(self, idx: np.ndarray) -> torch.Tensor:
        a = np.asarray(self.images[idx], dtype=np.float32)
        if self.scale != 1.0:
            a *= self.scale
        if self.layout == "hwc":
            a = a.transpose(0, 3, 1, 2)
        elif self.layout == "hw":
            a = a[:, None]
        return torch.from_numpy(np.ascontiguousarray(a))

    def principal_directions(self, idx: np.ndarray, mean: torch.Tensor, k: int, seed: int,
                             batch_size: int = 4096) -> torch.Tensor:
        """The top ``k`` principal directions (k, C*S*S) of the images at ``idx`` less ``mean``,
        flattened (pca.streamed_directions: never a pixels x pixels matrix)."""
        def rows(start, stop):
            return (self.batch(idx[start:stop]).double() - mean.double()).flatten(1)
        return streamed_directions(rows, len(idx), math.prod(self.cfg.input_shape), k, seed, batch_size)[0]

    def mean(self, idx: np.ndarray, batch_size: int = 4096) -> torch.Tensor:
        total = torch.zeros(self.cfg.input_shape, dtype=torch.float64)
        for s in range(0, len(idx), batch_size):
            total += self.batch(idx[s:s + batch_size]).double().sum(0)
        return (total / max(len(idx), 1)).float()
