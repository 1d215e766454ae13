"""Greedy layer-wise pretraining (Hinton & Salakhutdinov 2006; Bengio et al. 2007) with denoising
stages (Vincent et al. 2008): stage k is trained as a one-layer autoencoder on the outputs of the
already-trained, frozen stages 0..k-1, bottom up. The trained stages are then the starting point
of the unrolled encoder/decoder that fine-tuning trains end to end."""
from __future__ import annotations

import numpy as np
import torch

from . import losses
from .config import TrainConfig
from .network import HashNet
from .plan import stage_epochs
from .train import History, Phase, fit_loop, mean_over


def pretrain_stages(net: HashNet, data, split, settings: TrainConfig, rng: np.random.Generator,
                    history: History, progress: bool | None = None) -> History:
    """Pretrain every stage of ``net`` in place; ``data.batch(indices)`` returns images in [0, 1],
    ``split`` holds the ``train`` and ``val`` rows."""
    for k, stage in enumerate(net.stages):

        def stage_loss(idx, k=k, stage=stage):
            x = data.batch(idx)
            with torch.no_grad():  # frozen lower stages: h is this stage's clean input
                h = net.logits(x, upto=k)
                target = net.target(x) if k == 0 else h
            out = stage.enc(losses.corrupt(h, settings.corruption, settings.corruption_level))
            if stage.is_code:
                out = torch.sigmoid(out)
            return losses.reconstruction(stage.dec(out), target)

        def val_loss(stage_loss=stage_loss):
            return mean_over(split.val, settings.batch_size * 4, stage_loss)

        for p in net.parameters():
            p.requires_grad_(False)
        for p in stage.parameters():
            p.requires_grad_(True)
        phase = Phase(name=f"pretrain {k + 1}/{len(net.stages)}", params=stage.parameters(),
                      batch_loss=lambda idx, frac, stage_loss=stage_loss: (stage_loss(idx), {}),
                      val_loss=val_loss if len(split.val) else None, rows=split.train,
                      epochs=stage_epochs(settings, len(split.train)))
        fit_loop(net, phase, settings, rng, history, progress)
    for p in net.parameters():
        p.requires_grad_(True)
    return history
