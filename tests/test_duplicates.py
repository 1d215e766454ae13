"""Near duplicates: perceptual hashes, their verification of semantic candidates, the store."""
import h5py
import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import components_reference, partition
from hashae import Collection
from hashae.search import near_duplicates
from hashae.codes import hamming, hamming_matrix, pack
from hashae.ingest import load_image
from hashae.ingest.perceptual import ALL_FIELDS, phash
from hashae.search.duplicates import CONFIRM
from hashae.storage import Items, StoreContents, StoreError, write_store


def _photo(rng, w=96, h=72):
    """A smooth random 'photo': low-frequency colour noise, upsampled."""
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)


def _hash_file(path, size=32):
    return phash(load_image(path, size, 3)[None])[0]


@pytest.mark.parametrize("size", [16, 32, 48])
def test_phash_keeps_edited_copies_close_and_different_images_apart(tmp_path, size):
    # size: the model input the hash is taken from; below 32 it comes from the decoded image
    rng = np.random.default_rng(0)
    hashes, copies = [], []
    for n in range(24):
        im = _photo(rng)
        im.save(tmp_path / f"{n}.png")
        im.save(tmp_path / f"{n}_q30.jpg", quality=30)
        im.resize((48, 36), Image.Resampling.LANCZOS).save(tmp_path / f"{n}_half.png")
        im.crop((2, 2, 94, 70)).save(tmp_path / f"{n}_crop.png")  # 96% of each side
        h = _hash_file(tmp_path / f"{n}.png", size)
        hashes.append(h)
        copies += [int(hamming(h, _hash_file(tmp_path / f"{n}_{e}", size))) for e in ("q30.jpg", "half.png",
                                                                                      "crop.png")]
    d = hamming_matrix(np.stack(hashes), np.stack(hashes))[np.triu_indices(24, 1)]
    copies = np.array(copies).reshape(-1, 3)
    assert copies[:, :2].max() <= 6 and copies[:, 2].max() <= CONFIRM, copies  # re-encoded, resized; cropped
    assert d.min() > CONFIRM and 26 <= d.mean() <= 38, (d.min(), d.mean())


def test_phash_shapes():
    assert phash(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, 8)
    grey = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 1), dtype=np.uint8)
    assert phash(grey).dtype == np.uint8 and phash(grey).shape == (5, 8)
    # grey stored as one channel or as three equal channels hashes the same
    np.testing.assert_array_equal(phash(grey), phash(np.repeat(grey, 3, axis=-1)))
    with pytest.raises(ValueError, match="images must be"):
        phash(np.zeros((2, 32, 32), np.uint8))


@pytest.mark.parametrize("radius,max_pairs,close", [(0, 1 << 22, 10), (2, 1 << 22, -1), (2, 50, 10), (3, 7, 4)])
def test_near_duplicates_match_brute_force(radius, max_pairs, close):
    # few distinct codes (many items share one) and perceptual hashes in families: the verified
    # graph differs from the code graph; tiny max_pairs runs the chunked and sliced paths; close
    # adds pairs of nearly equal hashes whose 32-bit codes are within 8 bits
    rng = np.random.default_rng(radius + max_pairs)
    n = 400
    code_centres = rng.integers(0, 2, (6, 32))
    codes = pack(code_centres[rng.integers(0, 6, n)] ^ (rng.random((n, 32)) < 0.03))
    families = rng.integers(0, 2, (40, 64))
    hashes = pack(families[rng.integers(0, 40, n)] ^ (rng.random((n, 64)) < 0.1))
    codes, hashes = np.vstack([codes, codes[:60]]), np.vstack([hashes, hashes[:60]])  # exact copies too
    got = near_duplicates(codes, radius, hashes, confirm=12, close=close, max_pairs=max_pairs)
    assert got.dtype == np.int64 and (np.diff(np.bincount(got)) <= 0).all()
    s, h = hamming_matrix(codes, codes), hamming_matrix(hashes, hashes)
    joined = ((s <= radius) & (h <= 12)) | ((h <= close) & (s <= 8))
    assert partition(got) == partition(components_reference(joined))
    if close == 10:  # the second source matters here
        assert partition(got) != partition(near_duplicates(codes, radius, hashes, confirm=12, close=-1))


