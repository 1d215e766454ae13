import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from PIL import Image

from conftest import SMALL, shared, store_state
from hashae import Collection, HasherConfig
from hashae.ingest import image_extensions, load_image
from hashae.sample import make_sample
from hashae.storage import StoreError, StoreReader


def _index(store, folder, **kw):
    kw.setdefault("workers", 0)
    kw.setdefault("progress", False)
    return Collection(store).index(str(folder), **kw)


def test_layout_is_the_documented_one(trained_store, sample_dir):
    # the store is one file: no journal or lock left beside it after a finished run
    assert sorted(os.listdir(os.path.dirname(trained_store))) == [os.path.basename(trained_store)]
    with h5py.File(trained_store) as f:
        assert f.attrs["format"] == "hashae" and f.attrs["format_version"] == 1 and f.attrs["bits"] == 32
        assert f.attrs["folder"] == os.path.abspath(sample_dir)
        n = f["codes"].shape[0]
        assert n == 72 and f["codes"].dtype == np.uint8 and f["codes"].shape[1] == 4
        assert f["codes"].chunks is not None and f["codes"].maxshape == (None, 4)
        for name in ("items/path", "items/size", "items/mtime"):
            assert f[name].shape == (n,) and f[name].maxshape == (None,)
        paths = [p.decode() for p in f["items/path"][()]]
        assert paths == sorted(paths) and not any(os.path.isabs(p) for p in paths)
        assert f["items/phash"].shape == (n, 8) and f["items/phash"].dtype == np.uint8
        assert f["items/phash"].maxshape == (None, 8) and f["items/phash"].chunks is not None
        assert "skipped/path" in f and "skipped/reason" in f
        assert f["model"].attrs["format"] == "hashae-model" and "weights" in f["model"]


def test_query_finds_itself_and_an_altered_copy(trained_store, sample_dir, sample_copy, tmp_path):
    # an altered copy (resized, re-encoded as JPEG) is indexed with the model of the first store
    original = sample_copy / "circle" / "circle_003.png"
    Image.open(original).convert("RGB").resize((48, 48)).save(sample_copy / "circle" / "copy.jpg", quality=70)
    store = tmp_path / "copy.h5"
    with Collection.open(trained_store) as base:
        _index(store, sample_copy, model=base.model)
    with Collection.open(store) as c:
        [result] = c.query([str(original)], k=5)
        hits = [h["path"] for h in result["hits"]]
        assert hits[0] == "circle/circle_003.png" and result["hits"][0]["distance"] == 0
        assert "circle/copy.jpg" in hits[:3], result


def test_query_json_shape(trained_store, sample_dir):
    with Collection.open(trained_store) as c:
        out = c.query([str(sample_dir / "ring" / "ring_000.png"), str(sample_dir / "cross" / "cross_001.png")], k=4)
    assert [r["query"] for r in out] == [str(sample_dir / "ring" / "ring_000.png"), str(sample_dir / "cross" / "cross_001.png")]
    for r in out:  # the two-stage ranking orders by "score"; "distance" stays the Hamming distance
        assert set(r) == {"query", "hits"} and len(r["hits"]) == 4
        assert all(set(h) == {"path", "distance", "score"} and isinstance(h["distance"], int)
                   and isinstance(h["score"], float) for h in r["hits"])
        assert [h["score"] for h in r["hits"]] == sorted(h["score"] for h in r["hits"])
    with Collection.open(trained_store) as c:  # --hamming-only: the documented plain shape and order
        plain = c.query([str(sample_dir / "ring" / "ring_000.png")], k=4, hamming_only=True)
    for r in plain:
        assert all(set(h) == {"path", "distance"} for h in r["hits"])
        assert [h["distance"] for h in r["hits"]] == sorted(h["distance"] for h in r["hits"])


def test_retrieval_prefers_the_same_class(trained_store, sample_dir):
    with Collection.open(trained_store) as c:
        codes, paths = c.codes, c.paths()
        labels = np.array([p.split("/")[0] for p in paths])
        d, i = c.search_codes(codes, 6)
    same = (labels[i[:, 1:]] == labels[:, None]).mean()
    assert same > 0.6, same  # chance is 1/6


def test_radius_query(trained_store, sample_dir):
    with Collection.open(trained_store) as c:
        [r] = c.query([str(sample_dir / "square" / "square_002.png")], k=None, radius=3)
    assert _plain(r["hits"][0]) == {"path": "square/square_002.png", "distance": 0}
    assert all(h["distance"] <= 3 for h in r["hits"])


def test_second_run_changes_nothing(trained_store, tmp_path):
    store = tmp_path / "s.h5"
    shutil.copy(trained_store, store)
    before = os.stat(store)
    with Collection.open(store) as c:
        generation = c.reader.generation
    report = Collection(store).index(workers=0, progress=False)  # folder from the store
    assert (report.indexed, report.removed) == (0, 0) and report.unchanged == 72
    with Collection.open(store) as c:
        assert c.reader.generation == generation
    assert os.stat(store).st_mtime_ns == before.st_mtime_ns


