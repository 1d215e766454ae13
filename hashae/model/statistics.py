"""Colour and texture summaries of images that do not depend on where things are: what the
network's side branch, the statistics loss, the neighbour search and the feature bits read."""
from __future__ import annotations

import numpy as np
import torch

# what a collection stores per image (/items/stats): image_stats as three channels, so that
# grey and colour collections share one width
STORED_CHANNELS = 3
STORED_WIDTH = 4 * STORED_CHANNELS


def image_stats(x: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel mean, standard deviation and mean absolute horizontal and
    vertical gradient, (n, 4 * channels): colour and texture summaries that do not depend on
    where things are in the image."""
    gx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean((2, 3))
    gy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean((2, 3))
    mean = x.mean((2, 3), keepdim=True)
    # the sample standard deviation in two passes: Tensor.std over two dimensions took 4-5x as
    # long on CPU (a tenth of a colour fit; bench/README.md, "Training time"), same to 1e-7
    std = ((x - mean).square().sum((2, 3)) / max(1, x.shape[2] * x.shape[3] - 1)).sqrt()
    return torch.cat([mean.flatten(1), std, gx, gy], 1)


def grid_stats(x: torch.Tensor, levels=(1, 2, 4)) -> torch.Tensor:
    """image_stats of the whole image and of each cell of a 2x2 and a 4x4 grid, (n, 21 * 4 *
    channels): where the colours and textures are, coarsely."""
    h, w = x.shape[-2:]
    return torch.cat([image_stats(x[..., i * h // g:(i + 1) * h // g, j * w // g:(j + 1) * w // g])
                      for g in levels for i in range(g) for j in range(g)], 1)


def stored_stats(x: torch.Tensor) -> np.ndarray:
    """image_stats of a batch (n, C, S, S) in [0, 1] as stored per item, (n, STORED_WIDTH)
    float32: a grey image's statistics read as three equal channels (the order of image_stats:
    means, spreads, horizontal and vertical gradients)."""
    s = image_stats(x.float())
    if x.shape[1] == 1:
        s = s.repeat_interleave(STORED_CHANNELS, 1)
    elif x.shape[1] != STORED_CHANNELS:
        raise ValueError(f"channel statistics are stored for 1 or 3 channels, not {x.shape[1]}")
    return s.numpy().astype(np.float32)
