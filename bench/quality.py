"""Retrieval quality of hashae against classic hashing baselines and simple features, side by
side in one run.

Protocol (../shared/data/README.md): seeded stratified queries (100 per class; 10 for coil20,
2 for orl_faces, 10 for tinyimagenet_val, 5 for binaryalphadigits), the rest is the database;
models are trained on database images only without labels; ranking by Hamming distance over the
whole database, ties in database order; mAP over the full ranking and precision@100. Baselines
use the same pixels (resized to the model's input, scaled to [0, 1]): raw pixels and PCA
(Euclidean), LSH, PCAH and ITQ, and the simple features a tool could compute with no training
(a colour histogram, channel statistics of the whole image and of a grid), each also hashed to
the same bits by ITQ. hashae's default two-stage ranking (search.rank) is scored beside the
plain Hamming order, with the settings of --rerank.

A default is judged by its worst ratio to ITQ across the sets: the summary prints each hashae
setting's ratio on every set, its worst, and a leave-one-set-out check (for each set, the
setting the other sets would have chosen, scored on the held-out one). --rules adds the
candidates that matter for it: each rule that switches on the channel count, made one setting
for every set.

    python bench/quality.py                       # all six sets, 16/32/64 bits, ablations at 64
    python bench/quality.py --sets coil20 --bits 32 --no-ablations
    python bench/quality.py --bits 64 --no-ablations --rules --also-effort fast best
    python bench/quality.py --set-config epochs=30 --set-config arch=conv
    python bench/quality.py --sets ../shared/data/hymenoptera --bits 64 --no-ablations  # any labelled folder
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baselines import HASHERS, itq, kernel_lift, pca_float, simple_features  # noqa: E402

from hashae import HasherConfig, SemanticHasher  # noqa: E402
from hashae.ingest import is_grey, load_folder  # noqa: E402
from hashae.codes import hamming_matrix, pack  # noqa: E402
from hashae.ingest.perceptual import perceptual_hashes  # noqa: E402
from hashae.metrics import euclidean_distances, hamming_retrieval, retrieval_scores  # noqa: E402
from hashae.search import HammingIndex  # noqa: E402
from hashae.search.rank import SHORTLIST, Queries, Ranker, Scoring, stats_weight_for  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")
QUERIES_PER_CLASS = {"coil20": 10, "orl_faces": 2, "tinyimagenet_val": 10, "binaryalphadigits": 5}
ABLATIONS = {
    "no pretraining": {"pretrain": "none"},
    "straight-through (no noise)": {"binarizer": "ste"},
    "no contrastive term (contrastive 0)": {"contrastive": 0.0},
    "no statistics input": {"stats_input": False},
    "no statistics term (stats 0)": {"stats": 0.0},
    "statistics term 0.05 (the grey weight) on colour too": {"stats": 0.05},
    "no neighbour term (neighbours 0)": {"neighbours": 0.0},
    "neighbours found by pixels alone": {"neighbour_space": "pixels"},
    "neighbours by pixels, statistics and gradients": {"neighbour_space": "pixels+stats+gradients"},
    "8 feature bits (channel statistics, model/features.py)": {"feature_bits": 8},
    "16 feature bits (channel statistics)": {"feature_bits": 16},
    "plain noisy autoencoder (none of the additions)": {"contrastive": 0.0, "stats": 0.0, "stats_input": False,
                                                       "neighbours": 0.0},
}

# the rules that switch on a property of the folder (the channel count), each made one setting
# for every set: run with --rules, they are the evidence for (or against) the switch, and the
# candidates of the leave-one-set-out check
RULES = {
    "statistics term 0.4 on every set": {"stats": 0.4},
    "statistics term 0.05 on every set": {"stats": 0.05},
    "statistics input on every set": {"stats_input": True},
    "no statistics input on any set": {"stats_input": False},
    "neighbour term 0.5 on every set": {"neighbours": 0.5},
    "neighbour term 0.5 gated at 0.5 on every set": {"neighbours": 0.5, "neighbour_gate": 0.5},
    "neighbour term 0.5 gated at 0.5, by gradients too, on every set": {
        "neighbours": 0.5, "neighbour_gate": 0.5, "neighbour_space": "pixels+stats+gradients"},
    "neighbour term 0.5 gated at 0.5 and 3 shared, by gradients too, on every set": {
        "neighbours": 0.5, "neighbour_gate": 0.5, "neighbour_shared": 3, "neighbour_space": "pixels+stats+gradients"},
    "no neighbour term on any set": {"neighbours": 0.0},
}


def is_folder_set(name: str) -> bool:
    """A set given as a path (``--sets ../photos/labelled``) rather than a shared set's name."""
    return os.sep in name or name.startswith(".")


