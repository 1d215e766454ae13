"""Perceptual hashes per image, kept beside the semantic code to confirm near duplicates: a
64-bit pHash, the pHash of the mirrored picture, a 64-bit dHash, and the pHash and dHash of the
picture's centre.

Semantic codes put look-alikes together: two different photos of bees on flowers can share a
code. That is what "find similar" wants and what "find duplicates" must not report. pHash (the
sign of the lowest 8x8 DCT frequencies of a 32x32 grey thumbnail against their median, as the
imagehash package defines it) changes little under re-encoding, resizing and small crops, but
differs in about half of its 64 bits between unrelated images. ``bench/duplicates.py`` measures both.

The hash is taken from the decoded RGB square (ingest/decode.py; a 32x32 thumbnail when the
model's input is smaller), so indexing decodes each file once; measured on real photos it is within 2 bits
on average of a pHash taken from the file itself.

A mirrored copy's pHash is about 32 bits from the original's (every odd horizontal frequency
changes sign), so the pHash of the mirror image is kept too, from the same coefficients with
those signs flipped. The dHash (signs of horizontal
gradients of a 9x8 grey thumbnail) is a second, colour-free view of the layout: two flat or
textured pictures whose lowest frequencies look alike (sea tiles) rarely share their gradients.
Its mirror needs no storage: mirroring reverses each row and flips every gradient's sign.

A copy cropped by a few percent has every low frequency scaled, and in a flat picture (sea,
sky) the few faint ones that set the hash bits are easily swapped: its pHash and dHash come
apart from the original's. So the pHash and dHash of each picture's centre (CENTRE of each
side, resized back to 32x32) are kept too: a copy cropped by about that much, or rotated and
cropped so that its corners go, shows what they saw (``centre_distance``: one picture's centre
against another's whole; search/rank.py and search/duplicates.py read it). Two centres against
each other (``centres_distance``) leave out most of a copy's corners turned black by a small
rotation (search/duplicates.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image

from ..codes import as_codes, pack, popcount

BITS = 64
SIDE = 32
# DCT-II basis (rows: frequencies); the 8 lowest of 32 as in pHash
_BASIS = np.cos(np.pi * (2 * np.arange(SIDE)[None, :] + 1) * np.arange(8)[:, None] / (2 * SIDE))
_LUMA = np.array([0.299, 0.587, 0.114])

# mirroring a picture negates its odd horizontal DCT frequencies (DCT-II is symmetric about the
# middle of the row), so the mirror's pHash comes from the same coefficients
_MIRROR = np.where(np.arange(8) % 2, -1.0, 1.0)
# a byte with its 8 bits in reverse order (a dHash row read right to left)
_REVERSED = np.array([int(f"{b:08b}"[::-1], 2) for b in range(256)], np.uint8)


def _triangle(n_in: int, n_out: int, start: float = 0.0, stop: float | None = None) -> np.ndarray:
    """(n_out, n_in) weights of a bilinear (triangle-filter) resize of the span [start, stop)
    of n_in pixels (default all of them), as Pillow's resize computes them: the filter widened
    by the reduction factor, each row summing to 1."""
    stop = n_in if stop is None else stop
    scale = (stop - start) / n_out
    centre = start + (np.arange(n_out) + 0.5) * scale
    w = np.maximum(0.0, 1.0 - np.abs((np.arange(n_in)[None, :] + 0.5 - centre[:, None]) / max(scale, 1.0)))
    return w / w.sum(axis=1, keepdims=True)


# the dHash thumbnail of a 32x32 grey picture: 8 rows of 9 (equal to Pillow's BILINEAR resize
# within 1e-5 grey levels); a pixel counts as brighter than its left neighbour above _TIE, so
# that rounding in flat areas cannot decide a bit
_DHASH_ROWS, _DHASH_COLS, _TIE = _triangle(SIDE, 8), _triangle(SIDE, 9), 1e-3
FIELDS = ("phash", "phash_mirror", "dhash")  # the hashes an image item carries, in this order
CENTRE_FIELDS = ("phash_centre", "dhash_centre")  # ...and those of its centre (older files lack them)
ALL_FIELDS = FIELDS + CENTRE_FIELDS
CENTRE = 0.9  # the share of each side that the centre hashes see (10% cropped, half on each side)
_CENTRE_RESIZE = _triangle(SIDE, SIDE, SIDE * (1 - CENTRE) / 2, SIDE * (1 + CENTRE) / 2)


@dataclass(frozen=True, eq=False)  # arrays: compare the fields, not the records
class Perceptual:
    """The perceptual hashes of N pictures, each (N, 8) uint8 packed like the codes:
    ``phash``, ``phash_mirror`` (the pHash of the horizontally mirrored picture), ``dhash``, and
    the pHash and dHash of each picture's centre (None where unknown: collections written
    before they were kept)."""

    phash: np.ndarray
    phash_mirror: np.ndarray
    dhash: np.ndarray
    phash_centre: np.ndarray | None = None
    dhash_centre: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.phash)
        if (self.phash_centre is None) != (self.dhash_centre is None):
            raise ValueError("the centre's pHash and dHash come together")
        for name in ALL_FIELDS:
            if getattr(self, name) is None:
                continue
            value = as_codes(getattr(self, name), BITS // 8)
            if len(value) != n:
                raise ValueError(f"{n} pHashes but {len(value)} rows of {name}")
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return len(self.phash)

    @cached_property
    def _words(self) -> tuple:
        """pHash, its mirror's, dHash and its mirror's, each hash one 64-bit word: distances
        between millions of candidate pairs in a few vector operations."""
        return tuple(h.view(np.uint64).ravel() for h in (self.phash, self.phash_mirror, self.dhash, self.dhash_mirror))

    @property
    def dhash_mirror(self) -> np.ndarray:
        """The dHash of each mirrored picture, derived: each row of gradients read right to left
        with its signs flipped (exact but for equal neighbouring pixels, which both call 0)."""
        return _REVERSED[self.dhash] ^ np.uint8(0xFF)

    def distance(self, a: np.ndarray, b: np.ndarray, other: "Perceptual | None" = None) -> np.ndarray:
        """For index arrays ``a`` (into these pictures) and ``b`` (into ``other``'s, default these),
        the bits (of 128) in which the pHash and dHash of a and b differ, as they are or with one
        of them mirrored, whichever is closer. Mirrored, a's hashes against b's mirror's and b's
        against a's mirror's are two readings of one distance; their mean (rounded up) keeps it
        symmetric."""
        p, pm, d, dm = self._words
        q, qm, e, em = self._words if other is None else other._words
        pa, pb, da, db = p[a], q[b], d[a], e[b]
        same = _ones(pa ^ pb) + _ones(da ^ db)
        mirror_b = _ones(pa ^ qm[b]) + _ones(da ^ em[b])
        mirror_a = _ones(pm[a] ^ pb) + _ones(dm[a] ^ db)
        return np.minimum(same, (mirror_a + mirror_b + 1) // 2)

    @property
    def has_centre(self) -> bool:
        return self.phash_centre is not None

    @property
    def names(self) -> tuple:
        """The hash fields this record holds, in its constructor's order."""
        return ALL_FIELDS if self.has_centre else FIELDS

    @cached_property
    def _centre_words(self) -> tuple:
        """The centre's pHash and dHash, each hash one 64-bit word, as ``_words``."""
        if not self.has_centre:
            raise ValueError("these hashes have no centre")
        return tuple(h.view(np.uint64).ravel() for h in (self.phash_centre, self.dhash_centre))

    def centre_distance(self, a: np.ndarray, b: np.ndarray, other: "Perceptual") -> np.ndarray:
        """The bits (of 128) in which the centre's pHash and dHash of these pictures (a) differ
        from those of ``other``'s whole pictures (b), as they are or mirrored, whichever is
        closer: a cropped copy of a is near."""
        p, d = self._centre_words
        q, qm, e, em = other._words
        pa, da = p[a], d[a]
        return np.minimum(_ones(pa ^ q[b]) + _ones(da ^ e[b]), _ones(pa ^ qm[b]) + _ones(da ^ em[b]))

    def centres_distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The bits (of 128) in which the centre's pHash and dHash of pictures a and b (index
        arrays into these) differ: a slightly rotated copy's black corners fall outside both."""
        p, d = self._centre_words
        return _ones(p[a] ^ p[b]) + _ones(d[a] ^ d[b])

    def joined_centre(self) -> np.ndarray:
        """The centre's pHash and dHash side by side, (N, 16) uint8, as ``joined``."""
        if not self.has_centre:
            raise ValueError("these hashes have no centre")
        return np.concatenate([self.phash_centre, self.dhash_centre], axis=1)

    def joined(self, mirrored: bool = False) -> np.ndarray:
        """pHash and dHash side by side, (N, 16) uint8: one 128-bit key whose Hamming distance
        is the ``distance`` as the pictures are (``mirrored``: of each picture's mirror image)."""
        if mirrored:
            return np.concatenate([self.phash_mirror, self.dhash_mirror], axis=1)
        return np.concatenate([self.phash, self.dhash], axis=1)


