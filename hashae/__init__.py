"""hashae: semantic hashing of image collections (and of vectors: embeddings, word counts).

A deep autoencoder with a noise-forced binary bottleneck turns images into short binary codes;
collections keep codes, paths and the model in one HDF5 file; FAISS binary indexes search them.

Public API (imported lazily, so ``import hashae`` stays cheap for a query)::

    SemanticHasher, HasherConfig      the model (fit / encode / decode / save / load)
    ModelConfig, TrainConfig          the two halves of a HasherConfig (network; training)
    Collection                        an indexed image folder (or vector file) in one HDF5 file
    VectorSource                      the rows of a .npy file, HDF5 dataset or folder of parts
    HammingIndex                      exact and radius Hamming search over packed codes
    cluster                           group packed codes: exact, radius or k-means
    outlier_scores                    how little items fit, from reconstruction errors, codes and pHashes
    phash                             64-bit perceptual hashes of images (near-duplicate checks)
    perceptual_hashes, Perceptual     every perceptual hash of images: pHash, mirrored pHash, dHash, centre's
    load_images, load_folder, scan    image decoding
    pack, unpack, hamming             the packed-code bit layout (FAISS order)
"""
from __future__ import annotations

from .lazy import lazy_attributes
from .version import __version__  # noqa: F401 - the package version, hashae.__version__

_EXPORTS = {
    "SemanticHasher": "hashae.hasher",
    "HasherConfig": "hashae.model.config",
    "ModelConfig": "hashae.model.config",
    "TrainConfig": "hashae.model.config",
    "Collection": "hashae.collection",
    "HammingIndex": "hashae.search.index",
    "cluster": "hashae.search.clustering",
    "outlier_scores": "hashae.search.outliers",
    "phash": "hashae.ingest.perceptual",
    "perceptual_hashes": "hashae.ingest.perceptual",
    "Perceptual": "hashae.ingest.perceptual",
    "VectorSource": "hashae.ingest.vectors",
    "load_images": "hashae.ingest",
    "load_folder": "hashae.ingest",
    "load_image": "hashae.ingest",
    "scan": "hashae.ingest",
    "ImageError": "hashae.ingest",
    "pack": "hashae.codes",
    "unpack": "hashae.codes",
    "hamming": "hashae.codes",
    "hamming_matrix": "hashae.codes",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
