import numpy as np
import pytest

from hashae import HammingIndex
from hashae.codes import hamming_matrix


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (50, 8), dtype=np.uint8)
    # near-duplicates: a few flipped bits around each base code, so small radii find something
    flips = rng.integers(0, 2, (50, 20, 64)) * (rng.random((50, 20, 64)) < 0.04)
    bits = np.unpackbits(base, axis=1, bitorder="little")[:, None, :] ^ flips
    db = np.packbits(bits.reshape(-1, 64).astype(np.uint8), axis=1, bitorder="little")
    queries = base[:10]
    return db, queries


def test_search_matches_brute_force(data):
    db, q = data
    index = HammingIndex.from_codes(db)
    d, i = index.search(q, 15)
    brute = hamming_matrix(q, db)
    np.testing.assert_array_equal(d, np.sort(brute, axis=1)[:, :15])
    np.testing.assert_array_equal(np.take_along_axis(brute, i, 1), d)


@pytest.mark.parametrize("method", ["flat", "hash"])
@pytest.mark.parametrize("radius", [0, 1, 3, 6])
def test_radius_search_is_exact(data, method, radius):
    db, q = data
    index = HammingIndex.from_codes(db)
    brute = hamming_matrix(q, db)
    for row, (ids, dist) in zip(brute, index.radius_search(q, radius, method=method)):
        expected = np.flatnonzero(row <= radius)
        np.testing.assert_array_equal(np.sort(ids), expected)
        np.testing.assert_array_equal(dist, row[ids])
        assert (np.diff(dist) >= 0).all()  # nearest first


def test_add_in_parts_keeps_ids(data):
    db, q = data
    index = HammingIndex(64)
    index.add(db[:300])
    index.radius_search(q, 2, method="hash")  # builds the hash index, which must follow adds
    index.add(db[300:])
    whole = HammingIndex.from_codes(db)
    np.testing.assert_array_equal(index.search(q, 10)[0], whole.search(q, 10)[0])
    for (a, _), (b, _) in zip(index.radius_search(q, 2, method="hash"), whole.radius_search(q, 2, method="flat")):
        np.testing.assert_array_equal(np.sort(a), np.sort(b))


def test_save_load_identical_results(data, tmp_path):
    db, q = data
    index = HammingIndex.from_codes(db)
    index.save(tmp_path / "i.faiss")
    again = HammingIndex.load(tmp_path / "i.faiss")
    for a, b in zip(index.search(q, 20), again.search(q, 20)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(again.reconstruct_all(), db)


def test_fewer_items_than_k_pads():
    index = HammingIndex.from_codes(np.zeros((3, 2), np.uint8))
    d, i = index.search(np.zeros((1, 2), np.uint8), 5)
    assert list(i[0]) == [0, 1, 2, -1, -1] and list(d[0, :3]) == [0, 0, 0]
    empty = HammingIndex(16)
    assert empty.search(np.zeros((2, 2), np.uint8), 3)[1].tolist() == [[-1] * 3] * 2


def test_wrong_code_length_is_an_error(data):
    index = HammingIndex.from_codes(data[0])
    with pytest.raises(ValueError, match="bits"):
        index.search(np.zeros((1, 4), np.uint8), 1)
    with pytest.raises(ValueError):
        index.radius_search(data[1], -1)


def test_auto_radius_method_hashes_only_when_it_pays():
    rng = np.random.default_rng(1)
    index = HammingIndex.from_codes(rng.integers(0, 256, (60_000, 8), dtype=np.uint8))
    assert index.choose_method(1, 2) == "flat"  # one query: building hash tables costs more
    assert index.choose_method(5_000, 2) == "hash"
    assert index.choose_method(5_000, 8) == "flat"  # substrings too short to hash
    assert index.choose_method(5_000, 4) == "hash"  # 12-bit substrings
    assert index.choose_method(5_000, 5) == "flat"  # 10-bit substrings: a scan is as fast or faster
    q = index.reconstruct_all()[:3]
    flat = index.radius_search(q, 2)
    hashed = index.radius_search(q, 2, method="hash")
    assert index.choose_method(1, 2) == "hash"  # built now: lookups are cheaper than scans
    for (a, da), (b, db) in zip(flat, hashed):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(da, db)
    assert HammingIndex.from_codes(q).choose_method(10_000, 2) == "flat"  # small: scan
