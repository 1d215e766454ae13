"""The HDF5 layout, version 1: every path, dtype and attribute of a collection file, of a model
group and of a journal segment, and the code that writes and reads them. No other module names
an HDF5 path. README.md, "File layout", documents the same table for users.

Strings are UTF-8; non-UTF-8 file names are stored as their raw bytes and read back with
surrogateescape, so every POSIX name round-trips. Everything read is validated (types, shapes,
sizes) before use: a file may come from someone else, truncated, corrupted or hand-crafted.
"""
from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import asdict, dataclass, field

import h5py
import numpy as np

from ..model.config import HasherConfig, parse_json_object, without_image_defaults
from ..model.state import ModelState
from ..version import __version__
from .atomic import FailSafeFile
from .items import ALL_HASH_FIELDS, PHASH_BYTES, STATS_WIDTH, Items

FORMAT, FORMAT_VERSION = "hashae", 1
# a collection whose items live in part files (ATTR_SHARDS) or are vectors (ATTR_ITEMS) is
# version 2, which hashae before them refuses with "upgrade hashae"; single-file collections of
# images stay version 1
SHARDED_VERSION = 2
PART_FORMAT, PART_VERSION = "hashae-part", 1
MODEL_FORMAT, MODEL_VERSION = "hashae-model", 1

# root attributes of a collection file
ATTR_FORMAT, ATTR_VERSION, ATTR_HASHAE = "format", "format_version", "hashae_version"
ATTR_BITS, ATTR_FOLDER, ATTR_GENERATION = "bits", "folder", "generation"
ATTR_CREATED, ATTR_UPDATED = "created", "updated"
ATTR_FOLDER_SEAL = "folder_seal"  # this user's HMAC of (generation, folder): seal.py
ATTR_IMAGE_SIZE, ATTR_CHANNELS = "image_size", "channels"  # written with a model
# what the items are: "images" (files under ATTR_FOLDER; the attribute is absent) or "vectors"
# (rows of the vector file ATTR_FOLDER names: /items/path is each row's id, /items/size its row
# number in the file, /items/mtime a 63-bit digest of its values; no /items/phash)
ATTR_ITEMS, ITEMS_IMAGES, ITEMS_VECTORS = "items", "images", "vectors"
# a vector collection named by an ids file (--ids): its absolute path, and this user's seal of it
# (as for the folder: a file from someone else must not choose what is read here)
ATTR_IDS, ATTR_IDS_SEAL = "ids", "ids_seal"
ITEM_KINDS = (ITEMS_IMAGES, ITEMS_VECTORS)
# sharded collections: JSON [[part file relative to the collection's folder, rows], ...] in row
# order; every item column of the root is then an HDF5 virtual dataset over those parts
ATTR_SHARDS = "shards"
PART_NAME = re.compile(r"^([^/\\]+)\.parts-([0-9a-f]{32})/part-(\d{5})\.h5$")
# groups and datasets
MODEL, WEIGHTS = "model", "weights"
SKIPPED_PATH, SKIPPED_REASON = "skipped/path", "skipped/reason"
# attributes of a model group: its format, the ModelConfig JSON that rebuilds the network
# (files of hashae 0.1 hold every HasherConfig field there) and the TrainConfig JSON record
MODEL_ATTR_CONFIG, MODEL_ATTR_TRAINING = "config", "training"

STR = h5py.string_dtype("utf-8")
CHUNK_ROWS = 8192
PATH_BLOCK = 1 << 16  # strings converted per write: ~10 MB of Python objects at a time
MAX_ITEMS = 1 << 34  # a declared row count above this is a hostile or broken file
# a dataset may declare far more rows than the file stores (unallocated chunks read as fill
# values): refuse numeric data declaring over 64 MiB beyond 100x what is actually stored
SPARSE_SLACK, SPARSE_RATIO = 64 << 20, 100


@dataclass(frozen=True)
class Column:
    """One column of Items as stored: the Items field, its dataset path, dtype, values per row
    of a 2-D column (0: one value per row; "code": bits // 8), and attributes."""

    field: str
    path: str
    dtype: object
    width: int | str = 0
    optional: bool = False
    attrs: dict = field(default_factory=dict)
    # widths an earlier hashae wrote: such a column reads as absent (the next index run encodes
    # the items again and writes it at today's width), never as an error
    earlier_widths: tuple = ()

    def row_shape(self, nbytes: int) -> tuple:
        width = nbytes if self.width == "code" else self.width
        return (width,) if width else ()

    def stored(self, g: h5py.Group) -> bool:
        """Whether ``g`` holds this column as this layout writes it (not at an earlier width)."""
        ds = g.get(self.path)
        return ds is not None and not (isinstance(ds, h5py.Dataset) and len(ds.shape) == 2
                                       and ds.shape[1] in self.earlier_widths)


