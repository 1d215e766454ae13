"""Classic unsupervised hashing baselines on flattened pixels: LSH, PCAH, ITQ (Gong & Lazebnik
2011), and the float PCA projection used as a Euclidean reference. Fitted on database images only."""
from __future__ import annotations

import numpy as np

from hashae.codes import pack
from hashae.model.features import fourier_lift, fourier_parameters, itq_rotation, principal_directions


def lsh(db: np.ndarray, bits: int, seed: int = 0):
    """Random hyperplanes through the data mean."""
    mean = db.mean(0)
    w = np.random.default_rng(seed).standard_normal((db.shape[1], bits))
    return lambda x: pack((x - mean) @ w > 0)


def pcah(db: np.ndarray, bits: int, seed: int = 0):
    """Sign of the top ``bits`` principal components."""
    mean, w = principal_directions(db, bits)
    return lambda x: pack((x - mean) @ w > 0)


def itq(db: np.ndarray, bits: int, seed: int = 0, iterations: int = 50):
    """Iterative quantisation: PCA, then the rotation that minimises quantisation error (the
    model's feature bits use the same two steps, model/features.py)."""
    mean, w = principal_directions(db, bits)
    r = itq_rotation((db - mean) @ w, seed, iterations)
    return lambda x: pack((x - mean) @ w @ r >= 0)


def pca_float(db: np.ndarray, dims: int):
    mean, w = principal_directions(db, dims)
    return lambda x: (x - mean) @ w


HASHERS = {"LSH": lsh, "PCAH": pcah, "ITQ": itq}


# Simple features with no training, the bar a learnt code has to clear (model issue): what a
# photo tool could compute per image in microseconds. Each takes uint8 images (n, h, w, c).

def colour_histogram(images: np.ndarray, bins: int = 4) -> np.ndarray:
    """(n, bins**3) joint colour histogram (``bins`` levels per channel), as fractions of the
    pixels; a grey image gets the same number of intensity levels (bins**3)."""
    n = len(images)
    x = images.astype(np.int64)
    if images.shape[-1] == 3:
        cell = (x[..., 0] * bins // 256) * bins * bins + (x[..., 1] * bins // 256) * bins + x[..., 2] * bins // 256
    else:
        cell = x[..., 0] * bins ** 3 // 256
    cells = bins ** 3
    flat = (cell.reshape(n, -1) + np.arange(n)[:, None] * cells).ravel()
    return np.bincount(flat, minlength=n * cells).reshape(n, cells) / cell[0].size


def channel_statistics(images: np.ndarray, levels=(1, 2, 4)) -> np.ndarray:
    """Per channel mean, standard deviation and mean absolute horizontal and vertical gradient
    (the model's image_stats) of the whole image and of each cell of a 2x2 and a 4x4 grid:
    (n, 21 * 4 * c) for the default levels, in [0, 1] pixel units. The grid lifts the 12 numbers
    of a colour image to more than 64, so that ITQ can give them 64 bits."""
    x = images.astype(np.float32) / 255
    n, h, w, c = x.shape
    out = []
    for g in levels:
        for i in range(g):
            for j in range(g):
                cell = x[:, i * h // g:(i + 1) * h // g, j * w // g:(j + 1) * w // g]
                gx = np.abs(np.diff(cell, axis=2)).mean((1, 2))
                gy = np.abs(np.diff(cell, axis=1)).mean((1, 2))
                out += [cell.mean((1, 2)), cell.std((1, 2)), gx, gy]
    return np.concatenate(out, 1).astype(np.float64)


def standardiser(db: np.ndarray):
    """Each column scaled to the database's mean 0 and spread 1 (a constant column: left at 0)."""
    mean, std = db.mean(0), db.std(0)
    std[std < 1e-12] = 1.0
    return lambda x: (x - mean) / std


def kernel_lift(db: np.ndarray, dims: int = 1024, seed: int = 0):
    """Random Fourier features of a Gaussian kernel (Rahimi & Recht 2007; the lift of Raginsky &
    Lazebnik's shift-invariant kernel hashing), width the median distance of a database sample:
    a feature of fewer values than bits becomes one that ITQ can give every bit."""
    weight, phase = fourier_parameters(db, np.random.default_rng(seed), dims)
    return lambda x: fourier_lift(x, weight, phase)


def simple_features(images: np.ndarray, db: np.ndarray) -> dict:
    """name -> (float features of every image, whether ITQ needs the kernel lift first): the
    colour histogram as square roots (the Hellinger form, better than raw fractions on every
    shared set tried), the whole-image channel statistics and the grid statistics, both
    standardised on the database rows ``db``."""
    out = {"colour histogram": (np.sqrt(colour_histogram(images)), False)}
    for name, levels, lift in (("channel statistics", (1,), True), ("channel statistics on a grid", (1, 2, 4), False)):
        f = channel_statistics(images, levels)
        out[name] = (standardiser(f[db])(f), lift)
    return out
