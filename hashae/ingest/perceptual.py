"""A 64-bit perceptual hash (pHash) per image, kept beside the semantic code to confirm near
duplicates.

Semantic codes put look-alikes together: two different photos of bees on flowers can share a
code. That is what "find similar" wants and what "find duplicates" must not report. pHash (the
sign of the lowest 8x8 DCT frequencies of a 32x32 grey thumbnail against their median, as the
imagehash package defines it) changes little under re-encoding, resizing and small crops, but
differs in about half of its 64 bits between unrelated images. ``bench/duplicates.py`` measures both.

The hash is taken from the decoded RGB square (ingest/decode.py; a 32x32 thumbnail when the
model's input is smaller), so indexing decodes each file once; measured on real photos it is within 2 bits
on average of a pHash taken from the file itself.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ..codes import pack

BITS = 64
SIDE = 32
# DCT-II basis (rows: frequencies); the 8 lowest of 32 as in pHash
_BASIS = np.cos(np.pi * (2 * np.arange(SIDE)[None, :] + 1) * np.arange(8)[:, None] / (2 * SIDE))
_LUMA = np.array([0.299, 0.587, 0.114])

# a semantic near-duplicate candidate counts only if the pHashes are this close. Edited copies
# measured 0-14 bits apart (12 and 14: 90% crops), unrelated photos 32 on average, but chance
# pairs grow with the square of the collection: on 10,000 photos (bench/duplicates.py,
# cifar10_test) 16 reported 133 pairs, 29 of them across two classes; 12 reported 52, none
# across classes, for recall 0.97 instead of 0.98 on edited copies
CONFIRM = 12
# hashes this close make a pair even when the codes are further apart than the radius (an edit
# such as brightening moves the codes), provided the codes agree on 3/4 of their bits: on
# eurosat_val a residential tile and two sea tiles have hashes 2 and 4 bits apart, and only the
# codes tell them apart
CLOSE = 4


def phash(images: np.ndarray) -> np.ndarray:
    """Packed 64-bit pHashes (n, 8) uint8 of images (n, h, w, channels) uint8, grey or RGB."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (n, h, w, 1 or 3), got shape {images.shape}")
    n = len(images)
    if n == 0:
        return np.empty((0, BITS // 8), np.uint8)
    # no matmul here (nor below): BLAS would start its own threads in every indexing worker
    grey = images[..., 0].astype(np.float64)
    if images.shape[-1] == 3:  # grey pictures given as RGB hash exactly as given as one channel
        luma = _LUMA[0] * images[..., 0] + _LUMA[1] * images[..., 1] + _LUMA[2] * images[..., 2]
        colour = ((images[..., 0] != images[..., 1]) | (images[..., 1] != images[..., 2])).any(axis=(1, 2))
        grey[colour] = luma[colour]
    if grey.shape[1:] != (SIDE, SIDE):
        grey = np.stack([np.asarray(Image.fromarray(g.astype(np.float32), "F").resize(
            (SIDE, SIDE), Image.Resampling.BILINEAR), np.float64) for g in grey])
    low = np.einsum("nik,lk->nil", np.einsum("ij,njk->nik", _BASIS, grey), _BASIS).reshape(n, BITS)
    return pack(low > np.median(low, axis=1, keepdims=True))
