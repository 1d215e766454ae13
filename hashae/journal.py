"""The journal of an index run in progress: ``<store>.journal/`` beside the store.

It holds ``meta.json`` (which committed store generation, folder and bit length it continues),
``model.h5`` (the model the run encodes with, saved before any code is written) and segments
``seg-NNNNNN.h5`` of encoded items and failures. Every file appears by atomic rename after an
fsync, so after a crash each one is either complete or absent. A run that finds a journal
matching the store continues it; one that does not match (another generation, folder or bit
length) is discarded. The journal is removed once its items are committed to the store.
"""
from __future__ import annotations

import json
import os
import re
import shutil

import h5py
import numpy as np

from .store import PHASH_BYTES, STR, decode_paths, encode_path, fsync_path, write_guard

SEGMENT = re.compile(r"^seg-(\d{6})\.h5$")


class Journal:
    def __init__(self, store_path: str):
        self.dir = f"{store_path}.journal"
        self.meta: dict | None = None
        self.next_segment = 0

    def _write_atomic(self, name: str, writer) -> None:
        final = os.path.join(self.dir, name)
        tmp = final + ".tmp"
        with write_guard(final):
            writer(tmp)
            fsync_path(tmp)
            os.replace(tmp, final)
            fsync_path(self.dir)

    def peek(self) -> dict | None:
        """The journal's meta.json, or None if there is no readable journal."""
        try:
            with open(os.path.join(self.dir, "meta.json")) as f:
                meta = json.load(f)
            return meta if isinstance(meta, dict) else None
        except (OSError, ValueError):
            return None

    def resume(self, meta: dict):
        """Open the journal if it continues ``meta``; returns (model or None, done, failures)
        with ``done`` mapping path -> (size, mtime_ns, code row, phash row) and ``failures``
        path -> reason."""
        from .hasher import SemanticHasher
        done, failures, model = {}, {}, None
        if not os.path.isdir(self.dir):
            return model, done, failures
        if self.peek() != meta:
            self.discard()
            return model, done, failures
        self.meta = meta
        if os.path.exists(os.path.join(self.dir, "model.h5")):
            try:
                model = SemanticHasher.load(os.path.join(self.dir, "model.h5"))
            except (ValueError, OSError, KeyError):
                self.discard()  # no model, no valid segments: start over
                return None, {}, {}
        for name in sorted(os.listdir(self.dir)):
            m = SEGMENT.match(name)
            if not m:
                continue
            self.next_segment = max(self.next_segment, int(m.group(1)) + 1)
            try:
                with h5py.File(os.path.join(self.dir, name), "r") as f:
                    codes, hashes = f["codes"][()], f["phash"][()]
                    if hashes.shape != (len(codes), PHASH_BYTES):
                        raise ValueError("phash rows do not match codes")
                    for p, s, t, c, h in zip(decode_paths(f["path"]), f["size"][()], f["mtime"][()], codes, hashes):
                        done[p] = (int(s), int(t), c, h)
                    for p, r in zip(decode_paths(f["failed_path"]), decode_paths(f["failed_reason"])):
                        failures[p] = r
            except (OSError, KeyError, ValueError):
                os.unlink(os.path.join(self.dir, name))  # only a damaged disk gets here; redo it
        return model, done, failures

    def start(self, meta: dict) -> None:
        if self.meta == meta:
            return
        self.discard()
        with write_guard(self.dir):
            os.makedirs(self.dir)
        self.meta = meta

        def write(tmp):
            with open(tmp, "w") as f:
                json.dump(meta, f)
        self._write_atomic("meta.json", write)

    def save_model(self, model) -> None:
        self._write_atomic("model.h5", model.save)

    def add_segment(self, codes: np.ndarray, phash: np.ndarray, paths: list, sizes, mtimes, failures: list) -> None:
        def write(tmp):
            with h5py.File(tmp, "w") as f:
                f["codes"] = np.asarray(codes, np.uint8)
                f["phash"] = np.asarray(phash, np.uint8)
                f.create_dataset("path", data=np.array([encode_path(p) for p in paths], dtype=object), dtype=STR)
                f["size"] = np.asarray(sizes, np.int64)
                f["mtime"] = np.asarray(mtimes, np.int64)
                f.create_dataset("failed_path", data=np.array([encode_path(p) for p, _ in failures], dtype=object),
                                 dtype=STR)
                f.create_dataset("failed_reason", data=np.array([r.encode("utf-8", "replace") for _, r in failures],
                                                                dtype=object), dtype=STR)
        self._write_atomic(f"seg-{self.next_segment:06d}.h5", write)
        self.next_segment += 1

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.meta, self.next_segment = None, 0
