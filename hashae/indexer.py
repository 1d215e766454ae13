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

import os
import time

import numpy as np

from .config import HasherConfig
from .images import Batch, is_grey, iter_batches, scan
from .journal import Journal
from .progress import Progress
from .store import PHASH_BYTES, StoreError, StoreReader, write_store


def run_index(coll, folder, *, bits, model, config, workers, progress, auto_channels, segment):
    from .collection import IndexReport, StoreLock
    t0 = time.monotonic()
    with StoreLock(coll.path):
        old = StoreReader(coll.path) if os.path.exists(coll.path) else None
        try:
            return _run(coll, old, folder, bits, model, config, workers, progress, auto_channels, segment, t0,
                        IndexReport)
        finally:
            if old is not None:
                old.close()


def _run(coll, old, folder, bits, model, config, workers, progress, auto_channels, segment, t0, IndexReport):
    folder = folder or (old.folder if old else None)
    if not folder:
        raise ValueError("no folder given and the store does not name one")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: no such folder")
    folder = os.path.abspath(folder)
    store_model = old.model() if old is not None and old.has_model() else None
    journal = Journal(coll.path)
    pending = journal.peek()
    generation = old.generation if old is not None else ""
    # an interrupted run's bit length, when nothing else decides it
    fallback = pending.get("bits") if pending and pending.get("generation") == generation else None
    bits = _check_bits(old, store_model, model, config, bits, fallback)
    if store_model is not None and model is not None:
        raise StoreError(f"{coll.path} already has its own model; --model only applies to a new collection")

    with Progress(None, "scan", unit="entries", enabled=progress) as bar:
        entries, scan_errors = scan(folder, on_folder=bar.update)
    old_paths = old.paths() if old is not None else []
    if not entries and not old_paths:
        raise ValueError(f"{folder}: no image files found (formats: anything Pillow opens)")
    current = {e.path: e for e in entries}
    keep = np.zeros(len(old_paths), bool)
    if old_paths:
        sizes, mtimes = old.sizes(), old.mtimes()
        for i, p in enumerate(old_paths):
            e = current.get(p)
            keep[i] = e is not None and e.size == sizes[i] and e.mtime_ns == mtimes[i]
    if old_paths and not old.has_phash:
        keep[:] = False  # written before perceptual hashes: re-encode once to add them
    kept = {p for p, k in zip(old_paths, keep) if k}

    meta = {"generation": generation, "folder": folder, "bits": bits}
    jmodel, done, jfail = journal.resume(meta)
    done = {p: v for p, v in done.items() if p in current and (current[p].size, current[p].mtime_ns) == v[:2]}
    resumed = len(done)
    todo = [e for e in entries if e.path not in kept and e.path not in done]

    hasher = store_model or jmodel or model
    trained, predecoded = False, None
    journal.start(meta)
    if hasher is None:
        hasher, predecoded = _train(folder, todo, config or HasherConfig(bits=bits), auto_channels,
                                    workers, progress)
        trained = True
    if jmodel is None and store_model is None:
        journal.save_model(hasher)

    failures = dict(jfail)
    _encode(hasher, folder, todo, predecoded, journal, done, failures, workers, progress, segment)

    # commit: kept rows + journal rows, sorted by path
    rows = {p: i for i, p in enumerate(old_paths) if keep[i]}
    old_codes = old.codes() if rows else None
    old_phash = old.phash() if rows else None
    paths = sorted(set(rows) | set(done))
    nbytes = bits // 8
    codes = np.empty((len(paths), nbytes), np.uint8)
    hashes = np.empty((len(paths), PHASH_BYTES), np.uint8)
    sizes_out = np.empty(len(paths), np.int64)
    mtimes_out = np.empty(len(paths), np.int64)
    for j, p in enumerate(paths):
        if p in done:
            sizes_out[j], mtimes_out[j], codes[j], hashes[j] = done[p]
        else:
            codes[j], hashes[j] = old_codes[rows[p]], old_phash[rows[p]]
            sizes_out[j], mtimes_out[j] = current[p].size, current[p].mtime_ns
    skipped = sorted(scan_errors + [(p, r) for p, r in failures.items() if p in current and p not in done])
    removed = sum(p not in current for p in old_paths)
    if old is not None and not done and len(rows) == len(old_paths) and skipped == sorted(old.skipped()):
        journal.discard()  # nothing changed: leave the committed file untouched
        return IndexReport(indexed=0, unchanged=len(rows), removed=0, skipped=skipped, items=len(paths),
                           seconds=time.monotonic() - t0, trained=False)
    created = old.attrs().get("created") if old is not None else None
    write_store(coll.path, bits=bits, folder=folder, codes=codes, paths=paths, sizes=sizes_out,
                mtimes=mtimes_out, skipped=skipped, model=hasher, created=created, phash=hashes)
    journal.discard()
    indexed = len(done)
    return IndexReport(indexed=indexed, unchanged=len(rows), removed=removed,
                       skipped=skipped, items=len(paths), seconds=time.monotonic() - t0,
                       trained=trained, resumed=resumed)


