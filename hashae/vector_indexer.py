"""One index run over a vector file: the vector counterpart of indexer.py, with the same lock,
journal and atomic commit, so an interrupted run resumes and ends with the store an
uninterrupted one writes.

Order of events: lock; read the committed store and the journal; read the source a block at a
time, refusing a row of NaN by number and taking each row's digest; rows whose id and digest
are unchanged are kept; with no model yet, fit one on a seeded sample of the rows; encode the
rest a journal segment at a time; write the new store beside the old one and rename it over it.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .indexer import IndexReport, ShrinkRefused, agreed_bits, load_model, remembered
from .ingest.vectors import VectorSource, VectorSourceError, check_rows, digests
from .model.config import HasherConfig
from .progress import Progress
from .storage import Items, StoreContents, StoreError, StoreLock, StoreReader, write_store
from .storage.journal import Journal
from .storage.layout import ITEMS_VECTORS
from .storage.store import SHARD_ITEMS, remove_stale_parts, remove_stale_temporaries

if TYPE_CHECKING:  # torch loads when a model is built, not when a collection is read
    from .hasher import SemanticHasher


# rows per journal segment: vectors encode far faster than images decode, so a segment of a few
# seconds' work is larger than the image indexer's, within SEGMENT_BYTES of float32 rows
SEGMENT_ROWS, SEGMENT_BYTES = 1 << 16, 64 << 20


@dataclass
class VectorRun:
    """The settings of one vector index run (``Collection.index_vectors`` fills it in)."""

    store: str
    source: str | None = None  # .npy file, file.h5:/dataset or folder of .npy parts; default: the store's
    ids: str | None = None  # a text file of one id per row
    bits: int | None = None
    model: SemanticHasher | str | None = None  # a vector model to reuse, or a file holding one
    config: HasherConfig | None = None
    progress: bool | None = None
    segment: int | None = None  # rows per journal segment (None: SEGMENT_ROWS)
    allow_shrink: bool = False
    shard_items: int | None = None


def run_vector_index(run: VectorRun) -> IndexReport:
    """Carry out ``run`` under the store's lock (StoreBusy if another writer holds it)."""
    t0 = time.monotonic()
    run = dataclasses.replace(run, store=os.path.realpath(os.path.expanduser(os.fspath(run.store))))
    with StoreLock(run.store):
        remove_stale_temporaries(run.store)
        if isinstance(run.model, (str, os.PathLike)):
            run = dataclasses.replace(run, model=load_model(run.model))
        if run.model is not None and not run.model.config.is_vector:
            raise StoreError("--model holds a model for images; vectors need a model trained on vectors")
        old = StoreReader(run.store) if os.path.exists(run.store) else None
        remove_stale_parts(run.store, old.generation if old is not None else None)
        try:
            return _execute(run, old, t0)
        finally:
            if old is not None:
                old.close()


def _source_spec(run: VectorRun, old: StoreReader | None) -> str:
    if old is not None and old.kind != ITEMS_VECTORS:
        raise StoreError(f"{run.store} is a collection of images; give vectors a --store of their own")
    spec = remembered(run.source, old.folder if old is not None else "", old is not None and old.folder_trusted,
                      run.store, "the vector file", "give the file to index")
    if not spec:
        raise ValueError("no vector file given and the store does not name one")
    path, sep, inner = spec.partition(":") if not os.path.exists(spec) else (spec, "", "")
    return os.path.abspath(os.path.expanduser(path)) + sep + inner


def _ids_file(run: VectorRun, old: StoreReader | None) -> str | None:
    """--ids, else the ids file the store was named from (if this user indexed it here)."""
    ids = remembered(run.ids, old.ids if old is not None else "", old is not None and old.ids_trusted,
                     run.store, "its items from", "give the ids file (--ids)")
    return os.path.abspath(os.path.expanduser(ids)) if ids else None


