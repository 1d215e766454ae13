"""Collection files from someone else: damaged or hand-crafted files give a clear StoreError,
never a crash, a huge allocation, code execution, or a read outside the collection's folder."""
import json
import os
import pickle
import shutil

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
