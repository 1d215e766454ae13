"""Decoding many files in worker processes, a chunk at a time, in order, with bounded memory."""
from __future__ import annotations

import multiprocessing as mp
import signal
import sys
import warnings
from collections import deque
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from .decode import ImageError, decode_file, decoding_many, model_input
from .perceptual import Perceptual, perceptual_hashes


@dataclass
class Batch:
    """Decoded images of one chunk: ``positions`` index into the list of paths asked for."""

    positions: np.ndarray
    images: np.ndarray | None  # (len(positions), size, size, channels) uint8 model input; None when encoded
    failures: list  # (position, reason)
    codes: np.ndarray | None = None  # the ``encode`` function's codes, when one was given
    error: np.ndarray | None = None  # and its reconstruction errors
    hashes: Perceptual | None = None  # perceptual hashes of the decoded pictures (perceptual.py)
    stats: np.ndarray | None = None  # and the ``encode`` function's channel statistics
    residual: np.ndarray | None = None  # and its linear twin's residuals (None: a model without one)


_worker_encode = None  # set in each worker by _init_worker (inherited, never pickled, with fork)


def _init_worker(encode) -> None:
    global _worker_encode
    _worker_encode = encode
    # Ctrl-C is the parent's to handle (it stops the pool); a worker would print a traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if encode is not None:
        # one torch thread per worker, as torch's DataLoader does: the workers already fill the
        # cores, and it keeps OpenMP from being used in a forked child with more than one thread
        import torch
        torch.set_num_threads(1)


def decode_chunk(paths: Sequence[str], size: int, channels: int, start: int = 0, encode=None) -> Batch:
    """Decode ``paths`` into model inputs and perceptual hashes (and codes, errors, channel
    statistics and residuals, with ``encode``: images -> a record of them,
    model.hasher.Encoded); positions count from ``start``; failures are recorded, never raised."""
    ok, arrays, thumbs, failures = [], [], [], []
    with decoding_many():
        for i, p in enumerate(paths):
            try:
                rgb, thumb = decode_file(p, size, thumb=True)
                arrays.append(rgb)
                thumbs.append(rgb if thumb is None else thumb)
                ok.append(start + i)
            except ImageError as e:
                failures.append((start + i, str(e)))
    rgb = np.stack(arrays) if arrays else np.empty((0, size, size, 3), np.uint8)
    hashes = perceptual_hashes(np.stack(thumbs) if thumbs else rgb)
    images = model_input(rgb, channels)
    positions = np.asarray(ok, dtype=np.int64)
    if encode is not None:
        out = encode(images)
        return Batch(positions, None, failures, out.codes, out.error, hashes, out.stats, out.residual)
    return Batch(positions, images, failures, hashes=hashes)


def _worker_chunk(job) -> Batch:
    start, paths, size, channels = job
    return decode_chunk(paths, size, channels, start, _worker_encode)


def iter_batches(paths: Sequence[str], size: int, channels: int = 3, workers: int = 0,
                 chunk: int = 128, encode=None) -> Iterator[Batch]:
    """Decode ``paths`` in order, ``chunk`` files at a time, in ``workers`` processes (0: here).

    With ``encode`` (images -> model.hasher.Encoded, e.g. a model's ``encode_for_index``), each
    chunk is also encoded where it was decoded and comes back as ``codes``, ``error``,
    ``stats`` and ``residual`` without its pixels: the work is spread over the workers, and the
    caller's process stays free.

    Up to ``8 * workers`` chunks (at most ~64 MB of decoded pixels, and at least
    ``2 * workers``) are in flight, so memory stays bounded however many files, and the workers
    keep decoding while the caller spends a moment on a batch (bench/README.md: chunk size)."""
    jobs = ((s, list(paths[s:s + chunk]), size, channels) for s in range(0, len(paths), chunk))
    if workers > 0 and len(paths) > chunk and _connected_to_ray():
        warnings.warn("this process is connected to Ray, which does not survive being forked: decoding here, "
                      "without worker processes (engine='ray' spreads the work over the cluster)", stacklevel=2)
        workers = 0
    if workers <= 0 or len(paths) <= chunk:
        yield from (decode_chunk(p, sz, ch, s, encode) for s, p, sz, ch in jobs)
        return
    # fork: workers start in milliseconds and never re-import the caller's script (spawn and
    # forkserver do, which breaks scripts without a __main__ guard). They run Pillow and numpy,
    # and torch only single-threaded (_init_worker), so forking a process that used torch is safe.
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    inflight = max(2 * workers, min(8 * workers, (64 << 20) // (chunk * size * size * 3)))
    with ctx.Pool(workers, initializer=_init_worker, initargs=(encode,)) as pool:
        pending = deque()
        for job in jobs:
            pending.append(pool.apply_async(_worker_chunk, (job,)))
            if len(pending) >= inflight:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _connected_to_ray() -> bool:
    """Whether this process has joined a Ray cluster. Forking it for worker processes broke Ray:
    Ray Train started after such a fork waited forever for its workers (Ray 2.60), whatever
    the children did; Ray documents that a driver must not be forked."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(getattr(ray, "is_initialized", lambda: False)())


def load_images(paths: Sequence[str], size: int = 32, channels: int = 3, workers: int = 0):
    """Decode files into one (n_ok, size, size, channels) uint8 array.

    Returns ``(images, ok_positions, failures)`` with failures as (position, reason) pairs."""
    parts, ok, failures = [], [], []
    for b in iter_batches(paths, size, channels, workers):
        parts.append(b.images)
        ok.append(b.positions)
        failures.extend(b.failures)
    images = np.concatenate(parts) if parts else np.empty((0, size, size, channels), np.uint8)
    return images, (np.concatenate(ok) if ok else np.empty(0, np.int64)), failures
