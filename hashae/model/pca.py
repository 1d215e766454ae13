"""Principal directions of rows too many or too wide for an exact eigendecomposition."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
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


def streamed_directions(rows: Callable[[int, int], torch.Tensor], n: int, d: int, k: int, seed: int,
                        batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``k`` right singular vectors (k, d) float32 of the n x d matrix whose rows
    ``rows(start, stop)`` gives (float64, already centred or scaled as the caller wants; zero
    rows past its rank), and their singular values (at most k): ``range_finder`` with two
    power iterations, reading the rows in batches. (neighbours.top_directions is its float32
    sibling for a matrix already in memory; the neighbour search was measured with it.)"""
    width = max(1, min(k + 10, d, n))

    def times(m):  # Z @ m, (n, width)
        return torch.cat([rows(s, min(s + batch_size, n)) @ m for s in range(0, n, batch_size)])

    def transposed_times(y):  # Z^T @ y, (d, width)
        out = torch.zeros(d, y.shape[1], dtype=torch.float64)
        for s in range(0, n, batch_size):
            out += rows(s, min(s + batch_size, n)).T @ y[s:s + batch_size]
        return out

    start = torch.from_numpy(np.random.default_rng(seed).standard_normal((d, width)))
    sv, vt = range_finder(times, transposed_times, start)
    found = min(k, len(sv))
    directions = torch.zeros(k, d)
    directions[:found] = vt[:found].float()
    return directions, sv[:found]
