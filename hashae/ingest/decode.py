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

import warnings
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFile, ImageOps

from .perceptual import SIDE as PHASH_SIDE

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is reported, not half-decoded


class ImageError(Exception):
    """A file that is not a decodable image; the message is a one-line reason."""


class Decoded(NamedTuple):
    rgb: np.ndarray  # (size, size, 3) uint8: the picture stretched to a square
    thumb: np.ndarray | None  # (32, 32, 3) uint8 for the perceptual hash when size < 32, else None


def decode_file(path, size: int, thumb: bool = False) -> Decoded:
    """Decode one image file to an RGB square of side ``size`` (and, with ``thumb`` and a side
    below the pHash's 32, a 32x32 thumbnail). Raises ImageError with a one-line reason for
    anything that is not a decodable image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF / palette chatter; bombs still raise
            with Image.open(path) as img:
                return _to_squares(img, size, thumb and size < PHASH_SIDE)
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
    if img.width < 1 or img.height < 1:
        raise ImageError(f"empty image ({img.width}x{img.height})")
    if img.format == "JPEG":
        # decode at 1/2, 1/4 or 1/8 scale while staying >= the target size: 10x faster on photos.
        # Never below the pHash's 32 pixels, with or without ``thumb``, so a query decodes exactly
        # as indexing did
        side = max(size, PHASH_SIDE)
        img.draft("RGB", (side, side))
    img.load()
    img = ImageOps.exif_transpose(img) or img
    img = _to_rgb(img)
    return Decoded(_square(img, size), _square(img, PHASH_SIDE) if thumb else None)


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
