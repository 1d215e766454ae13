"""Loss terms and input corruption from the autoencoder literature, as small pure functions.

Every regulariser acts on code-unit probabilities ``p = sigmoid(z)`` of a batch, shape (n, bits).
In data-parallel training the terms that compare the images of a batch gather the whole global
batch first (parallel.gather; the identity in one process).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import parallel
from .binarizers.ste import straight_through
from .statistics import image_stats


def reconstruction(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per element."""
    return F.mse_loss(recon, target)


def corrupt(h: torch.Tensor, kind: str, level: float) -> torch.Tensor:
    """Denoising-autoencoder input corruption (Vincent et al. 2008): masking sets a random
    fraction ``level`` of inputs to zero; gaussian adds noise of ``level`` times the batch's std."""
    if level <= 0 or kind == "none":
        return h
    if kind == "mask":
        return h * (torch.rand_like(h) >= level)
    return h + level * h.detach().std() * torch.randn_like(h)


def sparsity_l1(p: torch.Tensor) -> torch.Tensor:
    return p.mean()


def sparsity_kl(p: torch.Tensor, target: float) -> torch.Tensor:
    """KL(target || mean activation) per unit, summed over units then averaged (Ng's sparse AE)."""
    q = parallel.gather(p).mean(0).clamp(1e-6, 1 - 1e-6)
    t = min(max(target, 1e-6), 1 - 1e-6)
    return (t * torch.log(t / q) + (1 - t) * torch.log((1 - t) / (1 - q))).mean()


def balance(p: torch.Tensor) -> torch.Tensor:
    """Each bit should be on for about half of the data: mean squared deviation from 0.5."""
    return ((parallel.gather(p).mean(0) - 0.5) ** 2).mean() * 4


def decorrelation(p: torch.Tensor) -> torch.Tensor:
    """Mean squared off-diagonal correlation between bits: correlated bits waste code length."""
    p = parallel.gather(p)
    c = p - p.mean(0)
    # eps inside the sqrt (its gradient at 0 is infinite) and tiny: a larger eps lets a bit
    # "decorrelate" by shrinking its variance, which collapses codes towards z = 0 (measured
    # on coil20: eps 1e-4 mAP 0.60, 1e-8 mAP 0.73)
    c = c / (c.pow(2).mean(0) + 1e-8).sqrt()
    corr = (c.T @ c) / len(p)
    off = corr - torch.diag(torch.diagonal(corr))
    n = corr.shape[0]
    return off.pow(2).sum() / max(1, n * (n - 1))


def consistency(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Two augmented views of one image should get the same bits: the fraction of bits on which
    their hard codes disagree, with straight-through gradients. Measured on probabilities
    instead, it is minimised by collapsing every code to z = 0 (p = 0.5 for both views), which
    it did on cifar10 (median |z| 0.01, mAP 0.11 against 0.14 without the term)."""
    return (straight_through(z1) - straight_through(z2)).pow(2).mean()


def contrastive(z1: torch.Tensor, z2: torch.Tensor, temperature: float, anchors=None) -> torch.Tensor:
    """NT-Xent (Chen et al. 2020) between two views' relaxed codes tanh(z / 2) = 2p - 1: each
    view must pick its partner out of the batch. Unlike plain consistency, the other images
    act as negatives, so collapsing every code to one point is not a minimum. ``anchors`` (bool
    per row, None: all) leaves the other pairs out of the mean, still negatives for the rest."""
    z1, z2 = parallel.gather(z1), parallel.gather(z2)
    u = F.normalize(torch.tanh(torch.cat([z1, z2]) / 2), dim=1)
    sim = u @ u.T / temperature
    n = len(z1)
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z1.device)
    if anchors is None:
        return F.cross_entropy(sim, target)
    weight = parallel.gather(anchors.to(sim.dtype)).repeat(2)
    return (F.cross_entropy(sim, target, reduction="none") * weight).sum() / (2 * n)


def stats_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the image statistics of reconstructions and inputs, each
    statistic scaled by its spread in the batch. Pixel MSE all but ignores texture (a blurred
    reconstruction loses little), so without this term the code has no reason to keep it."""
    t = image_stats(target)
    scale = parallel.gather(t.detach()).std(0, keepdim=True) + 1e-3
    return ((image_stats(recon) - t) / scale).pow(2).mean()
