"""What a fit will do, ahead of it, so that one progress bar covers all of it: each phase's
optimiser steps times what a step costs in multiply-adds, from the network's shapes. A bar per
phase would show, at the start, the ETA of the first pretraining stage alone: seconds of a fit
that takes minutes."""
from __future__ import annotations

from .config import PRETRAIN_MIN_STEPS, HasherConfig, TrainConfig
from .finetune import two_views
from .network import stage_macs

# a backward pass costs about twice its forward pass
FORWARD_BACKWARD = 3.0


def steps_floor(cfg: TrainConfig) -> int:
    """The fewest fine-tuning steps: a HasherConfig knows its input's default
    (HasherConfig.steps_floor); a TrainConfig alone knows only an explicit min_steps."""
    if isinstance(cfg, HasherConfig):
        return cfg.steps_floor
    if cfg.min_steps is None:
        raise ValueError("min_steps is None: the step floor depends on the input, so pass the HasherConfig")
    return cfg.min_steps


def stage_epochs(cfg: TrainConfig, n_train: int) -> int:
    """Epochs of each greedy pretraining stage: pretrain_epochs within a quarter of the step
    bounds (the floor: a quarter of min_steps, or of PRETRAIN_MIN_STEPS when it is None)."""
    floor = PRETRAIN_MIN_STEPS if cfg.min_steps is None else cfg.min_steps
    return cfg.epochs_for(n_train, cfg.pretrain_epochs, floor // 4,
                          None if cfg.max_steps is None else cfg.max_steps // 4)


def finetune_epochs(cfg: TrainConfig, n_train: int) -> int:
    return cfg.epochs_for(n_train, cfg.epochs, steps_floor(cfg), cfg.max_steps)


def fit_plan(cfg: HasherConfig, n_train: int, n_val: int) -> dict:
    """Phase name (as the trainer names it) -> (training images it will see, multiply-adds per
    image seen, its share of the validation passes included). Early stopping can only shorten it."""
    neighbours = cfg.neighbour_weight > 0
    macs = stage_macs(cfg.model)
    enc = [e for e, _ in macs]
    plan = {}
    if cfg.pretrain == "dae" and cfg.pretrain_epochs > 0:
        epochs = stage_epochs(cfg, n_train)
        for k, (e, d) in enumerate(macs):
            below = sum(enc[:k])  # the frozen stages under this one: forward only
            per_image = below + FORWARD_BACKWARD * (e + d) + n_val / max(n_train, 1) * (below + e + d)
            plan[f"pretrain {k + 1}/{len(macs)}"] = (epochs * n_train, per_image)
    whole = sum(e + d for e, d in macs)
    views = 2 if two_views(cfg, neighbours) else 1
    per_image = views * FORWARD_BACKWARD * whole + (FORWARD_BACKWARD * sum(enc) if neighbours else 0)
    per_image += n_val / max(n_train, 1) * whole
    plan["fine-tune"] = (finetune_epochs(cfg, n_train) * n_train, per_image)
    return plan
