"""Data-parallel training over a torch.distributed process group (set up by Ray Train's
TorchTrainer; hashae trains on CPUs, so gloo). Every process draws the same global batch and trains on
its share of it; gradients are averaged by one all-reduce per step, as DistributedDataParallel
does, but done here so that it also covers pretraining, which trains one stage of the network at
a time through calls other than ``forward``. The terms that compare the images of a batch with
each other (contrastive negatives, the statistics' scale, code balance) see the whole global
batch through ``gather``, so two processes optimise the loss that one process would.

Without a process group (or with one process) every function here is the identity."""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, number of processes); (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def active() -> bool:
    return world()[1] > 1


def share(idx: np.ndarray) -> np.ndarray:
    """This process's rows of a global batch (every process sees the same ``idx``)."""
    rank, size = world()
    return idx[rank::size] if size > 1 else idx


class _Gather(torch.autograd.Function):
    """Concatenate every process's rows (sizes may differ by one); the gradient of each process's
    rows is the sum over processes of the gradients they took through them."""

    @staticmethod
    def forward(ctx, x):
        rank, size = world()
        sizes = [torch.zeros(1, dtype=torch.long) for _ in range(size)]
        dist.all_gather(sizes, torch.tensor([len(x)], dtype=torch.long))
        sizes = [int(s) for s in sizes]
        padded = torch.zeros((max(sizes),) + tuple(x.shape[1:]), dtype=x.dtype)
        padded[:len(x)] = x
        parts = [torch.empty_like(padded) for _ in range(size)]
        dist.all_gather(parts, padded.contiguous())
        ctx.sizes, ctx.rank = sizes, rank
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # gloo has no reduce-scatter: sum everything, keep our slice
        start = sum(ctx.sizes[:ctx.rank])
        return grad[start:start + ctx.sizes[ctx.rank]]


def gather(x: torch.Tensor) -> torch.Tensor:
    """The rows of ``x`` from every process, in rank order (differentiable)."""
    return _Gather.apply(x) if active() else x


def average_gradients(params) -> None:
    """Replace each parameter's gradient by its mean over processes (one all-reduce)."""
    if not active():
        return
    params = [p for p in params if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world()[1]
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def mean(value: float) -> float:
    """The mean of a number over processes."""
    if not active():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t) / world()[1]


def any_true(flag: bool) -> bool:
    """True on every process if it is true on one (so that all of them stop together)."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t)
    return bool(t > 0)


def broadcast(module: torch.nn.Module) -> None:
    """Give every process the parameters and buffers of process 0."""
    if not active():
        return
    for t in module.state_dict().values():
        dist.broadcast(t, 0)
