"""Edited copies come first: how often `hashae query` puts a photo's original first and among
the first five when the query is an edited copy of it, side by side in one run.

For each shared photo set, a folder of at most --items photos (hymenoptera: all 398; the other
sets a seeded sample, about the size of a user's photo folder) is indexed as a user would
(`Collection.index`, default model and effort, 64 bits). --originals of its photos are edited
each way below and the copies (never indexed) are the queries:

    rotate 3-5 degrees, crop 10%, resize to 80%, brightness x1.2 and x0.8, JPEG quality 50,
    mirror, a text watermark, greyscale, and the first five combined

Rankings: hashae's default (search.rank: the Hamming shortlist re-ranked by the expected
distance, the copy bonus and, for colour pictures, the channel statistics), the default without
the statistics and with their term at other weights, its parts (expected distance alone; Hamming
order with the copy bonus), plain Hamming order (`--hamming-only`, ties in file order) and a pHash ranking (the
query's 64-bit pHash against every stored one, ties in file order). Then the copy bonus's bar
(at most WITHIN bits, MARGIN below the PERCENTILE-th percentile of the query's distances to its
shortlist; percentile 100 and margin -999 is a fixed bar at WITHIN) swept on every set, with
the setting each set's leave-one-out would choose. Whether a bar costs semantic order is
measured by bench/quality.py --rerank.

    python bench/copies.py
    python bench/copies.py --sets hymenoptera eurosat_val --originals 50
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import edits  # noqa: E402

from hashae import Collection  # noqa: E402
from hashae.codes import hamming  # noqa: E402
from hashae.search.rank import Scoring  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")
SETS = ("hymenoptera", "eurosat_val", "tinyimagenet_val", "cifar10_test")
STATS_WEIGHTS = (4.0, 16.0)  # the statistics term's weight (search.rank) beside the default's, colour only
WITHIN = (40, 44, 48, 52)  # copy_within values swept
BARS = ((10, 8), (5, 10), (25, 16), (100, -999))  # (copy_percentile, copy_margin); the last: a fixed bar


def edit_list(rng: np.random.Generator) -> dict:
    """name -> edit(im) for one original: the rotation's angle and sign drawn per original."""
    angle = float(rng.uniform(3, 5)) * (1 if rng.random() < 0.5 else -1)
    return {
        "rotate": lambda im: edits.rotate(im, angle),
        "crop": edits.crop,
        "resize": edits.resize,
        "bright": lambda im: edits.bright(im, 1.2),
        "dark": lambda im: edits.bright(im, 0.8),
        "jpeg": edits.jpeg,
        "mirror": edits.flip,
        "watermark": edits.watermark,
        "grey": edits.grey,
        "combined": lambda im: edits.combined(im, angle, 1.2),
    }


EDITS = tuple(edit_list(np.random.default_rng(0)))


def build(name: str, work: str, items: int, originals: int, seed: int):
    """Copy a sample of the set into ``work``/db, write the edited queries; returns (folder,
    query files, the item path of each query's original, each query's edit)."""
    files = edits.photo_files(os.path.join(DATA, name))
    if not files:
        sys.exit(f"no images under {DATA}/{name}")
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(files), min(items, len(files)), replace=False))
    folder = os.path.join(work, "db")
    os.makedirs(folder)
    rels = []
    for i in picked:
        rel = os.path.relpath(files[i], os.path.join(DATA, name)).replace(os.sep, "__")
        with open(files[i], "rb") as src, open(os.path.join(folder, rel), "wb") as dst:
            dst.write(src.read())
        rels.append(rel)
    rels.sort()
    queries, truth, kinds = [], [], []
    qdir = os.path.join(work, "queries")
    os.makedirs(qdir)
    for j in np.sort(rng.choice(len(rels), min(originals, len(rels)), replace=False)):
        with Image.open(os.path.join(folder, rels[j])) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
        for kind, edit in edit_list(rng).items():
            out, quality = edit(im)
            path = os.path.join(qdir, f"{kind}_{j:05d}.jpg")
            out.save(path, quality=quality)
            queries.append(path)
            truth.append(rels[j])
            kinds.append(kind)
    return folder, queries, truth, np.array(kinds)


def positions(hit_lists: list, truth: list) -> np.ndarray:
    """Where each query's original is among its hits (0: first), len(hits) when absent."""
    return np.array([next((n for n, h in enumerate(hits) if h == t), len(hits)) for hits, t in zip(hit_lists, truth)])


def summary(pos: np.ndarray, kinds: np.ndarray) -> dict:
    """edit -> {"first", "top5"} fractions."""
    return {e: {"first": float(np.mean(pos[kinds == e] == 0)), "top5": float(np.mean(pos[kinds == e] < 5))}
            for e in EDITS if np.any(kinds == e)}


