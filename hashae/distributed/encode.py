"""Decoding and encoding on a Ray cluster: a Ray Data pipeline of the paths through a pool of
actors that each hold the model (sent once, through the object store) and decode and encode
their blocks, as a local worker does (without a model, the training sample, plain decoding
tasks). It yields the same ``Batch`` records as ingest.iter_batches, so the index run around it
(journal segments, commit) is the local one. The folder must be readable at the same path on
every node.

Ray Data streams: blocks of ``BLOCK`` paths are decoded and encoded a few at a time, so memory
stays bounded however many files; a block whose node dies is run again elsewhere (tasks are
retried and actors restarted), and each block's output reaches the driver once."""
from __future__ import annotations

import os
from typing import Iterator, Sequence

import numpy as np

from ..ingest.perceptual import Perceptual
from ..ingest.pipeline import Batch, decode_chunk
from ..storage.items import ALL_HASH_FIELDS, PHASH_BYTES, STATS_WIDTH
from . import cluster_cpus, connect

CHUNK = 128  # images per decode-and-encode call inside an actor, as the local pipeline
BLOCK = 1024  # paths per Ray Data block: the unit Ray schedules, retries and streams back


def _rows(b: Batch, pos: np.ndarray, nbytes: int) -> dict:
    """One output row per path of a decoded chunk: ok, failure reason, code, error, channel
    statistics, hashes."""
    n = len(pos)
    ok = np.zeros(n, bool)
    ok[b.positions] = True
    reason = np.array([""] * n, dtype=object)
    for i, r in b.failures:
        reason[i] = r
    codes = np.zeros((n, nbytes), np.uint8)
    error = np.full(n, np.nan, np.float32)
    stats = np.full((n, STATS_WIDTH), np.nan, np.float32)
    if b.codes is not None:
        codes[b.positions], error[b.positions] = b.codes, b.error
    if b.stats is not None:
        stats[b.positions] = b.stats
    out = {"pos": pos, "ok": ok, "reason": reason, "code": codes, "error": error, "stats": stats}
    if b.residual is not None:  # a model with a linear twin: every chunk has them
        out["residual"] = np.full(n, np.nan, np.float32)
        out["residual"][b.positions] = b.residual
    for name in ALL_HASH_FIELDS:
        out[name] = np.zeros((n, PHASH_BYTES), np.uint8)
        out[name][b.positions] = getattr(b.hashes, name)
    return out


class _Encoder:
    """Ray Data actor: holds one model (rebuilt once from its state, sent through the object
    store) and turns paths into codes, errors, channel statistics and perceptual hashes, as a
    local worker does."""

    def __init__(self, state_ref, size: int, channels: int):
        import ray
        import torch
        from ..model.hasher import Hasher
        torch.set_num_threads(1)  # one actor per core
        self.hasher = Hasher.from_state(ray.get(state_ref[0]))
        self.size, self.channels = size, channels

    def __call__(self, batch: dict) -> dict:
        paths = [os.fsdecode(bytes(p)) for p in batch["path"]]
        b = decode_chunk(paths, self.size, self.channels, encode=self.hasher.encode_for_index)
        return _rows(b, np.asarray(batch["pos"], np.int64), self.hasher.config.bits // 8)


def _decode(batch: dict, size: int, channels: int) -> dict:
    """Ray Data task (no model: the training sample): paths -> model inputs and hashes."""
    paths = [os.fsdecode(bytes(p)) for p in batch["path"]]
    b = decode_chunk(paths, size, channels)
    out = _rows(b, np.asarray(batch["pos"], np.int64), 1)
    images = np.zeros((len(paths),) + b.images.shape[1:], np.uint8)
    images[b.positions] = b.images
    out["image"] = images
    return out


def ray_batches(paths: Sequence[str], size: int, channels: int, model_state=None,
                block: int | None = None) -> Iterator[Batch]:
    """Decode ``paths`` on the cluster (and encode them, given a model's ``ModelState``); yields
    Batch records, in no particular order, whose positions index into ``paths``: one per block
    of ``block`` paths (default BLOCK)."""
    block = block or BLOCK
    connect()
    import pyarrow as pa
    import ray
    import ray.data
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the caller shows one bar for the whole run
    ctx.print_on_execution_start = False
    raw = [os.fsencode(p) for p in paths]
    tables = [pa.table({"pos": pa.array(np.arange(s, min(s + block, len(raw))), pa.int64()),
                        "path": pa.array(raw[s:s + block], pa.binary())})
              for s in range(0, len(raw), block)]
    if not tables:
        return
    ds = ray.data.from_arrow(tables)
    if model_state is not None:
        ref = [ray.put(model_state)]  # held here for the whole run: restarted actors find it
        ds = ds.map_batches(_Encoder, fn_constructor_args=(ref, size, channels), batch_size=CHUNK,
                            batch_format="numpy", num_cpus=1,
                            concurrency=max(1, min(cluster_cpus(), len(tables))))
    else:
        ds = ds.map_batches(_decode, fn_kwargs=dict(size=size, channels=channels), batch_size=CHUNK,
                            batch_format="numpy", num_cpus=1)
    for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
        ok, pos = np.asarray(out["ok"], bool), np.asarray(out["pos"], np.int64)
        failures = [(int(p), str(r)) for p, r in zip(pos[~ok], out["reason"][~ok])]
        hashes = Perceptual(*(np.asarray(out[name])[ok] for name in ALL_HASH_FIELDS))
        if model_state is not None:
            yield Batch(pos[ok], None, failures, codes=np.asarray(out["code"])[ok],
                        error=np.asarray(out["error"])[ok], hashes=hashes, stats=np.asarray(out["stats"])[ok],
                        residual=np.asarray(out["residual"])[ok] if "residual" in out else None)
        else:
            yield Batch(pos[ok], np.asarray(out["image"])[ok], failures, hashes=hashes)