def _execute(run: VectorRun, old: StoreReader | None, t0: float) -> IndexReport:
    from .hasher import SemanticHasher
    spec = _source_spec(run, old)
    run = dataclasses.replace(run, ids=_ids_file(run, old))
    store_model = SemanticHasher.from_state(old.model_state()) if old is not None and old.has_model() else None
    if store_model is not None and run.model is not None:
        raise StoreError(f"{run.store} already has its own model; --model only applies to a new collection")
    journal = Journal(run.store)
    with VectorSource(spec, run.ids) as source:
        have = store_model or run.model
        if have is not None and have.config.dim != source.dim:
            raise StoreError(f"{spec} has {source.dim} values a row, but the model takes {have.config.dim}")
        pending = journal.peek()  # an interrupted run's bit length, when nothing else decides it
        generation = old.generation if old is not None else ""
        fallback = pending.get("bits") if pending and pending.get("generation") == generation else None
        bits = agreed_bits(run, old, store_model, fallback)
        ids, digest = _read_all(source, run.progress)
        old_items = old.items() if old is not None and old.n else None
        meta = {"generation": generation, "folder": spec, "bits": bits, "items": ITEMS_VECTORS, "ids": run.ids}
        found = journal.resume(meta)
        # which source row each stored or journalled item is now (-1: gone), by a sorted lookup
        # rather than a dict: memory per row stays a few int64s beside the ids themselves
        where = _RowLookup(ids, named=source.named)
        settled = np.zeros(len(ids), bool)
        keep, gone, old_rows = np.zeros(0, bool), 0, np.zeros(0, np.int64)
        if old_items is not None:
            old_rows = where.rows(old_items.path)
            keep = (old_rows >= 0) & (digest[old_rows] == old_items.mtime)
            gone = int((old_rows < 0).sum())
            settled[old_rows[keep]] = True
        if gone * 2 > len(keep) and not run.allow_shrink:
            raise ShrinkRefused(f"{spec}: this run would remove {gone} of the {len(keep)} items of {run.store}; "
                                "pass --allow-shrink (allow_shrink=True) to accept")
        done = []
        for part in found.items:
            rows = where.rows(part.path)
            ok = (rows >= 0) & (rows == part.size) & (digest[rows] == part.mtime) & ~settled[rows]
            settled[rows[ok]] = True
            done.append(part.take(ok))
        resumed = sum(map(len, done))
        todo = np.flatnonzero(~settled)

        hasher = store_model or (SemanticHasher.from_state(found.model) if found.model else None) or run.model
        journal.start(meta)
        t_train, trained = time.monotonic(), hasher is None
        if hasher is None:
            hasher = _train(source, run.config or HasherConfig(bits=bits, kind="vector"), bits, run.progress)
        if found.model is None and store_model is None:
            journal.save_model(hasher.state())
        t_encode = time.monotonic()
        segment = run.segment or max(1024, min(SEGMENT_ROWS, SEGMENT_BYTES // (4 * source.dim)))
        with Progress(len(todo), "encode", unit="rows", enabled=run.progress) as bar:
            for s in range(0, len(todo), segment):
                rows = todo[s:s + segment]
                x = source.take(rows)
                codes, error = hasher.encode_with_error(x)
                part = Items([ids[r] for r in rows], rows, digest[rows], codes, None, error)
                journal.add_segment(part, [])
                done.append(part)
                bar.update(len(rows))
        timing = dict(train_seconds=t_encode - t_train if trained else 0.0, encoded=len(todo),
                      encode_seconds=time.monotonic() - t_encode)
    kept = old_items.take(keep) if old_items is not None else Items.empty(bits // 8, phash=False, stats=False)
    if old_items is not None:  # a kept row may have moved in the file: its row number follows it
        kept.size = old_rows[keep]
    items = Items.concat([kept, *done], bits // 8).sorted()
    moved = old_items is not None and not np.array_equal(kept.size, old_items.size[keep])
    if old is not None and not len(todo) and not resumed and len(kept) == old.n and not moved:
        journal.discard()
        return IndexReport(indexed=0, unchanged=len(kept), removed=0, skipped=[], items=len(items),
                           seconds=time.monotonic() - t0, trained=False, **timing)
    write_store(run.store, StoreContents(bits=bits, items=items, folder=spec, model=hasher.state(),
                                         created=old.attrs().get("created") if old is not None else None,
                                         shard_items=SHARD_ITEMS if run.shard_items is None else run.shard_items,
                                         kind=ITEMS_VECTORS, ids=run.ids or ""))
    journal.discard()
    return IndexReport(indexed=len(items) - len(kept), unchanged=len(kept), removed=gone, skipped=[],
                       items=len(items), seconds=time.monotonic() - t0, trained=trained, resumed=resumed, **timing)


class _RowLookup:
    """The source row of an item id, for many ids at once. Row-number ids (no names given) are
    their own rows; named ids are found by binary search in the sorted ids."""

    def __init__(self, ids: list, named: bool):
        self.n, self.named = len(ids), named
        if named:
            array = np.empty(len(ids), object)
            array[:] = ids
            self.order = np.argsort(array, kind="stable")
            self.sorted = array[self.order]

    def rows(self, paths) -> np.ndarray:
        if not self.named:
            return np.array([int(p) if p.isascii() and p.isdigit() and (p == "0" or p[0] != "0") and int(p) < self.n
                             else -1 for p in paths], np.int64)
        if not len(paths) or not self.n:
            return np.full(len(paths), -1, np.int64)
        wanted = np.empty(len(paths), object)
        wanted[:] = list(paths)
        at = np.minimum(np.searchsorted(self.sorted, wanted), self.n - 1)
        return np.where(self.sorted[at] == wanted, self.order[at], -1).astype(np.int64)


def _read_all(source: VectorSource, progress) -> tuple[list, np.ndarray]:
    """Every row's id and digest, reading the source once a block at a time; a row of NaN or
    infinity is refused by number before anything is trained or written."""
    if source.n == 0:
        raise VectorSourceError(f"{source.spec}: no rows")
    digest = np.empty(source.n, np.int64)
    with Progress(source.n, "read", unit="rows", enabled=progress) as bar:
        for start, rows in source.blocks():
            check_rows(rows, start, source.dim)
            digest[start:start + len(rows)] = digests(rows)
            bar.update(len(rows))
    return source.ids(0, source.n), digest


def _train(source: VectorSource, cfg: HasherConfig, bits: int, progress) -> SemanticHasher:
    """A vector model fitted on a seeded sample of at most ``cfg.max_train`` rows."""
    from .hasher import SemanticHasher
    if source.n < 2:
        raise ValueError(f"{source.spec}: fewer than 2 rows; cannot train a model")
    cfg = cfg.replace(kind="vector", bits=bits, arch="mlp")
    rng = np.random.default_rng(cfg.seed)
    pick = np.arange(source.n)
    if len(pick) > cfg.max_train:
        pick = np.sort(rng.choice(pick, cfg.max_train, replace=False))
    return SemanticHasher(cfg).fit(source.take(pick), progress=progress)