def test_a_collection_kept_inside_its_folder_is_not_an_image(trained_store, sample_copy):
    # Pillow names .h5 (a stub that opens nothing): it was listed and skipped as "empty image"
    store = sample_copy / "shapes.h5"
    report = Collection(store).index(str(sample_copy), model=str(trained_store), workers=0, progress=False)
    assert report.indexed == 72
    report = Collection(store).index(workers=0, progress=False)
    assert (report.indexed, report.unchanged, report.skipped) == (0, 72, [])
    (sample_copy / "data.grib").write_bytes(b"GRIB not a picture")
    assert Collection(store).index(workers=0, progress=False).skipped == []


def test_deleted_and_changed_files(trained_store, sample_copy, tmp_path):
    store = tmp_path / "s.h5"
    with Collection.open(trained_store) as base:
        _index(store, sample_copy, model=base.model)
    os.remove(sample_copy / "ring" / "ring_001.png")
    Image.new("RGB", (40, 40), "red").save(sample_copy / "ring" / "ring_002.png")
    Image.new("RGB", (40, 40), "blue").save(sample_copy / "new.png")
    report = _index(store, sample_copy)
    assert (report.indexed, report.removed, report.unchanged) == (2, 1, 70)
    paths, _, _ = store_state(store)
    assert "ring/ring_001.png" not in paths and "new.png" in paths and len(paths) == 72
    # kept and new items both keep their reconstruction errors through the sort of the commit
    # (they were dropped, so every later run re-encoded the whole folder)
    with StoreReader(str(store)) as r:
        assert r.errors() is not None and np.isfinite(r.errors()).all()
    assert _index(store, sample_copy).indexed == 0


def _write_model(trained_store, path):
    with Collection.open(trained_store) as c:
        c.model.save(path)


KILL_SCRIPT = """
import sys
from hashae import Collection, SemanticHasher
model = SemanticHasher.load(sys.argv[3]) if sys.argv[3] != "-" else None
Collection(sys.argv[1]).index(sys.argv[2], model=model, workers=0, progress=False, segment=int(sys.argv[4]))
"""


def _big_folder(sample_dir, dest, copies=6):
    for k in range(copies):
        shutil.copytree(sample_dir, dest / f"part{k}")
    return dest


def test_sigkill_mid_encode_resumes_to_the_same_items(trained_store, sample_dir, tmp_path):
    folder = _big_folder(sample_dir, tmp_path / "photos")
    model = tmp_path / "model.h5"
    _write_model(trained_store, model)
    fresh = tmp_path / "fresh.h5"
    subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(fresh), str(folder), str(model), "8"], check=True)

    killed = tmp_path / "killed.h5"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(killed), str(folder), str(model), "8"])
    journal = f"{killed}.journal"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.isdir(journal) and sum(n.startswith("seg-") for n in os.listdir(journal)) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not os.path.exists(killed)  # nothing committed yet, and no torn file either

    report = _index(killed, folder)  # the next run continues from the journal, model included
    assert report.resumed >= 24
    assert not os.path.exists(journal)
    paths_a, codes_a, phash_a = store_state(fresh)
    paths_b, codes_b, phash_b = store_state(killed)
    assert paths_a == paths_b and len(paths_a) == 6 * 72
    np.testing.assert_array_equal(codes_a, codes_b)
    np.testing.assert_array_equal(phash_a, phash_b)


def test_stale_journal_is_discarded(trained_store, sample_copy, tmp_path):
    store = tmp_path / "s.h5"
    os.makedirs(f"{store}.journal")
    with open(f"{store}.journal/meta.json", "w") as f:
        f.write('{"generation": "something else"}')
    with Collection.open(trained_store) as base:
        report = _index(store, sample_copy, model=base.model)
    assert report.items == 72 and report.resumed == 0


def test_robustness_and_photos_folders_index_without_fatal_errors(trained_store, tmp_path):
    with Collection.open(trained_store) as base:
        model = base.model
    exts = image_extensions()
    for name in ("robustness", "photos"):
        folder = shared(name)
        store = tmp_path / f"{name}.h5"
        report = Collection(store).index(folder, model=model, workers=2, progress=False)
        n_files = sum(os.path.splitext(f)[1].lower() in exts and not f.startswith(".")
                      for _, _, files in os.walk(folder) for f in files)
        assert report.items > 0 and len(report.skipped) > 0
        assert report.items + len(report.skipped) == n_files  # every file accounted for, once
        assert all(reason.strip() and "\n" not in reason for _, reason in report.skipped)
        skipped = {p for p, _ in report.skipped}
        if name == "photos":
            assert "truncated.jpg" in skipped
        else:
            assert not any(p.startswith("decodable/") for p in skipped) or len(
                [p for p in skipped if p.startswith("decodable/")]) < 10
            assert any(p.startswith("broken_or_hostile/") for p in skipped)


