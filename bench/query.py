"""Wall time of the `hashae query IMAGE` command on a large collection, against the start-up
floor `python -c "import torch, faiss, h5py"`, measured alternately in one run.

The collection (1,000,000 items by default) is built through the API from synthetic codes
and photo-like paths, with a model of the default architecture (untrained: its weights cost
the same to load), so the query does every step of a real one: open and validate the file,
load the model, decode and encode the image, read the codes, search, read the hits' paths.

    python bench/query.py
    python bench/query.py --n 100000 --repeat 5
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from scale import SyntheticPaths, clustered_codes  # noqa: E402

from hashae import Collection, HasherConfig, SemanticHasher  # noqa: E402

DATA = os.path.join(HERE, "..", "..", "shared", "data")


def build(path: str, n: int) -> None:
    rng = np.random.default_rng(0)
    cfg = HasherConfig(pretrain_epochs=0, epochs=0)  # default architecture, no training needed
    model = SemanticHasher(cfg).fit(rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), progress=False)
    Collection.create(path, clustered_codes(n, cfg.bits), SyntheticPaths(n), folder="/nonexistent", model=model).close()


def wall(cmd: list) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return elapsed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--image", default=os.path.join(DATA, "photos", "astronaut.png"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "query.json"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hashae-query-") as work:
        store = os.path.join(work, "big.h5")
        t0 = time.perf_counter()
        build(store, args.n)
        print(f"built {args.n:,d} items in {time.perf_counter() - t0:.1f} s ({os.path.getsize(store) / 2**20:.0f} MB)")
        floor = [sys.executable, "-c", "import torch, faiss, h5py"]
        query = [sys.executable, "-m", "hashae.cli", "query", args.image, "--store", store, "--json"]
        out = subprocess.run(query, capture_output=True, text=True, check=True).stdout
        hits = json.loads(out)[0]["hits"]
        assert len(hits) == 10, out
        t_floor, t_query = [], []
        for _ in range(args.repeat):  # alternate, so drift in machine load hits both alike
            t_floor.append(wall(floor))
            t_query.append(wall(query))
    f, q = statistics.median(t_floor), statistics.median(t_query)
    print(f"python -c 'import torch, faiss, h5py': median {f:.3f} s  (runs: {', '.join(f'{t:.2f}' for t in t_floor)})")
    print(f"hashae query on {args.n:,d} items:      median {q:.3f} s  (runs: {', '.join(f'{t:.2f}' for t in t_query)})")
    print(f"ratio {q / f:.2f} (target <= 1.5)")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(dict(n=args.n, floor_s=t_floor, query_s=t_query, ratio=q / f), fh, indent=1)


if __name__ == "__main__":
    main()
