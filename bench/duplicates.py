"""Near-duplicate finding on real photos, against perceptual hashes, side by side in one run.

1. Edited copies. A folder of 1,000 originals (the 398 photos of ../shared/data/hymenoptera and
   602 seeded photos of tinyimagenet_val) and an edited copy of 300 of them, the edits in turn
   (about 37 each): JPEG quality 50, resized to 80%, cropped by 10% (5% off each side), rotated
   by 4 or 5 degrees, brightened 1.2x, mirrored, a text watermark, greyscale. `hashae index`
   builds a collection of it the way a user would (training its model on the folder). Recall
   per edit (a copy grouped with its original) and precision (pairs inside reported groups
   that come from one original) for hashae's `duplicates()`, the pHash-only rule that
   collections of an earlier hashae use, codes alone, and 64-bit pHash and dHash taken from the
   files as the imagehash package defines them, grouped at the usual thresholds 8 and 10.
2. False pairs. cifar10_test, eurosat_val and tinyimagenet_val (thousands of photos, few of
   them copies) indexed the same way: pairs inside reported groups, and how many of them join
   two classes (certainly not copies of one picture).
3. The threshold. `confirm` (bits of 128 that pHash + dHash may differ in) swept on every set,
   and for each set without planted copies the value the other sets would choose (highest
   recall with no wrong pair) and what it does on the held-out set.

    python bench/duplicates.py
    python bench/duplicates.py --false-sets cifar10_test --confirms 16 18 20
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageOps

from hashae import Collection, cluster
from hashae import phash as hashae_phash
from hashae.codes import pack
from hashae.search import duplicate_radius, near_duplicates
from hashae.search.duplicates import PERCEPTUAL

import edits  # noqa: E402 - bench/edits.py, beside this script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "..", "shared", "data")
CONFIRMS = (14, 16, 18, 20, 22)
FALSE_SETS = ("cifar10_test", "eurosat_val", "tinyimagenet_val")


def _rotate(im):
    return edits.rotate(im, 5 if (im.width + im.height) % 2 else -4)


EDITS = {"jpeg": edits.jpeg, "resize": edits.resize, "crop": edits.crop, "rotate": _rotate, "bright": edits.bright,
         "flip": edits.flip, "watermark": edits.watermark, "grey": edits.grey}


def build_folder(dest: str, originals: int, copies: int, seed: int) -> dict:
    """Write originals and edited copies under ``dest``; returns {relative path: original id}."""
    photos = edits.photo_files(os.path.join(DATA, "hymenoptera"))
    tiny = edits.photo_files(os.path.join(DATA, "tinyimagenet_val"))
    if not photos or not tiny:
        sys.exit(f"no photos under {DATA}/hymenoptera or {DATA}/tinyimagenet_val")
    rng = np.random.default_rng(seed)
    extra = max(0, originals - len(photos))
    sources = photos[:originals] + [tiny[i] for i in np.sort(rng.choice(len(tiny), extra, replace=False))]
    picked = np.sort(rng.choice(len(sources), min(copies, len(sources)), replace=False))
    truth, names = {}, list(EDITS)
    for i, src in enumerate(sources):
        with Image.open(src) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
        rel = f"photo_{i:04d}.jpg"
        im.save(os.path.join(dest, rel), quality=95)
        truth[rel] = i
    for j, i in enumerate(picked):
        with Image.open(sources[i]) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
        name = names[j % len(names)]
        edited, quality = EDITS[name](im)
        rel = f"copy_{name}_{i:04d}.jpg"
        edited.save(os.path.join(dest, rel), quality=quality)
        truth[rel] = int(i)
    return truth


def _grey_file(path: str, size: tuple) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("L").resize(size, Image.Resampling.LANCZOS), np.float64)


def dhash(path: str) -> np.ndarray:
    px = _grey_file(path, (9, 8))
    return pack((px[:, 1:] > px[:, :-1]).ravel()[None])[0]


def phash(path: str) -> np.ndarray:
    """hashae's pHash, on a 32x32 LANCZOS grey resize of the file (imagehash's input) rather
    than on the model input."""
    return hashae_phash(_grey_file(path, (32, 32))[None, :, :, None])[0]


def score(labels: np.ndarray, origin: np.ndarray, is_copy: np.ndarray, counted=None) -> dict:
    """Recall of (copy, original) pairs (over the ``counted`` copies, default all) and precision
    of all pairs inside reported groups."""
    first = {o: i for i, o in enumerate(origin) if not is_copy[i]}
    copies = np.flatnonzero(is_copy if counted is None else counted)
    found = sum(labels[c] == labels[first[origin[c]]] for c in copies)
    pairs, wrong = pair_counts(labels, origin)
    return dict(recall=found / max(1, len(copies)), precision=(pairs - wrong) / pairs if pairs else 1.0,
                pairs=pairs, wrong=wrong)


def pair_counts(labels: np.ndarray, classes: np.ndarray) -> tuple:
    """(pairs inside groups of 2+, those whose two items have different classes or origins)."""
    pairs = cross = 0
    for g in np.flatnonzero(np.bincount(labels) >= 2):
        _, counts = np.unique(classes[labels == g], return_counts=True)
        n = counts.sum()
        pairs += n * (n - 1) // 2
        cross += n * (n - 1) // 2 - int((counts * (counts - 1) // 2).sum())
    return int(pairs), int(cross)


def indexed(folder: str, store: str, bits: int) -> tuple:
    """Index ``folder`` as a user would; (paths, codes, every perceptual hash, pHashes, seconds)."""
    t0 = time.monotonic()
    Collection(store).index(folder, bits=bits, progress=False)
    seconds = time.monotonic() - t0
    with Collection.open(store) as coll:
        return coll.paths(), coll.codes, coll.perceptual, coll.phash, seconds


def methods(codes, hashes, stored_phash, files: list) -> dict:
    """name -> (labels for ``confirm`` or None)."""
    radius = duplicate_radius(codes.shape[1] * 8)
    out = {
        "hashae duplicates()": lambda c=None: near_duplicates(codes, radius, hashes, c),
        "pHash-only rule (earlier hashae)": lambda c=None: near_duplicates(codes, radius, stored_phash),
        f"codes alone r={radius}": lambda c=None: cluster(codes, "radius", radius=radius),
    }
    if files:
        t0 = time.monotonic()
        dh, ph = np.stack([dhash(p) for p in files]), np.stack([phash(p) for p in files])
        print(f"  perceptual hashes of {len(files)} files: {time.monotonic() - t0:.1f} s")
        for r in (8, 10):
            out[f"pHash r={r}"] = lambda c=None, r=r: cluster(ph, "radius", radius=r)
            out[f"dHash r={r}"] = lambda c=None, r=r: cluster(dh, "radius", radius=r)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--originals", type=int, default=1000)
    ap.add_argument("--copies", type=int, default=300, help="originals that get an edited copy")
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--false-sets", nargs="*", default=list(FALSE_SETS),
                    help="labelled sets without planted copies, for false pairs")
    ap.add_argument("--confirms", type=int, nargs="+", default=list(CONFIRMS))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "duplicates.json"))
    args = ap.parse_args(argv)
    result = {"copies": {}, "false_pairs": {}, "sweep": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "photos")
        os.makedirs(folder)
        truth = build_folder(folder, args.originals, args.copies, args.seed)
        paths, codes, hashes, stored, index_s = indexed(folder, os.path.join(tmp, "photos.h5"), args.bits)
        origin = np.array([truth[p] for p in paths])
        is_copy = np.array([p.startswith("copy_") for p in paths])
        edit_of = np.array([p.split("_")[1] if c else "" for p, c in zip(paths, is_copy)])
        print(f"1. edited copies: {len(paths)} images ({int(is_copy.sum())} copies), index incl. training "
              f"{index_s:.0f} s")
        runs = methods(codes, hashes, stored, [os.path.join(folder, p) for p in paths])
        print(f"  {'method':34s} {'recall':>6s} {'prec.':>6s}  " + " ".join(f"{e:>9s}" for e in EDITS))
        for name, group in runs.items():
            t0 = time.monotonic()
            labels = group()
            seconds = time.monotonic() - t0
            row = score(labels, origin, is_copy)
            row["by_edit"] = {e: score(labels, origin, is_copy, edit_of == e)["recall"] for e in EDITS}
            row["seconds"] = seconds
            result["copies"][name] = row
            print(f"  {name:34s} {row['recall']:6.3f} {row['precision']:6.3f}  "
                  + " ".join(f"{row['by_edit'][e]:9.2f}" for e in EDITS), flush=True)
        result["sweep"]["copies"] = {c: score(near_duplicates(codes, duplicate_radius(args.bits), hashes, c),
                                              origin, is_copy) for c in args.confirms}
        result["index_s"] = {"copies": index_s}
        for name in args.false_sets:
            paths, codes, hashes, stored, index_s = indexed(os.path.join(DATA, name), os.path.join(tmp, f"{name}.h5"),
                                                            args.bits)
            classes = np.array([p.split("/")[0] for p in paths])
            print(f"2. false pairs on {name}: {len(paths)} images, index incl. training {index_s:.0f} s")
            runs = methods(codes, hashes, stored, [os.path.join(DATA, name, p) for p in paths])
            result["false_pairs"][name] = {}
            for method, group in runs.items():
                if method.startswith("codes alone"):
                    continue  # millions of pairs on photos of one size (bench/README.md)
                pairs, cross = pair_counts(group(), classes)
                result["false_pairs"][name][method] = {"pairs": pairs, "cross_class": cross}
                print(f"  {method:34s} pairs {pairs:6d}  cross-class {cross:5d}", flush=True)
            result["sweep"][name] = {}
            for c in args.confirms:
                pairs, cross = pair_counts(near_duplicates(codes, duplicate_radius(args.bits), hashes, c), classes)
                result["sweep"][name][c] = {"pairs": pairs, "wrong": cross}
            result["index_s"][name] = index_s
    sweep = result["sweep"]
    print(f"3. confirm (bits of 128; default {PERCEPTUAL}): recall / wrong pairs on the copies, pairs / cross-class "
          "elsewhere")
    for c in args.confirms:
        cells = [f"copies {sweep['copies'][c]['recall']:.3f} / {sweep['copies'][c]['wrong']}"]
        cells += [f"{s} {sweep[s][c]['pairs']} / {sweep[s][c]['wrong']}" for s in args.false_sets]
        print(f"  confirm {c:2d}: " + "  ".join(cells))
    result["leave_one_out"] = {}
    for held in args.false_sets:
        ok = [c for c in args.confirms if all(sweep[s][c]["wrong"] == 0 for s in sweep if s != held)]
        chosen = max(ok, key=lambda c: (sweep["copies"][c]["recall"], -c)) if ok else None
        result["leave_one_out"][held] = chosen
        if chosen is None:
            print(f"  without {held}: no threshold keeps the other sets free of wrong pairs")
        else:
            print(f"  without {held}: the others choose {chosen} (copies recall "
                  f"{sweep['copies'][chosen]['recall']:.3f}); on {held}: {sweep[held][chosen]['wrong']} wrong pairs")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
