"""The fine-tuning objective: reconstruction through the binarized code, plus the terms the
config switches on (contrast between augmented views, image statistics, pixel neighbours,
code regularisers). One object per fit, called by the trainer once per batch."""
from __future__ import annotations

import numpy as np
import torch

from . import losses
from .augment import random_views, vector_views
from .binarizers import get as get_binarizer
from .config import HasherConfig
from .network import HashNet


def two_views(cfg: HasherConfig, neighbours: bool) -> bool:
    """Whether each training image is seen as two augmented views (the terms that compare views
    are on, or the neighbour term, whose positives are views too)."""
    return cfg.augment > 0 or cfg.contrastive > 0 or neighbours


class FineTune:
    """``objective(idx, frac) -> (loss, metrics)`` for fit_loop; ``neighbours``:
    neighbours.Positives, if the neighbour term is on."""

    def __init__(self, net: HashNet, data, cfg: HasherConfig, neighbours=None):
        self.net, self.data, self.cfg = net, data, cfg
        self.binarize = get_binarizer(cfg.binarizer)(cfg.training)
        self.stats_weight, self.neighbour_weight = cfg.stats_weight, cfg.neighbour_weight
        self.neighbours = neighbours
        self.rng = np.random.default_rng(cfg.seed + 1)  # neighbour picks, apart from the trainer's

    def __call__(self, idx: np.ndarray, frac: float):
        cfg, net = self.cfg, self.net
        x = self.data.batch(idx)
        ramp = min(1.0, frac / cfg.noise_anneal) if cfg.noise_anneal > 0 else 1.0
        views = two_views(cfg, self.neighbours is not None)
        if views:  # two views of each image: reconstruct both, agree on bits
            x = torch.cat([self._view(x), self._view(x)])
        out = net(x, binarize=lambda z: self.binarize(z, ramp))
        p = torch.sigmoid(out.logits)
        terms = {"recon": losses.reconstruction(out.recon, net.target(x))}
        if self.stats_weight > 0:
            terms["stats"] = self.stats_weight * losses.stats_loss(out.recon, x)
        if views:
            z1, z2 = out.logits.chunk(2)
        if cfg.augment > 0:
            terms["consistency"] = cfg.augment * losses.consistency(z1, z2)
        if cfg.contrastive > 0:
            terms["contrastive"] = cfg.contrastive * losses.contrastive(z1, z2, cfg.contrast_temperature)
        if self.neighbours is not None:
            partner, has = self._neighbour_logits(idx, z2)
            terms["neighbours"] = self.neighbour_weight * losses.contrastive(z1, partner, cfg.contrast_temperature, has)
        if cfg.balance > 0:
            terms["balance"] = cfg.balance * losses.balance(p)
        if cfg.decorrelation > 0:
            terms["decorrelation"] = cfg.decorrelation * losses.decorrelation(p)
        if cfg.sparsity > 0:
            sp = losses.sparsity_l1(p) if cfg.sparsity_kind == "l1" else losses.sparsity_kl(p, cfg.sparsity_target)
            terms["sparsity"] = cfg.sparsity * sp
        return sum(terms.values()), {k: float(v.detach()) for k, v in terms.items()}

    def _neighbour_logits(self, idx: np.ndarray, own: torch.Tensor):
        """Code-layer logits of an augmented view of one random kept neighbour of each image, and
        which images have one (None: all). An image without one takes ``own`` (its second
        view's logits, already computed): it is left out of the term as an anchor and stays a
        negative for the others."""
        pos = self.neighbours
        at = np.searchsorted(pos.rows, idx)
        table = pos.table[at]
        if pos.kept is None:
            picked = pos.rows[table[np.arange(len(idx)), self.rng.integers(0, table.shape[1], len(idx))]]
            return self.net.logits(self._view(self.data.batch(picked))), None
        kept = pos.kept[at]
        choice = np.where(kept, self.rng.random(kept.shape), -1.0).argmax(1)  # a random kept one
        has = kept.any(1)
        partner, rows = own.clone(), torch.from_numpy(has)
        if has.any():  # only these images pay for a neighbour's view
            picked = pos.rows[table[np.arange(len(idx)), choice]][has]
            partner[rows] = self.net.logits(self._view(self.data.batch(picked)))
        return partner, rows

    def _view(self, x: torch.Tensor) -> torch.Tensor:
        """One augmented view of each row: an image's crop and flip, a vector's drop and noise."""
        cfg = self.cfg
        if cfg.is_vector:
            return vector_views(x, self.net, cfg.vector_drop, cfg.vector_noise)
        return random_views(x, cfg.crop_min)
