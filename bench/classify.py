"""k-NN labels in code space: accuracy of ``hashae classify``'s vote against k-NN on raw pixels
and on ITQ codes, side by side in one run, on the retrieval-quality protocol's split (the
database is the labelled collection, the queries are classified). hashae votes as ``classify``
does ("hashae classify": the two-stage ranking's score, expected distance less the copy bonus,
averaged with the perceptual distance at search.vote.PERCEPTUAL_WEIGHT), and, for comparison,
over search's ranking alone ("hashae ranked", weight 0), over other weights (``--weights``)
and over plain Hamming neighbours ("hashae").

    python bench/classify.py                     # six sets, k = 10
    python bench/classify.py --sets coil20 --k 5 --effort fast --weights 0.5 2
    python bench/classify.py --vectors           # vector collections: bench/vectors.py's seven sets

With ``--vectors`` each set is given as bench/vectors.py gives it (flat pixel vectors, and
python_docstrings' word counts) to the vector model (``kind="vector"``, scaled as
``for_data`` chooses), whose collections ``classify`` ranks without perceptual hashes or
statistics; the baselines are k-NN on the vectors as given and on ITQ codes of them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import faiss
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baselines import itq  # noqa: E402
from quality import QUERIES_PER_CLASS, load_labelled, split  # noqa: E402
from selection import leave_one_set_out  # noqa: E402
from vectors import QUERIES as VECTOR_QUERIES  # noqa: E402
from vectors import SETS as VECTOR_SETS  # noqa: E402
from vectors import load_vectors  # noqa: E402

from hashae import HasherConfig, SemanticHasher  # noqa: E402
from hashae.codes import pack  # noqa: E402
from hashae.ingest.perceptual import perceptual_hashes  # noqa: E402
from hashae.model.inputs import for_data  # noqa: E402
from hashae.search import HammingIndex  # noqa: E402
from hashae.search.rank import Queries, Ranker, Scoring, stats_weight_for  # noqa: E402
from hashae.search.vote import PERCEPTUAL_WEIGHT, POWER, TIE_WIDTH, knn_vote, ranked_rows  # noqa: E402

SETS = ["coil20", "orl_faces", "binaryalphadigits", "eurosat_val", "cifar10_test", "tinyimagenet_val"]
PER_CLASS = {**QUERIES_PER_CLASS, "tinyimagenet_val": 10, "binaryalphadigits": 5}
POWERS = tuple(sorted({0, 1, 4, 8, 16, 32, POWER}))


def hamming_votes(q_codes, db_codes, db_labels, n_labels, k, bits, power):
    index = HammingIndex.from_codes(db_codes)
    d, i = index.search(q_codes, min(len(db_codes), k * TIE_WIDTH))
    return knn_vote(d, i, db_labels, n_labels, k, bits, power).label


def ranked_neighbours(model, q_images, db_images, db_codes, k, weights):
    """{perceptual weight: (scores, ids) rows} as Collection.classify votes over them: each
    query's first k * TIE_WIDTH + 1 hits of the two-stage ranking with the perceptual distance
    at that weight (0: search's order). The same for every vote power."""
    logits = model.logits(q_images)
    queries = Queries(pack(logits > 0), logits, perceptual_hashes(q_images), model.statistics(q_images))
    scoring = Scoring(noise_std=model.config.noise_std, stats_weight=stats_weight_for(q_images.shape[-1]))
    ranker = Ranker(HammingIndex.from_codes(db_codes), perceptual_hashes(db_images), scoring,
                    model.statistics(db_images))
    width = min(len(db_codes), k * TIE_WIDTH + 1)
    return {w: ranked_rows(ranker.with_scoring(dataclasses.replace(scoring, perceptual_weight=w))
                           .knn(queries, width), width) for w in weights}


def weight_name(w: float) -> str:
    if w == 0:
        return "hashae ranked"
    return "hashae classify" if w == PERCEPTUAL_WEIGHT else f"hashae, perceptual weight {w:g}"


def pixel_knn(q, db, db_labels, n_labels, k, weighted):
    index = faiss.IndexFlatL2(db.shape[1])
    index.add(np.ascontiguousarray(db, np.float32))
    d, i = index.search(np.ascontiguousarray(q, np.float32), k)
    w = 1 / np.maximum(np.sqrt(np.maximum(d, 0)), 1e-9) if weighted else np.ones_like(d)
    votes = np.zeros((len(q), n_labels))
    for r in range(len(q)):
        np.add.at(votes[r], db_labels[i[r]], w[r])
    return votes.argmax(1)


def baseline_accuracy(x, labels, q, db, cfg: HasherConfig, k: int, kind: str, itq_powers) -> dict:
    """Accuracy of the baselines on the rows ``x`` (pixels or vectors, named by ``kind``): k-NN
    on the rows themselves, uniform and 1/d weights, and the vote over ITQ codes of them at
    ``itq_powers``, keyed as the bench prints them."""
    n_labels = int(labels.max()) + 1
    acc = {}
    for weighted in (False, True):
        pred = pixel_knn(x[q], x[db], labels[db], n_labels, k, weighted)
        acc[f"raw {kind}, k-NN{' (1/d weights)' if weighted else ''}"] = float((pred == labels[q]).mean())
    h = itq(x[db].astype(np.float64), cfg.bits, cfg.seed)
    q_codes, db_codes = h(x[q].astype(np.float64)), h(x[db].astype(np.float64))
    for power in itq_powers:
        pred = hamming_votes(q_codes, db_codes, labels[db], n_labels, k, cfg.bits, power)
        acc[f"ITQ codes, vote power {power}"] = float((pred == labels[q]).mean())
    return acc


def finished_row(name: str, queries: int, acc: dict, fit_s: float) -> dict:
    """A set's row of results: printed on one line, with the best raw k-NN as the bar."""
    base = max(v for m, v in acc.items() if m.startswith("raw"))
    print(f"  {name:17s} " + "  ".join(f"{m} {v:.3f}" for m, v in acc.items()) + f"  (fit {fit_s:.0f} s)", flush=True)
    return dict(set=name, queries=queries, accuracy=acc, best_raw=base, fit_s=fit_s)


def run_set(name: str, cfg: HasherConfig, k: int, weights=()) -> dict:
    images, labels = load_labelled(name, cfg.image_size)
    q, db = split(labels, PER_CLASS.get(name, 100), cfg.seed)
    n_labels = int(labels.max()) + 1
    pixels = images.reshape(len(images), -1).astype(np.float32) / 255
    acc = baseline_accuracy(pixels, labels, q, db, cfg, k, "pixels", (0, POWER))
    t0 = time.monotonic()
    model = SemanticHasher(cfg.replace(channels=images.shape[-1])).fit(images[db])
    fit_s = time.monotonic() - t0
    qc, dc = model.encode(images[q]), model.encode(images[db])
    for power in POWERS:
        pred = hamming_votes(qc, dc, labels[db], n_labels, k, cfg.bits, power)
        acc[f"hashae, vote power {power}"] = float((pred == labels[q]).mean())
    rows = ranked_neighbours(model, images[q], images[db], dc, k, sorted({0.0, PERCEPTUAL_WEIGHT, *weights}))
    for w, (dist, ids) in rows.items():
        for power in POWERS:
            pred = knn_vote(dist, ids, labels[db], n_labels, k, cfg.bits, power).label
            acc[f"{weight_name(w)}, vote power {power}"] = float((pred == labels[q]).mean())
    return finished_row(name, len(q), acc, fit_s)


def run_vector_set(name: str, cfg: HasherConfig, k: int) -> dict:
    """One set of bench/vectors.py as a vector collection's classify votes on it (search's
    ranking: expected distance, no hashes or statistics), against k-NN on the vectors and on ITQ."""
    vectors, labels = load_vectors(name)
    q, db = split(labels, VECTOR_QUERIES.get(name, 100), cfg.seed)
    n_labels = int(labels.max()) + 1
    acc = baseline_accuracy(vectors, labels, q, db, cfg, k, "vectors", (POWER,))
    t0 = time.monotonic()
    model = SemanticHasher(for_data(cfg.replace(kind="vector"), vectors[db])).fit(vectors[db])
    fit_s = time.monotonic() - t0
    dc, logits = model.encode(vectors[db]), model.logits(vectors[q])
    ranker = Ranker(HammingIndex.from_codes(dc), None, Scoring(noise_std=model.config.noise_std))
    width = min(len(db), k * TIE_WIDTH + 1)
    dist, ids = ranked_rows(ranker.knn(Queries(pack(logits > 0), logits), width), width)
    for power in POWERS:
        pred = knn_vote(dist, ids, labels[db], n_labels, k, cfg.bits, power).label
        acc[f"hashae classify, vote power {power}"] = float((pred == labels[q]).mean())
    return finished_row(name, len(q), acc, fit_s)


def leave_one_out(rows: list) -> list:
    """The vote (ranking and power) each held-out set gets from the others, among hashae's votes
    that every row has."""
    choices = [m for m in rows[0]["accuracy"] if m.startswith("hashae") and all(m in r["accuracy"] for r in rows)]
    ratio = {(r["set"], m): r["accuracy"][m] / r["best_raw"] for r in rows for m in choices}
    return [f"  held out {held:17s}: the others choose {choice}; on {held}: {value:.3f}x the best raw-pixel k-NN"
            for held, choice, value in leave_one_set_out(ratio, choices)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=SETS)
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--effort", default="default", choices=["fast", "default", "best"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights", type=float, nargs="*", default=[],
                    help=f"perceptual weights to vote with besides 0 and classify's {PERCEPTUAL_WEIGHT:g}")
    ap.add_argument("--vectors", action="store_true",
                    help="vector collections on bench/vectors.py's sets (default: all seven) instead of images")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "classify.json"))
    ap.add_argument("--summarise", nargs="+", metavar="JSON",
                    help="print the leave-one-out check of earlier runs' results (later files replace a set's row)")
    args = ap.parse_args(argv)
    if args.summarise:
        rows = {}
        for path in args.summarise:
            with open(path) as f:
                rows.update({r["set"]: r for r in json.load(f)["rows"]})
        print("\n".join(leave_one_out([rows[s] for s in SETS if s in rows])))
        return
    cfg = HasherConfig.for_effort(args.effort).replace(bits=args.bits, seed=args.seed)
    t0 = time.monotonic()
    if args.vectors:
        sets = VECTOR_SETS if args.sets == SETS else args.sets
        rows = [run_vector_set(name, cfg, args.k) for name in sets]
        print(f"accuracy (vote power {POWER}), hashae classify / best raw-vector k-NN / ITQ:")
        for r in rows:
            a = r["accuracy"]
            print(f"  {r['set']:17s} {a[f'hashae classify, vote power {POWER}']:.3f} / {r['best_raw']:.3f}"
                  f" / {a[f'ITQ codes, vote power {POWER}']:.3f}")
    else:
        rows = [run_set(name, cfg, args.k, args.weights) for name in args.sets]
        print(f"accuracy (vote power {POWER}), hashae classify / search's ranking alone / Hamming neighbours / "
              "best raw-pixel k-NN / ITQ:")
        for r in rows:
            a = r["accuracy"]
            print(f"  {r['set']:17s} {a[f'hashae classify, vote power {POWER}']:.3f}"
                  f" / {a[f'hashae ranked, vote power {POWER}']:.3f} / {a[f'hashae, vote power {POWER}']:.3f}"
                  f" / {r['best_raw']:.3f} / {a[f'ITQ codes, vote power {POWER}']:.3f}")
    lines = leave_one_out(rows)
    print("leave one set out (vote chosen by its worst ratios to raw-pixel k-NN):")
    print("\n".join(lines))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"config": json.loads(cfg.to_json()), "k": args.k, "rows": rows, "leave_one_out": lines,
                   "seconds": time.monotonic() - t0}, f, indent=1)
    print(f"wrote {args.out} ({time.monotonic() - t0:.0f} s)")


if __name__ == "__main__":
    main()
