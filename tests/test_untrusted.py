"""Collection files from someone else: damaged or hand-crafted files give a clear StoreError,
never a crash, a huge allocation, code execution, or a read outside the collection's folder."""
import json
import os
import pickle
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from hashae import Collection
from hashae.cli import main
from hashae.storage import StoreError


@pytest.fixture
def store(trained_store, tmp_path):
    path = tmp_path / "copy.h5"
    shutil.copy(trained_store, path)
    return path


def _open_everything(path):
    """What a user's commands read from a store; returns normally or raises StoreError."""
    with Collection.open(path) as c:
        c.codes, c.paths(), c.skipped, c.info()
        c.model  # noqa: B018
        c.search_codes(c.codes[:2], 3)


def test_truncated_file(store):
    data = store.read_bytes()
    for cut in (0, 100, 2048, len(data) // 2, len(data) - 100):
        store.write_bytes(data[:cut])
        with pytest.raises(StoreError):
            _open_everything(store)


def test_bit_flipped_files_never_crash(store):
    data = bytearray(store.read_bytes())
    rng = np.random.default_rng(0)
    outcomes = set()
    for trial in range(40):
        bad = bytearray(data)
        for pos in rng.integers(0, len(bad), 8):
            bad[pos] ^= 1 << int(rng.integers(8))
        store.write_bytes(bytes(bad))
        try:
            _open_everything(store)
            outcomes.add("ok")
        except StoreError:
            outcomes.add("error")
    assert outcomes  # reaching here means no crash, hang or other exception type


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


@pytest.mark.parametrize("name,edit,message", [
    ("format", lambda f: f.attrs.__setitem__("format", "other"), "not a hashae collection"),
    ("version", lambda f: f.attrs.__setitem__("format_version", 99), "version 99"),
    ("bits", lambda f: f.attrs.__setitem__("bits", 13), "multiple of 8"),
    ("codes dtype", lambda f: (f.__delitem__("codes"), f.create_dataset("codes", data=np.zeros((72, 4), np.float32))),
     "dtype"),
    ("codes width", lambda f: (f.__delitem__("codes"), f.create_dataset("codes", data=np.zeros((72, 8), np.uint8))),
     "shape"),
    ("row counts", lambda f: f["items/size"].resize((10,)), "different number of rows"),
    ("missing", lambda f: f.__delitem__("items/mtime"), "missing"),
    ("huge declared", lambda f: (f.__delitem__("codes"),
                                 f.create_dataset("codes", shape=(1 << 33, 4), dtype=np.uint8, chunks=(1024, 4))),
     "declares"),
])
def test_hand_crafted_layouts(store, name, edit, message):
    _edit(store, edit)
    with pytest.raises(StoreError, match=message):
        _open_everything(store)


@pytest.mark.parametrize("change", [{"hidden": [8192, 8192, 8192]}, {"image_size": 100000}, {"bits": 12},
                                    {"arch": "__import__('os')"}, {"unknown": 1}])
def test_absurd_model_configs(store, change):
    def edit(f):
        cfg = json.loads(f["model"].attrs["config"])
        cfg.update(change)
        f["model"].attrs["config"] = json.dumps(cfg)
    _edit(store, edit)
    with pytest.raises(StoreError, match="model"):
        _open_everything(store)


def test_weights_of_the_wrong_shape_or_type(store):
    def edit(f):
        w = f["model/weights"]
        name = sorted(w)[0]
        del w[name]
        w.create_dataset(name, data=np.zeros(3, np.float32))
    _edit(store, edit)
    with pytest.raises(StoreError, match="model"):
        _open_everything(store)


class _Payload:
    def __reduce__(self):
        return (open, (os.environ["HASHAE_PWNED"], "w"))


def test_pickle_payload_is_never_loaded(store, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("HASHAE_PWNED", str(marker))
    blob = np.frombuffer(pickle.dumps(_Payload()), np.uint8)

    def edit(f):
        w = f["model/weights"]
        name = sorted(w)[0]
        del w[name]
        w.create_dataset(name, data=blob)  # a pickle where a weight should be
        f["model"].attrs["pickle"] = np.void(pickle.dumps(_Payload()))
        f.attrs["config"] = np.void(pickle.dumps(_Payload()))
    _edit(store, edit)
    with pytest.raises(StoreError):
        _open_everything(store)
    assert not marker.exists()


def test_paths_outside_the_folder_are_refused(store, tmp_path, sample_dir):
    secret = tmp_path / "secret.png"
    shutil.copy(sample_dir / "circle" / "circle_000.png", secret)

    def edit(f):
        paths = f["items/path"][()]
        paths[0] = b"../secret.png"
        paths[1] = str(secret).encode()
        f["items/path"][...] = paths
    _edit(store, edit)
    with Collection.open(store) as c:
        for rel in ("../secret.png", str(secret)):
            with pytest.raises(StoreError, match="outside"):
                c.item_path(rel)
    r = CliRunner().invoke(main, ["cluster", "--store", str(store), "--method", "exact", "--sheets",
                                  str(tmp_path / "sheets")])
    assert r.exit_code == 1 and "outside the collection folder" in r.output


def test_a_config_within_the_weight_bound_but_too_much_work_is_refused(store):
    # few weights, but 4.2M activations per image in the first conv layer alone (gigabytes a batch)
    def edit(f):
        cfg = json.loads(f["model"].attrs["config"])
        cfg.update(arch="conv", image_size=256, conv_channels=[256, 8, 8, 8, 8, 8], hidden=[8])
        f["model"].attrs["config"] = json.dumps(cfg)
    _edit(store, edit)
    with pytest.raises(StoreError, match="activations per image"):
        _open_everything(store)


@pytest.mark.parametrize("where", ["/", "/model"])
def test_a_newer_format_is_refused_naming_the_version(store, where):
    def edit(f):
        f[where].attrs["format_version"] = 7
        f.attrs["hashae_version"] = "9.0.0"
    _edit(store, edit)
    with pytest.raises(StoreError, match="format version 7 .*upgrade hashae"):
        _open_everything(store)


SECRET = b"root:x:0:0:root:/root:/bin/bash\n" * 40


def _plant(store, tmp_path, how):
    """Replace /items/path of ``store`` by a dataset or link that reads another file."""
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as g:
        g.create_dataset("p", data=np.array([b"x"] * 200, dtype=object), dtype=h5py.string_dtype())
    with h5py.File(store, "r+") as f:
        n = f["codes"].shape[0]
        del f["items/path"]
        if how == "external storage":
            f["items"].create_dataset("path", shape=(n,), dtype="S8", external=[(str(secret), 0, 8 * n)])
        elif how == "external link":
            f["items/path"] = h5py.ExternalLink(str(other), "/p")
        elif how == "soft link":
            f["items/path"] = h5py.SoftLink("/skipped/path")
        elif how == "virtual dataset":
            layout = h5py.VirtualLayout(shape=(n,), dtype=h5py.string_dtype())
            layout[:] = h5py.VirtualSource(str(other), "p", shape=(200,))[:n]
            f["items"].create_virtual_dataset("path", layout)
        elif how == "external storage on a model weight":
            f["items"].create_dataset("path", data=np.array([b"a"] * n, dtype=object), dtype=h5py.string_dtype())
            w = f["model/weights"]
            name = sorted(w)[0]
            shape = w[name].shape
            del w[name]
            w.create_dataset(name, shape=shape, dtype="f4", external=[(str(secret), 0, 4 * int(np.prod(shape)))])


@pytest.mark.parametrize("how", ["external storage", "external link", "soft link", "virtual dataset",
                                 "external storage on a model weight"])
def test_a_collection_cannot_read_other_files(store, tmp_path, how):
    _plant(store, tmp_path, how)
    with pytest.raises(StoreError, match="link|external|virtual"):
        _open_everything(store)
    r = CliRunner().invoke(main, ["cluster", "--store", str(store), "--json"])
    assert r.exit_code == 1 and b"root:x" not in r.stdout_bytes
    assert r.output.startswith("Error: ") and r.output.count("\n") == 1, r.output


@pytest.mark.parametrize("how", ["external storage", "store itself"])
def test_fifos_never_block_a_reader(store, tmp_path, how):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    target = fifo if how == "store itself" else store
    if how == "external storage":
        with h5py.File(store, "r+") as f:
            n = f["codes"].shape[0]
            del f["items/path"]
            f["items"].create_dataset("path", shape=(n,), dtype="S8", external=[(str(fifo), 0, 8 * n)])
    for command in (["info", "--json"], ["query", str(tmp_path / "q.png")], ["cluster"], ["duplicates"]):
        r = subprocess.run([sys.executable, "-c", "import sys; from hashae.cli import main; sys.exit(main())",
                            *command, "--store", str(target)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and r.stderr.startswith("Error: "), (command, r.stderr[-500:])


def test_string_datasets_declaring_millions_of_rows_are_refused(store):
    def edit(f):
        for name in ("skipped/path", "skipped/reason"):
            del f[name]
            f.create_dataset(name, shape=(1 << 26,), maxshape=(None,), chunks=(1 << 16,), dtype=h5py.string_dtype())
    _edit(store, edit)
    assert os.path.getsize(store) < 5 << 20
    with pytest.raises(StoreError, match="declares 67108864 rows"):
        _open_everything(store)


def test_a_stored_folder_not_sealed_by_this_user_is_not_read(store, tmp_path, sample_dir):
    # a received collection names a folder it was "indexed" from: its images are not read
    # unless the user names the folder
    with h5py.File(store, "r+") as f:
        f.attrs["folder"] = str(sample_dir.parent)  # another folder, and the seal no longer fits
    sheets = tmp_path / "sheets"
    r = CliRunner().invoke(main, ["cluster", "--store", str(store), "--sheets", str(sheets), "--quiet"])
    assert r.exit_code == 1 and "--folder" in r.output and not sheets.exists(), r.output
    r = CliRunner().invoke(main, ["cluster", "--store", str(store), "--sheets", str(sheets), "--quiet",
                                  "--folder", str(sample_dir)])
    assert r.exit_code == 0, r.output
    assert (sheets / "cluster-0000.png").exists()
    with pytest.raises(ValueError, match="not indexed by you"):
        Collection(store).index(workers=0, progress=False)  # no folder given: the stored one is not trusted


def test_a_collection_indexed_here_reads_its_own_folder(trained_store, sample_dir):
    with Collection.open(trained_store) as c:
        assert c.reader.folder_trusted and c.item_path("circle/circle_000.png").startswith(str(sample_dir))


def test_info_json_is_valid_json_with_nan_attributes(store):
    _edit(store, lambda f: f.attrs.__setitem__("created", float("nan")))
    r = CliRunner().invoke(main, ["info", "--store", str(store), "--json"])
    assert r.exit_code == 0, r.output

    def refuse(name):
        raise ValueError(f"invalid JSON constant {name}")
    assert json.loads(r.stdout, parse_constant=refuse)["created"] is None


def test_out_of_memory_is_one_error_line(store, monkeypatch):
    def boom(self, **kwargs):
        raise MemoryError()
    monkeypatch.setattr(Collection, "info", boom)
    r = CliRunner().invoke(main, ["info", "--store", str(store)])
    assert r.exit_code == 1 and r.output.startswith("Error: out of memory") and r.output.count("\n") == 1
