"""One decode path: an image file -> the model's input array, the same for training samples,
indexing workers and queries, whatever the model's channel count.

``decode_file`` opens any Pillow format and returns a ``Decoded`` image: the picture as an RGB
square of the requested side (and, for small sides, a 32x32 RGB thumbnail for the perceptual
hash). ``model_input`` then gives the model's array: the RGB square itself, or its luminance
(Pillow's ITU-R 601 "L" conversion) for a one-channel model. Colour is never chosen before
the square exists, so a one-channel model sees the same pixels however the file was reached.

Decoding keeps Pillow's decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``), uses JPEG
``draft`` to decode at a reduced scale when the target is small, applies EXIF orientation and
takes the first frame of animations. A file that cannot be decoded raises ``ImageError`` with a
one-line reason; folder loading records it and goes on.
"""
from __future__ import annotations

import io
import os
import signal
import stat
import sys
import tempfile
import threading
import warnings
from contextlib import contextmanager, suppress
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFile, ImageOps

from .perceptual import SIDE as PHASH_SIDE

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is reported, not half-decoded
# images above this many pixels are box-reduced right after decoding (_shrink); smaller ones,
# every camera photo among them, take the plain path
SHRINK_PIXELS = 1 << 24
DECODE_SECONDS = 60.0  # one file's decode time bound (a pathological file is reported, not waited on)


class ImageError(Exception):
    """A file that is not a decodable image; the message is a one-line reason."""


class Decoded(NamedTuple):
    rgb: np.ndarray  # (size, size, 3) uint8: the picture stretched to a square
    thumb: np.ndarray | None  # (32, 32, 3) uint8 for the perceptual hash when size < 32, else None


def decode_file(path, size: int, thumb: bool = False) -> Decoded:
    """Decode one image file to an RGB square of side ``size`` (and, with ``thumb`` and a side
    below the pHash's 32, a 32x32 thumbnail). Raises ImageError with a one-line reason for
    anything that is not a decodable image: also for what is not a regular file (a FIFO or a
    device is never opened for reading, so it cannot block) and for a decode that takes longer
    than DECODE_SECONDS."""
    with _decoding(), _open_regular(path) as fh, Image.open(fh) as img:
        return _to_squares(img, size, thumb and size < PHASH_SIDE)


def decode_bytes(data: bytes, size: int, max_pixels: int | None = None, thumb: bool = False) -> Decoded:
    """``decode_file`` for an image held in memory (an upload): the same path from the opened
    image on; ``max_pixels`` refuses larger images before their pixels are decoded."""
    with _decoding(), Image.open(io.BytesIO(data)) as img:
        if max_pixels and img.width * img.height > max_pixels:
            raise ImageError(f"image of {img.width}x{img.height} pixels; at most {max_pixels:,} pixels")
        return _to_squares(img, size, thumb and size < PHASH_SIDE)


def thumbnail(path, side: int = 160) -> Image.Image:
    """The picture in ``path`` as an RGB image fitting a ``side`` square, aspect kept (for
    pages and contact sheets); ImageError for anything that cannot be shown."""
    with _decoding(missing="file not found"), _open_regular(path) as fh, Image.open(fh) as img:
        rgb = _rgb(img, side)
        rgb.thumbnail((side, side), Image.Resampling.BILINEAR)
        return rgb


@contextmanager
def _decoding(missing: str = "file vanished before it could be read"):
    """The frame of every decode: Pillow's warnings muted (EXIF and palette chatter; bombs still
    raise), the time bound on, and any failure turned into one ImageError with a one-line reason
    (``missing`` for a file that is not there)."""
    try:
        with _muted(), _deadline(DECODE_SECONDS):
            yield
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"decompression bomb refused: {e}") from None
    except MemoryError:
        raise ImageError("out of memory while decoding") from None
    except FileNotFoundError:
        raise ImageError(missing) from None
    except _Timeout:
        raise ImageError(f"decoding took longer than {DECODE_SECONDS:g} s") from None
    except Image.UnidentifiedImageError:
        raise ImageError("cannot identify image file (not an image, or a format this Pillow cannot read)") from None
    except Exception as e:  # decoders raise many types on hostile input; all mean "not an image"
        msg = str(e).splitlines()[0][:200] if str(e) else ""
        raise ImageError(f"{type(e).__name__}: {msg}" if msg else type(e).__name__) from None


