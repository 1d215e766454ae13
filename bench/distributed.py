"""The Ray engine and big-collection search, measured side by side in one run.

1. Encoding: the same photos and the same model through `--workers 2` (local) and `--engine
   ray` (a local Ray cluster on this machine): throughput of each, Ray's start-up cost, and the
   peak memory of each worker process.
2. Training: models trained by one process and by two Ray Train workers (gloo), mAP at 64 bits
   with the retrieval protocol of bench/quality.py, seeds side by side (the seed spread is the
   yardstick for "the same kind of model").
3. Search: synthetic clustered 64-bit codes, one flat index against four shards and an IVF
   index at several nprobe: time per query and recall of the exact k-th distances.

    python bench/distributed.py                     # all three (about 10 minutes)
    python bench/distributed.py --parts encode search
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
from hashae import Collection, HasherConfig  # noqa: E402
from hashae.search import HammingIndex  # noqa: E402

DATA = os.path.join(HERE, "..", "..", "shared", "data")


def _peak_rss_mb(pids) -> float:
    """Largest peak resident set (VmHWM) among ``pids``, in MB."""
    peak = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
    return peak / 1024


def _ray_worker_pids() -> list:
    pids = []
    for d in glob.glob("/proc/[0-9]*"):
        try:
            with open(f"{d}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")[0]
        except OSError:
            continue
        if cmd.startswith(b"ray::MapWorker") or cmd.startswith(b"ray::_decode") or cmd.startswith(b"ray::IDLE"):
            pids.append(int(d.rsplit("/", 1)[1]))
    return pids


def bench_encode(folder: str, n_files: int, tmp: str) -> dict:
    """Local --workers 2 against --engine ray over the same files, model reused."""
    src = os.path.join(tmp, "photos")
    files = sorted(glob.glob(os.path.join(folder, "**", "*.*"), recursive=True))[:n_files]
    for p in files:  # a private copy: both engines read the same bytes from the same disk
        dest = os.path.join(src, os.path.relpath(p, folder))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy(p, dest)
    model_store = os.path.join(tmp, "model.h5")
    Collection(model_store).index(os.path.join(DATA, "hymenoptera"), effort="fast", progress=False)
    out = {"files": len(files)}

    t0 = time.monotonic()
    r = Collection(os.path.join(tmp, "local.h5")).index(src, model=model_store, workers=2, progress=False)
    out["local_s"] = time.monotonic() - t0
    out["local_peak_worker_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert r.indexed == len(files) - len(r.skipped)

    import ray
    t0 = time.monotonic()
    from hashae.distributed import connect
    connect()
    out["ray_start_s"] = time.monotonic() - t0
    for run in ("ray_first_s", "ray_s"):  # the first run also starts the worker processes
        store = os.path.join(tmp, f"{run}.h5")
        t0 = time.monotonic()
        Collection(store).index(src, model=model_store, engine="ray", progress=False)
        out[run] = time.monotonic() - t0
        out["ray_peak_worker_mb"] = _peak_rss_mb(_ray_worker_pids())
    with Collection.open(os.path.join(tmp, "local.h5")) as a, Collection.open(store) as b:
        out["codes_equal"] = bool(a.paths() == b.paths() and np.array_equal(a.codes, b.codes))
    n = len(files)
    out["local_rate"], out["ray_rate"] = n / out["local_s"], n / out["ray_s"]
    print(f"index {n} files: local --workers 2 {out['local_s']:.1f} s ({out['local_rate']:.0f} img/s); ray "
          f"{out['ray_s']:.1f} s ({out['ray_rate']:.0f} img/s, {out['ray_rate'] / out['local_rate']:.2f}x; first run "
          f"{out['ray_first_s']:.1f} s; ray.init {out['ray_start_s']:.1f} s); peak RSS per worker: local "
          f"{out['local_peak_worker_mb']:.0f} MB, ray {out['ray_peak_worker_mb']:.0f} MB; codes equal: "
          f"{out['codes_equal']}", flush=True)
    # the pipelines alone on 1x and 3x the paths (repeated): the difference is the throughput
    # once running, the rest the fixed cost of a run (Ray: starting the actors, each importing
    # torch and rebuilding the model)
    from hashae.distributed.encode import ray_batches
    from hashae.ingest import iter_batches
    from hashae.model.hasher import Hasher
    from hashae.storage import StoreReader
    with StoreReader(model_store) as r:
        state = r.model_state()
    hasher = Hasher.from_state(state)
    paths = [os.path.join(src, p) for p in Collection.open(os.path.join(tmp, "local.h5")).paths()]
    timing = {}
    for engine in ("local", "ray"):
        for times in (1, 3):
            batch = paths * times
            t0 = time.monotonic()
            if engine == "local":
                got = sum(len(b.positions) for b in iter_batches(batch, 32, 3, 2, encode=hasher.encode_for_index))
            else:
                got = sum(len(b.positions) for b in ray_batches(batch, 32, 3, state))
            assert got == len(batch)
            timing[engine, times] = time.monotonic() - t0
    for engine in ("local", "ray"):
        rate = 2 * len(paths) / (timing[engine, 3] - timing[engine, 1])
        out[f"{engine}_steady_rate"] = rate
        out[f"{engine}_fixed_s"] = timing[engine, 1] - len(paths) / rate
    out["steady_ratio"] = out["ray_steady_rate"] / out["local_steady_rate"]
    ray.shutdown()
    print(f"pipelines, {len(paths)} and {3 * len(paths)} images: local {out['local_steady_rate']:.0f} img/s + "
          f"{out['local_fixed_s']:.1f} s per run; ray {out['ray_steady_rate']:.0f} img/s + {out['ray_fixed_s']:.1f} s "
          f"per run; throughput ray / local {out['steady_ratio']:.2f}x", flush=True)
    return out


def bench_training(sets, seeds_local, seeds_ray) -> list:
    """mAP of one-process and two-worker models, per set and seed."""
    from quality import QUERIES_PER_CLASS, load_labelled, split

    from hashae.distributed import connect
    from hashae.distributed.train import fit_on_cluster
    from hashae.metrics import hamming_retrieval
    from hashae.model.hasher import Hasher
    connect()
    rows = []
    for name in sets:
        images, labels = load_labelled(name, 32)
        q, db = split(labels, QUERIES_PER_CLASS.get(name, 100), 0)
        for engine, seeds in (("one process", seeds_local), ("ray, 2 workers", seeds_ray)):
            for seed in seeds:
                cfg = HasherConfig(bits=64, channels=images.shape[-1], seed=seed)
                t0 = time.monotonic()
                if engine == "one process":
                    model = Hasher(cfg).fit(images[db])
                else:
                    state, trained, *_ = fit_on_cluster(images[db], cfg, 2)
                    model = Hasher.from_state(state)
                secs = time.monotonic() - t0
                m = hamming_retrieval(model.encode(images[q]), model.encode(images[db]), labels[q], labels[db])
                rows.append(dict(set=name, engine=engine, seed=seed, map=m["map"], seconds=secs))
                print(f"train {name:10s} {engine:15s} seed {seed}: mAP {m['map']:.4f} ({secs:.0f} s)", flush=True)
    import ray
    ray.shutdown()
    return rows


def _clustered(n, bits=64, centres=1000, flip=0.06, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 256, (centres, bits // 8), dtype=np.uint8)
    out = c[rng.integers(0, centres, n)]
    noise = np.packbits(rng.random((n, bits)) < flip, axis=1)
    return out ^ noise


def bench_search(sizes, k=10, queries=200) -> list:
    rows = []
    for n in sizes:
        codes = _clustered(n)
        q = _clustered(queries, seed=1)
        flat = HammingIndex.from_codes(codes)
        t0 = time.monotonic()
        d_exact, _ = flat.search(q, k)
        t_flat = (time.monotonic() - t0) / queries
        shards = HammingIndex.build(np.array_split(codes, 4))
        t0 = time.monotonic()
        d_sh, _ = shards.search(q, k)
        t_sh = (time.monotonic() - t0) / queries
        assert np.array_equal(d_sh, d_exact)
        row = dict(codes=n, flat_ms=t_flat * 1e3, shards_ms=t_sh * 1e3, ivf=[])
        t0 = time.monotonic()
        ivf = HammingIndex.build([codes], ivf_min_items=1)
        row["ivf_build_s"] = time.monotonic() - t0
        row["nlist"] = int(ivf.ivf.nlist)
        for nprobe in (4, 16, 32, 128):
            ivf.ivf.nprobe = nprobe
            t0 = time.monotonic()
            d, _ = ivf.search(q, k)
            t = (time.monotonic() - t0) / queries
            recall = float((d == d_exact).mean())
            row["ivf"].append(dict(nprobe=nprobe, ms=t * 1e3, recall=recall))
        rows.append(row)
        ivf_text = ", ".join(f"nprobe {r['nprobe']}: {r['ms']:.3f} ms recall {r['recall']:.3f}" for r in row["ivf"])
        print(f"search {n:>10,} codes: flat {row['flat_ms']:.3f} ms/query, 4 shards {row['shards_ms']:.3f} ms; "
              f"IVF (nlist {row['nlist']}, built in {row['ivf_build_s']:.1f} s) {ivf_text}", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["encode", "training", "search"])
    ap.add_argument("--photos", default=os.path.join(DATA, "tinyimagenet_val"))
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--sets", nargs="+", default=["coil20", "orl_faces"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[1_000_000, 4_000_000])
    ap.add_argument("--out", default=os.path.join(HERE, "results", "distributed.json"))
    args = ap.parse_args(argv)
    results = {}
    tmp = tempfile.mkdtemp(prefix="hashae-bench-distributed-")
    try:
        if "encode" in args.parts:
            results["encode"] = bench_encode(args.photos, args.files, tmp)
        if "training" in args.parts:
            results["training"] = bench_training(args.sets, [0, 1, 2, 3, 4], [0, 1, 2, 3, 4])
        if "search" in args.parts:
            results["search"] = bench_search(args.sizes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