def run_set(name: str, args) -> dict:
    with tempfile.TemporaryDirectory() as work:
        folder, queries, truth, kinds = build(name, work, args.items, args.originals, args.seed)
        store = os.path.join(work, "c.h5")
        t0 = time.monotonic()
        Collection(store).index(folder, bits=args.bits, progress=False)
        print(f"{name}: {len(os.listdir(folder))} items indexed in {time.monotonic() - t0:.0f} s; "
              f"{len(queries)} queries", flush=True)
        with Collection.open(store) as c:
            paths = c.paths()
            t0 = time.monotonic()
            q = c.queries(queries)
            encode_s = time.monotonic() - t0
            noise, default = c.model.config.noise_std, c.ranker.scoring

            def ranked(scoring=None, hamming_only=False):
                ranker = c.ranker if scoring is None else c.ranker.with_scoring(scoring)
                t = time.monotonic()
                out = ranker.knn(q, 5, hamming_only)
                return [[paths[i] for i in r.ids] for r in out], time.monotonic() - t

            methods = {
                "hashae (default)": ranked(),
                "default without the statistics": ranked(dataclasses.replace(default, stats_weight=0.0)),
                **{f"statistics at {w:g} bits": ranked(dataclasses.replace(default, stats_weight=w))
                   for w in STATS_WEIGHTS if default.stats_weight and w != default.stats_weight},
                "expected distance alone": ranked(Scoring(noise, copy_weight=0.0)),
                "Hamming + copy bonus": ranked(Scoring(1e-9)),
                "Hamming order (--hamming-only)": ranked(hamming_only=True),
            }
            stored = c.phash
            d = hamming(stored[None, :, :], q.hashes.phash[:, None, :])  # (queries, items)
            order = np.argsort(d, axis=1, kind="stable")[:, :5]
            methods["pHash ranking"] = ([[paths[i] for i in row] for row in order], 0.0)
            rows = {}
            for method, (hits, secs) in methods.items():
                rows[method] = summary(positions(hits, truth), kinds)
                rows[method]["_seconds"] = secs
            sweep = {}
            for within in WITHIN:
                for percentile, margin in BARS:
                    hits, _ = ranked(Scoring(noise, within, 1.0, percentile, margin, stats_weight=default.stats_weight))
                    sweep[f"{within}/{percentile}/{margin}"] = summary(positions(hits, truth), kinds)
        return {"set": name, "items": len(paths), "queries": len(queries), "encode_s": encode_s,
                "methods": rows, "sweep": sweep}


def print_set(result: dict) -> None:
    print(f"\n{result['set']} ({result['items']} items, {result['queries']} queries): first / top-5")
    print(f"  {'ranking':32s}" + "".join(f"{e:>11s}" for e in EDITS))
    for method, by in result["methods"].items():
        print(f"  {method:32s}" + "".join(f"  {by[e]['first']:.2f}/{by[e]['top5']:.2f}" for e in EDITS))


def choose(results: list, held_out: str | None) -> str:
    """The sweep setting with the best worst-set top-5 of the combined edit (then worst-set
    first, then mean first over every edit) over the sets other than ``held_out``; among equals
    the mildest bonus (lowest cap, then lowest percentile), which disturbs semantic order least."""
    others = [r for r in results if r["set"] != held_out]

    def key(setting):
        combined = [r["sweep"][setting]["combined"] for r in others]
        mean_first = np.mean([v["first"] for r in others for v in r["sweep"][setting].values()])
        within, percentile, _ = (float(v) for v in setting.split("/"))
        return (min(c["top5"] for c in combined), min(c["first"] for c in combined), mean_first, -within, -percentile)
    return max(others[0]["sweep"], key=key)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--items", type=int, default=4000, help="photos per collection (a seeded sample)")
    ap.add_argument("--originals", type=int, default=100, help="photos edited each way per set")
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "copies.json"))
    args = ap.parse_args(argv)
    results = []
    for name in args.sets:
        results.append(run_set(name, args))
        print_set(results[-1])
    d = Scoring()
    print(f"\ncopy bonus swept (within/percentile/margin; default {d.copy_within}/{d.copy_percentile}/"
          f"{d.copy_margin:g}): combined edit first / top-5, "
          "and the worst first / top-5 over all edits")
    print(f"  {'setting':10s}" + "".join(f"{r['set']:>26s}" for r in results))
    for setting in results[0]["sweep"]:
        cells = []
        for r in results:
            by = r["sweep"][setting]
            cells.append(f"{by['combined']['first']:.2f}/{by['combined']['top5']:.2f} "
                         f"(min {min(v['first'] for v in by.values()):.2f}/{min(v['top5'] for v in by.values()):.2f})")
        print(f"  {setting:10s}" + "".join(f"{c:>26s}" for c in cells))
    print(f"\nchosen on all sets: {choose(results, None)}")
    if len(results) > 1:
        print("leave one set out: the setting the other sets choose, and the held-out set's combined edit with it")
        for r in results:
            setting = choose(results, r["set"])
            c = r["sweep"][setting]["combined"]
            print(f"  without {r['set']:18s} {setting:8s} first {c['first']:.2f}  top-5 {c['top5']:.2f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "results": results}, f, indent=1)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
