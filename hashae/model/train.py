"""A minibatch Adam trainer that knows nothing of the model: a Phase says what to optimise
(parameters, a batch loss, a validation loss, the rows to stream), the training settings say
how; it keeps the weights with the best validation loss (early stopping). Pretraining and
fine-tuning both use it."""
from __future__ import annotations

import contextlib
import copy
import functools
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch

from ..progress import PhasedProgress, Progress
from . import parallel
from .config import TrainConfig


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


@dataclass
class Phase:
    """One training phase.

    ``batch_loss(indices, progress_fraction)`` returns ``(loss_tensor, metrics_dict)``;
    ``progress_fraction`` (0..1 over the phase) lets the caller anneal, e.g. code-layer noise.
    With ``val_loss``, the weights with the best validation loss among epochs that end after
    ``watch_from`` (a fraction of the phase: e.g. once a noise ramp is over, so that half-trained
    states are never "best") are kept and, with ``patience > 0``, training stops after
    ``patience`` epochs (at least a tenth of the phase) without improvement."""

    name: str
    params: Iterable
    batch_loss: Callable[[np.ndarray, float], tuple]
    val_loss: Callable[[], float] | None
    rows: np.ndarray
    epochs: int
    patience: int = 0
    watch_from: float = 0.0


def fit_loop(module: torch.nn.Module, phase: Phase, settings: TrainConfig, rng: np.random.Generator,
             history: History, progress: bool | PhasedProgress | None = None) -> History:
    """Train ``phase.params`` for up to ``phase.epochs`` passes over ``phase.rows`` with Adam
    (``settings``: batch_size, lr, weight_decay). Under torch.distributed (parallel.py) every
    process draws the same batches, trains on its share of each and averages the gradients, so
    the steps and the early-stopping decisions are the same on every process."""
    params = [p for p in phase.params if p.requires_grad]
    parallel.broadcast(module)
    shared = progress if isinstance(progress, PhasedProgress) else None
    if parallel.world()[0] != 0:
        progress = False
    opt = _adam(params, settings)
    batch_size, epochs = settings.batch_size, phase.epochs
    steps_per_epoch = max(1, -(-len(phase.rows) // batch_size))
    total_steps = max(1, epochs * steps_per_epoch)
    best, best_state, stale, step = float("inf"), None, 0, 0
    patience = max(phase.patience, -(-epochs // 10)) if phase.patience else 0
    # a whole fit's bar (model/plan.py) if given, else this phase's own
    with (contextlib.nullcontext(shared.phase(phase.name)) if shared is not None else
          Progress(total_steps * batch_size, phase.name, unit="img", enabled=progress)) as bar:
        for epoch in range(epochs):
            module.train()
            t0, losses = time.monotonic(), []
            order = rng.permutation(phase.rows)
            for s in range(0, len(order), batch_size):
                idx = np.sort(order[s:s + batch_size])  # sorted: cheap reads from h5py / memmap
                if len(idx) < max(2, parallel.world()[1]):
                    continue
                loss, metrics = phase.batch_loss(parallel.share(idx), step / total_steps)
                if parallel.any_true(not torch.isfinite(loss)):
                    raise FloatingPointError(f"{phase.name}: the loss became {loss.item()} at epoch {epoch + 1}; "
                                             "lower the learning rate (lr) or the regulariser weights")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                parallel.average_gradients(params)
                opt.step()
                step += 1
                losses.append(loss.item())
                bar.update(len(idx), epoch=epoch + 1, loss=float(np.mean(losses[-20:])))
            row = dict(phase=phase.name, epoch=epoch + 1,
                       train_loss=float(np.mean(losses)) if losses else float("nan"), seconds=time.monotonic() - t0)
            if phase.val_loss is not None and step / total_steps >= phase.watch_from:
                module.eval()
                with torch.no_grad():
                    v = parallel.mean(float(phase.val_loss()))
                row["val_loss"] = v
                if v < best - 1e-6:
                    best, stale = v, 0
                    best_state = copy.deepcopy(module.state_dict())
                else:
                    stale += 1
            history.add(**row)
            if patience and best_state is not None and stale >= patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return history


@functools.cache
def ready() -> None:
    """Pay once, before a fit's progress bar starts its clock, what torch's first optimiser in a
    process costs: it imports torch._dynamo, about a second. Inside the bar that second was the
    first step's, and the first ETA shown on 398 photos was 40-50 times the fit (bench/README.md,
    "Training time")."""
    _adam([torch.nn.Parameter(torch.zeros(1))], TrainConfig())


def training_dtype(precision: str) -> torch.dtype:
    """What the wide layers' products run in while training, for ``precision``
    (config.PRECISIONS; network.HashNet.wide_products): "auto" is bfloat16 where the CPU
    multiplies it natively (AVX512-BF16 or AMX); elsewhere bfloat16 is emulated and slower, so
    float32 (bench/README.md, "Training time": "bfloat16 products"). In a data-parallel fit
    (parallel.py) every process must call it, and "auto" is bfloat16 only if every process's CPU
    has it: one precision for the whole fit, whatever mix of machines a cluster has."""
    if precision == "bfloat16":
        return torch.bfloat16
    if precision == "auto" and not parallel.any_true(not native_bfloat16()):
        return torch.bfloat16
    return torch.float32


def native_bfloat16() -> bool:
    """Whether this CPU has bfloat16 dot products (AVX512-BF16 or AMX-BF16)."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    try:
        found = capabilities() if capabilities is not None else {}
    except (RuntimeError, AttributeError):  # a torch build that cannot say
        return False
    return bool(found.get("avx512_bf16") or found.get("amx_bf16"))


def _adam(params: list, settings: TrainConfig) -> torch.optim.Optimizer:
    """Adam, fused into one kernel over all parameters where torch has one for their device:
    torch's default per-tensor loop made a CPU fit 1.2-1.3x as long (bench/README.md, "Training
    time"). The same update rule, rounded in another order."""
    try:
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)


def mean_over(idx: np.ndarray, batch_size: int, fn) -> float:
    """Size-weighted mean of ``fn(indices)`` over ``idx`` in batches."""
    total, n = 0.0, 0
    for s in range(0, len(idx), batch_size):
        part = idx[s:s + batch_size]
        total += float(fn(part)) * len(part)
        n += len(part)
    return total / max(n, 1)
