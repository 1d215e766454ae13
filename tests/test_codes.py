import faiss
import numpy as np
import pytest

from hashae.codes import bit_balance, check_bits, hamming, hamming_matrix, pack, unpack


def test_pack_unpack_round_trip():
    bits = np.random.default_rng(0).integers(0, 2, (50, 64)).astype(np.uint8)
    codes = pack(bits)
    assert codes.shape == (50, 8) and codes.dtype == np.uint8
    np.testing.assert_array_equal(unpack(codes), bits)


def test_bit_order_is_faiss_order():
    x = np.random.default_rng(1).standard_normal((20, 32)).astype(np.float32)
    ours = pack(x >= 0)
    theirs = np.zeros((20, 4), np.uint8)
    faiss.fvecs2bitvecs(faiss.swig_ptr(x), faiss.swig_ptr(theirs), 32, 20)
    np.testing.assert_array_equal(ours, theirs)


def test_hamming_equals_brute_force_count():
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 2, (30, 48)), rng.integers(0, 2, (40, 48))
    brute = (a[:, None, :] != b[None, :, :]).sum(-1)
    np.testing.assert_array_equal(hamming_matrix(pack(a), pack(b)), brute)
    np.testing.assert_array_equal(hamming(pack(a[:5]), pack(b[:5])), brute[np.arange(5), np.arange(5)])


def test_hamming_matches_faiss():
    rng = np.random.default_rng(3)
    db = rng.integers(0, 256, (500, 8), dtype=np.uint8)
    q = rng.integers(0, 256, (7, 8), dtype=np.uint8)
    index = faiss.IndexBinaryFlat(64)
    index.add(db)
    d, i = index.search(q, 500)
    ours = hamming_matrix(q, db)
    np.testing.assert_array_equal(np.take_along_axis(ours, i, 1), d)


def test_bit_balance():
    codes = pack(np.array([[1] * 8, [0] * 8, [1, 0] * 4, [0, 1] * 4]))
    np.testing.assert_allclose(bit_balance(codes), 0.5)


@pytest.mark.parametrize("bad", [0, 4, 12, 264, 512, 64.0, "64", True])
def test_bad_bit_counts_raise(bad):
    with pytest.raises(ValueError, match="multiple of 8|integer"):
        check_bits(bad)


def test_pack_rejects_bad_shapes():
    with pytest.raises(ValueError):
        pack(np.zeros((3, 12)))
    with pytest.raises(ValueError, match="uint8"):
        unpack(np.zeros((3, 2), np.int32))
