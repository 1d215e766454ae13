"""What else the autoencoder knows: outliers by reconstruction error, a map, k-NN labels."""
from __future__ import annotations

import json
import os
import re
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hashae import Collection, HasherConfig, SemanticHasher
from hashae.cli import main
from hashae.codes import hamming_matrix
from hashae.ingest import load_image
from hashae.sample import make_sample
from hashae.search.outliers import (DEFAULT, METHODS, joint_evidence, neighbour_table, outlier_scores, standardised,
                                    statistics_norm)
from hashae.storage.items import STATS_WIDTH
from hashae.search.projection import embed_2d, grid_cells
from hashae.search.vote import knn_vote

from conftest import SMALL


# ---------------------------------------------------------------------------- pure functions
def test_neighbour_table_leaves_out_the_item_itself():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (300, 8), dtype=np.uint8)
    codes[7] = codes[3]  # an exact copy is a neighbour at distance 0
    dist, ids = neighbour_table(codes, k=5)
    assert not (ids == np.arange(300)[:, None]).any()
    assert dist[3, 0] == 0 and ids[3, 0] == 7
    full = hamming_matrix(codes, codes).astype(float)
    np.fill_diagonal(full, np.inf)
    np.testing.assert_array_equal(dist, np.sort(full, 1)[:, :5])


def test_neighbour_table_past_exact_max_uses_an_inverted_file_over_every_item():
    rng = np.random.default_rng(1)
    centres = rng.random((8, 64)) < 0.5
    bits = centres[rng.integers(0, 8, 600)] ^ (rng.random((600, 64)) < 0.05)
    codes = np.packbits(bits, axis=1)
    codes[11] = codes[500]  # an exact copy must be found whatever list it is in
    full = hamming_matrix(codes, codes).astype(float)
    np.fill_diagonal(full, np.inf)
    exact = np.sort(full, 1)[:, :4]
    dist, ids = neighbour_table(codes, k=4, exact_max=100, nprobe=2, seed=3)
    assert not (ids == np.arange(600)[:, None]).any() and (ids >= 0).all()
    assert dist[11, 0] == 0 and ids[11, 0] == 500 and ids[500, 0] == 11
    np.testing.assert_array_equal(full[np.arange(600)[:, None], ids], dist)  # each id at its distance
    assert (dist >= exact).all() and np.mean(dist == exact) > 0.9  # approximate: never shorter
    every_list = neighbour_table(codes, k=4, exact_max=100, nprobe=10_000, seed=3)[0]
    np.testing.assert_array_equal(every_list, exact)  # visiting every list is the exhaustive scan
    np.testing.assert_array_equal(neighbour_table(codes, k=4, exact_max=100, nprobe=2, seed=3)[1], ids)


def test_outlier_scores_rank_the_odd_item_first():
    rng = np.random.default_rng(2)
    base = rng.integers(0, 256, (1, 8), dtype=np.uint8)
    flips = rng.random((60, 64)) < 0.03  # 60 codes within a few bits of one another
    codes = np.packbits(np.unpackbits(base, axis=1) ^ flips, axis=1)
    codes[-1] = ~base[0]  # one code far from all
    error = rng.uniform(0.01, 0.02, 60)
    error[-1] = 0.05
    for method in METHODS:
        assert np.argmax(outlier_scores(error, codes, method)) == 59, method
    assert np.argmax(outlier_scores(None, codes, "combined")) == 59  # no errors: code distances
    with pytest.raises(ValueError, match="no reconstruction errors"):
        outlier_scores(None, codes, "error")


