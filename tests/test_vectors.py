"""Collections of vectors: the model on (n, d) arrays, the vector sources (.npy, HDF5 dataset,
folder of parts), incremental and resumed runs, one-line errors, and the CLI."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from hashae import Collection, HasherConfig, SemanticHasher
from hashae.cli import main
from hashae.ingest.vectors import VectorSource

# small and quick, but the real training path: pretraining, noisy fine-tuning, neighbour term
VSMALL = dict(kind="vector", bits=16, hidden=(64, 32), epochs=4, min_steps=60, pretrain_epochs=1, batch_size=32)


def clustered(n=240, dim=24, groups=6, seed=0):
    """Rows around ``groups`` random centres: (vectors float32 (n, dim), labels)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, dim)) * 3
    labels = rng.integers(0, groups, n)
    return (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels


@pytest.fixture(scope="module")
def data():
    return clustered()


@pytest.fixture(scope="module")
def vector_model(data):
    return SemanticHasher(HasherConfig(**VSMALL)).fit(data[0], progress=False)


def precision_at(coll: Collection, vectors, labels, k=5) -> float:
    rows = {p: int(p) for p in coll.paths()}
    hits = coll.search_vectors(vectors, k)
    return float(np.mean([[labels[rows[h.path]] == labels[q] for h in hs] for q, hs in enumerate(hits)]))


def test_model_takes_vectors_and_saves_what_rebuilds_it(data, vector_model, tmp_path):
    x, labels = data
    cfg = vector_model.config
    assert (cfg.kind, cfg.dim, cfg.scaling) == ("vector", 24, "standard")
    codes = vector_model.encode(x)
    assert codes.shape == (len(x), 2)
    vector_model.save(str(tmp_path / "m.h5"))
    again = SemanticHasher.load(str(tmp_path / "m.h5"))
    assert np.array_equal(again.encode(x), codes)
    with pytest.raises(ValueError, match="vectors of 24 values"):
        vector_model.encode(np.zeros((2, 16, 16), np.uint8))
    with pytest.raises(ValueError, match="row 3 holds NaN"):
        bad = x[:5].copy()
        bad[3, 7] = np.nan
        vector_model.encode(bad)


def test_counts_get_log_scaling_and_an_image_model_refuses_vectors():
    counts = np.random.default_rng(0).poisson(0.3, (120, 50)).astype(np.int64)
    model = SemanticHasher(HasherConfig(**{**VSMALL, "epochs": 1, "min_steps": 10})).fit(counts, progress=False)
    assert model.config.scaling == "log"
    pixels = (np.random.default_rng(1).random((120, 8, 8)) * 255).astype(np.uint8)
    image_model = SemanticHasher(HasherConfig(bits=16, image_size=8, channels=1, hidden=(32,), epochs=1,
                                              min_steps=10, pretrain_epochs=0)).fit(pixels, progress=False)
    with pytest.raises(ValueError, match="a model for vectors is trained on vectors"):
        image_model.encode(np.zeros((3, 64), np.float32))


def test_an_image_model_file_holds_no_vector_fields(tmp_path):
    """Image models keep the JSON that hashae before vectors reads."""
    pixels = (np.random.default_rng(1).random((40, 8, 8)) * 255).astype(np.uint8)
    SemanticHasher(HasherConfig(bits=16, image_size=8, channels=1, hidden=(32,), epochs=1, min_steps=5,
                                pretrain_epochs=0)).fit(pixels, progress=False).save(str(tmp_path / "img.h5"))
    with h5py.File(tmp_path / "img.h5", "r") as f:
        stored = {**json.loads(f.attrs["config"]), **json.loads(f.attrs["training"])}
    assert not {"kind", "dim", "scaling", "pca", "vector_drop", "vector_noise"} & set(stored)


def test_wide_vectors_are_read_through_their_principal_components(tmp_path):
    # rows of more than PCA_DIMS values: the first layer reads the top 128 principal directions
    # of the standardised rows (found in batches, never a d x d matrix), stored with the model
    x, labels = clustered(n=400, dim=300, groups=8, seed=3)
    model = SemanticHasher(HasherConfig(**VSMALL, seed=5)).fit(x, progress=False)
    assert model.config.pca is None and model.config.pca_dims == 128
    directions = model.net.components.numpy()
    assert directions.shape == (128, 300)
    assert np.allclose(directions @ directions.T, np.eye(128), atol=1e-4)
    # the first direction is the top one: it carries the most variance of the standardised rows
    z = (x - x.mean(0)) / x.std(0)
    top = np.linalg.svd(z - z.mean(0), full_matrices=False)[2][0]
    assert abs(float(directions[0] @ top)) > 0.99
    codes = model.encode(x)
    model.save(str(tmp_path / "m.h5"))
    again = SemanticHasher.load(str(tmp_path / "m.h5"))
    assert again.config.pca_dims == 128 and np.array_equal(again.encode(x), codes)
    assert np.array_equal(SemanticHasher(HasherConfig(**VSMALL, seed=5)).fit(x, progress=False).encode(x), codes)
    # neighbours in code space are of the same group
    from hashae.metrics import hamming_retrieval
    assert hamming_retrieval(codes[:40], codes[40:], labels[:40], labels[40:])["map"] > 0.9
    plain = SemanticHasher(HasherConfig(**VSMALL, pca=0)).fit(x, progress=False)
    assert plain.config.pca_dims == 0 and "components" not in plain.net.state_dict()


def test_vector_views_change_what_the_model_reads_and_nothing_else():
    # a view is made in the space the first layer reads (standardised values, or principal
    # components) and written back into the rows: dropping everything gives the training mean
    # there, noise moves each value read by its share, and the directions the components leave
    # out are not touched
    import torch
    from hashae.model.augment import vector_views
    for dim, pca in ((300, None), (300, 0), (24, None)):
        x, _ = clustered(n=200, dim=dim, seed=4)
        net = SemanticHasher(HasherConfig(**VSMALL, pca=pca)).fit(x, progress=False).net
        rows = torch.from_numpy(x[:50])
        read = net.target(rows)
        assert torch.allclose(vector_views(rows, net, drop=0.0, noise=0.0), rows)
        assert net.target(vector_views(rows, net, drop=1.0, noise=0.0)).abs().max() < 1e-3
        torch.manual_seed(0)
        view = vector_views(rows, net, drop=0.0, noise=0.5)
        moved = net.target(view) - read
        assert 0.4 < float(moved.std()) < 0.6  # noise of half a standard deviation where read
        if net.cfg.pca_dims:  # and none in the directions the model does not read
            delta = (view - rows) / net.scale
            assert torch.allclose(delta, delta @ net.components.T @ net.components, atol=1e-4)
        change = torch.randn_like(read)
        assert torch.allclose(net.target(rows + net.row_change(change)) - read, change, atol=1e-3)


def test_a_row_unlike_the_training_rows_has_the_largest_error_and_tops_the_outliers(tmp_path):
    # a vector model rebuilds the principal components it reads; its stored error also counts
    # the part of a row outside them, so a row of noise appended to a collection stands out
    import torch
    from hashae.search.outliers import VECTOR_DEFAULT, outlier_scores
    x, _ = clustered(n=400, dim=300, groups=8, seed=3)
    model = SemanticHasher(HasherConfig(**VSMALL, seed=1)).fit(x, progress=False)
    assert model.config.row_error is True and model.config.pca_dims == 128
    net = model.net
    # a row whose scaled values lie wholly outside the components, three spreads a value
    v = np.random.default_rng(9).normal(size=300)
    c = net.components.double().numpy()
    v -= c.T @ (c @ v)
    odd = net.mean.numpy() + net.scale.numpy() * (3 * np.sqrt(300) * v / np.linalg.norm(v))
    rows = np.concatenate([x, odd[None].astype(np.float32)])
    enc = model.encode_for_index(rows)
    with torch.inference_mode():  # the error is that of the scaled row against its rebuilt one
        t = torch.from_numpy(rows)
        rebuilt = (net(t).recon * net.spread) @ net.components
        direct = ((t - net.mean) / net.scale - rebuilt).pow(2).mean(1).numpy()
    np.testing.assert_allclose(enc.error, direct, rtol=1e-4, atol=1e-5)
    assert int(np.argmax(enc.error)) == 400 and enc.error[400] > 3 * np.median(enc.error)
    assert int(np.argmax(outlier_scores(enc.error, enc.codes, VECTOR_DEFAULT))) == 400
    np.save(tmp_path / "rows.npy", rows)  # and a collection of them says so, by its default score
    Collection(str(tmp_path / "v.h5")).index_vectors(str(tmp_path / "rows.npy"), model=model, progress=False)
    with Collection.open(str(tmp_path / "v.h5")) as c:
        assert c.outliers(1)[0].path == "400"
    # the setting is stored; a model saved before it reads as false and keeps its components' error
    model.save(str(tmp_path / "m.h5"))
    assert json.loads(SemanticHasher.load(str(tmp_path / "m.h5")).config.to_json())["row_error"] is True
    stored = json.loads(model.config.to_json())
    stored.pop("row_error")
    before = SemanticHasher(HasherConfig.from_dict(stored))
    assert before.config.row_error is False
    from hashae.model.config import describe_settings
    assert "error=components" in describe_settings(stored)
    assert "error=" not in describe_settings({**stored, "row_error": True})
    before.net = type(net)(before.config.model)
    before.net.load_state_dict(net.state_dict())
    with torch.inference_mode():
        inside = (net(t).recon - net.target(t)).pow(2).mean(1).numpy()
    np.testing.assert_allclose(before.encode_for_index(rows).error, inside, rtol=1e-5, atol=1e-6)
    assert int(np.argmax(inside)) != 400  # what the components alone could not see
    with pytest.raises(ValueError, match="row_error is a vector model's"):
        HasherConfig(row_error=True).validate()


def test_vector_models_saved_before_pca_read_their_scaled_rows():
    stored = {**json.loads(HasherConfig(**VSMALL, dim=300).to_json())}
    stored.pop("pca")
    cfg = HasherConfig.from_dict(stored)
    assert (cfg.pca, cfg.pca_dims) == (0, 0)
    from hashae.model.network import param_shapes
    assert "components" not in param_shapes(cfg.model) and param_shapes(cfg.model)["stages.0.enc.0.weight"][1] == 300
    # a file asking for 60,000 directions of 60,001 values is refused before anything is allocated
    with pytest.raises(ValueError, match="values \\(weights and fixed tensors\\); at most"):
        param_shapes(HasherConfig.from_dict({**stored, "dim": 60001, "pca": 60000}).model)


def test_a_vector_model_trains_with_the_vector_temperature(data, vector_model):
    x = data[0]
    assert vector_model.config.temperature is None and vector_model.config.contrast_temperature == 0.7
    warm = SemanticHasher(HasherConfig(**VSMALL, temperature=0.7)).fit(x, progress=False)
    cool = SemanticHasher(HasherConfig(**VSMALL, temperature=0.3)).fit(x, progress=False)
    np.testing.assert_array_equal(warm.encode(x), vector_model.encode(x))
    assert not np.array_equal(cool.encode(x), vector_model.encode(x))


def test_collection_round_trip_search_and_append(data, vector_model, tmp_path):
    x, labels = data
    np.save(tmp_path / "first.npy", x[:160])
    store = str(tmp_path / "v.h5")
    report = Collection(store).index_vectors(str(tmp_path / "first.npy"), model=vector_model, progress=False)
    assert (report.indexed, report.items) == (160, 160)
    with Collection.open(store) as c:
        assert c.kind == "vectors" and len(c) == 160
        first = dict(zip(c.paths(), c.codes))
        assert precision_at(c, x[:160], labels[:160]) > 0.9
        own = c.search_vectors(x[:10], 5)
        assert all(h[0].distance == 0 for h in own)
    # the file grows: only the new rows are encoded, the old codes stay
    np.save(tmp_path / "first.npy", x)
    report = Collection(store).index_vectors(progress=False)
    assert (report.indexed, report.unchanged, report.items) == (80, 160, 240)
    with Collection.open(store) as c:
        assert all(np.array_equal(first[p], code) for p, code in zip(c.paths(), c.codes) if p in first)
        fresh = str(tmp_path / "fresh.h5")
        Collection(fresh).index_vectors(str(tmp_path / "first.npy"), model=vector_model, progress=False)
        with Collection.open(fresh) as f:
            assert f.paths() == c.paths() and np.array_equal(f.codes, c.codes)
            assert np.array_equal(f.reader.errors(), c.reader.errors())
    # a changed row is re-encoded, an unchanged run leaves the file alone
    x2 = x.copy()
    x2[5] = x[200]
    np.save(tmp_path / "first.npy", x2)
    report = Collection(store).index_vectors(progress=False)
    assert (report.indexed, report.unchanged) == (1, 239)
    before = os.stat(store).st_mtime_ns
    assert Collection(store).index_vectors(progress=False).indexed == 0
    assert os.stat(store).st_mtime_ns == before


def test_sources_hdf5_dataset_and_folder_of_parts_with_ids(data, vector_model, tmp_path):
    x, _ = data
    with h5py.File(tmp_path / "emb.h5", "w") as f:
        f.create_dataset("deep/emb", data=x)
        f.create_dataset("other", data=np.zeros((3, 3)))
    parts = tmp_path / "img_emb"
    parts.mkdir()
    for n, (a, b) in enumerate([(0, 100), (100, 200), (200, 240)]):
        np.save(parts / f"img_emb_{[0, 2, 10][n]}.npy", x[a:b])  # natural order: 0, 2, 10
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(f"photo-{i:03d}.jpg" for i in range(240)) + "\n")
    with VectorSource(str(parts)) as s:
        assert (s.n, s.dim) == (240, 24) and np.array_equal(s.rows(95, 205), x[95:205])
    a, b = str(tmp_path / "a.h5"), str(tmp_path / "b.h5")
    Collection(a).index_vectors(f"{tmp_path / 'emb.h5'}:/deep/emb", ids=str(ids), model=vector_model, progress=False)
    Collection(b).index_vectors(str(parts), ids=str(ids), model=vector_model, progress=False)
    with Collection.open(a) as ca, Collection.open(b) as cb:
        assert ca.paths() == cb.paths() == sorted(f"photo-{i:03d}.jpg" for i in range(240))
        assert np.array_equal(ca.codes, cb.codes)
        assert np.array_equal(ca.codes, vector_model.encode(x)[np.argsort([f"photo-{i:03d}.jpg" for i in range(240)])])
    # named rows are found again by name: a re-run keeps them, a reordered file moves them
    report = Collection(a).index_vectors(progress=False)
    assert (report.indexed, report.unchanged) == (0, 240)
    order = np.random.default_rng(0).permutation(240)
    with h5py.File(tmp_path / "emb.h5", "r+") as f:
        f["deep/emb"][...] = x[order]
    ids.write_text("\n".join(f"photo-{i:03d}.jpg" for i in order) + "\n")
    out = CliRunner().invoke(main, ["index-vectors", "--store", a, "--quiet"])  # file and ids remembered
    assert out.exit_code == 0 and "0 new or changed, 240 unchanged" in out.output, out.output
    with Collection.open(a) as ca:
        assert ca.info()["ids"] == str(ids)
        rows = dict(zip(ca.paths(), ca.reader.sizes()))
        assert all(rows[f"photo-{i:03d}.jpg"] == r for r, i in enumerate(order))


