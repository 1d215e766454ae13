"""Clusters that follow the data: the k-nearest-neighbour graph of the codes in Hamming space,
then communities of that sparse graph (Louvain, Blondel et al. 2008: modularity maximised level
by level, igraph's C implementation).

k-means averages codes into centroids, which in Hamming space are coarse majority votes; the
neighbour graph keeps what the codes are good at, which is telling near from far. FAISS gives
each distinct code its ``neighbours`` nearest (exact up to ``EXACT_MAX`` distinct codes, an
inverted-file index above), so memory is linear in the number of codes, never all pairs.
Without ``k`` the number of groups is modularity's choice; with ``k`` the resolution is
searched until Louvain finds k communities, and the closest partition above k is merged down
greedily by modularity gain. Identical codes are one node with a loop for their multiplicity
(igraph's Leiden ignores loops when it moves nodes, so three groups of identical codes became
one; Louvain counts them).

When far fewer groups are asked for than the graph has communities of its own (more than
``SMOOTH_ABOVE`` times k at resolution 1), the groups asked for are unions of communities, and
modularity says little about which to join: the photo sets' classes there are overlapping blobs,
not chains. Then the graph smooths instead: each code becomes the mean of its ±1 bits over
``SMOOTH_STEPS`` steps of the graph's random walk (a low-pass filter on the graph, as in power
iteration clustering, Lin & Cohen 2010), and k-means groups the smoothed codes
(bench/README.md, "Clustering").

Communities cut to ``k`` by the resolution search and greedy merges leave some codes on the
wrong side of a border: each merge moves whole communities. So those k groups are polished:
each distinct code moves to the nearest group centre, in the smoothed code space, among its own
group and its neighbours' groups, until nothing moves (a few rounds of Lloyd's k-means, kept to
the graph's edges, so a code never jumps to a group it has no edge to).
"""
from __future__ import annotations

import heapq
import random
from typing import NamedTuple

import faiss
import numpy as np
from scipy.sparse import coo_matrix, csr_matrix, diags, identity

from ..codes import as_codes, unpack
from ..progress import Progress
from .clustering import relabel_by_size, unique_rows
from .index import HammingIndex

NEIGHBOURS = 5  # edges per distinct code before symmetrising (bench/cluster.py)
EXACT_MAX = 200_000  # distinct codes up to which the neighbour search is exhaustive
NPROBE = 16  # inverted lists visited per code above EXACT_MAX
RESOLUTION_STEPS = 16  # Louvain runs at most while searching the resolution that gives k groups
SMOOTH_ABOVE = 2.0  # k-means of smoothed codes when the graph has more than this many times k communities
SMOOTH_STEPS = 2  # random-walk steps of that smoothing
SMOOTH_RESTARTS = 4  # k-means runs on the smoothed codes; the one with the lowest error is kept
SMOOTH_TRAIN = 100_000  # distinct codes the k-means is fitted on at most (a seeded sample); all are assigned
POLISH_ROUNDS = 10  # rounds of moving codes to the nearest neighbouring group's centre, at most (polish)
POLISH_CHUNK = 4_096  # distinct codes whose candidate groups are weighed at once (bounded memory)


class GraphClusters(NamedTuple):
    """``labels`` (int64, one per code, 0 the largest group), the ``modularity`` of the
    partition on the neighbour graph and the ``resolution`` that found it (NaN when the groups
    came from k-means of the smoothed codes)."""

    labels: np.ndarray
    modularity: float
    resolution: float


