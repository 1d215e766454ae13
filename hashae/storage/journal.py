"""The journal of an index run in progress: ``<store>.journal/`` beside the store.

It holds ``meta.json`` (which committed store generation, folder and bit length it continues),
``model.h5`` (the model the run encodes with, saved before any code is written) and segments
``seg-NNNNNN.h5`` of encoded items and failures, in the store's own item layout. Every file
appears by atomic rename after an fsync, so after a crash each one is either complete or absent.
A run that finds a journal matching the store continues it; one that does not match (another
generation, folder, bit length or journal version) is discarded. The journal is removed once its
items are committed to the store.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field

from ..model.state import ModelState
from . import layout
from .atomic import fsync_path, write_guard
from .items import Items

SEGMENT = re.compile(r"^seg-(\d{6})\.h5$")
# segments in the store's item layout, with every perceptual hash and the centre's, and 13
# channel statistics (5: 12 or none; 4: no centre hashes; 3: pHash only; 2: no errors; 1: hashae 0.1)
VERSION = 6


@dataclass
class Resumed:
    """What an interrupted run left: its model, its encoded items and its failures."""

    model: ModelState | None = None
    items: list = field(default_factory=list)  # of Items, one per segment
    failures: dict = field(default_factory=dict)  # path -> reason


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

    def resume(self, meta: dict) -> Resumed:
        """Open the journal if it continues ``meta`` (else discard it) and return what it holds."""
        meta = {**meta, "journal": VERSION}
        if not os.path.isdir(self.dir):
            return Resumed()
        if self.peek() != meta:
            self.discard()
            return Resumed()
        self.meta = meta
        found = Resumed()
        if os.path.exists(os.path.join(self.dir, "model.h5")):
            try:
                found.model = layout.load_model_file(os.path.join(self.dir, "model.h5"))
            except (ValueError, OSError, KeyError):
                self.discard()  # no model, no valid segments: start over
                return Resumed()
        for name in sorted(os.listdir(self.dir)):
            m = SEGMENT.match(name)
            if name.endswith(".tmp"):  # a write a crash cut short
                os.unlink(os.path.join(self.dir, name))
            if not m:
                continue
            self.next_segment = max(self.next_segment, int(m.group(1)) + 1)
            try:
                with layout.open_file(os.path.join(self.dir, name)) as f:
                    found.items.append(layout.read_items(f, meta["bits"] // 8))
                    found.failures.update(layout.read_skipped(f))
            except (OSError, KeyError, ValueError):
                os.unlink(os.path.join(self.dir, name))  # only a damaged disk gets here; redo it
        return found

    def start(self, meta: dict) -> None:
        meta = {**meta, "journal": VERSION}
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

    def save_model(self, state: ModelState) -> None:
        self._write_atomic("model.h5", lambda tmp: layout.save_model_file(tmp, state))

    def add_segment(self, items: Items, failures: list) -> None:
        """Encoded ``items`` and ``failures`` (path, reason) as the next segment."""
        def build(f):
            layout.write_items(f, items)
            layout.write_skipped(f, failures)
        self._write_atomic(f"seg-{self.next_segment:06d}.h5", lambda tmp: layout.write_file(tmp, build))
        self.next_segment += 1

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.meta, self.next_segment = None, 0
