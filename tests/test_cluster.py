import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import components_reference, partition
from hashae import Collection, cluster
from hashae.cli import main
from hashae.search.clustering import connected_components, relabel_by_size
from hashae.codes import hamming_matrix, pack
from hashae.metrics import adjusted_rand, nmi


def test_exact_groups_equal_identical_codes():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (7, 4), dtype=np.uint8)
    pick = rng.integers(0, 7, 200)
    labels = cluster(base[pick], "exact")
    assert labels.dtype == np.int64 and len(labels) == 200
    assert partition(labels) == partition(pick)
    sizes = np.bincount(labels)
    assert (np.diff(sizes) <= 0).all()  # label 0 is the largest group


@pytest.mark.parametrize("radius", [0, 1, 2, 4])
def test_radius_components_match_brute_force(radius):
    rng = np.random.default_rng(radius)
    centres = rng.integers(0, 2, (12, 32))
    flips = (rng.random((300, 32)) < 0.05).astype(int)
    codes = pack(centres[rng.integers(0, 12, 300)] ^ flips)
    reference = components_reference(hamming_matrix(codes, codes) <= radius)
    assert partition(cluster(codes, "radius", radius=radius)) == partition(reference)


def test_connected_components_on_a_chain():
    a, b = np.arange(0, 9), np.arange(1, 10)
    assert (connected_components(12, a, b) == [0] * 10 + [10, 11]).all()


def test_kmeans_is_deterministic_and_separates_clusters():
    rng = np.random.default_rng(1)
    centres = rng.integers(0, 2, (5, 64))
    truth = np.repeat(np.arange(5), 60)
    codes = pack(centres[truth] ^ (rng.random((300, 64)) < 0.08))
    a = cluster(codes, "kmeans", k=5, seed=3)
    b = cluster(codes, "kmeans", k=5, seed=3)
    np.testing.assert_array_equal(a, b)
    assert nmi(truth, a) > 0.95 and adjusted_rand(truth, a) > 0.9


def _groups(n_groups=5, per=60, noise=0.06, seed=1):
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 2, (n_groups, 64))
    truth = np.repeat(np.arange(n_groups), per)
    return pack(centres[truth] ^ (rng.random((len(truth), 64)) < noise)), truth


def test_graph_clusters_separate_groups_and_choose_their_number():
    codes, truth = _groups()
    chosen = cluster(codes, "graph", seed=3)  # no k: the graph's modularity picks it
    assert partition(chosen) == partition(truth)
    given = cluster(codes, "graph", k=5, seed=3)
    assert partition(given) == partition(truth)
    np.testing.assert_array_equal(given, cluster(codes, "graph", k=5, seed=3))  # deterministic for a seed
    # more groups than the data has: the resolution is raised until there are k
    assert len(np.unique(cluster(codes, "graph", k=9, seed=3))) == 9
    # fewer, near the graph's own number: communities merged down to k, whole groups together
    four = cluster(codes, "graph", k=4, seed=3)
    assert len(np.unique(four)) == 4 and all(len(np.unique(four[truth == t])) == 1 for t in range(5))
    # far fewer: k-means of the codes smoothed over the graph, whole groups still together
    two = cluster(codes, "graph", k=2, seed=3)
    assert len(np.unique(two)) == 2 and nmi(truth, two) > 0.5
    assert all(len(np.unique(two[truth == t])) == 1 for t in range(5))


def test_graph_clusters_far_fewer_than_communities_join_whole_communities(monkeypatch):
    """Three families of four tight groups each, k = 3: the graph has about twelve communities
    of its own, so the codes are smoothed over it and k-means joins the groups of each family,
    also when it is fitted on a sample of the codes (as above SMOOTH_TRAIN codes)."""
    import hashae.search.graph as graph
    from hashae.search.graph import SMOOTH_ABOVE, graph_clusters
    rng = np.random.default_rng(4)
    families = rng.integers(0, 2, (3, 64))
    groups = families.repeat(4, axis=0) ^ (rng.random((12, 64)) < 0.12)  # about 8 bits from the family
    sub = np.repeat(np.arange(12), 40)
    codes = pack(groups[sub] ^ (rng.random((len(sub), 64)) < 0.03))
    assert len(np.unique(cluster(codes, "graph", seed=2))) > SMOOTH_ABOVE * 3  # the graph's own number
    found = graph_clusters(codes, 3, seed=2)
    assert np.isnan(found.resolution)  # the smoothed path, not Louvain's
    assert partition(found.labels) == partition(sub // 4)
    np.testing.assert_array_equal(found.labels, graph_clusters(codes, 3, seed=2).labels)
    monkeypatch.setattr(graph, "SMOOTH_TRAIN", 240)  # half the codes: 80 of each family's 160
    assert partition(graph_clusters(codes, 3, seed=2).labels) == partition(sub // 4)


def test_polish_moves_border_codes_to_the_nearer_neighbouring_group():
    """After the cut to k, a code labelled with the far group moves to the nearer centre of a
    group it has an edge to; a code with no edge to that group stays, and so does a group's
    only member (its own centre is itself)."""
    from scipy.sparse import coo_matrix

    from hashae.search.graph import polish
    x = np.array([[0, 0], [0, 1], [1, 0], [7, 0], [6.5, 0],  # group 0; 3 and 4 sit nearer group 1's centre
                  [10, 0], [10, 1], [11, 0],  # group 1
                  [9, 0]], np.float32)  # group 2, alone, beside group 1
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2])
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 5], [0, 4], [5, 6], [6, 7], [8, 6]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(9, 9))
    graph = (graph + graph.T).tocsr()
    out = polish(x, graph, np.ones(9, np.int64), labels)
    np.testing.assert_array_equal(out, [0, 0, 0, 1, 0, 1, 1, 1, 2])
    # labels need not be numbered from 0 (merges leave gaps); the groups come back as 0..k-1
    np.testing.assert_array_equal(polish(x, graph, np.ones(9, np.int64), labels * 3 + 4), out)
    np.testing.assert_array_equal(polish(x, graph, np.ones(9, np.int64), labels, rounds=0), labels)