def test_perceptual_hashes_count_in_the_default_score():
    # errors and codes alike for every item: only the perceptual hashes tell item 59 apart
    rng = np.random.default_rng(3)
    codes = np.zeros((60, 8), np.uint8)
    error = np.full(60, 0.02)
    base = rng.integers(0, 256, (1, 8), dtype=np.uint8)
    phash = np.packbits(np.unpackbits(base, axis=1) ^ (rng.random((60, 64)) < 0.03), axis=1)
    phash[-1] = ~base[0]
    for method in ("union", "joint"):
        scores = outlier_scores(error, codes, method, phash=phash)
        assert np.argmax(scores) == 59 and (scores[:59] < scores[59]).all(), method
        assert np.ptp(outlier_scores(error, codes, method)) == 0, method  # without hashes: all tied
    assert DEFAULT == "joint"


def test_channel_statistics_count_in_the_default_score():
    # errors, codes and hashes alike for every item: only the statistics tell item 59 apart
    rng = np.random.default_rng(6)
    codes, phash = np.zeros((60, 8), np.uint8), np.zeros((60, 8), np.uint8)
    error = np.full(60, 0.02)
    stats = rng.normal(0.5, 0.05, (60, STATS_WIDTH)).astype(np.float32)
    stats[-1, :3] = 0.95  # a far brighter picture than the rest
    scores = outlier_scores(error, codes, phash=phash, stats=stats)
    assert np.argmax(scores) == 59 and (scores[:59] < scores[59]).all()
    assert np.ptp(outlier_scores(error, codes, phash=phash)) == 0  # without statistics: all tied
    assert np.argmax(statistics_norm(stats)) == 59
    assert np.ptp(outlier_scores(error, codes, "knn", stats=stats)) == 0  # only joint reads them


def test_the_linear_twins_residual_counts_in_the_default_score():
    # errors, codes, hashes and statistics alike for every item: only the residual tells item 59 apart
    codes, phash = np.zeros((60, 8), np.uint8), np.zeros((60, 8), np.uint8)
    error, stats = np.full(60, 0.02), np.full((60, STATS_WIDTH), 0.5, np.float32)
    residual = np.linspace(0.001, 0.002, 60)
    residual[-1] = 0.05
    scores = outlier_scores(error, codes, phash=phash, stats=stats, residual=residual)
    assert np.argmax(scores) == 59 and (scores[:59] < scores[59]).all()
    assert np.ptp(outlier_scores(error, codes, phash=phash, stats=stats)) == 0  # without it: all tied
    assert np.ptp(outlier_scores(error, codes, "knn", residual=residual)) == 0  # only joint reads it


def test_the_linear_twin_is_the_training_pixels_principal_subspace(tmp_path):
    import torch

    from hashae.model.network import HashNet
    rng = np.random.default_rng(4)
    # 200 grey pictures made of 3 patterns, plus a little noise: 3 directions hold nearly all
    patterns = rng.random((3, 16 * 16))
    images = (rng.random((200, 3)) @ patterns + rng.normal(0, 0.01, (200, 16 * 16))).reshape(200, 16, 16)
    images = (255 * images / images.max()).clip(0, 255).astype(np.uint8)
    cfg = HasherConfig(bits=16, image_size=16, channels=1, epochs=1, min_steps=2, pretrain_epochs=0, residual_dims=3)
    model = SemanticHasher(cfg).fit(images)
    twin = model.net.twin
    assert twin.shape == (3, 256)
    np.testing.assert_allclose((twin @ twin.T).numpy(), np.eye(3), atol=1e-5)
    x = torch.from_numpy(images[:, None].astype(np.float32) / 255)
    centred = (x - model.net.mean).flatten(1).double().numpy()
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # the exact principal directions
    np.testing.assert_allclose(np.abs(vt[:3] @ twin.double().numpy().T), np.eye(3), atol=1e-3)
    expected = ((centred - centred @ vt[:3].T @ vt[:3]) ** 2).mean(1)
    np.testing.assert_allclose(model.net.residual(x).numpy(), expected, rtol=1e-3, atol=1e-7)
    noise = rng.integers(0, 256, (5, 16, 16), dtype=np.uint8)
    out = model.encode_for_index(np.concatenate([images, noise]))
    assert out.residual.shape == (205,) and out.residual[200:].min() > 10 * out.residual[:200].max()
    assert model.encode_for_index(images, stats=False).residual is None
    assert model.config.residual_dims == 3
    model.save(tmp_path / "m.h5")  # kept with the weights
    np.testing.assert_allclose(SemanticHasher.load(tmp_path / "m.h5").encode_for_index(images).residual,
                               out.residual[:200], rtol=1e-5)
    none = SemanticHasher(cfg.replace(residual_dims=0)).fit(images)
    assert none.encode_for_index(images).residual is None and not hasattr(none.net, "twin")
    assert HashNet(cfg.replace(residual_dims=None).model).twin.shape == (32, 256)  # the default