def test_near_duplicates_without_hashes_are_radius_components():
    rng = np.random.default_rng(3)
    codes = pack(rng.integers(0, 2, (50, 16)))
    from hashae import cluster
    assert partition(near_duplicates(codes, 3)) == partition(cluster(codes, "radius", radius=3))
    with pytest.raises(ValueError, match="perceptual hashes"):
        near_duplicates(codes, 1, np.zeros((49, 8), np.uint8))


def _store(path, codes, hashes):
    n = len(codes)
    items = Items([f"{i}.jpg" for i in range(n)], np.zeros(n), np.zeros(n), codes, hashes)
    write_store(str(path), StoreContents(bits=codes.shape[1] * 8, items=items))


def test_duplicates_drop_lookalikes_that_share_a_code(tmp_path):
    # 0 and 1 share a code and a picture; 2 shares their code but is another picture; 3 is alone
    codes = np.array([[1, 2], [1, 2], [1, 2], [200, 100]], np.uint8)
    a, b = np.zeros(8, np.uint8), np.full(8, 0x0F, np.uint8)
    edited = a.copy()
    edited[0] = 0x3F  # 6 bits: more than CLOSE, so only the code radius pairs 0 and 1
    _store(tmp_path / "c.h5", codes, np.stack([a, edited, b, a]))
    with Collection.open(tmp_path / "c.h5") as c:
        assert c.duplicates() == [["0.jpg", "1.jpg"]]
        assert c.duplicates(verify=False) == [["0.jpg", "1.jpg", "2.jpg"]]
        assert c.duplicates(radius=0) == [["0.jpg", "1.jpg"]]
        # confirm: the perceptual bits copies may differ in (0 and 1 differ in 6, 2 in 32)
        assert c.duplicates(confirm=5) == []
        assert c.duplicates(confirm=6) == [["0.jpg", "1.jpg"]]
        assert c.duplicates(confirm=32) == [["0.jpg", "1.jpg", "2.jpg"]]
        with pytest.raises(ValueError, match="confirm must be"):
            c.duplicates(confirm=65)


def test_nearly_equal_hashes_pair_up_when_an_edit_moved_the_codes():
    # pairs of items with 16-bit codes: the radius is 1; a hash-only pair needs hashes within
    # CLOSE bits and codes within 16 // 4 = 4 bits
    from hashae.search.duplicates import CLOSE

    def joined(code_bits, hash_bits, **kw):
        codes = np.array([[0, 0], [(1 << code_bits) - 1, 0]], np.uint8)
        hashes = np.zeros((2, 8), np.uint8)
        hashes[1, 0] = (1 << hash_bits) - 1
        return len(np.unique(near_duplicates(codes, 1, hashes, **kw))) == 1

    assert joined(3, CLOSE) and joined(4, 0)
    assert not joined(5, 0)  # the codes tell them apart
    assert not joined(3, CLOSE + 2)  # hashes close enough to confirm, not to pair on their own
    assert not joined(3, CLOSE, close=-1) and joined(3, CLOSE + 2, close=CLOSE + 2)
    assert joined(1, CLOSE + 2)  # within the radius, CONFIRM applies


def test_collection_from_codes_warns_and_groups_by_codes(tmp_path):
    codes = np.array([[1, 2], [1, 2], [9, 9]], np.uint8)
    with Collection.create(tmp_path / "c.h5", codes, ["a", "b", "c"]) as c:
        assert c.phash is None
        with pytest.warns(UserWarning, match="no perceptual hashes"):
            assert c.duplicates() == [["a", "b"]]


def test_collection_from_codes_and_hashes(tmp_path):
    images = np.random.default_rng(2).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    images[1] = images[0]
    codes = np.array([[1, 2], [1, 2], [1, 2]], np.uint8)
    with Collection.create(tmp_path / "c.h5", codes, ["a", "b", "c"], phash=phash(images)) as c:
        np.testing.assert_array_equal(c.phash, phash(images))
        assert c.duplicates() == [["a", "b"]]
    with pytest.raises(ValueError, match="8 bits, expected 64"):
        Collection.create(tmp_path / "d.h5", codes, ["a", "b", "c"], phash=np.zeros((3, 1), np.uint8))


