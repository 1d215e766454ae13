"""Training time of `fit` at each effort level, per 10,000 images, and whether it keeps every core busy.

Fits the default HasherConfig on 10,000 32x32 images (cifar10_test from ../shared/data, or
random images with --synthetic) and prints wall time, the torch threads used, and CPU time
over wall time (a fit that uses all N cores shows close to N), for the whole fit and for each
phase (pretraining stages, fine-tuning).

    python bench/training.py
    python bench/training.py --synthetic --threads 1
    python bench/training.py --effort fast default best
    python bench/training.py --folder ~/photos --n 50000     # a larger folder: the step bound
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from hashae import HasherConfig, SemanticHasher  # noqa: E402
from hashae.ingest import load_folder  # noqa: E402

DATA = os.path.join(HERE, "..", "..", "shared", "data")


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    ap.add_argument("--synthetic", action="store_true", help="random images instead of cifar10_test")
    ap.add_argument("--folder", default=os.path.join(DATA, "cifar10_test"), help="image folder to train on")
    ap.add_argument("--effort", nargs="+", default=["default"], choices=["fast", "default", "best"],
                    help="effort levels to time, one after the other")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "training.json"))
    args = ap.parse_args(argv)
    if args.synthetic:
        images = np.random.default_rng(0).integers(0, 256, (args.n, 32, 32, 3), dtype=np.uint8)
    else:
        images, _, _ = load_folder(args.folder, size=32, workers=2)
        images = images[: args.n]
    results = {}
    for effort in args.effort:
        cfg = HasherConfig.for_effort(effort, threads=args.threads)
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        model = SemanticHasher(cfg).fit(images, progress=False)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        threads = torch.get_num_threads()
        per_10k = wall * 10_000 / len(images)
        phases = {}
        for row in model.history_.rows:
            phases[row["phase"]] = phases.get(row["phase"], 0.0) + row["seconds"]
        print(f"fit on {len(images):,d} images of 32x32x3 ({len(model.history_.phase('fine-tune'))} fine-tuning "
              f"epochs), effort {effort}: {wall:.1f} s "
              f"({per_10k:.1f} s per 10,000 images), torch threads {threads} of {os.cpu_count()} cores, "
              f"CPU time / wall time {cpu / wall:.2f}", flush=True)
        for name, secs in phases.items():
            print(f"  {name:12s} {secs:6.1f} s")
        results[effort] = dict(n=len(images), wall_s=wall, cpu_s=cpu, per_10k_s=per_10k, threads=threads,
                               cores=os.cpu_count(), phases=phases, epochs=len(model.history_.phase("fine-tune")))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
