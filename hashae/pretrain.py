"""Greedy layer-wise pretraining (Hinton & Salakhutdinov 2006; Bengio et al. 2007) with denoising
stages (Vincent et al. 2008): stage k is trained as a one-layer autoencoder on the outputs of the
already-trained, frozen stages 0..k-1, bottom up. The trained stages are then the starting point
of the unrolled encoder/decoder that fine-tuning trains end to end."""
from __future__ import annotations

import numpy as np
import torch

from . import losses
from .model import HashNet
from .train import History, fit_loop


def pretrain_stages(net: HashNet, batch: callable, train_idx: np.ndarray, val_idx: np.ndarray,
                    rng: np.random.Generator, history: History, progress: bool | None = None) -> History:
    """Pretrain every stage of ``net`` in place; ``batch(indices)`` returns images in [0, 1]."""
    cfg = net.cfg
    for k, stage in enumerate(net.stages):

        def stage_loss(idx, k=k, stage=stage):
            x = batch(idx)
            with torch.no_grad():  # frozen lower stages: h is this stage's clean input
                h = net.logits(x, upto=k)
                target = x if k == 0 else h
            out = stage.enc(losses.corrupt(h, cfg.corruption, cfg.corruption_level))
            if stage.is_code:
                out = torch.sigmoid(out)
            return losses.reconstruction(stage.dec(out), target)

        def batch_loss(idx, frac, stage_loss=stage_loss):
            loss = stage_loss(idx)
            return loss, {}

        def val_loss(stage_loss=stage_loss):
            return _mean_over(val_idx, cfg.batch_size * 4, stage_loss)

        for p in net.parameters():
            p.requires_grad_(False)
        for p in stage.parameters():
            p.requires_grad_(True)
        fit_loop(net, stage.parameters(), batch_loss, val_loss if len(val_idx) else None, train_idx,
                 epochs=cfg.epochs_for(len(train_idx), cfg.pretrain_epochs, cfg.min_steps // 4),
                 batch_size=cfg.batch_size, lr=cfg.lr,
                 weight_decay=cfg.weight_decay, patience=0, rng=rng, history=history,
                 phase=f"pretrain {k + 1}/{len(net.stages)}", progress=progress)
    for p in net.parameters():
        p.requires_grad_(True)
    return history


def _mean_over(idx: np.ndarray, batch_size: int, fn) -> float:
    """Size-weighted mean of ``fn(indices)`` over ``idx`` in batches."""
    total, n = 0.0, 0
    for s in range(0, len(idx), batch_size):
        part = idx[s:s + batch_size]
        total += float(fn(part)) * len(part)
        n += len(part)
    return total / max(n, 1)