def test_grey_folder_gets_a_one_channel_model(tmp_path):
    folder = tmp_path / "grey"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8), "L").save(folder / f"{i}.png")
    _index(tmp_path / "g.h5", folder, config=HasherConfig(bits=16, **dict(SMALL, epochs=2, pretrain_epochs=1)))
    with Collection.open(tmp_path / "g.h5") as c:
        assert c.model.config.channels == 1 and len(c) == 20


def test_errors(trained_store, sample_dir, tmp_path):
    with pytest.raises(FileNotFoundError):
        _index(tmp_path / "x.h5", tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no image files"):
        _index(tmp_path / "x.h5", empty)
    not_hashae = tmp_path / "other.h5"
    with h5py.File(not_hashae, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(StoreError, match="not a hashae collection"):
        _index(not_hashae, sample_dir)
    text = tmp_path / "text.h5"
    text.write_text("hello")
    with pytest.raises(StoreError, match="not a readable HDF5"):
        Collection.open(text)
    copy = tmp_path / "c.h5"
    shutil.copy(trained_store, copy)
    with pytest.raises(StoreError, match="32-bit codes but --bits asks for 64"):
        _index(copy, sample_dir, bits=64)


def test_create_from_codes_then_search_equals_the_index(tmp_path):
    from hashae import HammingIndex
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 256, (3000, 8), dtype=np.uint8)
    paths = [f"d{i % 7}/img_{i:05d}.jpg" for i in range(3000)]
    with Collection.create(tmp_path / "c.h5", codes, paths) as c:
        assert len(c) == 3000 and c.paths() == paths and np.array_equal(c.codes, codes)
        d1, i1 = c.search_codes(codes[:50], 7)
    d2, i2 = HammingIndex.from_codes(codes).search(codes[:50], 7)
    np.testing.assert_array_equal(d1, d2)
    np.testing.assert_array_equal(i1, i2)
    with pytest.raises(FileExistsError):
        Collection.create(tmp_path / "c.h5", codes, paths)
    with pytest.raises(ValueError, match="paths"):
        Collection.create(tmp_path / "d.h5", codes, paths[:10])


def test_query_item_sharing_its_code_with_many_comes_first(trained_store, sample_dir, tmp_path):
    # 40 items with one identical code: the query file is the 31st, beyond the k nearest that
    # FAISS returns (ties in id order), and must still be listed first
    with Collection.open(trained_store) as c:
        model = c.model
    names = sorted(os.listdir(sample_dir / "ring"))
    query = sample_dir / "ring" / names[0]
    code = model.encode(load_image(str(query), model.config.image_size, model.config.channels)[None])
    paths = [f"a/{i:03d}.png" for i in range(30)] + [f"ring/{names[0]}"] + [f"z/{i:03d}.png" for i in range(9)]
    store = tmp_path / "same.h5"
    with Collection.create(store, np.repeat(code, 40, axis=0), paths, folder=str(sample_dir), model=model) as c:
        [r] = c.query([str(query)], k=3)
        assert c.reader.find_path("nothing/here.png") is None
    assert _plain(r["hits"][0]) == {"path": f"ring/{names[0]}", "distance": 0}
    assert [h["path"] for h in r["hits"][1:]] == ["a/000.png", "a/001.png"]


def test_workers_encode_after_training_in_the_same_process(tmp_path):
    # training uses torch on every core; decode+encode workers forked afterwards must not
    # hang, and their codes must equal those encoded in one process
    folder = tmp_path / "many"
    make_sample(str(folder), per_class=25, seed=3)  # 150 files: a chunk for each worker
    script = f"""
import sys, numpy as np
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
from conftest import SMALL
from hashae import Collection, HasherConfig
cfg = HasherConfig(bits=32, threads=2, **dict(SMALL, epochs=2, pretrain_epochs=1))
a = Collection(sys.argv[1] + '/a.h5'); a.index(sys.argv[2], config=cfg, workers=2, progress=False)
m = a.model
b = Collection(sys.argv[1] + '/b.h5'); b.index(sys.argv[2], model=m, workers=0, progress=False)
c = Collection(sys.argv[1] + '/c.h5'); c.index(sys.argv[2], model=m, workers=2, progress=False)
assert a.paths() == b.paths() == c.paths() and len(a) == 150
assert np.array_equal(a.codes, b.codes) and np.array_equal(b.codes, c.codes)
print('ok')
"""
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path), str(folder)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def _plain(hit: dict) -> dict:
    """A hit's path and Hamming distance (the score beside them is the ranking's)."""
    return {"path": hit["path"], "distance": hit["distance"]}
