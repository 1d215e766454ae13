"""Batched augmentations on tensors (no torchvision on CPU here). Images: random resized crop,
horizontal flip, brightness and contrast, all in one affine resampling per batch. Vectors have
no geometry to crop or flip: a view drops dimensions and adds noise (as in denoising
autoencoders and tabular contrastive learning, e.g. SCARF, Bahri et al. 2022)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def random_views(x: torch.Tensor, min_scale: float = 0.6, max_shift: float = 1.0,
                 flip: bool = True, jitter: float = 0.15) -> torch.Tensor:
    """A randomly cropped (area ``min_scale``..1, stretched back to full size), flipped and
    brightness/contrast-jittered copy of each image of a batch (n, c, h, w) in [0, 1]."""
    n = x.shape[0]
    dev, dt = x.device, x.dtype
    # side of the crop as a fraction of the image; sqrt so the *area* is uniform in [min_scale, 1]
    side = torch.sqrt(torch.empty(n, device=dev, dtype=dt).uniform_(min_scale, 1.0))
    room = (1 - side) * max_shift
    tx = (torch.rand(n, device=dev, dtype=dt) * 2 - 1) * room
    ty = (torch.rand(n, device=dev, dtype=dt) * 2 - 1) * room
    sx = side * (torch.where(torch.rand(n, device=dev) < 0.5, -1.0, 1.0).to(dt) if flip else 1.0)
    theta = torch.zeros(n, 2, 3, device=dev, dtype=dt)
    theta[:, 0, 0], theta[:, 0, 2] = sx, tx
    theta[:, 1, 1], theta[:, 1, 2] = side, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if jitter > 0:
        gain = 1 + (torch.rand(n, 1, 1, 1, device=dev, dtype=dt) * 2 - 1) * jitter
        bias = (torch.rand(n, 1, 1, 1, device=dev, dtype=dt) * 2 - 1) * jitter * 0.5
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = ((out - mean) * gain + mean + bias).clamp(0, 1)
    return out


def vector_views(x: torch.Tensor, net, drop: float = 0.2, noise: float = 0.1) -> torch.Tensor:
    """A copy of each vector row of a batch (n, d), changed where the model ``net`` (a vector
    HashNet) reads it: a random fraction ``drop`` of its standardised dimensions, or of its
    principal components when the model reads those, set to zero (the training mean), and
    Gaussian noise of ``noise`` standard deviations added to each. Two such views of a row are
    what the contrastive term pulls together. Dropping a fifth of the pixels of a photo hides
    little, dropping a fifth of its components changes what it looks like (bench/README.md,
    "Vectors")."""
    z = net.target(x)
    keep = torch.rand_like(z) >= drop
    change = torch.where(keep, torch.zeros_like(z), -z)
    if noise > 0:
        change = change + noise * torch.randn_like(z)
    return x + net.row_change(change)
