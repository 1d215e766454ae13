"""Past one machine: data-parallel training math (two gloo processes against one), and the Ray
engine on a simulated two-node cluster (ray.cluster_utils.Cluster): codes equal to a local run,
training on two workers, a node removed mid-run, a driver killed mid-run."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from hashae import Collection, HasherConfig
from hashae.ingest.perceptual import ALL_FIELDS
from hashae.model import losses, parallel
from hashae.sample import make_sample
from hashae.storage import StoreReader
from hashae.storage.items import STATS_WIDTH
from hashae.storage.journal import Journal

from conftest import SMALL

# ---------------------------------------------------------------------------- parallel.py, no Ray


def _batch_gradients(n_rows: int = 16) -> dict:
    """Gradients of every batch-wide loss term on one fixed batch, this process's share of it
    (all of it when not distributed), averaged over processes as the trainer does."""
    torch.manual_seed(0)
    enc, dec = torch.nn.Linear(48, 8), torch.nn.Linear(8, 48)
    x = torch.rand(n_rows, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    mine = torch.from_numpy(parallel.share(np.arange(n_rows)))
    x = x[mine]
    anchors = (torch.arange(n_rows) % 3 != 1)[mine]  # the neighbour term's rows with a kept neighbour
    z1, z2 = enc(x.flatten(1)), enc(0.9 * x.flatten(1))
    p = torch.sigmoid(z1)
    recon = torch.sigmoid(dec(p)).view_as(x)
    loss = (losses.reconstruction(recon, x) + losses.contrastive(z1, z2, 0.5) + losses.stats_loss(recon, x)
            + losses.contrastive(z1, 1.1 * z2, 0.5, anchors)
            + losses.balance(p) + losses.decorrelation(p) + losses.sparsity_kl(p, 0.3))
    loss.backward()
    params = list(enc.parameters()) + list(dec.parameters())
    parallel.average_gradients(params)
    return {f"g{i}": q.grad.numpy().copy() for i, q in enumerate(params)}


def _gloo_worker(rank: int, world: int, init: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        grads = _batch_gradients()
        uneven = parallel.gather(torch.arange(3 - rank, dtype=torch.float32) + 10 * rank)
        if rank == 0:
            np.savez(out, uneven=uneven.numpy(), **grads)
    finally:
        torch.distributed.destroy_process_group()


def test_two_processes_take_the_step_of_one(tmp_path):
    """Two gloo processes, each with half of a batch, end with the gradients one process gets
    from the whole batch: contrastive negatives and batch statistics are gathered."""
    ctx = mp.get_context("spawn")
    out = str(tmp_path / "grads.npz")
    procs = [ctx.Process(target=_gloo_worker, args=(r, 2, str(tmp_path / "init"), out)) for r in range(2)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join(120)
        assert pr.exitcode == 0
    two = np.load(out)
    one = _batch_gradients()
    assert set(one) == set(two.files) - {"uneven"}
    for name, g in one.items():
        np.testing.assert_allclose(two[name], g, rtol=1e-4, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(two["uneven"], [0, 1, 2, 10, 11])  # shares of 3 and 2 rows


def _precision_worker(rank: int, world: int, init: str, out: str, native: tuple) -> None:
    from hashae.model import train
    torch.distributed.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        train.native_bfloat16 = lambda: native[rank]  # this process's CPU, as the test describes it
        chosen = [str(train.training_dtype(p)) for p in ("auto", "float32", "bfloat16")]
        with open(f"{out}.{rank}", "w") as f:
            f.write(" ".join(chosen))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("native", [(True, False), (False, True), (True, True), (False, False)])
def test_every_process_of_a_fit_trains_in_one_precision(tmp_path, native):
    """"auto" takes bfloat16 only when every process's CPU has it: a cluster of mixed machines
    trains all in float32, not half in each; an explicit precision is kept everywhere."""
    ctx = mp.get_context("spawn")
    out = str(tmp_path / "chosen")
    procs = [ctx.Process(target=_precision_worker, args=(r, 2, str(tmp_path / "init"), out, native))
             for r in range(2)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join(120)
        assert pr.exitcode == 0
    auto = "torch.bfloat16" if all(native) else "torch.float32"
    for r in range(2):
        assert open(f"{out}.{r}").read() == f"{auto} torch.float32 torch.bfloat16"


# ---------------------------------------------------------------------------- the Ray engine

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'hashae[ray]'")
from ray.cluster_utils import Cluster  # noqa: E402

CFG = HasherConfig(bits=16, **SMALL)


@pytest.fixture(scope="module")
def cluster():
    """A head node and one worker node, one CPU each, on this machine."""
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    make_sample(str(root / "img"), per_class=12, size=32, seed=5)
    (root / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


@pytest.fixture(scope="module")
def local_store(folder):
    """The reference: a local run (no worker processes: this process talks to Ray)."""
    store = folder / "local.h5"
    Collection(str(store)).index(str(folder / "img"), config=CFG, workers=0, progress=False)
    return store


def _state(path):
    with StoreReader(str(path)) as r:
        every = r.perceptual()
        hashes = np.hstack([getattr(every, name) for name in ALL_FIELDS])  # every perceptual hash
        return r.paths(), r.codes(), hashes, r.errors(), r.skipped(), r.stats(), r.residuals()


def test_ray_encoding_equals_a_local_run(cluster, folder, local_store):
    """The same model encodes through the Ray Data pipeline on two nodes: every item's code,
    perceptual hash, error, channel statistics and residual equal a local run's, and the broken
    file is skipped the same way."""
    store = folder / "ray-encode.h5"
    report = Collection(str(store)).index(str(folder / "img"), model=str(local_store), engine="ray", progress=False)
    assert report.indexed == 72 and len(report.skipped) == 1
    paths, codes, ph, err, skipped, stats, residual = _state(store)
    ref = _state(local_store)
    assert paths == ref[0]
    np.testing.assert_array_equal(codes, ref[1])
    np.testing.assert_array_equal(ph, ref[2])
    np.testing.assert_allclose(err, ref[3], rtol=1e-5)
    assert stats.shape == (72, STATS_WIDTH) and np.isfinite(stats).all()
    np.testing.assert_allclose(stats, ref[5], rtol=1e-5, atol=1e-7)
    assert residual.shape == (72,) and np.isfinite(residual).all()
    np.testing.assert_allclose(residual, ref[6], rtol=1e-5, atol=1e-9)
    assert skipped == ref[4] and skipped[0][0] == "broken.png"


def _precision_at(store, k=5) -> float:
    """Mean fraction of each item's k nearest codes (ties in file order) from its own class."""
    paths, codes, *_ = _state(store)
    labels = np.array([p.split("/")[0] for p in paths])
    bits = np.unpackbits(codes, axis=1).astype(np.int32)
    d = (bits[:, None, :] != bits[None, :, :]).sum(-1) + np.eye(len(bits), dtype=int) * 999
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return float((labels[order] == labels[:, None]).mean())