def _check_bits(old, store_model, model, config, bits, fallback):
    want = [("--bits", bits), ("the model's config", config.bits if config is not None else None),
            ("--model", model.config.bits if model is not None else None)]
    have = old.bits if old is not None else (store_model.config.bits if store_model else None)
    for what, b in want:
        if b is None:
            continue
        if have is not None and b != have:
            raise StoreError(f"{old.path if old else 'store'} holds {have}-bit codes but {what} asks for {b} bits; "
                             "use another --store for a different code length")
        have = b
    return have or (fallback if isinstance(fallback, int) else 64)


def _train(folder, todo, cfg, auto_channels, workers, progress):
    """Fit a model on a seeded sample (at most cfg.max_train) of the files to index. With
    ``auto_channels``, a folder of grey images gets a one-channel model. Returns the model and, when the
    sample is every file, the decoded images so the encode pass need not decode them again."""
    if not todo:
        raise ValueError(f"{folder}: nothing to train a model on")
    rng = np.random.default_rng(cfg.seed)
    pick = np.arange(len(todo))
    if len(pick) > cfg.max_train:
        pick = np.sort(rng.choice(pick, cfg.max_train, replace=False))
    paths = [os.path.join(folder, todo[i].path) for i in pick]
    with Progress(len(paths), "decode", unit="img", enabled=progress) as bar:
        parts = []
        for b in iter_batches(paths, cfg.image_size, 3, workers):
            parts.append(b)
            bar.update(len(b.positions) + len(b.failures))
    images = np.concatenate([b.images for b in parts]) if parts else np.empty((0,))
    if len(images) < 2:
        raise ValueError(f"{folder}: fewer than 2 decodable images; cannot train a model")
    if auto_channels and cfg.channels == 3 and is_grey(images):
        cfg = cfg.replace(channels=1)
    if cfg.channels == 1:
        images = images[..., :1] if images.shape[-1] == 3 else images
    from .hasher import SemanticHasher
    hasher = SemanticHasher(cfg).fit(images, progress=progress)
    if len(pick) < len(todo):
        return hasher, None
    # positions in `parts` refer to the sample, which here is all of todo
    batches, offset = [], 0
    for b in parts:
        n = len(b.positions)
        batches.append(Batch(b.positions, images[offset:offset + n], b.failures, phash=b.phash))
        offset += n
    return hasher, batches


def _encode(hasher, folder, todo, predecoded, journal, done, failures, workers, progress, segment):
    """Encode ``todo`` into journal segments of about ``segment`` items. Decoding and encoding
    both happen in the worker processes; files decoded for training are encoded here."""
    cfg = hasher.config
    batches = predecoded if predecoded is not None else iter_batches(
        [os.path.join(folder, e.path) for e in todo], cfg.image_size, cfg.channels, workers, encode=hasher.encode)
    buf_pos, buf_codes, buf_phash, buf_fail = [], [], [], []

    def flush():
        if not buf_pos and not buf_fail:
            return
        pos = np.concatenate(buf_pos) if buf_pos else np.empty(0, np.int64)
        codes = np.concatenate(buf_codes) if buf_codes else np.empty((0, cfg.bits // 8), np.uint8)
        hashes = np.concatenate(buf_phash) if buf_phash else np.empty((0, PHASH_BYTES), np.uint8)
        ents = [todo[i] for i in pos]
        fails = [(todo[i].path, r) for i, r in buf_fail]
        journal.add_segment(codes, hashes, [e.path for e in ents], [e.size for e in ents],
                            [e.mtime_ns for e in ents], fails)
        for e, c, h in zip(ents, codes, hashes):
            done[e.path] = (e.size, e.mtime_ns, c, h)
        failures.update(fails)
        buf_pos.clear(), buf_codes.clear(), buf_phash.clear(), buf_fail.clear()

    with Progress(len(todo), "encode", unit="img", enabled=progress) as bar:
        for b in batches:
            if len(b.positions):
                buf_pos.append(b.positions)
                buf_codes.append(b.codes if b.codes is not None else hasher.encode(b.images))
                buf_phash.append(b.phash)
            buf_fail.extend(b.failures)
            bar.update(len(b.positions) + len(b.failures))
            if sum(len(p) for p in buf_pos) + len(buf_fail) >= segment:
                flush()
        flush()