def load_labelled(name: str, size: int):
    """(images uint8 NHWC, labels) of a class-per-folder set: a shared set's name, or the path of
    any labelled folder, each image's class the folder it lies in (``train/ants/1.jpg``: ants);
    grey sets come back with 1 channel."""
    root = name if is_folder_set(name) else os.path.join(DATA, name)
    if not os.path.isdir(root):
        raise SystemExit(f"{name}: no such folder (a shared set's name, or the path of a labelled folder)")
    images, paths, skipped = load_folder(root, size=size, channels=3, workers=2)
    if skipped:
        print(f"  {name}: {len(skipped)} files skipped", file=sys.stderr)
    folder = [os.path.basename(os.path.dirname(p)) or "." for p in paths]
    classes = sorted(set(folder))
    labels = np.array([classes.index(f) for f in folder])
    if is_grey(images):
        images = images[..., :1]
    return images, labels


def queries_per_class(name: str, labels: np.ndarray) -> int:
    """The protocol's queries per class (QUERIES_PER_CLASS, else 100); a labelled folder given
    by path takes at most a fifth of its smallest class, so that every class keeps most of its
    images in the database."""
    if not is_folder_set(name):
        return QUERIES_PER_CLASS.get(name, 100)
    smallest = int(np.bincount(labels).min())
    if smallest < 2:  # its one image would be a query with nothing relevant to find
        raise SystemExit(f"{name}: a class folder holds {smallest} image; each needs at least 2")
    return max(1, min(100, smallest // 5))


def hashed_features(features: dict, db: np.ndarray, bits: int, seed: int):
    """Each simple feature (simple_features) hashed to ``bits`` bits by ITQ fitted on the
    database rows ``db``, kernel-lifted first where it needs it: yields (name, the feature's
    rows as hashed, the hasher); a feature of fewer values than ``bits`` is left out."""
    for name, (f, lift) in features.items():
        if lift:
            f = kernel_lift(f[db], seed=seed)(f)
        if f.shape[1] >= bits:
            yield name, f, itq(f[db], bits, seed)


def split(labels: np.ndarray, per_class: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    q = np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                        for c in np.unique(labels)])
    q = np.sort(q)
    db = np.setdiff1d(np.arange(len(labels)), q)
    return q, db


def scoring_of(spec: str, noise_std: float, stats_weight: float) -> Scoring:
    """A copy-bonus setting "WITHIN/WEIGHT/PERCENTILE/MARGIN" (search.rank.Scoring; "default":
    the library's; a weight of 0: the expected distance alone; percentile 100 with a margin
    of -999: a fixed bar at WITHIN), with the statistics term a collection of these pictures
    would weigh (``stats_weight``); "stats=W" is the default with the statistics term at W."""
    if spec == "default":
        return Scoring(noise_std, stats_weight=stats_weight)
    if spec.startswith("stats="):
        return Scoring(noise_std, stats_weight=float(spec[len("stats="):]))
    within, weight, percentile, margin = (float(v) for v in spec.split("/"))
    return Scoring(noise_std, int(within), weight, percentile, margin, stats_weight=stats_weight)


def shortlist_first(plain: np.ndarray, orders: list) -> np.ndarray:
    """Hamming distances (queries, database) with each query's ``orders[row]`` items put first,
    in that order, before every Hamming distance: a two-stage ranking as a distance matrix."""
    dist = plain.astype(np.float64)
    for row, ids in enumerate(orders):
        dist[row, ids] = np.arange(len(ids)) - len(ids)
    return dist


def reranked(ranker: Ranker, queries: Queries, plain: np.ndarray, ql, dl) -> dict:
    """retrieval_scores of the two-stage ranking: each query's SHORTLIST best by the ranker's
    scoring first, then the rest of the database in Hamming order (ties in database order)."""
    return retrieval_scores(shortlist_first(plain, [r.ids for r in ranker.knn(queries, SHORTLIST)]), ql, dl)


def long_reranked(index: HammingIndex, queries: Queries, plain: np.ndarray, qlong, dblong, ql, dl) -> dict:
    """retrieval_scores when each query's SHORTLIST nearest codes in ``index`` are re-ranked by
    the Hamming distance of longer codes ``qlong`` / ``dblong`` (Krizhevsky & Hinton 2011's
    second stage; ties by the short distance), the rest of the database after them in Hamming order."""
    _, ids = index.search(queries.codes, SHORTLIST)
    orders = []
    for row, shortlist in enumerate(ids):
        shortlist = shortlist[shortlist >= 0]
        finer = hamming_matrix(qlong[row:row + 1], dblong[shortlist])[0]
        orders.append(shortlist[np.lexsort((plain[row, shortlist], finer))])
    return retrieval_scores(shortlist_first(plain, orders), ql, dl)


def resolved(cfg: HasherConfig) -> str:
    """``cfg`` with the choices it makes by channel count written out: two configs that train
    alike give the same string."""
    neighbours = dict(neighbour_k=cfg.neighbour_count) if cfg.neighbour_weight else \
        dict(neighbour_space=HasherConfig.neighbour_space, neighbour_k=None)  # unused
    return cfg.replace(stats=cfg.stats_weight, neighbours=cfg.neighbour_weight, temperature=cfg.contrast_temperature,
                       stats_input=cfg.uses_stats_input, **neighbours).to_json()


def run_set(name: str, bits_list, base: HasherConfig, variants: dict, seed: int, rerank=(),
            long_bits: int | None = None, efforts: dict | None = None) -> list:
    """Rows of one set: raw pixels, the classic hashers and the simple features at each code
    length, hashae at each; at the longest, hashae with each of ``variants`` (name -> config
    changes; one that trains as the default does takes its row) and each of ``efforts`` (name
    -> a base config)."""
    images, labels = load_labelled(name, base.image_size)
    q, db = split(labels, queries_per_class(name, labels), seed)
    pixels = images.reshape(len(images), -1).astype(np.float64) / 255
    ql, dl = labels[q], labels[db]
    rows = []

    def add(method, bits, scores, seconds=None, same_as=None):
        row = dict(set=name, method=method, bits=bits, **scores, train_s=seconds)
        if same_as:
            row["same_as"] = same_as
        rows.append(row)
        t = f"{seconds:7.1f}s" if seconds is not None else ("  (= " + same_as + ")" if same_as else "")
        print(f"  {name:12s} {bits!s:>4} {method:30s} mAP {scores['map']:.4f}  P@100 {scores['p@100']:.4f} {t}",
              flush=True)

    add("raw pixels, Euclidean", "-", retrieval_scores(euclidean_distances(pixels[q], pixels[db]), ql, dl))
    features = simple_features(images, db)
    for feature, (f, _) in features.items():
        add(f"{feature}, Euclidean", "-", retrieval_scores(euclidean_distances(f[q], f[db]), ql, dl))
    cfg_base = base.replace(channels=images.shape[-1], seed=seed)
    for bits in bits_list:
        proj = pca_float(pixels[db], bits)
        add("PCA, Euclidean", bits, retrieval_scores(euclidean_distances(proj(pixels[q]), proj(pixels[db])), ql, dl))
        for method, make in HASHERS.items():
            h = make(pixels[db], bits, seed)
            add(method, bits, hamming_retrieval(h(pixels[q]), h(pixels[db]), ql, dl))
        for feature, f, h in hashed_features(features, db, bits, seed):
            add(f"{feature}, ITQ", bits, hamming_retrieval(h(f[q]), h(f[db]), ql, dl))
        runs = {"hashae": cfg_base.replace(bits=bits)}
        if bits == max(bits_list):
            runs.update({f"hashae: {v}": cfg_base.replace(bits=bits, **changes) for v, changes in variants.items()})
            runs.update({f"hashae, effort {e}": cfg.replace(channels=images.shape[-1], seed=seed, bits=bits)
                         for e, cfg in (efforts or {}).items()})
        trained = {}  # resolved config -> method whose row it is
        for method, cfg in runs.items():
            key = resolved(cfg)
            if key in trained:  # trains exactly as an earlier row on these images
                first = next(r for r in rows if r["method"] == trained[key] and r["bits"] == bits)
                add(method, bits, {k: first[k] for k in ("map", "p@100")}, same_as=trained[key])
                continue
            trained[key] = method
            t0 = time.monotonic()
            model = SemanticHasher(cfg).fit(images[db])
            add(method, bits, hamming_retrieval(model.encode(images[q]), model.encode(images[db]), ql, dl),
                time.monotonic() - t0)
            if method != "hashae":
                continue
            # what every re-ranking shares, computed once: the queries' code-layer inputs and
            # hashes, the database's codes, hashes and index, and the plain Hamming distances
            logits = model.logits(images[q])
            queries = Queries(pack(logits > 0), logits, perceptual_hashes(images[q]), model.statistics(images[q]))
            dbcodes = model.encode(images[db])
            index, db_hashes = HammingIndex.from_codes(dbcodes), perceptual_hashes(images[db])
            db_stats = model.statistics(images[db])
            plain = hamming_matrix(queries.codes, dbcodes)
            stats_weight = stats_weight_for(images.shape[-1])
            for spec in rerank:
                scoring = scoring_of(spec, model.config.noise_std, stats_weight)
                default = Scoring(model.config.noise_std, stats_weight=stats_weight)
                label = "hashae, re-ranked" + (" (default)" if scoring == default else
                                               f" ({spec})" if spec.startswith("stats=") else f" (copy bonus {spec})")
                add(label, bits, reranked(Ranker(index, db_hashes, scoring, db_stats), queries, plain, ql, dl))
            if long_bits:
                t0 = time.monotonic()
                long_model = SemanticHasher(cfg_base.replace(bits=long_bits)).fit(images[db])
                add(f"hashae, re-ranked by a {long_bits}-bit code", bits,
                    long_reranked(index, queries, plain, long_model.encode(images[q]), long_model.encode(images[db]),
                                  ql, dl), time.monotonic() - t0)
    return rows


def parse_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_settings(texts) -> dict:
    """KEY=VALUE strings (JSON values) as a dict of HasherConfig overrides."""
    return dict((k, parse_value(v)) for k, v in (t.split("=", 1) for t in texts))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["coil20", "orl_faces", "binaryalphadigits", "eurosat_val",
                                                  "cifar10_test", "tinyimagenet_val"],
                    help="shared sets by name, or labelled folders by path (each image's class: its folder)")
    ap.add_argument("--rerank", nargs="*", default=["default"], metavar="W/w/P/M",
                    help="settings of the two-stage ranking to score: default, copy bonus WITHIN/WEIGHT/PERCENTILE/MARGIN "
                         "(search.rank.Scoring; 48/0/10/8 is the expected distance alone), or stats=W, the "
                         "default with the channel statistics' term at W bits (0: none)")
    ap.add_argument("--bits", nargs="+", type=int, default=[16, 32, 64])
    ap.add_argument("--no-ablations", action="store_true")
    ap.add_argument("--ablation", action="append", default=[], metavar="TEXT",
                    help="run only the ablations whose name holds TEXT (repeatable; with --no-ablations too)")
    ap.add_argument("--rules", action="store_true",
                    help="also train each rule that switches on the channel count made one setting for every set "
                         "(RULES): the candidates of the leave-one-set-out check")
    ap.add_argument("--also-effort", nargs="*", default=[], choices=["fast", "default", "best"],
                    help="also train these effort levels' recipes at the longest code")
    ap.add_argument("--long-code", type=int, metavar="BITS",
                    help="also train a BITS-bit model and score re-ranking each shortlist by its longer code")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--effort", default="default", choices=["fast", "default", "best"],
                    help="start from this effort level's recipe (HasherConfig.for_effort)")
    ap.add_argument("--set-config", action="append", default=[], metavar="KEY=VALUE",
                    help="override a HasherConfig field (JSON value), e.g. epochs=30 or hidden=[512,256]")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "quality.json"))
    args = ap.parse_args(argv)
    base = HasherConfig.for_effort(args.effort).replace(**parse_settings(args.set_config))
    print(f"config: {base.to_json()}")
    overrides = parse_settings(args.set_config)
    ablations = {k: v for k, v in ABLATIONS.items() if any(t in k for t in args.ablation)} if args.ablation else \
        ({} if args.no_ablations else ABLATIONS)
    variants = {**ablations, **(RULES if args.rules else {})}
    efforts = {e: HasherConfig.for_effort(e).replace(**overrides) for e in args.also_effort if e != args.effort}
    rows, t0 = [], time.monotonic()
    for name in args.sets:
        rows += run_set(name, args.bits, base, variants, args.seed, args.rerank, args.long_code, efforts)
    summary = summarise(rows)
    for line in summary:
        print(line)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"config": json.loads(base.to_json()), "rows": rows, "summary": summary,
                   "seconds": time.monotonic() - t0, "threads": __import__("torch").get_num_threads()}, f, indent=1)
    print(f"wrote {args.out}")


