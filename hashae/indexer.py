"""One index run: scan, decide what changed, train if needed, encode into the journal, commit.

Order of events, each safe to interrupt:
1. take the store's lock; read the committed store (if any) and the journal (if it continues it);
2. scan the folder; items whose size and mtime are unchanged are kept as they are;
3. with no model yet: decode a seeded sample of the new files, fit, save the model in the journal;
4. decode (worker processes) and encode the remaining files, one journal segment at a time;
5. write the complete new store beside the old one and rename it over it; drop the journal.
Items are kept sorted by path, so a resumed run ends with exactly the store of an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .distributed import ENGINES, require_ray
from .ingest import Batch, is_grey, iter_batches, model_input, scan
from .model.config import HasherConfig
from .progress import Progress
from .storage import Items, StoreContents, StoreError, StoreLock, StoreReader, write_store
from .storage.items import ALL_HASH_FIELDS
from .storage.journal import Journal
from .storage.store import SHARD_ITEMS, remove_stale_parts, remove_stale_temporaries

if TYPE_CHECKING:  # torch loads when a model is built, not when a collection is read
    from .hasher import SemanticHasher

SEGMENT_ITEMS = 2048  # items per journal segment: the work an interrupted run can lose


@dataclass
class IndexRun:
    """The settings of one index run (``Collection.index`` fills it in)."""

    store: str
    folder: str | None = None  # default: the folder the store was built from
    bits: int | None = None
    # a trained model to reuse instead of training, or the path of a collection or model file
    # holding one (read once the store is locked, so a busy store is refused at once)
    model: SemanticHasher | str | None = None
    config: HasherConfig | None = None  # how to train one (default: HasherConfig(bits=bits))
    workers: int = 2
    progress: bool | None = None
    auto_channels: bool = True  # a folder of grey images gets a one-channel model
    segment: int = SEGMENT_ITEMS
    follow_links: bool = False  # follow symbolic links that lead out of the folder
    allow_shrink: bool = False  # accept a run that removes more than half of the items
    # "local": worker processes on this machine; "ray": decode, encode and train on the Ray
    # cluster that RAY_ADDRESS names (or a new local one); ``workers`` is then the number of
    # training workers, and encoding uses every CPU of the cluster (distributed/)
    engine: str = "local"
    # items per part file; above it the collection is written as shards (storage/store.py;
    # None: SHARD_ITEMS, 10 million)
    shard_items: int | None = None


@dataclass
class IndexReport:
    """What an index run did; ``str()`` is the one-line summary the CLI prints."""

    indexed: int
    unchanged: int
    removed: int
    skipped: list
    items: int
    seconds: float
    trained: bool
    resumed: int = 0
    train_seconds: float = 0.0  # decoding the training sample and fitting the model
    encoded: int = 0  # files decoded and encoded by this run (resumed ones not counted)
    encode_seconds: float = 0.0
    upgraded: int = 0  # of ``indexed``: unchanged files encoded again to add what an older store lacks

    def __str__(self) -> str:
        extra = f", {self.resumed} resumed from an interrupted run" if self.resumed else ""
        again = f" ({self.upgraded} of them to upgrade the store)" if self.upgraded else ""
        times = [f"{self.seconds:.1f} s"]
        if self.trained:
            times.append(f"training {self.train_seconds:.1f} s")
        if self.encoded and self.encode_seconds > 0:
            times.append(f"encoding {self.encoded / self.encode_seconds:.1f} images/s")
        items = f"{self.items} item{'' if self.items == 1 else 's'}"
        return (f"indexed {self.indexed} new or changed{again}, {self.unchanged} unchanged, {self.removed} removed, "
                f"{len(self.skipped)} skipped{extra}; {items} in the collection ({'; '.join(times)})")


def agreed_bits(run, old: StoreReader | None, store_model, fallback) -> int:
    """The code length of a run (IndexRun or VectorRun): what the store or its model holds,
    which --bits, the config and --model must agree with; else an interrupted run's
    ``fallback``, else 64."""
    want = [("--bits", run.bits), ("the model's config", run.config.bits if run.config is not None else None),
            ("--model", run.model.config.bits if run.model is not None else None)]
    have = old.bits if old is not None else (store_model.config.bits if store_model else None)
    for what, b in want:
        if b is None:
            continue
        if have is not None and b != have:
            raise StoreError(f"{old.path if old else 'store'} holds {have}-bit codes but {what} asks for {b} "
                             "bits; use another --store for a different code length")
        have = b
    return have or (fallback if isinstance(fallback, int) else 64)


def remembered(given, stored: str, trusted: bool, store: str, what: str, fix: str):
    """``given``, else the path ``stored`` in the collection file, but only if this user sealed it
    (storage/seal.py): a file from someone else does not choose what is read here."""
    if given or not stored:
        return given
    if not trusted:
        raise ValueError(f"{store} names {what} {stored!r}, but it was not indexed by you on this machine: {fix}")
    return stored


class ShrinkRefused(ValueError):
    """An index run would remove more than half of a collection's items."""


