"""The edits people make to photos, for the copy benchmarks (duplicates.py, copies.py), and the
photo files they are made to.

Each edit takes an RGB PIL image and returns (edited image, JPEG quality to save it with).
"""
from __future__ import annotations

import os

from PIL import Image, ImageDraw, ImageEnhance, ImageOps


def photo_files(folder: str) -> list:
    """The JPEG and PNG files under ``folder``, sorted."""
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs
                  if f.lower().endswith((".jpg", ".jpeg", ".png")))


def jpeg(im, quality: int = 50):
    return im, quality


def resize(im, scale: float = 0.8):
    return im.resize((max(1, int(im.width * scale + 1e-9)), max(1, int(im.height * scale + 1e-9))),
                     Image.Resampling.LANCZOS), 90


def crop(im, fraction: float = 0.1):
    """``fraction`` of the width and height off, half on each side."""
    dx, dy = int(im.width * fraction / 2 + 1e-9), int(im.height * fraction / 2 + 1e-9)
    return im.crop((dx, dy, im.width - dx, im.height - dy)), 90


def rotate(im, degrees: float = 4):
    return im.rotate(degrees, resample=Image.Resampling.BILINEAR), 90


def bright(im, factor: float = 1.2):
    return ImageEnhance.Brightness(im).enhance(factor), 90


def flip(im):
    return ImageOps.mirror(im), 90


def watermark(im, text: str = "(c) hashae 2026"):
    im = im.copy()
    ImageDraw.Draw(im).text((im.width // 20, im.height * 3 // 4), text, fill=(255, 255, 255))
    return im, 90


def grey(im):
    return ImageOps.grayscale(im), 90


def combined(im, degrees: float = 4, factor: float = 1.2):
    """Rotation, 10% crop, 80% resize, brightness and JPEG quality 50, in that order."""
    im = rotate(im, degrees)[0]
    im = crop(im)[0]
    im = resize(im)[0]
    return bright(im, factor)[0], 50
