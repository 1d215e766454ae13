"""Hostile image folders and concurrent use: the run completes, every bad file is reported with
a reason, memory stays bounded, and the store stays intact."""
import json
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

from conftest import one_file_collection, shared
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


def _cli(*args, limit=None, timeout=120):
    """Run the `hashae` command in a fresh process (optionally under a file-size limit)."""
    code = "import sys; from hashae.cli import main; sys.exit(main())"
    if limit:
        code = (f"import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN);"
                f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); " + code)
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_write_failures_at_any_size_end_with_one_error_line(trained_store, sample_copy, tmp_path):
    # HDF5 used to meet the write error itself and h5py could crash closing the file (exit 139)
    size = os.path.getsize(trained_store)
    (sample_copy / "ring" / "ring_000.png").touch()  # one changed file: the run commits a new store
    limits = [4096, 20_000] + [int(size * f) for f in (0.5, 0.8, 0.9, 0.95, 0.99)]
    for limit in limits:
        store = tmp_path / "s.h5"
        shutil.copy(trained_store, store)
        before = store.read_bytes()
        out = _cli("index", sample_copy, "--store", store, "--quiet", "--workers", "0", limit=limit)
        assert out.returncode == 1, (limit, out.returncode, out.stderr[-2000:])
        assert out.stderr.startswith("Error: cannot write") and out.stderr.count("\n") == 1, (limit, out.stderr)
        assert store.read_bytes() == before
        assert sorted(os.listdir(tmp_path)) == ["s.h5", "s.h5.journal", "shapes"], (limit, os.listdir(tmp_path))
        shutil.rmtree(tmp_path / "s.h5.journal")


def test_a_fresh_run_that_cannot_write_its_journal_ends_cleanly(sample_copy, tmp_path):
    out = _cli("index", sample_copy, "--store", tmp_path / "s.h5", "--quiet", "--workers", "0", "--epochs", "1",
               "--image-size", "16", limit=50_000)
    assert out.returncode == 1 and out.stderr.startswith("Error: cannot write"), out.stderr[-2000:]
    assert out.stderr.count("\n") == 1 and not os.path.exists(tmp_path / "s.h5")
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f or f.endswith(".lock")]


