"""Rough edges a new user hits in the first hour (issue: a new user's first hour)."""
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SMALL, HasherConfig, cluster_images
from hashae import Collection, SemanticHasher
from hashae.cli import main

CLI = [sys.executable, "-c", "import sys; from hashae.cli import main; sys.exit(main())"]


def run(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def test_ctrl_c_while_encoding_prints_no_worker_traceback(sample_dir):
    # the encoding workers are busy (a slow encoder) when the whole process group gets SIGINT,
    # as a terminal's Ctrl-C sends it; the parent stops as the CLI does, with one line
    script = """
import sys, time
from types import SimpleNamespace
from hashae.ingest import iter_batches
def slow(images):  # what model.hasher.Encoded holds, without loading torch here
    time.sleep(0.3)
    return SimpleNamespace(codes=images[:, 0, 0, :1], error=images[:, 0, 0, 0] / 255, stats=None, residual=None)
try:
    for b in iter_batches(sys.argv[1:] * 20, 16, 3, workers=2, chunk=4, encode=slow):
        print("batch", flush=True)
except KeyboardInterrupt:
    print("Aborted!", file=sys.stderr)
"""
    files = [str(p) for p in sorted(sample_dir.rglob("*.png"))]
    p = subprocess.Popen([sys.executable, "-c", script, *files], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    assert p.stdout.readline() == "batch\n"
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert err == "Aborted!\n", err[-3000:]


def test_epochs_given_are_the_epochs_trained(sample_copy, tmp_path):
    r = run("index", sample_copy, "--store", tmp_path / "e.h5", "--epochs", "1", "--image-size", "16", "--quiet",
            "--workers", "0")
    assert r.exit_code == 0, r.output
    with Collection.open(tmp_path / "e.h5") as c:
        assert (c.model.config.epochs, c.model.config.min_steps) == (1, 0)
    images, _ = cluster_images(n_clusters=2, per_cluster=10, size=16)
    m = SemanticHasher(**dict(SMALL, channels=1, bits=16, epochs=1, min_steps=0)).fit(images, progress=False)
    assert len(m.history_.phase("fine-tune")) == 1
    assert "default 15" in run("index", "--help").output


def test_a_closed_pipe_ends_quietly(trained_store):
    p = subprocess.Popen([*CLI, "cluster", "--store", str(trained_store)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()  # `| head -0`: the reader is gone before the first line
    _, err = p.communicate(timeout=120)
    # nothing but the graph method's one line on how many groups it chose: no traceback
    assert p.returncode == 0 and [line.split(" chose ")[0] for line in err.decode().splitlines()] == [
        "graph: the neighbour graph's modularity"], err


def test_queries_answer_what_they_can_and_name_what_they_cannot(trained_store, sample_dir, tmp_path):
    good = sample_dir / "ring" / "ring_001.png"
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    r = CliRunner().invoke(main, ["query", str(tmp_path / "missing.png"), str(good), str(tmp_path / "broken.jpg"),
                                  "--store", str(trained_store), "--json"])
    assert r.exit_code == 1
    [answer] = json.loads(r.stdout)
    assert answer["query"] == str(good) and answer["hits"][0]["path"] == "ring/ring_001.png"
    errors = r.stderr.splitlines()
    assert len(errors) == 2 and "missing.png: no such file" in errors[0] and "broken.jpg" in errors[1]


def test_arguments_out_of_range_are_refused_or_explained(trained_store, sample_copy):
    assert run("cluster", "--store", trained_store, "--method", "kmeans", "-k", "0").exit_code == 2
    assert run("index", sample_copy, "--workers", "-1").exit_code == 2
    assert run("query", sample_copy / "ring" / "ring_000.png", "--store", trained_store, "-k", "0").exit_code == 2
    r = CliRunner().invoke(main, ["cluster", "--store", str(trained_store), "--method", "kmeans", "-k", "1000",
                                  "--json", "--quiet"])
    assert r.exit_code == 0 and "every distinct code is a group of its own" in r.stderr
    with Collection.open(trained_store) as c:
        assert len(json.loads(r.stdout)) == len(np.unique(c.codes, axis=0))


def test_default_store_names_the_candidates_and_follows_hashae_store(trained_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("indexes")
    for name in ("a.h5", "b.h5"):
        shutil.copy(trained_store, os.path.join("indexes", name))
    r = run("info")
    assert r.exit_code == 1 and "indexes/a.h5, indexes/b.h5" in r.output and "HASHAE_STORE" in r.output
    r = run("info", env={"HASHAE_STORE": "indexes/b.h5"})
    assert r.exit_code == 0 and "indexes/b.h5" in r.output


def test_the_summary_separates_training_and_encoding(sample_copy, tmp_path):
    first = Collection(tmp_path / "s.h5").index(str(sample_copy), config=HasherConfig(bits=16, **dict(SMALL, epochs=1)),
                                                workers=0, progress=False)
    assert first.trained and first.encoded == 72 and first.train_seconds > 0
    assert "training" in str(first) and "encoding" in str(first) and "images/s" in str(first)
    again = Collection(tmp_path / "s.h5").index(str(sample_copy), workers=0, progress=False)
    assert "images/s" not in str(again) and "training" not in str(again)


def test_info_during_a_first_index_run_says_so(tmp_path):
    (tmp_path / "new.h5.journal").mkdir()
    r = run("info", "--store", tmp_path / "new.h5")
    assert r.exit_code == 1 and "a first index run is in progress" in r.output


def test_codes_of_items_match_the_stored_codes(trained_store):
    with Collection.open(trained_store) as c:
        np.testing.assert_array_equal(c.codes_of([3, 0, 3]), c.codes[[3, 0, 3]])


def test_output_for_scripts(trained_store, sample_dir, tmp_path):
    import csv
    import io
    q = sample_dir / "cross" / "cross_003.png"
    r = run("query", q, "--store", trained_store, "--csv", "-k", "3")
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert r.exit_code == 0 and rows[0] == ["query", "rank", "path", "distance", "score"] and len(rows) == 4
    assert rows[1][:4] == [str(q), "1", "cross/cross_003.png", "0"] and float(rows[1][4]) <= float(rows[2][4])
    r = run("query", q, "--store", trained_store, "--csv", "-k", "3", "--hamming-only")  # no score to give
    assert [row[4] for row in csv.reader(io.StringIO(r.stdout))][1:] == ["", "", ""]
    r = run("query", q, "--store", trained_store, "--json", "--exclude-self", "-k", "3", "--absolute")
    hits = json.loads(r.stdout)[0]["hits"]
    assert len(hits) == 3 and str(q) not in [h["path"] for h in hits] and all(os.path.isabs(h["path"]) for h in hits)
    assert all(os.path.exists(h["path"]) for h in hits)
    r = run("query", sample_dir / "ring", "--store", trained_store, "--json", "-k", "1")
    answers = json.loads(r.stdout)
    assert len(answers) == 12 and all(a["hits"][0]["distance"] == 0 for a in answers)
    assert [a["query"] for a in answers] == [str(p) for p in sorted((sample_dir / "ring").iterdir())]
    r = run("cluster", "--store", trained_store, "--csv", "--absolute")
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == ["cluster", "path"] and len(rows) == 73 and all(os.path.isabs(p) for _, p in rows[1:])
    with Collection.open(trained_store) as c:
        assert sorted(os.path.relpath(p, c.folder) for _, p in rows[1:]) == sorted(c.paths())
    r = run("duplicates", "--store", trained_store, "--csv", "--quiet")
    assert r.exit_code == 0 and r.stdout.splitlines()[0] == "cluster,path"


def test_duplicates_you_can_act_on(trained_store, sample_dir, tmp_path):
    from PIL import Image, ImageFilter
    folder = tmp_path / "dups"
    folder.mkdir()
    for name in ("ring/ring_000.png", "circle/circle_000.png", "cross/cross_000.png"):
        shutil.copy(sample_dir / name, folder / os.path.basename(name))
    original = Image.open(folder / "ring_000.png")
    original.resize((128, 128)).save(folder / "ring_big.png")  # the largest file
    original.save(folder / "ring_copy.jpg", quality=90)
    original.filter(ImageFilter.GaussianBlur(1.5)).save(folder / "ring_blur.png")
    os.utime(folder / "ring_copy.jpg", ns=(10**18, 10**18))  # the oldest
    with Collection.open(trained_store) as base:
        Collection(tmp_path / "d.h5").index(str(folder), model=base.model, workers=0, progress=False)
    store = str(tmp_path / "d.h5")
    members = {"ring_000.png", "ring_big.png", "ring_copy.jpg", "ring_blur.png"}
    for rule, kept in (("largest", "ring_big.png"), ("oldest", "ring_copy.jpg"), ("sharpest", "ring_000.png")):  # upscaling softens
        r = run("duplicates", "--store", store, "--json", "--keep", rule, "--quiet")
        [group] = json.loads(r.stdout)
        assert set(group["paths"]) == members and group["keep"] == kept, (rule, group)
        assert {d["path"] for d in group["distances"]} == members
        assert [d["code"] for d in group["distances"] if d["path"] == kept] == [0]
    r = run("duplicates", "--store", store, "--list-extra", "--keep", "oldest", "--quiet")
    assert sorted(r.stdout.splitlines()) == sorted(str(folder / p) for p in members - {"ring_copy.jpg"})
    r = run("duplicates", "--store", store, "--list-extra", "-0", "--quiet")
    assert sorted(r.stdout.split("\0")[:-1]) == sorted(str(folder / p) for p in members - {"ring_big.png"})
    assert all(os.path.exists(folder / p) for p in members)  # hashae never deletes
    r = run("duplicates", "--store", store, "--keep", "largest", "--quiet")
    assert r.exit_code == 0 and "keep ring_big.png (largest)" in r.stdout
    assert run("duplicates", "--store", store, "--keep", "largest", "--csv").exit_code == 2  # not silently ignored


def test_cluster_sheets_show_the_centre_say_what_is_hidden_and_page(trained_store, tmp_path):
    from hashae.codes import pack
    from hashae.sheet import cluster_sheets, wrap
    rng = np.random.default_rng(0)
    centre = rng.integers(0, 2, 64)
    far = [centre ^ (rng.random(64) < 0.3) for _ in range(3)]  # listed first, far from the centre
    near = [centre ^ (np.arange(64) == i) for i in range(3)]  # one bit from the centre
    codes = pack(np.array(far + near + [centre]))
    names = [f"{'far' if i < 3 else 'near'}{i}.png" for i in range(7)]
    with Collection.create(tmp_path / "c.h5", codes, names) as c:
        [ordered] = c.by_centre([names])
    assert ordered[0] == "near6.png" and set(ordered[1:4]) == {"near3.png", "near4.png", "near5.png"}
    index = cluster_sheets([[f"g0/{i}.png" for i in range(40)]] + [[f"g{n}/a.png"] for n in range(1, 60)],
                           "/photos", lambda p: str(tmp_path / p), str(tmp_path / "sheets"))
    first = open(index).read()
    assert "#0: 40 images (36 shown, the nearest to the group's centre; 4 more not shown)" in first
    assert 'href="index-2.html"' in first and "#50:" not in first
    assert "#59: 1 images" in (tmp_path / "sheets" / "index-2.html").read_text()
    assert wrap("a" * 10, 128) == ["a" * 10]
    long = wrap("folder/" * 20 + "the-end.png", 128)
    assert len(long) == 3 and "..." in "".join(long) and "".join(long).endswith("the-end.png")
    r = run("cluster", "--store", trained_store, "--method", "exact", "--sheets", tmp_path / "s2", "--quiet")
    assert r.exit_code == 0 and (tmp_path / "s2" / "index-2.html").exists()  # 54 exact codes: two pages


def test_effort_levels_train_encode_repeat_and_are_recorded(tmp_path):
    from hashae.sample import make_sample
    folder = tmp_path / "tiny"
    make_sample(str(folder), per_class=2, seed=5)
    small = dict(image_size=16, hidden=(64, 32), bits=16)
    for effort in ("fast", "default", "best"):
        codes = []
        for run_no in range(2 if effort == "fast" else 1):
            store = tmp_path / f"{effort}{run_no}.h5"
            cfg = HasherConfig.for_effort(effort, **small)
            report = Collection(store).index(str(folder), config=cfg, workers=0, progress=False)
            assert report.items == 12 and report.trained
            with Collection.open(store) as c:
                assert c.model.config.effort == effort and c.info()["model"]["effort"] == effort
                codes.append(c.codes)
        if effort == "fast":
            np.testing.assert_array_equal(codes[0], codes[1])  # same seed, same codes
    assert HasherConfig.for_effort("fast", epochs=7).epochs == 7  # an explicit setting wins
    r = run("index", folder, "--store", tmp_path / "cli.h5", "--effort", "fast", "--image-size", "16", "--quiet",
            "--workers", "0", "--precision", "float32")
    assert r.exit_code == 0, r.output
    assert "effort=fast trained_in=float32" in run("info", "--store", tmp_path / "cli.h5").output
    with Collection.open(tmp_path / "cli.h5") as c:
        assert c.model.config.precision == "float32"


def test_effort_time_stops_growing_with_the_folder():
    """A recipe trains a large sample for at most its step bound (whole epochs, one at least),
    so a folder of 50,000 images costs about what one of 10,000 does; small folders and an
    explicit epoch count are untouched."""
    cfg = HasherConfig.for_effort("default")
    per_epoch = lambda n: -(-n // cfg.batch_size)  # noqa: E731
    floor = cfg.steps_floor
    assert cfg.epochs_for(9_000, cfg.epochs, floor, cfg.max_steps) == cfg.epochs  # 10,000 images
    assert cfg.epochs_for(100, cfg.epochs, floor, cfg.max_steps) * per_epoch(100) >= floor
    big = cfg.epochs_for(45_000, cfg.epochs, floor, cfg.max_steps)
    assert 1 <= big < cfg.epochs and big * per_epoch(45_000) <= cfg.max_steps
    assert cfg.epochs_for(10_000_000, cfg.epochs, floor, cfg.max_steps) == 1
    levels = [HasherConfig.for_effort(e).max_steps for e in ("fast", "default", "best")]
    assert levels == sorted(levels)
    assert HasherConfig.for_effort("default", epochs=40).max_steps is None  # --epochs N is N epochs
    with pytest.raises(ValueError, match="max_steps"):
        HasherConfig(max_steps=0).validate()


def test_contact_sheet_tiles_keep_the_aspect_and_name_the_query(trained_store, sample_dir, tmp_path, monkeypatch):
    from PIL import Image
    from hashae.sheet import TILE, contact_sheet
    Image.new("RGB", (300, 100), (200, 30, 30)).save(tmp_path / "wide.png")
    sheet = np.asarray(Image.open(contact_sheet([(str(tmp_path / "wide.png"), "query: wide.png")],
                                                str(tmp_path / "s.png"))))
    tile = sheet[:TILE, :TILE]
    red = (tile[..., 0] > 150) & (tile[..., 1] < 80)
    rows, cols = np.flatnonzero(red.any(1)), np.flatnonzero(red.any(0))
    assert 2.7 < (cols[-1] - cols[0] + 1) / (rows[-1] - rows[0] + 1) < 3.3  # 3:1, not a stretched square
    import hashae.sheet
    seen, real = [], hashae.sheet.contact_sheet
    monkeypatch.setattr(hashae.sheet, "contact_sheet", lambda tiles, out: seen.append(tiles) or real(tiles, out))
    r = run("query", sample_dir / "ring" / "ring_000.png", "--store", trained_store, "--sheet", tmp_path / "q.png")
    assert r.exit_code == 0 and (tmp_path / "q.png").exists()
    assert seen[0][0][1] == "query: ring_000.png"
