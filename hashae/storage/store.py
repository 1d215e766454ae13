"""The collection file: one HDF5 file per collection (layout.py names its contents).

A committed file is never modified in place: ``write_store`` writes a complete new file beside
it, fsyncs it and renames it over the old one (atomic on POSIX), so a crash leaves either the
old or the new store, never a torn one. Work in progress lives in a journal (journal.py).
``StoreReader`` validates a file before anything is read from it, and reads lazily.
"""
from __future__ import annotations

import functools
import os
import shutil
import time
import uuid
from dataclasses import dataclass

import h5py
import numpy as np

from ..codes import check_bits
from ..ingest.perceptual import Perceptual
from ..model.state import ModelState
from ..version import __version__
from . import layout, seal
from .atomic import first_line, fsync_path, replace_atomically, write_guard
from .items import ALL_HASH_FIELDS, HASH_FIELDS, PHASH_BYTES, Items


class StoreError(ValueError):
    """A collection file that is missing, not a hashae file, or inconsistent; one-line message."""


@dataclass
class StoreContents:
    """Everything a store holds: its items (sorted by path), the files that could not be
    indexed and why, the model (if any), and where the items came from."""

    bits: int
    items: Items
    folder: str = ""
    skipped: list = ()
    model: ModelState | None = None
    created: float | None = None
    # items per part file: above it the items are written as shards (layout.py, "shards")
    shard_items: int = 0
    # "images" (files under ``folder``) or "vectors" (rows of the vector file ``folder`` names)
    kind: str = "images"
    ids: str = ""  # vectors: the file of item names, if one was given


# collections above this many items are written as part files by default (about 1 GB each)
SHARD_ITEMS = 10_000_000


