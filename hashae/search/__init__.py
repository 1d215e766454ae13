"""Search over packed codes: the Hamming index (FAISS), two-stage ranking (rank.py), clustering
(graph clustering in graph.py), near duplicates. Arrays in, arrays out; knows nothing of models,
files or images."""
from .clustering import cluster, default_radius
from .duplicates import duplicate_radius, near_duplicates
from .index import HammingIndex

__all__ = ["HammingIndex", "cluster", "default_radius", "duplicate_radius", "near_duplicates"]