ITEM_COLUMNS = (
    Column("code", "codes", np.uint8, "code"),
    Column("path", "items/path", STR),
    Column("size", "items/size", np.int64),
    Column("mtime", "items/mtime", np.int64, attrs={"unit": "ns since the epoch"}),
    Column("phash", "items/phash", np.uint8, PHASH_BYTES, optional=True,
           attrs={"method": "pHash: 8x8 lowest DCT of 32x32 grey > median, FAISS bit order"}),
    Column("error", "items/error", np.float32, optional=True,
           attrs={"method": "mean squared error of the model's reconstruction through the code, pixels in [0, 1]"}),
    Column("phash_mirror", "items/phash_mirror", np.uint8, PHASH_BYTES, optional=True,
           attrs={"method": "pHash of the horizontally mirrored picture, as items/phash"}),
    Column("dhash", "items/dhash", np.uint8, PHASH_BYTES, optional=True,
           attrs={"method": "dHash: 9x8 bilinear thumbnail of the 32x32 grey, pixel > its left neighbour "
                            "+ 0.001, row-major, FAISS bit order"}),
    Column("phash_centre", "items/phash_centre", np.uint8, PHASH_BYTES, optional=True,
           attrs={"method": "pHash, as items/phash, of the central 90% of each side of the 32x32 grey, "
                            "resized back to 32x32 (bilinear)"}),
    Column("dhash_centre", "items/dhash_centre", np.uint8, PHASH_BYTES, optional=True,
           attrs={"method": "dHash, as items/dhash, of the picture that items/phash_centre hashes"}),
    Column("stats", "items/stats", np.float32, STATS_WIDTH, optional=True, earlier_widths=(12,),
           attrs={"method": "the model's input in [0, 1] (a grey one as three equal channels): per channel R, G, B "
                            "the mean, then the standard deviation, then the mean absolute horizontal and vertical "
                            "difference of neighbouring pixels; last, 1 minus the mean over channel pairs of the "
                            "cosine between their horizontal and vertical differences (0 for grey)"}),
    Column("residual", "items/residual", np.float32, optional=True,
           attrs={"method": "mean squared distance per pixel of the model's input in [0, 1], less the model's mean "
                            "image, from the span of the model's linear twin (the training images' top principal "
                            "directions): PCA's reconstruction error"}),
)
CODES = ITEM_COLUMNS[0].path
COLUMN = {c.field: c for c in ITEM_COLUMNS}


class LayoutError(ValueError):
    """A file whose structure is not what this layout says; one-line message."""


