import json
import os
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from hashae.cli import main


def run(*args, cwd=None):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def test_index_trains_then_query_and_info(sample_copy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run("index", sample_copy, "--bits", 16, "--epochs", 1, "--image-size", 16, "--workers", 0, "--quiet")
    assert r.exit_code == 0, r.output
    store = tmp_path / "indexes" / "shapes.h5"  # the default store: indexes/<folder name>.h5
    assert store.exists() and "72 items" in r.output
    q = sample_copy / "triangle" / "triangle_004.png"
    r = run("query", q, "--json", "-k", 3)  # the only store in indexes/ is the default
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out[0]["query"] == str(q) and {k: out[0]["hits"][0][k] for k in ("path", "distance")} == {"path": "triangle/triangle_004.png", "distance": 0}
    r = run("info", "--json")
    info = json.loads(r.output)
    assert info["items"] == 72 and info["bits"] == 16 and info["model"]["image_size"] == 16
    r = run("index", sample_copy, "--quiet", "--workers", 0)
    assert r.exit_code == 0 and "indexed 0 new" in r.output


def test_a_folder_of_one_image_says_how_to_index_it(trained_store, sample_dir, tmp_path):
    # one picture cannot train a model; the error says what can: another collection's model
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(sample_dir / "circle" / "circle_000.png", one / "a.png")
    r = run("index", one, "--store", tmp_path / "one.h5", "--workers", 0, "--quiet")
    assert r.exit_code == 1 and "fewer than 2 decodable images" in r.output and "--model" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "one.h5").exists()
    r = run("index", one, "--store", tmp_path / "one.h5", "--model", trained_store, "--workers", 0, "--quiet")
    assert r.exit_code == 0, r.output
    assert "1 item in the collection" in r.output


def test_info_text_names_the_layers_and_a_codes_only_store(trained_store, tmp_path):
    r = run("info", "--store", trained_store)
    assert r.exit_code == 0, r.output
    model_line = next(line for line in r.output.splitlines() if line.startswith("model"))
    assert "layers 128-64 " in model_line and "binarizer=noise" in model_line  # conftest's SMALL hidden=(128, 64)
    from hashae import Collection
    Collection.create(tmp_path / "codes.h5", np.zeros((3, 2), np.uint8), ["a", "b", "c"]).close()
    r = run("info", "--store", tmp_path / "codes.h5")
    assert r.exit_code == 0, r.output
    assert "model       none (codes only)" in r.output and "items       3" in r.output
    shutil.copy(trained_store, tmp_path / "damaged.h5")
    with h5py.File(tmp_path / "damaged.h5", "r+") as f:  # a model config that cannot be rebuilt
        cfg = json.loads(f["model"].attrs["config"])
        cfg["hidden"] = 5
        f["model"].attrs["config"] = json.dumps(cfg)
    r = run("info", "--store", tmp_path / "damaged.h5")
    assert r.exit_code == 0, r.output
    assert "model       unreadable config (hidden must be a list of layer widths, got 5)" in r.output


def test_query_text_and_sheet(trained_store, sample_dir, tmp_path):
    sheet = tmp_path / "hits.png"
    r = run("query", sample_dir / "circle" / "circle_001.png", "--store", trained_store, "-k", 4, "--sheet", sheet)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].endswith("4 hits") and lines[1].split()[::2] == ["0", "circle/circle_001.png"]
    from PIL import Image
    with Image.open(sheet) as im:
        assert im.width >= 5 * 100  # query + 4 hits


def test_query_radius(trained_store, sample_dir):
    r = run("query", sample_dir / "circle" / "circle_001.png", "--store", trained_store, "--radius", 2, "--json")
    hits = json.loads(r.output)[0]["hits"]
    assert hits and all(h["distance"] <= 2 for h in hits)


def _one_line_error(r):
    assert r.exit_code != 0
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    return lines[0]


def test_clear_errors(trained_store, sample_dir, tmp_path):
    assert "no such folder" in _one_line_error(run("index", tmp_path / "nope", "--store", tmp_path / "a.h5"))
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(2)
    assert "not a hashae collection" in _one_line_error(run("index", sample_dir, "--store", other))
    assert "not a hashae collection" in _one_line_error(run("query", sample_dir / "ring" / "ring_000.png",
                                                            "--store", other))
    copy = tmp_path / "copy.h5"
    shutil.copy(trained_store, copy)
    msg = _one_line_error(run("index", sample_dir, "--store", copy, "--bits", 64))
    assert "32-bit" in msg and "64" in msg
    assert "no such collection" in _one_line_error(run("info", "--store", tmp_path / "missing.h5"))
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    assert "bad.jpg" in _one_line_error(run("query", bad, "--store", trained_store))
    assert "multiple of 8" in _one_line_error(run("index", sample_dir, "--store", tmp_path / "b.h5", "--bits", 12))


def test_query_answers_every_readable_image_of_a_batch_in_order(trained_store, sample_dir, tmp_path, monkeypatch):
    # images are answered in batches; an unreadable one is named and the rest keep their order
    import hashae.cli
    monkeypatch.setattr(hashae.cli, "QUERY_BATCH", 3)
    good = [str(p) for p in sorted((sample_dir / "ring").iterdir())[:5]]
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    files = good[:2] + [str(bad)] + good[2:]
    r = CliRunner().invoke(main, ["query", *files, "--store", str(trained_store), "-k", "2", "--json"])
    assert r.exit_code == 1 and r.stderr.count("Error: ") == 1 and "bad.jpg" in r.stderr
    answered = json.loads(r.stdout)
    assert [a["query"] for a in answered] == good
    r = CliRunner().invoke(main, ["query", *good, "--store", str(trained_store), "-k", "2", "--json"])
    alone = [json.loads(run("query", f, "--store", trained_store, "-k", 2, "--json").stdout)[0] for f in good]
    assert [[h["path"] for h in a["hits"]] for a in json.loads(r.stdout)] == [[h["path"] for h in a["hits"]]
                                                                            for a in alone]


def test_sample_command(tmp_path):
    r = run("sample", tmp_path / "s", "--per-class", 2)
    assert r.exit_code == 0
    assert len([f for _, _, fs in os.walk(tmp_path / "s") for f in fs]) == 12


@pytest.mark.parametrize("store_count", [0, 2])
def test_query_without_store_needs_one(tmp_path, monkeypatch, store_count, trained_store, sample_dir):
    monkeypatch.chdir(tmp_path)
    os.makedirs("indexes")
    for i in range(store_count):
        shutil.copy(trained_store, f"indexes/{i}.h5")
    msg = _one_line_error(run("query", sample_dir / "ring" / "ring_000.png"))
    assert "--store" in msg


def test_the_command_line_starts_without_torch_or_faiss(trained_store):
    # `hashae --help`, argument errors and `hashae info` answer at once: the model and the index
    # load only when a command needs them (2 s of imports otherwise)
    import subprocess
    import sys
    code = ("import sys, hashae.cli; from click.testing import CliRunner; "
            "r = CliRunner().invoke(hashae.cli.main, ['cluster', '--help']); "
            "assert r.exit_code == 0 and 'graph' in r.output, r.output; "
            f"r = CliRunner().invoke(hashae.cli.main, ['info', '--store', {str(trained_store)!r}]); "
            "assert r.exit_code == 0 and 'items' in r.output, r.output; "
            "import hashae, hashae.model; assert {'SemanticHasher', 'cluster'} <= set(dir(hashae)); "
            "assert {'Hasher', 'ModelState'} <= set(dir(hashae.model)); "
            "loaded = {'torch', 'faiss'} & set(sys.modules); assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
