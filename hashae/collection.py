"""Collection: an indexed image folder, or a vector file, in one HDF5 file (layout in
storage/layout.py).

``Collection(path).index(folder)`` trains a model if the store has none, encodes new and changed
files, drops deleted ones and commits atomically (indexer.py); ``index_vectors(file)`` does the
same for the rows of a vector file (vector_indexer.py); ``search`` / ``query`` /
``radius_search`` answer similarity queries through a HammingIndex built from the stored codes;
``clusters`` and ``duplicates`` group them (search/).
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from typing import TYPE_CHECKING, NamedTuple, Sequence

import numpy as np

from .codes import as_codes, pack
from .ingest.decode import Decoded
from .ingest.perceptual import Perceptual
from .indexer import SEGMENT_ITEMS, IndexReport, IndexRun, run_index
from .storage import Items, StoreBusy, StoreContents, StoreError, StoreLock, StoreReader, write_store
from .storage.items import ALL_HASH_FIELDS, HASH_FIELDS

if TYPE_CHECKING:
    from .search.rank import Queries

__all__ = ["Collection", "Hit", "IndexReport", "LabelVote", "MapLayout", "Outlier", "StoreBusy", "StoreError",
           "default_store", "groups_from_labels"]
MAP_ITEMS = 1000  # items on a map by default: a 1,632-pixel square of 48-pixel pictures


class Hit(NamedTuple):
    path: str
    distance: int  # Hamming distance between the query's code and the item's stored code
    id: int
    score: float | None = None  # what ordered the hits, lower is closer (search.rank); None: Hamming order


class Outlier(NamedTuple):
    path: str
    score: float  # higher: fits the collection less
    id: int


class LabelVote(NamedTuple):
    """One query's k-NN label (Collection.label_votes): the winning ``label`` (None: no labelled
    neighbour), each label's number of ``votes`` and its ``share`` of the vote weight (the label
    is the largest share, which need not be the most votes: nearer neighbours weigh more)."""

    query: object  # the query's path, or its row number when the queries were an array
    label: str | None
    votes: dict  # {label: neighbours that voted for it}
    share: dict  # {label: its fraction of the summed vote weight}

    def as_json(self) -> dict:
        """What ``hashae classify --json`` prints for it: {"query", "label", "votes"}."""
        return {"query": self.query, "label": self.label, "votes": self.votes}


class MapLayout(NamedTuple):
    """Where items go on a map: item ``ids[i]`` in grid cell ``cells[i]`` (column, row) of a
    ``side`` x ``side`` grid."""

    ids: np.ndarray
    cells: np.ndarray
    side: int


def default_store(folder: str) -> str:
    """``indexes/<folder name>.h5``, relative to the current directory."""
    name = os.path.basename(os.path.normpath(os.path.abspath(folder))) or "collection"
    return os.path.join("indexes", f"{name}.h5")


class Collection:
    """An image collection stored in one HDF5 file at ``path`` (created by the first ``index``)."""

    def __init__(self, path: str | os.PathLike, folder: str | os.PathLike | None = None):
        """``folder``: where the items' image files are, for what reads them (contact sheets);
        default: the folder the collection was indexed from, if this user indexed it here."""
        self.path = os.path.expanduser(os.fspath(path))
        self.images_folder = os.path.abspath(os.path.expanduser(os.fspath(folder))) if folder else None
        self._reader: StoreReader | None = None
        self._index = None
        self._model = None
        self._labels = None
        self._ranker = None

    # ------------------------------------------------------------------ reading
    @classmethod
    def open(cls, path, folder=None) -> "Collection":
        """Open an existing collection, validating the file (raises StoreError)."""
        c = cls(path, folder)
        c.reader  # noqa: B018 - validates now
        return c

    @classmethod
    def create(cls, path, codes: np.ndarray, paths, *, folder: str = "", model=None,
               phash: np.ndarray | Perceptual | None = None) -> "Collection":
        """A collection from codes you already have: ``codes`` (N, bits/8) uint8 and ``paths``
        (a sequence of N relative paths; slices of it are read a block at a time), optionally
        the perceptual hashes for verified duplicates: ``hashae.perceptual_hashes`` of the
        images (finds mirrored and greyscale copies too), or the pHashes alone (N, 8) uint8
        from ``hashae.phash``. Refuses to overwrite an existing file."""
        codes = as_codes(codes)
        if len(codes) != len(paths):
            raise ValueError(f"{len(codes)} codes but {len(paths)} paths")
        path = os.path.expanduser(os.fspath(path))
        if os.path.exists(path):
            raise FileExistsError(f"{path} already exists")
        zeros = np.zeros(len(codes), np.int64)
        if isinstance(phash, Perceptual):
            if len(phash) != len(codes):
                raise ValueError(f"{len(codes)} codes but {len(phash)} perceptual hashes")
            hashes = {name: getattr(phash, name) for name in ALL_HASH_FIELDS}
        else:
            hashes = {"phash": None if phash is None else as_codes(phash, 8)}
        items = Items(paths, zeros, zeros, codes, **hashes)
        state = model.state() if model is not None else None
        with StoreLock(path):
            write_store(path, StoreContents(bits=codes.shape[1] * 8, items=items, folder=folder, model=state))
        return cls.open(path)

    @property
    def reader(self) -> StoreReader:
        if self._reader is None:
            self._reader = StoreReader(self.path)
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader = self._index = self._model = self._labels = self._ranker = None

    def __enter__(self) -> "Collection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.reader.n

    @property
    def bits(self) -> int:
        return self.reader.bits

    @property
    def folder(self) -> str:
        return self.reader.folder

    @property
    def codes(self) -> np.ndarray:
        return self.reader.codes()

    @property
    def phash(self) -> np.ndarray | None:
        """64-bit perceptual hashes (N, 8) uint8 of the items, used to confirm near duplicates;
        None for a collection made from codes alone."""
        return self.reader.phash()

    @property
    def perceptual(self) -> Perceptual | None:
        """Every perceptual hash of the items (pHash, the mirror's pHash, dHash, and the centre's
        where stored), which the near-duplicate check and ranking use; None for a collection
        without the first three (from codes alone, or indexed by an earlier hashae: the next
        ``index`` run adds them)."""
        return self.reader.perceptual()

    def codes_of(self, ids) -> np.ndarray:
        """The packed codes of the given item ids, (len(ids), bits // 8) uint8."""
        return np.stack([self.reader.code(int(i)) for i in ids]) if len(ids) else np.empty((0, self.bits // 8),
                                                                                          np.uint8)

    def paths(self, ids=None) -> list:
        """Relative paths of all items, or of the given item ids (in that order)."""
        return self.reader.paths(ids)

    @property
    def skipped(self) -> list:
        return self.reader.skipped()

    @property
    def model(self):
        """The collection's SemanticHasher (StoreError if it has none or it is damaged)."""
        if self._model is None:
            from .hasher import SemanticHasher
            self._model = SemanticHasher.from_state(self.reader.model_state())
        return self._model

    @property
    def kind(self) -> str:
        """"images" (items are files of a folder) or "vectors" (rows of a vector file)."""
        return self.reader.kind

    def _require_images(self, what: str) -> None:
        if self.kind != "images":
            raise StoreError(f"{self.path} is a collection of vectors: {what} needs image files")

    def item_path(self, rel: str) -> str:
        """Absolute path of an item's image file. The folder is the one given to the collection
        or, failing that, the stored one only if this user indexed it here (storage/seal.py):
        a file from someone else must not choose what is read from this disk. Paths that would
        leave the folder (absolute or '..') are refused."""
        if not rel or os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/"):
            raise StoreError(f"refusing item path outside the collection folder: {rel!r}")
        return os.path.join(self.images_root(), rel)

    def images_root(self) -> str:
        """The folder the items' image files are read from (see item_path)."""
        self._require_images("reading an item")
        if self.images_folder:
            return self.images_folder
        if not self.reader.folder_trusted:
            raise StoreError(f"{self.path} names the folder {self.folder!r}, but it was not indexed by you on "
                             "this machine (or by an older hashae): name the images' folder (--folder)")
        return self.folder

    def info(self, skipped_files: bool = False) -> dict:
        """What `hashae info --json` prints (with ``skipped_files``: every skipped file and why)."""
        r = self.reader
        a = r.attrs()
        out = {
            "path": self.path, "folder": r.folder, "kind": r.kind, "items": r.n, "skipped": r.n_skipped,
            "bits": r.bits, "format_version": a.get("format_version"),
            "created": a.get("created"), "updated": a.get("updated"),
            "file_size": os.path.getsize(self.path), "model": r.model_config(),
            "optional": r.optional,
        }
        if r.kind == "vectors":  # the file naming its rows, if any
            out["ids"] = r.ids or None
        if r.shards is not None:  # a sharded collection: its part files, and the bytes of all
            folder = os.path.dirname(os.path.abspath(self.path))
            out["parts"] = [{"path": name, "items": rows} for name, rows in r.shards]
            out["file_size"] += sum(os.path.getsize(os.path.join(folder, name)) for name, _ in r.shards)
        if skipped_files:
            out["skipped_files"] = [{"path": p, "reason": why} for p, why in self.skipped]
        return out

    @property
    def generation(self) -> str:
        """Changes at every commit of the file."""
        return self.reader.generation

    def item_file(self, item_id: int) -> str:
        """The image file of item ``item_id`` for serving it: inside the images' folder (see
        item_path) also once symbolic links are resolved; StoreError otherwise."""
        [rel] = self.paths([item_id])
        root, real = os.path.realpath(self.images_root()), os.path.realpath(self.item_path(rel))
        if not real.startswith(root.rstrip(os.sep) + os.sep):
            raise StoreError(f"item {item_id} leads outside the collection's folder")
        return real

    # ------------------------------------------------------------------ search
    # k-NN switches to an inverted-file index from this many items, visiting ``nprobe`` lists
    # per query (set either on a collection before its first search; None: search/index.py's
    # IVF_MIN_ITEMS and NPROBE)
    ivf_min_items: int | None = None
    nprobe: int | None = None

    @property
    def hamming_index(self):
        """A HammingIndex over the stored codes, built on first use: one part per part file of a
        sharded collection (HammingIndex.build)."""
        from .search import HammingIndex
        if self._index is None:
            if not len(self):
                self._index = HammingIndex(self.bits)
            else:
                codes = self.codes
                bounds = np.cumsum([rows for _, rows in self.reader.shards or []])[:-1]
                from .search.index import IVF_MIN_ITEMS, NPROBE
                self._index = HammingIndex.build(np.split(codes, bounds), self.ivf_min_items or IVF_MIN_ITEMS,
                                                 self.nprobe or NPROBE)
        return self._index

    def encode_files(self, files: Sequence[str]) -> np.ndarray:
        """Codes of image files with the collection's model; an unreadable file raises ImageError."""
        return self.queries(list(files)).codes

    def search_codes(self, codes: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        return self.hamming_index.search(as_codes(codes, self.bits // 8), k)

    @property
    def ranker(self):
        """The two-stage ranker over the stored codes, perceptual hashes and channel statistics
        (search.rank), built on first use."""
        if self._ranker is None:
            from .search.rank import Ranker, Scoring
            scoring, pictures = Scoring(), self.kind == "images"
            if self.reader.has_model():
                scoring = Scoring(noise_std=self.model.config.noise_std, stats_weight=self._stats_weight())
            stats = self.reader.stats() if pictures and scoring.stats_weight else None
            if stats is not None and not np.isfinite(stats).all(1).any():  # none known: an earlier hashae's items
                stats = None
            self._ranker = Ranker(self.hamming_index, self.perceptual if pictures else None, scoring, stats)
        return self._ranker

    def queries(self, images):
        """What ranking needs of queries (search.rank.Queries): image files, images as an
        (n, h, w, channels) uint8 array, or vectors (n, d) for a collection of vectors, through
        the collection's model: codes, code-layer inputs and, for images, perceptual hashes.
        An unreadable file raises ImageError; Queries are returned as they are."""
        from .search.rank import Queries
        if isinstance(images, Queries):
            return images
        if _is_paths(images):
            return self.picture_queries(self._decode_queries(images))
        images = np.asarray(images)
        cfg = self.model.config
        if not cfg.is_vector and images.ndim == 4 and images.dtype == np.uint8:
            return self.picture_queries([Decoded(im, None) for im in images])
        return self._encoded(images, None)

    def picture_queries(self, pictures: Sequence) -> Queries:
        """Queries of decoded pictures (ingest.decode.Decoded: the RGB square at the model's
        size and, below 32 pixels, the thumbnail that perceptual hashes are taken from): the
        model's input and the hashes as indexing computes them."""
        from .ingest.decode import model_input
        from .ingest.perceptual import perceptual_hashes
        cfg = self.model.config
        if not len(pictures):
            return self._encoded(np.empty((0, cfg.image_size, cfg.image_size, cfg.channels), np.uint8), None)
        rgb = np.stack([p.rgb for p in pictures])
        thumbs = np.stack([p.rgb if p.thumb is None else p.thumb for p in pictures])
        return self._encoded(model_input(rgb, cfg.channels), perceptual_hashes(thumbs))

    def _stats_weight(self) -> float:
        """The ranking's statistics term for this collection's model (search.rank.
        stats_weight_for): colour pictures weigh their channel statistics; grey ones and vectors
        do not."""
        from .search.rank import stats_weight_for
        cfg = self.model.config
        return 0.0 if cfg.is_vector else stats_weight_for(cfg.channels)

    def _encoded(self, inputs: np.ndarray, hashes):
        from .search.rank import Queries
        logits = self.model.logits(inputs)
        # only a ranking that weighs them reads a query's statistics
        stats = self.model.statistics(inputs) if self._stats_weight() else None
        return Queries(pack(logits > 0), logits, hashes, stats)

    def _decode_queries(self, files) -> list:
        """Image files decoded as indexing decodes them (ingest.decode.Decoded)."""
        from .ingest import ImageError
        from .ingest.decode import decode_file
        cfg = self.model.config
        if cfg.is_vector:
            raise ValueError(f"{self.path} holds vectors: query it with vectors (hashae query --vector Q.npy, "
                             "Collection.search_vectors)")
        out = []
        for f in files:
            if not os.path.lexists(f):
                raise ImageError(f"{f}: no such file")
            try:
                out.append(decode_file(f, cfg.image_size, thumb=True))
            except ImageError as e:
                raise ImageError(f"{f}: {e}") from None
        return out

    def search(self, images, k: int = 10, hamming_only: bool = False) -> list:
        """Nearest items of each query (image files, images as an array, or ``queries``): lists of Hit,
        ordered by the two-stage ranking (search.rank: a Hamming shortlist re-ranked by the
        query's real-valued code and, for images, perceptual hashes, so edited copies come
        first); ``hamming_only``: by Hamming distance alone, ties in item order."""
        ranked = self.ranker.knn(self.queries(images), k, hamming_only)
        return [self._ranked_hits(r) for r in ranked]

    def search_vectors(self, vectors, k: int = 10) -> list:
        """Nearest items of each row of ``vectors`` (n, d), encoded by the collection's vector
        model: lists of Hit."""
        return self.search(self._vectors(vectors), k)

    def query_vectors(self, vectors, k: int | None = 10, radius: int | None = None,
                      hamming_only: bool = False) -> list:
        """What ``hashae query --vector Q.npy --json`` prints: [{"query": row, "hits": [{"path",
        "distance", "score"}]}], the query being the row number in ``vectors``."""
        vectors = self._vectors(vectors)
        if radius is not None:
            results = self.radius_search(vectors, radius, limit=k, hamming_only=hamming_only)
        else:
            results = self.search(vectors, k or 10, hamming_only=hamming_only)
        return [{"query": r, "hits": [_hit_json(h) for h in hits]} for r, hits in enumerate(results)]

    def _vectors(self, vectors) -> np.ndarray:
        cfg = self.model.config
        if not cfg.is_vector:
            raise ValueError(f"{self.path} holds images: query it with image files (a model for images takes "
                             "no vectors)")
        vectors = np.asarray(vectors)
        if vectors.ndim == 1:
            vectors = vectors[None]
        return vectors

    def similar(self, item_id: int, k: int = 10, exclude_self: bool = False, hamming_only: bool = False) -> list:
        """The nearest items of a stored item (its stored code is the query; its perceptual
        hashes bring its copies first), as Hit; with ``exclude_self``, the item itself is left out."""
        from .search.rank import Queries
        every = None if hamming_only else self.ranker.hashes  # read once, with the ranker
        hashes = None if every is None else Perceptual(*(getattr(every, f)[[item_id]] for f in HASH_FIELDS))
        stats = None if hamming_only or self.ranker.stats is None else self.ranker.stats[[item_id]]
        queries = Queries(self.codes_of([item_id]), None, hashes, stats)
        [ranked] = self.ranker.knn(queries, k + exclude_self, hamming_only)
        return [h for h in self._ranked_hits(ranked) if not (exclude_self and h.id == item_id)][:k]

    def radius_search(self, images, radius: int, limit: int | None = None, hamming_only: bool = False) -> list:
        """All items within Hamming distance ``radius`` of each query, best first (``search``'s
        order), the first ``limit`` of them."""
        ranked = self.ranker.within(self.queries(images), radius, limit, hamming_only)
        return [self._ranked_hits(r) for r in ranked]

    def _ranked_hits(self, ranked) -> list:
        """search.rank.Ranked as Hit records (the score rounded; None in Hamming order)."""
        scores = [None] * len(ranked.ids) if ranked.score is None else [round(float(s), 4) for s in ranked.score]
        return [Hit(p, int(d), int(i), s)
                for p, d, i, s in zip(self.paths(ranked.ids), ranked.distance, ranked.ids, scores)]

    def query(self, files: Sequence[str], k: int | None = 10, radius: int | None = None,
              exclude_self: bool = False, hamming_only: bool = False) -> list:
        """What ``hashae query --json`` prints: [{"query", "hits": [{"path", "distance", "score"}]}]
        ("score" where the two-stage ranking ordered the hits, see ``search``).

        A query file that is itself an item is listed first among the hits at distance 0, or,
        with ``exclude_self``, left out (its neighbours are what is asked for)."""
        files = list(files)
        extra = 1 if exclude_self else 0
        if radius is not None:
            results = self.radius_search(files, radius, limit=None if k is None else k + extra,
                                         hamming_only=hamming_only)
        else:
            results = self.search(files, (k or 10) + extra, hamming_only=hamming_only)
        out = []
        for f, hits in zip(files, results):
            hits = self._self_first(f, hits, None if k is None else k + extra)
            if exclude_self and hits and hits[0].distance == 0 and hits[0].path == self._relative(f):
                hits = hits[1:]
            hits = hits if k is None and radius is not None else hits[:k or 10]
            out.append({"query": f, "hits": [_hit_json(h) for h in hits]})
        return out

    def _relative(self, file: str) -> str | None:
        """``file`` as an item path of this collection, if it lies inside its folder."""
        try:
            rel = os.path.relpath(os.path.abspath(file), self.folder).replace(os.sep, "/")
        except ValueError:
            return None
        return None if rel.startswith("../") else rel

    def _self_first(self, file: str, hits: list, k: int | None) -> list:
        rel = self._relative(file)
        if rel is None or not hits or hits[0].distance > 0:
            return hits
        own = [h for h in hits if h.path == rel]
        if own:
            return own + [h for h in hits if h.path != rel]
        row = self.reader.find_path(rel)  # the item shares its code with more than k others
        if row is None or not np.array_equal(self.reader.code(row), self.reader.code(hits[0].id)):
            return hits  # not indexed, or the file changed since: its code is not the query's
        return [Hit(rel, 0, row, hits[0].score)] + hits[: (k - 1) if k else None]

    # ------------------------------------------------------------------ grouping
    def cluster_labels(self, method: str | None = None, *, radius: int | None = None, k: int | None = None,
                       **kwargs) -> np.ndarray:
        """hashae.cluster over the stored codes, with the collection's defaults filled in: the
        method ("graph" when None), radius bits // 32 for "radius", k = sqrt(N / 2) for "kmeans"
        (what `hashae cluster` and the server use)."""
        from .search.clustering import DEFAULT_METHOD, cluster, default_radius
        method = method or DEFAULT_METHOD
        if method == "radius" and radius is None:
            radius = default_radius(self.bits)
        if method == "kmeans" and k is None:
            k = max(1, int(round((len(self) / 2) ** 0.5)))
        return cluster(self.codes, method, radius=radius, k=k, **kwargs)

    def clusters(self, method: str | None = None, **kwargs) -> list:
        """Groups of item paths, largest first (cluster_labels; see hashae.cluster for methods)."""
        return groups_from_labels(self.cluster_labels(method, **kwargs), self.paths())

    def ids_of(self, groups: list) -> list:
        """The item ids of groups of paths (as ``clusters`` and ``duplicates`` give), int64 arrays."""
        rows = {p: i for i, p in enumerate(self.paths())}
        return [np.array([rows[p] for p in g], np.int64) for g in groups]

    def duplicates(self, radius: int | None = None, verify: bool = True, confirm: int | None = None,
                   progress: bool | None = None) -> list:
        """Groups (size >= 2) of near-duplicate items, largest first: items joined when,
        with ``verify``, the perceptual check passes: their pHash and dHash (the closest reading
        of as-is, mirrored, and the pictures' centres: search.duplicates.perceptual_distance)
        differ in at most ``confirm`` of 128 bits (default 18) with codes
        that agree on three quarters of their bits, in at most half of that whatever the codes
        say (greyscale copies), or in at most ``confirm`` + 6 with the codes' distance added
        (crops, rotations). Candidates are codes within ``radius`` (default bits // 16, e.g. 4
        at 64 bits) and nearly equal hashes. A collection from an earlier hashae, with the pHash
        alone, uses the earlier rule (codes within ``radius`` whose pHashes
        differ in at most ``confirm`` of 64 bits, default 12) until its next ``index`` run
        (``search.near_duplicates``). ``verify=False`` groups by codes alone.
        ``progress``: a bar on stderr (default: when it is a terminal)."""
        from .search import duplicate_radius, near_duplicates
        r = duplicate_radius(self.bits) if radius is None else int(radius)
        if r < 0:
            raise ValueError("radius must be >= 0")
        hashes = None
        if verify:  # every perceptual hash, else (an earlier hashae's file) the pHash alone
            every = self.perceptual
            hashes = every if every is not None else self.phash
        if verify and hashes is None and self.kind == "images":
            warnings.warn(f"{self.path} has no perceptual hashes (built from codes alone or by an earlier "
                          "hashae; re-index its folder to add them): groups are by semantic codes only, "
                          "so look-alikes may be joined", stacklevel=2)
        labels = near_duplicates(self.codes, r, hashes, confirm, progress=progress)
        return [g for g in groups_from_labels(labels, self.paths()) if len(g) >= 2]

    def by_centre(self, groups: list) -> list:
        """Each group (lists of paths) with its members nearest the group's centre code first."""
        from .search.clustering import centre_order
        codes = self.codes
        return [[g[j] for j in centre_order(codes[ids])] for g, ids in zip(groups, self.ids_of(groups))]

    KEEP_RULES = ("largest", "oldest", "sharpest")

    def keep_plan(self, groups: list, rule: str = "largest") -> list:
        """For each group of duplicates (lists of paths, from ``duplicates``), the file to keep
        by ``rule`` and how far each member is from it: [{"cluster", "paths", "keep",
        "distances": [{"path", "code", "phash", "perceptual"}]}] (``perceptual``: the duplicate
        rule's D, pHash + dHash bits of 128, either orientation or against a centre; None
        without those hashes). ``largest``: the biggest file; ``oldest``: the earliest
        modification time; ``sharpest``: the most high-frequency detail (reads the
        images). Ties go to the first path. hashae never deletes anything."""
        if rule not in self.KEEP_RULES:
            raise ValueError(f"keep rule must be one of {', '.join(self.KEEP_RULES)}, got {rule!r}")
        from .codes import hamming
        from .search.duplicates import perceptual_distance as seen
        codes, every = self.codes, self.perceptual
        hashes = self.phash if every is None else every.phash
        sizes, mtimes = self.reader.sizes(), self.reader.mtimes()
        plan = []
        for n, (group, ids) in enumerate(zip(groups, self.ids_of(groups))):
            if rule == "largest":
                score = sizes[ids].astype(float)
            elif rule == "oldest":
                score = -mtimes[ids].astype(float)
            else:
                from .ingest import sharpness
                score = np.array([sharpness(self.item_path(p)) for p in group])
            best = int(np.argmax(score))  # first of the best: argmax keeps the earliest
            keep = ids[best]
            distances = [{"path": p, "code": int(hamming(codes[i], codes[keep])),
                          "phash": None if hashes is None else int(hamming(hashes[i], hashes[keep])),
                          "perceptual": None if every is None else int(seen(every, np.array([i]), np.array([keep]))[0])}
                         for p, i in zip(group, ids)]
            plan.append({"cluster": n, "paths": list(group), "keep": group[best], "distances": distances})
        return plan

    # ------------------------------------------------------------------ what else the model knows
    def outliers(self, n: int = 20, method: str | None = None) -> list:
        """The ``n`` items that fit the collection least (0: every item), highest score first,
        as Outlier(path, score, id). Scores come from each item's reconstruction error through
        its code, its distances to its nearest codes and perceptual hashes in the collection and
        how unusual its channel statistics are (hashes and statistics: images only;
        search.outliers; ``method`` picks one of its scores, default search.outliers.DEFAULT,
        VECTOR_DEFAULT for vectors). A collection without stored errors (codes alone, or an
        earlier hashae: re-index to add them) is scored by code distances, with a warning; one
        without channel statistics (an earlier hashae) without them, with a warning."""
        from .search.outliers import DEFAULT, VECTOR_DEFAULT, outlier_scores
        method = method or (DEFAULT if self.kind == "images" else VECTOR_DEFAULT)
        if n < 0:
            raise ValueError("n must be >= 0 (0: every item)")
        error = _typical_where_unknown(self.reader.errors())
        if error is None and method != "knn":
            warnings.warn(f"{self.path} has no reconstruction errors (built from codes alone or by an earlier hashae; "
                          "re-index its folder to add them): items are scored by distances between codes only",
                          stacklevel=2)
            method = "knn"
        phash = self.phash if self.kind == "images" else None
        stats = self.reader.stats() if self.kind == "images" and error is not None else None
        if stats is not None and np.isnan(stats).all():
            stats = None
        if stats is None and self.kind == "images" and method == "joint":
            warnings.warn(f"{self.path} has no channel statistics (written by an earlier hashae; re-index its folder "
                          "to add them): items are scored without them", stacklevel=2)
        residual = None
        if self.kind == "images" and error is not None:
            residual = _typical_where_unknown(self.reader.residuals())
        scores = outlier_scores(error, self.codes, method, phash=phash, stats=stats, residual=residual)
        order = np.argsort(-scores, kind="stable")[: n or None]
        return [Outlier(p, float(scores[i]), int(i)) for p, i in zip(self.paths(order), order)]

    def labels(self, level: int = 1) -> tuple[np.ndarray, list]:
        """Each item's label as an index into the sorted label names, and the names. The label is
        the ``level``-th folder of the item's relative path: 1, the first (one sub-folder per
        class); 2, the one below it (train/ants, val/ants). -1 for items with fewer folders."""
        if level < 1:
            raise ValueError(f"level must be at least 1 (1: each item's first folder), got {level}")
        if self._labels is None:
            self._labels = {}
        if level not in self._labels:
            folders = [p.split("/")[:-1] for p in self.paths()]
            found = [f[level - 1] if len(f) >= level else None for f in folders]
            names = sorted({f for f in found if f is not None})
            index = {name: i for i, name in enumerate(names)}
            self._labels[level] = np.array([index.get(f, -1) for f in found], np.int64), names
        return self._labels[level]

    def classify(self, images, k: int = 10, level: int = 1) -> list:
        """k-NN labels in code space: what ``hashae classify --json`` prints, [{"query", "label",
        "votes": {label: count}}] (label_votes, without the shares)."""
        return [v.as_json() for v in self.label_votes(images, k, level)]

    def label_votes(self, images, k: int = 10, level: int = 1) -> list:
        """Each query's LabelVote. ``images``: image files (or an array; queries are then row
        numbers). Labels are the items' first folders (``labels``; ``level`` 2 the folders below
        them); each query takes the label with the most vote weight among its k nearest labelled
        items as ``search`` ranks them, with the perceptual distance weighed in for images
        (search.vote.PERCEPTUAL_WEIGHT; items tied with the k-th vote too). A query that is itself
        an item does not vote for itself."""
        from .search.vote import PERCEPTUAL_WEIGHT, TIE_WIDTH, knn_vote, ranked_rows
        if k < 1:
            raise ValueError("k must be >= 1")
        labels, names = self.labels(level)
        if not names and level > 1:
            raise ValueError(f"{self.path}: no labels at level {level} (no item's path has {level} folders)")
        if not names:
            raise ValueError(f"{self.path}: no labels (labels are the first folder of each item's path: put the "
                             "images of each class in a sub-folder of its own and index the parent folder)")
        files = _is_paths(images)
        queries = self.queries(list(images) if files else images)
        names_q = [os.fspath(f) for f in images] if files else list(range(len(queries)))
        width = min(len(self), k * TIE_WIDTH + 1)
        ranker = self.ranker.with_scoring(dataclasses.replace(self.ranker.scoring, perceptual_weight=PERCEPTUAL_WEIGHT))
        ranked = ranker.knn(queries, width)
        if files:  # leave each query that is an item out of its own vote
            for r, f in enumerate(names_q):
                rel = self._relative(f)
                row = self.reader.find_path(rel) if rel is not None else None
                if row is not None and np.array_equal(self.reader.code(row), queries.codes[r]):
                    ranked[r] = ranked[r].without(row)
        dist, ids = ranked_rows(ranked, width)
        votes = knn_vote(dist, ids, labels, len(names), k, self.bits)
        total = votes.weights.sum(1, keepdims=True)
        shares = np.divide(votes.weights, total, out=np.zeros_like(votes.weights), where=total > 0)
        return [LabelVote(q, names[w] if w >= 0 else None, {names[j]: int(c) for j, c in enumerate(counts) if c},
                          {names[j]: float(f) for j, (c, f) in enumerate(zip(counts, share)) if c})
                for q, w, counts, share in zip(names_q, votes.label, votes.counts, shares)]

    def map_layout(self, max_items: int = MAP_ITEMS, seed: int = 0) -> MapLayout:
        """Grid places for a map of the collection (search.projection: t-SNE of the codes, snapped
        to a grid), of at most ``max_items`` items: a seeded sample above that, so that time and
        memory stay bounded whatever the collection's size."""
        from .search.projection import embed_2d, grid_cells
        if max_items < 1:
            raise ValueError("max_items must be >= 1")
        n = len(self)
        ids = np.arange(n) if n <= max_items else np.sort(np.random.default_rng(seed).choice(n, max_items,
                                                                                             replace=False))
        cells, side = grid_cells(embed_2d(self.codes_of(ids) if n > max_items else self.codes, seed))
        return MapLayout(ids, cells, side)

    def map(self, out: str, max_items: int = MAP_ITEMS, seed: int = 0) -> str:
        """Write a PNG map of the collection to ``out``: thumbnails placed by their codes, similar
        pictures side by side (map_layout). Returns ``out``."""
        from .sheet import map_sheet
        self._require_images("a map of thumbnails")
        layout = self.map_layout(max_items, seed)
        return map_sheet([self.item_path(p) for p in self.paths(layout.ids)], layout.cells, layout.side, out)

    # ------------------------------------------------------------------ indexing
    def index(self, folder: str | None = None, *, bits: int | None = None, model=None, config=None,
              workers: int = 2, progress: bool | None = None, auto_channels: bool = True,
              segment: int = SEGMENT_ITEMS, follow_links: bool = False, allow_shrink: bool = False,
              effort: str | None = None, engine: str = "local", shard_items: int | None = None) -> IndexReport:
        """Index ``folder`` (default: the one this store was built from) into this store.

        Trains a model first if the store has none and no ``model`` (a SemanticHasher, or the
        path of a collection or model file) is given, using ``config`` (a HasherConfig; default:
        HasherConfig(bits=bits); or ``effort`` "fast" / "default" / "best", the recipes of
        HasherConfig.for_effort); with ``auto_channels`` a folder of grey images gets a
        one-channel model. Re-runs are incremental; an interrupted run is continued by the next
        one. Symbolic links out of the folder are skipped unless ``follow_links``; a run that
        would remove more than half of the items is refused unless ``allow_shrink``. See
        indexer.py. The folder may start with ``~``; the store's folder is created if missing.
        ``engine="ray"`` decodes, encodes and trains on the Ray cluster that ``RAY_ADDRESS``
        names, or on a new local one (``workers`` training workers; distributed/). With more
        items than ``shard_items`` (default 10 million) the collection is written as part files
        joined by HDF5 virtual datasets (storage/store.py)."""
        config = _effort_config(effort, config, bits)
        self.close()
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        report = run_index(IndexRun(store=self.path, folder=folder, bits=bits, model=model, config=config,
                                    workers=workers, progress=progress, auto_channels=auto_channels, segment=segment,
                                    follow_links=follow_links, allow_shrink=allow_shrink, engine=engine,
                                    shard_items=shard_items))
        self.close()
        return report

    def index_vectors(self, source: str | None = None, *, ids: str | None = None, bits: int | None = None,
                      model=None, config=None, effort: str | None = None, progress: bool | None = None,
                      segment: int | None = None, allow_shrink: bool = False,
                      shard_items: int | None = None) -> IndexReport:
        """Index the rows of a vector file into this store: ``source`` is a ``.npy`` array, an
        HDF5 dataset ``file.h5:/path`` or a folder of ``.npy`` parts (default: the file this
        store was built from); ``ids`` a text file of one item name per row (default: names
        from clip-retrieval metadata beside the parts, else row numbers). Trains a vector model
        if the store has none, as ``index`` does for images; re-runs encode only new and
        changed rows; an interrupted run is continued. See vector_indexer.py."""
        from .vector_indexer import VectorRun, run_vector_index
        config = _effort_config(effort, config, bits, kind="vector")
        self.close()
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        report = run_vector_index(VectorRun(store=self.path, source=source, ids=ids, bits=bits, model=model,
                                            config=config, progress=progress, segment=segment,
                                            allow_shrink=allow_shrink, shard_items=shard_items))
        self.close()
        return report


def _typical_where_unknown(measure: np.ndarray | None) -> np.ndarray | None:
    """A stored per-item measure (errors, residuals) for the outlier score: None where the
    store has none or knows none; an item whose value is unknown (NaN) counts as typical, the
    median."""
    if measure is None or np.isnan(measure).all():
        return None
    return np.where(np.isnan(measure), np.nanmedian(measure), measure)


def _effort_config(effort: str | None, config, bits: int | None, **settings):
    """``config``, or the recipe of ``effort`` (HasherConfig.for_effort) with ``bits`` and
    ``settings``; both given is an error."""
    if effort is None:
        return config
    if config is not None:
        raise ValueError("give effort or config, not both (HasherConfig.for_effort(effort, ...) combines them)")
    from .model.config import HasherConfig
    return HasherConfig.for_effort(effort, **settings, **({"bits": bits} if bits else {}))


def _hit_json(hit: Hit) -> dict:
    """A hit as query JSON: {"path", "distance"}, and "score" where the ranking used one."""
    out = {"path": hit.path, "distance": hit.distance}
    if hit.score is not None:
        out["score"] = hit.score
    return out


def groups_from_labels(labels: np.ndarray, paths: list) -> list:
    """Lists of paths per label, in label order (labels from hashae.cluster: largest first)."""
    if len(labels) == 0:
        return []
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    return [[paths[i] for i in part] for part in np.split(order, bounds)]


def _is_paths(images) -> bool:
    return isinstance(images, (list, tuple)) and all(isinstance(x, (str, os.PathLike)) for x in images)