def thumbnail_jpeg(path, side: int = 160) -> bytes:
    """``thumbnail`` as JPEG bytes."""
    out = io.BytesIO()
    thumbnail(path, side).save(out, "JPEG", quality=85)
    return out.getvalue()


def sharpness(path, side: int = 256) -> float:
    """How much fine detail a picture has: the variance of the Laplacian of its grey thumbnail
    (the usual focus measure); a blurred or heavily compressed copy scores lower."""
    grey = model_input(np.asarray(thumbnail(path, side)), 1)[..., 0].astype(np.float64)
    lap = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]
    return float(lap.var()) if lap.size else 0.0


@contextmanager
def _open_regular(path):
    """A binary file object for ``path``, opened without blocking and only if it is a regular
    file: a FIFO swapped in between scan and decode would otherwise block ``open`` forever."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "FIFO" if stat.S_ISFIFO(mode) else "folder" if stat.S_ISDIR(mode) else "special file"
            raise ImageError(f"not a regular file ({kind})")
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh


class _Timeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Timeout()


_frame = threading.local()  # .many: inside decoding_many() in this thread


@contextmanager
def decoding_many():
    """The frame for decoding many files in a row (a worker's chunk): Pillow's warnings muted
    and the alarm handler installed once, not per file, where they cost about 3% of a worker's
    time per photo (bench/README.md, "Indexing throughput"). Each file keeps its own bound."""
    if getattr(_frame, "many", False):
        yield
        return
    usable = _alarm_usable()
    previous = signal.signal(signal.SIGALRM, _on_alarm) if usable else None
    try:
        with _muted():  # entered before the flag is set, so it mutes once for the chunk
            _frame.many = True
            yield
    finally:
        _frame.many = False
        if usable:
            signal.signal(signal.SIGALRM, previous)


@contextmanager
def _muted():
    """Pillow's warnings (EXIF and palette chatter) off for one decode, unless decoding_many
    already turned them off."""
    if getattr(_frame, "many", False):
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _alarm_usable() -> bool:
    """Whether this thread may use SIGALRM: the main thread only, and never while a caller's own
    interval timer runs (their alarm is left alone)."""
    return (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
            and signal.getitimer(signal.ITIMER_REAL)[0] == 0)


@contextmanager
def _deadline(seconds: float):
    """Raise _Timeout in this thread after ``seconds`` (SIGALRM; only in the main thread, and
    only when no other interval timer is running, so a caller's own alarm is left alone)."""
    if seconds <= 0 or not _alarm_usable():
        yield
        return
    # inside decoding_many() the handler is already ours: only the timer is set per file
    installed = signal.getsignal(signal.SIGALRM) is _on_alarm
    previous = None if installed else signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if not installed:
            signal.signal(signal.SIGALRM, previous)


def model_input(rgb: np.ndarray, channels: int) -> np.ndarray:
    """The model's input from RGB squares (..., s, s, 3) uint8: the same array for 3 channels,
    luminance (..., s, s, 1) for 1, computed exactly as Pillow's RGB -> "L" conversion."""
    if channels == 3:
        return rgb
    if channels != 1:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]


def load_image(path, size: int, channels: int = 3) -> np.ndarray:
    """Decode one image file into the model's (size, size, channels) uint8 input, stretched to a
    square. Raises ImageError with a one-line reason for anything that is not a decodable image."""
    return model_input(decode_file(path, size).rgb, channels)


def is_grey(images: np.ndarray) -> bool:
    """True when every image of an (n, h, w, 3) uint8 array has equal R, G and B."""
    if images.ndim != 4 or images.shape[-1] != 3:
        return images.ndim == 4 and images.shape[-1] == 1
    return bool(np.all(images[..., 0] == images[..., 1]) and np.all(images[..., 1] == images[..., 2]))


def _to_squares(img: Image.Image, size: int, thumb: bool) -> Decoded:
    # never decoded below the pHash's 32 pixels, with or without ``thumb``, so a query decodes
    # exactly as indexing did
    rgb = _rgb(img, max(size, PHASH_SIDE))
    return Decoded(_square(rgb, size), _square(rgb, PHASH_SIDE) if thumb else None)


def _rgb(img: Image.Image, side: int) -> Image.Image:
    """An opened image decoded and upright in RGB, at least ``side`` pixels where it is that
    large: JPEGs decode at 1/2, 1/4 or 1/8 scale while staying >= ``side`` (10x faster on
    photos), huge images are box-reduced (_shrink), EXIF orientation is applied."""
    if img.width < 1 or img.height < 1:
        raise ImageError(f"empty image ({img.width}x{img.height})")
    if img.format == "JPEG":
        img.draft("RGB", (side, side))
    if img.format == "TIFF":
        _load_quietly(img)
    else:
        img.load()
    img = ImageOps.exif_transpose(img) or img
    return _to_rgb(_shrink(img, side))


def _load_quietly(img: Image.Image) -> None:
    """``img.load()`` with what C code writes to the process's stderr meanwhile held back:
    libtiff reports every odd tag and bad strip there itself, hundreds of lines for a folder of
    damaged TIFFs, past Python's warnings. A failed load's reason ends with libtiff's last
    line. The main thread only: stderr is the whole process's."""
    if threading.current_thread() is not threading.main_thread():
        img.load()
        return
    try:
        held = tempfile.TemporaryFile()
    except OSError:  # no room for what it says: let it say it
        img.load()
        return
    with held:
        with suppress(AttributeError, ValueError, OSError):  # None or closed: nothing to flush
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all
            img.load()
            return
        os.dup2(held.fileno(), 2)
        try:
            img.load()
            return
        except OSError as e:
            failure = e
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        held.seek(0)
        said = [line.strip() for line in held.read(1 << 16).decode("utf-8", "replace").splitlines() if line.strip()]
    if not said:
        raise failure
    raise ImageError(f"{type(failure).__name__}: {failure} (libtiff: {said[-1][:200]})") from None


def _shrink(img: Image.Image, side: int) -> Image.Image:
    """Box-reduce a large decoded image by an integer factor, keeping both sides >= 2 * ``side``,
    before any mode conversion: a 13,000-pixel-square RGBA or float image then costs one copy of
    its pixels instead of four."""
    factor = min(img.width, img.height) // (2 * side)
    if factor < 2 or img.width * img.height <= SHRINK_PIXELS:
        return img
    if img.mode in ("P", "PA"):  # indices cannot be averaged: colours first
        img = img.convert("RGBA" if (img.mode == "PA" or "transparency" in img.info) else "RGB")
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode.startswith("I;16"):  # 16-bit grey: reduce as 32-bit, then to 8 bits as _to_rgb does
        small = np.asarray(img.convert("I").reduce(factor), np.float32) / 257.0
        return Image.fromarray(small.clip(0, 255).astype(np.uint8), "L")
    return img.reduce(factor) if img.mode in ("L", "LA", "RGB", "RGBA", "I", "F", "CMYK", "La", "RGBa") else img


def _square(img: Image.Image, size: int) -> np.ndarray:
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(img, dtype=np.uint8)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 'RGB': high bit depths rescaled, transparency over white."""
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
    return img if img.mode == "RGB" else img.convert("RGB")