def test_graph_clusters_with_the_inverted_file_search(monkeypatch):
    # past EXACT_MAX distinct codes the neighbours come from an IVF index: same groups here
    import hashae.search.graph as graph
    codes, truth = _groups(per=200, seed=2)
    monkeypatch.setattr(graph, "EXACT_MAX", 100)
    assert nmi(truth, cluster(codes, "graph", k=5)) > 0.98


def _dense_merge(edges, w, labels, k):
    """The greedy merge written out over a dense community x community matrix: the reference
    that graph.merge_to must agree with."""
    labels = np.unique(labels, return_inverse=True)[1]
    c = int(labels.max()) + 1
    between = np.zeros((c, c))
    np.add.at(between, (labels[edges[:, 0]], labels[edges[:, 1]]), w)
    between = between + between.T
    degree, parent = between.sum(1), np.arange(c)
    total, alive = degree.sum(), np.ones(c, bool)
    for _ in range(c - k):
        gain = between / total - np.outer(degree, degree) / (total * total)
        np.fill_diagonal(gain, -np.inf)
        gain[~alive, :] = gain[:, ~alive] = -np.inf
        i, j = np.unravel_index(int(np.argmax(gain)), gain.shape)
        between[i] += between[j]
        between[:, i] += between[:, j]
        between[j] = between[:, j] = 0
        degree[i] += degree[j]
        degree[j], alive[j] = 0, False
        parent[parent == j] = i
    return parent[labels]


@pytest.mark.parametrize("seed", range(6))
def test_graph_merge_equals_the_dense_greedy_merge(seed):
    # whole-number weights: sums are exact in any order, so the two must pick the same pairs,
    # ties and unlinked pairs (a lone pair with no links to the rest) included. Every node has
    # an edge, as in a neighbour graph
    import igraph
    from hashae.search.graph import merge_to
    rng = np.random.default_rng(seed)
    n = 120
    edges = np.column_stack([np.arange(n - 2), rng.integers(0, n - 2, n - 2)])
    edges = np.vstack([edges, rng.integers(0, n - 2, (150, 2)), [[n - 3, n - 3], [n - 2, n - 1]]])
    w = rng.integers(1, 4, len(edges)).astype(float)
    g = igraph.Graph(n=n, edges=edges.tolist(), edge_attrs={"weight": w.tolist()})
    labels = rng.integers(0, 40, n)
    labels[n - 2:] = 40  # a community linked to no other: k = 1 must join it unlinked
    for k in (1, 5, 25):
        got = merge_to(g, labels, k)
        assert len(np.unique(got)) == k
        np.testing.assert_array_equal(got, _dense_merge(edges, w, labels, k))


def test_graph_merge_of_many_communities_stays_sparse():
    # 30,000 communities: the dense matrix would take 7 GB; the sparse merge needs its links
    import igraph
    from hashae.search.graph import merge_to
    rng = np.random.default_rng(0)
    n = 30_000
    edges = np.column_stack([np.arange(n), (np.arange(n) + rng.integers(1, 5, n)) % n])
    g = igraph.Graph(n=n, edges=edges.tolist(), edge_attrs={"weight": [1.0] * n})
    got = merge_to(g, np.arange(n), n - 2_000)
    assert len(np.unique(got)) == n - 2_000


def test_graph_duplicate_codes_and_tiny_inputs():
    codes, truth = _groups(n_groups=3, per=20, noise=0.0)  # every group is one code repeated
    assert partition(cluster(codes, "graph")) == partition(truth)
    assert len(cluster(codes[:0], "graph")) == 0
    assert list(cluster(codes[:1], "graph")) == [0]
    with pytest.raises(ValueError, match="k >= 1"):
        cluster(codes, "graph", k=0)


