"""Clustering quality and speed, side by side in one run.

Quality: on each labelled set, with k = number of classes, (a) graph clustering of hashae codes
(communities of their nearest-neighbour graph, at several neighbour counts, and once with the
number of groups left to the graph), (b) binary k-means on hashae codes and (c) on ITQ codes
(Hamming space, same seed and restarts) and (d) float k-means on raw pixels (FAISS, same
restarts); NMI, adjusted Rand index and purity against the labels, each the mean over several
clustering seeds on the same codes (``--runs``). Models are trained on all
images of the set without labels. The neighbour count is chosen by the worst set, with a
leave-one-set-out check.

Speed: seconds for each method over synthetic 64-bit codes (100 centres with 3% bit noise) at
100k and 1M codes, the graph method also on harder codes (1,000 centres, 8% noise) with its
peak memory (a child process's high-water resident size, before and after), and the near-duplicate grouping over
the first codes at 100k.

    python bench/cluster.py
    python bench/cluster.py --sets coil20 --sizes 100000
    python bench/cluster.py --sets --sizes 100000 1000000 --duplicate-sizes   # the speed curve only
    python bench/cluster.py --sets --sizes 100000 --duplicate-sizes --graph-k 5000   # k asked for
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import faiss
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baselines import itq  # noqa: E402
from quality import load_labelled, parse_value  # noqa: E402

from hashae import HasherConfig, SemanticHasher, cluster  # noqa: E402
from hashae.search import near_duplicates  # noqa: E402
from hashae.search.graph import NEIGHBOURS, graph_clusters  # noqa: E402
from hashae.codes import pack  # noqa: E402
from hashae.metrics import adjusted_rand, nmi, purity  # noqa: E402

RESTARTS = 4
SETS = ["coil20", "orl_faces", "binaryalphadigits", "eurosat_val", "cifar10_test", "tinyimagenet_val"]
NEIGHBOUR_COUNTS = (5, 10, 20)
GRAPH = "hashae codes, graph"


def quality(name: str, cfg: HasherConfig, bits: int, seed: int, runs: int = 1) -> list:
    """Rows of one set: each method's NMI, ARI and purity, means over ``runs`` clustering seeds."""
    images, labels = load_labelled(name, cfg.image_size)
    k = len(np.unique(labels))
    pixels = images.reshape(len(images), -1).astype(np.float32) / 255
    t0 = time.monotonic()
    model = SemanticHasher(cfg.replace(bits=bits, channels=images.shape[-1], seed=seed)).fit(images)
    fit_s = time.monotonic() - t0
    codes = model.encode(images)
    itq_codes = itq(pixels.astype(np.float64), bits, seed)(pixels.astype(np.float64))

    def raw_kmeans(s):
        km = faiss.Kmeans(pixels.shape[1], k, niter=50, nredo=RESTARTS, seed=s)
        km.train(pixels)
        return km.index.search(pixels, 1)[1][:, 0]

    # every method on the same codes with clustering seeds seed .. seed + runs - 1: one run's NMI
    # moves by up to 0.02 with its seed alone (k-means on cifar10_test: 0.131-0.149), more
    # than most differences between the methods
    methods = {f"{GRAPH}, {n} neighbours": (lambda s, n=n: graph_clusters(codes, k, neighbours=n, seed=s).labels)
               for n in NEIGHBOUR_COUNTS}
    methods.update({
        f"{GRAPH}, k chosen by modularity": lambda s: graph_clusters(codes, None, seed=s).labels,
        "hashae codes, binary k-means": lambda s: cluster(codes, "kmeans", k=k, seed=s, restarts=RESTARTS),
        "ITQ codes, binary k-means": lambda s: cluster(itq_codes, "kmeans", k=k, seed=s, restarts=RESTARTS),
        "raw pixels, float k-means": raw_kmeans,
    })
    rows = []
    for method, run in methods.items():
        preds = [run(s) for s in range(seed, seed + runs)]
        scores = {m: [f(labels, p) for p in preds] for m, f in (("nmi", nmi), ("ari", adjusted_rand), ("purity", purity))}
        row = dict(set=name, method=method, bits=bits, **{m: float(np.mean(v)) for m, v in scores.items()},
                   nmi_runs=scores["nmi"], groups=[int(p.max()) + 1 for p in preds])
        rows.append(row)
        spread = f"[{min(scores['nmi']):.4f}-{max(scores['nmi']):.4f}]" if runs > 1 else ""
        print(f"  {name:12s} {method:48s} NMI {row['nmi']:.4f} {spread} ARI {row['ari']:.4f}  "
              f"purity {row['purity']:.4f}  groups {row['groups'][0]}", flush=True)
    print(f"  {name:12s} (hashae fit {fit_s:.1f} s)")
    return rows


def synthetic_codes(n: int, rng: np.random.Generator) -> np.ndarray:
    """n packed 64-bit codes around 100 random centres with 3% bit noise."""
    centres = rng.integers(0, 2, (100, 64), dtype=np.uint8)
    return pack(centres[rng.integers(0, 100, n)] ^ (rng.random((n, 64)) < 0.03))


def speed(n: int, seed: int = 0) -> list:
    codes = synthetic_codes(n, np.random.default_rng(seed))
    rows = []
    for method, kw in (("exact", {}), ("radius", {"radius": 2}), ("kmeans", {"k": 100, "restarts": 1})):
        t0 = time.monotonic()
        labels = cluster(codes, method, **kw)
        secs = time.monotonic() - t0
        rows.append(dict(n=n, method=method, args=kw, seconds=secs, groups=int(labels.max()) + 1))
        print(f"  {n:>9,d} codes  {method:7s} {json.dumps(kw):28s} {secs:8.2f} s  {labels.max() + 1:>8,d} groups",
              flush=True)
    return rows


