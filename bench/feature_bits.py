"""Probe: a code of 64 bits made of hashae's learnt bits and a few bits of a simple feature.

hashae is trained (default recipe) at B bits; beside its code go 64 - B bits of ITQ on one of
bench/quality.py's simple features (colour histogram, whole-image channel statistics lifted
by random Fourier features, grid statistics). Each 64-bit concatenation is ranked by plain
Hamming distance under the quality protocol. A script for deciding whether to build it, not
the product (bench/README.md, "A lead: a few bits of simple features beside the learnt code").

    python bench/feature_bits.py --seed 0 --learnt 64 56 48
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baselines import itq, simple_features  # noqa: E402
from quality import hashed_features, load_labelled, queries_per_class, split  # noqa: E402

from hashae import HasherConfig, SemanticHasher  # noqa: E402
from hashae.metrics import hamming_retrieval  # noqa: E402

SETS = ["coil20", "orl_faces", "binaryalphadigits", "eurosat_val", "cifar10_test", "tinyimagenet_val"]


def run_set(name: str, learnt: list, seed: int) -> dict:
    """mAP / ITQ on the pixels of every code: hashae at each learnt length, alone and with each
    feature's 64 - B bits."""
    images, labels = load_labelled(name, 32)
    q, db = split(labels, queries_per_class(name, labels), seed)
    ql, dl = labels[q], labels[db]
    pixels = images.reshape(len(images), -1).astype(np.float64) / 255
    h = itq(pixels[db], 64, seed)
    base = hamming_retrieval(h(pixels[q]), h(pixels[db]), ql, dl)["map"]
    features = simple_features(images, db)
    ratios = {}
    for bits in learnt:
        t0 = time.monotonic()
        model = SemanticHasher(HasherConfig(channels=images.shape[-1], seed=seed, bits=bits)).fit(images[db])
        cq, cd = model.encode(images[q]), model.encode(images[db])
        ratios[f"hashae {bits}"] = hamming_retrieval(cq, cd, ql, dl)["map"] / base
        if bits < 64:
            for feature, f, fh in hashed_features(features, db, 64 - bits, seed):
                both = hamming_retrieval(np.hstack([cq, fh(f[q])]), np.hstack([cd, fh(f[db])]), ql, dl)["map"]
                ratios[f"hashae {bits} + {feature} {64 - bits}"] = both / base
        print(f"  {name}: {bits} learnt bits, {time.monotonic() - t0:.0f} s", flush=True)
    for code, r in ratios.items():
        print(f"  {name:18s} {code:48s} {r:.3f}x ITQ", flush=True)
    return ratios


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=SETS)
    ap.add_argument("--learnt", nargs="+", type=int, default=[64, 56, 48], help="learnt code lengths (multiples of 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "feature_bits.json"))
    args = ap.parse_args(argv)
    table = {name: run_set(name, args.learnt, args.seed) for name in args.sets}
    codes = [c for c in table[args.sets[0]] if all(c in t for t in table.values())]
    for code in sorted(codes, key=lambda c: -min(t[c] for t in table.values())):
        print(f"{code:48s} worst {min(t[code] for t in table.values()):.3f}x ITQ")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"seed": args.seed, "ratios": table}, f, indent=1)


if __name__ == "__main__":
    main()