def neighbour_graph(codes: np.ndarray, neighbours: int = NEIGHBOURS, seed: int = 0):
    """(distinct codes, inverse, symmetric weighted csr graph over the distinct codes).

    Edge weights use self-tuning scales (Zelnik-Manor & Perona 2004): exp(-d^2 / (s_i s_j)),
    s_i the distance to the code's last neighbour (at least 1), so dense and sparse regions of
    the code space count alike. A code shared by c items carries a loop of weight c - 1."""
    codes = as_codes(codes)
    uniq, inverse = unique_rows(codes)
    m = len(uniq)
    counts = np.bincount(inverse, minlength=m).astype(np.float64)
    kk = min(neighbours + 1, m)
    if kk < 2:
        return uniq, inverse, csr_matrix((counts - 1, (np.arange(m), np.arange(m))), shape=(m, m))
    d, ids = _search(uniq, kk, seed)
    src = np.repeat(np.arange(m), kk)
    d, ids = d.astype(np.float64).ravel(), ids.ravel()
    keep = (ids >= 0) & (ids != src)
    src, dst, d = src[keep], ids[keep], d[keep]
    scale = np.ones(m)
    np.maximum.at(scale, src, d)  # each code's farthest kept neighbour, at least 1
    w = np.exp(-(d * d) / (scale[src] * scale[dst]))
    graph = coo_matrix((w, (src, dst)), shape=(m, m)).tocsr()
    graph = graph.maximum(graph.T).tocsr()  # an edge either way counts once
    graph.setdiag(counts - 1)
    graph.eliminate_zeros()
    return uniq, inverse, graph


def _search(uniq: np.ndarray, kk: int, seed: int):
    """The ``kk`` nearest distinct codes of each (itself among them): exact, or with an
    inverted-file index of 4 sqrt(n) lists above EXACT_MAX codes."""
    index = HammingIndex.from_codes(uniq)
    if len(uniq) > EXACT_MAX:
        index.use_ivf(nprobe=NPROBE, nlist=int(min(65_536, 4 * np.sqrt(len(uniq)))), seed=seed)
    return index.search(uniq, kk)


def graph_clusters(codes: np.ndarray, k: int | None = None, neighbours: int = NEIGHBOURS, seed: int = 0,
                   progress: bool | None = None) -> GraphClusters:
    """Communities of the codes' neighbour graph: as many as modularity chooses, or ``k`` (from
    the smoothed codes when k is far below the graph's own number; module docstring)."""
    import igraph
    codes = as_codes(codes)
    if len(codes) == 0:
        return GraphClusters(np.empty(0, np.int64), 0.0, 1.0)
    with Progress(2, "graph", unit="steps", enabled=progress) as bar:
        uniq, inverse, graph = neighbour_graph(codes, neighbours, seed)
        bar.update(1)
        upper = graph.tocoo()
        g = igraph.Graph(n=len(uniq), edges=np.column_stack([upper.row, upper.col])[upper.row <= upper.col],
                         edge_attrs={"weight": upper.data[upper.row <= upper.col]})
        labels = _louvain(g, 1.0, seed)
        counts = np.bincount(inverse)
        if k is not None and int(labels.max()) + 1 > SMOOTH_ABOVE * k and k < len(uniq):
            labels, resolution = smoothed_kmeans(uniq, graph, counts, k, seed), float("nan")
        else:
            labels, resolution = _communities(g, k, seed, labels)
            if k is not None:  # cut to k by merges: border codes may sit in the wrong group
                labels = polish(smoothed(uniq, graph), graph, counts, labels)
        bar.update(1)
    modularity = g.modularity(labels.tolist(), weights="weight")
    return GraphClusters(relabel_by_size(labels[inverse]), float(modularity), resolution)


def _louvain(g, resolution: float, seed: int) -> np.ndarray:
    """Louvain's last level at ``resolution``, with igraph's random node order drawn from ``seed``."""
    import igraph
    igraph.set_random_number_generator(random.Random(seed))
    try:
        part = g.community_multilevel(weights="weight", resolution=resolution)
    finally:
        igraph.set_random_number_generator(random)
    return np.asarray(part.membership, np.int64)


