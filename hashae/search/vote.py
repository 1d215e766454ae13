"""k-nearest-neighbour labels in code space (AEkNN, Pulgar et al. 2019): each query takes the
label its nearest labelled items vote for. Pure functions over arrays. The neighbours and their
distances come from the two-stage ranking (search.rank: its score, an expected Hamming distance
less a copy bonus, averaged for images with the perceptual distance at PERCEPTUAL_WEIGHT) or
from plain Hamming search."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

TIE_WIDTH = 4  # neighbours tied with the k-th are counted too, up to this many times k
POWER = 16  # of the vote weight (bench/classify.py compares 0, i.e. a plain majority, to 32)
PERCEPTUAL_WEIGHT = 0.75  # of the perceptual distance in the score the neighbours are found and weighed by


class Votes(NamedTuple):
    label: np.ndarray  # (q,) winning label per query, -1 when no labelled neighbour was found
    counts: np.ndarray  # (q, labels) neighbours per label
    weights: np.ndarray  # (q, labels) summed vote weights per label


def vote_weights(dist: np.ndarray, bits: int, power: float = POWER) -> np.ndarray:
    """The votes of one query's neighbours, from their distances or scores ``dist`` (one row:
    d_min is taken over all of it): 1 for the nearest, falling with how much farther each is,
    relative to the code length (so that 64- and 256-bit codes weigh alike):
    (1 - (d - d_min) / bits) ** power. Relative, because a ranking's scores carry offsets that
    say nothing of the label (a colour collection's statistics term adds about 8 bits to a typical
    score, a copy bonus subtracts): measured from 0, an offset made the vote sharper
    (bench/README.md, "k-NN labels": "The vote from the nearest")."""
    d = np.asarray(dist, np.float64)
    if not d.size:
        return d
    return np.clip(1.0 - (d - d.min()) / bits, 0.0, 1.0) ** power


def ranked_rows(ranked: list, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(distances, ids) rows of ``width`` columns, padded with id -1, from search.rank.Ranked
    hits: each hit's score where the ranking has one, else its Hamming distance."""
    dist, ids = np.zeros((len(ranked), width)), np.full((len(ranked), width), -1, np.int64)
    for r, hits in enumerate(ranked):
        values = hits.distance if hits.score is None else hits.score
        n = min(width, len(hits.ids))
        dist[r, :n], ids[r, :n] = values[:n], hits.ids[:n]
    return dist, ids


def knn_vote(dist: np.ndarray, ids: np.ndarray, labels: np.ndarray, n_labels: int, k: int, bits: int,
             power: float = POWER) -> Votes:
    """Votes of each query's k nearest labelled items, from a search's (distances or scores, ids)
    rows in rank order (ids -1: none). ``labels``: the label of every item (-1: unlabelled; not counted).
    Items tied with the k-th distance vote too, so that the result does not depend on the order
    of equal codes. The label with the most weight wins; ties go to the lower label."""
    q = len(ids)
    counts, weights = np.zeros((q, n_labels), np.int64), np.zeros((q, n_labels))
    winner = np.full(q, -1, np.int64)
    for r in range(q):
        ok = ids[r] >= 0
        d, lab = dist[r][ok], labels[ids[r][ok]]
        d, lab = d[lab >= 0], lab[lab >= 0]
        if not len(d):
            continue
        take = np.flatnonzero(d <= d[min(k, len(d)) - 1])[: k * TIE_WIDTH]
        np.add.at(counts[r], lab[take], 1)
        np.add.at(weights[r], lab[take], vote_weights(d[take], bits, power))
        winner[r] = int(np.argmax(weights[r]))
    return Votes(winner, counts, weights)