def test_the_next_writer_removes_temporaries_a_killed_commit_left(trained_store, sample_copy, tmp_path):
    store = tmp_path / "s.h5"
    shutil.copy(trained_store, store)
    (tmp_path / "s.h5.tmp-4242").write_bytes(b"\0" * 100_000)  # a commit killed half-way
    (sample_copy / "ring" / "ring_000.png").touch()
    Collection(store).index(str(sample_copy), workers=0, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["s.h5", "shapes"]


def test_two_writers_through_a_symbolic_link_exclude_each_other(trained_store, sample_copy, tmp_path):
    store, link = tmp_path / "s.h5", tmp_path / "L.h5"
    shutil.copy(trained_store, store)
    os.symlink("s.h5", link)
    (sample_copy / "ring" / "ring_000.png").touch()
    with StoreLock(str(store)):
        with pytest.raises(StoreBusy):
            Collection(link).index(str(sample_copy), workers=0, progress=False)
        # the lock is taken before a --model is read: a busy store is refused at once, even
        # when the model named is not there at all
        out = _cli("index", sample_copy, "--store", link, "--model", tmp_path / "nothing.h5", "--quiet")
        assert out.returncode == 1 and "another hashae index is writing" in out.stderr, out.stderr
    report = Collection(link).index(str(sample_copy), workers=0, progress=False)
    assert report.indexed == 1 and os.path.islink(link) and os.readlink(link) == "s.h5"


def test_links_out_of_the_folder_are_not_followed_unless_asked(trained_store, sample_dir, tmp_path):
    d, outside = tmp_path / "photos", tmp_path / "elsewhere"
    shutil.copytree(sample_dir / "circle", d)
    shutil.copytree(sample_dir / "ring", outside)
    os.symlink(outside, d / "out")  # a folder elsewhere
    os.symlink(outside / "ring_001.png", d / "one.png")  # a file elsewhere
    os.symlink(d / "circle_001.png", d / "inside.png")  # a link that stays inside
    entries, skipped = scan(d)
    assert {"out", "one.png"} == {p for p, _ in skipped} and all("--follow-links" in r for _, r in skipped)
    assert "inside.png" in {e.path for e in entries} and not any(e.path.startswith("out/") for e in entries)
    with Collection.open(trained_store) as base:
        report = Collection(tmp_path / "l.h5").index(str(d), model=base.model, workers=0, progress=False,
                                                     follow_links=True)
    assert report.items == 12 + 1 + 1 + 12 and not report.skipped


def test_names_with_terminal_escapes_are_shown_escaped(trained_store, sample_dir, tmp_path):
    name = "a\x1b[2J\x1b]0;owned\x07\nfake: 0 hits.png"
    store, image = one_file_collection(trained_store, sample_dir, tmp_path / "evil", name)
    r = CliRunner().invoke(main, ["query", str(image), "--store", str(store), "-k", "1"])
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.output and "\x07" not in r.output and len(r.output.splitlines()) == 2
    assert "\\x1b[2J" in r.output and "\\n" in r.output
    r = CliRunner().invoke(main, ["query", str(image), "--store", str(store), "--json"])
    assert json.loads(r.stdout)[0]["hits"][0]["path"] == name  # JSON keeps the name exact


def test_an_empty_folder_does_not_empty_a_collection(trained_store, tmp_path):
    store = tmp_path / "s.h5"
    shutil.copy(trained_store, store)
    before = store.read_bytes()
    (tmp_path / "unmounted").mkdir()
    r = CliRunner().invoke(main, ["index", str(tmp_path / "unmounted"), "--store", str(store), "--quiet"])
    assert r.exit_code == 1 and "--allow-shrink" in r.output and r.output.count("\n") == 1, r.output
    assert store.read_bytes() == before
    r = CliRunner().invoke(main, ["index", str(tmp_path / "unmounted"), "--store", str(store), "--quiet",
                                  "--allow-shrink"])
    assert r.exit_code == 0, r.output
    with Collection.open(store) as c:
        assert len(c) == 0


def test_a_fifo_in_place_of_an_image_is_reported_not_waited_on(sample_copy):
    entries, _ = scan(sample_copy)
    victim = sample_copy / entries[0].path
    os.remove(victim)
    os.mkfifo(victim)  # swapped in between scan and decode
    done = []
    t = threading.Thread(target=lambda: done.append(load_images([str(sample_copy / e.path)
                                                                 for e in entries[:3]], 16)), daemon=True)
    t.start()
    t.join(60)
    assert done, "decoding blocked on a FIFO"
    _, ok, failures = done[0]
    assert list(ok) == [1, 2] and "not a regular file (FIFO)" in failures[0][1]


def test_huge_images_decode_in_bounded_memory(tmp_path):
    # 36 megapixels of RGBA (144 MB of pixels); converting it whole took 5.7x that
    path = tmp_path / "huge.png"
    Image.new("RGBA", (6000, 6000), (10, 200, 30, 128)).save(path)
    code = ("import resource, sys; from hashae import load_image; base = resource.getrusage(resource.RUSAGE_SELF)"
            ".ru_maxrss; a = load_image(sys.argv[1], 32); assert a.shape == (32, 32, 3), a.shape;"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout) < 4 * 144, out.stdout  # MB


def test_a_decode_that_takes_too_long_is_reported(tmp_path, monkeypatch):
    import hashae.ingest.decode as decode
    path = tmp_path / "slow.png"
    Image.new("RGB", (3000, 3000), (10, 20, 30)).save(path)
    monkeypatch.setattr(decode, "DECODE_SECONDS", 0.001)
    with pytest.raises(ImageError, match="decoding took longer than"):
        load_image(path, 16)
    monkeypatch.setattr(decode, "DECODE_SECONDS", 60.0)
    assert load_image(path, 16).shape == (16, 16, 3)


def test_a_chunk_bounds_each_file_and_leaves_the_alarm_as_it_was(tmp_path, monkeypatch):
    # a worker's chunk installs the alarm handler once for all its files (decoding_many): each
    # file still has its own bound, and the caller's handler is back afterwards
    import signal

    import hashae.ingest.decode as decode
    from hashae.ingest.pipeline import decode_chunk
    slow, fine = tmp_path / "slow.png", tmp_path / "fine.png"
    Image.new("RGB", (3000, 3000), (10, 20, 30)).save(slow)
    Image.new("RGB", (40, 30), (200, 20, 30)).save(fine)

    def mine(signum, frame):
        pass
    previous = signal.signal(signal.SIGALRM, mine)
    try:
        monkeypatch.setattr(decode, "DECODE_SECONDS", 0.001)
        batch = decode_chunk([str(slow), str(fine)], 16, 3)
        reasons = dict(batch.failures)
        assert "took longer" in reasons[0] and 0 not in batch.positions
        monkeypatch.setattr(decode, "DECODE_SECONDS", 60.0)
        batch = decode_chunk([str(slow), str(fine)], 16, 3)
        assert list(batch.positions) == [0, 1] and not batch.failures
        assert signal.getsignal(signal.SIGALRM) is mine
    finally:
        signal.signal(signal.SIGALRM, previous)


def _damaged_tiffs(folder) -> None:
    """Two TIFFs that Pillow and libtiff refuse, each talking on stderr as it does: compressed
    strips with garbage inside (libtiff's own message) and a sample count past Pillow's limit
    (an ERROR record on Pillow's logger)."""
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    picture.save(folder / "garbled.tif", compression="tiff_lzw")
    data = bytearray((folder / "garbled.tif").read_bytes())
    for k in range(16, 200, 3):
        data[k] ^= 0xFF
    (folder / "garbled.tif").write_bytes(data)
    picture.save(folder / "samples.tif")
    data = bytearray((folder / "samples.tif").read_bytes())
    entry = data.find(b"\x15\x01\x03\x00\x01\x00\x00\x00\x03\x00")  # SamplesPerPixel = 3
    data[entry + 8:entry + 10] = b"\xff\xff"
    (folder / "samples.tif").write_bytes(data)


def test_damaged_tiffs_say_one_line_each_and_nothing_else(tmp_path, trained_store, sample_dir):
    # libtiff writes every odd tag and bad strip to the process's stderr itself, and Pillow logs
    # some refusals: a folder of damaged TIFFs printed hundreds of such lines around the skips
    folder = tmp_path / "tiffs"
    folder.mkdir()
    shutil.copy(sample_dir / "circle" / "circle_000.png", folder)
    _damaged_tiffs(folder)
    out = subprocess.run([sys.executable, "-m", "hashae.cli", "index", str(folder), "--store", str(tmp_path / "t.h5"),
                          "--model", str(trained_store)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stderr.splitlines()
    assert [line.split(":")[0] for line in lines] == ["skipped garbled.tif", "skipped samples.tif"], out.stderr
    with Collection.open(tmp_path / "t.h5") as c:
        assert c.paths() == ["circle_000.png"]
