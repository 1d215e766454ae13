"""Outlier detection: ROC AUC of hashae's outlier scores against PCA reconstruction error and
k-NN distance on raw pixels, side by side in one run, on every shared labelled set.

Three scenarios per set, each a collection the model is trained on (outliers included, as a
user's folder would be):
- planted: 2% of the set's size added from the six shared sets but itself (evenly, seeded),
  resized to the set's input size and, for a grey set, made grey: images that do not belong;
- noise: 2% added as random colour noise in square blocks of 1, 2, 4 or 8 pixels (junk:
  broken renders, sensor noise);
- rare: one class cut down to 2% of the rest (``--rare-classes`` classes, one at a time).
Besides the six shared sets, ``sample`` is the built-in sample (hashae.sample: 6 classes of
generated shapes x 40), a folder of simple pictures unlike any photo set. Beside hashae's scores
(each with the channel statistics and residuals an index run stores), ``variant_scores``
measures *joint* without the residual, and other ways to join the statistics into it.

    python bench/outliers.py                          # six sets and the sample, all scenarios
    python bench/outliers.py --sets coil20 orl_faces --rare-classes 1 --effort fast
    python bench/outliers.py --vectors                # the same scenarios as vector collections
    python bench/outliers.py --summarise bench/results/outliers.json   # the summary again
    python bench/outliers.py --timing 100000 1000000   # time and memory of the scores, no training
    python bench/outliers.py --fidelity cifar10_test  # large-collection neighbour search, simulated

``--vectors``: each set as a vector collection (`hashae index-vectors`): flat pixels (the
planted and noise pictures flattened too), and python_docstrings (bench/vectors.py), whose
planted rows are docstrings of the packages too small to be its classes and whose noise is
word salad. Baselines on the rows as given and as the vector model scales them.

``--fidelity``: past ``EXACT_MAX`` items (200,000) the neighbours come from an inverted-file
index. A shared set is too small to reach that, so the bench simulates it: the default model
indexes the set, and its *joint* score is computed three ways. The exact way scans every item.
The IVF way visits the same share of the lists as NPROBE does of a million items' sqrt(n). The
earlier way scanned a seeded sample of a fifth of the items, as 200,000 are of a million.
Printed: Spearman's rho with the exact scores, and how many of the exact top 2% each keeps.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import faiss
import numpy as np
import torch
from scipy.stats import rankdata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality import DATA  # noqa: E402
from selection import leave_one_set_out  # noqa: E402

from hashae import HasherConfig, SemanticHasher  # noqa: E402
from hashae.ingest import is_grey, load_folder, model_input  # noqa: E402
from hashae.ingest.perceptual import perceptual_hashes  # noqa: E402
from hashae.model.features import principal_directions  # noqa: E402
from hashae.sample import make_sample  # noqa: E402
from hashae.search.index import HammingIndex  # noqa: E402
from hashae.search.outliers import (DEFAULT, METHODS, NEIGHBOURS, NPROBE, VECTOR_DEFAULT, joint_evidence,  # noqa: E402
                                    neighbour_table, outlier_scores, standardised, statistics_norm,
                                    without_self)
from hashae.storage.items import STATS_WIDTH  # noqa: E402

SETS = ["coil20", "orl_faces", "binaryalphadigits", "eurosat_val", "cifar10_test", "tinyimagenet_val"]
SAMPLE = "sample"  # the built-in sample, generated: evaluated, never planted elsewhere
FRACTION = 0.02
NOISE_BLOCKS = (1, 2, 4, 8)
EDGES = STATS_WIDTH - 1  # the last column of /items/stats: edge_disagreement
BASELINES = ("PCA reconstruction error", "raw pixels, 1-NN distance", "raw pixels, mean 10-NN distance")


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC: the chance that a random outlier scores above a random inlier (ties half)."""
    r = rankdata(scores)
    p = positive.sum()
    n = len(scores) - p
    return float((r[positive].sum() - p * (p + 1) / 2) / (p * n))