def smoothed_kmeans(uniq: np.ndarray, graph, counts: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k groups of the distinct codes ``uniq`` (each standing for ``counts`` items): their ±1
    bits averaged over SMOOTH_STEPS steps of the random walk on ``graph`` (each code keeps a
    share of itself), then k-means weighted by the counts, best of SMOOTH_RESTARTS, fitted on at
    most SMOOTH_TRAIN of them."""
    x = smoothed(uniq, graph)
    # fitted on at most SMOOTH_TRAIN codes (FAISS samples k x max_points_per_centroid), so that a
    # large k over a million codes stays minutes, not hours; a small folder is no reason to warn
    km = faiss.Kmeans(x.shape[1], k, niter=30, nredo=SMOOTH_RESTARTS, seed=seed + 1, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=max(1, SMOOTH_TRAIN // k))
    km.train(x, weights=counts.astype(np.float32))
    return km.index.search(x, 1)[1][:, 0].astype(np.int64)


def smoothed(uniq: np.ndarray, graph) -> np.ndarray:
    """The distinct codes' ±1 bits averaged over SMOOTH_STEPS steps of the random walk on
    ``graph`` (each code keeps a share of itself), (m, bits) float32."""
    walk = graph + identity(len(uniq), format="csr")
    walk = (diags(1.0 / np.asarray(walk.sum(1)).ravel()) @ walk).astype(np.float32)
    x = unpack(uniq).astype(np.float32) * 2 - 1
    for _ in range(SMOOTH_STEPS):
        x = walk @ x
    return np.ascontiguousarray(x, np.float32)


def polish(x: np.ndarray, graph, counts: np.ndarray, labels: np.ndarray, rounds: int = POLISH_ROUNDS) -> np.ndarray:
    """Labels of the rows of ``x`` (distinct codes, each standing for ``counts`` items) after
    moving each to the nearest group centre among its own group's and its ``graph`` neighbours'
    groups, round after round, until nothing moves, a round would empty a group, or ``rounds``
    have run. Ties keep the code where it is. Returns labels numbered 0..groups-1."""
    labels = np.unique(labels, return_inverse=True)[1].astype(np.int64)
    m, groups = len(x), int(labels.max()) + 1 if len(labels) else 0
    weight = counts.astype(np.float32)  # float32 like x: no float64 copy of a million codes
    indptr, indices = graph.indptr, graph.indices
    for _ in range(rounds):
        members = csr_matrix((weight, (labels, np.arange(m))), shape=(groups, m))
        centres = (members @ x) / np.asarray(members.sum(1), np.float32)
        sq = (centres * centres).sum(1)
        moved = labels.copy()
        for s in range(0, m, POLISH_CHUNK):
            e = min(m, s + POLISH_CHUNK)
            own = np.arange(s, e)
            # candidates: the code's own group first (so that a tie keeps it), then each neighbour's
            node = np.concatenate([own, np.repeat(own, np.diff(indptr[s:e + 1]))])
            group = np.concatenate([labels[s:e], labels[indices[indptr[s]:indptr[e]]]])
            # squared distance to the centre, less the code's own squared norm (the same for all its candidates)
            d = sq[group] - 2 * np.einsum("ij,ij->i", x[node], centres[group])
            order = np.lexsort((d, node))  # stable: equal distances keep the candidates' order
            node, group = node[order], group[order]
            first = np.r_[True, node[1:] != node[:-1]]  # each code's nearest candidate
            moved[node[first]] = group[first]
        if np.array_equal(moved, labels) or np.bincount(moved, minlength=groups).min() == 0:
            break
        labels = moved
    return labels


def _communities(g, k: int | None, seed: int, labels: np.ndarray) -> tuple:
    """(membership, resolution) from ``labels``, Louvain's at resolution 1: those without ``k``;
    with it, the resolution bisected (geometrically) towards k communities, then merged down to k."""
    if k is None:
        return labels, 1.0
    k = min(int(k), g.vcount())
    low = high = None  # resolutions known to give too few / too many communities
    resolution, above = 1.0, None
    for _ in range(RESOLUTION_STEPS):
        found = int(labels.max()) + 1
        if found == k:
            return labels, resolution
        if found > k:
            high, above = resolution, (labels, resolution)
        else:
            low = resolution
        resolution = np.sqrt(low * high) if low is not None and high is not None else (
            resolution * 4 if high is None else resolution / 4)
        labels = _louvain(g, resolution, seed)
    if int(labels.max()) + 1 == k:
        return labels, resolution
    if above is None:  # never more than k: as many as the graph has
        return labels, resolution
    return merge_to(g, above[0], k), above[1]


def merge_to(g, labels: np.ndarray, k: int) -> np.ndarray:
    """Merge communities greedily, each time the pair whose union raises modularity most (or
    lowers it least), until ``k`` remain; ties go to the lowest pair of community numbers
    (among unlinked pairs: the two smallest degrees, then numbers, which is the same pair
    while every community has a link, as in a neighbour graph).

    Memory and time follow the edges between communities, not their square: only linked pairs
    can gain (a gain is their link weight / m less d_i d_j / m^2), so they wait in a heap; of
    the unlinked pairs the best is the two smallest degrees, which lose least."""
    labels = np.unique(labels, return_inverse=True)[1]
    c = int(labels.max()) + 1
    edges = np.asarray(g.get_edgelist(), np.int64).reshape(-1, 2)
    w = np.asarray(g.es["weight"], np.float64)
    a, b = labels[edges[:, 0]], labels[edges[:, 1]]
    between = coo_matrix((w, (a, b)), shape=(c, c)).tocsr()
    between = (between + between.T).tocsr()
    degree = np.asarray(between.sum(1)).ravel()  # loops counted twice, as modularity's degrees count them
    total = float(degree.sum())
    links = {}  # community -> {linked community: link weight}
    for i in range(c):
        row = slice(between.indptr[i], between.indptr[i + 1])
        links[i] = {int(j): float(v) for j, v in zip(between.indices[row], between.data[row]) if j != i and v}
    version = np.zeros(c, np.int64)  # a heap entry is current while both its ends keep their version

    def gain(i: int, j: int, link: float) -> float:  # modularity gain / 2
        return link / total - (degree[i] * degree[j]) / (total * total)

    linked = [(-gain(i, j, v), i, j, 0, 0) for i in range(c) for j, v in links[i].items() if i < j]
    heapq.heapify(linked)
    smallest = [(degree[i], i, 0) for i in range(c)]  # by degree, then number
    heapq.heapify(smallest)
    alive = np.ones(c, bool)
    into = np.arange(c)  # the community each one was merged into (itself while alive)
    for _ in range(c - k):
        best = _top_current(linked, alive, version)
        pair = _two_smallest(smallest, alive, version)
        if pair is not None and pair[1] not in links[pair[0]]:
            unlinked = (-gain(*pair, 0.0), *pair)
            best = unlinked if best is None or unlinked < best else best
        _, i, j = best
        for x, v in links.pop(j).items():  # j's links become i's
            del links[x][j]
            if x != i:
                links[i][x] = links[x][i] = links[i].get(x, 0.0) + v
        degree[i] += degree[j]
        degree[j] = 0
        alive[j], into[j] = False, i
        version[i] += 1
        for x, v in links[i].items():  # i's degree changed every gain of its pairs
            lo, hi = min(i, x), max(i, x)
            heapq.heappush(linked, (-gain(lo, hi, v), lo, hi, version[lo], version[hi]))
        heapq.heappush(smallest, (degree[i], i, version[i]))
    while not np.array_equal(into, into[into]):  # follow merges to the live community
        into = into[into]
    return into[labels]


def _top_current(heap: list, alive: np.ndarray, version: np.ndarray):
    """(-gain, i, j) of the best current linked pair of a heap with stale entries; None when empty."""
    while heap:
        _, i, j, vi, vj = heap[0]
        if alive[i] and alive[j] and version[i] == vi and version[j] == vj:
            return heap[0][:3]
        heapq.heappop(heap)
    return None


def _two_smallest(heap: list, alive: np.ndarray, version: np.ndarray):
    """The two live communities of smallest degree (then number), in number order, from a heap
    of (degree, number, version) with stale entries; None with fewer than two."""
    found = []
    while heap and len(found) < 2:
        entry = heapq.heappop(heap)
        if alive[entry[1]] and version[entry[1]] == entry[2]:
            found.append(entry)
    for entry in found:
        heapq.heappush(heap, entry)
    return tuple(sorted(e[1] for e in found)) if len(found) == 2 else None