def run_index(run: IndexRun) -> IndexReport:
    """Carry out ``run`` under the store's lock (StoreBusy if another writer holds it)."""
    t0 = time.monotonic()
    if run.engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {run.engine!r}")
    if run.engine == "ray":
        require_ray()  # before the lock and the scan: a missing extra is said at once
    # a store reached through a symbolic link is locked and replaced where it really is, so two
    # writers through two names still exclude each other and the link stays a link
    run = dataclasses.replace(run, store=os.path.realpath(os.path.expanduser(os.fspath(run.store))))
    with StoreLock(run.store):
        remove_stale_temporaries(run.store)  # left by a writer killed mid-commit
        if isinstance(run.model, (str, os.PathLike)):
            run = dataclasses.replace(run, model=load_model(run.model))
        old = StoreReader(run.store) if os.path.exists(run.store) else None
        remove_stale_parts(run.store, old.generation if old is not None else None)  # of a killed writer
        try:
            return _Job(run, old).execute(t0)
        finally:
            if old is not None:
                old.close()


def joined(batches: list, name: str) -> np.ndarray | None:
    """Column ``name`` of encoded batches, end to end; None unless every batch has it."""
    if not batches or any(getattr(b, name) is None for b in batches):
        return None
    return np.concatenate([getattr(b, name) for b in batches])


def load_model(path) -> SemanticHasher:
    """The model of a collection file, or of a file written by SemanticHasher.save."""
    from .hasher import SemanticHasher
    path = os.path.expanduser(os.fspath(path))
    try:
        with StoreReader(path) as reader:
            return SemanticHasher.from_state(reader.model_state())
    except StoreError as store_error:
        try:
            return SemanticHasher.load(path)
        except ValueError:
            raise store_error from None


@dataclass
class _Work:
    """What the run has to do and has done: entries of the folder by path, the old store's rows
    to keep, items encoded (resumed or new), failures by path."""

    current: dict
    keep: np.ndarray
    upgraded: int = 0  # unchanged rows that are encoded again: the store lacks a column this version keeps
    done: list = field(default_factory=list)  # of Items
    failures: dict = field(default_factory=dict)
    resumed: int = 0


