"""Principal directions of rows too many or too wide for an exact eigendecomposition."""
from __future__ import annotations

import torch


def range_finder(times, transposed_times, start: torch.Tensor, iterations: int = 2):
    """Singular values and right singular vectors (width, d) of a matrix Z known only by its
    products ``times(m)`` = Z @ m and ``transposed_times(y)`` = Z^T @ y: a randomized range
    finder from ``start`` (d, width) with power iterations (Halko, Martinsson & Tropp 2011).
    Memory is (n + d) x width, never d x d, and the callers decide how Z is read."""
    y = times(start)
    for _ in range(iterations):
        y = times(torch.linalg.qr(transposed_times(torch.linalg.qr(y)[0]))[0])
    _, sv, vt = torch.linalg.svd(transposed_times(torch.linalg.qr(y)[0]).T, full_matrices=False)
    return sv, vt
