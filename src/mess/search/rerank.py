"""Re-ranking: database-side augmentation, query expansion, then k-reciprocal re-ranking (``--ranking reranked``).

Three unsupervised steps on the collection's own vectors (docs/quality.md, issue 17):

1. Database-side augmentation (DBA, :mod:`mess.search.augment`): every track's vector is replaced by its alpha-QE
   expansion over its 3 nearest other tracks, in score space.
2. The default query expansion (:mod:`mess.search.expansion`) over the augmented vectors: a track ranks
   by the better of its score to the augmented query and to that query expanded with its 3 nearest tracks.
3. k-reciprocal re-ranking (Zhong et al., CVPR 2017, k1 = 10, k2 = 3, lambda = 0.3) of those scores: the
   Jaccard distance of the tracks' k-reciprocal neighbourhoods, mixed with the (row-normalised) distance
   ``2 - 2 score``. It needs every track's neighbour list under the scores of step 2, kept in :class:`Reranker`
   (memoised per vector set; ``mess index`` saves it beside the index, :mod:`mess.search.rerank_store`).
   Building it costs half a product of the collection with itself while n x n scores fit in memory
   (:func:`mess.search.graph.fits_whole`): the cosines by BLAS syrk, of which the augmented and expanded
   scores are sparse mixes, in place (:class:`HeldScores`); else three products in row blocks (:class:`BlockScores`).

A query that is a collection track is its own augmented vector, exactly as every track of the
collection is. Scores here are exact (no index): each query costs a product with the whole collection.

Rows are the vector set's, in track id order: an exact tie (two different files with the same vectors, a lossless
transcode) goes to the lower row, and sums run in row order. `mess extract` numbers new tracks in its input order
(the sorted walk), whatever its decoders' timing (:mod:`mess.extract.pipeline`), so one collection extracted alike
has one row order and re-ranks alike, to the last bit (tests/test_ids_in_input_order.py); a store grown in steps
(files added later) numbers them otherwise than one extraction of them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Protocol

import numpy as np

from mess.search.augment import DBA_K, Augmentation, augmented_query, expanded_rows
from mess.search.expansion import EXPAND_ALPHA, EXPAND_K, expand
from mess.search.graph import (
    CHUNK,
    NeighbourGraph,
    fits_whole,
    gram,
    held_graph,
    neighbour_graph,
    score_graph,
    top_columns,
)
from mess.search.vectors import VectorSet
from mess.store import FeatureStore

if TYPE_CHECKING:
    from scipy import sparse  # imported by _csr_matrix alone: opening a store's search (`mess check`) needs no scipy

K1 = 10
K2 = 3
LAMBDA = 0.3
# an outside query's nearest track in plain cosine, this much nearer than the next, is its near-copy and ranks first
# (on the soundtrack store: noisy copies found first 103 of 104 times instead of 65-92, new tracks' mAP unchanged)
COPY_GAP = 0.05
# the most tracks an outside query is re-ranked for exactly, by building the re-ranking again with it added as a track
# (CPU on 2 cores: 0.5 s at 2,000 tracks x 5,000 dims, 1.4 s at 4,000; 3 s at 10,000 x 512); beyond, locally (below)
EXACT_TRACKS = 4_000
# beyond EXACT_TRACKS, an outside query is re-ranked exactly within its this many nearest tracks, the others ranking by
# distance alone (0.32 / 0.42 s at 5,000 / 10,000 tracks x 5,000 dims, benchmarks/rerank.py; on 8,001 and 12,001
# clustered tracks the exact answer's ten first tracks, scores within 0.002, where the earlier approximation changed
# the first in half: notes/fixes_session31b.md)
LOCAL_TRACKS = 2_000
# Outside queries a re-ranker remembers its answer to (the last ones): the server computes one without its lock, then
# answers with it under the lock.
OUTSIDE_KEPT = 4


def _csr_matrix(arg: tuple, shape: tuple[int, ...]) -> sparse.csr_matrix:
    """``scipy.sparse.csr_matrix(arg, shape=shape)``, scipy.sparse imported here on first use (0.15 s)."""
    from scipy import sparse

    return sparse.csr_matrix(arg, shape=shape)


@dataclass(frozen=True)
class Reranker:
    """What re-ranking needs of a collection: the augmentation, each track's :data:`K1` best other tracks
    under the expanded augmented scores (with the lowest score of its row), the 3 tracks each track's
    expansion used, and the k-reciprocal vectors of every track (sparse [n, n], after the k2 averaging)."""

    unit: np.ndarray
    aug: Augmentation
    top: NeighbourGraph
    qe_rows: np.ndarray  # [n, EXPAND_K]
    qe_scores: np.ndarray  # [n, EXPAND_K]
    recip: sparse.csr_matrix
    recip0: sparse.csr_matrix  # before the k2 averaging
    lam: float = LAMBDA
    k2: int = K2
    k1: int = K1  # as asked: ``top.k`` is at most n - 1
    answered: dict[tuple, np.ndarray] = field(default_factory=dict, compare=False, repr=False)  # see outside()

    @cached_property
    def by_column(self) -> sparse.csc_matrix:
        """:attr:`recip` by columns (which tracks' vectors weigh each track)."""
        return self.recip.tocsc()

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """Re-ranked scores [m, n] of collection rows against the collection (higher is nearer; 0 for itself)."""
        return mixed(expanded_rows(self.unit, self.aug, rows), self.recip[rows], self.by_column, rows, self.lam)

    def outside(self, queries: np.ndarray) -> np.ndarray:
        """Re-ranked scores [m, n] of unit queries [m, dim] from outside the collection.

        Up to :data:`EXACT_TRACKS` tracks, exactly a query's row of the re-ranking of the collection with it added
        as one more track (built again per query: the query can change tracks' augmentation and neighbour lists).
        Beyond, the same within the query's :data:`LOCAL_TRACKS` nearest tracks, the others ranking by distance
        alone (:meth:`_outside`).

        The last :data:`OUTSIDE_KEPT` queries' rows are remembered: asked again, the same query is answered at once.
        A query of another dimension, or holding NaN or infinity, is a ValueError.
        """
        queries = np.atleast_2d(queries)
        if queries.ndim != 2 or queries.shape[1] != self.unit.shape[1]:
            raise ValueError(f"outside queries must be [m, {self.unit.shape[1]}] (the collection's dimensions), "
                             f"not of shape {queries.shape}")
        if not np.isfinite(queries.sum(dtype=np.float64)):
            bad = int(np.flatnonzero(~np.isfinite(queries).all(axis=1))[0])
            which = "the outside query" if len(queries) == 1 else f"outside query {bad}"
            raise ValueError(f"{which} holds NaN or infinity: it has no re-ranked scores")
        return np.stack([self._answer(q) for q in queries])

    def _answer(self, q: np.ndarray) -> np.ndarray:
        """Query ``q`` [dim]'s row of :meth:`outside`, remembered (never modified: callers get copies)."""
        exact = len(self.unit) <= EXACT_TRACKS
        key = (exact, q.dtype.str, q.tobytes())
        row = self.answered.get(key)
        if row is None:
            row = self._exact(q) if exact else self._outside(q)
            self.answered[key] = row
            for old in list(self.answered)[:-OUTSIDE_KEPT]:  # list() in one step: other threads may add meanwhile
                self.answered.pop(old, None)
        return row

    def _exact(self, q: np.ndarray) -> np.ndarray:
        """Query ``q`` [dim]'s re-ranked scores [n] with it added to the collection as track n."""
        n = len(self.unit)
        with_query = np.concatenate([self.unit, q[None].astype(self.unit.dtype)])
        return build_reranker(with_query, self.k1, self.k2, self.lam).rows(np.array([n]))[0, :n]

    def _outside(self, q: np.ndarray) -> np.ndarray:
        """Query ``q`` [dim]'s re-ranked scores [n] beyond :data:`EXACT_TRACKS`: its row of the re-ranking of its
        :data:`LOCAL_TRACKS` nearest tracks (plain cosine) with it added, as :meth:`_exact` builds the whole
        collection's; the other tracks score by distance alone (taken to share no k-reciprocal neighbour with it:
        Jaccard distance 1). Distances are normalised by the farthest track of the whole collection."""
        n = len(self.unit)
        near = np.sort(np.argsort(-(self.unit @ q), kind="stable")[:LOCAL_TRACKS])
        m = len(near)
        local = build_reranker(np.concatenate([self.unit[near], q[None].astype(self.unit.dtype)]), self.k1, self.k2,
                               self.lam)
        at = np.array([m])
        d = np.maximum(2.0 - 2.0 * augmented_query(self.unit, self.aug, q)[2].astype(np.float64), 0.0)
        d[near] = np.maximum(2.0 - 2.0 * expanded_rows(local.unit, local.aug, at)[0, :m].astype(np.float64), 0.0)
        shared = shared_weights(local.recip[at], local.by_column)[0, :m]
        jaccard = np.ones(n)
        jaccard[near] = 1.0 - shared / (2.0 - shared)
        return _score(jaccard, d / max(float(d.max()), 1e-12), self.lam)


def copy_first(scores: np.ndarray, cosines: np.ndarray, own: float, gap: float = COPY_GAP) -> np.ndarray:
    """An outside query's augmented or re-ranked ``scores`` [n] with its near-copy first: the track nearest to it in
    plain ``cosines`` [n], when at least ``gap`` nearer than the next, gets the query's ``own`` score (the best a
    score of that ranking can be: 1 augmented, 0 re-ranked). Augmentation and re-ranking can put other tracks of a
    copy's neighbourhood above it; the plain ranking never does."""
    if len(cosines) < 2:
        return scores
    first, second = np.argsort(-cosines, kind="stable")[:2]
    if cosines[first] - cosines[second] < gap:
        return scores
    out = scores.copy()
    out[first] = own
    return out


def build_reranker(unit: np.ndarray, k1: int = K1, k2: int = K2, lam: float = LAMBDA) -> Reranker:
    """The :class:`Reranker` of unit vectors [n, dim]: the DBA graph, every track's neighbours under the expanded
    augmented scores (:func:`expanded_graph`), then the k-reciprocal vectors. No vectors, or a vector holding NaN or
    infinity, is a ValueError."""
    if unit.ndim != 2 or not len(unit):
        raise ValueError(f"re-ranking needs vectors [n, dim] with n >= 1, not an array of shape {unit.shape}")
    if not np.isfinite(unit.sum(dtype=np.float64)):  # unit vectors: the sum is finite unless one is not
        bad = int(np.flatnonzero(~np.isfinite(unit).all(axis=1))[0])
        raise ValueError(f"re-ranking needs finite vectors: row {bad} holds NaN or infinity")
    if fits_whole(len(unit)):
        cosines = gram(unit)
        aug = Augmentation.from_graph(unit, held_graph(cosines, DBA_K))
        scores: AugmentedScores = HeldScores.of(aug, cosines)
    else:
        aug = Augmentation.from_graph(unit, neighbour_graph(unit, DBA_K))
        scores = BlockScores(aug.matrix(unit))
    top, qe_rows, qe_scores = expanded_graph(scores, len(unit), k1)
    v0 = reciprocal_vectors(scores, top, qe_rows, qe_scores)
    return Reranker(unit, aug, top, qe_rows, qe_scores, averaged(v0, top, k2), v0, lam, k2, k1)


class AugmentedScores(Protocol):
    """Scores between a collection's augmented unit vectors: plain, and from each row's expanded vector (as
    :func:`expanded_rows`: with its ``near`` rows [m, k], whose plain scores are ``sims`` [m, k])."""

    def plain(self, rows: np.ndarray) -> np.ndarray:
        """Scores [m, n] of rows against every augmented vector."""

    def expanded(self, rows: np.ndarray, near: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """Scores [m, n] of the rows' expanded vectors against every augmented vector."""

    def pairs(self, rows: np.ndarray, cols: np.ndarray, near: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """Scores [p] (the better of plain and expanded) of ``rows`` [p] against ``cols`` [p]; ``near`` and ``sims``
        [p, k] are each row's."""


@dataclass(frozen=True)
class HeldScores:
    """Augmented scores held whole: ``scores`` [n, n] of every augmented vector against every other, made in place
    from the cosines of the plain vectors. An augmented vector is a weighted sum of plain ones, so its scores are
    the same sums of cosines (the columns mixed in row blocks, then the rows in column blocks), and an expanded
    vector's scores are a weighted sum of rows of ``scores``."""

    scores: np.ndarray

    @classmethod
    def of(cls, aug: Augmentation, cosines: np.ndarray) -> HeldScores:
        """The scores of an augmentation, from the cosines [n, n] of its unit vectors (overwritten)."""
        n = len(cosines)
        terms = np.concatenate([np.arange(n)[:, None], aug.rows], axis=1)
        weights = np.concatenate([np.ones((n, 1), dtype=np.float32), aug.weights], axis=1) / aug.norms[:, None]
        mix = _sparse_rows(terms, weights, n)  # augmented vectors = mix @ unit vectors
        for start in range(0, n, CHUNK):  # cosines @ mix.T: a block of rows needs only its own rows
            block = cosines[start : start + CHUNK]
            block[:] = (mix @ np.ascontiguousarray(block.T)).T
        for start in range(0, n, CHUNK):  # mix @ that: a block of columns needs only its own columns
            block = cosines[:, start : start + CHUNK]
            block[:] = mix @ np.ascontiguousarray(block)
        return cls(cosines)

    def plain(self, rows: np.ndarray) -> np.ndarray:
        """Scores [m, n] of rows against every augmented vector."""
        return self.scores[rows]

    def expanded(self, rows: np.ndarray, near: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """Scores [m, n] of the rows' expanded vectors against every augmented vector."""
        terms, weights = self._expansion(rows, near, sims)
        return np.asarray(_sparse_rows(terms, weights, len(self.scores)) @ self.scores)

    def pairs(self, rows: np.ndarray, cols: np.ndarray, near: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """Scores [p] (the better of plain and expanded) of ``rows`` [p] against ``cols`` [p]."""
        terms, weights = self._expansion(rows, near, sims)
        expanded = np.einsum("pk,pk->p", weights, self.scores[terms, cols[:, None]])
        return np.maximum(self.scores[rows, cols], expanded)

    def _expansion(self, rows: np.ndarray, near: np.ndarray, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's expanded vector as a weighted sum of augmented vectors: their rows [m, k + 1] (its own first)
        and weights [m, k + 1] (alpha-QE's, over the norm of the sum)."""
        terms = np.concatenate([rows[:, None], near], axis=1)
        weights = np.concatenate([np.ones((len(rows), 1), dtype=np.float32),
                                  (np.maximum(sims, 0.0) ** EXPAND_ALPHA).astype(np.float32)], axis=1)
        square = np.einsum("mi,mij,mj->m", weights, self.scores[terms[:, :, None], terms[:, None, :]], weights)
        return terms, weights / np.maximum(np.sqrt(np.maximum(square, 0.0)), 1e-12)[:, None]


@dataclass(frozen=True)
class BlockScores:
    """Augmented scores by products of the augmented unit vectors [n, dim], in row blocks."""

    vectors: np.ndarray

    def plain(self, rows: np.ndarray) -> np.ndarray:
        """Scores [m, n] of rows against every augmented vector."""
        return self.vectors[rows] @ self.vectors.T

    def expanded(self, rows: np.ndarray, near: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """Scores [m, n] of the rows' expanded vectors against every augmented vector."""
        return expand(self.vectors[rows], self.vectors[near], sims, EXPAND_ALPHA) @ self.vectors.T

    def pairs(self, rows: np.ndarray, cols: np.ndarray, near: np.ndarray, sims: np.ndarray,
              block: int = 2048) -> np.ndarray:
        """Scores [p] (the better of plain and expanded) of ``rows`` [p] against ``cols`` [p]."""
        out = np.empty(len(rows), dtype=np.float32)
        for start in range(0, len(rows), block):
            part = slice(start, start + block)
            own, first, local = np.unique(rows[part], return_index=True, return_inverse=True)
            a = self.vectors[own]  # each row's vectors once, not once per pair
            e = expand(a, self.vectors[near[part][first]], sims[part][first], EXPAND_ALPHA)
            targets = self.vectors[cols[part]]
            out[part] = np.maximum(np.einsum("pd,pd->p", targets, a[local]), np.einsum("pd,pd->p", targets, e[local]))
        return out


def _sparse_rows(terms: np.ndarray, weights: np.ndarray, n: int) -> sparse.csr_matrix:
    """[m, n] with ``weights`` [m, k] at columns ``terms`` [m, k] (distinct in each row)."""
    return _csr_matrix((weights.ravel(), terms.ravel(), np.arange(0, terms.size + 1, terms.shape[1])),
                       shape=(len(terms), n))


def expanded_graph(scores: AugmentedScores, n: int, k1: int) -> tuple[NeighbourGraph, np.ndarray, np.ndarray]:
    """Each of ``n`` tracks' ``k1`` best other tracks under the expanded augmented scores, and the rows [n, k] and
    scores [n, k] of the tracks each track was expanded with."""
    k = min(EXPAND_K, n - 1)
    qe_rows = np.zeros((n, k), dtype=np.int64)
    qe_scores = np.zeros((n, k), dtype=np.float32)

    def expanded(rows: np.ndarray) -> np.ndarray:
        plain = scores.plain(rows)
        near = top_columns(plain, rows, k)
        sims = np.take_along_axis(plain, near, axis=1)
        qe_rows[rows], qe_scores[rows] = near, sims
        return np.maximum(plain, scores.expanded(rows, near, sims))

    return score_graph(expanded, n, k1), qe_rows, qe_scores


def reciprocal_vectors(scores: AugmentedScores, top: NeighbourGraph, qe_rows: np.ndarray,
                       qe_scores: np.ndarray) -> sparse.csr_matrix:
    """Every track's k-reciprocal vector [n, n] (Zhong et al.: weights exp(-distance) over its k-reciprocal
    neighbours, expanded with the reciprocal sets of their own near neighbours), before the k2 averaging
    (:func:`averaged`); from the neighbour lists and the tracks each track was expanded with."""
    members = _reciprocal_members(top)
    rows = np.repeat(np.arange(members.shape[0]), np.diff(members.indptr))
    pair = scores.pairs(rows, members.indices, qe_rows[rows], qe_scores[rows])
    d = np.maximum(2.0 - 2.0 * pair.astype(np.float64), 0.0)
    d[members.indices == rows] = 0.0
    maxd = np.maximum(2.0 - 2.0 * top.lowest.astype(np.float64), 1e-12)
    w = np.exp(-d / maxd[rows])
    w /= np.bincount(rows, weights=w, minlength=members.shape[0])[rows]
    return _csr_matrix((w, members.indices, members.indptr), shape=members.shape)


def _reciprocal_members(top: NeighbourGraph) -> sparse.csr_matrix:
    """Per track (row), the tracks its k-reciprocal vector weighs (columns, sorted): the tracks of its list that
    list it, grown by the same set at half the depth of each of those whose set is more than 2/3 in its own."""
    n = len(top.rows)
    rank = np.concatenate([np.arange(n)[:, None], top.rows], axis=1)  # each track first, as its own nearest
    near = _mutual(rank)
    close = _mutual(rank[:, : int(round(top.k / 2)) + 1])
    i, c = near.nonzero()
    shared = np.asarray((near @ close.T).tocsr()[i, c]).ravel()  # |near set of i & close set of c|
    grow = shared > 2 / 3 * np.diff(close.indptr)[c]
    grown = _csr_matrix((np.ones(int(grow.sum())), (i[grow], c[grow])), shape=(n, n))
    members = (near + grown @ close).tocsr()
    members.sort_indices()
    return members


def _mutual(rank: np.ndarray) -> sparse.csr_matrix:
    """[n, n] with 1 where track c is in the rank list of track i (a row of ``rank``) and i in that of c."""
    n, width = rank.shape
    listed = _csr_matrix((np.ones(rank.size), rank.ravel(), np.arange(0, rank.size + 1, width)), shape=(n, n))
    return listed.multiply(listed.T).tocsr()


def averaged(v: sparse.csr_matrix, top: NeighbourGraph, k2: int) -> sparse.csr_matrix:
    """Each row of ``v`` [n, n] replaced by the mean of its own and its k2 - 1 nearest tracks' rows."""
    n = v.shape[0]
    k2 = min(k2, top.k + 1)
    if k2 <= 1:
        return v
    rank = np.concatenate([np.arange(n)[:, None], top.rows[:, : k2 - 1]], axis=1)
    mean = _csr_matrix((np.full(n * k2, 1.0 / k2), rank.ravel(), np.arange(0, n * k2 + 1, k2)), shape=(n, n))
    return (mean @ v).tocsr()


def mixed(scores: np.ndarray, recip_rows: sparse.csr_matrix, recip: sparse.csc_matrix, rows: np.ndarray | None,
          lam: float = LAMBDA) -> np.ndarray:
    """Re-ranked scores [m, n]: minus ((1 - lam) Jaccard distance of k-reciprocal vectors + lam row-normalised
    distance). ``scores`` [m, n] are the queries' scores, ``recip_rows`` [m, n] their k-reciprocal vectors,
    ``recip`` the collection's by column, ``rows`` the queries' own rows (None: outside)."""
    d = np.maximum(2.0 - 2.0 * scores.astype(np.float64), 0.0)
    if rows is not None:
        d[np.arange(len(rows)), rows] = 0.0
    orig = d / np.maximum(d.max(axis=1, keepdims=True), 1e-12)
    mins = shared_weights(recip_rows, recip)
    jac = 1.0 - mins / (2.0 - mins)
    return _score(jac, orig, lam)


def _score(jaccard: np.ndarray, distance: np.ndarray, lam: float) -> np.ndarray:
    """Minus the mix of Jaccard and normalised distances, to 12 decimals: the sums of float weights leave ~1e-16
    where the Jaccard distance is 0 (a track's copy, itself), which printed as a re-ranked score of -0.0000; the
    ``+ 0.0`` turns rounding's -0.0 into 0."""
    scores = -(jaccard * (1.0 - lam) + distance * lam)
    np.round(scores, 12, out=scores)  # in place: at 10,000 tracks a matrix is 800 MB
    scores += 0.0
    return scores


def shared_weights(recip_rows: sparse.csr_matrix, recip: sparse.csc_matrix) -> np.ndarray:
    """[m, n]: per query and track, the sum over tracks c of min(query's weight of c, track's weight of c), from
    the queries' k-reciprocal vectors [m, n] and the collection's by column [n, n] (summed in the order of both)."""
    m, n = recip_rows.shape
    first = recip.indptr[recip_rows.indices]
    lengths = recip.indptr[recip_rows.indices + 1] - first
    ends = np.cumsum(lengths)
    at = np.repeat(first - ends + lengths, lengths) + np.arange(ends[-1] if len(ends) else 0)
    query = np.repeat(np.repeat(np.arange(m), np.diff(recip_rows.indptr)), lengths)
    weights = np.minimum(recip.data[at], np.repeat(recip_rows.data, lengths))
    return np.bincount(query * n + recip.indices[at], weights=weights, minlength=m * n).reshape(m, n)


def collection_reranker(store: FeatureStore, vs: VectorSet) -> Reranker:
    """:func:`build_reranker` of a vector set's unit vectors (not memoised itself:
    :func:`mess.search.rerank_store.load_reranker` is)."""
    return build_reranker(vs.unit())