def test_edge_disagreement_tells_channel_noise_from_pictures():
    import torch

    from hashae.model.statistics import edge_disagreement, stored_stats
    rng = np.random.default_rng(3)
    field = rng.random((41, 1, 24, 24)).astype(np.float32)
    # 40 pictures whose channels change together (one field, each channel its own gain and
    # offset) and one whose channels are independent noise: alike in every per-channel statistic
    gain, offset = rng.uniform(0.5, 1.0, (41, 3, 1, 1)), rng.uniform(0.0, 0.5, (41, 3, 1, 1))
    x = torch.from_numpy((field * gain + offset).astype(np.float32) / 1.5)
    x[40] = torch.from_numpy(rng.random((3, 24, 24)).astype(np.float32) * 0.75 + 0.1)
    d = edge_disagreement(x)
    assert (d[:40] < 1e-5).all() and 0.8 < d[40] < 1.2
    assert (edge_disagreement(x[:, :1]) == 0).all()  # one channel
    assert edge_disagreement(torch.full((2, 3, 8, 8), 0.5)).tolist() == [0.0, 0.0]  # flat
    assert edge_disagreement(torch.stack([x[0, 0], -x[0, 0], x[0, 0]])[None]).item() == pytest.approx(4 / 3)
    stats = stored_stats(x)
    assert stats.shape == (41, STATS_WIDTH)
    assert np.argmax(statistics_norm(stats)) == 40  # the disagreement sets it apart


def test_standardised_statistics_tolerate_constant_columns_and_unknown_rows():
    x = np.array([[1.0, 5.0, 0.0], [3.0, 5.0, 1.0], [np.nan, 5.0, 2.0], [2.0, 5.0, 3.0]])
    z = standardised(x)
    assert np.isfinite(z).all() and (z[2] == 0).all()  # an unknown row reads as typical
    assert (z[:, 1] == 0).all()  # a constant column adds nothing
    np.testing.assert_allclose(z[[0, 1, 3], 0], [-np.sqrt(1.5), np.sqrt(1.5), 0])


def test_joint_evidence_is_fishers_sum_over_percentile_ranks():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    b = np.array([4.0, 3.0, 2.0, 1.0])
    n = 4
    expected = -np.log(1 - np.arange(1, 5) / n + 0.5 / n) - np.log(1 - np.arange(4, 0, -1) / n + 0.5 / n)
    np.testing.assert_allclose(joint_evidence(a, b), expected)
    # far out on one signal counts: the top of either outranks the middle of both
    scores = joint_evidence(a, b)
    assert scores[[0, 3]].min() > scores[[1, 2]].max()


