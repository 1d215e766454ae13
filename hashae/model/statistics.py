"""Colour and texture summaries of images that do not depend on where things are: what the
network's side branch, the statistics loss, the neighbour search and the feature bits read,
and what a collection stores per item for the outlier scores (stored_stats)."""
from __future__ import annotations

import itertools

import numpy as np
import torch

# what a collection stores per image (/items/stats): image_stats as three channels, so that
# grey and colour collections share one width, then edge_disagreement
STORED_CHANNELS = 3
STORED_WIDTH = 4 * STORED_CHANNELS + 1


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


def edge_disagreement(x: torch.Tensor, flat: float = 1e-6) -> torch.Tensor:
    """How little the colour channels' edges agree, per image (n,) in [0, 2]: 1 minus the mean,
    over the channel pairs, of the cosine between two channels' horizontal and vertical
    differences. Photographs have their edges in all channels at once (the shared photo sets:
    median 0.02-0.05, 95% under 0.3); independent noise in each channel (sensor noise, broken
    renders) has none in common (about 1). 0 for one channel, and for a pair where a channel is
    flat (root mean square difference under ``flat``)."""
    n, c = x.shape[:2]
    if c == 1:
        return torch.zeros(n)
    g = torch.cat([(x[..., :, 1:] - x[..., :, :-1]).flatten(2), (x[..., 1:, :] - x[..., :-1, :]).flatten(2)], 2)
    norm = g.square().sum(2).sqrt()  # (n, c)
    edged = norm > flat * g.shape[2] ** 0.5
    cosines = []
    for i, j in itertools.combinations(range(c), 2):
        both = edged[:, i] & edged[:, j]
        cos = (g[:, i] * g[:, j]).sum(1) / (norm[:, i] * norm[:, j]).clamp_min(1e-30)
        cosines.append(torch.where(both, cos, torch.ones(())))
    return (1 - torch.stack(cosines, 1).mean(1)).clamp(0, 2)


def stored_stats(x: torch.Tensor) -> np.ndarray:
    """The channel statistics of a batch (n, C, S, S) in [0, 1] as stored per item, (n,
    STORED_WIDTH) float32: image_stats, a grey image's read as three equal channels (means,
    spreads, horizontal and vertical gradients), then edge_disagreement."""
    x = x.float()
    s = image_stats(x)
    if x.shape[1] == 1:
        s = s.repeat_interleave(STORED_CHANNELS, 1)
    elif x.shape[1] != STORED_CHANNELS:
        raise ValueError(f"channel statistics are stored for 1 or 3 channels, not {x.shape[1]}")
    return torch.cat([s, edge_disagreement(x)[:, None]], 1).numpy().astype(np.float32)