def test_clip_retrieval_metadata_names_the_items(data, vector_model, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow (the ray extra) reads clip-retrieval metadata")
    import pyarrow as pa
    x, _ = data
    (tmp_path / "img_emb").mkdir()
    (tmp_path / "metadata").mkdir()
    for n, (a, b) in enumerate([(0, 150), (150, 240)]):
        np.save(tmp_path / "img_emb" / f"img_emb_{n}.npy", x[a:b])
        pq.write_table(pa.table({"caption": ["x"] * (b - a), "image_path": [f"shard{n}/{i}.jpg" for i in range(a, b)]}),
                       tmp_path / "metadata" / f"metadata_{n}.parquet")
    store = str(tmp_path / "v.h5")
    Collection(store).index_vectors(str(tmp_path / "img_emb"), model=vector_model, progress=False)
    with Collection.open(store) as c:
        for row, name in ((3, "shard0/3.jpg"), (200, "shard1/200.jpg")):
            assert name in {h.path for h in c.search_vectors(x[[row]], 240)[0] if h.distance == 0}
        assert sorted(c.paths()) == sorted([f"shard0/{i}.jpg" for i in range(150)] +
                                           [f"shard1/{i}.jpg" for i in range(150, 240)])


@pytest.mark.parametrize("problem", ["nan", "width", "ids", "image-store", "hdf5-link", "pickle"])
def test_bad_vector_input_is_one_line_naming_the_row(problem, data, vector_model, tmp_path):
    x, _ = data
    store = str(tmp_path / "v.h5")
    np.save(tmp_path / "ok.npy", x)
    Collection(store).index_vectors(str(tmp_path / "ok.npy"), model=vector_model, progress=False)
    with Collection.open(store) as c:
        before = c.generation
    args, expect = ["index-vectors"], ""
    if problem == "nan":
        bad = x.copy()
        bad[17, 2] = np.inf
        np.save(tmp_path / "bad.npy", bad)
        args, expect = args + [str(tmp_path / "bad.npy"), "--store", store], "row 17 holds NaN or infinity"
    elif problem == "width":
        np.save(tmp_path / "bad.npy", x[:, :20])
        args, expect = args + [str(tmp_path / "bad.npy"), "--store", store], "has 20 values a row, but the model takes 24"
    elif problem == "ids":
        (tmp_path / "ids.txt").write_text("\n".join(["a"] * 240))
        args += [str(tmp_path / "ok.npy"), "--ids", str(tmp_path / "ids.txt"), "--store", str(tmp_path / "n.h5")]
        expect = "id 'a' is given twice (rows 0 and 1)"
    elif problem == "image-store":
        args = ["index", str(tmp_path), "--store", store]
        expect = "is a collection of vectors: add to it with `hashae index-vectors`"
    elif problem == "pickle":  # an object array would run code when unpickled: never loaded
        np.save(tmp_path / "obj.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
        args += [str(tmp_path / "obj.npy"), "--store", str(tmp_path / "n.h5")]
        expect = "not a readable .npy array"
    else:
        with h5py.File(tmp_path / "linked.h5", "w") as f:
            f["emb"] = h5py.ExternalLink(str(tmp_path / "elsewhere.h5"), "/emb")
        args += [f"{tmp_path / 'linked.h5'}:/emb", "--store", str(tmp_path / "n.h5")]
        expect = "is a ExternalLink; name the dataset itself"
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert lines[-1] == f"Error: {lines[-1][7:]}" and expect in lines[-1], result.output
    with Collection.open(store) as c:
        assert c.generation == before and len(c) == 240  # nothing stored was lost


def test_kinds_refuse_each_other(data, vector_model, trained_store, sample_dir, tmp_path):
    x, _ = data
    np.save(tmp_path / "v.npy", x)
    store = str(tmp_path / "v.h5")
    Collection(store).index_vectors(str(tmp_path / "v.npy"), model=vector_model, progress=False)
    image = str(next(p for p in sample_dir.rglob("*.png")))
    runner = CliRunner()
    out = runner.invoke(main, ["query", image, "--store", store])
    assert out.exit_code == 1 and "holds vectors: query it with vectors" in out.output
    out = runner.invoke(main, ["query", "--vector", str(tmp_path / "v.npy"), "--store", str(trained_store)])
    assert out.exit_code == 1 and "holds images" in out.output
    out = runner.invoke(main, ["index-vectors", str(tmp_path / "v.npy"), "--store", str(trained_store)])
    assert out.exit_code == 1 and "is a collection of images" in out.output
    out = runner.invoke(main, ["index", str(sample_dir), "--store", str(tmp_path / "i.h5"), "--model", store])
    assert out.exit_code == 1 and "holds a model for vectors" in out.output
    pytest.importorskip("starlette", reason="the serve extra")
    from hashae.serve.app import create_app
    from hashae.storage import StoreError
    with pytest.raises(StoreError, match="the server shows images"):
        create_app(store)


def test_cli_index_query_and_the_other_commands(data, tmp_path):
    x, labels = data
    np.save(tmp_path / "emb.npy", x)
    np.save(tmp_path / "q.npy", x[:4])
    store = str(tmp_path / "v.h5")
    runner = CliRunner()
    out = runner.invoke(main, ["index-vectors", str(tmp_path / "emb.npy"), "--store", store, "--bits", "16",
                               "--effort", "fast", "--quiet"])
    assert out.exit_code == 0, out.output
    assert "240 items in the collection" in out.output
    out = runner.invoke(main, ["query", "--vector", str(tmp_path / "q.npy"), "--store", store, "-k", "5", "--json"])
    assert out.exit_code == 0, out.output
    results = json.loads(out.output)
    assert [r["query"] for r in results] == [0, 1, 2, 3]
    assert all(set(h) == {"path", "distance", "score"} for r in results for h in r["hits"])
    same = [labels[int(h["path"])] == labels[r["query"]] for r in results for h in r["hits"]]
    assert np.mean(same) > 0.8
    info = json.loads(runner.invoke(main, ["info", "--store", store, "--json"]).output)
    assert (info["kind"], info["items"], info["bits"]) == ("vectors", 240, 16)
    groups = json.loads(runner.invoke(main, ["cluster", "--store", store, "--method", "kmeans", "-k", "6",
                                             "--json", "--quiet"]).output)
    assert sorted(p for g in groups for p in g["paths"]) == sorted(str(i) for i in range(240))
    out = runner.invoke(main, ["duplicates", "--store", store, "--json", "--quiet"])
    assert out.exit_code == 0 and "Warning" not in out.output, out.output
    outliers = json.loads(runner.invoke(main, ["outliers", "--store", store, "-n", "3", "--json"]).output)
    assert len(outliers) == 3 and all(set(o) == {"path", "score"} for o in outliers)
    out = runner.invoke(main, ["map", "--store", store, "--out", str(tmp_path / "m.png")])
    assert out.exit_code == 1 and "collection of vectors" in out.output
    # flags that draw or name image files say so, before anything is listed
    for args, flag in ((["outliers", "--sheet", str(tmp_path / "o.png")], "--sheet"),
                       (["cluster", "--sheets", str(tmp_path / "sheets")], "--sheets"),
                       (["duplicates", "--absolute"], "--absolute")):
        out = runner.invoke(main, [*args, "--store", store])
        assert out.exit_code == 2 and f"leave {flag} out" in out.output, out.output
        assert not re.search(r"^\s*\d+\.\d{4}\s|^#0 ", out.output, re.M)  # no score or group was listed
        assert not os.path.exists(tmp_path / "o.png") and not os.path.exists(tmp_path / "sheets")


def test_a_killed_run_resumes_to_the_store_of_an_uninterrupted_one(data, vector_model, tmp_path):
    x, _ = data
    np.save(tmp_path / "emb.npy", x)
    vector_model.save(str(tmp_path / "model.h5"))
    store = str(tmp_path / "v.h5")
    script = textwrap.dedent(f"""
        import os, signal
        from hashae import Collection
        from hashae.storage.journal import Journal
        original, count = Journal.add_segment, [0]
        def add_then_die(self, items, failures):
            original(self, items, failures)
            count[0] += 1
            if count[0] == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        Journal.add_segment = add_then_die
        Collection({store!r}).index_vectors({str(tmp_path / 'emb.npy')!r}, model={str(tmp_path / 'model.h5')!r},
                                            segment=50, progress=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ}, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert not os.path.exists(store) and os.path.isdir(store + ".journal")
    report = Collection(store).index_vectors(str(tmp_path / "emb.npy"), progress=False)
    assert report.resumed == 100 and report.items == 240 and not report.trained
    fresh = str(tmp_path / "fresh.h5")
    Collection(fresh).index_vectors(str(tmp_path / "emb.npy"), model=vector_model, progress=False)
    with Collection.open(store) as a, Collection.open(fresh) as b:
        assert a.paths() == b.paths() and np.array_equal(a.codes, b.codes)
        assert np.array_equal(a.reader.sizes(), b.reader.sizes())


def test_a_stored_ids_path_is_read_only_if_this_user_sealed_it(data, vector_model, tmp_path):
    x, _ = data
    np.save(tmp_path / "emb.npy", x)
    (tmp_path / "ids.txt").write_text("\n".join(f"r{i}" for i in range(240)))
    (tmp_path / "secret.txt").write_text("\n".join(f"s{i}" for i in range(240)))
    store = str(tmp_path / "v.h5")
    Collection(store).index_vectors(str(tmp_path / "emb.npy"), ids=str(tmp_path / "ids.txt"), model=vector_model,
                                    progress=False)
    with h5py.File(store, "r+") as f:  # someone else's file pointing the reader elsewhere
        f.attrs["ids"] = str(tmp_path / "secret.txt")
    with pytest.raises(ValueError, match="not indexed by you on this machine: give the ids file"):
        Collection(store).index_vectors(progress=False)
    report = Collection(store).index_vectors(ids=str(tmp_path / "ids.txt"), progress=False)
    assert (report.indexed, report.unchanged) == (0, 240)


def test_cli_pca_option_is_stored_and_shown(tmp_path):
    x, _ = clustered(n=200, dim=160, groups=4, seed=2)
    np.save(tmp_path / "wide.npy", x)
    runner = CliRunner()
    shown = {}
    for pca in (None, "0", "24"):
        store = str(tmp_path / f"w{pca}.h5")
        out = runner.invoke(main, ["index-vectors", str(tmp_path / "wide.npy"), "--store", store, "--bits", "16",
                                   "--effort", "fast", "--quiet", *(["--pca", pca] if pca else [])])
        assert out.exit_code == 0, out.output
        shown[pca] = runner.invoke(main, ["info", "--store", store]).output
        with Collection.open(store) as c:
            assert c.model.config.pca_dims == {None: 128, "0": 0, "24": 24}[pca]
    assert "pca=128" in shown[None] and "pca=" not in shown["0"] and "pca=24" in shown["24"]