def test_knn_vote_counts_ties_and_skips_unlabelled():
    labels = np.array([0, 1, 1, -1, 0])
    ids = np.array([[3, 0, 1, 2, 4, -1]])
    dist = np.array([[0, 1, 2, 2, 5, 0]])
    # k=2: item 3 is unlabelled; 0 (d=1) and 1 (d=2) vote, and 2 ties with the 2nd at d=2
    v = knn_vote(dist, ids, labels, 2, k=2, bits=8, power=1)
    assert v.counts.tolist() == [[1, 2]] and v.label[0] == 1  # two votes of 0.875 beat the nearest's 1
    v = knn_vote(dist, ids, labels, 2, k=2, bits=8, power=8)
    assert v.counts.tolist() == [[1, 2]] and v.label[0] == 0  # the nearest weighs most: 1 > 2 x 0.34
    v = knn_vote(dist, ids, labels, 2, k=1, bits=8)
    assert v.counts.tolist() == [[1, 0]] and v.label[0] == 0
    none = knn_vote(np.array([[0]]), np.array([[-1]]), labels, 2, k=3, bits=8)
    assert none.label[0] == -1 and none.counts.sum() == 0


def test_knn_vote_ignores_an_offset_common_to_every_score():
    """A ranking's scores carry offsets that say nothing of the label (a colour collection's
    statistics term, a copy bonus): the vote weighs each neighbour by how much farther it is
    than the nearest, so the same offset on every score changes no weight and no label."""
    labels = np.array([0, 1, 1])
    ids = np.array([[0, 1, 2]])
    dist = np.array([[1.0, 2.0, 2.0]])
    plain = knn_vote(dist, ids, labels, 2, k=3, bits=8, power=1)
    shifted = knn_vote(dist + 5.5, ids, labels, 2, k=3, bits=8, power=1)
    assert plain.label[0] == shifted.label[0] == 1  # 2 x 0.875 beat 1; from 0: 2 x 0.0625 lose to 0.1875
    np.testing.assert_allclose(shifted.weights, plain.weights)
    below = knn_vote(dist - 4, ids, labels, 2, k=3, bits=8, power=1)  # a copy bonus takes scores below 0
    np.testing.assert_allclose(below.weights, plain.weights)


def test_map_cells_are_distinct_and_seeded():
    rng = np.random.default_rng(4)
    codes = np.concatenate([np.packbits(np.unpackbits(rng.integers(0, 256, (1, 8), dtype=np.uint8), axis=1)
                                        ^ (rng.random((40, 64)) < 0.05), axis=1) for _ in range(3)])
    xy = embed_2d(codes, seed=0)
    assert xy.shape == (120, 2) and xy.min() >= 0 and xy.max() <= 1
    np.testing.assert_array_equal(xy, embed_2d(codes, seed=0))
    cells, side = grid_cells(xy)
    assert side * side >= 120 and len({tuple(c) for c in cells}) == 120
    # the three groups of codes land in three separate regions of the map
    centres = np.array([xy[g * 40:(g + 1) * 40].mean(0) for g in range(3)])
    spread = max(np.linalg.norm(xy[g * 40:(g + 1) * 40] - centres[g], axis=1).mean() for g in range(3))
    gaps = [np.linalg.norm(centres[a] - centres[b]) for a in range(3) for b in range(a + 1, 3)]
    assert min(gaps) > 2 * spread


# ---------------------------------------------------------------------------- stored errors
def test_encode_with_error_is_encode_plus_reconstruction(trained_store, sample_dir):
    with Collection.open(trained_store) as c:
        model = c.model
        files = [os.path.join(sample_dir, p) for p in c.paths()[:10]]
        images = np.stack([load_image(f, model.config.image_size, model.config.channels) for f in files])
        codes, error = model.encode_with_error(images)
        np.testing.assert_array_equal(codes, model.encode(images))
        np.testing.assert_allclose(error, model.reconstruction_error(images), rtol=1e-6)
        stored = c.reader.errors()
        assert stored.shape == (len(c),) and np.isfinite(stored).all() and (stored > 0).all()
        np.testing.assert_allclose(stored[:10], error, rtol=1e-5)


