"""Hostile image folders and concurrent use: the run completes, every bad file is reported with
a reason, memory stays bounded, and the store stays intact."""
import os
import resource
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import shared
from hashae import Collection, load_image, scan
from hashae.cli import main
from hashae.storage.lock import StoreBusy, StoreLock
from hashae.ingest import ImageError, load_images


@pytest.fixture
def hostile(tmp_path, sample_dir):
    d = tmp_path / "hostile"
    d.mkdir()
    for name in ("circle/circle_000.png", "ring/ring_000.png"):
        shutil.copy(sample_dir / name, d / os.path.basename(name))
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("this is not a JPEG")
    (d / "x.jpg").mkdir()  # a directory named like an image: walked into, not decoded
    shutil.copy(sample_dir / "cross" / "cross_000.png", d / "x.jpg" / "inside.png")
    raw = os.fsencode(str(d)) + b"/caf\xe9-\xff.png"  # not UTF-8
    shutil.copy(sample_dir / "square" / "square_000.png", raw)
    os.symlink(d, d / "loop")  # a symlink loop back to the top
    os.symlink(d / "missing.png", d / "dangling.png")
    Image.new("CMYK", (30, 20), (10, 200, 30, 0)).save(d / "cmyk.jpg")
    Image.new("I;16", (20, 20), 40000).save(d / "deep.png")
    Image.new("LA", (20, 20), (90, 0)).save(d / "alpha.png")
    return d


def test_hostile_folder_indexes_with_reasons(hostile, trained_store, tmp_path):
    with Collection.open(trained_store) as base:
        report = Collection(tmp_path / "h.h5").index(str(hostile), model=base.model, workers=2, progress=False)
    with Collection.open(tmp_path / "h.h5") as c:
        paths = c.paths()
    skipped = dict(report.skipped)
    assert set(skipped) == {"empty.jpg", "text.jpg", "dangling.png"}
    assert all(r and "\n" not in r for r in skipped.values())
    assert "broken link" in skipped["dangling.png"]
    expected = {"circle_000.png", "ring_000.png", "x.jpg/inside.png", "caf\udce9-\udcff.png", "cmyk.jpg",
                "deep.png", "alpha.png"}
    assert set(paths) == expected  # the loop was not followed: nothing appears twice


def test_odd_modes_convert_sensibly(tmp_path):
    Image.new("I;16", (8, 8), 65535).save(tmp_path / "white16.png")
    Image.new("LA", (8, 8), (0, 0)).save(tmp_path / "clear.png")  # fully transparent -> white
    Image.new("CMYK", (8, 8), (0, 0, 0, 255)).save(tmp_path / "black.jpg")
    assert load_image(tmp_path / "white16.png", 8).min() == 255
    assert load_image(tmp_path / "clear.png", 8).min() == 255
    assert load_image(tmp_path / "black.jpg", 8).max() < 40
    assert load_image(tmp_path / "black.jpg", 8, channels=1).shape == (8, 8, 1)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), "white")
    img.paste((0, 0, 0), (0, 0, 20, 20))  # left half black
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif)
    a = load_image(tmp_path / "rot.jpg", 16)
    assert a[:8].mean() < 60 and a[8:].mean() > 200  # black ends up on top


def test_file_deleted_between_scan_and_decode(sample_copy):
    entries, _ = scan(sample_copy)
    os.remove(sample_copy / entries[0].path)
    _, ok, failures = load_images([str(sample_copy / e.path) for e in entries[:5]], 16)
    assert list(ok) == [1, 2, 3, 4] and failures[0][0] == 0 and "vanished" in failures[0][1]


def test_hostile_set_memory_stays_bounded(trained_store, tmp_path):
    folder = shared("robustness/broken_or_hostile")
    code = ("import sys, resource; from hashae import Collection;"
            "m = Collection.open(sys.argv[1]).model;"
            "r = Collection(sys.argv[3]).index(sys.argv[2], model=m, workers=2, progress=False);"
            "print(r.items, len(r.skipped))")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = subprocess.run([sys.executable, "-c", code, str(trained_store), folder, str(tmp_path / "b.h5")],
                         capture_output=True, text=True, timeout=300, check=True)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    items, skipped = map(int, out.stdout.split())
    assert skipped > 20
    assert max(peak_kb, before) < 3 * 1024 * 1024, f"peak RSS {peak_kb / 1024:.0f} MiB"  # a 4.36 GP bomb is refused


@pytest.mark.parametrize("name", ["decompression_bomb.gif", "decompression_bomb.ico"])
def test_decompression_bombs_are_refused(name):
    path = os.path.join(shared("robustness/broken_or_hostile"), name)
    if not os.path.exists(path):
        pytest.skip(f"{name} not in the shared set")
    with pytest.raises(ImageError):
        load_image(path, 32)


