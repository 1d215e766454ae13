"""Big collections: items written as part files joined by HDF5 virtual datasets, searched through
FAISS's sharded index (equal to one flat index) or an inverted-file index (exact when every list
is probed), and part files that a hostile collection cannot point anywhere else."""
import os
import shutil

import h5py
import numpy as np
import pytest
from PIL import Image

from conftest import store_state
from hashae import Collection
from hashae.search import HammingIndex
from hashae.storage import StoreError, StoreReader


def _index(store, folder, model, **kw):
    return Collection(str(store)).index(str(folder), model=model, workers=0, progress=False, **kw)


def _parts_dirs(store):
    return sorted(n for n in os.listdir(os.path.dirname(store)) if n.startswith(os.path.basename(store) + ".parts-"))


@pytest.fixture
def sharded(trained_store, sample_copy, tmp_path):
    """The sample indexed twice with one model: as one file, and as parts of 25 items."""
    with Collection.open(trained_store) as base:
        model = base.model
    single, store = tmp_path / "single.h5", tmp_path / "sharded.h5"
    _index(single, sample_copy, model)
    _index(store, sample_copy, model, shard_items=25)
    return store, single, sample_copy, model


def test_parts_read_as_one_array_in_any_hdf5_reader(sharded):
    store, single, *_ = sharded
    (parts,) = _parts_dirs(str(store))
    assert sorted(os.listdir(store.parent / parts)) == ["part-00000.h5", "part-00001.h5", "part-00002.h5"]
    with h5py.File(store, "r") as f, h5py.File(single, "r") as g:  # plain h5py, no hashae
        assert f["codes"].is_virtual and f["items/path"].is_virtual
        np.testing.assert_array_equal(f["codes"][()], g["codes"][()])
        assert list(f["items/path"].asstr()[()]) == list(g["items/path"].asstr()[()])
        np.testing.assert_array_equal(f["items/error"][()], g["items/error"][()])
    a, b = store_state(store), store_state(single)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    with StoreReader(str(store)) as r:
        assert [rows for _, rows in r.shards] == [25, 25, 22]
        assert r.attrs()["format_version"] == 2


def test_sharded_collection_searches_like_one_file(sharded):
    store, single, folder, _ = sharded
    query = [str(folder / "ring" / "ring_003.png"), str(folder / "cross" / "cross_007.png")]
    with Collection.open(store) as c, Collection.open(single) as s:
        assert c.hamming_index.sharded and not s.hamming_index.sharded
        assert c.search(query, k=10) == s.search(query, k=10)
        assert c.radius_search(query, 6) == s.radius_search(query, 6)
        assert c.duplicates() == s.duplicates()


def test_reindex_writes_new_parts_and_removes_the_old(sharded):
    store, _, folder, _ = sharded
    before = _parts_dirs(str(store))
    Image.new("RGB", (40, 40), "red").save(folder / "new.png")
    report = _index(store, folder, None, shard_items=25)
    assert report.indexed == 1 and report.items == 73
    after = _parts_dirs(str(store))
    assert len(after) == 1 and after != before
    with StoreReader(str(store)) as r:
        assert [rows for _, rows in r.shards] == [25, 25, 23]
    # parts left by a writer killed before its commit are removed by the next run
    stray = store.parent / (os.path.basename(store) + ".parts-" + "0" * 32)
    stray.mkdir()
    assert _index(store, folder, None, shard_items=25).indexed == 0
    assert _parts_dirs(str(store)) == after


def _retarget(store, tmp_path, new_name):
    """A copy of a sharded collection whose virtual /codes maps ``new_name`` instead of its part."""
    bad = tmp_path / "bad.h5"
    shutil.copy(store, bad)
    with h5py.File(bad, "a") as f:
        n = f["codes"].shape
        del f["codes"]
        vl = h5py.VirtualLayout(shape=n, dtype=np.uint8)
        vl[:] = h5py.VirtualSource(new_name, "codes", shape=n)
        f.create_virtual_dataset("codes", vl)
    return bad


@pytest.mark.parametrize("target", ["/etc/passwd", "../outside.h5", "single.h5"])
def test_virtual_datasets_may_only_map_the_collection_parts(sharded, tmp_path, target):
    store, *_ = sharded
    bad = _retarget(store, tmp_path, target)
    with pytest.raises(StoreError, match="not one of the collection's part files"):
        StoreReader(str(bad))