def _ones(words: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 word, as int32 (sums of them exceed a byte)."""
    return popcount(words).astype(np.int32)


def perceptual_hashes(images: np.ndarray) -> Perceptual:
    """All perceptual hashes of images (n, h, w, channels) uint8, grey or RGB (``phash``'s input)."""
    grey = _grey32(images)
    low = _low_frequencies(grey)
    centre = _centre32(grey)
    return Perceptual(_above_median(low), _above_median(low * _MIRROR), _dhash32(grey),
                      _above_median(_low_frequencies(centre)), _dhash32(centre))


def dhash(images: np.ndarray) -> np.ndarray:
    """Packed 64-bit dHashes (n, 8) uint8: whether each pixel of a 9x8 grey thumbnail is brighter
    than its left neighbour (the dHash of the imagehash package), taken from the 32x32 grey
    picture that ``phash`` uses."""
    return _dhash32(_grey32(images))


def _dhash32(grey: np.ndarray) -> np.ndarray:
    # no matmul here (nor in _low_frequencies): BLAS would start its own threads in every
    # indexing worker
    small = np.einsum("nik,lk->nil", np.einsum("ij,njk->nik", _DHASH_ROWS, grey), _DHASH_COLS)
    return pack((small[:, :, 1:] - small[:, :, :-1] > _TIE).reshape(len(grey), BITS))


def _grey(images: np.ndarray) -> np.ndarray:
    """(n, h, w) float64 luminance of (n, h, w, 1 or 3) uint8 images; a grey picture given as
    RGB gives exactly its one channel."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (n, h, w, 1 or 3), got shape {images.shape}")
    grey = images[..., 0].astype(np.float64)
    if images.shape[-1] == 3:
        luma = _LUMA[0] * images[..., 0] + _LUMA[1] * images[..., 1] + _LUMA[2] * images[..., 2]
        colour = ((images[..., 0] != images[..., 1]) | (images[..., 1] != images[..., 2])).any(axis=(1, 2))
        grey[colour] = luma[colour]
    return grey


def phash(images: np.ndarray) -> np.ndarray:
    """Packed 64-bit pHashes (n, 8) uint8 of images (n, h, w, channels) uint8, grey or RGB."""
    return _above_median(_low_frequencies(_grey32(images)))


def _grey32(images: np.ndarray) -> np.ndarray:
    """(n, 32, 32) float64 luminance, resized (bilinear) when the pictures are another size."""
    grey = _grey(images)
    if len(grey) and grey.shape[1:] != (SIDE, SIDE):
        grey = np.stack([np.asarray(Image.fromarray(g.astype(np.float32), "F").resize(
            (SIDE, SIDE), Image.Resampling.BILINEAR), np.float64) for g in grey])
    return grey.reshape(len(grey), SIDE, SIDE)


def _centre32(grey: np.ndarray) -> np.ndarray:
    """(n, 32, 32) the central CENTRE of each side of (n, 32, 32) pictures, resized back to 32
    (bilinear, as Pillow's resize with that box)."""
    return np.einsum("nik,lk->nil", np.einsum("ij,njk->nik", _CENTRE_RESIZE, grey), _CENTRE_RESIZE)


def _low_frequencies(grey: np.ndarray) -> np.ndarray:
    """(n, 8, 8) lowest DCT-II coefficients of (n, 32, 32) pictures: [vertical, horizontal]."""
    return np.einsum("nik,lk->nil", np.einsum("ij,njk->nik", _BASIS, grey), _BASIS)


def _above_median(low: np.ndarray) -> np.ndarray:
    flat = low.reshape(len(low), BITS)
    return pack(flat > np.median(flat, axis=1, keepdims=True)) if len(flat) else np.empty((0, BITS // 8), np.uint8)
