"""Indexing throughput against the decoding limit, side by side in one run.

Builds a folder of 800x600 JPEG photos (re-encoded from ../shared/data/hymenoptera, each photo
shifted and flipped into several distinct files), then measures:
  - the limit: bare Pillow `draft` decode + resize to 32x32 in 2 worker processes;
  - `hashae index FOLDER --model STORE --workers 2` with a trained model, steady state:
    (N - 20) / (time over N files - time over 20 files), which removes start-up;
each measured --repeat times, interleaved, medians taken;
and prints the ratio (target: at least 0.8).

    python bench/indexing.py               # 3000 photos
    python bench/indexing.py --photos 6000
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = os.path.join(ROOT, "..", "shared", "data", "hymenoptera")


def make_photos(dest: str, n: int, seed: int = 0) -> list:
    sources = sorted(os.path.join(d, f) for d, _, fs in os.walk(PHOTOS) for f in fs if f.lower().endswith(".jpg"))
    if not sources:
        sys.exit(f"no photos under {PHOTOS}")
    rng = np.random.default_rng(seed)
    os.makedirs(dest, exist_ok=True)
    paths = []
    for i in range(n):
        with Image.open(sources[i % len(sources)]) as im:
            im = im.convert("RGB")
            w, h = im.size
            dx, dy = rng.integers(0, max(1, w // 10)), rng.integers(0, max(1, h // 10))
            im = im.crop((dx, dy, w - w // 10 + dx, h - h // 10 + dy)).resize((800, 600))
            if (i // len(sources)) % 2:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            p = os.path.join(dest, f"photo_{i:05d}.jpg")
            im.save(p, quality=85)
            paths.append(p)
    return paths


def _bare(paths):
    for p in paths:
        with Image.open(p) as im:
            im.draft("RGB", (32, 32))
            im.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return len(paths)


def bare_rate(paths: list, workers: int = 2) -> float:
    chunks = [paths[i::workers] for i in range(workers)]
    with mp.get_context("fork").Pool(workers) as pool:
        pool.map(_bare, [paths[:4]] * workers)  # warm the workers
        t0 = time.perf_counter()
        pool.map(_bare, chunks)
        return len(paths) / (time.perf_counter() - t0)


def index_seconds(folder: str, model_store: str, workers: int = 2) -> float:
    store = tempfile.mktemp(suffix=".h5")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hashae.cli", "index", folder, "--store", store, "--model", model_store,
                    "--workers", str(workers), "--quiet"], check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    os.unlink(store)
    return seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=3000)
    ap.add_argument("--keep", help="build the photo folder here and keep it")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of (limit, 20 photos, all photos); medians")
    args = ap.parse_args(argv)
    work = args.keep or tempfile.mkdtemp(prefix="hashae-bench-")
    big, small = os.path.join(work, "photos"), os.path.join(work, "photos20")
    if not os.path.isdir(big) or len(os.listdir(big)) != args.photos:
        shutil.rmtree(big, ignore_errors=True)
        print(f"writing {args.photos} 800x600 JPEGs to {big} ...", flush=True)
        make_photos(big, args.photos)
    shutil.rmtree(small, ignore_errors=True)
    os.makedirs(small)
    for f in sorted(os.listdir(big))[:20]:
        shutil.copy(os.path.join(big, f), small)
    model_store = os.path.join(work, "model.h5")
    if not os.path.exists(model_store):  # a trained model (default config) on a sample of the photos
        train = os.path.join(work, "train")
        shutil.rmtree(train, ignore_errors=True)
        os.makedirs(train)
        for f in sorted(os.listdir(big))[:500]:
            shutil.copy(os.path.join(big, f), train)
        subprocess.run([sys.executable, "-m", "hashae.cli", "index", train, "--store", model_store, "--quiet"],
                       check=True, stdout=subprocess.DEVNULL)
    paths = sorted(os.path.join(big, f) for f in os.listdir(big))
    limits, smalls, bigs = [], [], []
    for _ in range(args.repeat):  # interleaved, medians: load drifts on these machines
        limits.append(bare_rate(paths))
        smalls.append(index_seconds(small, model_store))
        bigs.append(index_seconds(big, model_store))
    limit, t_small, t_big = (statistics.median(v) for v in (limits, smalls, bigs))
    steady = (len(paths) - 20) / (t_big - t_small)
    print(f"bare Pillow draft+resize, 2 processes: {limit:8.0f} photos/s  (runs: {', '.join(f'{x:.0f}' for x in limits)})")
    print(f"hashae index --workers 2, steady:      {steady:8.0f} photos/s  "
          f"(median of {args.repeat}: {len(paths)} photos in {t_big:.2f} s, 20 photos in {t_small:.2f} s)")
    print(f"ratio hashae / limit: {steady / limit:.2f}")
    out = os.path.join(ROOT, "bench", "results", "indexing.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(dict(photos=len(paths), limit_per_s=limit, hashae_per_s=steady, ratio=steady / limit,
                       t_big=bigs, t_small=smalls, limits=limits), f, indent=1)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
