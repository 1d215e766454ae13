"""Scale curve of a collection built from synthetic codes through the API.

For each size (10k, 100k, 1M, 10M by default), in fresh child processes so that each peak
memory is its own: build time and peak memory of ``Collection.create``, file size, open time,
time of the first search (reads the codes, builds the FAISS index), a batch of 1,000 k-NN
queries, one query, reading the hits' paths, and radius-2 search by multi-index hashing.

Memory is reported as the growth of the peak resident set over the process after its imports
(the interpreter, numpy, h5py, faiss: a fixed cost, not the collection's), against the bytes
of the codes plus the UTF-8 bytes of the paths (target: at most 2x).

    python bench/scale.py
    python bench/scale.py --sizes 10000 100000 --dir /tmp/hashae-scale
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from hashae import Collection  # noqa: E402
import hashae.search.index  # noqa: E402,F401  (faiss loaded before the memory baseline)

BITS = 64


class SyntheticPaths:
    """A lazy sequence of N photo-like relative paths; slices are made on demand, so the build
    never holds millions of Python strings (Collection.create reads it a block at a time)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def name(self, i: int) -> str:
        return f"{2000 + i // 1_000_000:04d}/album{i // 2000 % 500:03d}/IMG_{i:08d}.jpg"

    def __getitem__(self, key):
        if isinstance(key, slice):
            return [self.name(i) for i in range(*key.indices(self.n))]
        return self.name(int(key))

    def utf8_bytes(self) -> int:
        return len(self.name(0)) * self.n  # fixed-width names below 10^8 items


def clustered_codes(n: int, bits: int = BITS, centres: int = 10_000, noise: float = 0.05, seed: int = 0):
    """Codes around random centres with ``noise`` bit flips, made in small blocks so that making
    them costs no more memory than the codes themselves."""
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 256, (centres, bits // 8), dtype=np.uint8)
    out = np.empty((n, bits // 8), np.uint8)
    step = 1 << 15
    for s in range(0, n, step):
        m = min(step, n - s)
        flips = np.packbits(rng.random((m, bits), dtype=np.float32) < noise, axis=1, bitorder="little")
        out[s:s + m] = c[rng.integers(0, centres, m)] ^ flips
    return out


def rss_now_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def peak_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child_build(n: int, path: str) -> dict:
    base = rss_now_kb()
    codes = clustered_codes(n, BITS)
    t0 = time.perf_counter()
    Collection.create(path, codes, SyntheticPaths(n), folder="/nonexistent/photos").close()
    return dict(build_s=time.perf_counter() - t0, peak_growth_mb=(peak_kb() - base) / 1024,
                file_mb=os.path.getsize(path) / 2**20)


def child_search(n: int, path: str) -> dict:
    base = rss_now_kb()
    queries = clustered_codes(1000, BITS, seed=1)
    out = {}
    t0 = time.perf_counter()
    coll = Collection.open(path)
    out["open_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    coll.search_codes(queries[:1], 10)
    out["first_search_s"] = time.perf_counter() - t0  # reads codes, builds the flat index
    t0 = time.perf_counter()
    _, ids = coll.search_codes(queries, 10)
    out["batch1000_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for q in queries[:20]:
        coll.search_codes(q[None], 10)
    out["single_s"] = (time.perf_counter() - t0) / 20
    t0 = time.perf_counter()
    paths = coll.paths(ids[0])
    out["hit_paths_s"] = time.perf_counter() - t0
    assert len(paths) == 10 and all(p.endswith(".jpg") for p in paths)
    out["knn_peak_growth_mb"] = (peak_kb() - base) / 1024
    t0 = time.perf_counter()
    coll.hamming_index.radius_search(queries[:1], 2, method="hash")
    out["radius_build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    coll.hamming_index.radius_search(queries[:100], 2, method="hash")
    out["radius2_ms_per_query"] = (time.perf_counter() - t0) * 1000 / 100
    out["peak_growth_with_radius_mb"] = (peak_kb() - base) / 1024
    coll.close()
    return out


def run_child(step: str, n: int, path: str) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", step, str(n), path],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"{step} {n} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000, 10_000_000])
    ap.add_argument("--dir", default=None, help="where to build (default: a temporary folder, removed after)")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "scale.json"))
    args = ap.parse_args(argv)
    if args.child:
        step, n, path = args.child
        print(json.dumps((child_build if step == "build" else child_search)(int(n), path)))
        return
    work = args.dir or tempfile.mkdtemp(prefix="hashae-scale-")
    os.makedirs(work, exist_ok=True)
    rows = []
    try:
        for n in args.sizes:
            path = os.path.join(work, f"scale-{n}.h5")
            if os.path.exists(path):
                os.unlink(path)
            row = dict(n=n, data_mb=(n * BITS // 8 + SyntheticPaths(n).utf8_bytes()) / 2**20)
            row.update(run_child("build", n, path))
            row.update(run_child("search", n, path))
            row["build_memory_ratio"] = row["peak_growth_mb"] / row["data_mb"]
            row["search_memory_ratio"] = row["knn_peak_growth_mb"] / row["data_mb"]
            rows.append(row)
            print(f"{n:>11,d} items: build {row['build_s']:7.2f} s (peak +{row['peak_growth_mb']:7.1f} MB, "
                  f"{row['build_memory_ratio']:.2f}x data), file {row['file_mb']:7.1f} MB, open {row['open_s'] * 1e3:6.1f} ms, "
                  f"first search {row['first_search_s']:6.3f} s, 1000 queries {row['batch1000_s']:6.3f} s, "
                  f"1 query {row['single_s'] * 1e3:6.2f} ms, paths of 10 hits {row['hit_paths_s'] * 1e3:5.2f} ms, "
                  f"k-NN peak +{row['knn_peak_growth_mb']:6.1f} MB ({row['search_memory_ratio']:.2f}x data); "
                  f"radius 2: build {row['radius_build_s']:6.2f} s, {row['radius2_ms_per_query']:6.3f} ms/query, "
                  f"peak +{row['peak_growth_with_radius_mb']:7.1f} MB", flush=True)
            os.unlink(path)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(rows=rows, bits=BITS), f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