def test_ray_training_on_two_workers(cluster, folder, local_store):
    """A new collection trained by two Ray Train workers (one per node, gloo) is a model of the
    same kind as one process trains: it stores the same config and separates the sample's
    classes about as well."""
    store = folder / "ray-train.h5"
    report = Collection(str(store)).index(str(folder / "img"), config=CFG, engine="ray", workers=2, progress=False)
    assert report.trained and report.indexed == 72
    with StoreReader(str(store)) as r, StoreReader(str(local_store)) as ref:
        assert r.model_config() == ref.model_config()
        assert len(np.unique(r.codes(), axis=0)) > 12
    ray_p, local_p = _precision_at(store), _precision_at(local_store)
    assert ray_p > 0.6 and ray_p > local_p - 0.15, (ray_p, local_p)


def _slow_folder(root, n=160):
    """Large noisy PNGs (slow to decode) so that a run lasts long enough to be interrupted."""
    rng = np.random.default_rng(0)
    from PIL import Image
    for i in range(n):
        cls = root / f"c{i % 4}"
        cls.mkdir(parents=True, exist_ok=True)
        base = np.full((900, 900, 3), 60 * (i % 4), np.uint8)
        noise = rng.integers(0, 60, (900, 900, 3), dtype=np.uint8)
        Image.fromarray(base + noise).save(cls / f"{i:04d}.png", compress_level=1)
    return root


@pytest.fixture(scope="module")
def slow(folder, local_store):
    src = _slow_folder(folder / "slow")
    ref = folder / "slow-local.h5"
    Collection(str(ref)).index(str(src), model=str(local_store), workers=0, progress=False)
    return src, ref


def _wait_for_segments(store, count, deadline):
    """Wait until the run on ``store`` has written ``count`` journal segments."""
    journal = Journal(str(store))
    while time.monotonic() < deadline:
        try:
            if sum(name.startswith("seg-") and name.endswith(".h5") for name in os.listdir(journal.dir)) >= count:
                return True
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    return False


def test_a_node_removed_mid_run(cluster, slow, local_store, monkeypatch):
    """A worker node dies while files are being encoded: Ray runs its work again elsewhere, the
    run completes, and every file is in the collection exactly once with a local run's code."""
    src, ref = slow
    monkeypatch.setattr("hashae.distributed.encode.BLOCK", 4)  # 40 blocks: many in flight, many to come
    extra = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    store = src.parent / "slow-ray.h5"
    result = {}

    def index():
        try:
            result["report"] = Collection(str(store)).index(str(src), model=str(local_store), engine="ray",
                                                            progress=False, segment=8)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            result["error"] = e

    t = threading.Thread(target=index)
    t.start()
    assert _wait_for_segments(store, 1, time.monotonic() + 120), "the run never wrote a journal segment"
    assert t.is_alive(), "the run ended before the node could be removed"
    cluster.remove_node(extra)
    t.join(300)
    assert not t.is_alive() and "error" not in result, result.get("error")
    assert result["report"].indexed == 160
    paths, codes, *_ = _state(store)
    ref_paths, ref_codes, *_ = _state(ref)
    assert paths == ref_paths and len(set(paths)) == 160
    np.testing.assert_array_equal(codes, ref_codes)