def _peak_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike getrusage's maxrss, not carried over
    from the parent across exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def _graph_child(n: int, seed: int, hard: bool, k, out) -> None:
    """In a child process: time graph clustering (``k`` groups, or None: chosen) of synthetic
    codes, and report the process's peak resident memory before and after it."""
    rng = np.random.default_rng(seed)
    if hard:
        centres = rng.integers(0, 2, (1000, 64), dtype=np.uint8)
        codes = pack(centres[rng.integers(0, 1000, n)] ^ (rng.random((n, 64)) < 0.08))
    else:
        codes = synthetic_codes(n, rng)
    before = _peak_mb()
    t0 = time.monotonic()
    labels = cluster(codes, "graph", k=k, seed=seed)
    secs = time.monotonic() - t0
    out.put(dict(seconds=secs, groups=int(labels.max()) + 1, rss_before_mb=before, rss_peak_mb=_peak_mb()))


def graph_speed(n: int, seed: int = 0, ks=(None,)) -> list:
    """Graph clustering of n synthetic codes, easy and hard, for each k (None: chosen)."""
    import multiprocessing as mp
    rows = []
    for k in ks:
        for hard in (False, True):
            ctx = mp.get_context("spawn")
            queue = ctx.Queue()
            child = ctx.Process(target=_graph_child, args=(n, seed, hard, k, queue))
            child.start()
            result = queue.get()
            child.join()
            kind = "1,000 centres, 8% noise" if hard else "100 centres, 3% noise"
            rows.append(dict(n=n, method="graph", args={"codes": kind, "k": k}, **result))
            print(f"  {n:>9,d} codes  graph k={k or 'chosen'!s:7s} {kind:24s} {result['seconds']:8.2f} s  "
                  f"{result['groups']:>8,d} groups  peak {result['rss_peak_mb']:.0f} MB "
                  f"(codes alone {result['rss_before_mb']:.0f} MB)", flush=True)
    return rows


def duplicate_speed(n: int, seed: int = 0) -> list:
    """Collection.duplicates' grouping on the codes of ``speed`` with a perceptual hash per item
    (pairs of items share one): every code has thousands of others within the radius, the
    costly case for the pair check."""
    rng = np.random.default_rng(seed)
    codes = synthetic_codes(n, rng)
    families = rng.integers(0, 2, (n // 2, 64), dtype=np.uint8)
    hashes = pack(families[rng.integers(0, n // 2, n)] ^ (rng.random((n, 64)) < 0.03))
    rows = []
    for radius in (2, 4):
        t0 = time.monotonic()
        labels = near_duplicates(codes, radius, hashes)
        secs = time.monotonic() - t0
        rows.append(dict(n=n, method="duplicates", args={"radius": radius}, seconds=secs,
                         groups=int((np.bincount(labels) >= 2).sum())))
        print(f"  {n:>9,d} codes  duplicates r={radius}          {secs:8.2f} s  {rows[-1]['groups']:>8,d} groups of 2+",
              flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="*", default=SETS)
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--sizes", nargs="+", type=int, default=[100_000, 1_000_000])
    ap.add_argument("--duplicate-sizes", nargs="*", type=int, default=[100_000],
                    help="sizes for the duplicates timing (1M takes about 7 minutes: radius 2 and 4)")
    ap.add_argument("--graph-k", nargs="*", type=int, default=[],
                    help="also time graph clustering asked for this many groups (merged down past the resolution search)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=int, default=5, help="clustering seeds per method on the same codes (NMI: their mean)")
    ap.add_argument("--set-config", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "cluster.json"))
    args = ap.parse_args(argv)
    cfg = HasherConfig().replace(**dict((k, parse_value(v)) for k, v in (s.split("=", 1) for s in args.set_config)))
    rows = []
    print("quality (k = number of classes)")
    for name in args.sets:
        rows += quality(name, cfg, args.bits, args.seed, args.runs)
    by = {(r["set"], r["method"]): r["nmi"] for r in rows}
    graph = f"{GRAPH}, {NEIGHBOURS} neighbours"
    for name in args.sets:
        g, h, i, f = (by[(name, m)] for m in (graph, "hashae codes, binary k-means", "ITQ codes, binary k-means",
                                               "raw pixels, float k-means"))
        print(f"{name}: NMI / raw-pixel k-means: graph {g / f:.2f}, binary k-means {h / f:.2f}; "
              f"graph / ITQ k-means {g / i:.2f}; graph / hashae k-means {g / h:.2f}")
    if len(args.sets) > 1:
        print(f"neighbour count by the worst set's NMI / raw pixels (default {NEIGHBOURS}), leaving each set out:")
        for held in args.sets:
            others = [s for s in args.sets if s != held]

            def worst(n, sets):
                return min(by[(s, f"{GRAPH}, {n} neighbours")] / by[(s, "raw pixels, float k-means")] for s in sets)
            n = max(NEIGHBOUR_COUNTS, key=lambda n: (worst(n, others), -abs(n - NEIGHBOURS)))
            print(f"  without {held:18s} {n:3d} neighbours: {held} at {worst(n, [held]):.2f}x raw pixels")
    print("speed (64-bit synthetic codes)")
    timing = [r for n in args.sizes for r in speed(n, args.seed)]
    timing += [r for n in args.sizes for r in graph_speed(n, args.seed, [None, *args.graph_k])]
    timing += [r for n in args.duplicate_sizes for r in duplicate_speed(n, args.seed)]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"config": json.loads(cfg.to_json()), "quality": rows, "speed": timing}, fh, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