def test_second_writer_fails_clearly_and_store_stays_intact(trained_store, sample_dir, tmp_path):
    store = tmp_path / "s.h5"
    shutil.copy(trained_store, store)
    before = store.read_bytes()
    with StoreLock(str(store)):  # as if another `hashae index` were running
        with pytest.raises(StoreBusy):
            Collection(store).index(str(sample_dir), workers=0, progress=False)
        r = CliRunner().invoke(main, ["index", str(sample_dir), "--store", str(store), "--quiet"])
        assert r.exit_code == 1 and "another hashae index is writing" in r.output
    assert store.read_bytes() == before


def test_lock_file_goes_with_the_writer_and_a_stale_one_is_not_trusted(tmp_path, monkeypatch):
    import hashae.storage.lock as lock_module
    store = str(tmp_path / "s.h5")
    lock = StoreLock(store)
    with lock:
        assert os.path.exists(store + ".lock")
        stale = os.open(store + ".lock", os.O_RDWR)  # a second writer opened it, not yet locked
    assert not os.path.exists(store + ".lock")  # no empty .lock file left beside the store
    # that writer now locks the deleted file: it must notice and lock the file at the path instead
    real_open, calls = os.open, []
    monkeypatch.setattr(lock_module.os, "open", lambda *a: calls.append(a) or (stale if len(calls) == 1 else real_open(*a)))
    second = StoreLock(store)
    with second:
        assert len(calls) == 2 and second.fd != stale and lock_module._same_file(second.fd, store + ".lock")
        monkeypatch.setattr(lock_module.os, "open", real_open)
        with pytest.raises(StoreBusy):
            StoreLock(store).__enter__()
    assert not os.path.exists(store + ".lock")


def test_queries_during_an_index_run_see_a_consistent_store(trained_store, sample_copy, tmp_path):
    store = tmp_path / "s.h5"
    with Collection.open(trained_store) as base:
        model = base.model
    Collection(store).index(str(sample_copy), model=model, workers=0, progress=False)
    for k in range(3):
        shutil.copytree(sample_copy / "circle", sample_copy / f"more{k}")
    errors, sizes, stop = [], set(), threading.Event()

    def reader():
        while not stop.is_set():
            try:
                with Collection.open(store) as c:
                    n = len(c)
                    assert len(c.paths()) == n and c.codes.shape[0] == n
                    hits = c.search_codes(c.codes[:1], 3)[1]
                    assert (hits < n).all()
                    sizes.add(n)
            except Exception as e:  # noqa: BLE001 - collected and reported below
                errors.append(repr(e))

    t = threading.Thread(target=reader)
    t.start()
    try:
        Collection(store).index(str(sample_copy), workers=0, progress=False, segment=4)
    finally:
        stop.set()
        t.join()
    assert not errors, errors[:3]
    assert sizes <= {72, 72 + 36} and 72 in sizes


def test_store_on_a_full_disk_keeps_the_old_store(trained_store, sample_copy, tmp_path):
    store = tmp_path / "s.h5"
    shutil.copy(trained_store, store)
    before = store.read_bytes()
    for k in range(3):
        shutil.copytree(sample_copy / "ring", sample_copy / f"more{k}")
    # RLIMIT_FSIZE makes writes past 64 KiB fail with EFBIG, as a full disk fails them
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN);"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536));"
            "from hashae.cli import main; sys.exit(main())")
    out = subprocess.run([sys.executable, "-c", code, "index", str(sample_copy), "--store", str(store), "--quiet",
                          "--workers", "0"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr[-2000:]
    assert out.stderr.strip().startswith("Error:") and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert store.read_bytes() == before
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]


def test_non_utf8_names_round_trip(tmp_path, sample_dir, trained_store):
    d = tmp_path / "names"
    d.mkdir()
    raw = os.fsencode(str(d)) + b"/\xff\xfe.png"
    shutil.copy(sample_dir / "ring" / "ring_003.png", raw)
    with Collection.open(trained_store) as base:
        Collection(tmp_path / "n.h5").index(str(d), model=base.model, workers=0, progress=False)
    with Collection.open(tmp_path / "n.h5") as c:
        [p] = c.paths()
        assert os.fsencode(p) == b"\xff\xfe.png" and os.path.exists(c.item_path(p))
        assert c.query([os.fsdecode(raw)], k=1)[0]["hits"][0]["distance"] == 0
    assert np.array_equal(load_image(os.fsdecode(raw), 8), load_image(sample_dir / "ring" / "ring_003.png", 8))
