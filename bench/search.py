"""Search speed, measured side by side in one run.

1. HammingIndex.search against raw faiss.IndexBinaryFlat.search on the same 64-bit codes
   (1,000,000 by default): a batch of 1,000 queries and single queries; distances must be
   identical. Prints the time ratio (target: at most 1.1).
2. Radius search at small radii, exhaustive ("flat") against multi-index hashing ("hash"), at
   two collection sizes (100k and 10M by default): time per query, and how it grows.

Codes are clustered like real ones (random centres with 5% bit noise) so that radius queries
find something.

    python bench/search.py
    python bench/search.py --n 1000000 --radius-sizes 100000 10000000
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import faiss
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from hashae import HammingIndex  # noqa: E402


def clustered_codes(n: int, bits: int = 64, centres: int = 10_000, noise: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 256, (centres, bits // 8), dtype=np.uint8)
    out = np.empty((n, bits // 8), np.uint8)
    step = 1_000_000
    for s in range(0, n, step):
        m = min(step, n - s)
        flips = np.packbits(rng.random((m, bits)) < noise, axis=1, bitorder="little")
        out[s:s + m] = c[rng.integers(0, centres, m)] ^ flips
    return out


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def knn(n: int, k: int, repeat: int) -> dict:
    codes = clustered_codes(n)
    queries = clustered_codes(1000, seed=1)
    raw = faiss.IndexBinaryFlat(64)
    raw.add(codes)
    ours = HammingIndex.from_codes(codes)
    d_raw, _ = raw.search(queries, k)
    d_ours, _ = ours.search(queries, k)
    assert np.array_equal(d_raw, d_ours), "distances differ"
    out = {}
    for label, q in (("batch of 1000", queries), ("single query", queries[:1])):
        t_raw = best_of(lambda: raw.search(q, k), repeat)
        t_ours = best_of(lambda: ours.search(q, k), repeat)
        out[label] = dict(raw_s=t_raw, hashae_s=t_ours, ratio=t_ours / t_raw)
        print(f"  k-NN {n:>10,d} codes, {label:14s}: faiss {t_raw * 1e3:8.2f} ms  HammingIndex {t_ours * 1e3:8.2f} ms"
              f"  ratio {t_ours / t_raw:.3f}", flush=True)
    return out


def radius(sizes, radii, nq: int = 100) -> list:
    rows = []
    for n in sizes:
        codes = clustered_codes(n)
        queries = codes[np.random.default_rng(2).choice(n, nq, replace=False)]
        index = HammingIndex.from_codes(codes)
        t0 = time.perf_counter()
        index._multihash_for(max(radii) + 1)  # build time, reported apart from query time
        build = time.perf_counter() - t0
        for r in radii:
            index._multihash_for(r + 1)
            flat = index.radius_search(queries, r, method="flat")
            hashed = index.radius_search(queries, r, method="hash")
            assert all(np.array_equal(np.sort(a[0]), np.sort(b[0])) for a, b in zip(flat, hashed))
            t_flat = best_of(lambda: index.radius_search(queries, r, method="flat"), 2) / nq
            t_hash = best_of(lambda: index.radius_search(queries, r, method="hash"), 2) / nq
            found = np.mean([len(a[0]) for a in flat])
            rows.append(dict(n=n, radius=r, flat_ms=t_flat * 1e3, hash_ms=t_hash * 1e3, hits=found,
                             hash_build_s=build))
            print(f"  radius {r} over {n:>10,d} codes: flat {t_flat * 1e3:9.3f} ms/query  hash {t_hash * 1e3:9.3f} "
                  f"ms/query  ({found:.1f} hits/query)", flush=True)
    for r in radii:
        a, b = [x for x in rows if x["radius"] == r][0], [x for x in rows if x["radius"] == r][-1]
        if a is not b:
            growth = b["n"] / a["n"]
            print(f"  radius {r}: {growth:.0f}x the codes -> flat {b['flat_ms'] / a['flat_ms']:.1f}x, "
                  f"hash {b['hash_ms'] / a['hash_ms']:.1f}x the time per query")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--radius-sizes", nargs="+", type=int, default=[100_000, 10_000_000])
    ap.add_argument("--radii", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "search.json"))
    args = ap.parse_args(argv)
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    result = {"knn": knn(args.n, args.k, args.repeat), "radius": radius(args.radius_sizes, args.radii)}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
