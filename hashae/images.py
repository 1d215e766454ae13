"""Image folders -> uint8 arrays: scanning, robust decoding of any Pillow mode, parallel batches.

Decoding keeps Pillow's decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``), uses JPEG
``draft`` to decode at a reduced scale when the target is small, applies EXIF orientation and
takes the first frame of animations. A file that cannot be decoded raises ``ImageError`` with a
one-line reason; folder loading records it and goes on.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import stat
import warnings
from collections import deque
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageFile, ImageOps

from .perceptual import SIDE as PHASH_SIDE
from .perceptual import phash

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is reported, not half-decoded


class ImageError(Exception):
    """A file that is not a decodable image; the message is a one-line reason."""


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the scanned folder, '/'-separated
    size: int
    mtime_ns: int


def image_extensions() -> frozenset:
    """Lower-case file extensions of every format this Pillow can open."""
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def scan(folder: str | os.PathLike, on_folder=None) -> tuple[list[FileEntry], list[tuple[str, str]]]:
    """Recursively list image files under ``folder`` (sorted by path) and the entries that could
    not be read. Symlinked folders are followed once each (no loops); hidden names are skipped.
    ``on_folder(n_entries)`` is called after each folder is read (for progress displays)."""
    root = os.fspath(folder)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such folder")
    exts = image_extensions()
    files, errors = [], []
    seen = {os.path.realpath(root)}
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            with os.scandir(os.path.join(root, rel_dir)) as it:
                entries = list(it)
        except OSError as e:
            errors.append((rel_dir or ".", f"folder not readable: {e.strerror or e}"))
            continue
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
            if stat.S_ISDIR(st.st_mode):
                real = os.path.realpath(e.path)
                if real not in seen:
                    seen.add(real)
                    stack.append(rel)
            elif stat.S_ISREG(st.st_mode) and os.path.splitext(e.name)[1].lower() in exts:
                files.append(FileEntry(rel, st.st_size, st.st_mtime_ns))
        if on_folder is not None:
            on_folder(len(entries))
    files.sort(key=lambda f: f.path)
    return files, errors


def load_image(path: str | os.PathLike, size: int, channels: int = 3) -> np.ndarray:
    """Decode one image file into an (size, size, channels) uint8 array, stretched to a square.

    Raises ImageError with a one-line reason for anything that is not a decodable image."""
    return _decode(path, size, channels, False)[0]


def _decode(path, size: int, channels: int, thumb: bool):
    """(model input array, pHash thumbnail or None): with ``thumb`` and a model input smaller
    than the pHash's 32x32, the thumbnail is resized from the decoded image, not the input."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF / palette chatter; bombs still raise
            with Image.open(path) as img:
                return _to_array(img, size, channels, thumb and size < PHASH_SIDE)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"decompression bomb refused: {e}") from None
    except MemoryError:
        raise ImageError("out of memory while decoding") from None
    except FileNotFoundError:
        raise ImageError("file vanished before it could be read") from None
    except Exception as e:  # decoders raise many types on hostile input; all mean "not an image"
        msg = str(e).splitlines()[0][:200] if str(e) else ""
        raise ImageError(f"{type(e).__name__}: {msg}" if msg else type(e).__name__) from None


def _to_array(img: Image.Image, size: int, channels: int, thumb: bool = False):
    if img.width < 1 or img.height < 1:
        raise ImageError(f"empty image ({img.width}x{img.height})")
    if img.format == "JPEG":
        # decode at 1/2, 1/4 or 1/8 scale while staying >= the target size: 10x faster on photos.
        # Never below the pHash's 32 pixels, with or without ``thumb``, so a query decodes exactly
        # as indexing did
        side = max(size, PHASH_SIDE)
        img.draft("L" if channels == 1 else "RGB", (side, side))
    img.load()
    img = ImageOps.exif_transpose(img) or img
    img = _normalise_mode(img, channels)
    small = _square(img, PHASH_SIDE) if thumb else None
    return _square(img, size), small


def _square(img: Image.Image, size: int) -> np.ndarray:
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _normalise_mode(img: Image.Image, channels: int) -> Image.Image:
    """Any Pillow mode -> 'L' or 'RGB': high bit depths rescaled, transparency over white."""
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(img, dtype=np.float32)
        if mode.startswith("I;16"):
            a = a / 257.0
        else:
            lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
            if lo < 0 or hi > 255:
                a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        img = Image.fromarray(np.nan_to_num(a).clip(0, 255).astype(np.uint8), "L")
    elif mode == "1":
        img = img.convert("L")
    elif mode in ("P", "PA"):
        img = img.convert("RGBA" if (mode == "PA" or "transparency" in img.info) else "RGB")
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    target = "L" if channels == 1 else "RGB"
    return img if img.mode == target else img.convert(target)


