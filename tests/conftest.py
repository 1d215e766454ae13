"""Shared fixtures: tiny generated data, and one small trained collection reused by many tests."""
from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest

from hashae import Collection, HasherConfig
from hashae.ingest.perceptual import ALL_FIELDS
from hashae.sample import make_sample

# the key that seals collection folders (hashae/storage/seal.py): the suite's own, never the user's
os.environ.setdefault("HASHAE_KEY_FILE", os.path.join(tempfile.mkdtemp(prefix="hashae-key-"), "key"))

SHARED = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))

# small and quick, but the real training path: pretraining + noisy fine-tuning (400 steps at
# least, half the image default: the tests' folders are tiny and easy)
SMALL = dict(image_size=16, hidden=(128, 64), epochs=12, pretrain_epochs=2, batch_size=32, min_steps=400)


def cluster_images(n_clusters=4, per_cluster=40, size=16, noise=0.08, seed=0):
    """Grey images around ``n_clusters`` random prototypes: (images uint8 (n, size, size), labels)."""
    rng = np.random.default_rng(seed)
    protos = rng.random((n_clusters, size, size))
    labels = np.repeat(np.arange(n_clusters), per_cluster)
    x = protos[labels] + rng.normal(0, noise, (len(labels), size, size))
    return (np.clip(x, 0, 1) * 255).astype(np.uint8), labels


def shared(name: str) -> str:
    path = os.path.join(SHARED, name)
    if not os.path.isdir(path):
        pytest.skip(f"{path} not available (tests read real data from ../shared/data)")
    return path


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory):
    """The built-in sample, 6 classes x 12 images, generated once."""
    d = tmp_path_factory.mktemp("sample") / "shapes"
    make_sample(str(d), per_class=12, seed=1)
    return d


@pytest.fixture(scope="session")
def trained_store(sample_dir, tmp_path_factory):
    """A collection over the sample with a small trained model (read-only for tests)."""
    store = tmp_path_factory.mktemp("stores") / "shapes.h5"
    Collection(store).index(str(sample_dir), config=HasherConfig(bits=32, **SMALL), workers=0, progress=False)
    return store


@pytest.fixture
def sample_copy(sample_dir, tmp_path):
    """A private copy of the sample folder a test may modify."""
    d = tmp_path / "shapes"
    shutil.copytree(sample_dir, d)
    return d


def store_state(store):
    """(paths, codes, perceptual hashes) of a store: what two runs that should agree must share."""
    with Collection.open(store) as c:
        every = c.perceptual
        return c.paths(), c.codes, np.hstack([getattr(every, name) for name in ALL_FIELDS])


def partition(labels):
    """Groups of row indices, as a sorted list of sorted lists: compares labelings up to renaming."""
    return sorted(sorted(np.flatnonzero(labels == v).tolist()) for v in np.unique(labels))


def components_reference(adjacent):
    """Connected-component labels of a boolean adjacency matrix, by plain graph search."""
    labels = -np.ones(len(adjacent), int)
    for start in range(len(adjacent)):
        if labels[start] >= 0:
            continue
        stack, labels[start] = [start], start
        while stack:
            i = stack.pop()
            for j in np.flatnonzero(adjacent[i] & (labels < 0)):
                labels[j] = start
                stack.append(j)
    return labels


def one_file_collection(trained_store, sample_dir, folder, name):
    """A collection of one sample image saved under ``name`` in ``folder``, indexed with the
    trained store's model; returns (store path, image path)."""
    folder.mkdir()
    shutil.copy(sample_dir / "ring" / "ring_000.png", folder / name)
    with Collection.open(trained_store) as base:
        model = base.model
    store = folder.parent / f"{folder.name}.h5"
    Collection(store).index(str(folder), model=model, workers=0, progress=False)
    return store, folder / name

