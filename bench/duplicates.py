"""Near-duplicate finding on real photos, against perceptual hashes, side by side in one run.

Builds a folder from ../shared/data/hymenoptera (398 photos of ants and bees, many alike): every
photo, plus one edited copy of a seeded sample of them, the edits the kind a photo folder
collects: re-encoded as JPEG quality 30, halved in size, cropped to 90% of each side, brightened
by 30%, shrunk to a 200-pixel thumbnail as PNG. `hashae index` builds a collection of it the way
a user would (training its model on the folder). Then every code is grouped by connected
components at Hamming radius r (`hashae.cluster(codes, "radius")`), for hashae codes and, over
the same components code, for two 64-bit perceptual hashes taken from the files the way the
imagehash package defines them (dHash: 9x8 grey, adjacent-pixel gradients; pHash: 32x32 grey,
8x8 lowest DCT frequencies above their median, i.e. `hashae.phash` on that resize). Per radius:

  recall     copies that share a group with their original
  precision  pairs inside reported groups that come from the same original (1.0 when
             nothing wrong is joined)

The perceptual check's threshold (`confirm`, bits of 64) is swept at the default radius, and
the second source of pairs (hashes within `close` bits whose codes moved further) is turned off
once to show what it adds. A set of
398 photos says little about false pairs, whose number grows with the square of the collection:
the second part indexes ../shared/data/cifar10_test (10,000 photos, few of them copies) the same
way and counts the pairs inside reported groups and how many of them join two classes (certainly
not copies of one picture).

    python bench/duplicates.py
    python bench/duplicates.py --copies 200 --bits 64 --false-set ""
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from hashae import Collection, cluster
from hashae import phash as hashae_phash
from hashae.search import duplicate_radius, near_duplicates
from hashae.search.duplicates import CONFIRM
from hashae.codes import pack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "..", "shared", "data")
PHOTOS = os.path.join(DATA, "hymenoptera")
CONFIRMS = (8, 10, 12, 14, 16)


def _jpeg30(im):
    return im, dict(format="JPEG", quality=30)


def _half(im):
    return im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.Resampling.LANCZOS), dict(format="JPEG", quality=90)


def _crop90(im):
    dx, dy = im.width // 20, im.height // 20
    return im.crop((dx, dy, im.width - dx, im.height - dy)), dict(format="JPEG", quality=90)


def _bright(im):
    return ImageEnhance.Brightness(im).enhance(1.3), dict(format="JPEG", quality=90)


def _thumb(im):
    im = im.copy()
    im.thumbnail((200, 200), Image.Resampling.LANCZOS)
    return im, dict(format="PNG")


EDITS = {"jpeg30": _jpeg30, "half": _half, "crop90": _crop90, "bright": _bright, "thumb": _thumb}


def build_folder(dest: str, copies: int, seed: int) -> dict:
    """Write originals and edited copies under ``dest``; returns {relative path: original id}."""
    sources = sorted(os.path.join(d, f) for d, _, fs in os.walk(PHOTOS) for f in fs if f.lower().endswith(".jpg"))
    if not sources:
        sys.exit(f"no photos under {PHOTOS}")
    rng = np.random.default_rng(seed)
    picked = set(rng.choice(len(sources), min(copies, len(sources)), replace=False).tolist())
    truth, names = {}, list(EDITS)
    for i, src in enumerate(sources):
        with Image.open(src) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
        rel = f"photo_{i:04d}.jpg"
        im.save(os.path.join(dest, rel), quality=95)
        truth[rel] = i
        if i in picked:
            name = names[len(truth) % len(names)]
            edited, kw = EDITS[name](im)
            rel = f"copy_{name}_{i:04d}.{'png' if kw['format'] == 'PNG' else 'jpg'}"
            edited.save(os.path.join(dest, rel), **kw)
            truth[rel] = i
    return truth


def _grey(path: str, size: tuple) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("L").resize(size, Image.Resampling.LANCZOS), np.float64)


def dhash(path: str) -> np.ndarray:
    px = _grey(path, (9, 8))
    return pack((px[:, 1:] > px[:, :-1]).ravel()[None])[0]


def phash(path: str) -> np.ndarray:
    """hashae's pHash, on a 32x32 LANCZOS grey resize of the file (imagehash's input) rather
    than on the model input."""
    return hashae_phash(_grey(path, (32, 32))[None, :, :, None])[0]


def score(labels: np.ndarray, origin: np.ndarray, is_copy: np.ndarray, counted=None) -> dict:
    """Recall of (copy, original) pairs (over the ``counted`` copies, default all) and precision
    of all pairs inside reported groups."""
    first = {}
    for i, o in enumerate(origin):
        if not is_copy[i]:
            first[o] = i
    copies = np.flatnonzero(is_copy if counted is None else counted)
    found = sum(labels[c] == labels[first[origin[c]]] for c in copies)
    pairs, wrong = pair_counts(labels, origin)
    return dict(recall=found / max(1, len(copies)), precision=(pairs - wrong) / pairs if pairs else 1.0,
                groups=int(sum(np.bincount(labels) >= 2)), largest=int(np.bincount(labels).max()))


def pair_counts(labels: np.ndarray, classes: np.ndarray) -> tuple:
    """(pairs inside groups of 2+, those whose two items have different classes or origins)."""
    pairs = cross = 0
    for g in np.flatnonzero(np.bincount(labels) >= 2):
        _, counts = np.unique(classes[labels == g], return_counts=True)
        n = counts.sum()
        pairs += n * (n - 1) // 2
        cross += n * (n - 1) // 2 - int((counts * (counts - 1) // 2).sum())
    return int(pairs), int(cross)


def false_pairs(name: str, bits: int, tmp: str) -> list:
    """Index a labelled folder as a user would; reported pairs and cross-class pairs per method."""
    folder = os.path.join(DATA, name)
    store = os.path.join(tmp, f"{name}.h5")
    t0 = time.monotonic()
    Collection(store).index(folder, bits=bits, progress=False)
    index_s = time.monotonic() - t0
    with Collection.open(store) as coll:
        paths, codes, stored, default = coll.paths(), coll.codes, coll.phash, duplicate_radius(coll.bits)
    classes = np.array([p.split("/")[0] for p in paths])
    print(f"false pairs on {name}: {len(paths)} images, index incl. training {index_s:.0f} s; pairs inside reported "
          "groups (cross-class: certainly wrong)")
    rows = []
    runs = [(f"hashae duplicates() r={default} confirm={c}", lambda c=c: near_duplicates(codes, default, stored, c))
            for c in CONFIRMS]
    runs += [(f"  confirm={CONFIRM}, no hash-only pairs",
              lambda: near_duplicates(codes, default, stored, CONFIRM, close=-1))]
    runs += [(f"hashae codes alone r={r}", lambda r=r: cluster(codes, "radius", radius=r)) for r in (2, default)]
    runs += [(f"pHash (stored) r={r}", lambda r=r: cluster(stored, "radius", radius=r)) for r in (6, 10)]
    for method, group in runs:
        pairs, cross = pair_counts(group(), classes)
        rows.append(dict(set=name, method=method, pairs=pairs, cross_class=cross))
        print(f"  {method:36s} pairs {pairs:6d}  cross-class {cross:6d}", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=100, help="photos that get an edited copy")
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--radii", type=int, nargs="+", default=[0, 1, 2, 3, 4, 6, 8, 10])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--false-set", default="cifar10_test", help='labelled set for false pairs ("" skips it)')
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "duplicates.json"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "photos")
        os.makedirs(folder)
        truth = build_folder(folder, args.copies, args.seed)
        t0 = time.monotonic()
        store = os.path.join(tmp, "photos.h5")
        Collection(store).index(folder, bits=args.bits, progress=False)
        index_s = time.monotonic() - t0
        with Collection.open(store) as coll:
            paths, codes, stored = coll.paths(), coll.codes, coll.phash
            default = duplicate_radius(coll.bits)
            t0 = time.monotonic()
            default_groups = coll.duplicates()
            dup_s = time.monotonic() - t0
        full = [os.path.join(folder, p) for p in paths]
        t0 = time.monotonic()
        dh, ph = np.stack([dhash(p) for p in full]), np.stack([phash(p) for p in full])
        hash_s = time.monotonic() - t0
        false = false_pairs(args.false_set, args.bits, tmp) if args.false_set else []
    origin = np.array([truth[p] for p in paths])
    is_copy = np.array([p.startswith("copy_") for p in paths])
    print(f"{len(paths)} images ({int(is_copy.sum())} edited copies); hashae index incl. training {index_s:.0f} s, "
          f"duplicates() {dup_s:.2f} s; both perceptual hashes from the files {hash_s:.1f} s")
    methods = {
        "hashae duplicates()": lambda r: near_duplicates(codes, r, stored),
        "hashae codes alone": lambda r: cluster(codes, "radius", radius=r),
        "dHash (64 bits)": lambda r: cluster(dh, "radius", radius=r),
        "pHash (64 bits)": lambda r: cluster(ph, "radius", radius=r),
    }
    rows = []
    for method, group in methods.items():
        for r in args.radii:
            row = dict(method=method, radius=r, **score(group(r), origin, is_copy))
            rows.append(row)
            print(f"  {method:20s} r={r:2d}  recall {row['recall']:.3f}  precision {row['precision']:.3f}  "
                  f"groups {row['groups']:4d}  largest {row['largest']:4d}", flush=True)
    chosen = {"hashae duplicates()": default, "hashae codes alone": default, "dHash (64 bits)": 10,
              "pHash (64 bits)": 10}
    print(f"recall by edit (hashae at its default radius {default}; perceptual hashes at 10, imagededup's default):")
    by_edit = {}
    for method, r in chosen.items():
        labels = methods[method](r)
        by_edit[method] = {name: score(labels, origin, is_copy, np.array([p.startswith(f"copy_{name}_") for p in paths]))
                           ["recall"] for name in EDITS}
        print(f"  {method:20s} " + "  ".join(f"{name} {v:.2f}" for name, v in by_edit[method].items()))
    print(f"Collection.duplicates() at the default radius: {len(default_groups)} groups, "
          f"{sum(map(len, default_groups))} images")
    print(f"hashae duplicates() at radius {default} by confirm threshold:")
    for c, close in [(c, None) for c in CONFIRMS] + [(CONFIRM, -1)]:
        row = dict(method="hashae duplicates()", radius=default, confirm=c, close=close,
                   **score(near_duplicates(codes, default, stored, c, close), origin, is_copy))
        rows.append(row)
        print(f"  confirm {c:2d}{'  no hash-only pairs' if close == -1 else ''}  recall {row['recall']:.3f}  "
              f"precision {row['precision']:.3f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"rows": rows, "recall_by_edit": by_edit, "false_pairs": false, "index_s": index_s,
                   "duplicates_s": dup_s}, fh, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
