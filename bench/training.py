"""Training time of `fit` at each effort level, per 10,000 images, and whether it keeps every core busy.

Fits the default HasherConfig on 10,000 32x32 images (cifar10_test from ../shared/data, or
random images with --synthetic) and prints wall time, the torch threads used, and CPU time
over wall time (a fit that uses all N cores shows close to N), for the whole fit and for each
phase (pretraining stages, fine-tuning).

    python bench/training.py
    python bench/training.py --synthetic --threads 1
    python bench/training.py --effort fast default best
    python bench/training.py --folder ~/photos --n 50000     # a larger folder: the step bound
    python bench/training.py --effort fast default --optimiser both   # fused Adam against per-tensor
    python bench/training.py --effort fast default --precision both   # float32 against bfloat16
    python bench/training.py --folder ../shared/data/hymenoptera --effort fast --precision both
    python bench/training.py --effort fast default --against feature_bits=0   # what feature bits cost

With ``--optimiser both`` each effort level is fitted twice, one after the other, with torch's
per-tensor Adam loop and with the fused Adam that training uses, without early stopping so that
both take the same steps; the ratio of their times is printed. ``--precision both`` does the
same for the training steps' precision: float32, then bfloat16 (what "auto" picks on a CPU with
native bfloat16 products). ``--against KEY=VALUE`` fits each effort level a second time with
those HasherConfig settings, right after the first, and prints the ratio of the two times.
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
sys.path.insert(0, HERE)  # quality.py, for parse_settings
from hashae import HasherConfig, SemanticHasher  # noqa: E402
from hashae.ingest import load_folder  # noqa: E402
from hashae.model import hasher as hasher_mod  # noqa: E402
from hashae.model import train as train_mod  # noqa: E402
from hashae.progress import PhasedProgress  # noqa: E402
from quality import parse_settings  # noqa: E402

DATA = os.path.join(HERE, "..", "..", "shared", "data")


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class WatchedBar(PhasedProgress):
    """The fit's progress bar, drawn to nowhere, noting at every update the total time it
    predicts: elapsed plus the ETA it shows ((total - done) / its smoothed rate)."""

    seen: list = []

    def __init__(self, plan, desc="fit", enabled=None, stream=None):
        super().__init__(plan, desc, enabled=True, stream=open(os.devnull, "w"))
        WatchedBar.seen = []

    def phase(self, name):
        counter, bar = super().phase(name), self.bar
        update = counter.update

        def watched(n=1, **status):
            update(n, **status)
            d = bar.format_dict
            if d["rate"]:
                WatchedBar.seen.append((d["elapsed"], d["elapsed"] + (d["total"] - d["n"]) / d["rate"]))
        counter.update = watched
        return counter


def eta_errors(seen: list, wall: float, at=(0.02, 0.05, 0.1, 0.25, 0.5, 0.75)) -> dict:
    """Predicted total time / actual wall time, as the bar showed it after each fraction ``at``
    of the fit's wall time."""
    out = {}
    for f in at:
        shown = [pred for elapsed, pred in seen if elapsed >= f * wall]
        if shown:
            out[f] = shown[0] / wall
    return out