# ---------------------------------------------------------------------------- strings
def encode_path(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def read_strings(ds: h5py.Dataset, sel=slice(None)) -> list:
    return list(ds.asstr("utf-8", "surrogateescape")[sel]) if ds.shape[0] else []


def find_string(ds: h5py.Dataset, text: str, block: int = PATH_BLOCK) -> int | None:
    """First row of a string dataset equal to ``text``, reading a block at a time."""
    key = encode_path(text)
    for s in range(0, ds.shape[0], block):
        rows = np.flatnonzero(ds[s:s + block] == key)
        if len(rows):
            return s + int(rows[0])
    return None


def _dataset(g: h5py.Group, name: str, data, dtype, row_shape: tuple = ()) -> h5py.Dataset:
    """A chunked dataset, resizable along rows; strings are converted a block at a time so that
    millions of paths never exist as one big array of bytes objects."""
    n = len(data)
    shape = (n,) + row_shape
    ds = g.create_dataset(name, shape=shape, maxshape=(None,) + row_shape, dtype=dtype,
                          chunks=(max(1, min(CHUNK_ROWS, n)),) + row_shape)
    if dtype is STR:
        for s in range(0, n, PATH_BLOCK):
            ds[s:s + PATH_BLOCK] = np.array([encode_path(t) for t in data[s:s + PATH_BLOCK]], dtype=object)
    elif n:
        ds[...] = data
    return ds


# ---------------------------------------------------------------------------- structure
MAX_OBJECTS = 10_000  # groups and datasets in one file; a collection has about 30


def check_structure(f: h5py.File) -> None:
    """Refuse a file that could make a reader touch anything but its own bytes, before any
    data is read: every link must be a hard link (no soft or external links), no dataset may
    keep its data in other files (external storage) or map other files (virtual datasets).
    A crafted file used those to print /etc/passwd as item paths, or to block on a FIFO."""
    shards = shard_names(f) if ATTR_SHARDS in f.attrs else None
    seen, stack = 0, [f]
    while stack:
        g = stack.pop()
        for name in g:
            where = f"{g.name.rstrip('/')}/{name}"
            link = g.get(name, getlink=True)
            if not isinstance(link, h5py.HardLink):
                kind = "external" if isinstance(link, h5py.ExternalLink) else "soft"
                raise LayoutError(f"{where} is a {kind} link; a collection may only hold its own data")
            seen += 1
            if seen > MAX_OBJECTS:
                raise LayoutError(f"more than {MAX_OBJECTS} objects; not a collection")
            obj = g[name]
            if isinstance(obj, h5py.Group):
                stack.append(obj)
            elif isinstance(obj, h5py.Dataset):
                if obj.is_virtual:
                    check_virtual(obj, where, shards)
                if obj.external:
                    raise LayoutError(f"{where} keeps its data in external files; a collection may only hold "
                                      "its own data")


# ---------------------------------------------------------------------------- shards
def parts_folder(store_path: str, generation: str) -> str:
    """The folder, relative to the collection's, of the part files of one generation."""
    return f"{os.path.basename(store_path)}.parts-{generation}"


def shard_names(f: h5py.File) -> list:
    """The (part file, rows) list of a sharded collection, each name checked to be a part file
    of this collection's own folder (never an absolute path, never one that climbs out)."""
    try:
        shards = json.loads(text_attr(f.attrs, ATTR_SHARDS))
    except ValueError:
        raise LayoutError(f"attribute {ATTR_SHARDS!r} is not JSON") from None
    if not isinstance(shards, list) or not shards or len(shards) > MAX_OBJECTS:
        raise LayoutError(f"attribute {ATTR_SHARDS!r} is not a list of parts")
    base = os.path.basename(f.filename)
    out = []
    for entry in shards:
        ok = (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
              and isinstance(entry[1], int) and 0 <= entry[1] <= MAX_ITEMS)
        m = PART_NAME.match(entry[0]) if ok else None
        # the part folder is named after the file it was written for; a renamed collection
        # keeps its parts' names, so only the pattern and the folder's place are checked
        if m is None or m.group(1) in (".", ".."):
            raise LayoutError(f"{ATTR_SHARDS!r} names {str(entry)[:80]!r}, not a part file beside {base}")
        out.append((entry[0], entry[1]))
    if len({name for name, _ in out}) != len(out):
        raise LayoutError(f"{ATTR_SHARDS!r} names a part twice")
    return out


def check_virtual(ds: h5py.Dataset, where: str, shards) -> None:
    """A virtual dataset is allowed only as an item column of a sharded collection, mapping that
    same column of its listed part files, nothing else."""
    column = where.lstrip("/")
    if shards is None or column not in {c.path for c in ITEM_COLUMNS}:
        raise LayoutError(f"{where} is a virtual dataset; a collection may only hold its own data")
    names = {name for name, _ in shards}
    for src in ds.virtual_sources():
        if src.file_name not in names or src.dset_name.lstrip("/") != column:
            raise LayoutError(f"{where} maps {src.file_name[:80]!r}:{src.dset_name[:40]!r}, which is not "
                              "one of the collection's part files")


def write_part(path: str, items: Items, bits: int) -> None:
    """One part file of a sharded collection: its rows of every item column."""
    def build(f: h5py.File) -> None:
        f.attrs.update({ATTR_FORMAT: PART_FORMAT, ATTR_VERSION: PART_VERSION, ATTR_BITS: bits})
        write_items(f, items)
    write_file(path, build)


def write_virtual_items(f: h5py.File, shards: list, items_like: Items) -> None:
    """The root's item columns as virtual datasets over ``shards`` ([(part name, rows)]), so
    that any HDF5 reader sees /codes and /items/path as one array each."""
    total = sum(rows for _, rows in shards)
    for col in ITEM_COLUMNS:
        if getattr(items_like, col.field) is None:
            continue
        row_shape = col.row_shape(items_like.nbytes)
        vl = h5py.VirtualLayout(shape=(total,) + row_shape, dtype=col.dtype)
        start = 0
        for name, rows in shards:
            vl[start:start + rows] = h5py.VirtualSource(name, col.path, shape=(rows,) + row_shape)
            start += rows
        f.create_virtual_dataset(col.path, vl).attrs.update(col.attrs)
    f.attrs[ATTR_SHARDS] = json.dumps([[name, rows] for name, rows in shards])
    f.attrs[ATTR_VERSION] = SHARDED_VERSION


def check_parts(f: h5py.File, nbytes: int, shards: list) -> None:
    """Every part file of a sharded collection (``shards``: shard_names(f)): a regular file in
    the collection's folder that passes check_structure (no links, no virtual datasets of its
    own), of this code length, with the declared rows and the root's columns."""
    folder = os.path.dirname(os.path.abspath(f.filename))
    want = {c.field for c in ITEM_COLUMNS if c.stored(f)}
    for name, rows in shards:
        with open_file(os.path.join(folder, name)) as part:
            if part.attrs.get(ATTR_FORMAT) != PART_FORMAT:
                raise LayoutError(f"{name}: not a part of a hashae collection")
            _check_version(part.attrs, PART_VERSION, "part")
            if part.attrs.get(ATTR_BITS) != nbytes * 8:
                raise LayoutError(f"{name}: holds codes of another length")
            n, present = check_items(part, nbytes)
            if n != rows or {k for k, v in present.items() if v} != want:
                raise LayoutError(f"{name}: does not hold the {rows} rows and the columns the collection declares")


# ---------------------------------------------------------------------------- items
def write_items(g: h5py.Group, items: Items) -> None:
    """Every column of ``items`` under ``g`` (a collection file or a journal segment)."""
    for col in ITEM_COLUMNS:
        data = getattr(items, col.field)
        if data is None:
            continue
        ds = _dataset(g, col.path, data, col.dtype, col.row_shape(items.nbytes))
        ds.attrs.update(col.attrs)


def read_items(g: h5py.Group, nbytes: int) -> Items:
    """All items under ``g``, checked against the layout (as ``check_items``)."""
    n, has = check_items(g, nbytes)
    hashes = {name: g[COLUMN[name].path][()] if n else np.empty((0, PHASH_BYTES), np.uint8)
              for name in ALL_HASH_FIELDS if has[name]}
    return Items(read_strings(g[COLUMN["path"].path]), g[COLUMN["size"].path][()], g[COLUMN["mtime"].path][()],
                 g[CODES][()] if n else np.empty((0, nbytes), np.uint8),
                 error=read_errors(g) if has["error"] else None,
                 stats=read_stats(g) if has["stats"] else None,
                 residual=read_measures(g, "residual") if has["residual"] else None, **hashes)


def read_errors(g: h5py.Group) -> np.ndarray:
    """The reconstruction errors under ``g`` (read_measures)."""
    return read_measures(g, "error")


def read_stats(g: h5py.Group) -> np.ndarray:
    """The channel statistics under ``g`` (read_measures)."""
    return read_measures(g, "stats")


def read_measures(g: h5py.Group, name: str) -> np.ndarray:
    """Column ``name`` of non-negative float32 measures under ``g`` (checked by check_items); a
    row with a value that is not a finite number >= 0 (a damaged or hand-made file) reads as
    NaN throughout: unknown."""
    ds = g[COLUMN[name].path]
    x = ds[()].astype(np.float32) if ds.shape[0] else np.empty((0,) + ds.shape[1:], np.float32)
    valid = np.isfinite(x) & (x >= 0)
    x[~valid.reshape(len(x), -1).all(1)] = np.nan
    return x


def check_items(g: h5py.Group, nbytes: int) -> tuple:
    """Validate every item column under ``g``; returns (rows, {field: present})."""
    n, present = None, {}
    for col in ITEM_COLUMNS:
        present[col.field] = col.stored(g)
        if not present[col.field]:
            if col.optional:
                continue
            raise LayoutError(f"/{col.path} is missing")
        rows = check_dataset(g, col.path, col.row_shape(nbytes), "O" if col.dtype is STR else col.dtype)
        if n is None:
            n = rows
        elif rows != n:
            raise LayoutError(f"/{col.path} has a different number of rows than /{CODES}")
    return n, present


def check_dataset(g: h5py.Group, name: str, row_shape: tuple, dtype) -> int:
    """Rows of dataset ``name``, after checking its shape, dtype and declared size."""
    ds = g.get(name)
    if not isinstance(ds, h5py.Dataset):
        raise LayoutError(f"/{name} is missing")
    if len(ds.shape) != 1 + len(row_shape) or tuple(ds.shape[1:]) != row_shape:
        raise LayoutError(f"/{name} has shape {ds.shape}, expected {(None, *row_shape)}")
    if dtype == "O":
        ok = h5py.check_string_dtype(ds.dtype) is not None
    elif np.dtype(dtype) == np.uint8:
        ok = ds.dtype == np.uint8
    else:
        ok = ds.dtype.kind == np.dtype(dtype).kind
    if not ok:
        raise LayoutError(f"/{name} has dtype {ds.dtype}")
    if ds.shape[0] > MAX_ITEMS:
        raise LayoutError(f"/{name} declares {ds.shape[0]} rows")
    # strings too: a variable-length string row is a 16-byte reference in the dataset's storage
    # (a virtual dataset stores nothing itself: its parts are checked one by one, check_parts)
    declared = ds.size * ds.dtype.itemsize
    if not ds.is_virtual and declared > SPARSE_SLACK + SPARSE_RATIO * ds.id.get_storage_size():
        raise LayoutError(f"/{name} declares {ds.shape[0]} rows but the file holds "
                          f"{ds.id.get_storage_size()} bytes of it")
    return ds.shape[0]


# ---------------------------------------------------------------------------- skipped files
def write_skipped(g: h5py.Group, skipped: list) -> None:
    _dataset(g, SKIPPED_PATH, [p for p, _ in skipped], STR)
    _dataset(g, SKIPPED_REASON, [r.encode("utf-8", "replace").decode("utf-8") for _, r in skipped], STR)


def check_skipped(g: h5py.Group) -> int:
    m = check_dataset(g, SKIPPED_PATH, (), "O")
    if check_dataset(g, SKIPPED_REASON, (), "O") != m:
        raise LayoutError(f"/{SKIPPED_PATH} and /{SKIPPED_REASON} differ in length")
    return m


def read_skipped(g: h5py.Group) -> list:
    return list(zip(read_strings(g[SKIPPED_PATH]), read_strings(g[SKIPPED_REASON])))


# ---------------------------------------------------------------------------- root attributes
def write_root_attrs(f: h5py.File, attrs: dict) -> None:
    version = SHARDED_VERSION if attrs.get(ATTR_ITEMS, ITEMS_IMAGES) != ITEMS_IMAGES else FORMAT_VERSION
    f.attrs.update({ATTR_FORMAT: FORMAT, ATTR_VERSION: version, **attrs})


def item_kind(attrs) -> str:
    """"images" or "vectors" (ATTR_ITEMS; absent: images); anything else is refused."""
    kind = text_attr(attrs, ATTR_ITEMS) if ATTR_ITEMS in attrs else ITEMS_IMAGES
    if kind not in ITEM_KINDS:
        raise LayoutError(f"unknown item kind {kind!r} (this hashae knows {', '.join(ITEM_KINDS)})")
    return kind


def check_root(f: h5py.File) -> int:
    """The collection's code length, after checking the format and its version."""
    if f.attrs.get(ATTR_FORMAT) != FORMAT:
        raise LayoutError(f"not a hashae collection (no {ATTR_FORMAT}='{FORMAT}' attribute)")
    newer = ATTR_SHARDS in f.attrs or ATTR_ITEMS in f.attrs
    _check_version(f.attrs, SHARDED_VERSION if newer else FORMAT_VERSION, "collection", f.attrs.get(ATTR_HASHAE))
    item_kind(f.attrs)
    from ..codes import check_bits
    try:
        return check_bits(f.attrs.get(ATTR_BITS))
    except ValueError as e:
        raise LayoutError(str(e)) from None


def text_attr(attrs, name: str) -> str:
    v = attrs.get(name, "")
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return v if isinstance(v, str) else ""


def plain_attrs(attrs) -> dict:
    """Attributes as Python values (numpy scalars unwrapped, bytes decoded)."""
    out = {}
    for k, v in attrs.items():
        out[k] = v.item() if isinstance(v, np.generic) else (v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
    return out


def _check_version(attrs, supported: int, what: str, writer=None) -> None:
    version = attrs.get(ATTR_VERSION)
    if isinstance(version, (int, np.integer)) and not isinstance(version, bool) and version == supported:
        return
    shown = version.item() if isinstance(version, np.generic) else version
    if isinstance(shown, int) and shown > supported:
        by = f" by hashae {text_attr(attrs, ATTR_HASHAE) or writer}" if (writer or text_attr(attrs, ATTR_HASHAE)) else ""
        raise LayoutError(f"{what} format version {shown} (written{by}); this hashae {__version__} reads version "
                          f"{supported}: upgrade hashae to open it")
    raise LayoutError(f"{what} format version {shown!r}; this hashae reads version {supported}")


# ---------------------------------------------------------------------------- model
def write_model(g: h5py.Group, state: ModelState) -> None:
    """A model group: format attributes, the config that rebuilds the network, the training
    record, and ``weights/<tensor>`` float32 datasets (no pickle anywhere)."""
    g.attrs[ATTR_FORMAT] = MODEL_FORMAT
    g.attrs[ATTR_VERSION] = MODEL_VERSION
    g.attrs[ATTR_HASHAE] = __version__
    g.attrs[MODEL_ATTR_CONFIG] = json.dumps(without_image_defaults(asdict(state.model)), sort_keys=True)
    g.attrs[MODEL_ATTR_TRAINING] = json.dumps(without_image_defaults(asdict(state.training), state.model.kind),
                                              sort_keys=True)
    w = g.create_group(WEIGHTS)
    for name, array in state.weights.items():
        w.create_dataset(name, data=np.asarray(array, np.float32))


def model_settings(g: h5py.Group) -> dict:
    """The flat dict of a model group's settings (config and training record together, as
    ``HasherConfig`` fields), not validated; raises LayoutError if they are not JSON objects."""
    try:
        data = parse_json_object(g.attrs.get(MODEL_ATTR_CONFIG), "model config")
        if MODEL_ATTR_TRAINING in g.attrs:
            data = {**parse_json_object(g.attrs.get(MODEL_ATTR_TRAINING), "training record"), **data}
    except ValueError as e:
        raise LayoutError(str(e)) from None
    return data


def read_model(g: h5py.Group) -> ModelState:
    """A model group written by ``write_model`` (or hashae 0.1's ``save``): the config is
    validated and every dataset checked against the shapes the network it builds has (on
    torch's meta device, within the weight and activation budgets) before any is read."""
    from ..model.network import param_shapes
    if g.attrs.get(ATTR_FORMAT) != MODEL_FORMAT or WEIGHTS not in g:
        raise LayoutError(f"{g.file.filename}:{g.name} holds no hashae model")
    _check_version(g.attrs, MODEL_VERSION, "model")
    try:
        cfg = HasherConfig.from_dict(model_settings(g))
        shapes = param_shapes(cfg.model)
    except (TypeError, ValueError) as e:
        raise LayoutError(str(e)) from None
    weights = g[WEIGHTS]
    if not isinstance(weights, h5py.Group) or set(weights.keys()) != set(shapes):
        raise LayoutError("stored weights do not match the model config (missing or extra tensors)")
    state = {}
    for name, shape in shapes.items():
        ds = weights[name]
        if not isinstance(ds, h5py.Dataset) or ds.shape != shape or ds.dtype.kind != "f":
            raise LayoutError(f"stored weight {name!r} has shape {getattr(ds, 'shape', None)}, expected {shape} float")
        arr = np.asarray(ds[()], dtype=np.float32)
        if not np.isfinite(arr).all():
            raise LayoutError(f"stored weight {name!r} has non-finite values")
        state[name] = arr
    return ModelState(cfg.model, cfg.training, state)


def save_model_file(path, state: ModelState) -> None:
    write_file(path, lambda f: write_model(f, state))


def write_file(path: str, build) -> None:
    """Write the HDF5 file that ``build(h5py.File)`` makes to ``path``, fsynced. HDF5 writes
    through FailSafeFile, so it never meets a write error (on which h5py can crash the process
    while closing the file); the first one is raised here, after HDF5 is done."""
    sink = FailSafeFile(path)
    try:
        with h5py.File(sink, "w", libver=("earliest", "v110")) as f:
            build(f)
        sink.fsync()
    finally:
        sink.close()
    if sink.error is not None:
        raise sink.error


def open_file(path) -> h5py.File:
    """Open an HDF5 file for reading, refusing anything but a regular file first (opening a
    FIFO would block) and then any structure check_structure refuses."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise LayoutError(f"{path}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise LayoutError(f"{path}: not a regular file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise LayoutError(f"{path}: not a readable HDF5 file ({str(e).splitlines()[0][:200]})") from None
    try:
        check_structure(f)
    except BaseException:
        f.close()
        raise
    return f


def load_model_file(path) -> ModelState:
    with open_file(path) as f:
        return read_model(f)