def load_rgb(name: str, size: int):
    if name == SAMPLE:
        with tempfile.TemporaryDirectory() as tmp:
            make_sample(os.path.join(tmp, SAMPLE), seed=1)
            return load_rgb(os.path.join(tmp, SAMPLE), size)
    images, paths, _ = load_folder(os.path.join(DATA, name), size=size, channels=3, workers=2)
    classes = sorted({p.split("/")[0] for p in paths})
    return images, np.array([classes.index(p.split("/")[0]) for p in paths])


def baseline_scores(pixels: np.ndarray, dims: int) -> dict:
    mean, w = principal_directions(pixels.astype(np.float64), dims)
    xc = pixels - mean
    pca_err = ((xc - (xc @ w) @ w.T) ** 2).mean(1)
    index = faiss.IndexFlatL2(pixels.shape[1])
    x = np.ascontiguousarray(pixels, np.float32)
    index.add(x)
    d, _ = index.search(x, 11)
    d = np.sqrt(np.maximum(d[:, 1:], 0))  # the first hit is the item itself (or an exact copy)
    return dict(zip(BASELINES, (pca_err, d[:, 0], d.mean(1))))


def evaluate(case: dict, cfg: HasherConfig) -> dict:
    """Train the model on the case's collection and score it: every hashae score (with the
    perceptual hashes that indexing stores, taken here from the same pixels) and baseline."""
    name, scenario, positive = case["set"], case["scenario"], case["positive"]
    images = model_input(case["rgb"], case["channels"])
    pixels = images.reshape(len(images), -1).astype(np.float32) / 255
    t0 = time.monotonic()
    model = SemanticHasher(cfg.replace(channels=images.shape[-1])).fit(images)
    fit_s = time.monotonic() - t0
    enc = model.encode_for_index(images)  # codes, errors and channel statistics, as indexing stores them
    codes, error, stats, residual = enc.codes, enc.error, enc.stats, enc.residual
    phash = perceptual_hashes(case["rgb"]).phash
    table = neighbour_table(codes)
    result = {f"hashae: {m}": auc(outlier_scores(error, codes, m, table=table, phash=phash, stats=stats,
                                                 residual=residual), positive)
              for m in METHODS}
    result.update({f"hashae: {v}": auc(score, positive)
                   for v, score in variant_scores(error, table, phash, stats, residual).items()})
    result.update({b: auc(s, positive) for b, s in baseline_scores(pixels, cfg.bits).items()})
    best = max(result[b] for b in BASELINES)
    line = "  ".join(f"{m.replace('hashae: ', '')} {v:.3f}" for m, v in result.items())
    print(f"  {name:17s} {scenario:10s} n={len(images):5d} outliers={positive.sum():3d}  {line}  "
          f"(best baseline {best:.3f}; fit {fit_s:.0f} s)", flush=True)
    return dict(set=name, scenario=scenario, n=len(images), outliers=int(positive.sum()), auc=result,
                best_baseline=best, fit_s=fit_s)


