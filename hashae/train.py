"""A minibatch Adam trainer that knows nothing of the model: it gets parameters, a batch loss and
a validation loss, streams batches of indices, and keeps the weights with the best validation
loss (early stopping). Pretraining and fine-tuning both use it."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .progress import Progress


@dataclass
class History:
    """One row per epoch: phase, epoch, train and validation loss, seconds, extra metrics."""

    rows: list = field(default_factory=list)

    def add(self, **row) -> None:
        self.rows.append(row)

    def phase(self, name: str) -> list:
        return [r for r in self.rows if r["phase"] == name]

    def __len__(self) -> int:
        return len(self.rows)


def fit_loop(
    module: torch.nn.Module,
    params,
    batch_loss: Callable[[np.ndarray, float], tuple],
    val_loss: Callable[[], float] | None,
    train_idx: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.0,
    patience: int = 0,
    watch_from: float = 0.0,
    rng: np.random.Generator,
    history: History,
    phase: str,
    progress: bool | None = None,
) -> History:
    """Train ``params`` for up to ``epochs`` passes over ``train_idx``.

    ``batch_loss(indices, progress_fraction)`` returns ``(loss_tensor, metrics_dict)``;
    ``progress_fraction`` (0..1 over the whole run) lets the caller anneal, e.g. code-layer noise.
    With ``val_loss``, keeps the weights with the best validation loss among epochs that end
    after ``watch_from`` (a fraction of the run: e.g. once a noise ramp is over, so that
    half-trained states are never "best") and, with ``patience > 0``, stops after ``patience``
    epochs (at least a tenth of the run) without improvement.
    """
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, -(-len(train_idx) // batch_size))
    total_steps = max(1, epochs * steps_per_epoch)
    best, best_state, stale, step = float("inf"), None, 0, 0
    patience = max(patience, -(-epochs // 10)) if patience else 0
    bar = Progress(total_steps * batch_size, phase, unit="img", enabled=progress)
    try:
        for epoch in range(epochs):
            module.train()
            t0, losses = time.monotonic(), []
            order = rng.permutation(train_idx)
            for s in range(0, len(order), batch_size):
                idx = np.sort(order[s:s + batch_size])  # sorted: cheap reads from h5py / memmap
                if len(idx) < 2:
                    continue
                loss, metrics = batch_loss(idx, step / total_steps)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{phase}: the loss became {loss.item()} at epoch {epoch + 1}; "
                                             "lower the learning rate (lr) or the regulariser weights")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                losses.append(loss.item())
                bar.update(len(idx), epoch=epoch + 1, loss=float(np.mean(losses[-20:])))
            row = dict(phase=phase, epoch=epoch + 1, train_loss=float(np.mean(losses)) if losses else float("nan"),
                       seconds=time.monotonic() - t0)
            if val_loss is not None and step / total_steps >= watch_from:
                module.eval()
                with torch.no_grad():
                    v = float(val_loss())
                row["val_loss"] = v
                if v < best - 1e-6:
                    best, stale = v, 0
                    best_state = copy.deepcopy(module.state_dict())
                else:
                    stale += 1
            history.add(**row)
            if patience and best_state is not None and stale >= patience:
                break
    finally:
        bar.close()
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return history