@pytest.mark.parametrize("dropped", [("phash",), ("phash_mirror", "dhash"), ("phash_centre", "dhash_centre")])
def test_reindex_adds_hashes_to_an_older_store(trained_store, sample_dir, tmp_path, dropped):
    # a store written before perceptual hashes, with the pHash alone (the earlier rule), or
    # without the centre's hashes (before 2026-11-28)
    store = tmp_path / "old.h5"
    with Collection.open(trained_store) as base:
        Collection(store).index(str(sample_dir), model=base.model, workers=0, progress=False)
    with Collection.open(store) as c:
        codes, every = c.codes, c.perceptual
        assert every is not None and len(every) == len(codes)
    with h5py.File(store, "a") as f:
        for name in dropped:
            del f[f"items/{name}"]
    with Collection.open(store) as c:
        assert not set(c.info()["optional"]) & {f"/items/{name}" for name in dropped}
        if "phash_centre" in dropped:  # ranking and duplicates go on with the whole picture's
            assert not c.perceptual.has_centre and c.query([str(sample_dir / c.paths()[3])], k=1)[0]["hits"]
        else:
            assert c.perceptual is None and (c.phash is None) == ("phash" in dropped)
    with pytest.warns(UserWarning, match=f"its {len(codes)} unchanged items are encoded once more, to add "):
        report = Collection(store).index(str(sample_dir), workers=0, progress=False)
    assert report.indexed == report.upgraded == len(codes)  # re-encoded once, with the store's own model
    assert f"({len(codes)} of them to upgrade the store)" in str(report)
    with Collection.open(store) as c:
        stored = {"/items/error", "/items/stats", "/items/residual"}
        assert {f"/items/{name}" for name in ALL_FIELDS} | stored == set(c.info()["optional"])
        np.testing.assert_array_equal(c.codes, codes)
        for name in ALL_FIELDS:
            np.testing.assert_array_equal(getattr(c.perceptual, name), getattr(every, name))


@pytest.mark.parametrize("shape", [(2, 8), (3, 4)])  # rows other than /codes, bytes other than 8
def test_damaged_phash_is_refused(tmp_path, shape):
    _store(tmp_path / "c.h5", np.zeros((3, 2), np.uint8), np.zeros((3, 8), np.uint8))
    with h5py.File(tmp_path / "c.h5", "a") as f:
        del f["items/phash"]
        f["items/phash"] = np.zeros(shape, np.uint8)
    with pytest.raises(StoreError, match="phash"):
        Collection.open(tmp_path / "c.h5")


