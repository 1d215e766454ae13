"""Retrieval quality of hashae against classic hashing baselines, side by side in one run.

Protocol (../shared/data/README.md): seeded stratified queries (100 per class; 10 for coil20,
2 for orl_faces), the rest is the database; models are trained on database images only without
labels; ranking by Hamming distance over the whole database, ties in database order; mAP over
the full ranking and precision@100. Baselines use the same pixels (resized to the model's input,
scaled to [0, 1]). hashae's default two-stage ranking (search.rank: the Hamming shortlist
re-ranked by the query's expected distance and the perceptual copy bonus, the rest of the
database after it in Hamming order) is scored beside the plain Hamming order, with the copy
bonus settings of --rerank.

    python bench/quality.py                       # all six sets, 16/32/64 bits, ablations at 64
    python bench/quality.py --sets coil20 --bits 32 --no-ablations
    python bench/quality.py --set-config epochs=30 --set-config arch=conv
    python bench/quality.py --effort fast --bits 64 --no-ablations
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baselines import HASHERS, pca_float  # noqa: E402

from hashae import HasherConfig, SemanticHasher  # noqa: E402
from hashae.ingest import is_grey, load_folder  # noqa: E402
from hashae.codes import hamming_matrix, pack  # noqa: E402
from hashae.ingest.perceptual import perceptual_hashes  # noqa: E402
from hashae.metrics import euclidean_distances, hamming_retrieval, retrieval_scores  # noqa: E402
from hashae.search import HammingIndex  # noqa: E402
from hashae.search.rank import SHORTLIST, Queries, Ranker, Scoring  # noqa: E402

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
    "plain noisy autoencoder (none of the additions)": {"contrastive": 0.0, "stats": 0.0, "stats_input": False,
                                                       "neighbours": 0.0},
}

COLOUR_ONLY = {"statistics term 0.05 (the grey weight) on colour too"}
GREY_ONLY = {"no neighbour term (neighbours 0)"}


def load_labelled(name: str, size: int):
    """(images uint8 NHWC, labels) of a class-per-folder set; grey sets come back with 1 channel."""
    images, paths, skipped = load_folder(os.path.join(DATA, name), size=size, channels=3, workers=2)
    if skipped:
        print(f"  {name}: {len(skipped)} files skipped", file=sys.stderr)
    classes = sorted({p.split("/")[0] for p in paths})
    labels = np.array([classes.index(p.split("/")[0]) for p in paths])
    if is_grey(images):
        images = images[..., :1]
    return images, labels


def split(labels: np.ndarray, per_class: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    q = np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                        for c in np.unique(labels)])
    q = np.sort(q)
    db = np.setdiff1d(np.arange(len(labels)), q)
    return q, db


def scoring_of(spec: str, noise_std: float) -> Scoring:
    """A copy-bonus setting "WITHIN/WEIGHT/PERCENTILE/MARGIN" (search.rank.Scoring; "default":
    the library's; a weight of 0: the expected distance alone; percentile 100 with a margin
    of -999: a fixed bar at WITHIN)."""
    if spec == "default":
        return Scoring(noise_std)
    within, weight, percentile, margin = (float(v) for v in spec.split("/"))
    return Scoring(noise_std, int(within), weight, percentile, margin)


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


def run_set(name: str, bits_list, base: HasherConfig, ablations: bool, seed: int, rerank=(),
            long_bits: int | None = None) -> list:
    images, labels = load_labelled(name, base.image_size)
    q, db = split(labels, QUERIES_PER_CLASS.get(name, 100), seed)
    pixels = images.reshape(len(images), -1).astype(np.float64) / 255
    ql, dl = labels[q], labels[db]
    rows = []

    def add(method, bits, scores, seconds=None):
        row = dict(set=name, method=method, bits=bits, **scores, train_s=seconds)
        rows.append(row)
        t = f"{seconds:7.1f}s" if seconds is not None else ""
        print(f"  {name:12s} {bits!s:>4} {method:30s} mAP {scores['map']:.4f}  P@100 {scores['p@100']:.4f} {t}",
              flush=True)

    add("raw pixels, Euclidean", "-", retrieval_scores(euclidean_distances(pixels[q], pixels[db]), ql, dl))
    cfg_base = base.replace(channels=images.shape[-1], seed=seed)
    for bits in bits_list:
        proj = pca_float(pixels[db], bits)
        add("PCA, Euclidean", bits, retrieval_scores(euclidean_distances(proj(pixels[q]), proj(pixels[db])), ql, dl))
        for method, make in HASHERS.items():
            h = make(pixels[db], bits, seed)
            add(method, bits, hamming_retrieval(h(pixels[q]), h(pixels[db]), ql, dl))
        variants = {"hashae": {}}
        if ablations and bits == max(bits_list):
            variants.update(ABLATIONS)
        for method, changes in variants.items():
            if (method in COLOUR_ONLY and cfg_base.channels == 1) or (method in GREY_ONLY and cfg_base.channels == 3):
                continue  # the same config as the default on these images
            t0 = time.monotonic()
            model = SemanticHasher(cfg_base.replace(bits=bits, **changes)).fit(images[db])
            secs = time.monotonic() - t0
            add(method if method == "hashae" else f"hashae: {method}", bits,
                hamming_retrieval(model.encode(images[q]), model.encode(images[db]), ql, dl), secs)
            if method != "hashae":
                continue
            # what every re-ranking shares, computed once: the queries' code-layer inputs and
            # hashes, the database's codes, hashes and index, and the plain Hamming distances
            logits = model.logits(images[q])
            queries = Queries(pack(logits > 0), logits, perceptual_hashes(images[q]))
            dbcodes = model.encode(images[db])
            index, db_hashes = HammingIndex.from_codes(dbcodes), perceptual_hashes(images[db])
            plain = hamming_matrix(queries.codes, dbcodes)
            for spec in rerank:
                scoring = scoring_of(spec, model.config.noise_std)
                label = "hashae, re-ranked" + (" (default)" if scoring == Scoring(model.config.noise_std) else
                                               f" (copy bonus {spec})")
                add(label, bits, reranked(Ranker(index, db_hashes, scoring), queries, plain, ql, dl))
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
                                                  "cifar10_test", "tinyimagenet_val"])
    ap.add_argument("--rerank", nargs="*", default=["default"], metavar="W/w/P/M",
                    help="copy-bonus settings of the two-stage ranking to score: WITHIN/WEIGHT/PERCENTILE/MARGIN "
                         "(search.rank.Scoring) or default; 48/0/10/8 is the expected distance alone")
    ap.add_argument("--bits", nargs="+", type=int, default=[16, 32, 64])
    ap.add_argument("--no-ablations", action="store_true")
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
    rows, t0 = [], time.monotonic()
    for name in args.sets:
        rows += run_set(name, args.bits, base, not args.no_ablations, args.seed, args.rerank, args.long_code)
    summary = summarise(rows)
    for line in summary:
        print(line)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"config": json.loads(base.to_json()), "rows": rows, "summary": summary,
                   "seconds": time.monotonic() - t0, "threads": __import__("torch").get_num_threads()}, f, indent=1)
    print(f"wrote {args.out}")


def summarise(rows) -> list:
    """Ratios behind the targets: hashae / ITQ at each code length, and hashae@64 / raw pixels."""
    out = []
    by = {(r["set"], r["method"], r["bits"]): r["map"] for r in rows}
    for name in dict.fromkeys(r["set"] for r in rows):
        for bits in sorted({r["bits"] for r in rows if r["set"] == name and r["bits"] != "-"}):
            h, i = by.get((name, "hashae", bits)), by.get((name, "ITQ", bits))
            if h is not None and i:
                out.append(f"{name} {bits} bits: hashae/ITQ mAP = {h / i:.2f}")
        h64, raw = by.get((name, "hashae", 64)), by.get((name, "raw pixels, Euclidean", "-"))
        if h64 is not None and raw:
            out.append(f"{name} 64 bits: hashae/raw-pixels mAP = {h64 / raw:.2f}")
    return out


if __name__ == "__main__":
    main()