def per_tensor_adam(params, settings):
    """torch's default Adam on CPU: a Python loop over the parameters (training's before fused)."""
    return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay, foreach=False)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    ap.add_argument("--synthetic", action="store_true", help="random images instead of cifar10_test")
    ap.add_argument("--folder", default=os.path.join(DATA, "cifar10_test"), help="image folder to train on")
    ap.add_argument("--effort", nargs="+", default=["default"], choices=["fast", "default", "best"],
                    help="effort levels to time, one after the other")
    ap.add_argument("--optimiser", choices=["fused", "per-tensor", "both"], default="fused",
                    help="Adam as training runs it (fused), torch's per-tensor loop, or both side by side")
    ap.add_argument("--precision", choices=["auto", "float32", "bfloat16", "both"], default="auto",
                    help="the training steps' precision (HasherConfig.precision), or float32 and bfloat16 side by side")
    ap.add_argument("--against", action="append", default=[], metavar="KEY=VALUE",
                    help="also fit each level with these HasherConfig settings, one after the other")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "training.json"))
    args = ap.parse_args(argv)
    if args.optimiser == "both" and args.precision == "both":
        ap.error("compare one thing at a time: --optimiser both or --precision both")
    if args.synthetic:
        images = np.random.default_rng(0).integers(0, 256, (args.n, 32, 32, 3), dtype=np.uint8)
    else:
        images, _, _ = load_folder(args.folder, size=32, workers=2)
        images = images[: args.n]
    results = {}
    fused = train_mod._adam
    optimisers = ["per-tensor", "fused"] if args.optimiser == "both" else [args.optimiser]
    precisions = ["float32", "bfloat16"] if args.precision == "both" else [args.precision]
    against = parse_settings(args.against)
    variants = [{}, against] if against else [{}]
    runs = [(e, o, p, v) for e in args.effort for o in optimisers for p in precisions for v in variants]
    for effort, optimiser, precision, variant in runs:
        settings = dict(threads=args.threads, precision=precision, **variant)
        if len(optimisers) > 1:
            settings["patience"] = 0  # no early stopping: both optimisers take the same steps
        cfg = HasherConfig.for_effort(effort, **settings)
        tag = "/" + ",".join(args.against) if variant else ""  # each ratio compares runs of the same settings
        train_mod._adam = fused if optimiser == "fused" else per_tensor_adam
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        hasher_mod.PhasedProgress = WatchedBar  # the bar a user sees, watched
        model = SemanticHasher(cfg).fit(images, progress=True)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        train_mod._adam = fused
        threads = torch.get_num_threads()
        per_10k = wall * 10_000 / len(images)
        phases = {}
        for row in model.history_.rows:
            phases[row["phase"]] = phases.get(row["phase"], 0.0) + row["seconds"]
        print(f"fit on {len(images):,d} images of 32x32x3 ({len(model.history_.phase('fine-tune'))} fine-tuning "
              f"epochs), effort {effort}, {optimiser} Adam, trained in {model.config.extra['trained_in']}: "
              f"{wall:.1f} s "
              f"({per_10k:.1f} s per 10,000 images), torch threads {threads} of {os.cpu_count()} cores, "
              f"CPU time / wall time {cpu / wall:.2f}", flush=True)
        for name, secs in phases.items():
            print(f"  {name:12s} {secs:6.1f} s")
        eta = eta_errors(WatchedBar.seen, wall)
        print("  ETA shown, as predicted total / actual, after " +
              ", ".join(f"{f:.0%} of the time: {r:.2f}" for f, r in eta.items()), flush=True)
        if len(optimisers) > 1 and optimiser == "fused":
            before = results[f"{effort}/per-tensor{tag}"]["wall_s"]
            print(f"  fused / per-tensor Adam, same steps: {wall:.1f} / {before:.1f} s = {wall / before:.2f}x", flush=True)
        if len(precisions) > 1 and precision == "bfloat16":
            before = results[f"{effort}/float32{tag}"]["wall_s"]
            print(f"  bfloat16 / float32: {wall:.1f} / {before:.1f} s = {wall / before:.2f}x", flush=True)
        key = "/".join([effort] + ([optimiser] if len(optimisers) > 1 else [])
                       + ([precision] if len(precisions) > 1 else []))
        if variant:
            before = results[key]["wall_s"]
            print(f"  with {' '.join(args.against)} / without: {wall:.1f} / {before:.1f} s = {wall / before:.2f}x",
                  flush=True)
        key += tag
        results[key] = dict(n=len(images), optimiser=optimiser, precision=precision, settings=variant,
                            trained_in=model.config.extra["trained_in"], wall_s=wall, cpu_s=cpu, per_10k_s=per_10k,
                            threads=threads, cores=os.cpu_count(), phases=phases,
                            epochs=len(model.history_.phase("fine-tune")), eta_predicted_over_actual=eta)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