class _Job:
    def __init__(self, run: IndexRun, old: StoreReader | None):
        self.run, self.old = run, old
        self.journal = Journal(run.store)

    def execute(self, t0: float) -> IndexReport:
        from .hasher import SemanticHasher
        run, old = self.run, self.old
        if old is not None and old.kind != "images":
            raise StoreError(f"{run.store} is a collection of vectors: add to it with `hashae index-vectors`")
        if isinstance(run.model, SemanticHasher) and run.model.config.is_vector:
            raise StoreError("--model holds a model for vectors; images need a model trained on images")
        folder = remembered(run.folder, old.folder if old is not None else "",
                            old is not None and old.folder_trusted, run.store, "the folder", "give the folder to index")
        if not folder:
            raise ValueError("no folder given and the store does not name one")
        folder = os.path.abspath(os.path.expanduser(os.fspath(folder)))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder}: no such folder")
        store_model = SemanticHasher.from_state(old.model_state()) if old is not None and old.has_model() else None
        if store_model is not None and run.model is not None:
            raise StoreError(f"{run.store} already has its own model; --model only applies to a new collection")
        generation = old.generation if old is not None else ""
        pending = self.journal.peek()
        # an interrupted run's bit length, when nothing else decides it
        fallback = pending.get("bits") if pending and pending.get("generation") == generation else None
        bits = self._check_bits(store_model, fallback)

        with Progress(None, "scan", unit="entries", enabled=run.progress) as bar:
            if run.engine == "ray":  # the sub-trees are listed on the cluster
                from .distributed.scan import ray_scan
                entries, scan_errors = ray_scan(folder, run.follow_links, on_folder=bar.update)
            else:
                entries, scan_errors = scan(folder, on_folder=bar.update, follow_links=run.follow_links)
        old_items = old.items() if old is not None and old.n else None
        if not entries and old_items is None:
            raise ValueError(f"{folder}: no image files found (formats: anything Pillow opens)")
        current = {e.path: e for e in entries}
        keep, upgraded = self._unchanged(old_items, current)
        work = _Work(current=current, keep=keep, upgraded=upgraded)
        gone = 0 if old_items is None else sum(p not in work.current for p in old_items.path)
        if gone * 2 > len(work.keep) and not run.allow_shrink:
            raise ShrinkRefused(f"{folder}: this run would remove {gone} of the {len(work.keep)} items of {run.store} "
                                "(is the folder's disk mounted?); pass --allow-shrink (allow_shrink=True) to accept")

        meta = {"generation": generation, "folder": folder, "bits": bits}
        found = self.journal.resume(meta)
        for part in found.items:
            still = [work.current.get(p) for p in part.path]
            ok = np.array([e is not None and (e.size, e.mtime_ns) == (s, t)
                           for e, s, t in zip(still, part.size, part.mtime)], bool)
            work.done.append(part.take(ok))
        work.failures.update(found.failures)
        work.resumed = sum(map(len, work.done))
        kept = set() if old_items is None else {p for p, k in zip(old_items.path, work.keep) if k}
        done = {p for part in work.done for p in part.path}
        todo = [e for e in entries if e.path not in kept and e.path not in done]

        hasher = store_model or (SemanticHasher.from_state(found.model) if found.model else None) or run.model
        trained, predecoded = False, None
        self.journal.start(meta)
        t_train = time.monotonic()
        if hasher is None:
            hasher, predecoded = self._train(folder, todo, run.config or HasherConfig(bits=bits))
            trained = True
        if found.model is None and store_model is None:
            self.journal.save_model(hasher.state())
        t_encode = time.monotonic()
        self._encode(hasher, folder, todo, predecoded, work)
        timing = dict(train_seconds=t_encode - t_train if trained else 0.0, encoded=len(todo),
                      encode_seconds=time.monotonic() - t_encode)
        done = {p for part in work.done for p in part.path}

        # commit: kept rows + journal rows, sorted by path
        kept_items = old_items.take(work.keep) if old_items is not None else Items.empty(bits // 8)
        items = Items.concat([kept_items, *work.done], bits // 8).sorted()
        skipped = sorted(scan_errors + [(p, r) for p, r in work.failures.items()
                                        if p in work.current and p not in done])
        if old is not None and not done and len(kept_items) == old.n and skipped == sorted(old.skipped()):
            self.journal.discard()  # nothing changed: leave the committed file untouched
            return IndexReport(indexed=0, unchanged=len(kept_items), removed=0, skipped=skipped, items=len(items),
                               seconds=time.monotonic() - t0, trained=False, **timing)
        created = old.attrs().get("created") if old is not None else None
        write_store(run.store, StoreContents(bits=bits, items=items, folder=folder, skipped=skipped,
                                             model=hasher.state(), created=created,
                                             shard_items=SHARD_ITEMS if run.shard_items is None else run.shard_items))
        self.journal.discard()
        return IndexReport(indexed=len(done), unchanged=len(kept_items), removed=gone, skipped=skipped,
                           items=len(items), seconds=time.monotonic() - t0, trained=trained, resumed=work.resumed,
                           upgraded=min(work.upgraded, len(done)), **timing)

    def _unchanged(self, old_items: Items | None, current: dict) -> tuple:
        """Which rows of the old store stay as they are: same path, size and mtime (``current``:
        the folder's entries by path), and how many of those are encoded again all the same. A
        store written before perceptual hashes or reconstruction errors (or before the mirror
        pHash and dHash, the centre's hashes, or the channel statistics) keeps none: re-encoding once adds them, and a
        warning says so before the work starts."""
        if old_items is None:
            return np.zeros(0, bool), 0
        same = np.array([(e := current.get(p)) is not None and e.size == s and e.mtime_ns == t
                         for p, s, t in zip(old_items.path, old_items.size, old_items.mtime)], bool)
        lacking = []
        if old_items.hashes is None:
            lacking.append("perceptual hashes")
        elif old_items.phash_centre is None:
            lacking.append("the centre's perceptual hashes")
        if old_items.error is None:
            lacking.append("reconstruction errors")
        if old_items.stats is None:
            lacking.append("channel statistics")
        if not lacking:
            return same, 0
        n = int(same.sum())
        if n:
            warnings.warn(f"{self.run.store} was written by an earlier hashae: its {n} unchanged "
                          f"{'item is' if n == 1 else 'items are'} encoded once more, to add {' and '.join(lacking)}",
                          stacklevel=2)
        return np.zeros(len(old_items), bool), n

    def _check_bits(self, store_model, fallback) -> int:
        return agreed_bits(self.run, self.old, store_model, fallback)

    def _train(self, folder: str, todo: list, cfg: HasherConfig):
        """Fit a model on a seeded sample (at most cfg.max_train) of the files to index. With
        ``auto_channels``, a folder of grey images gets a one-channel model. Returns the model
        and, when the sample is every file, its decoded batches, so that the encode pass need not
        decode them again. The sample is decoded as RGB and turned into the model's input by
        ``model_input``, exactly as the encoding workers and queries do."""
        run = self.run
        if not todo:
            raise ValueError(f"{folder}: nothing to train a model on")
        rng = np.random.default_rng(cfg.seed)
        pick = np.arange(len(todo))
        if len(pick) > cfg.max_train:
            pick = np.sort(rng.choice(pick, cfg.max_train, replace=False))
        paths = [os.path.join(folder, todo[i].path) for i in pick]
        with Progress(len(paths), "decode", unit="img", enabled=run.progress) as bar:
            parts = []
            for b in self._batches(paths, cfg.image_size, 3):
                parts.append(b)
                bar.update(len(b.positions) + len(b.failures))
        rgb = np.concatenate([b.images for b in parts]) if parts else np.empty((0,))
        if len(rgb) < 2:
            raise ValueError(f"{folder}: fewer than 2 decodable images; cannot train a model (index it with "
                             "--model STORE, the model of a collection built before, or add images)")
        if run.auto_channels and cfg.channels == 3 and is_grey(rgb):
            cfg = cfg.replace(channels=1)
        images = model_input(rgb, cfg.channels)
        del rgb
        hasher = self._fit(images, cfg)
        if len(pick) < len(todo):
            return hasher, None
        # positions in `parts` refer to the sample, which here is all of todo
        batches, offset = [], 0
        for b in parts:
            n = len(b.positions)
            batches.append(Batch(b.positions, images[offset:offset + n], b.failures, hashes=b.hashes))
            offset += n
        return hasher, batches

    def _batches(self, paths: list, size: int, channels: int, hasher=None):
        """Decoded (and, given a model, encoded) Batch records of ``paths``, by the run's engine."""
        run = self.run
        if run.engine == "ray":
            from .distributed.encode import ray_batches
            return ray_batches(paths, size, channels, hasher.state() if hasher is not None else None)
        return iter_batches(paths, size, channels, run.workers,
                            encode=hasher.encode_for_index if hasher is not None else None)

    def _fit(self, images: np.ndarray, cfg: HasherConfig) -> SemanticHasher:
        """A model trained here, or by ``workers`` Ray Train workers with the ray engine."""
        from .hasher import SemanticHasher
        run = self.run
        if run.engine != "ray":
            return SemanticHasher(cfg).fit(images, progress=run.progress)
        import warnings

        from .distributed.train import fit_on_cluster
        state, trained_config, seconds, notes = fit_on_cluster(images, cfg, run.workers, run.progress)
        for note in notes:
            warnings.warn(note, stacklevel=3)
        hasher = SemanticHasher.from_state(state)
        hasher.config, hasher.fit_seconds_ = trained_config.replace(threads=cfg.threads), seconds
        return hasher

    def _encode(self, hasher, folder: str, todo: list, predecoded, work: _Work) -> None:
        """Encode ``todo`` into journal segments of about ``run.segment`` items. Decoding and
        encoding both happen in the worker processes; files decoded for training are encoded here."""
        run, cfg = self.run, hasher.config
        batches = predecoded if predecoded is not None else self._batches(
            [os.path.join(folder, e.path) for e in todo], cfg.image_size, cfg.channels, hasher)
        buf: list = []  # Batch records of encoded chunks
        fails: list = []  # (position, reason)

        def flush():
            if not buf and not fails:
                return
            ents = [todo[i] for b in buf for i in b.positions]
            hashes = {name: np.concatenate([getattr(b.hashes, name) for b in buf])
                      for name in ALL_HASH_FIELDS} if buf else {}
            items = Items([e.path for e in ents], [e.size for e in ents], [e.mtime_ns for e in ents],
                          np.concatenate([b.codes for b in buf]) if buf else np.empty((0, cfg.bits // 8), np.uint8),
                          error=joined(buf, "error"), stats=joined(buf, "stats"), residual=joined(buf, "residual"),
                          **hashes)
            failed = [(todo[i].path, r) for i, r in fails]
            self.journal.add_segment(items, failed)
            work.done.append(items)
            work.failures.update(failed)
            buf.clear(), fails.clear()

        with Progress(len(todo), "encode", unit="img", enabled=run.progress) as bar:
            for b in batches:
                if len(b.positions):
                    if b.codes is None:  # decoded for training: encoded here, pixels let go
                        out = hasher.encode_for_index(b.images)
                        b = Batch(b.positions, None, b.failures, out.codes, out.error, b.hashes, out.stats,
                                  out.residual)
                    buf.append(b)
                fails.extend(b.failures)
                bar.update(len(b.positions) + len(b.failures))
                if sum(len(x.positions) for x in buf) + len(fails) >= run.segment:
                    flush()
            flush()