def variant_scores(error: np.ndarray, table: tuple, phash: np.ndarray, stats: np.ndarray,
                   residual: np.ndarray) -> dict:
    """Other ways to make *joint*, measured beside it: without the linear twin's residual (the
    default until the twenty-second session); and, with it, other joins of the channel
    statistics: none at all (the default until 2026-11-29), all but the edges' colour
    disagreement (the default of the twentieth session), with also the mean distance to the 10
    nearest items in standardised statistics (a neighbour search the product would need at
    every size), and with the full-covariance (Mahalanobis) squared distance in place of the
    standardised norm."""
    knn = table[0].mean(1).astype(np.float64)
    near = neighbour_table(phash)[0].mean(1).astype(np.float64)
    z = standardised(stats)
    index = faiss.IndexFlatL2(z.shape[1])
    zz = np.ascontiguousarray(z, np.float32)
    index.add(zz)
    d, _ = index.search(zz, NEIGHBOURS + 1)
    sknn = np.sqrt(np.maximum(d[:, 1:], 0)).mean(1)
    maha = np.einsum("ij,jk,ik->i", z, np.linalg.pinv(np.cov(z, rowvar=False), rcond=1e-6, hermitian=True), z)
    return {"joint, no residual": joint_evidence(error, knn, near, statistics_norm(stats)),
            "joint, no statistics": joint_evidence(error, knn, near, residual),
            "joint, no edge disagreement": joint_evidence(error, knn, near, statistics_norm(stats[:, :EDGES]),
                                                          residual),
            "joint + statistics kNN": joint_evidence(error, knn, near, statistics_norm(stats), sknn, residual),
            "joint, Mahalanobis": joint_evidence(error, knn, near, maha, residual)}


def vector_cases(names: list, data: dict, seed: int, rare_classes: int) -> list:
    """The scenarios of ``--vectors``: each image set as flat pixel vectors (its planted and
    noise pictures too, made grey for a grey set, then flattened), and python_docstrings, whose
    planted rows are the docstrings of the smaller packages that no label covers and whose noise
    is word salad (document lengths and words drawn from the corpus' own frequencies)."""
    from vectors import docstring_corpus
    rng, junk_rng = np.random.default_rng(seed), np.random.default_rng([seed, 1])
    cases = []
    for name in names:
        if name == "python_docstrings":
            counts, labels, foreign = docstring_corpus()
            n_plant = max(5, int(round(FRACTION * len(counts))))
            extra = foreign[rng.choice(len(foreign), n_plant, replace=False)]
            words = counts.sum(0) / counts.sum()
            lengths = junk_rng.choice(counts.sum(1).astype(int), n_plant)
            salad = np.stack([junk_rng.multinomial(m, words) for m in lengths]).astype(np.float32)
            flag = np.r_[np.zeros(len(counts), bool), np.ones(n_plant, bool)]
            cases += [dict(set=name, scenario="planted", vectors=np.concatenate([counts, extra]), positive=flag),
                      dict(set=name, scenario="noise", vectors=np.concatenate([counts, salad]), positive=flag)]
            classes = np.random.default_rng(seed).permutation(labels.max() + 1)[:rare_classes]
            for c in classes:
                rows, positive = rare(name, {name: (counts, labels)}, int(c))
                cases.append(dict(set=name, scenario=f"rare {c}", vectors=rows, positive=positive))
            continue
        classes = np.random.default_rng(seed).permutation(data[name][1].max() + 1)[:rare_classes]
        channels = 1 if is_grey(data[name][0]) else 3

        def flat(rgb):
            return model_input(rgb, channels).reshape(len(rgb), -1).astype(np.float32) / 255
        made = [("planted", *planted(name, data, rng)), ("noise", *noise(data[name][0], junk_rng))]
        made += [(f"rare {c}", *rare(name, data, int(c))) for c in classes]
        cases += [dict(set=name, scenario=sc, vectors=flat(rgb), positive=pos) for sc, rgb, pos in made]
    return cases


