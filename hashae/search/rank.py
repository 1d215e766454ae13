"""Two-stage ranking: FAISS finds a Hamming shortlist, a finer score orders it.

Semantic hashing's own answer to coarse codes (Krizhevsky & Hinton 2011: a short code finds
candidates, a finer measure re-ranks them). A 64-bit code puts hundreds of items at each small
distance and an edit moves a photo's code by a few bits, so plain Hamming order is mostly ties
broken by file order. Two things a query has and the stored bits lack order the shortlist:

- the query's real-valued code (the code layer's inputs z). Its score against a stored code is
  the *expected* Hamming distance if the query's bits were drawn as in training, where
  Gaussian noise of the model's ``noise_std`` is added to z: a bit the query barely sets counts
  little when it disagrees. It needs no storage (an asymmetric distance), and an item with the
  query's own code scores lowest of all.
- for image queries, the perceptual hashes (pHash + dHash, either orientation: ingest/
  perceptual.py). Unrelated photos differ in 50-60 of their 128 bits; edited copies of one
  picture in fewer than about 40. But how far apart unrelated pictures are depends on the
  collection: faces, or objects on black, are 20-30 bits apart. So the bar is the query's own:
  ``copy_margin`` bits below the ``copy_percentile``-th percentile of its distances to its
  Hamming shortlist (its semantic neighbours), and never above ``copy_within``. Each bit below
  the bar takes ``copy_weight`` off the score, so copies come first and the semantic order of
  everything else stays. The items with the nearest hashes join the shortlist, so a copy whose
  code moved far is still found.
  A cropped or rotated copy of a flat picture (sea, sky) can be as far from its original's
  hashes as unrelated pictures are, yet near the hashes of the original's centre, which
  collections keep too. That reading gets a bar of its own, from its own distances to the
  shortlist and ``copy_centre_margin`` bits lower (a second reading is a second chance for a
  look-alike to pass); an item takes the larger of its two bonuses, and the items with the
  nearest centre hashes join the shortlist as well.

For colour pictures a third thing the query has orders the shortlist: its channel statistics
(per channel mean, spread and gradient energy, and the edges' colour disagreement: model/
statistics.stored_stats), which a collection stores per item. Among the shortlist, the item
whose colours and textures are nearer the query's comes first: each item's statistics distance
(each statistic over its spread in the collection), over its median across the query's Hamming
shortlist, adds ``stats_weight`` bits to the score. The code's feature bits hash the same
statistics, but 8 bits of them cannot order a shortlist whose codes differ by a few bits. An
edit moves a copy's statistics (a watermark adds edges, a brighter exposure raises the means),
so an item with a copy bonus pays less of the term, none once the bonus is as large. On a
grey picture the statistics are 4 numbers (ink, contrast, two gradient energies) that say
little of a glyph's or an object's shape, and they cost the grey sets, so grey collections
leave them out (``stats_weight_for``; bench/README.md, "The channel statistics in the ranking").

A k-NN vote (``classify``) can also weigh the perceptual distance itself into the score
(``perceptual_weight``): among a query's nearest few dozen items the hashes are a second,
untrained opinion of shape that steadies the vote; over a whole ranking they cost the semantic
order, so search leaves them out (bench/README.md, "k-NN labels").

bench/copies.py measures the parts and chooses the constants (bench/README.md, "Edited copies").
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import faiss
import numpy as np
from scipy.special import ndtr

from ..codes import hamming, unpack
from ..ingest.perceptual import BITS as HASH_BITS
from ..ingest.perceptual import Perceptual

SHORTLIST = 256  # items re-ranked per k-NN query (at least k), widened to keep ties at its edge
MAX_SHORTLIST = 16_384  # ties past this many items are cut in id order, as plain search does
COPY_CANDIDATES = 16  # items with the nearest perceptual hashes (each orientation) added to it
COPY_WITHIN = 48  # perceptual bits (of 128) below which an item may count as a copy, at most
COPY_PERCENTILE = 10  # the query's bar: this percentile of its distances to its shortlist...
COPY_MARGIN = 8  # ...less this many bits
COPY_WEIGHT = 1.0  # score taken off per bit below the bar
COPY_CENTRE_MARGIN = 8  # a stored centre's reading of the query: its own bar, this many bits lower still
STATS_WEIGHT = 8.0  # colour pictures: bits added per shortlist median of channel-statistics distance


def stats_weight_for(channels: int) -> float:
    """The statistics term's weight for a model of pictures with ``channels`` channels:
    STATS_WEIGHT for colour, 0 for grey (module docstring)."""
    return STATS_WEIGHT if channels == 3 else 0.0


@dataclass(frozen=True)
class Queries:
    """What queries bring to ranking: packed ``codes`` (n, bits/8), the code layer's inputs
    ``logits`` (n, bits) float32 or None, their perceptual ``hashes`` or None, and their
    channel ``stats`` (n, 13) as collections store them, or None."""

    codes: np.ndarray
    logits: np.ndarray | None = None
    hashes: Perceptual | None = None
    stats: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.codes)


@dataclass(frozen=True)
class Ranked:
    """One query's hits in order: item ``ids``, Hamming ``distance`` between the query's code and
    each item's stored code, and the ``score`` that ordered them (lower: closer; None in plain
    Hamming order)."""

    ids: np.ndarray
    distance: np.ndarray
    score: np.ndarray | None

    def without(self, item: int) -> "Ranked":
        """These hits less ``item``."""
        keep = self.ids != item
        return Ranked(self.ids[keep], self.distance[keep], None if self.score is None else self.score[keep])


@dataclass(frozen=True)
class Scoring:
    """How the shortlist is scored: the model's code-layer ``noise_std`` (the expected distance's
    noise) and the copy bonus: ``copy_weight`` per perceptual bit below the query's bar,
    ``copy_margin`` bits under the ``copy_percentile``-th percentile of its distances to its
    Hamming shortlist and at most ``copy_within``; the reading of the stored pictures' centres
    has a bar of its own, ``copy_centre_margin`` bits lower (see the module docstring).
    ``perceptual_weight`` w: the score becomes (score + w * p) / (1 + w), p the perceptual
    distance scaled to the code length (0 in search; classify's vote uses search.vote's).
    ``stats_weight``: bits added per shortlist median of channel-statistics distance (0: none)."""

    noise_std: float = 4.0
    copy_within: int = COPY_WITHIN
    copy_weight: float = COPY_WEIGHT
    copy_percentile: float = COPY_PERCENTILE
    copy_margin: float = COPY_MARGIN
    copy_centre_margin: float = COPY_CENTRE_MARGIN
    perceptual_weight: float = 0.0
    stats_weight: float = 0.0


def expected_distance(logits: np.ndarray, codes: np.ndarray, noise_std: float) -> np.ndarray:
    """Expected Hamming distance between each stored code (rows of packed ``codes``) and the
    code of one query whose code-layer inputs are ``logits`` (bits,), each bit set when
    z + N(0, noise_std^2) > 0."""
    p_one = ndtr(np.asarray(logits, np.float64) / max(float(noise_std), 1e-6))
    stored = unpack(codes).astype(np.float64)
    # a stored 1 differs with probability 1 - p_one, a stored 0 with p_one
    return p_one.sum() + stored @ (1.0 - 2.0 * p_one)


class Ranker:
    """Ranks the items of a HammingIndex for queries: ``knn(queries, k)`` and ``within(queries,
    radius)``; ``stored_hashes`` (the items' Perceptual, or None) enable the copy bonus, and
    ``stored_stats`` (their channel statistics (n, 13), NaN rows where unknown, or None) the
    statistics term."""

    def __init__(self, index, stored_hashes: Perceptual | None = None, scoring: Scoring | None = None,
                 stored_stats: np.ndarray | None = None):
        self.index = index
        self.codes = index.reconstruct_all()  # the stored codes that candidates are scored against
        self.hashes = stored_hashes
        self.stats = stored_stats
        self.scoring = scoring or Scoring()
        self._built = {}  # indexes built on first use; with_scoring's copies share this dict

    def with_scoring(self, scoring: Scoring) -> "Ranker":
        """This ranker scoring by ``scoring``, sharing its codes, hashes and indexes."""
        other = copy.copy(self)
        other.scoring = scoring
        return other

    def knn(self, queries: Queries, k: int, hamming_only: bool = False) -> list:
        """The ``k`` best items of each query, as Ranked: the Hamming shortlist (``SHORTLIST``
        items or ``k`` if more, and every item tied with its last) plus the items with the
        nearest perceptual hashes, ordered by score; ``hamming_only``: FAISS's order."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if hamming_only or not self._can_score(queries):
            d, ids = self.index.search(queries.codes, k)
            return [Ranked(i[i >= 0], di[i >= 0], None) for di, i in zip(d, ids)]
        lists = self._shortlists(queries.codes, max(k, SHORTLIST))
        copies = self._copy_candidates(queries)
        out = []
        for q, ids in enumerate(lists):
            reference = ids[:SHORTLIST]
            if copies is not None:
                ids = np.union1d(ids, copies[q])
            out.append(self._order(queries, q, ids, k, reference))
        return out

    def within(self, queries: Queries, radius: int, limit: int | None = None,
               hamming_only: bool = False) -> list:
        """Every item within Hamming distance ``radius`` of each query (the first ``limit``),
        ordered by score (``hamming_only``: by distance, then id)."""
        found = self.index.radius_search(queries.codes, radius)
        if hamming_only or not self._can_score(queries):
            return [Ranked(ids[:limit], dist[:limit], None) for ids, dist in found]
        references = [None] * len(found)
        # the copy bar and the statistics' scale come from the k-NN shortlist, whatever the radius holds
        if self._copies_scored(queries) or self._stats_read(queries):
            _, near = self.index.search(queries.codes, min(SHORTLIST, max(self.index.ntotal, 1)))
            references = [r[r >= 0] for r in near]
        return [self._order(queries, q, ids, limit, references[q]) for q, (ids, _) in enumerate(found)]

    # ---------------------------------------------------------------- parts
    def _can_score(self, queries: Queries) -> bool:
        return queries.logits is not None or self._hashes_read(queries) or self._stats_read(queries)

    def _hashes_read(self, queries: Queries) -> bool:
        """Whether the score reads perceptual hashes: both sides have them and a weight asks."""
        s = self.scoring
        return queries.hashes is not None and self.hashes is not None and bool(s.copy_weight or s.perceptual_weight)

    def _stats_read(self, queries: Queries) -> bool:
        """Whether the score reads channel statistics: both sides have them and a weight asks."""
        return queries.stats is not None and self.stats is not None and bool(self.scoring.stats_weight)

    def _copies_scored(self, queries: Queries) -> bool:
        return self._hashes_read(queries) and bool(self.scoring.copy_weight)

    def _order(self, queries: Queries, q: int, ids: np.ndarray, limit: int | None, reference) -> Ranked:
        ids = np.asarray(ids, np.int64)
        stored = self.codes[ids]
        distance = hamming(stored, queries.codes[q][None])
        score = self.score(queries, q, ids, stored, distance, reference)
        order = np.lexsort((ids, distance, score))[:limit]
        return Ranked(ids[order], distance[order], score[order])

    def score(self, queries: Queries, q: int, ids: np.ndarray, stored: np.ndarray, distance: np.ndarray,
              reference: np.ndarray | None = None) -> np.ndarray:
        """Query ``q``'s score for items ``ids`` (their packed codes ``stored``, Hamming
        ``distance``): the expected distance (the plain one without logits) less the copy bonus,
        whose bar comes from the perceptual distances to the ``reference`` items (the query's
        Hamming shortlist; default ``ids``), plus the statistics term (its scale from the same
        ``reference``; an item the bonus calls a copy pays less of it), averaged with the
        perceptual distance where the scoring's ``perceptual_weight`` asks."""
        s = self.scoring
        if queries.logits is not None:
            score = expected_distance(queries.logits[q], stored, s.noise_std)
        else:
            score = distance.astype(np.float64)
        bonus = np.zeros(len(ids))
        seen = self._perceptual(queries, q, ids) if self._hashes_read(queries) and len(ids) else None
        if seen is not None and s.copy_weight:
            refs = seen if reference is None else self._perceptual(queries, q, np.asarray(reference, np.int64))
            # each reading (whole picture, centre) against a bar from its own distances
            for near, ref, margin in zip(seen, refs, (s.copy_margin, s.copy_margin + s.copy_centre_margin)):
                bar = min(s.copy_within, np.percentile(ref, s.copy_percentile) - margin) if len(ref) else 0
                bonus = np.maximum(bonus, bar - near)
            score = score - s.copy_weight * bonus
        if self._stats_read(queries) and len(ids):
            # an edit (a watermark, a brighter exposure) moves a copy's statistics as far as a
            # different picture's: a bonus of as many bits as the term weighs lifts it
            relief = np.clip(s.copy_weight * bonus / s.stats_weight, 0.0, 1.0)
            score = score + s.stats_weight * (1 - relief) * self._stats_term(queries.stats[q], ids, reference)
        if seen is not None and s.perceptual_weight:
            scaled = seen[0] * (8 * self.codes.shape[1]) / (2 * HASH_BITS)
            score = (score + s.perceptual_weight * scaled) / (1 + s.perceptual_weight)
        return score

    def _stats_term(self, query: np.ndarray, ids: np.ndarray, reference) -> np.ndarray:
        """The query's channel-statistics distance to ``ids`` over its median across the
        ``reference`` items (default ``ids``), each statistic scaled by its spread over the
        stored items; an item without statistics (NaN) scores the median, 1."""
        if "spread" not in self._built:  # the mean cancels in a difference
            known = self.stats[np.isfinite(self.stats).all(1)]
            spread = known.std(0) if len(known) else np.ones(self.stats.shape[1])
            self._built.setdefault("spread", np.where(spread > 1e-12, spread, 1.0))
        spread = self._built["spread"]

        def distance(rows):
            return np.linalg.norm((self.stats[rows] - query) / spread, axis=1)

        d = distance(ids)
        near = d if reference is None else distance(np.asarray(reference, np.int64))
        near = near[np.isfinite(near)]
        scale = float(np.median(near)) if len(near) else 0.0
        if scale <= 1e-12:  # nothing to compare against, or every item alike
            return np.zeros(len(ids))
        return np.where(np.isfinite(d), d / scale, 1.0)

    def _perceptual(self, queries: Queries, q: int, ids: np.ndarray) -> list:
        """The query's perceptual distances to ``ids``: the whole pictures' and, where stored,
        their centres'."""
        b = np.full(len(ids), q)
        out = [self.hashes.distance(ids, b, queries.hashes).astype(np.float64)]
        if self.hashes.has_centre:
            out.append(self.hashes.centre_distance(ids, b, queries.hashes).astype(np.float64))
        return out

    def _shortlists(self, codes: np.ndarray, size: int) -> list:
        """Each query's ``size`` nearest ids, widened to every item at the last distance taken
        (up to MAX_SHORTLIST), so that no tie is cut by id order before scoring. One search of
        twice the size shows where the ties end; only where they run past it does a radius
        search follow. An approximate (inverted-file) index is taken as it answers: widening
        would scan every code."""
        n = self.index.ntotal
        if getattr(self.index, "ivf", None) is not None:
            _, ids = self.index.search(codes, min(size, max(n, 1)))
            return [i[i >= 0] for i in ids]
        d, ids = self.index.search(codes, min(2 * size, max(n, 1)))
        lists = []
        for q in range(len(codes)):
            found = ids[q] >= 0
            if found.sum() <= size:
                lists.append(ids[q][found])
                continue
            edge = d[q, size - 1]
            if d[q, -1] > edge or found.sum() == n:  # the ties end inside this search
                keep = d[q] <= edge
                # by distance, then id, as the radius search orders (the first SHORTLIST set the bar)
                lists.append(ids[q][keep][np.lexsort((ids[q][keep], d[q][keep]))])
            else:
                lists.append(self.index.radius_search(codes[q:q + 1], int(edge))[0][0][:MAX_SHORTLIST])
        return lists

    def _copy_candidates(self, queries: Queries):
        """Per query, the ids of the COPY_CANDIDATES items with the nearest pHash + dHash as the
        query is and mirrored, and where stored those with the nearest centre hashes; None
        without hashes."""
        if not self._hashes_read(queries) or not len(self.hashes):
            return None
        if "copies" not in self._built:
            built = []
            for key in [self.hashes.joined()] + ([self.hashes.joined_centre()] if self.hashes.has_centre else []):
                built.append(faiss.IndexBinaryFlat(128))
                built[-1].add(key)
            self._built.setdefault("copies", built)  # one list for every thread, whichever built first
        m, n = min(COPY_CANDIDATES, len(self.hashes)), len(queries)
        both = np.concatenate([queries.hashes.joined(), queries.hashes.joined(mirrored=True)])
        # one pass over each kind of stored hash for both orientations
        found = [index.search(both, m)[1] for index in self._built["copies"]]
        return np.concatenate([part for ids in found for part in (ids[:n], ids[n:])], axis=1)