def test_duplicates_cli_verifies_and_warns(tmp_path):
    import json

    from click.testing import CliRunner

    from hashae.cli import main
    codes = np.array([[1, 2], [1, 2], [1, 2], [200, 100]], np.uint8)
    a, b = np.zeros(8, np.uint8), np.full(8, 0x0F, np.uint8)
    _store(tmp_path / "c.h5", codes, np.stack([a, a, b, a]))
    run = CliRunner().invoke
    r = run(main, ["duplicates", "--store", str(tmp_path / "c.h5"), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout) == [{"cluster": 0, "paths": ["0.jpg", "1.jpg"]}]
    r = run(main, ["duplicates", "--store", str(tmp_path / "c.h5"), "--json", "--no-verify"])
    assert json.loads(r.stdout) == [{"cluster": 0, "paths": ["0.jpg", "1.jpg", "2.jpg"]}]
    r = run(main, ["duplicates", "--store", str(tmp_path / "c.h5"), "--json", "--confirm", "40"])
    assert json.loads(r.stdout) == [{"cluster": 0, "paths": ["0.jpg", "1.jpg", "2.jpg"]}]
    r = run(main, ["duplicates", "--store", str(tmp_path / "c.h5"), "--confirm", "-1"])
    assert r.exit_code == 1 and r.stderr.startswith("Error:") and "confirm" in r.stderr
    Collection.create(tmp_path / "bare.h5", codes, ["w", "x", "y", "z"]).close()
    r = run(main, ["duplicates", "--store", str(tmp_path / "bare.h5"), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout) == [{"cluster": 0, "paths": ["w", "x", "y"]}]
    assert "Warning:" in r.stderr and "no perceptual hashes" in r.stderr and len(r.stderr.splitlines()) == 1


# ---------------------------------------------------------------- mirrored pHash, dHash, the full rule
def test_mirror_hashes_match_the_mirrored_picture():
    from hashae.ingest.perceptual import perceptual_hashes
    images = np.random.default_rng(4).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    h, m = perceptual_hashes(images), perceptual_hashes(images[:, :, ::-1])
    np.testing.assert_array_equal(h.phash_mirror, m.phash)
    np.testing.assert_array_equal(h.dhash_mirror, m.dhash)  # derived, exact without equal neighbours
    assert hamming(h.phash, m.phash).min() > 12  # a mirror is far from the picture by pHash alone
    both = perceptual_hashes(np.concatenate([images, images[:, :, ::-1]]))
    a, b = np.arange(6), np.arange(6) + 6
    assert (both.distance(a, b) == 0).all()  # ... and no distance at all, either way round
    rest = np.array([(i, j) for i in range(12) for j in range(12) if i % 6 != j % 6])
    d = both.distance(rest[:, 0], rest[:, 1])
    np.testing.assert_array_equal(d, both.distance(rest[:, 1], rest[:, 0]))
    assert d.min() > 30


def test_dhash_is_colour_free():
    from hashae.ingest.perceptual import dhash
    rgb = np.random.default_rng(5).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    luma = np.rint(rgb @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)[..., None]
    assert hamming(dhash(rgb), dhash(luma)).max() <= 2  # only rounding to 8 bits differs
    np.testing.assert_array_equal(dhash(luma), dhash(np.repeat(luma, 3, axis=-1)))


def _random_hashes(rng, n, families=30, noise=0.06):
    from hashae.ingest.perceptual import Perceptual
    base = rng.integers(0, 2, (families, 3, 64))
    pick = base[rng.integers(0, families, n)] ^ (rng.random((n, 3, 64)) < noise)
    return Perceptual(pack(pick[:, 0]), pack(pick[:, 1]), pack(pick[:, 2]))


@pytest.mark.parametrize("radius,max_pairs,close,wide_items,centre", [
    (2, 1 << 22, 4, None, False), (4, 40, 4, None, False), (3, 1 << 22, -1, None, False), (2, 1 << 22, 4, 100, False),
    (2, 1 << 22, 4, None, True), (4, 40, 4, 100, True), (3, 1 << 22, -1, None, True)])
def test_full_rule_matches_brute_force(radius, max_pairs, close, wide_items, centre, monkeypatch):
    # wide_items: fewer distinct dHashes than the collection has, so the narrower dHash search;
    # centre: the items' centre hashes too, a tenth of the items planted as crops of another
    # (their whole picture's hashes are near that item's centre's) and a tenth of the rest as
    # turned copies (their centre's hashes near that item's centre's, their whole picture's not)
    import hashae.search.duplicates as dup
    from hashae.search.duplicates import CENTRE_MARGIN, CENTRES_MARGIN, CLOSE, DHASH_CLOSE, PERCEPTUAL
    if wide_items is not None:
        monkeypatch.setattr(dup, "DHASH_WIDE_ITEMS", wide_items)
    rng = np.random.default_rng(6)
    n = 300
    centres = rng.integers(0, 2, (8, 64))
    codes = pack(centres[rng.integers(0, 8, n)] ^ (rng.random((n, 64)) < 0.04))
    hashes = _random_hashes(rng, n)
    keep = rng.random(n) < 0.2  # a fifth are exact copies of another item, mirrored half the time
    src = rng.integers(0, n, n)
    from hashae.ingest.perceptual import Perceptual
    flip = rng.random(n) < 0.5
    ph = np.where(keep[:, None], np.where(flip[:, None], hashes.phash_mirror[src], hashes.phash[src]), hashes.phash)
    pm = np.where(keep[:, None], np.where(flip[:, None], hashes.phash[src], hashes.phash_mirror[src]), hashes.phash_mirror)
    dh = np.where(keep[:, None], np.where(flip[:, None], hashes.dhash_mirror[src], hashes.dhash[src]), hashes.dhash)
    if centre:
        inner = _random_hashes(rng, n, families=n, noise=0)  # each centre a picture of its own
        crop = ~keep & (rng.random(n) < 0.1)
        near = lambda whole, h: np.where(crop[:, None], h[src] ^ pack(rng.random((n, 64)) < 0.015), whole)  # noqa: E731
        ph, dh = near(ph, inner.phash), near(dh, inner.dhash)  # pm stays: a crop's mirror pHash is its own
        turn = ~keep & ~crop & (rng.random(n) < 0.1)
        turned = lambda h: np.where(turn[:, None], h[src] ^ pack(rng.random((n, 64)) < 0.015),  # noqa: E731
                                    h)
        hashes = Perceptual(ph, pm, dh, turned(inner.phash), turned(inner.dhash))
    else:
        hashes = Perceptual(ph, pm, dh)
    got = near_duplicates(codes, radius, hashes, close=close, max_pairs=max_pairs)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    i, j = i.ravel(), j.ravel()
    code = hamming(codes[i], codes[j])
    seen = hashes.distance(i, j)
    if centre:
        seen = np.minimum(seen, np.minimum(hashes.centre_distance(i, j, hashes),
                                           hashes.centre_distance(j, i, hashes)) + CENTRE_MARGIN)
        both = hamming(hashes.phash_centre[i], hashes.phash_centre[j]) + \
            hamming(hashes.dhash_centre[i], hashes.dhash_centre[j])
        seen = np.minimum(seen, both + CENTRES_MARGIN)
    np.testing.assert_array_equal(dup.perceptual_distance(hashes, i, j), seen)  # the D that keep_plan reports
    candidate = code <= radius
    if close >= 0:
        wide = DHASH_CLOSE if wide_items is None else CLOSE
        for key, mirror, r in ((hashes.phash, hashes.phash_mirror, close), (hashes.dhash, hashes.dhash_mirror, wide)):
            candidate |= (hamming(key[i], key[j]) <= r) | (hamming(mirror[i], key[j]) <= r) | \
                (hamming(key[i], mirror[j]) <= r)
        if centre:
            for key, inner, r in ((hashes.phash, hashes.phash_centre, close),
                                  (hashes.dhash, hashes.dhash_centre, wide)):
                candidate |= (hamming(inner[i], key[j]) <= r) | (hamming(key[i], inner[j]) <= r) | \
                    (hamming(inner[i], inner[j]) <= r)
    accept = (seen <= PERCEPTUAL // 2) | ((seen <= PERCEPTUAL) & (code <= 16)) | (seen + code <= PERCEPTUAL + 6)
    joined = (candidate & accept).reshape(n, n)
    assert partition(got) == partition(components_reference(joined | joined.T))
    assert len(np.unique(got)) < n - 20  # the planted copies were found
    if centre and close >= 0:  # ... the crops by their originals' centres, which they need, and the turned copies
        assert np.mean(got[crop] == got[src[crop]]) > 0.9 and np.mean(got[turn] == got[src[turn]]) > 0.9
        alone = near_duplicates(codes, radius, Perceptual(ph, pm, dh), close=close, max_pairs=max_pairs)
        assert np.mean(alone[crop] == alone[src[crop]]) < 0.5 and np.mean(alone[turn] == alone[src[turn]]) < 0.5


def test_mirrored_and_greyscale_copies_join_their_originals(tmp_path):
    """Pictures decoded as indexing does: a mirrored copy (codes 1 bit away, pHash about half
    its bits away) and a greyscale copy (codes far apart: they see colour) each join their
    original; the pHash-only rule of earlier collections misses the mirror."""
    from hashae.ingest.perceptual import perceptual_hashes
    rng = np.random.default_rng(7)
    files = []
    for k in range(12):
        im = _photo(rng)
        im.save(tmp_path / f"{k}.png")
        ImageOps.mirror(im).save(tmp_path / f"{k}_flip.png")
        ImageOps.grayscale(im).save(tmp_path / f"{k}_grey.png")
        files += [f"{k}.png", f"{k}_flip.png", f"{k}_grey.png"]
    images = np.stack([load_image(tmp_path / f, 32, 3) for f in files])
    hashes = perceptual_hashes(images)
    centres = rng.integers(0, 2, (12, 64))
    bits = np.repeat(centres, 3, axis=0)
    bits[1::3, :1] ^= 1  # the mirror's code: 1 bit away
    bits[2::3, :30] ^= 1  # the greyscale copy's: 30 bits away
    codes = pack(bits)
    with Collection.create(tmp_path / "c.h5", codes, files, phash=hashes) as c:
        groups = sorted(sorted(g) for g in c.duplicates())
        assert groups == sorted(sorted([f"{k}.png", f"{k}_flip.png", f"{k}_grey.png"]) for k in range(12))
        plan = c.keep_plan(c.duplicates()[:1])
        assert all(d["perceptual"] <= 4 for d in plan[0]["distances"])
    with Collection.create(tmp_path / "old.h5", codes, files, phash=hashes.phash) as c:
        assert all(not any("_flip" in p for p in g) for g in c.duplicates())
