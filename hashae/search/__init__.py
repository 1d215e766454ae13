"""Search over packed codes: the Hamming index (FAISS), two-stage ranking (rank.py), clustering
(graph clustering in graph.py), near duplicates. Arrays in, arrays out; knows nothing of models,
files or images.

Imported lazily, so that ``hashae.search.methods`` (the names the CLI offers) costs no FAISS."""
from __future__ import annotations

from ..lazy import lazy_attributes

_EXPORTS = {
    "HammingIndex": ".index",
    "cluster": ".clustering",
    "default_radius": ".clustering",
    "duplicate_radius": ".duplicates",
    "near_duplicates": ".duplicates",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
