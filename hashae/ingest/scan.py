"""Finding the image files of a folder: a sorted list of entries (path, size, mtime) and the
entries that could not be read."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the scanned folder, '/'-separated
    size: int
    mtime_ns: int


# formats Pillow only names: stubs that open nothing unless a program registers a handler. They
# are data containers, not pictures, and a collection's own .h5 file may sit in the folder it indexes
STUB_FORMATS = frozenset({"BUFR", "GRIB", "HDF5"})


def image_extensions() -> frozenset:
    """Lower-case file extensions of every format this Pillow can open (not its stubs)."""
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items()
                     if fmt in Image.OPEN and fmt not in STUB_FORMATS)


OUTSIDE = "symbolic link to outside the folder, not followed (--follow-links follows it)"


def scan(folder: str | os.PathLike, on_folder=None,
         follow_links: bool = False) -> tuple[list[FileEntry], list[tuple[str, str]]]:
    """Recursively list image files under ``folder`` (sorted by path) and the entries that could
    not be read or were left out, with why. Symbolic links are followed while they stay inside
    the folder (a link to / would crawl the whole disk), anywhere with ``follow_links``; folders
    are visited once each (no loops), a folder reached by several paths under the first one in
    a walk of names in sorted order (the same on any machine); hidden names are skipped. ``on_folder(n_entries)`` is
    called after each folder is read (for progress displays)."""
    root = os.fspath(folder)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such folder")
    part = walk(root, [""], follow_links, on_folder=on_folder)
    part.files.sort(key=lambda f: f.path)
    return part.files, part.errors


@dataclass
class Walked:
    """What a walk found: files, errors, the folders it read as (relative path, real path), and
    with a folder limit the folders found but not yet read."""

    files: list
    errors: list
    folders: list
    pending: list


def walk(root: str, start: list, follow_links: bool, on_folder=None, max_folders: int | None = None,
         seen: set | None = None) -> Walked:
    """Read the folders ``start`` (relative to ``root``) and, depth first, the folders under them,
    as ``scan`` does; stop after ``max_folders`` folders, leaving the rest in ``pending``. A walk
    of one sub-folder on another machine gives the entries a whole scan would (distributed/scan.py).
    Names are read in sorted order and folders depth first, so a folder is claimed when its
    parent, the first in that order, is read: ``discovery_key`` orders the paths the same way."""
    exts = image_extensions()
    files, errors, folders = [], [], []
    top = os.path.realpath(root)
    seen = {top} if seen is None else seen
    stack = list(start)
    while stack and (max_folders is None or len(folders) < max_folders):
        rel_dir = stack.pop()
        try:
            with os.scandir(os.path.join(root, rel_dir)) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            errors.append((rel_dir or ".", f"folder not readable: {e.strerror or e}"))
            continue
        folders.append((rel_dir, os.path.realpath(os.path.join(root, rel_dir))))
        below = []
        for e in entries:
            if e.name.startswith("."):
                continue
            rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
            try:
                st = e.stat(follow_symlinks=True)
            except OSError as err:
                if os.path.splitext(e.name)[1].lower() in exts:
                    errors.append((rel, "broken link" if e.is_symlink() else f"not readable: {err.strerror or err}"))
                continue
            wanted = stat.S_ISDIR(st.st_mode) or os.path.splitext(e.name)[1].lower() in exts
            if wanted and not follow_links and e.is_symlink() and not _inside(os.path.realpath(e.path), top):
                errors.append((rel, OUTSIDE))
                continue
            if stat.S_ISDIR(st.st_mode):
                real = os.path.realpath(e.path)
                if real not in seen:
                    seen.add(real)
                    below.append(rel)
            elif stat.S_ISREG(st.st_mode) and os.path.splitext(e.name)[1].lower() in exts:
                files.append(FileEntry(rel, st.st_size, st.st_mtime_ns))
        stack.extend(reversed(below))  # the first name is read next: depth first, in name order
        if on_folder is not None:
            on_folder(len(entries))
    return Walked(files, errors, folders, stack)


def discovery_key(rel: str) -> tuple:
    """The order in which ``walk`` meets folder paths: by the parent's path, name by name, then
    by the folder's own name."""
    parts = rel.split("/")
    return tuple(parts[:-1]), parts[-1]


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