def evaluate_vectors(case: dict, cfg: HasherConfig) -> dict:
    """Train a vector model on the case's rows and score them: hashae's scores as a vector
    collection stores them (codes, and errors over the whole scaled row), *joint* as it was
    with the error over the principal components alone, and the baselines on the rows as
    given and as the model scales them."""
    from hashae.model.inputs import as_input, for_data
    vectors, positive = case["vectors"], case["positive"]
    cfg = for_data(cfg.replace(kind="vector"), vectors)
    t0 = time.monotonic()
    model = SemanticHasher(cfg).fit(vectors, progress=False)
    fit_s = time.monotonic() - t0
    enc = model.encode_for_index(vectors)
    codes, error = enc.codes, enc.error
    table = neighbour_table(codes)
    result = {f"hashae: {m}": auc(outlier_scores(error, codes, m, table=table), positive) for m in METHODS}
    net = model.net
    with torch.inference_mode():
        x = as_input(vectors, model.config.model).batch(np.arange(len(vectors)))
        read = net.target(x)
        inside = (net(x).recon - read).pow(2).mean(1).double().numpy()
        z = (x - net.mean) / net.scale
        outside = (z.pow(2).sum(1) - (read * net.spread).pow(2).sum(1)).clamp_min(0).double().numpy()
    knn = table[0].mean(1).astype(np.float64)
    result["hashae: joint, components' error"] = auc(joint_evidence(inside, knn), positive)
    result["hashae: joint, components' error + outside"] = auc(joint_evidence(inside, knn, outside), positive)
    from vectors import scaled
    given = vectors.astype(np.float64)
    for label, rows in (("given", given), ("scaled", scaled(cfg, given, given))):
        result.update({f"{label}: {b.replace('raw pixels, ', '')}": auc(s, positive)
                       for b, s in baseline_scores(rows, cfg.bits).items()})
    best = max(v for k, v in result.items() if not k.startswith("hashae: "))
    line = "  ".join(f"{m.replace('hashae: ', '')} {v:.3f}" for m, v in result.items())
    print(f"  {case['set']:17s} {case['scenario']:10s} n={len(vectors):5d} outliers={positive.sum():3d}  {line}  "
          f"(best baseline {best:.3f}; fit {fit_s:.0f} s)", flush=True)
    return dict(set=case["set"], scenario=case["scenario"], n=len(vectors), outliers=int(positive.sum()), auc=result,
                best_baseline=best, fit_s=fit_s)


def method_names(rows: list) -> list:
    """hashae's scores in the rows, in the order first seen (the product's, then variants)."""
    return list(dict.fromkeys(k.replace("hashae: ", "") for r in rows for k in r["auc"] if k.startswith("hashae: ")))


def planted(name: str, data: dict, rng) -> tuple:
    images, _ = data[name]
    others = [s for s in SETS if s != name]
    n_plant = max(len(others), int(round(FRACTION * len(images))))
    per = np.diff(np.linspace(0, n_plant, len(others) + 1).round().astype(int))
    extra = np.concatenate([data[o][0][rng.choice(len(data[o][0]), c, replace=False)] for o, c in zip(others, per)])
    mixed = np.concatenate([images, extra])
    positive = np.r_[np.zeros(len(images), bool), np.ones(len(extra), bool)]
    return mixed, positive


