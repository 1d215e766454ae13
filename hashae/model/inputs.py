"""The input kind's seam: a user's array -> float batches in the network's layout.

Images are the only kind today: (n, C, S, S), (n, S, S, C) or, for one channel, (n, S, S);
uint8 in [0, 255] or float in [0, 1]. Files become such arrays in ingest/decode.py
(``model_input``); a new kind (vectors) is a new adapter here and a new decoder there.
"""
from __future__ import annotations

import numpy as np
import torch

from .config import ModelConfig


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
        idx = np.asarray(idx)
        if len(idx) > 1 and not (idx[1:] > idx[:-1]).all():  # h5py reads want sorted, distinct rows
            uniq, inverse = np.unique(idx, return_inverse=True)
            return self.batch(uniq)[torch.from_numpy(inverse.ravel())]
        a = np.asarray(self.images[idx], dtype=np.float32)
        if self.scale != 1.0:
            a *= self.scale
        if self.layout == "hwc":
            a = a.transpose(0, 3, 1, 2)
        elif self.layout == "hw":
            a = a[:, None]
        return torch.from_numpy(np.ascontiguousarray(a))

    def mean(self, idx: np.ndarray, batch_size: int = 4096) -> torch.Tensor:
        total = torch.zeros(self.cfg.input_shape, dtype=torch.float64)
        for s in range(0, len(idx), batch_size):
            total += self.batch(idx[s:s + batch_size]).double().sum(0)
        return (total / max(len(idx), 1)).float()
