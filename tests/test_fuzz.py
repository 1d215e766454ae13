"""Property-based fuzzing of the two parsers of untrusted input: the image loader and the store
reader. Brief here (HASHAE_FUZZ_EXAMPLES, default 40 each); `python bench/fuzz.py` runs long."""
import io
import os
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from hashae import Collection, load_image
from hashae.ingest import ImageError
from hashae.storage import StoreError

EXAMPLES = int(os.environ.get("HASHAE_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("HASHAE_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _seed_images() -> list:
    out = []
    rng = np.random.default_rng(0)
    for fmt, mode in (("PNG", "RGB"), ("PNG", "P"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"),
                      ("TIFF", "RGB"), ("WEBP", "RGBA"), ("PNG", "I;16")):
        img = Image.fromarray(rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)).convert(mode)
        buf = io.BytesIO()
        img.save(buf, fmt)
        out.append(buf.getvalue())
    return out


SEEDS = _seed_images()


def _mutate(data: bytes, edits) -> bytes:
    b = bytearray(data)
    for pos, value, op in edits:
        if not b:
            break
        i = pos % len(b)
        if op == 0:
            b[i] = value
        elif op == 1:
            del b[i:i + 1 + value % 16]
        else:
            b[i:i] = bytes([value]) * (1 + value % 8)
    return bytes(b)


edits = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255), st.integers(0, 2)), max_size=12)


@FUZZ
@given(seed=st.integers(0, len(SEEDS) - 1), edits=edits, size=st.sampled_from([8, 16]), channels=st.sampled_from([1, 3]))
def test_image_loader_returns_an_image_or_an_image_error(tmp_path_factory, seed, edits, size, channels):
    path = tmp_path_factory.mktemp("fz") / "x.img"
    path.write_bytes(_mutate(SEEDS[seed], edits))
    try:
        a = load_image(path, size, channels)
    except ImageError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert a.shape == (size, size, channels) and a.dtype == np.uint8


@FUZZ
@given(data=st.binary(max_size=512))
def test_image_loader_on_random_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fz") / "r.jpg"
    path.write_bytes(data)
    try:
        load_image(path, 8)
    except ImageError:
        pass


@pytest.fixture(scope="module")
def small_store(trained_store, tmp_path_factory):
    path = tmp_path_factory.mktemp("fzs") / "s.h5"
    shutil.copy(trained_store, path)
    return path  # a path, not the bytes: hypothesis prints the arguments of a failure


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 1 << 24), st.integers(0, 255), st.just(0)), min_size=1, max_size=16))
def test_store_reader_raises_store_error_or_reads_consistently(small_store, tmp_path_factory, edits):
    path = tmp_path_factory.mktemp("fzs") / "m.h5"
    path.write_bytes(_mutate(small_store.read_bytes(), edits))
    try:
        with Collection.open(path) as c:
            codes, paths = c.codes, c.paths()
            assert codes.shape == (len(paths), c.bits // 8) and codes.dtype == np.uint8
            c.skipped, c.info()  # noqa: B018
            c.model.encode(np.zeros((1, c.model.config.image_size, c.model.config.image_size,
                                     c.model.config.channels), np.uint8))
    except StoreError:
        pass


PLANTS = ("external storage", "external link", "soft link", "virtual dataset")
TARGETS = ("items/path", "codes", "items/size", "skipped/reason", "model/weights/mean")


def _planted(store_bytes: bytes, folder, plant: str, target: str) -> bytes:
    """The store with ``target`` replaced by a dataset or link that reads another file."""
    import h5py
    secret = folder / "secret"
    secret.write_bytes(b"root:x:0:0:" * 4096)
    other = folder / "other.h5"
    with h5py.File(other, "w") as g:
        g["d"] = np.zeros(4096, np.uint8)
    path = folder / "p.h5"
    path.write_bytes(store_bytes)
    with h5py.File(path, "r+") as f:
        old = f[target]
        shape, dtype = old.shape, (old.dtype if old.dtype.kind != "O" else np.dtype("S8"))
        parent, name = target.rsplit("/", 1) if "/" in target else ("/", target)
        del f[target]
        g = f[parent]
        if plant == "external storage":
            g.create_dataset(name, shape=shape, dtype=dtype, external=[(str(secret), 0, int(np.prod(shape)) *
                                                                         dtype.itemsize or 1)])
        elif plant == "external link":
            g[name] = h5py.ExternalLink(str(other), "/d")
        elif plant == "soft link":
            g[name] = h5py.SoftLink("/codes" if target != "codes" else "/items/size")
        else:
            layout = h5py.VirtualLayout(shape=(4096,), dtype=np.uint8)
            layout[:] = h5py.VirtualSource(str(other), "d", shape=(4096,))
            g.create_virtual_dataset(name, layout)
    return path.read_bytes()


@FUZZ
@given(plant=st.sampled_from(PLANTS), target=st.sampled_from(TARGETS),
       edits=st.lists(st.tuples(st.integers(0, 1 << 24), st.integers(0, 255), st.just(0)), max_size=8))
def test_stores_that_point_outside_themselves_never_read_it(small_store, tmp_path_factory, plant, target, edits):
    folder = tmp_path_factory.mktemp("fzp")
    path = folder / "m.h5"
    path.write_bytes(_mutate(_planted(small_store.read_bytes(), folder, plant, target), edits))
    try:
        with Collection.open(path) as c:
            seen = [c.codes.tobytes(), "".join(c.paths()).encode("utf-8", "surrogateescape"), repr(c.skipped).encode(),
                    repr(c.info()).encode()]
            c.model  # noqa: B018
    except StoreError:
        return
    assert not any(b"root:x" in s for s in seen)