def noise(images: np.ndarray, rng) -> tuple:
    """The set with 2% of its size added as block noise (one block size drawn per picture)."""
    size = images.shape[1]
    junk = []
    for _ in range(max(5, int(round(FRACTION * len(images))))):
        b = int(rng.choice(NOISE_BLOCKS))
        small = rng.integers(0, 256, (-(-size // b), -(-size // b), 3), dtype=np.uint8)
        junk.append(np.repeat(np.repeat(small, b, 0), b, 1)[:size, :size])
    return (np.concatenate([images, np.stack(junk)]),
            np.r_[np.zeros(len(images), bool), np.ones(len(junk), bool)])


def rare(name: str, data: dict, cls: int) -> tuple:
    images, labels = data[name]
    rest = np.flatnonzero(labels != cls)
    mine = np.flatnonzero(labels == cls)
    keep = mine[: max(2, min(len(mine), int(round(FRACTION * len(rest)))))]
    rows = np.sort(np.r_[rest, keep])
    return images[rows], labels[rows] == cls


def summarise(rows: list) -> list:
    """Per scenario kind and method: the shortfall of hashae's AUC against the best baseline
    (worst and mean; a difference, since ratios mislead below an AUC of 0.5), and the leave-one-
    set-out check on alien images, planted and noise (the tasks every score can solve; on rare
    classes all are near chance): each set's worse shortfall of the two, by
    selection.leave_one_set_out."""
    lines, names = [], method_names(rows)
    width = max(map(len, names))
    for kind in ("planted", "noise", "rare"):
        part = [r for r in rows if r["scenario"].startswith(kind)]
        for m in names:
            d = np.array([r["auc"][f"hashae: {m}"] - r["best_baseline"] for r in part if f"hashae: {m}" in r["auc"]])
            if len(d):
                lines.append(f"  {kind:8s} {m:{width}s} AUC minus the best baseline: worst {d.min():+.3f}, mean "
                             f"{d.mean():+.3f}, at or above it on {(d >= 0).sum()} of {len(d)}")
    alien = {}
    for r in rows:
        if r["scenario"] in ("planted", "noise"):
            for m in names:
                if f"hashae: {m}" in r["auc"]:
                    d = r["auc"][f"hashae: {m}"] - r["best_baseline"]
                    alien[(r["set"], m)] = min(d, alien.get((r["set"], m), d))
    methods = [m for m in names if all((s, m) in alien for s, _ in alien)]
    for held, choice, value in leave_one_set_out(alien, methods):
        lines.append(f"  held out {held:17s}: the other sets choose {choice:{width}s}; on {held} (planted and noise, "
                     f"the worse): {value:+.3f} against the best baseline")
    return lines


def timing(sizes: list) -> None:
    """Seconds and peak memory of the old and new default scores on random 64-bit codes,
    hashes (the worst case for neighbour search) and channel statistics, run side by side."""
    import resource
    for n in sizes:
        rng = np.random.default_rng(0)
        codes, phash = (rng.integers(0, 256, (n, 8), dtype=np.uint8) for _ in range(2))
        error = rng.random(n).astype(np.float32)
        stats = rng.random((n, STATS_WIDTH)).astype(np.float32)
        for m in ("combined", "joint"):
            t = time.monotonic()
            outlier_scores(error, codes, m, phash=phash, stats=stats)
            print(f"  n={n:9d} {m:9s} {time.monotonic() - t:7.1f} s, peak RSS so far "
                  f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB", flush=True)


def sampled_table(codes: np.ndarray, fraction: float, k: int = NEIGHBOURS, seed: int = 0) -> np.ndarray:
    """Each item's k nearest distances among a seeded sample of the items (itself left out):
    what neighbour_table did past 200,000 items before the inverted file."""
    n = len(codes)
    ref = np.sort(np.random.default_rng(seed).choice(n, max(k + 1, int(n * fraction)), replace=False))
    d, i = HammingIndex.from_codes(codes[ref]).search(codes, k + 1)
    return without_self(d, ref[i], np.arange(n))[0]


def fidelity(names: list, cfg: HasherConfig, millions: float = 1.0) -> None:
    """The joint score past EXACT_MAX items, simulated on shared sets (module docstring)."""
    from scipy.stats import spearmanr
    for name in names:
        rgb, _ = load_rgb(name, cfg.image_size)
        channels = 1 if is_grey(rgb) else 3
        images = model_input(rgb, channels)
        model = SemanticHasher(cfg.replace(channels=channels)).fit(images, progress=False)
        codes, error = model.encode_with_error(images)
        hashes = perceptual_hashes(rgb).phash
        n = len(codes)
        lists = np.sqrt(n)
        share = NPROBE / np.sqrt(millions * 1e6)  # of the lists, visited at that many items
        nprobe = max(1, round(share * lists))

        def joint(table):
            return joint_evidence(error, table(codes).mean(1), table(hashes).mean(1))

        exact = joint(lambda c: neighbour_table(c)[0])
        ways = {"inverted file": joint(lambda c: neighbour_table(c, exact_max=0, nprobe=nprobe)[0]),
                "a fifth of the items": joint(lambda c: sampled_table(c, 0.2))}
        top = set(np.argsort(-exact, kind="stable")[: max(1, n // 50)])
        print(f"  {name} ({n} items; {nprobe} of {int(lists)} lists, {share:.1%}):")
        for way, score in ways.items():
            kept = len(top & set(np.argsort(-score, kind="stable")[: len(top)])) / len(top)
            print(f"    {way:22s} rho {spearmanr(exact, score)[0]:.3f}, exact top 2% kept {kept:.2f}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=SETS + [SAMPLE], choices=SETS + [SAMPLE])
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--rare-classes", type=int, default=2, help="classes held out as the rare one, one at a time")
    ap.add_argument("--effort", default="default", choices=["fast", "default", "best"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "outliers.json"))
    ap.add_argument("--vectors", action="store_true",
                    help="the sets as vector collections (flat pixels, and python_docstrings), and stop")
    ap.add_argument("--summarise", metavar="JSON", help="print the summary of an earlier run's results and stop")
    ap.add_argument("--timing", nargs="+", type=int, metavar="N", help="time the scores on N random items and stop")
    ap.add_argument("--fidelity", nargs="+", choices=SETS, metavar="SET",
                    help="the large-collection neighbour search against the exact one, simulated on SETs, and stop")
    args = ap.parse_args(argv)
    if args.timing:
        return timing(args.timing)
    if args.fidelity:
        return fidelity(args.fidelity, HasherConfig.for_effort(args.effort).replace(bits=args.bits, seed=args.seed))
    if args.summarise:
        with open(args.summarise) as f:
            print("\n".join(summarise(json.load(f)["rows"])))
        return
    cfg = HasherConfig.for_effort(args.effort).replace(bits=args.bits, seed=args.seed)
    if args.vectors:
        t0 = time.monotonic()
        names = [s for s in args.sets if s != SAMPLE] + ["python_docstrings"]
        data = {s: load_rgb(s, cfg.image_size) for s in SETS}
        rows = [evaluate_vectors(c, cfg) for c in vector_cases(names, data, args.seed, args.rare_classes)]
        return report(rows, cfg, args.out.replace("outliers.json", "outliers-vectors.json"), t0, VECTOR_DEFAULT)
    rng = np.random.default_rng(args.seed)  # the planted draws, continued across sets
    junk_rng = np.random.default_rng([args.seed, 1])
    t0 = time.monotonic()
    data = {s: load_rgb(s, cfg.image_size) for s in SETS + [SAMPLE]}
    rows = []
    for name in args.sets:
        channels = 1 if is_grey(data[name][0]) else 3
        cases = [("planted", *planted(name, data, rng)), ("noise", *noise(data[name][0], junk_rng))]
        classes = np.random.default_rng(args.seed).permutation(data[name][1].max() + 1)[: args.rare_classes]
        cases += [(f"rare {c}", *rare(name, data, int(c))) for c in classes]
        for scenario, rgb, positive in cases:
            rows.append(evaluate(dict(set=name, scenario=scenario, rgb=rgb, positive=positive, channels=channels), cfg))
    report(rows, cfg, args.out, t0)


def report(rows: list, cfg: HasherConfig, out: str, t0: float, default: str = DEFAULT) -> None:
    print(f"AUC of hashae's default score ({default}) against the best baseline (hashae / best):")
    for r in rows:
        print(f"  {r['set']:17s} {r['scenario']:10s} {r['auc'][f'hashae: {default}']:.3f} / {r['best_baseline']:.3f}")
    lines = summarise(rows)
    print("\n".join(lines))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"config": json.loads(cfg.to_json()), "rows": rows, "summary": lines,
                   "seconds": time.monotonic() - t0}, f, indent=1)
    print(f"wrote {out} ({time.monotonic() - t0:.0f} s)")


if __name__ == "__main__":
    main()