# a driver as a user would run it (RAY_ADDRESS names the cluster), with small journal segments
DRIVER = """
import sys
from hashae import Collection
import hashae.distributed.encode
hashae.distributed.encode.BLOCK = 4  # 40 blocks, so that the run is killed with work left
print(Collection(sys.argv[1]).index(sys.argv[2], model=sys.argv[3], engine="ray", progress=False, segment=8))
"""


def test_a_killed_driver_is_resumed(cluster, slow, local_store):
    """`hashae index --engine ray` killed mid-run (SIGKILL) leaves a journal; the next run
    resumes from it and ends with exactly the collection of a local run."""
    src, ref = slow
    store = src.parent / "slow-killed.h5"
    env = dict(os.environ, RAY_ADDRESS=cluster.address)
    cmd = [sys.executable, "-c", DRIVER, str(store), str(src), str(local_store)]
    log = src.parent / "killed-driver.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            seen = _wait_for_segments(store, 1, time.monotonic() + 120)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    if not seen:
        pytest.fail("the killed run never wrote a journal segment: " + log.read_text()[-2000:])
    assert not os.path.exists(store)  # nothing committed yet
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "resumed from an interrupted run" in out.stdout
    paths, codes, *_ = _state(store)
    ref_paths, ref_codes, *_ = _state(ref)
    assert paths == ref_paths
    np.testing.assert_array_equal(codes, ref_codes)


def test_listing_on_the_cluster_equals_a_local_scan(cluster, tmp_path):
    """The sub-trees listed by Ray Data tasks give exactly scan()'s entries and errors: nested
    folders, a link loop, a link from one sub-tree into another, a link out of the folder, an
    unreadable file, a name that is not UTF-8."""
    from hashae.distributed.scan import ray_scan
    from hashae.ingest import scan
    from hashae.ingest.scan import OUTSIDE
    root = tmp_path / "tree"
    for d in ("a/x", "a/y/z", "b", "c/d/e"):
        (root / d).mkdir(parents=True)
        for i in range(3):
            (root / d / f"{i}.png").write_bytes(b"\x89PNG")
    (root / "top.jpg").write_bytes(b"\xff\xd8")
    os.symlink(root / "a", root / "a" / "y" / "loop")  # a loop
    os.symlink(root / "c" / "d", root / "b" / "to-d")  # one sub-tree into another
    os.symlink(tmp_path, root / "b" / "out")  # out of the folder: refused
    os.symlink(root / "missing.png", root / "c" / "broken.png")
    (root / "b" / os.fsdecode(b"caf\xe9.png")).write_bytes(b"\x89PNG")
    os.symlink(root / "c" / "d" / "e", root / "a" / "y" / "z" / "to-e")  # met before c/d/e
    local = scan(str(root))
    for first in (1, 2, 3, 64):  # the driver reads this many folders itself
        files, errors = ray_scan(str(root), local_folders=first)
        assert files == local[0] and errors == sorted(local[1])
    paths = [f.path for f in local[0]]
    assert len(paths) == 14 and "b/to-d/e/0.png" not in paths and "a/y/z/to-e/0.png" in paths
    assert {why for _, why in local[1]} == {"broken link", OUTSIDE}


def test_local_worker_processes_beside_a_ray_driver(cluster, slow, local_store):
    """A local run asking for worker processes in a process connected to Ray decodes in-process
    instead, with a warning, and leaves Ray working: Ray Train started after a fork of the
    driver waited forever for its workers."""
    from hashae.distributed.train import fit_on_cluster
    src, ref = slow
    store = src.parent / "local-workers.h5"
    with pytest.warns(UserWarning, match="connected to Ray"):
        Collection(str(store)).index(str(src), model=str(local_store), workers=2, progress=False)
    np.testing.assert_array_equal(_state(store)[1], _state(ref)[1])
    images = np.random.default_rng(0).integers(0, 255, (64, 16, 16, 3), dtype=np.uint8)
    tiny = HasherConfig(bits=16, image_size=16, hidden=(32,), epochs=1, pretrain_epochs=1, min_steps=4, batch_size=16)
    done = {}
    t = threading.Thread(target=lambda: done.setdefault("model", fit_on_cluster(images, tiny, 2)), daemon=True)
    t.start()
    t.join(180)
    assert "model" in done, "Ray Train did not finish after the driver forked worker processes"
