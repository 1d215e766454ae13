"""Listing a folder on a Ray cluster: the driver reads the first folders itself, and a Ray Data
pipeline reads the sub-trees below them, one task per sub-folder, each with ingest.scan's own
walk. Each folder is listed once: where symbolic links reach one folder from two sub-trees, the
path that ``scan`` would meet first keeps it (ingest.scan.discovery_key)."""
from __future__ import annotations

import os

import numpy as np

from ..ingest.scan import FileEntry, discovery_key, walk
from . import cluster_cpus, connect

LOCAL_FOLDERS = 64  # folders the driver reads before handing the rest to the cluster


def _walk_rows(batch: dict, root: str, follow_links: bool, seen: list) -> dict:
    """Ray Data task: walk the sub-folders of ``batch`` (a block, in sorted order) one after the
    other, skipping the folders the driver already found (``seen``: their real paths) and those
    an earlier sub-folder of the block reached, as one walk would; one row per file, error and
    folder read."""
    kind, path, size, mtime, text = [], [], [], [], []
    seen = {os.fsdecode(r) for r in seen}  # once per block: the driver may have found many folders
    for rel in batch["dir"]:
        found = walk(root, [os.fsdecode(bytes(rel))], follow_links, seen=seen)
        for f in found.files:
            kind.append("file"), path.append(os.fsencode(f.path)), size.append(f.size)
            mtime.append(f.mtime_ns), text.append(b"")
        for p, why in found.errors:
            kind.append("error"), path.append(os.fsencode(p)), size.append(0), mtime.append(0)
            text.append(why.encode("utf-8", "replace"))
        for p, real in found.folders:
            kind.append("folder"), path.append(os.fsencode(p)), size.append(0), mtime.append(0)
            text.append(os.fsencode(real))
    return {"kind": np.array(kind, dtype=object), "path": np.array(path, dtype=object),
            "size": np.array(size, np.int64), "mtime": np.array(mtime, np.int64), "text": np.array(text, dtype=object)}


def ray_scan(folder: str, follow_links: bool = False, on_folder=None,
             local_folders: int = LOCAL_FOLDERS) -> tuple[list, list]:
    """``ingest.scan(folder)`` with the sub-trees listed on the cluster: (sorted FileEntry list,
    errors). ``on_folder(n)`` is called for the driver's folders and once per sub-tree."""
    root = os.fspath(folder)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such folder")
    seen = {os.path.realpath(root)}
    top = walk(root, [""], follow_links, on_folder=on_folder, max_folders=local_folders, seen=seen)
    files, errors = list(top.files), list(top.errors)
    if top.pending:
        connect()
        import ray.data
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ds = ray.data.from_items([{"dir": os.fsencode(d)} for d in sorted(top.pending)],
                                 override_num_blocks=min(len(top.pending), 4 * cluster_cpus()))
        ds = ds.map_batches(_walk_rows, batch_size=None, batch_format="numpy", num_cpus=1,
                            fn_kwargs=dict(root=root, follow_links=follow_links, seen=[os.fsencode(r) for r in seen]))
        rows = {"file": [], "error": [], "folder": []}
        for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for k, p, s, m, t in zip(out["kind"], out["path"], out["size"], out["mtime"], out["text"]):
                rows[str(k)].append((os.fsdecode(bytes(p)), int(s), int(m), bytes(t)))
            if on_folder is not None:
                on_folder(len(out["kind"]))
        # a folder reached from two places is kept under the first of its paths
        owner = {real: rel for rel, real in top.folders}
        dropped = []
        for rel, _, _, real in sorted(rows["folder"], key=lambda row: discovery_key(row[0])):
            real = os.fsdecode(real)
            if owner.setdefault(real, rel) != rel:
                dropped.append(rel + "/")
        dropped = tuple(dropped)
        files += [FileEntry(p, s, m) for p, s, m, _ in rows["file"] if not p.startswith(dropped)]
        errors += [(p, t.decode("utf-8", "replace")) for p, _, _, t in rows["error"] if not p.startswith(dropped)]
    files.sort(key=lambda f: f.path)
    return files, sorted(errors)
