"""Hashing vectors: hashae's vector model against LSH, PCAH and ITQ on the same vectors, side by
side in one run.

Sets: the six shared labelled image sets given as flat pixel vectors (32x32, grey sets one
channel, floats in [0, 1]; no image augmentation: the model sees only rows of numbers), and
one real non-image set available without downloads: ``python_docstrings``, the docstrings of
the Python standard library's packages (classes and functions with at least 15 words) as word
counts over a 2,000-word vocabulary, labelled by package (the bag-of-words setting of
Salakhutdinov & Hinton's document hashing). Protocol of bench/quality.py: seeded stratified
queries, the rest is the database and the training set, mAP over the full Hamming ranking.
Each baseline runs twice: on the vectors as given and on the vectors as hashae scales them
(standardised; log(1 + x) first for counts); the ratio is against the better ITQ.

    python bench/vectors.py                      # all seven sets, 64 bits
    python bench/vectors.py --sets coil20 python_docstrings --set-config neighbours=0
    python bench/vectors.py --stream 2000000     # index a 2M x 128 float32 file: time, peak memory
"""
from __future__ import annotations

import argparse
import ast
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baselines import HASHERS  # noqa: E402
from quality import QUERIES_PER_CLASS, load_labelled, parse_settings, split  # noqa: E402

from hashae import HasherConfig, SemanticHasher  # noqa: E402
from hashae.metrics import euclidean_distances, hamming_retrieval, retrieval_scores  # noqa: E402
from hashae.model.inputs import for_data  # noqa: E402

IMAGE_SETS = ["coil20", "orl_faces", "binaryalphadigits", "eurosat_val", "cifar10_test", "tinyimagenet_val"]
SETS = IMAGE_SETS + ["python_docstrings"]
QUERIES = {**QUERIES_PER_CLASS, "tinyimagenet_val": 10, "binaryalphadigits": 5, "python_docstrings": 10}
DOC_MIN_WORDS, DOC_MIN_PER_CLASS, VOCABULARY = 15, 40, 2000


def python_docstrings():
    """(word counts (n, VOCABULARY) float32, labels): docstrings of the standard library's
    packages with at least DOC_MIN_PER_CLASS documents, labelled by package."""
    return docstring_corpus()[:2]


