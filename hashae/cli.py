"""The `hashae` command: a thin layer of click commands over hashae.Collection.

Expected failures (bad store, missing folder, unreadable query image, busy store) end with a
one-line ``Error: ...`` and exit status 1; anything else is a bug and shows its traceback.
"""
from __future__ import annotations

import functools
import glob
import json
import logging
import os
import sys
import warnings
from typing import NamedTuple

import click

from .model.config import describe_settings
from .output import json_safe, shown
from .search.methods import CLUSTER_METHODS, DEFAULT_METHOD


def _friendly(fn):
    """Turn the errors a user can fix into one-line messages."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .distributed import EngineUnavailable
        from .ingest import ImageError
        from .storage import StoreBusy, StoreError
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            # the reader went away (`hashae cluster | head -1`): stop quietly, as `cat` would
            # when it does not die by SIGPIPE; stdout goes to /dev/null so the exit flush is silent
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except (StoreError, StoreBusy, ImageError, FileNotFoundError, ValueError, PermissionError,
                EngineUnavailable) as e:
            raise click.ClickException(shown(str(e).splitlines()[0]) if str(e) else type(e).__name__) from None
        except MemoryError:
            raise click.ClickException("out of memory (a model or collection too large for this machine)") from None
        except OSError as e:
            msg = f"{e.filename}: {e.strerror}" if e.filename else (e.strerror or str(e))
            raise click.ClickException(shown(str(msg).splitlines()[0])) from None
    return wrapper


def _store_option(fn):
    return click.option("--store", "store", type=click.Path(dir_okay=False),
                        help="collection file (default: $HASHAE_STORE, else the only .h5 file in indexes/)")(fn)


def _folder_option(fn):
    return click.option("--folder", "folder", type=click.Path(file_okay=False),
                        help="where the items' images are, for sheets (default: the indexed folder, "
                             "if you indexed it on this machine)")(fn)


def _resolve_store(store: str | None) -> str:
    """--store, else $HASHAE_STORE, else the only collection in indexes/."""
    store = store or os.environ.get("HASHAE_STORE")
    if store:
        return store
    found = sorted(glob.glob(os.path.join("indexes", "*.h5")))
    if len(found) == 1:
        return found[0]
    if not found:
        raise click.ClickException("no collection in indexes/; build one with `hashae index FOLDER`, or pass "
                                   "--store (or set HASHAE_STORE)")
    names = ", ".join(shown(f) for f in found[:5]) + (", ..." if len(found) > 5 else "")
    raise click.ClickException(f"{len(found)} collections in indexes/ ({names}); choose one with --store "
                               "(or set HASHAE_STORE)")


@click.group()
@click.version_option(package_name="hashae")
def main():
    """Semantic hashing for image folders: index, find similar, group, find duplicates."""
    # Pillow logs some refusals of damaged files at ERROR level (a TIFF's sample count), which
    # Python prints when no logging is set up; the run's skip line already gives the reason
    pil = logging.getLogger("PIL")
    if not any(isinstance(h, logging.NullHandler) for h in pil.handlers):
        pil.addHandler(logging.NullHandler())
    # a warning is one line that says what happened, as the errors are, not Python's file, line
    # number and the source line that raised it
    warnings.showwarning = _show_warning


def _show_warning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"Warning: {shown(str(message))}", err=True)


@main.command()
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--store", type=click.Path(dir_okay=False), help="collection file (default: indexes/<folder name>.h5)")
@click.option("--bits", type=int, help="code length for a new collection: 8..256, a multiple of 8 (default 64)")
@click.option("--model", "model_store", type=click.Path(dir_okay=False),
              help="reuse the model of another collection instead of training")
@click.option("--epochs", type=click.IntRange(min=0),
              help="fine-tuning epochs when training a new model (default 15, raised on small folders to the "
                   "effort level's step floor, 800 optimiser steps at default, and lowered on large ones to its "
                   "step bound; given, it is exactly this many epochs)")
@click.option("--image-size", type=click.IntRange(8, 256), help="model input size in pixels when training (default 32)")
@click.option("--arch", type=click.Choice(["mlp", "conv"]), help="architecture when training (default mlp)")
@click.option("--effort", type=click.Choice(["fast", "default", "best"]), default="default", show_default=True,
              help="training time budget for a new model: about 20 s / 1.5 min / 5.5 min per 10,000 images on 2 cores")
@click.option("--feature-bits", type=click.IntRange(min=0),
              help="bits of a new model's code given to the whole image's colour and texture statistics (hashed by "
                   "ITQ), the rest learnt (default: an eighth of --bits, 8 of 64; 0 for none)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed for training")
@click.option("--precision", type=click.Choice(["auto", "float32", "bfloat16"]), default="auto", show_default=True,
              help="what the widest layers' products run in while training: auto is bfloat16 on a CPU that has it "
                   "(about 1.4x as fast), float32 elsewhere; float32 gives the same codes for a seed on any CPU kind")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="image-decoding processes (0: none); with --engine ray, training workers")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: decode, encode and train on the Ray cluster of RAY_ADDRESS (or a new local one); "
                   "needs pip install 'hashae[ray]' and FOLDER at the same path on every node")
@click.option("--shard-size", type=click.IntRange(min=1),
              help="items per part file: a larger collection is written as shards joined by HDF5 virtual "
                   "datasets (default 10,000,000)")
@click.option("--follow-links", is_flag=True, help="follow symbolic links that lead out of FOLDER")
@click.option("--allow-shrink", is_flag=True, help="accept a run that removes more than half of the items")
@click.option("--quiet", is_flag=True, help="no progress bars")
@_friendly
def index(folder, store, bits, model_store, epochs, image_size, arch, effort, feature_bits, seed, precision, workers,
          engine, shard_size, follow_links, allow_shrink, quiet):
    """Index the images under FOLDER (recursively) into a collection; re-runs are incremental."""
    from .collection import Collection, default_store
    from .model.config import HasherConfig
    store = store or default_store(folder)
    config = None
    if not model_store:
        overrides = {k: v for k, v in dict(epochs=epochs, image_size=image_size, arch=arch,
                                           feature_bits=feature_bits).items() if v is not None}
        if epochs is not None:
            overrides["min_steps"] = 0  # an explicit --epochs is what the user gets, however small the folder
        store_bits = Collection.open(store).bits if os.path.exists(store) else None
        config = HasherConfig.for_effort(effort, bits=bits or store_bits or 64, seed=seed, precision=precision,
                                         **overrides)
    report = Collection(store).index(folder, bits=bits, model=model_store, config=config, workers=workers,
                                     progress=False if quiet else None, follow_links=follow_links,
                                     allow_shrink=allow_shrink, engine=engine, shard_items=shard_size)
    if report.trained:
        click.echo(f"trained a {report_bits(store)}-bit model on {shown(folder)}", err=True)
    for path, reason in report.skipped[:10]:
        click.echo(f"skipped {shown(path)}: {shown(reason)}", err=True)
    if len(report.skipped) > 10:
        click.echo(f"... and {len(report.skipped) - 10} more skipped (see `hashae info --json`)", err=True)
    click.echo(f"{shown(store)}: {report}")


@main.command("index-vectors")
@click.argument("file", type=str, required=False)
@click.option("--ids", type=click.Path(dir_okay=False), help="text file of one item name per row (default: row numbers, "
              "or the names in clip-retrieval's metadata/ beside a folder of parts)")
@click.option("--store", type=click.Path(dir_okay=False),
              help="collection file (default: indexes/<file name without extension>.h5)")
@click.option("--bits", type=int, help="code length for a new collection: 8..256, a multiple of 8 (default 64)")
@click.option("--model", "model_store", type=click.Path(dir_okay=False),
              help="reuse the vector model of another collection instead of training")
@click.option("--effort", type=click.Choice(["fast", "default", "best"]), default="default", show_default=True,
              help="training time budget for a new model")
@click.option("--seed", type=int, default=0, show_default=True, help="seed for training")
@click.option("--pca", type=click.IntRange(min=0), help="principal components of the standardised rows that a new "
              "model reads (default 128 for rows of more values; 0: the standardised values themselves)")
@click.option("--shard-size", type=click.IntRange(min=1), help="items per part file (default 10,000,000)")
@click.option("--allow-shrink", is_flag=True, help="accept a run that removes more than half of the items")
@click.option("--quiet", is_flag=True, help="no progress bars")
@_friendly
def index_vectors(file, ids, store, bits, model_store, effort, seed, pca, shard_size, allow_shrink, quiet):
    """Index the rows of FILE (a .npy array, file.h5:/dataset, or a folder of .npy parts such as
    clip-retrieval's img_emb/) into a collection of vectors; re-runs encode only new and changed rows
    (FILE and --ids default to those the store was built from)."""
    from .collection import Collection, default_store
    from .model.config import HasherConfig
    if not file and not store:
        raise click.UsageError("give the vector FILE, or --store of a collection to index its file again")
    if not store:
        source = file if os.path.exists(file) else file.split(":", 1)[0]  # file.h5:/dataset
        store = default_store(os.path.splitext(source)[0] if os.path.isfile(source) else source)
    config = None
    if not model_store:
        store_bits = Collection.open(store).bits if os.path.exists(store) else None
        config = HasherConfig.for_effort(effort, kind="vector", bits=bits or store_bits or 64, seed=seed, pca=pca)
    report = Collection(store).index_vectors(file, ids=ids, bits=bits, model=model_store, config=config,
                                             progress=False if quiet else None, allow_shrink=allow_shrink,
                                             shard_items=shard_size)
    if report.trained:
        click.echo(f"trained a {report_bits(store)}-bit vector model on {shown(file or store)}", err=True)
    click.echo(f"{shown(store)}: {str(report).replace('images/s', 'rows/s')}")


def report_bits(store: str) -> int:
    from .collection import Collection
    with Collection.open(store) as c:
        return c.bits


@main.command()
@click.argument("images", nargs=-1, type=click.Path())
@click.option("--vector", "vectors", type=click.Path(dir_okay=False),
              help="query a collection of vectors with the rows of this .npy file (\"query\" is the row number)")
@_store_option
@click.option("-k", "k", type=click.IntRange(min=1), default=None, help="hits per query (default 10; with --radius: all)")
@click.option("--radius", type=click.IntRange(min=0), help="all items within this Hamming distance instead of the k nearest")
@click.option("--json", "as_json", is_flag=True,
              help="print JSON: [{query, hits: [{path, distance, score}]}] (score: what ordered the hits, lower is "
                   "closer; distance: Hamming distance between the codes)")
@click.option("--csv", "as_csv", is_flag=True, help="print CSV: query,rank,path,distance,score")
@click.option("--hamming-only", is_flag=True,
              help="order hits by Hamming distance alone (ties in item order), without re-ranking the shortlist "
                   "by the query's real-valued code and perceptual hashes")
@click.option("--absolute", is_flag=True, help="print the hits' absolute paths")
@click.option("--exclude-self", is_flag=True, help="leave out the query itself when it is an item")
@click.option("--sheet", type=click.Path(dir_okay=False), help="write a contact sheet PNG of each query and its hits")
@click.option("--nprobe", type=click.IntRange(min=1),
              help="lists an inverted-file index visits per query, from 100 million items: more is slower and "
                   "recalls more (default 32)")
@_folder_option
@_friendly
def query(images, vectors, store, k, radius, as_json, as_csv, hamming_only, absolute, exclude_self, sheet, nprobe,
          folder):
    """Find the items most similar to each IMAGE (a folder: every image in it), or to each row
    of --vector Q.npy in a collection of vectors."""
    from .collection import Collection
    if bool(images) == bool(vectors):
        raise click.UsageError("give IMAGE files to query, or --vector Q.npy, not both" if images
                               else "give IMAGE files to query (or --vector Q.npy for a collection of vectors)")
    if vectors and (sheet or absolute or exclude_self):
        raise click.UsageError("--sheet, --absolute and --exclude-self are for image queries")
    with Collection.open(_resolve_store(store), folder) as coll:
        coll.nprobe = nprobe
        if vectors:
            from .ingest.vectors import VectorSource
            with VectorSource(vectors) as q:
                results = coll.query_vectors(q.rows(0, q.n), k=k if (k or radius is not None) else 10,
                                             radius=radius, hamming_only=hamming_only)
            _print_results(results, as_json, as_csv)
            return
        if sheet or absolute:
            coll.images_root()  # refuse an untrusted folder before anything is printed or written
        # an unreadable query image is reported; the others answered
        results, failed = _each_file(_expand_folders(images), lambda files: coll.query(
            files, k=k if (k or radius is not None) else 10, radius=radius, exclude_self=exclude_self,
            hamming_only=hamming_only))
        if absolute:
            for r in results:
                for h in r["hits"]:
                    h["path"] = coll.item_path(h["path"])
        _print_results(results, as_json, as_csv)
        if sheet:
            from .sheet import contact_sheet
            written = []
            for n, r in enumerate(results):
                out = sheet if len(results) == 1 else _numbered(sheet, n)
                tiles = [(r["query"], f"query: {os.path.basename(r['query'])}")] + [
                    (h["path"] if absolute else coll.item_path(h["path"]), f"d={h['distance']} {h['path']}")
                    for h in r["hits"]]
                written.append(contact_sheet(tiles, out))
            click.echo(f"contact sheet: {', '.join(written)}", err=True)
        if failed:
            sys.exit(1)


def _print_results(results: list, as_json: bool, as_csv: bool) -> None:
    if as_json:
        click.echo(json.dumps(results))
    elif as_csv:
        _csv(["query", "rank", "path", "distance", "score"],
             [(r["query"], n, h["path"], h["distance"], h.get("score", ""))
              for r in results for n, h in enumerate(r["hits"], 1)])
    else:
        for r in results:
            click.echo(f"{shown(str(r['query']))}: {len(r['hits'])} hits")
            for h in r["hits"]:
                score = f"  {h['score']:8.2f}" if "score" in h else ""
                click.echo(f"  {h['distance']:4d}{score}  {shown(h['path'])}")


QUERY_BATCH = 256  # query images decoded, encoded and ranked together


def _each_file(files: list, answer) -> tuple[list, int]:
    """``answer(files)``'s results for batches of QUERY_BATCH files, in order, and how many files
    failed. A batch with an unreadable image is answered file by file, so that the error names
    the file (one line each) and the other files are still answered."""
    from .ingest import ImageError
    results, failed = [], 0
    for s in range(0, len(files), QUERY_BATCH):
        batch = files[s:s + QUERY_BATCH]
        try:
            results += answer(batch)
            continue
        except ImageError:
            pass
        for f in batch:
            try:
                results += answer([f])
            except ImageError as e:
                click.echo(f"Error: {shown(str(e))}", err=True)
                failed += 1
    return results, failed


def _expand_folders(args) -> list:
    """Query arguments with each folder replaced by the image files under it, in path order."""
    from .ingest import scan
    out = []
    for a in args:
        if os.path.isdir(a):
            out += [os.path.join(a, e.path) for e in scan(a)[0]]
        else:
            out.append(a)
    return out


def _csv(header: list, rows) -> None:
    import csv
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    sys.stdout.flush()


def _numbered(path: str, n: int) -> str:
    root, ext = os.path.splitext(path)
    return f"{root}-{n}{ext or '.png'}"


@main.command()
@_store_option
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@_friendly
def info(store, as_json):
    """Describe a collection: items, skipped files, bits, model, file size."""
    from .collection import Collection
    with Collection.open(_resolve_store(store)) as coll:
        data = coll.info(skipped_files=as_json)
        if as_json:
            click.echo(json.dumps(json_safe(data), default=str))
            return
        click.echo(f"collection  {shown(data['path'])}")
        click.echo(f"{'folder' if data['kind'] == 'images' else 'vectors':12s}{shown(data['folder'])}")
        click.echo(f"items       {data['items']}")
        click.echo(f"skipped     {data['skipped']}")
        feature_bits = (data["model"] or {}).get("feature_bits")
        split = f" ({data['bits'] - feature_bits} learnt, {feature_bits} from channel statistics)" \
            if isinstance(feature_bits, int) and not isinstance(feature_bits, bool) and feature_bits > 0 else ""
        click.echo(f"bits        {data['bits']}{split}")
        click.echo(f"model       {shown(describe_settings(data['model']))}")
        click.echo(f"optional    {', '.join(data['optional']) or 'none'}")
        if "parts" in data:
            click.echo(f"parts       {len(data['parts'])} ({shown(os.path.dirname(data['parts'][0]['path']))}/)")
        click.echo(f"file size   {data['file_size']:,} bytes")


class GroupOutput(NamedTuple):
    """How `cluster` and `duplicates` print their groups."""

    title: str
    as_json: bool = False
    as_csv: bool = False
    absolute: bool = False
    sheets: str | None = None


def _images_only(coll, flag: str) -> None:
    """Refuse, before any output, a flag that draws or names the items' image files on a
    collection of vectors, saying what to do."""
    if coll.kind != "images":
        raise click.UsageError(f"{flag} draws or names the items' image files; {shown(coll.path)} holds vectors, "
                               f"whose items are rows: leave {flag} out")


def _emit_groups(coll, groups: list, out: GroupOutput) -> None:
    if out.sheets or out.absolute:
        _images_only(coll, "--sheets" if out.sheets else "--absolute")
        coll.images_root()  # refuse an untrusted folder before anything is printed or written
    listed = [[coll.item_path(p) for p in g] for g in groups] if out.absolute else groups
    if out.as_json:
        click.echo(json.dumps([{"cluster": n, "paths": g} for n, g in enumerate(listed)]))
    elif out.as_csv:
        _csv(["cluster", "path"], [(n, p) for n, g in enumerate(listed) for p in g])
    else:
        for n, g in enumerate(listed):
            click.echo(f"#{n} ({len(g)} {'images' if coll.kind == 'images' else 'items'})")
            for p in g[:20]:
                click.echo(f"  {shown(p)}")
            if len(g) > 20:
                click.echo(f"  ... and {len(g) - 20} more")
    if out.sheets:
        from .sheet import cluster_sheets
        index = cluster_sheets(coll.by_centre(groups), coll.folder, coll.item_path, out.sheets, title=out.title)
        click.echo(f"contact sheets: {index}", err=True)


@main.command()
@_store_option
@click.option("--method", type=click.Choice(CLUSTER_METHODS), default=DEFAULT_METHOD, show_default=True,
              help="graph: communities of the codes' nearest-neighbour graph (-k of them, or as many as the graph "
                   "shows); exact: identical codes; radius: codes joined within --radius; kmeans: -k groups around "
                   "binary centroids")
@click.option("--radius", type=click.IntRange(min=0), default=None,
              help="Hamming radius for --method radius (default bits // 32)")
@click.option("-k", "k", type=click.IntRange(min=1), default=None,
              help="clusters for --method kmeans (default sqrt(N / 2)) and graph (default: chosen by modularity)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help='print [{"cluster": n, "paths": [...]}, ...], every item once')
@click.option("--csv", "as_csv", is_flag=True, help="print CSV: cluster,path")
@click.option("--absolute", is_flag=True, help="print absolute paths")
@click.option("--sheets", type=click.Path(file_okay=False), help="write a contact sheet per cluster and index.html here")
@click.option("--quiet", is_flag=True, help="no progress bar")
@_folder_option
@_friendly
def cluster(store, method, radius, k, seed, as_json, as_csv, absolute, sheets, quiet, folder):
    """Group the items of a collection by their codes (largest group first)."""
    from .collection import Collection
    with Collection.open(_resolve_store(store), folder) as coll:
        with_k = method in ("kmeans", "graph")
        if with_k and k is not None and k >= len(coll):
            click.echo(f"Warning: -k {k} is not less than the {len(coll)} items: every distinct code is a group "
                       "of its own", err=True)
        elif not with_k and k is not None:
            click.echo(f"Warning: -k applies to --method kmeans and graph only; ignored for --method {method}",
                       err=True)
        groups = coll.clusters(method, radius=radius if method == "radius" else None,
                               k=k if with_k else None, seed=seed, progress=False if quiet else None)
        if method == "graph" and k is None and not quiet:
            click.echo(f"graph: the neighbour graph's modularity chose {len(groups)} group"
                       f"{'' if len(groups) == 1 else 's'}", err=True)
        _emit_groups(coll, groups, GroupOutput(f"{method} clusters", as_json, as_csv, absolute, sheets))


@main.command()
@_store_option
@click.option("--radius", type=click.IntRange(min=0), default=None,
              help="Hamming radius between codes (default bits // 16, e.g. 4 at 64 bits)")
@click.option("--no-verify", is_flag=True,
              help="group by codes alone, without the perceptual-hash check (joins look-alikes too)")
@click.option("--confirm", type=int, default=None,
              help="perceptual bits two copies may differ in: of 128 (pHash + dHash, default 18), or of 64 "
                   "(pHash alone, default 12) in a collection not re-indexed since dHashes were added; lower is "
                   "stricter")
@click.option("--json", "as_json", is_flag=True, help='print [{"cluster": n, "paths": [...]}, ...]')
@click.option("--csv", "as_csv", is_flag=True, help="print CSV: cluster,path")
@click.option("--absolute", is_flag=True, help="print absolute paths")
@click.option("--keep", type=click.Choice(["largest", "oldest", "sharpest"]), default=None,
              help="choose the file to keep in each group by this rule; --json then gives it and each member's "
                   "distances to it")
@click.option("--list-extra", is_flag=True,
              help="print only the files one would remove (all but the kept one, --keep or largest), absolute paths")
@click.option("-0", "null", is_flag=True, help="with --list-extra: separate paths by NUL, for xargs -0")
@click.option("--sheets", type=click.Path(file_okay=False), help="write a contact sheet per group and index.html here")
@click.option("--quiet", is_flag=True, help="no progress bar")
@_folder_option
@_friendly
def duplicates(store, radius, no_verify, confirm, as_json, as_csv, absolute, keep, list_extra, null, sheets, quiet,
               folder):
    """Groups of near-duplicate images: pairs whose perceptual hashes (mirrored or not) are
    close, or close enough with their codes close too."""
    from .collection import Collection
    if keep and (as_csv or absolute or sheets):
        raise click.UsageError("--keep lists each group with its kept file (text or --json); it does not combine "
                               "with --csv, --absolute or --sheets")
    with Collection.open(_resolve_store(store), folder) as coll:
        groups = coll.duplicates(radius, verify=not no_verify, confirm=confirm, progress=False if quiet else None)
        if list_extra:  # hashae never deletes: it prints what one could move away
            plan = coll.keep_plan(groups, keep or "largest")
            extra = [coll.item_path(p) for g in plan for p in g["paths"] if p != g["keep"]]
            sys.stdout.write("".join(p + ("\0" if null else "\n") for p in extra))
            sys.stdout.flush()
            return
        if keep:
            plan = coll.keep_plan(groups, keep)
            if as_json:
                click.echo(json.dumps(plan))
            else:
                _print_keep_plan(plan, keep)
        else:
            _emit_groups(coll, groups, GroupOutput("near duplicates", as_json, as_csv, absolute, sheets))
        if not (as_json or as_csv):
            what = "images" if coll.kind == "images" else "items"
            click.echo(f"{sum(map(len, groups))} {what} in {len(groups)} duplicate groups", err=True)


def _print_keep_plan(plan: list, rule: str) -> None:
    for g in plan:
        click.echo(f"#{g['cluster']} ({len(g['paths'])} images), keep {shown(g['keep'])} ({rule})")
        for d in g["distances"]:
            if d["path"] != g["keep"]:
                phash = "-" if d["phash"] is None else d["phash"]
                seen = "-" if d["perceptual"] is None else d["perceptual"]
                click.echo(f"  code {d['code']:3d}  pHash {phash:>3}  pHash+dHash {seen:>3}  {shown(d['path'])}")


@main.command()
@_store_option
@click.option("-n", "n", type=click.IntRange(min=0), default=20, show_default=True, help="items to list (0: every item)")
@click.option("--json", "as_json", is_flag=True, help='print JSON: [{"path", "score"}], highest score first')
@click.option("--sheet", type=click.Path(dir_okay=False), help="write a contact sheet PNG of the items listed")
@_folder_option
@_friendly
def outliers(store, n, as_json, sheet, folder):
    """List the items that fit the collection least, highest score first."""
    from .collection import Collection
    with Collection.open(_resolve_store(store), folder) as coll:
        if sheet:
            _images_only(coll, "--sheet")
            coll.images_root()  # refuse an untrusted folder before anything is printed or written
        found = coll.outliers(n)
        if as_json:
            click.echo(json.dumps([{"path": o.path, "score": o.score} for o in found]))
        else:
            for o in found:
                click.echo(f"{o.score:8.4f}  {shown(o.path)}")
        if sheet:
            from .sheet import contact_sheet
            contact_sheet([(coll.item_path(o.path), f"{o.score:.3f} {o.path}") for o in found], sheet)
            click.echo(f"contact sheet: {shown(sheet)}", err=True)


@main.command("map")
@_store_option
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="the PNG to write")
@click.option("--max-items", type=click.IntRange(min=1, max=10_000), default=1000, show_default=True,
              help="items on the map (a seeded sample of larger collections)")
@click.option("--seed", type=int, default=0, show_default=True)
@_folder_option
@_friendly
def map_command(store, out, max_items, seed, folder):
    """Draw a map of the collection: thumbnails placed by their codes, similar ones together."""
    from .collection import Collection
    with Collection.open(_resolve_store(store), folder) as coll:
        coll.images_root()  # refuse an untrusted folder before any work
        shown_items = min(len(coll), max_items)
        coll.map(out, max_items=max_items, seed=seed)
        click.echo(f"map of {shown_items} of {len(coll)} items: {shown(out)}", err=True)


SPLIT_NAMES = {"train", "training", "val", "valid", "validation", "test", "testing", "dev"}


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@_store_option
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="neighbours that vote")
@click.option("--level", type=click.IntRange(min=1), default=1, show_default=True,
              help="which folder of an item's path is its label: 1 the first, 2 the one below (train/ants)")
@click.option("--json", "as_json", is_flag=True,
              help='print JSON: [{"query", "label", "votes": {label: count}}]')
@_friendly
def classify(images, store, k, level, as_json):
    """Label each IMAGE (a folder: every image in it) by the vote of its nearest items; an item's
    label is the first folder of its path (--level 2: the one below it)."""
    from .collection import Collection
    with Collection.open(_resolve_store(store)) as coll:
        _, names = coll.labels(level)
        if level == 1 and names and set(n.lower() for n in names) <= SPLIT_NAMES:
            # a dataset split into train/ and val/ with a folder per class below: say where the classes are
            click.echo(f"Warning: the labels are the first folders ({', '.join(shown(n) for n in names)}), which "
                       "look like a dataset's splits; --level 2 takes the folders below them", err=True)
        results, failed = _each_file(_expand_folders(images), lambda files: coll.label_votes(files, k=k, level=level))
        if as_json:
            click.echo(json.dumps([v.as_json() for v in results]))
        else:
            for v in results:  # the vote weight decides, so it comes first: nearer neighbours weigh more
                votes = ", ".join(f"{shown(name)} {v.share[name]:.0%} ({c} {'vote' if c == 1 else 'votes'})"
                                  for name, c in sorted(v.votes.items(), key=lambda x: -v.share[x[0]]))
                label = "(no labelled neighbours)" if v.label is None else shown(v.label)
                click.echo(f"{shown(v.query)}: {label}  [{votes}]")
        if failed:
            sys.exit(1)


@main.command()
@_store_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to listen on; anything but loopback needs --token")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option("--token", default=None, help="secret every request must carry (default: $HASHAE_TOKEN)")
@_folder_option
@_friendly
def serve(store, host, port, token, folder):
    """Serve a web page and a JSON API over a collection (read-only)."""
    try:
        from .serve import check_bind
        from .serve import serve as run_server
    except ImportError as e:
        raise click.ClickException(f"hashae serve needs the serve extra: pip install 'hashae[serve]' ({e.name} "
                                   "is missing)") from None
    token = check_bind(host, token)
    store = _resolve_store(store)
    from .collection import Collection
    Collection.open(store).close()  # a bad store is one Error line before the server starts
    click.echo(f"serving {shown(store)} on http://{host}:{port}/ (Ctrl-C stops)", err=True)
    run_server(store, host=host, port=port, token=token, folder=folder)


@main.command()
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--per-class", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def sample(folder, per_class, seed):
    """Write the built-in labelled sample (synthetic shapes, one folder per class) to FOLDER."""
    from .sample import CLASSES, make_sample
    paths = make_sample(folder, per_class=per_class, seed=seed)
    click.echo(f"wrote {len(paths)} images in {len(CLASSES)} classes to {folder}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
