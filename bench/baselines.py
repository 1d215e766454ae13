"""Classic unsupervised hashing baselines on flattened pixels: LSH, PCAH, ITQ (Gong & Lazebnik
2011), and the float PCA projection used as a Euclidean reference. Fitted on database images only."""
from __future__ import annotations

import numpy as np

from hashae.codes import pack


def _pca(x: np.ndarray, dims: int):
    mean = x.mean(0)
    xc = x - mean
    # eigen-decomposition of the covariance: cheaper than an SVD of x when n >> d
    cov = xc.T @ xc / max(len(x) - 1, 1)
    vals, vecs = np.linalg.eigh(cov)
    return mean, vecs[:, ::-1][:, :dims]


def lsh(db: np.ndarray, bits: int, seed: int = 0):
    """Random hyperplanes through the data mean."""
    mean = db.mean(0)
    w = np.random.default_rng(seed).standard_normal((db.shape[1], bits))
    return lambda x: pack((x - mean) @ w > 0)


def pcah(db: np.ndarray, bits: int, seed: int = 0):
    """Sign of the top ``bits`` principal components."""
    mean, w = _pca(db, bits)
    return lambda x: pack((x - mean) @ w > 0)


def itq(db: np.ndarray, bits: int, seed: int = 0, iterations: int = 50):
    """Iterative quantisation: PCA, then the rotation that minimises quantisation error."""
    mean, w = _pca(db, bits)
    v = (db - mean) @ w
    rng = np.random.default_rng(seed)
    r, _ = np.linalg.qr(rng.standard_normal((bits, bits)))
    for _ in range(iterations):
        b = np.where(v @ r >= 0, 1.0, -1.0)
        u, _, vt = np.linalg.svd(b.T @ v)
        r = (u @ vt).T
    return lambda x: pack((x - mean) @ w @ r >= 0)


def pca_float(db: np.ndarray, dims: int):
    mean, w = _pca(db, dims)
    return lambda x: (x - mean) @ w


HASHERS = {"LSH": lsh, "PCAH": pcah, "ITQ": itq}