def docstring_corpus():
    """python_docstrings' counts and labels, and the counts (over the same vocabulary) of the
    docstrings of the smaller packages, which no label covers (bench/outliers.py plants them)."""
    root = sysconfig.get_paths()["stdlib"]
    docs = collections.defaultdict(list)
    for pkg in sorted(os.listdir(root)):
        top = os.path.join(root, pkg)
        if pkg in ("test", "site-packages", "idlelib", "lib2to3") or not os.path.isfile(os.path.join(top, "__init__.py")):
            continue
        for folder, subs, files in os.walk(top):
            subs[:] = sorted(d for d in subs if d not in ("test", "tests"))
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                try:
                    with open(os.path.join(folder, name), encoding="utf-8") as f:
                        tree = ast.parse(f.read())
                except (SyntaxError, UnicodeDecodeError, ValueError):
                    continue
                for node in ast.walk(tree):
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        doc = ast.get_docstring(node)
                        if doc and len(doc.split()) >= DOC_MIN_WORDS:
                            docs[pkg].append(re.findall(r"[a-z]{2,}", doc.lower()))
    classes = sorted(k for k, v in docs.items() if len(v) >= DOC_MIN_PER_CLASS)
    texts = [(c, words) for c in classes for words in docs[c]]
    df = collections.Counter(w for _, words in texts for w in set(words))
    # by document frequency, ties by word: a set's iteration order changes with every process
    common = [w for w, n in sorted(df.items(), key=lambda wn: (-wn[1], wn[0]))
              if 3 <= n <= len(texts) // 2][:VOCABULARY]
    column = {w: i for i, w in enumerate(common)}

    def counted(documents):
        out = np.zeros((len(documents), len(common)), np.float32)
        for r, words in enumerate(documents):
            for w in words:
                if w in column:
                    out[r, column[w]] += 1
        return out
    others = [words for k in sorted(docs) if k not in classes for words in docs[k]]
    return counted([words for _, words in texts]), np.array([classes.index(c) for c, _ in texts]), counted(others)


def load_vectors(name: str):
    if name == "python_docstrings":
        return python_docstrings()
    images, labels = load_labelled(name, 32)
    return images.reshape(len(images), -1).astype(np.float32) / 255, labels


def scaled(cfg: HasherConfig, db: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``x`` as hashae's vector model scales it: log(1 + x) for counts, then standardised with
    the database's moments."""
    f = np.log1p if cfg.scaling == "log" else (lambda a: a)
    d = f(db)
    mean, std = d.mean(0), d.std(0)
    std[std < 1e-6 * (1 + np.abs(mean))] = 1
    return (f(x) - mean) / std


def run_set(name: str, bits: int, base: HasherConfig, seed: int, variants: dict) -> list:
    vectors, labels = load_vectors(name)
    q, db = split(labels, QUERIES.get(name, 100), seed)
    ql, dl = labels[q], labels[db]
    cfg = for_data(base.replace(seed=seed, bits=bits), vectors[db])
    rows = []

    def add(method, scores, seconds=None):
        rows.append(dict(set=name, method=method, bits=bits, **scores, train_s=seconds, n=len(vectors),
                         dim=vectors.shape[1]))
        t = f"{seconds:7.1f}s" if seconds is not None else ""
        print(f"  {name:18s} {bits:>3} {method:34s} mAP {scores['map']:.4f}  P@100 {scores['p@100']:.4f} {t}",
              flush=True)

    given = vectors.astype(np.float64)
    std = scaled(cfg, given[db], given)
    add("raw vectors, Euclidean", retrieval_scores(euclidean_distances(given[q], given[db]), ql, dl))
    for method, make in HASHERS.items():
        for label, x in (("as given", given), (f"scaled ({cfg.scaling})", std)):
            h = make(x[db], bits, seed)
            add(f"{method} {label}", hamming_retrieval(h(x[q]), h(x[db]), ql, dl))
    for method, changes in variants.items():
        t0 = time.monotonic()
        model = SemanticHasher(cfg.replace(**changes)).fit(vectors[db])
        secs = time.monotonic() - t0
        add(method, hamming_retrieval(model.encode(vectors[q]), model.encode(vectors[db]), ql, dl), secs)
    return rows


def ratios(rows: list, variants: dict) -> dict:
    """{set: {variant: mAP / the better ITQ}}."""
    out = {}
    for name in dict.fromkeys(r["set"] for r in rows):
        mine = {r["method"]: r["map"] for r in rows if r["set"] == name}
        itq = max(v for k, v in mine.items() if k.startswith("ITQ"))
        out[name] = {m: mine[m] / itq for m in variants if m in mine}
    return out


def summarise(rows: list, variants: dict) -> list:
    """Per set, each variant's ratio to ITQ; per variant, its worst and mean; and leave one set
    out: for each set, the variant the other sets choose by their worst ratio, scored on it."""
    table = ratios(rows, variants)
    lines = [f"{name:18s} " + ", ".join(f"{m} {r:.2f}x" for m, r in by.items()) for name, by in table.items()]
    for m in variants:
        got = [by[m] for by in table.values() if m in by]
        if got:
            lines.append(f"{m}: worst {min(got):.2f}x ITQ, mean {np.mean(got):.2f}x")
    if len(variants) > 1 and len(table) > 1:
        for held in table:
            others = [by for name, by in table.items() if name != held]
            pick = max(variants, key=lambda m: min(by.get(m, -1) for by in others))
            lines.append(f"leave out {held}: the others choose {pick!r}, which scores {table[held].get(pick, float('nan')):.2f}x "
                         f"there (best there: {max(table[held].values()):.2f}x)")
    return lines


def stream(rows: int, dim: int = 128, block: int = 1 << 18) -> dict:
    """``hashae index-vectors`` on a generated (rows, dim) float32 file (clustered, seeded, written
    a block at a time), in a child process: wall time and peak resident memory of a first run,
    of a re-run with nothing new, and of a run after 10% more rows were appended."""
    folder = tempfile.mkdtemp(prefix="hashae-stream-")
    try:
        path, store = os.path.join(folder, "emb.npy"), os.path.join(folder, "emb.h5")
        rng = np.random.default_rng(0)
        centres = rng.normal(size=(1000, dim)).astype(np.float32) * 3

        def write(n):
            out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
            for s in range(0, n, block):  # a whole block from its own seed: row values do not depend on n
                r = np.random.default_rng(s)
                rows = centres[r.integers(0, len(centres), block)] + r.normal(size=(block, dim)).astype(np.float32)
                out[s:s + block] = rows[:n - s]
            out.flush()
            del out

        # the child reports its own peak (VmHWM): getrusage's children maximum would also count
        # this process's pages at the fork
        child = ("import sys\nfrom hashae.cli import main\ntry:\n    main(sys.argv[1:])\nfinally:\n"
                 "    print([ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0], file=sys.stderr)")
        result = {"rows": rows, "dim": dim}
        for step, n in (("first run", rows), ("re-run, nothing new", rows), ("10% more rows", rows + rows // 10)):
            if step != "re-run, nothing new":
                write(n)
            t0 = time.monotonic()
            proc = subprocess.run([sys.executable, "-c", child, "index-vectors", path, "--store", store,
                                   "--effort", "fast", "--quiet"], capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(proc.stderr)
            peak = int(re.search(r"VmHWM:\s*(\d+) kB", proc.stderr).group(1)) / 1024
            result[step] = {"seconds": round(time.monotonic() - t0, 1), "file_mb": round(os.path.getsize(path) / 2**20),
                            "peak_rss_mb": round(peak), "report": proc.stdout.strip()}
            print(f"  {step:22s} {result[step]['seconds']:7.1f} s  file {result[step]['file_mb']:6d} MB  "
                  f"peak RSS {result[step]['peak_rss_mb']:6d} MB  {proc.stdout.strip()}", flush=True)
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=SETS, choices=SETS)
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set-config", action="append", default=[], metavar="KEY=VALUE",
                    help="override a HasherConfig field of the default (JSON value)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[;KEY=VALUE]",
                    help="also train a variant of the default, e.g. 'no neighbours:neighbours=0'")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "vectors.json"))
    ap.add_argument("--stream", type=int, metavar="ROWS", help="only the streaming run, on a file of ROWS rows")
    args = ap.parse_args(argv)
    if args.stream:
        result = stream(args.stream)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out.replace("vectors.json", "vectors-stream.json"), "w") as f:
            json.dump(result, f, indent=1)
        return
    base = HasherConfig(kind="vector").replace(**parse_settings(args.set_config))
    variants = {"hashae": {}}
    for text in args.variant:
        label, _, settings = text.partition(":")
        variants[f"hashae: {label}"] = parse_settings(settings.split(";"))
    print(f"config: {base.to_json()}")
    rows, t0 = [], time.monotonic()
    for name in args.sets:
        rows += run_set(name, args.bits, base, args.seed, variants)
    summary = summarise(rows, variants)
    for line in summary:
        print(line)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"config": json.loads(base.to_json()), "variants": variants, "rows": rows, "summary": summary,
                   "seconds": time.monotonic() - t0}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