def test_shard_list_and_part_files_are_checked(sharded, tmp_path):
    store, single, *_ = sharded
    with h5py.File(single, "a") as f:  # a virtual dataset in a collection without parts
        f["codes_copy"] = f["codes"][()]
    bad = _retarget(single, tmp_path, "x.parts-" + "a" * 32 + "/part-00000.h5")
    with pytest.raises(StoreError, match="virtual dataset"):
        StoreReader(str(bad))
    evil = tmp_path / "evil.h5"
    shutil.copy(store, evil)
    with h5py.File(evil, "a") as f:
        f.attrs["shards"] = '[["/etc/passwd", 72]]'
    with pytest.raises(StoreError, match="not a part file"):
        StoreReader(str(evil))
    (parts,) = _parts_dirs(str(store))
    os.remove(store.parent / parts / "part-00001.h5")
    with pytest.raises(StoreError, match="part-00001.h5"):
        StoreReader(str(store))


def test_parts_with_statistics_of_an_earlier_width_read_as_without(sharded):
    store, *_ = sharded
    with StoreReader(str(store)) as r:
        shards = r.shards  # (name relative to the collection's folder, rows)
    with h5py.File(store, "a") as f:  # every part and the root's virtual column as written on 2026-11-29
        del f["items/stats"]
        layout = h5py.VirtualLayout(shape=(sum(rows for _, rows in shards), 12), dtype=np.float32)
        start = 0
        for name, rows in shards:
            with h5py.File(store.parent / name, "a") as part:
                stats = part["items/stats"][:, :12]
                del part["items/stats"]
                part["items/stats"] = stats
            layout[start:start + rows] = h5py.VirtualSource(name, "items/stats", shape=(rows, 12))
            start += rows
        f.create_virtual_dataset("items/stats", layout)
    with StoreReader(str(store)) as r:
        assert not r.has_stats and r.stats() is None and len(r.codes()) == 72


def _clustered_codes(n, bits=64, centres=50, flip=0.05, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 2, (centres, bits), dtype=np.uint8)
    x = c[rng.integers(0, centres, n)] ^ (rng.random((n, bits)) < flip)
    return np.packbits(x, axis=1)


def test_sharded_index_equals_one_flat_index():
    codes = _clustered_codes(3000)
    flat = HammingIndex.from_codes(codes)
    shards = HammingIndex.build([codes[:1000], codes[1000:1700], codes[1700:]])
    assert shards.sharded and shards.ntotal == 3000
    q = codes[::97]
    d1, i1 = flat.search(q, 20)
    d2, i2 = shards.search(q, 20)
    np.testing.assert_array_equal(d1, d2)
    for a, b in zip(flat.radius_search(q, 5), shards.radius_search(q, 5)):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(shards.reconstruct_all(), codes)


def test_ivf_index_probing_every_list_is_exact_and_fewer_lists_recall_most():
    codes = _clustered_codes(4000, seed=1)
    q = codes[::50]
    d_exact, _ = HammingIndex.from_codes(codes).search(q, 10)
    every = HammingIndex.build([codes], ivf_min_items=1000, nprobe=10**6)
    assert every.ivf is not None and every.ivf.nprobe == every.ivf.nlist
    np.testing.assert_array_equal(every.search(q, 10)[0], d_exact)
    few = HammingIndex.build([codes], ivf_min_items=1000, nprobe=8)
    d_few, i_few = few.search(q, 10)
    assert (d_few >= d_exact).all()
    assert (d_few == d_exact).mean() > 0.8


def test_collection_switches_to_the_ivf_at_its_threshold(trained_store, sample_dir):
    """A collection above ``ivf_min_items`` answers k-NN through the IVF; probing every list it
    finds the exhaustive distances; `hashae query --nprobe` is accepted and changes nothing
    below the threshold."""
    from click.testing import CliRunner

    from hashae.cli import main
    query = [str(sample_dir / "ring" / "ring_003.png")]
    with Collection.open(trained_store) as plain, Collection.open(trained_store) as big:
        big.ivf_min_items, big.nprobe = 10, 10**6
        assert big.hamming_index.ivf is not None and plain.hamming_index.ivf is None
        assert [h.distance for h in big.search(query, k=8)[0]] == [h.distance for h in plain.search(query, k=8)[0]]
    args = ["query", query[0], "--store", str(trained_store), "--json"]
    runner = CliRunner()
    assert runner.invoke(main, args + ["--nprobe", "4"]).output == runner.invoke(main, args).output