@pytest.mark.parametrize("method, kwargs, label", [
    ("radius", {"radius": 2}, "radius"),
    ("kmeans", {"k": 5, "restarts": 3, "iterations": 7}, "k-means"),
    ("duplicates", {"radius": 2}, "duplicates"),
])
def test_progress_bars_end_at_their_totals_and_change_nothing(capsys, method, kwargs, label):
    from hashae.search import near_duplicates
    rng = np.random.default_rng(4)
    centres = rng.integers(0, 2, (5, 64))
    codes = pack(centres[rng.integers(0, 5, 5000)] ^ (rng.random((5000, 64)) < 0.03))
    hashes = rng.integers(0, 256, (5000, 8), dtype=np.uint8)
    hashes[1::2] = hashes[::2]  # pairs of items share a hash, so some pairs are confirmed
    run = (lambda p: near_duplicates(codes, kwargs["radius"], hashes, block=1000, progress=p)) if method == "duplicates" \
        else (lambda p: cluster(codes, method, progress=p, **kwargs))
    quiet = run(False)
    assert capsys.readouterr().err == ""
    np.testing.assert_array_equal(run(True), quiet)
    last = capsys.readouterr().err.rstrip().split("\r")[-1]
    distinct = len(np.unique(codes, axis=0))
    total = {"kmeans": lambda: kwargs["restarts"] * kwargs["iterations"], "radius": lambda: distinct,
             "duplicates": lambda: distinct + len(np.unique(hashes, axis=0))}[method]()  # codes, then hashes
    assert last.startswith(label) and f" {total}/{total} " in last, last


def test_relabel_by_size_orders_groups():
    assert relabel_by_size(np.array([5, 9, 9, 7, 7, 7])).tolist() == [2, 1, 1, 0, 0, 0]


def test_bad_arguments():
    codes = np.zeros((3, 2), np.uint8)
    with pytest.raises(ValueError, match="radius"):
        cluster(codes, "radius")
    with pytest.raises(ValueError, match="k >= 1"):
        cluster(codes, "kmeans")
    with pytest.raises(ValueError, match="method"):
        cluster(codes, "dbscan")
    assert cluster(np.zeros((0, 2), np.uint8), "exact").shape == (0,)


def test_near_duplicates_are_found_as_a_group(trained_store, sample_copy, tmp_path):
    # re-encoded and resized copies of three images: each copy must share a group with its original
    originals = ["circle/circle_005.png", "stripes/stripes_002.png", "cross/cross_007.png"]
    for n, rel in enumerate(originals):
        with Image.open(sample_copy / rel) as im:
            im.convert("RGB").resize((56, 56)).save(sample_copy / f"dup{n}.jpg", quality=80)
    store = tmp_path / "d.h5"
    with Collection.open(trained_store) as base:
        Collection(store).index(str(sample_copy), model=base.model, workers=0, progress=False)
    with Collection.open(store) as c:
        groups = c.duplicates(radius=2)
    assert all(len(g) >= 2 for g in groups)
    for n, rel in enumerate(originals):
        assert any(rel in g and f"dup{n}.jpg" in g for g in groups), (rel, groups)


@pytest.mark.parametrize("args", [["--method", "exact"], ["--method", "radius", "--radius", "3"],
                                  ["--method", "kmeans", "-k", "6", "--quiet"], ["--method", "graph"],
                                  ["--method", "graph", "-k", "6", "--quiet"]])
def test_cluster_json_covers_every_item_once(trained_store, tmp_path, args):
    r = CliRunner().invoke(main, ["cluster", "--store", str(trained_store), "--json", *args,
                                  "--sheets", str(tmp_path / "sheets")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [c["cluster"] for c in out] == list(range(len(out)))
    paths = [p for c in out for p in c["paths"]]
    with Collection.open(trained_store) as coll:
        assert sorted(paths) == sorted(coll.paths()) and len(paths) == len(set(paths))
    assert (tmp_path / "sheets" / "index.html").exists() and (tmp_path / "sheets" / "cluster-0000.png").exists()
    if args[1] == "graph":  # says how many groups it chose, or gives the -k asked for
        assert f"chose {len(out)} groups" in r.stderr if "-k" not in args else len(out) == 6


def test_duplicates_cli(trained_store):
    r = CliRunner().invoke(main, ["duplicates", "--store", str(trained_store), "--radius", "4", "--json", "--quiet"])
    assert r.exit_code == 0
    groups = json.loads(r.stdout)
    assert all(len(g["paths"]) >= 2 for g in groups)


def test_public_functions_survive_importing_their_modules():
    # importing the modules that define them must not shadow hashae.cluster (the function) with a module
    code = ("import hashae.search.clustering, hashae.ingest.perceptual, hashae.codes, hashae; "
            "assert callable(hashae.cluster) and callable(hashae.phash) and callable(hashae.pack)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_graph_is_the_default_method_of_the_command_and_the_api(trained_store):
    from hashae.search.clustering import DEFAULT_METHOD
    r = CliRunner().invoke(main, ["cluster", "--store", str(trained_store), "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    with Collection.open(trained_store) as coll:
        default, graph, exact = coll.clusters(), coll.clusters("graph"), coll.clusters("exact")
    assert DEFAULT_METHOD == "graph" and [g["paths"] for g in json.loads(r.stdout)] == default == graph != exact