def write_store(path: str, contents: StoreContents) -> str:
    """Write a complete store to ``path`` atomically (temporary file, fsync, rename); returns the
    new generation id. With more items than ``contents.shard_items`` (> 0), the items go to part
    files in ``<name>.parts-<generation>/`` (written and fsynced first) and the root file maps
    them as virtual datasets; the previous generation's parts are removed once the new root is
    in place, so a crash leaves the old collection or the new one, each with its own parts."""
    bits = check_bits(contents.bits)
    items = contents.items
    if items.nbytes != bits // 8:
        raise ValueError(f"codes have {items.nbytes * 8} bits, expected {bits}")
    generation = uuid.uuid4().hex
    tmp = f"{path}.tmp-{os.getpid()}"
    sharded = 0 < contents.shard_items < len(items)
    shards = None

    def build(f: h5py.File) -> None:
        now = time.time()
        attrs = {
            layout.ATTR_BITS: bits, layout.ATTR_GENERATION: generation,
            layout.ATTR_FOLDER: os.path.abspath(contents.folder) if contents.folder else "",
            layout.ATTR_CREATED: contents.created or now, layout.ATTR_UPDATED: now,
            layout.ATTR_HASHAE: __version__,
        }
        if attrs[layout.ATTR_FOLDER]:
            attrs[layout.ATTR_FOLDER_SEAL] = seal.seal(generation, attrs[layout.ATTR_FOLDER])
        if contents.kind != layout.ITEMS_IMAGES:
            attrs[layout.ATTR_ITEMS] = contents.kind
        if contents.ids:  # sealed like the folder; "ids:" keeps the two seals apart
            attrs[layout.ATTR_IDS] = os.path.abspath(contents.ids)
            attrs[layout.ATTR_IDS_SEAL] = seal.seal(generation, "ids:" + attrs[layout.ATTR_IDS])
        if contents.model is not None and not contents.model.model.is_vector:
            attrs.update({layout.ATTR_IMAGE_SIZE: contents.model.model.image_size,
                          layout.ATTR_CHANNELS: contents.model.model.channels})
        layout.write_root_attrs(f, attrs)
        if shards is None:
            layout.write_items(f, items)
        else:
            layout.write_virtual_items(f, shards, items)
        layout.write_skipped(f, list(contents.skipped))
        if contents.model is not None:
            layout.write_model(f.create_group(layout.MODEL), contents.model)

    try:
        with write_guard(path):  # the parts too: a full disk is a one-line error, the old store intact
            if sharded:
                shards = _write_parts(path, generation, items, contents.shard_items)
            layout.write_file(tmp, build)
        replace_atomically(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if sharded:  # this generation's parts, written in full or in part
            shutil.rmtree(os.path.join(os.path.dirname(os.path.abspath(path)), layout.parts_folder(path, generation)),
                          ignore_errors=True)
        raise
    remove_stale_parts(path, generation)
    return generation


def _write_parts(path: str, generation: str, items: Items, per_part: int) -> list:
    """Write ``items`` as part files of ``per_part`` rows each (the last may be smaller), in a
    new folder beside ``path``; returns [(name relative to path's folder, rows)]."""
    sub = layout.parts_folder(path, generation)
    folder = os.path.join(os.path.dirname(os.path.abspath(path)), sub)
    os.makedirs(folder)
    shards = []
    for k, start in enumerate(range(0, len(items), per_part)):
        part = items.take(np.arange(start, min(start + per_part, len(items))))
        name = f"{sub}/part-{k:05d}.h5"
        layout.write_part(os.path.join(folder, f"part-{k:05d}.h5"), part, items.nbytes * 8)
        shards.append((name, len(part)))
    fsync_path(folder)
    return shards


def _beside(path: str, prefix: str) -> list:
    """(full path, what follows the prefix) of the names in ``path``'s folder that start with
    ``path``'s name plus ``prefix``."""
    folder, start = os.path.dirname(os.path.abspath(path)), os.path.basename(path) + prefix
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [(os.path.join(folder, n), n[len(start):]) for n in names if n.startswith(start)]


def remove_stale_parts(path: str, keep: str | None) -> list:
    """Delete the part folders of ``path`` other than generation ``keep``'s (those of replaced
    generations, or of a writer killed before its commit); call it holding the store's lock."""
    removed = []
    for full, generation in _beside(path, ".parts-"):
        if generation != keep and len(generation) == 32:
            shutil.rmtree(full, ignore_errors=True)
            removed.append(os.path.basename(full))
    return removed


def remove_stale_temporaries(path: str) -> list:
    """Delete ``<path>.tmp-<pid>`` files that a writer killed mid-commit left behind; call it
    holding the store's lock, when no other writer can be writing one. Returns what it removed."""
    removed = []
    for full, pid in _beside(path, ".tmp-"):
        if pid.isdigit():
            try:
                os.unlink(full)
                removed.append(os.path.basename(full))
            except OSError:
                pass
    return removed


def _guarded(method):
    """Damage found after opening (lazy reads of a corrupted file) is a StoreError too."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (StoreError, IndexError):
            raise
        except Exception as e:  # h5py raises OSError, RuntimeError, KeyError, ValueError... on bad bytes
            raise StoreError(f"{self.path}: damaged collection file ({type(e).__name__}: {first_line(e)})") from None
    return wrapper


class StoreReader:
    """Read-only, validated view of a collection file; datasets are read lazily."""

    def __init__(self, path: str):
        self.path = path
        if not os.path.exists(path):
            if os.path.isdir(f"{os.path.realpath(path)}.journal"):
                raise StoreError(f"{path}: a first index run is in progress, or was interrupted (its work is in "
                                 f"{path}.journal); the collection exists once it commits (`hashae index` finishes it)")
            raise StoreError(f"{path}: no such collection (build one with `hashae index FOLDER --store {path}`)")
        try:
            self.file = layout.open_file(path)
        except layout.LayoutError as e:
            raise StoreError(str(e)) from None
        except Exception as e:  # anything h5py raises on a damaged file
            raise StoreError(f"{path}: damaged collection file ({type(e).__name__}: {first_line(e)})") from None
        try:
            self._validate()
        except layout.LayoutError as e:
            self.file.close()
            raise StoreError(f"{path}: {e}") from None
        except Exception as e:  # anything h5py raises on a damaged file
            self.file.close()
            raise StoreError(f"{path}: damaged collection file ({type(e).__name__}: {first_line(e)})") from None

    def _validate(self) -> None:
        f = self.file
        self.bits = layout.check_root(f)
        self.n, present = layout.check_items(f, self.bits // 8)
        self.has_phash = present["phash"]
        self.has_hashes = all(present[name] for name in HASH_FIELDS)  # phash, phash_mirror, dhash
        self.has_centre = self.has_hashes and present["phash_centre"] and present["dhash_centre"]
        self.has_error = present["error"]
        self.has_stats = present["stats"]
        self.has_residual = present["residual"]
        # the optional item datasets this file holds (hashes, errors): what `hashae info` lists
        self.optional = ["/" + c.path for c in layout.ITEM_COLUMNS if c.optional and present[c.field]]
        self.n_skipped = layout.check_skipped(f)
        # a sharded collection: (part file, rows) in row order, each part checked like a file
        self.shards = layout.shard_names(f) if layout.ATTR_SHARDS in f.attrs else None
        if self.shards is not None:
            held = sum(rows for _, rows in self.shards)
            if held != self.n:
                raise layout.LayoutError(f"its parts hold {held} items, its item columns {self.n}")
            layout.check_parts(f, self.bits // 8, self.shards)
        self.folder = layout.text_attr(f.attrs, layout.ATTR_FOLDER)
        self.kind = layout.item_kind(f.attrs)  # "images" or "vectors"
        self.generation = layout.text_attr(f.attrs, layout.ATTR_GENERATION)
        # the stored folder may be read only if this user named it (seal.py)
        self.folder_trusted = seal.verify(self.generation, self.folder,
                                          layout.text_attr(f.attrs, layout.ATTR_FOLDER_SEAL))
        # vectors named by an ids file: its path, read again only if this user sealed it
        self.ids = layout.text_attr(f.attrs, layout.ATTR_IDS)
        self.ids_trusted = bool(self.ids) and seal.verify(self.generation, "ids:" + self.ids,
                                                          layout.text_attr(f.attrs, layout.ATTR_IDS_SEAL))

    # lazy accessors ------------------------------------------------------------------
    @_guarded
    def codes(self) -> np.ndarray:
        return self.file[layout.CODES][()] if self.n else np.empty((0, self.bits // 8), np.uint8)

    @_guarded
    def code(self, row: int) -> np.ndarray:
        """The packed code of one item."""
        if not 0 <= row < self.n:
            raise IndexError(f"item id {row} out of range 0..{self.n - 1}")
        return self.file[layout.CODES][int(row)]

    @_guarded
    def paths(self, ids=None) -> list:
        ds = self.file[layout.COLUMN["path"].path]
        if ids is None:
            return layout.read_strings(ds)
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return []
        uniq, inverse = np.unique(ids, return_inverse=True)  # h5py wants increasing indices
        if uniq[0] < 0 or uniq[-1] >= self.n:
            raise IndexError(f"item ids out of range 0..{self.n - 1}")
        vals = layout.read_strings(ds, uniq)
        return [vals[i] for i in inverse.ravel()]

    @_guarded
    def find_path(self, path: str) -> int | None:
        """Row of the item with this relative path, or None; reads the paths a block at a time."""
        return layout.find_string(self.file[layout.COLUMN["path"].path], path)

    @_guarded
    def phash(self) -> np.ndarray | None:
        """The items' perceptual hashes (N, 8) uint8; None for stores without them (written from
        codes alone, or by an earlier hashae)."""
        if not self.has_phash:
            return None
        return self.file[layout.COLUMN["phash"].path][()] if self.n else np.empty((0, PHASH_BYTES), np.uint8)

    @_guarded
    def perceptual(self) -> Perceptual | None:
        """All perceptual hashes of the items (pHash, its mirror's, dHash, and the centre's
        where stored); None for stores without the first three (codes alone, or written by an
        earlier hashae)."""
        if not self.has_hashes:
            return None
        names = ALL_HASH_FIELDS if self.has_centre else HASH_FIELDS
        return Perceptual(*(self.file[layout.COLUMN[name].path][()] if self.n
                            else np.empty((0, PHASH_BYTES), np.uint8) for name in names))

    @_guarded
    def errors(self) -> np.ndarray | None:
        """Each item's reconstruction error through its code (N,) float32, NaN where unknown;
        None for stores without them (written from codes alone, or by an earlier hashae)."""
        return layout.read_errors(self.file) if self.has_error else None

    @_guarded
    def stats(self) -> np.ndarray | None:
        """Each item's channel statistics (N, 13) float32 (storage/layout.py, items/stats), rows
        of NaN where unknown; None for stores without them (vectors, codes alone, or an earlier
        hashae)."""
        return layout.read_stats(self.file) if self.has_stats else None

    @_guarded
    def residuals(self) -> np.ndarray | None:
        """Each item's distance from the model's linear twin (N,) float32 (storage/layout.py,
        items/residual), NaN where unknown; None for stores without them (a model trained
        before the twin existed, vectors, codes alone)."""
        return layout.read_measures(self.file, "residual") if self.has_residual else None

    @_guarded
    def sizes(self) -> np.ndarray:
        return self.file[layout.COLUMN["size"].path][()].astype(np.int64)

    @_guarded
    def mtimes(self) -> np.ndarray:
        return self.file[layout.COLUMN["mtime"].path][()].astype(np.int64)

    @_guarded
    def items(self) -> Items:
        """Every item, all columns."""
        return layout.read_items(self.file, self.bits // 8)

    @_guarded
    def skipped(self) -> list:
        return layout.read_skipped(self.file)

    @_guarded
    def has_model(self) -> bool:
        return layout.MODEL in self.file

    @_guarded
    def model_state(self) -> ModelState:
        """The stored model as plain data (configs and weights), validated."""
        if not self.has_model():
            raise StoreError(f"{self.path}: this collection has no model yet (run `hashae index` on it)")
        try:
            return layout.read_model(self.file[layout.MODEL])
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise StoreError(f"{self.path}: model is damaged or invalid ({first_line(e)})") from None

    @_guarded
    def attrs(self) -> dict:
        return layout.plain_attrs(self.file.attrs)

    @_guarded
    def model_config(self) -> dict | None:
        """The model's settings as one flat dict (what `hashae info --json` shows), unvalidated;
        None without a model or when they are not readable JSON."""
        if not self.has_model():
            return None
        try:
            return layout.model_settings(self.file[layout.MODEL])
        except layout.LayoutError:
            return None

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "StoreReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