def summarise(rows) -> list:
    """The lines behind the targets: hashae / ITQ at each code length and hashae / raw pixels;
    at the longest code, each effort level against the best simple feature, and for every
    hashae setting its ratio to ITQ on each set, its worst, and the leave-one-set-out check."""
    out = []
    by = {(r["set"], r["method"], r["bits"]): r["map"] for r in rows}
    sets = list(dict.fromkeys(r["set"] for r in rows))
    top = max(r["bits"] for r in rows if r["bits"] != "-")
    for name in sets:
        for bits in sorted({r["bits"] for r in rows if r["set"] == name and r["bits"] != "-"}):
            h, i = by.get((name, "hashae", bits)), by.get((name, "ITQ", bits))
            if h is not None and i:
                out.append(f"{name} {bits} bits: hashae/ITQ mAP = {h / i:.2f}")
        h, raw = by.get((name, "hashae", top)), by.get((name, "raw pixels, Euclidean", "-"))
        if h is not None and raw:
            out.append(f"{name} {top} bits: hashae/raw-pixels mAP = {h / raw:.2f}")
        feats = {m: v for (s, m, b), v in by.items() if s == name and b == top and m.endswith(", ITQ") and m != "ITQ"}
        best = max(feats, key=feats.get) if feats else None
        for method in [m for (s, m, b) in by if s == name and b == top and (m == "hashae" or m.startswith("hashae, effort"))]:
            h = by[(name, method, top)]
            line = f"{name} {top} bits: {method}: {h / by[(name, 'ITQ', top)]:.2f}x ITQ"
            if best:
                line += f", {'beats' if h > feats[best] else 'BELOW'} the best simple feature ({best} {feats[best]:.4f})"
            out.append(line)
    # every hashae setting trained at the longest code on every set: its ratio to ITQ per set
    settings = [m for m in dict.fromkeys(r["method"] for r in rows)
                if (m == "hashae" or m.startswith("hashae: ")) and all((s, m, top) in by for s in sets)]
    ratio = {(m, s): by[(s, m, top)] / by[(s, "ITQ", top)] for m in settings for s in sets}
    if len(sets) > 1 and settings:
        out.append(f"hashae / ITQ at {top} bits, each setting on each set, worst and mean:")
        for m in sorted(settings, key=lambda m: -min(ratio[m, s] for s in sets)):
            vals = [ratio[m, s] for s in sets]
            out.append(f"  {m:58s} " + " ".join(f"{v:.3f}" for v in vals) +
                       f"  worst {min(vals):.3f}  mean {np.mean(vals):.3f}")
        out.append("leave one set out (the setting with the best worst ratio on the other sets, scored on the held-out one):")
        for held in sets:
            others = [s for s in sets if s != held]
            chosen = max(settings, key=lambda m: (min(ratio[m, s] for s in others), m == "hashae"))
            out.append(f"  {held}: {chosen} -> {ratio[chosen, held]:.3f}x ITQ (default {ratio['hashae', held]:.3f}x)")
    return out


if __name__ == "__main__":
    main()
