"""Retrieval and clustering metrics as small pure functions over numpy arrays."""
from __future__ import annotations

import numpy as np

from .codes import hamming_matrix


def rank(distances: np.ndarray) -> np.ndarray:
    """Database order per query, nearest first; ties keep database order (stable sort)."""
    return np.argsort(distances, axis=1, kind="stable")


def average_precision(relevant_in_rank_order: np.ndarray) -> np.ndarray:
    """AP per row of a boolean (queries, database) matrix already in ranked order."""
    rel = relevant_in_rank_order.astype(np.float64)
    hits = np.cumsum(rel, axis=1)
    precision = hits / np.arange(1, rel.shape[1] + 1)
    n_rel = rel.sum(axis=1)
    return np.where(n_rel > 0, (precision * rel).sum(axis=1) / np.maximum(n_rel, 1), 0.0)


def retrieval_scores(distances: np.ndarray, query_labels: np.ndarray, db_labels: np.ndarray,
                     k: int = 100, block: int = 256) -> dict:
    """mAP over the full ranking and precision@k (relevant = same label), from a distance matrix."""
    aps, precs = [], []
    for s in range(0, len(distances), block):
        order = rank(distances[s:s + block])
        rel = db_labels[order] == query_labels[s:s + block, None]
        aps.append(average_precision(rel))
        precs.append(rel[:, :k].mean(axis=1))
    return {"map": float(np.concatenate(aps).mean()), f"p@{k}": float(np.concatenate(precs).mean())}


def hamming_retrieval(query_codes, db_codes, query_labels, db_labels, k: int = 100) -> dict:
    """retrieval_scores with Hamming distances between packed codes."""
    return retrieval_scores(hamming_matrix(query_codes, db_codes), query_labels, db_labels, k)


def euclidean_distances(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    q, db = q.astype(np.float64), db.astype(np.float64)
    return np.maximum((q * q).sum(1)[:, None] - 2 * q @ db.T + (db * db).sum(1)[None, :], 0)


def contingency(labels_true: np.ndarray, labels_pred: np.ndarray) -> np.ndarray:
    _, t = np.unique(labels_true, return_inverse=True)
    _, p = np.unique(labels_pred, return_inverse=True)
    table = np.zeros((t.max() + 1, p.max() + 1), np.int64)
    np.add.at(table, (t, p), 1)
    return table


def nmi(labels_true, labels_pred) -> float:
    """Normalised mutual information (arithmetic-mean normalisation, as scikit-learn's default)."""
    table = contingency(labels_true, labels_pred).astype(np.float64)
    n = table.sum()
    pij = table / n
    pi, pj = pij.sum(1), pij.sum(0)
    nz = pij > 0
    mi = (pij[nz] * np.log(pij[nz] / np.outer(pi, pj)[nz])).sum()
    h = lambda p: -(p[p > 0] * np.log(p[p > 0])).sum()  # noqa: E731
    denom = (h(pi) + h(pj)) / 2
    return float(mi / denom) if denom > 0 else 1.0


def adjusted_rand(labels_true, labels_pred) -> float:
    table = contingency(labels_true, labels_pred)
    comb = lambda x: x * (x - 1) / 2  # noqa: E731
    sum_ij = comb(table).sum()
    a, b = comb(table.sum(1)).sum(), comb(table.sum(0)).sum()
    expected = a * b / comb(table.sum()) if table.sum() > 1 else 0.0
    max_index = (a + b) / 2
    return float((sum_ij - expected) / (max_index - expected)) if max_index != expected else 1.0


def purity(labels_true, labels_pred) -> float:
    table = contingency(labels_true, labels_pred)
    return float(table.max(axis=0).sum() / table.sum())