def test_stored_statistics_are_those_of_the_model_input(trained_store, sample_dir):
    import torch

    from hashae.model.statistics import STORED_WIDTH, edge_disagreement, image_stats, stored_stats
    assert STORED_WIDTH == STATS_WIDTH  # the layout's width, written down twice to keep torch out of storage
    with Collection.open(trained_store) as c:
        model = c.model
        files = [os.path.join(sample_dir, p) for p in c.paths()[:10]]
        images = np.stack([load_image(f, model.config.image_size, model.config.channels) for f in files])
        out = model.encode_for_index(images)
        codes, error = model.encode_with_error(images)
        np.testing.assert_array_equal(out.codes, codes)
        np.testing.assert_array_equal(out.error, error)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        np.testing.assert_allclose(out.stats[:, :12], image_stats(x).numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(out.stats[:, 12], edge_disagreement(x).numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(c.reader.stats()[:10], out.stats, rtol=1e-5, atol=1e-7)
    grey = x.mean(1, keepdim=True)  # one channel: its statistics read as three equal channels
    np.testing.assert_array_equal(stored_stats(grey)[:, :12], np.repeat(image_stats(grey).numpy(), 3, axis=1))
    assert (stored_stats(grey)[:, 12] == 0).all()


@pytest.mark.parametrize("earlier", ["none", "twelve"])
def test_a_store_without_statistics_is_scored_without_them_and_the_next_run_fills_them(trained_store, sample_dir,
                                                                                        tmp_path, earlier):
    store = tmp_path / "old.h5"
    shutil.copy(trained_store, store)
    with h5py.File(store, "a") as f:  # as hashae before 2026-11-29 wrote it, or on that day without the edges
        stats = f["items/stats"][()]
        del f["items/stats"]
        if earlier == "twelve":
            f["items/stats"] = stats[:, :12]
    with Collection.open(store) as c:
        assert c.reader.stats() is None and "/items/stats" not in c.info()["optional"]
        without = outlier_scores(c.reader.errors(), c.codes, phash=c.phash, residual=c.reader.residuals())
        with pytest.warns(UserWarning, match="no channel statistics"):
            found = c.outliers(0)
        np.testing.assert_allclose(sorted(o.score for o in found), np.sort(without))
    with pytest.warns(UserWarning, match="channel statistics"):
        report = Collection(store).index(str(sample_dir), workers=0, progress=False)
    assert not report.trained
    with Collection.open(store) as c, Collection.open(trained_store) as fresh:
        np.testing.assert_allclose(c.reader.stats(), fresh.reader.stats(), rtol=1e-5, atol=1e-7)


def test_damaged_statistics_are_refused_or_read_as_unknown(trained_store, tmp_path):
    from hashae.storage.store import StoreError
    store = tmp_path / "damaged.h5"
    shutil.copy(trained_store, store)
    with h5py.File(store, "a") as f:
        stats = f["items/stats"][()]
        del f["items/stats"]
        f["items/stats"] = stats[:, :4]  # another width
    with pytest.raises(StoreError, match="items/stats"):
        Collection.open(store)
    with h5py.File(store, "a") as f:
        del f["items/stats"]
        stats[3, 0], stats[5, 7] = np.nan, -1.0  # values no image has
        f["items/stats"] = stats
    with Collection.open(store) as c:
        read = c.reader.stats()
        assert np.isnan(read[[3, 5]]).all() and np.isfinite(np.delete(read, [3, 5], 0)).all()
        assert len(c.outliers(0)) == len(c)


def test_a_model_without_a_linear_twin_stores_no_residuals_and_is_scored_without_them(sample_dir, tmp_path):
    # a model saved before the twin existed reads as residual_dims 0, the config this store is built with
    assert HasherConfig.from_dict({"bits": 64}).residual_count == 0
    assert "residual_dims" not in json.loads(HasherConfig(residual_dims=0).to_json())  # what older hashae reads
    with pytest.raises(ValueError, match="set it to 0 for vectors"):
        HasherConfig(kind="vector", dim=10, residual_dims=8).validate()
    store = tmp_path / "untwinned.h5"
    Collection(store).index(str(sample_dir), config=HasherConfig(bits=32, residual_dims=0, **SMALL), workers=0,
                            progress=False)
    with h5py.File(store, "r") as f:
        assert "items/residual" not in f and "items/stats" in f
    with Collection.open(store) as c:
        assert c.reader.residuals() is None and c.model.config.residual_dims == 0
        expected = outlier_scores(c.reader.errors(), c.codes, phash=c.phash, stats=c.reader.stats())
        found = c.outliers(0)
        np.testing.assert_allclose([o.score for o in found], expected[[o.id for o in found]])


def test_a_store_without_errors_still_works_and_the_next_run_fills_them(trained_store, sample_dir, tmp_path):
    store = tmp_path / "old.h5"
    shutil.copy(trained_store, store)
    with h5py.File(store, "a") as f:  # as an earlier hashae wrote it
        del f["items/error"]
    with Collection.open(store) as c:
        assert c.reader.errors() is None
        codes = c.codes
        with pytest.warns(UserWarning, match="no reconstruction errors"):
            found = c.outliers(5)
        assert len(found) == 5
    report = Collection(store).index(str(sample_dir), workers=0, progress=False)
    assert not report.trained
    with Collection.open(store) as c, Collection.open(trained_store) as fresh:
        np.testing.assert_array_equal(c.codes, codes)
        np.testing.assert_allclose(c.reader.errors(), fresh.reader.errors(), rtol=1e-5)


# ---------------------------------------------------------------------------- outliers
PLANTED = {"odd/noise.png", "odd/noise2.png"}


@pytest.fixture(scope="module")
def planted_store(sample_dir, tmp_path_factory):
    """The sample with two pictures that do not belong: noise as coarse as the model sees."""
    folder = tmp_path_factory.mktemp("planted") / "shapes"
    shutil.copytree(sample_dir, folder)
    rng = np.random.default_rng(5)
    odd = folder / "odd"
    odd.mkdir()
    for name in ("noise.png", "noise2.png"):  # 16 x 16 noise (the model's input size), enlarged
        noise = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
        noise.resize((64, 64), Image.Resampling.NEAREST).save(odd / name)
    store = tmp_path_factory.mktemp("stores") / "planted.h5"
    Collection(store).index(str(folder), config=HasherConfig(bits=32, **SMALL), workers=0, progress=False)
    return store


def test_outliers_put_the_planted_images_first(planted_store):
    with Collection.open(planted_store) as c:
        top = c.outliers(3)
        # a planted picture first and both among the first three of 74: since images train on
        # their whole sample (2026-11-27), one striped picture, hard to rebuild, ranks between them
        assert top[0].path in PLANTED and PLANTED <= {o.path for o in top}
        everything = c.outliers(0)
        assert len(everything) == len(c)
        scores = [o.score for o in everything]
        assert scores == sorted(scores, reverse=True)
        assert c.paths([o.id for o in everything]) == [o.path for o in everything]
        # the stored signals, perceptual hashes and channel statistics included, give the scores
        stats = c.reader.stats()
        assert stats.shape == (len(c), STATS_WIDTH) and np.isfinite(stats).all()
        residual = c.reader.residuals()
        assert residual.shape == (len(c),) and np.isfinite(residual).all()
        expected = outlier_scores(c.reader.errors(), c.codes, phash=c.phash, stats=stats, residual=residual)
        np.testing.assert_allclose([o.score for o in everything], expected[[o.id for o in everything]])
        # the linear twin sees the noise: both planted pictures are among the tenth farthest
        # from its span (the striped and ringed shapes, drawn at random places, are far too)
        assert PLANTED <= set(c.paths(np.argsort(-residual)[:len(c) // 10]))
        assert c.model.config.residual_dims == len(c) // 8  # one direction per 8 training images, at most


def test_outliers_cli_json_and_sheet(planted_store, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["outliers", "--store", str(planted_store), "-n", "3", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert len(rows) == 3 and all(set(x) == {"path", "score"} for x in rows)
    assert rows[0]["path"] in PLANTED and PLANTED <= {x["path"] for x in rows}
    r = runner.invoke(main, ["outliers", "--store", str(planted_store), "-n", "0", "--json"])
    with Collection.open(planted_store) as c:
        assert len(json.loads(r.stdout)) == len(c)
    sheet = tmp_path / "odd.png"
    r = runner.invoke(main, ["outliers", "--store", str(planted_store), "-n", "4", "--sheet", str(sheet)])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0].split()[1] in PLANTED
    assert Image.open(sheet).size[0] > 0


def test_a_cli_warning_is_one_line_that_says_what_happened(tmp_path):
    # Python's own format would add the file, line and source that raised it
    codes = np.random.default_rng(0).integers(0, 256, (6, 8), dtype=np.uint8)
    Collection.create(tmp_path / "bare.h5", codes, [f"{i}.png" for i in range(6)]).close()
    r = CliRunner().invoke(main, ["outliers", "--store", str(tmp_path / "bare.h5"), "-n", "2", "--json"])
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)) == 2
    assert r.stderr.startswith("Warning: ") and "no reconstruction errors" in r.stderr
    assert len(r.stderr.splitlines()) == 1 and ".py" not in r.stderr


# ---------------------------------------------------------------------------- classify
def test_classify_labels_new_images_by_their_folders(trained_store, tmp_path):
    new = tmp_path / "new"
    make_sample(str(new), per_class=3, seed=9)  # unseen images of the same classes
    files = sorted(str(p) for p in new.rglob("*.png"))
    with Collection.open(trained_store) as c:
        _, names = c.labels()
        results = c.classify(files, k=5)
    assert [r["query"] for r in results] == files
    truth = [os.path.basename(os.path.dirname(f)) for f in files]
    accuracy = np.mean([r["label"] == t for r, t in zip(results, truth)])
    assert accuracy >= 0.8, accuracy
    for r in results:
        assert set(r) == {"query", "label", "votes"} and set(r["votes"]) <= set(names)
        assert 5 <= sum(r["votes"].values()) <= 20 and r["label"] in r["votes"]
    with Collection.open(trained_store) as c:
        votes = c.label_votes(files, k=5)
    # the records behind classify: the same labels and counts, and each label's share of the vote weight
    assert [(v.query, v.label, v.votes) for v in votes] == [(r["query"], r["label"], r["votes"]) for r in results]
    for v in votes:
        assert set(v.share) == set(v.votes) and sum(v.share.values()) == pytest.approx(1.0)
        assert v.label == max(v.share, key=v.share.get)


def test_classify_never_counts_the_query_itself(trained_store, sample_dir, tmp_path):
    folder = tmp_path / "lonely"
    shutil.copytree(sample_dir / "circle", folder / "circle")
    lone = sorted(os.listdir(sample_dir / "square"))[0]
    (folder / "square").mkdir()
    shutil.copy(sample_dir / "square" / lone, folder / "square" / lone)
    store = tmp_path / "lonely.h5"
    Collection(store).index(str(folder), model=str(trained_store), workers=0, progress=False)
    with Collection.open(store) as c:
        [own] = c.classify([str(folder / "square" / lone)], k=3)
        assert own["label"] == "circle" and "square" not in own["votes"]
        # the same picture from outside the folder is not an item: the item votes for it
        outside = tmp_path / "copy.png"
        shutil.copy(folder / "square" / lone, outside)
        [other] = c.classify([str(outside)], k=1)
        assert other["votes"].get("square") == 1


def test_classify_cli_json_and_errors(trained_store, sample_dir, tmp_path):
    runner = CliRunner()
    query = str(sample_dir / "circle" / sorted(os.listdir(sample_dir / "circle"))[0])
    r = runner.invoke(main, ["classify", query, "--store", str(trained_store), "-k", "3", "--json"])
    assert r.exit_code == 0, r.output
    [row] = json.loads(r.stdout)
    assert row["query"] == query and row["label"] == "circle"
    r = runner.invoke(main, ["classify", query, "--store", str(trained_store)])
    assert r.exit_code == 0 and r.stdout.startswith(f"{query}: circle  [circle ")  # the largest share first
    assert re.search(r"circle \d+% \(\d+ votes?\)", r.stdout), r.stdout
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    r = runner.invoke(main, ["classify", str(bad), query, "--store", str(trained_store), "--json"])
    assert r.exit_code == 1 and len(json.loads(r.stdout)) == 1 and "Error" in r.stderr
    # no sub-folders, no labels: one line that says how to get them
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in sorted((sample_dir / "circle").iterdir())[:4]:
        shutil.copy(f, flat / f.name)
    store = tmp_path / "flat.h5"
    Collection(store).index(str(flat), model=str(trained_store), workers=0, progress=False)
    r = runner.invoke(main, ["classify", query, "--store", str(store)])
    assert r.exit_code == 1 and "no labels" in r.output and len(r.output.strip().splitlines()) == 1


def test_classify_a_split_dataset_by_the_folders_below_the_splits(trained_store, sample_dir, tmp_path):
    # train/<class>/ and val/<class>/: the first folders are the splits; --level 2 the classes
    split = tmp_path / "split"
    classes = sorted(p.name for p in sample_dir.iterdir() if p.is_dir())
    for part, files in (("train", slice(0, 8)), ("val", slice(8, 10))):
        for name in classes:
            (split / part / name).mkdir(parents=True)
            for f in sorted((sample_dir / name).iterdir())[files]:
                shutil.copy(f, split / part / name / f.name)
    store = tmp_path / "split.h5"
    Collection(store).index(str(split), model=str(trained_store), workers=0, progress=False)
    new = tmp_path / "new"
    make_sample(str(new), per_class=3, seed=9)
    files = sorted(str(p) for p in new.rglob("*.png"))
    truth = [os.path.basename(os.path.dirname(f)) for f in files]
    with Collection.open(store) as c:
        assert c.labels()[1] == ["train", "val"] and c.labels(2)[1] == classes
        results = c.classify(files, k=5, level=2)
        with pytest.raises(ValueError, match="no labels at level 3"):
            c.classify(files[:1], level=3)
    assert np.mean([r["label"] == t for r, t in zip(results, truth)]) >= 0.8
    runner = CliRunner()
    r = runner.invoke(main, ["classify", files[0], "--store", str(store), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["label"] in ("train", "val")
    assert "look like a dataset's splits" in r.stderr and "--level 2" in r.stderr
    r = runner.invoke(main, ["classify", files[0], "--store", str(store), "--level", "2", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["label"] == truth[0] and not r.stderr


# ---------------------------------------------------------------------------- map
def test_map_draws_every_item_or_a_sample(trained_store, tmp_path):
    out = tmp_path / "map.png"
    runner = CliRunner()
    r = runner.invoke(main, ["map", "--store", str(trained_store), "--out", str(out)])
    assert r.exit_code == 0, r.output
    with Collection.open(trained_store) as c:
        layout = c.map_layout()
        n = len(c)
        assert len(layout.ids) == n and len({tuple(x) for x in layout.cells}) == n
        assert Image.open(out).size == (layout.side * 48, layout.side * 48)
        small = c.map_layout(max_items=20, seed=1)
        assert len(small.ids) == 20 and len(np.unique(small.ids)) == 20
        np.testing.assert_array_equal(small.cells, c.map_layout(max_items=20, seed=1).cells)
    r = runner.invoke(main, ["map", "--store", str(trained_store), "--out", str(out), "--max-items", "20"])
    assert r.exit_code == 0 and "20 of" in r.output
