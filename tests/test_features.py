"""Feature bits (model/features.py): the code's last bits hash the whole image's statistics."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import SMALL

from hashae import Collection, HasherConfig, SemanticHasher
from hashae.cli import main
from hashae.codes import unpack
from hashae.model.features import FeatureBits, itq_rotation
from hashae.sample import make_sample

QUICK = dict(SMALL, epochs=2, min_steps=40, pretrain_epochs=1)


def tinted(n_per=30, size=16, seed=0):
    """Noise textures of one layout in three tints (red, green, blue) and two grains, and each
    one's group (tint and grain, 0..5): the pixels' positions say nothing of the group, the
    channel statistics (means and gradients) say it all."""
    rng = np.random.default_rng(seed)
    layout = rng.random((size, size))
    images, group = [], []
    for t in range(3):
        for i in range(n_per):
            x = np.repeat((0.3 * layout + 0.2 * rng.random((size, size)))[..., None], 3, -1)
            x[..., t] += 0.4 + 0.1 * rng.random()
            if i % 2:  # a coarser grain in half of them
                x = np.repeat(np.repeat(x[::2, ::2], 2, 0), 2, 1)
            images.append(np.clip(x, 0, 1))
            group.append(2 * t + i % 2)
    return (np.stack(images) * 255).astype(np.uint8), np.array(group)


@pytest.fixture(scope="module")
def fitted():
    images, group = tinted()
    model = SemanticHasher(HasherConfig(bits=24, feature_bits=8, seed=3, **QUICK)).fit(images, progress=False)
    return model, images, group


def test_feature_bits_are_the_codes_last_bits_and_follow_the_tint(fitted):
    model, images, group = fitted
    codes, logits = model.encode(images), model.logits(images)
    assert codes.shape == (len(images), 3) and logits.shape == (len(images), 24)
    bits = unpack(codes)
    np.testing.assert_array_equal(bits, logits > 0)
    with torch.no_grad():
        own = model.net.features(torch.from_numpy(images.transpose(0, 3, 1, 2) / 255).float()).numpy()
    np.testing.assert_allclose(logits[:, 16:], own, atol=1e-4)
    # the 8 feature bits alone find the group: images of one group lie far nearer each other
    # than images of two, and an image's nearest others by these bits share its group
    feature = bits[:, 16:]
    d = (feature[:, None] != feature[None]).sum(-1).astype(float)
    same = group[:, None] == group[None]
    assert d[same].mean() * 2 < d[~same].mean(), (d[same].mean(), d[~same].mean())
    np.fill_diagonal(d, np.inf)
    nearest_share = [(group[d[i] == d[i].min()] == group[i]).mean() for i in range(len(d))]
    assert np.mean(nearest_share) > 0.9, np.mean(nearest_share)
    assert 0.2 < bits[:, 16:].mean() < 0.8  # balanced, as ITQ's rotation makes them


def test_feature_bits_round_trip_repeat_and_decode(fitted, tmp_path):
    model, images, _ = fitted
    path = tmp_path / "m.h5"
    model.save(path)
    again = SemanticHasher.load(path)
    assert again.config.feature_bits == 8 and again.config.learnt_bits == 16
    np.testing.assert_array_equal(again.logits(images), model.logits(images))
    codes, error = again.encode_with_error(images)
    np.testing.assert_array_equal(codes, model.encode(images))
    np.testing.assert_allclose(error, model.reconstruction_error(images), rtol=1e-6)
    assert again.decode(codes).shape == (len(images), 3, 16, 16)
    twin = SemanticHasher(HasherConfig(bits=24, feature_bits=8, seed=3, **QUICK)).fit(images, progress=False)
    np.testing.assert_array_equal(twin.encode(images), codes)  # same seed, same codes


def test_feature_bits_default_by_input_are_stored_only_when_used_and_checked():
    assert HasherConfig().feature_count == 8 and HasherConfig(bits=32).learnt_bits == 28
    assert HasherConfig(kind="vector", dim=10).feature_count == 0
    assert "feature_bits" not in json.loads(HasherConfig(feature_bits=0).to_json())  # what older hashae reads
    assert json.loads(HasherConfig(feature_bits=8).to_json())["feature_bits"] == 8
    assert HasherConfig.from_dict({"bits": 64}).feature_count == 0  # a model saved before feature bits
    with pytest.raises(ValueError, match="feature_bits must be an integer in \\[0, 32\\]"):
        HasherConfig(bits=64, feature_bits=40).validate()
    with pytest.raises(ValueError, match="vector model has none"):
        HasherConfig(kind="vector", dim=10, feature_bits=8).validate()
    with pytest.raises(ValueError, match="vector model has none"):  # a 2-D array makes a vector model
        SemanticHasher(HasherConfig(feature_bits=8, **QUICK)).fit(np.random.default_rng(0).random((50, 12)))


def test_a_fit_makes_the_default_a_number():
    images, _ = tinted(n_per=10)
    model = SemanticHasher(HasherConfig(bits=16, **QUICK)).fit(images, progress=False)
    assert model.config.feature_bits == 2 and json.loads(model.config.to_json())["feature_bits"] == 2
    vectors = SemanticHasher(HasherConfig(bits=16, **QUICK)).fit(np.random.default_rng(0).random((60, 12)))
    assert vectors.config.feature_bits == 0 and vectors.net.features is None


def test_a_damaged_feature_array_is_refused_on_open(fitted, tmp_path):
    model, _, _ = fitted
    path = tmp_path / "m.h5"
    model.save(path)
    with h5py.File(path, "a") as f:
        names = []
        f.visit(names.append)
        [name] = [n for n in names if n.endswith("features.projection")]
        del f[name]
        f.create_dataset(name, data=np.zeros((5, 5), np.float32))
    with pytest.raises(Exception, match="features.projection"):
        SemanticHasher.load(path)


def test_itq_rotation_is_orthogonal_and_lowers_quantisation_error():
    v = np.random.default_rng(0).standard_normal((500, 8)) * np.linspace(3, 0.5, 8)
    r = itq_rotation(v, seed=0)
    np.testing.assert_allclose(r @ r.T, np.eye(8), atol=1e-9)
    start, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((8, 8)))

    def error(rot):
        p = v @ rot
        return ((np.sign(p) - p) ** 2).sum()

    assert error(r) < error(start)


def test_an_unfitted_feature_module_has_the_configs_shapes():
    f = FeatureBits(channels=1, bits=8)
    assert f.lift_weight.shape == (4, 1024) and f.projection.shape == (1024, 8)
    assert f(torch.rand(2, 1, 16, 16)).shape == (2, 8)


def test_index_feature_bits_from_the_cli_and_info_shows_the_split(tmp_path):
    folder = tmp_path / "tiny"
    make_sample(str(folder), per_class=3, seed=2)
    store = tmp_path / "c.h5"
    run = CliRunner().invoke
    r = run(main, ["index", str(folder), "--store", str(store), "--feature-bits", "8", "--bits", "32",
                   "--image-size", "16", "--epochs", "1", "--quiet", "--workers", "0"])
    assert r.exit_code == 0, r.output
    shown = run(main, ["info", "--store", str(store)]).output
    assert "32 (24 learnt, 8 from channel statistics)" in shown and "bits=24 learnt+8 statistics" in shown
    with Collection.open(store) as c:
        assert c.info()["model"]["feature_bits"] == 8
        query = c.paths()[4]
        hits = c.search([str(folder / query)], k=3)[0]  # two-stage ranking reads the feature logits too
        assert hits[0].path == query and hits[0].distance == 0
    r = run(main, ["index", str(folder), "--store", str(tmp_path / "bad.h5"), "--feature-bits", "30", "--bits", "32",
                   "--quiet", "--workers", "0"])
    assert r.exit_code != 0 and "feature_bits must be an integer in [0, 16]" in r.output
