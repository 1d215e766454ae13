"""Two-stage ranking (search/rank.py): the shortlist, the expected distance, the copy bonus,
and edited copies found first through the Python API and the CLI."""
import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageEnhance

from conftest import SMALL
from hashae import Collection, HasherConfig
from hashae.cli import main
from hashae.codes import hamming, pack, unpack
from hashae.ingest.perceptual import Perceptual, perceptual_hashes
from hashae.search import HammingIndex
from hashae.search.rank import SHORTLIST, STATS_WEIGHT, Queries, Ranker, Scoring, expected_distance, stats_weight_for

BITS = 32


def _logits_of(codes: np.ndarray, rng, margin: float = 6.0) -> np.ndarray:
    """Code-layer inputs whose signs give ``codes``, with varied confidence."""
    signs = unpack(codes).astype(np.float32) * 2 - 1
    return signs * rng.uniform(0.1, margin, signs.shape).astype(np.float32)


def _hashes(n: int, rng) -> Perceptual:
    h = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    return Perceptual(h, rng.integers(0, 256, (n, 8), dtype=np.uint8), rng.integers(0, 256, (n, 8), dtype=np.uint8))


def test_expected_distance_is_the_hamming_distance_for_certain_bits():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (50, BITS // 8), dtype=np.uint8)
    logits = _logits_of(codes[:1], rng) * 1000  # far beyond the noise: every bit certain
    np.testing.assert_allclose(expected_distance(logits[0], codes, 4.0), hamming(codes, codes[:1]).ravel(), atol=1e-6)
    # an uncertain bit counts about half, whichever way the item has it
    soft = logits[0].copy()
    soft[3] = 0.0
    other_bits = hamming(codes, codes[:1]).ravel() - (unpack(codes)[:, 3] != unpack(codes[:1])[0, 3])
    np.testing.assert_allclose(expected_distance(soft, codes, 4.0), other_bits + 0.5, atol=1e-6)


def test_an_exact_duplicate_stays_first():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, (2000, BITS // 8), dtype=np.uint8)
    hashes = _hashes(2000, rng)
    ranker = Ranker(HammingIndex.from_codes(codes), hashes, Scoring())
    rows = rng.choice(2000, 40, replace=False)
    q_hashes = Perceptual(hashes.phash[rows], hashes.phash_mirror[rows], hashes.dhash[rows])
    for q_h in (None, q_hashes):
        ranked = ranker.knn(Queries(codes[rows], _logits_of(codes[rows], rng), q_h), 5)
        for row, r in zip(rows, ranked):
            assert r.distance[0] == 0 and r.score[0] == r.score.min()
            assert r.ids[0] == row or q_h is None  # with hashes, the picture itself, not a code twin
    # a near copy by its hashes (8 bits off) with a code 6 bits away comes before a code twin
    # that is a different picture; the item itself still comes first
    q = rows[0]
    copy_row, twin_row = rows[1], rows[2]
    codes2 = codes.copy()
    codes2[twin_row] = codes[q]
    codes2[copy_row] = codes[q] ^ np.array([0b111111] + [0] * (BITS // 8 - 1), np.uint8)
    ph = hashes.phash.copy()
    ph[copy_row] = hashes.phash[q] ^ np.array([0xFF] + [0] * 7, np.uint8)
    dh = hashes.dhash.copy()
    dh[copy_row] = hashes.dhash[q]
    stored = Perceptual(ph, hashes.phash_mirror, dh)
    ranker = Ranker(HammingIndex.from_codes(codes2), stored, Scoring())
    [r] = ranker.knn(Queries(codes2[[q]], _logits_of(codes2[[q]], rng), Perceptual(ph[[q]], hashes.phash_mirror[[q]],
                                                                                      dh[[q]])), 3)
    assert list(r.ids[:2]) == [q, copy_row] and r.distance[1] == 6


def test_the_centre_hashes_bring_a_cropped_copy_first():
    # a cropped copy: its whole picture's hashes are as far from its original's as anything
    # else, but equal (2 bits off) to the hashes of the original's centre, and its code moved
    # past the Hamming shortlist
    rng = np.random.default_rng(3)
    n, item = 600, 7
    codes = rng.integers(0, 256, (n, BITS // 8), dtype=np.uint8)
    whole = _hashes(n, rng)
    centre = _hashes(n, rng)
    stored = Perceptual(whole.phash, whole.phash_mirror, whole.dhash, centre.phash, centre.dhash)
    query_code = codes[[item]] ^ np.array([[0xFF, 0xFF, 0x0F, 0]], np.uint8)  # 20 bits away
    query_phash = centre.phash[[item]].copy()
    query_phash[0, 0] ^= 3
    query = Queries(query_code, _logits_of(query_code, rng),
                    Perceptual(query_phash, rng.integers(0, 256, (1, 8), dtype=np.uint8), centre.dhash[[item]]))
    index = HammingIndex.from_codes(codes)
    assert item not in index.search(query_code, SHORTLIST)[1][0]
    [found] = Ranker(index, stored, Scoring()).knn(query, 5)
    assert found.ids[0] == item and found.distance[0] == 20
    [missed] = Ranker(index, Perceptual(whole.phash, whole.phash_mirror, whole.dhash), Scoring()).knn(query, 5)
    assert item not in missed.ids  # the whole pictures' hashes alone do not see it


def test_centre_hashes_match_a_cropped_picture():
    # 10% cropped (half on each side) and resized back: the whole picture's hashes move by
    # 16-30 bits of 128, the centre's by a few, and still tell the 100 pictures apart
    rng = np.random.default_rng(0)
    pics = [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((96, 96), Image.Resampling.BICUBIC)
            for _ in range(100)]
    crops = [p.crop((5, 5, 91, 91)).resize((96, 96), Image.Resampling.BILINEAR) for p in pics]
    mirrored = [c.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for c in crops]
    stored, *copies = (perceptual_hashes(np.stack([np.asarray(p.resize((32, 32), Image.Resampling.BILINEAR))
                                                   for p in ps])) for ps in (pics, crops, mirrored))
    n, own = len(pics), np.arange(len(pics))
    for edited in copies:
        whole = np.stack([stored.distance(own, np.full(n, q), edited) for q in range(n)])
        centre = np.stack([stored.centre_distance(own, np.full(n, q), edited) for q in range(n)])
        assert np.median(whole[own, own]) > 12 and centre[own, own].max() <= 8
        assert (centre.argmin(axis=1) == own).all()


def test_the_centre_is_pillows_resize_of_the_central_box():
    from hashae.ingest.perceptual import CENTRE, _centre32
    grey = np.random.default_rng(1).uniform(0, 255, (4, 32, 32))
    edge = 32 * (1 - CENTRE) / 2
    pillow = [np.asarray(Image.fromarray(g.astype(np.float32), "F").resize(
        (32, 32), Image.Resampling.BILINEAR, box=(edge, edge, 32 - edge, 32 - edge))) for g in grey]
    np.testing.assert_allclose(_centre32(grey), np.stack(pillow), atol=1e-3)


@pytest.mark.parametrize("n", [SHORTLIST + 100, 2 * SHORTLIST + 100])  # ties ending in the search, or past it
def test_the_shortlist_is_widened_rather_than_cutting_ties(n):
    rng = np.random.default_rng(2)
    query = rng.integers(0, 256, (1, BITS // 8), dtype=np.uint8)
    # every item is one bit from the query: FAISS's top SHORTLIST by id would end before the
    # last, the only one whose flipped bit is the query's least certain
    flips = rng.integers(0, BITS - 1, n)
    flips[-1] = BITS - 1
    bits = np.repeat(unpack(query), n, axis=0)
    bits[np.arange(n), flips] ^= 1
    codes = pack(bits)
    logits = (unpack(query).astype(np.float32) * 2 - 1) * 8
    logits[0, BITS - 1] *= 0.01
    ranker = Ranker(HammingIndex.from_codes(codes))
    [r] = ranker.knn(Queries(query, logits), 3)
    assert r.ids[0] == n - 1 and r.distance[0] == 1
    [plain] = ranker.knn(Queries(query, logits), 3, hamming_only=True)
    assert list(plain.ids) == [0, 1, 2] and plain.score is None


def test_radius_search_ranks_within_the_radius_only():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, (500, BITS // 8), dtype=np.uint8)
    ranker = Ranker(HammingIndex.from_codes(codes))
    queries = Queries(codes[:3], _logits_of(codes[:3], rng))
    for q, (r, plain) in enumerate(zip(ranker.within(queries, 12), ranker.within(queries, 12, hamming_only=True))):
        assert set(r.ids) == set(plain.ids) and np.all(r.distance <= 12) and r.ids[0] == q
        assert np.all(np.diff(r.score) >= 0) and np.all(np.diff(plain.distance) >= 0)


def test_the_statistics_term_orders_codes_by_their_pictures_statistics():
    # three items share the query's code; the one whose channel statistics are the query's
    # comes first, an item without statistics scores the shortlist's median, and weight 0
    # (grey pictures) leaves the order to the code
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 256, (400, BITS // 8), dtype=np.uint8)
    codes[[10, 11, 12]] = codes[0] ^ np.array([1, 0, 0, 0], np.uint8)
    stats = rng.normal(size=(400, 13)).astype(np.float32)
    stats[10] = np.nan  # indexed before statistics were stored
    query = Queries(codes[[10]], _logits_of(codes[[10]], rng) * 1000, None, stats[[12]] + 1e-4)
    index = HammingIndex.from_codes(codes)
    [by_code] = Ranker(index, None, Scoring(), stats).knn(query, 5)
    [by_stats] = Ranker(index, None, Scoring(stats_weight=STATS_WEIGHT), stats).knn(query, 5)
    assert list(by_code.ids[:3]) == [10, 11, 12]  # tied codes, in id order
    assert by_stats.ids[0] == 12 and by_stats.score[0] < 0.01
    np.testing.assert_allclose(by_stats.score[list(by_stats.ids).index(10)], STATS_WEIGHT, atol=1e-3)
    # the twin with other statistics pays for them, and the hits stay in score order
    assert by_stats.score[list(by_stats.ids).index(11)] > 0.5 and np.all(np.diff(by_stats.score) >= 0)
    assert stats_weight_for(3) == STATS_WEIGHT and stats_weight_for(1) == 0
    # a copy by its perceptual hashes (item 11's are the query's) pays none of it: an edit
    # moves a copy's statistics
    hashes = _hashes(400, rng)
    copy = Queries(query.codes, query.logits, Perceptual(*(getattr(hashes, f)[[11]] for f in ("phash", "phash_mirror",
                                                                                                "dhash"))), query.stats)
    [without] = Ranker(index, hashes, Scoring(), stats).knn(copy, 5)
    [weighed] = Ranker(index, hashes, Scoring(stats_weight=STATS_WEIGHT), stats).knn(copy, 5)
    assert without.ids[0] == weighed.ids[0] == 11 and weighed.score[0] == pytest.approx(without.score[0])


def test_a_query_reads_the_statistics_its_collection_stored(pictures):
    # a stored picture queried again brings statistics equal to its stored ones, so the term is
    # 0 for itself; the colour collection's ranker weighs them
    folder, store = pictures
    with Collection.open(store) as c:
        files = [str(folder / p) for p in c.paths()[:6]]
        queries = c.queries(files)
        assert c.ranker.scoring.stats_weight == STATS_WEIGHT and c.ranker.stats is not None
        np.testing.assert_allclose(queries.stats, c.ranker.stats[:6], atol=1e-5)
        assert [r["hits"][0]["path"] for r in c.query(files, k=3)] == c.paths()[:6]


def _edited(src, dest):
    """Rotated 4 degrees, 10% cropped, resized to 80%, brightened 1.2x, saved as JPEG quality 50."""
    with Image.open(src) as im:
        im = im.convert("RGB")
        im = im.rotate(4, resample=Image.Resampling.BILINEAR)
        w, h = im.size
        im = im.crop((w // 20, h // 20, w - w // 20, h - h // 20)).resize((w * 4 // 5, h * 4 // 5))
        ImageEnhance.Brightness(im).enhance(1.2).save(dest, quality=50)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """60 distinct smooth colour pictures (unlike the sample's look-alike shapes, each one is a
    picture of its own) and a collection of them with a small model."""
    folder = tmp_path_factory.mktemp("pictures") / "pics"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(60):
        small = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
        Image.fromarray(small).resize((96, 96), Image.Resampling.BICUBIC).save(folder / f"pic_{i:02d}.png")
    store = folder.parent / "pics.h5"
    # a held-out tenth, as models trained before 2026-11-27: its codes leave a few edited copies
    # nearer another picture in plain Hamming order, which is what the ranking tests need (the
    # default, trained on all 60, places every copy right by Hamming distance alone), and no
    # feature bits, which also put every copy first by Hamming distance
    config = HasherConfig(bits=BITS, val_fraction=0.1, feature_bits=0, **SMALL)
    Collection(store).index(str(folder), config=config, workers=0, progress=False)
    return folder, store


def test_an_edited_copy_finds_its_original_first(pictures, tmp_path):
    folder, store = pictures
    originals = sorted(p.name for p in folder.iterdir())
    queries = [str(tmp_path / f"{name}.jpg") for name in originals]
    for name, q in zip(originals, queries):
        _edited(folder / name, q)
    with Collection.open(store) as c:
        results = c.query(queries, k=5)
        plain = c.query(queries, k=5, hamming_only=True)
    assert [r["hits"][0]["path"] for r in results] == originals
    assert all(set(h) == {"path", "distance", "score"} for r in results for h in r["hits"])
    assert all(set(h) == {"path", "distance"} for r in plain for h in r["hits"])
    # the CLI prints what the Python API returns, in both orders (it encodes one query at a
    # time, and torch's sums differ in the last float digits with the batch size)
    out = CliRunner().invoke(main, ["query", *queries[:5], "--store", str(store), "-k", "5", "--json"])
    assert out.exit_code == 0, out.output
    cli = json.loads(out.output)
    assert [[(h["path"], h["distance"]) for h in r["hits"]] for r in cli] == \
        [[(h["path"], h["distance"]) for h in r["hits"]] for r in results[:5]]
    assert np.allclose([h["score"] for r in cli for h in r["hits"]],
                       [h["score"] for r in results[:5] for h in r["hits"]], atol=2e-3)
    out = CliRunner().invoke(main, ["query", *queries[:5], "--store", str(store), "-k", "5", "--json",
                                    "--hamming-only"])
    assert json.loads(out.output) == plain[:5]


def test_similar_brings_a_stored_copy_first(pictures, tmp_path):
    # the stored item's hashes bring its edited copy before its code neighbours
    folder = tmp_path / "pics"
    shutil.copytree(pictures[0], folder)
    _edited(folder / "pic_07.png", folder / "zz_copy.jpg")
    store = tmp_path / "c.h5"
    with Collection.open(pictures[1]) as base:
        Collection(store).index(str(folder), model=base.model, workers=0, progress=False)
    with Collection.open(store) as c:
        hits = c.similar(c.paths().index("pic_07.png"), 3, exclude_self=True)
        assert hits[0].path == "zz_copy.jpg" and hits[0].score is not None


def test_classify_votes_in_the_ranked_order(pictures, tmp_path):
    # one picture per label: an edited copy takes its original's label only if its first hit is
    # the original, which the two-stage ranking gives and plain Hamming order does not always
    folder = tmp_path / "labelled"
    for p in sorted(pictures[0].iterdir()):
        (folder / p.stem).mkdir(parents=True)
        shutil.copy(p, folder / p.stem / p.name)
    queries = [str(tmp_path / f"{p.stem}.jpg") for p in sorted(pictures[0].iterdir())]
    for p, q in zip(sorted(pictures[0].iterdir()), queries):
        _edited(p, q)
    store = tmp_path / "labelled.h5"
    with Collection.open(pictures[1]) as base:
        Collection(store).index(str(folder), model=base.model, workers=0, progress=False)
    with Collection.open(store) as c:
        labels = [r["label"] for r in c.classify(queries, k=1)]
        plain = [hits[0].path.split("/")[0] for hits in c.search(queries, k=1, hamming_only=True)]
    truth = [os.path.splitext(os.path.basename(q))[0] for q in queries]
    assert labels == truth
    assert plain != truth  # the case is not one that Hamming order gets right anyway


def test_the_perceptual_weight_averages_the_perceptual_distance_into_the_score():
    # classify's vote reads the perceptual distance too: (expected distance + w * perceptual
    # bits scaled to the code length) / (1 + w); a perceptual copy whose code tied with others
    # comes before them, and weight 0 is search's score
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 256, (500, BITS // 8), dtype=np.uint8)
    hashes = _hashes(500, rng)
    query_code = codes[[3]] ^ np.array([[1, 0, 0, 0]], np.uint8)
    query_hashes = Perceptual(hashes.phash[[40]], hashes.phash_mirror[[40]], hashes.dhash[[40]])
    query = Queries(query_code, _logits_of(query_code, rng) * 1000, query_hashes)
    codes_tied = codes.copy()
    codes_tied[40] = codes[3] ^ np.array([2, 0, 0, 0], np.uint8)  # 2 bits from the query, as item 3 is 1
    ranker = Ranker(HammingIndex.from_codes(codes_tied), hashes, Scoring(copy_weight=0.0))
    [plain] = ranker.knn(query, 20)
    voting = ranker.with_scoring(Scoring(copy_weight=0.0, perceptual_weight=1.0))
    assert voting.codes is ranker.codes and voting.hashes is ranker.hashes and ranker.scoring.perceptual_weight == 0
    [weighed] = voting.knn(query, 20)
    assert voting._built["copies"] is ranker._built["copies"]  # the indexes the first search built, shared
    assert list(plain.ids[:2]) == [3, 40]  # the code alone: the nearer code first
    assert weighed.ids[0] == 40  # its hashes are the query's: 0 perceptual bits against about 64
    np.testing.assert_allclose(plain.score, plain.distance, atol=1e-4)
    seen = hashes.distance(weighed.ids, np.zeros(len(weighed.ids), np.int64), query.hashes)
    np.testing.assert_allclose(weighed.score, (weighed.distance + seen * BITS / 128) / 2, atol=1e-4)


@pytest.mark.parametrize("k", [1, 10])
def test_vector_queries_are_scored(k):
    rng = np.random.default_rng(4)
    codes = rng.integers(0, 256, (300, BITS // 8), dtype=np.uint8)
    ranked = Ranker(HammingIndex.from_codes(codes)).knn(Queries(codes[:2], _logits_of(codes[:2], rng)), k)
    assert all(len(r.ids) == k and r.score is not None and r.ids[0] == q for q, r in enumerate(ranked))