# ---------------------------------------------------------------------------- batches
@dataclass
class Batch:
    """Decoded images of one chunk: ``positions`` index into the list of paths asked for."""

    positions: np.ndarray
    images: np.ndarray | None  # (len(positions), size, size, channels) uint8; None when encoded
    failures: list  # (position, reason)
    codes: np.ndarray | None = None  # the ``encode`` function's result, when one was given
    phash: np.ndarray | None = None  # (len(positions), 8) uint8 perceptual hashes (perceptual.py)


_worker_encode = None  # set in each worker by _init_worker (inherited, never pickled, with fork)


def _init_worker(encode) -> None:
    global _worker_encode
    _worker_encode = encode
    if encode is not None:
        # one torch thread per worker, as torch's DataLoader does: the workers already fill the
        # cores, and it keeps OpenMP from being used in a forked child with more than one thread
        import torch
        torch.set_num_threads(1)


def _chunk(job, encode) -> Batch:
    start, paths, size, channels = job
    ok, arrays, thumbs, failures = [], [], [], []
    for i, p in enumerate(paths):
        try:
            arr, thumb = _decode(p, size, channels, True)
            arrays.append(arr)
            thumbs.append(arr if thumb is None else thumb)
            ok.append(start + i)
        except ImageError as e:
            failures.append((start + i, str(e)))
    images = np.stack(arrays) if arrays else np.empty((0, size, size, channels), np.uint8)
    hashes = phash(np.stack(thumbs)) if thumbs else phash(images)
    ok = np.asarray(ok, dtype=np.int64)
    if encode is not None:
        return Batch(ok, None, failures, encode(images), hashes)
    return Batch(ok, images, failures, phash=hashes)


def _worker_chunk(job) -> Batch:
    return _chunk(job, _worker_encode)


def iter_batches(paths: Sequence[str], size: int, channels: int = 3, workers: int = 0,
                 chunk: int = 128, encode=None) -> Iterator[Batch]:
    """Decode ``paths`` in order, ``chunk`` files at a time, in ``workers`` processes (0: here).

    With ``encode`` (images -> codes, e.g. a SemanticHasher's ``encode``), each chunk is also
    encoded where it was decoded and comes back as ``codes`` without its pixels: the work is
    spread over the workers, and the caller's process stays free.

    Chunks of 128 measured faster than 32 or 64 (less IPC, larger encode batches) at a tail
    of well under a second. Up to ``8 * workers`` chunks (at most ~64 MB of decoded pixels,
    and at least ``2 * workers``) are in flight, so memory stays bounded however many files,
    and the workers keep decoding while the caller spends a moment on a batch (encoding a
    journal segment)."""
    jobs = ((s, list(paths[s:s + chunk]), size, channels) for s in range(0, len(paths), chunk))
    if workers <= 0 or len(paths) <= chunk:
        yield from (_chunk(job, encode) for job in jobs)
        return
    # fork: workers start in milliseconds and never re-import the caller's script (spawn and
    # forkserver do, which breaks scripts without a __main__ guard). They run Pillow and numpy,
    # and torch only single-threaded (_init_worker), so forking a process that used torch is safe.
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    inflight = max(2 * workers, min(8 * workers, (64 << 20) // (chunk * size * size * channels)))
    with ctx.Pool(workers, initializer=_init_worker, initargs=(encode,)) as pool:
        pending = deque()
        for job in jobs:
            pending.append(pool.apply_async(_worker_chunk, (job,)))
            if len(pending) >= inflight:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


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


def load_folder(folder: str | os.PathLike, size: int = 32, channels: int = 3, workers: int = 0):
    """Scan and decode a folder: ``(images, relative_paths, skipped)``, skipped as (path, reason)."""
    entries, skipped = scan(folder)
    paths = [e.path for e in entries]
    images, ok, failures = load_images([os.path.join(folder, p) for p in paths], size, channels, workers)
    skipped += [(paths[i], reason) for i, reason in failures]
    return images, [paths[i] for i in ok], skipped


def is_grey(images: np.ndarray) -> bool:
    """True when every image of an (n, h, w, 3) uint8 array has equal R, G and B."""
    if images.ndim != 4 or images.shape[-1] != 3:
        return images.ndim == 4 and images.shape[-1] == 1
    return bool(np.all(images[..., 0] == images[..., 1]) and np.all(images[..., 1] == images[..., 2]))
