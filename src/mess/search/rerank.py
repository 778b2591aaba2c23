"""Re-ranking: database-side augmentation, query expansion, then k-reciprocal re-ranking (``--rerank``).

Three unsupervised steps on the collection's own vectors (docs/quality.md, issue 17):

1. Database-side augmentation (DBA): every track's vector is replaced by its alpha-QE expansion over its
   :data:`DBA_K` nearest other tracks, ``a_i = (u_i + sum_t w_it u_t) / norm_i`` with ``w = max(cos, 0)``.
   That is linear in the plain unit vectors, so a query's score against ``a_j`` is the same weighted sum
   of its cosines to ``u_j`` and to ``u_j``'s neighbours, over ``norm_j`` (:meth:`Augmentation.scores`):
   the collection keeps its plain vectors and one small neighbour graph.
2. The default query expansion (:mod:`mess.search.expansion`) over the augmented vectors: a track ranks
   by the better of its score to the augmented query and to that query expanded with its 3 nearest tracks.
3. k-reciprocal re-ranking (Zhong et al., CVPR 2017, k1 = 10, k2 = 3, lambda = 0.3) of those scores: the
   Jaccard distance of the tracks' k-reciprocal neighbourhoods, mixed with the (row-normalised) distance
   ``2 - 2 score``. It needs every track's neighbour list under the scores of step 2: one exact pass over
   the collection, kept in :class:`Reranker` (memoised per vector set; ``mess index --rerank`` saves it beside
   the index, :mod:`mess.search.rerank_store`).

A query that is a collection track is its own augmented vector, exactly as every track of the
collection is. Scores here are exact (no index): each query costs a product with the whole collection.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import sparse

from mess.search.expansion import EXPAND_ALPHA, EXPAND_K, expand
from mess.search.graph import NeighbourGraph, collection_graph, neighbour_graph, score_graph, top_columns
from mess.search.vectors import VectorSet
from mess.store import FeatureStore

DBA_K = 3
K1 = 10
K2 = 3
LAMBDA = 0.3
# an outside query's nearest track in plain cosine, this much nearer than the next, is its near-copy and ranks first
# (on the soundtrack store: noisy copies found first 103 of 104 times instead of 65-92, new tracks' mAP unchanged)
COPY_GAP = 0.05


@dataclass(frozen=True)
class Augmentation:
    """DBA of a collection: per track its neighbours' rows [n, k], their weights [n, k] and the norm [n] of
    ``u_i + sum_t w_it u_t`` (so the augmented vector is that sum divided by the norm)."""

    rows: np.ndarray
    weights: np.ndarray
    norms: np.ndarray

    @classmethod
    def from_graph(cls, unit: np.ndarray, graph: NeighbourGraph, alpha: float = EXPAND_ALPHA) -> Augmentation:
        """The augmentation of unit vectors [n, dim] over the neighbours of ``graph`` (its k of them)."""
        weights = (np.maximum(graph.scores, 0.0) ** alpha).astype(np.float32)
        sums = cls(graph.rows, weights, np.ones(len(unit), dtype=np.float32))  # norms of 1: its vectors are the sums
        norms = np.empty(len(unit), dtype=np.float32)
        for start in range(0, len(unit), 4096):
            rows = np.arange(start, min(start + 4096, len(unit)))
            norms[rows] = np.linalg.norm(sums.vectors(unit, rows), axis=1)
        return cls(graph.rows, weights, np.maximum(norms, 1e-12))

    def vectors(self, unit: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The augmented unit vectors [m, dim] of collection rows."""
        summed = unit[rows] + np.einsum("mk,mkd->md", self.weights[rows], unit[self.rows[rows]])
        return summed / self.norms[rows, None]

    def scores(self, cosines: np.ndarray) -> np.ndarray:
        """Scores [m, n] of queries against the augmented vectors, from their cosines [m, n] to the plain ones."""
        out = np.array(cosines, dtype=np.float32)
        for t in range(self.rows.shape[1]):
            part = np.take(cosines, self.rows[:, t], axis=1)
            part *= self.weights[:, t]
            out += part
        out /= self.norms
        return out


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

    @cached_property
    def by_column(self) -> sparse.csc_matrix:
        """:attr:`recip` by columns (which tracks' vectors weigh each track)."""
        return self.recip.tocsc()

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """Re-ranked scores [m, n] of collection rows against the collection (higher is nearer; 0 for itself)."""
        return mixed(expanded_rows(self.unit, self.aug, rows), self.recip[rows], self.by_column, rows, self.lam)

    def expanded(self, i: int) -> np.ndarray:
        """Collection row ``i``'s expanded augmented query [dim] (as :func:`expanded_rows` scores with)."""
        a = self.aug.vectors(self.unit, np.array([i]))
        near = self.aug.vectors(self.unit, self.qe_rows[i])[None]
        return expand(a, near, self.qe_scores[i][None], EXPAND_ALPHA)[0]

    def outside(self, queries: np.ndarray) -> np.ndarray:
        """Re-ranked scores [m, n] of unit queries [m, dim] from outside the collection.

        A query is augmented from its :data:`DBA_K` nearest tracks as the tracks were, then scored as a
        collection track would be, with itself added to the other tracks' neighbour lists where its score
        from them earns a place; the collection's augmentation and k-reciprocal vectors stay as they are.
        """
        return np.stack([self._outside(q) for q in np.atleast_2d(queries)])

    def _outside(self, q: np.ndarray) -> np.ndarray:
        n, k1 = len(self.unit), self.top.k
        cos = self.unit @ q
        k = min(DBA_K, n)
        near = np.argsort(-cos, kind="stable")[:k]
        a = expand(q[None], self.unit[near][None], cos[near][None], EXPAND_ALPHA)
        plain = self.aug.scores(a @ self.unit.T)[0]
        near = np.argsort(-plain, kind="stable")[: min(EXPAND_K, n)]
        e = expand(a, self.aug.vectors(self.unit, near)[None], plain[near][None], EXPAND_ALPHA)
        f = np.maximum(plain, self.aug.scores(e @ self.unit.T)[0])
        mine = np.argsort(-f, kind="stable")[:k1]  # the query's nearest tracks; the query itself is row n
        from_them: dict[int, float] = {}

        def score_from(x: int) -> float:  # the query's score in track x's row (x's own expansion)
            if x not in from_them:
                from_them[x] = max(float(plain[x]), float(self.expanded(x) @ a[0]))
            return from_them[x]

        def ranked(x: int, depth: int) -> list[int]:  # node x first, then its ``depth`` nearest, the query included
            if x == n:
                return [n, *mine[:depth].tolist()]
            others = self.top.rows[x, :depth].tolist()
            at = int((self.top.scores[x, :depth] >= score_from(x)).sum())
            return [x, *(others[:at] + [n] + others[at:])[:depth]]

        half = int(round(k1 / 2))
        krn = [c for c in ranked(n, k1) if n in ranked(c, k1)]
        kre = list(krn)
        for c in krn:
            ck = [x for x in ranked(c, half) if c in ranked(x, half)]
            if len(set(ck) & set(krn)) > 2 / 3 * len(ck):
                kre.extend(ck)
        members = np.unique(kre)
        d = np.maximum(2.0 - 2.0 * np.append(f, 1.0).astype(np.float64), 0.0)  # the query's own distance 0
        w = np.exp(-d[members] / max(float(d.max()), 1e-12))
        own = np.zeros(n + 1)
        own[members] = w / w.sum()

        def before_k2(x: int) -> np.ndarray:  # node x's k-reciprocal vector [n + 1], the query's column last
            if x == n:
                return own
            row = np.zeros(n + 1)
            row[self.recip0[x].indices] = self.recip0[x].data
            if x in krn:  # the query is in x's k-reciprocal set: its weight joins x's (x's own weight is 1/sum)
                total = 1.0 / row[x]
                dq = max(2.0 - 2.0 * score_from(x), 0.0)
                row *= total
                row[n] = np.exp(-dq / max(2.0 - 2.0 * float(self.top.lowest[x]), dq, 1e-12))
                row /= total + row[n]
            return row

        def vector(x: int) -> np.ndarray:  # node x's vector after the k2 averaging
            return np.mean([before_k2(m) for m in ranked(x, self.k2 - 1)[: self.k2]], axis=0)

        v = vector(n)
        mins_changed = {}
        changed = set(krn) - {n}
        near_changed = np.flatnonzero(np.isin(self.top.rows[:, : self.k2 - 1], list(changed)).any(axis=1))
        for x in changed | set(near_changed.tolist()) | {int(c) for c in mine if n in ranked(int(c), self.k2 - 1)}:
            mins_changed[x] = float(np.minimum(v, vector(x)).sum())
        nonzero = np.flatnonzero(v[:n])
        scores = mixed(f[None], sparse.csr_matrix((v[nonzero], nonzero, [0, len(nonzero)]), shape=(1, n)),
                       self.by_column, None, self.lam, mins_changed)
        return scores[0]


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


def expanded_rows(unit: np.ndarray, aug: Augmentation, rows: np.ndarray) -> np.ndarray:
    """Scores [m, n] of collection rows against the collection after DBA and query expansion."""
    return _expanded(unit, aug, rows)[0]


def _expanded(unit: np.ndarray, aug: Augmentation, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`expanded_rows`, with the rows [m, k] and scores [m, k] of the tracks each query was expanded with."""
    a = aug.vectors(unit, rows)
    plain = aug.scores(a @ unit.T)
    near = top_columns(plain, rows, min(EXPAND_K, len(unit) - 1))
    sims = np.take_along_axis(plain, near, axis=1)
    neighbours = aug.vectors(unit, near.ravel()).reshape(len(rows), near.shape[1], unit.shape[1])
    e = expand(a, neighbours, sims, EXPAND_ALPHA)
    return np.maximum(plain, aug.scores(e @ unit.T)), near, sims


def pair_scores(r: Reranker, i: int, cols: np.ndarray) -> np.ndarray:
    """Scores of collection row ``i`` against rows ``cols`` after DBA and expansion (as :func:`expanded_rows`)."""
    targets = r.aug.vectors(r.unit, cols)
    return np.maximum(targets @ r.aug.vectors(r.unit, np.array([i]))[0], targets @ r.expanded(i))


def build_reranker(unit: np.ndarray, k1: int = K1, k2: int = K2, lam: float = LAMBDA) -> Reranker:
    """The :class:`Reranker` of unit vectors [n, dim]: two exact passes over the collection in row blocks (the
    DBA graph: one product; the expanded augmented scores: two), then the k-reciprocal vectors."""
    aug = Augmentation.from_graph(unit, neighbour_graph(unit, DBA_K))
    return _reranker(unit, aug, k1, k2, lam)


def _reranker(unit: np.ndarray, aug: Augmentation, k1: int, k2: int, lam: float) -> Reranker:
    n = len(unit)
    k = min(EXPAND_K, n - 1)
    qe_rows = np.zeros((n, k), dtype=np.int64)
    qe_scores = np.zeros((n, k), dtype=np.float32)

    def scores(rows: np.ndarray) -> np.ndarray:
        s, near, sims = _expanded(unit, aug, rows)
        qe_rows[rows], qe_scores[rows] = near, sims
        return s

    top = score_graph(scores, n, k1)
    empty = sparse.csr_matrix((n, n), dtype=np.float64)
    v0 = reciprocal_vectors(Reranker(unit, aug, top, qe_rows, qe_scores, empty, empty, lam, k2))
    return Reranker(unit, aug, top, qe_rows, qe_scores, averaged(v0, top, k2), v0, lam, k2)


def reciprocal_vectors(r: Reranker) -> sparse.csr_matrix:
    """Every track's k-reciprocal vector [n, n] (Zhong et al.: weights exp(-distance) over its k-reciprocal
    neighbours, expanded with the reciprocal sets of their own near neighbours), before the k2 averaging
    (:func:`averaged`)."""
    n, k1 = len(r.unit), r.top.k
    rank = np.concatenate([np.arange(n)[:, None], r.top.rows], axis=1)  # each track first, as its own nearest
    half = int(round(k1 / 2))
    in_top = _membership(rank)
    in_half = _membership(rank[:, : half + 1])
    maxd = np.maximum(2.0 - 2.0 * r.top.lowest.astype(np.float64), 1e-12)
    indptr, cols, vals = [0], [], []
    for i in range(n):
        krn = np.array([c for c in rank[i] if (i, int(c)) in in_top], dtype=np.int64)
        kre = [krn]
        for c in krn:
            ck = np.array([x for x in rank[c, : half + 1] if (int(c), int(x)) in in_half], dtype=np.int64)
            if len(np.intersect1d(ck, krn)) > 2 / 3 * len(ck):
                kre.append(ck)
        members = np.unique(np.concatenate(kre))
        d = np.maximum(2.0 - 2.0 * pair_scores(r, i, members).astype(np.float64), 0.0)
        d[members == i] = 0.0
        w = np.exp(-d / maxd[i])
        cols.append(members)
        vals.append(w / w.sum())
        indptr.append(indptr[-1] + len(members))
    return sparse.csr_matrix((np.concatenate(vals), np.concatenate(cols), np.array(indptr)), shape=(n, n))


def averaged(v: sparse.csr_matrix, top: NeighbourGraph, k2: int) -> sparse.csr_matrix:
    """Each row of ``v`` [n, n] replaced by the mean of its own and its k2 - 1 nearest tracks' rows."""
    n = v.shape[0]
    k2 = min(k2, top.k + 1)
    if k2 <= 1:
        return v
    rank = np.concatenate([np.arange(n)[:, None], top.rows[:, : k2 - 1]], axis=1)
    mean = sparse.csr_matrix((np.full(n * k2, 1.0 / k2), rank.ravel(), np.arange(0, n * k2 + 1, k2)), shape=(n, n))
    return (mean @ v).tocsr()


def _membership(rank: np.ndarray) -> set[tuple[int, int]]:
    """(member, track) for every track's rank list."""
    return {(int(m), i) for i in range(len(rank)) for m in rank[i]}


def mixed(scores: np.ndarray, recip_rows: sparse.csr_matrix, recip: sparse.csc_matrix, rows: np.ndarray | None,
          lam: float = LAMBDA, overlap: dict[int, float] | None = None) -> np.ndarray:
    """Re-ranked scores [m, n]: minus ((1 - lam) Jaccard distance of k-reciprocal vectors + lam row-normalised
    distance). ``scores`` [m, n] are the queries' scores, ``recip_rows`` [m, n] their k-reciprocal vectors,
    ``recip`` the collection's by column, ``rows`` the queries' own rows (None: outside); ``overlap`` replaces
    the shared weight of a single query with some tracks (whose vectors the query changes)."""
    d = np.maximum(2.0 - 2.0 * scores.astype(np.float64), 0.0)
    if rows is not None:
        d[np.arange(len(rows)), rows] = 0.0
    orig = d / np.maximum(d.max(axis=1, keepdims=True), 1e-12)
    mins = np.zeros_like(orig)
    for q in range(recip_rows.shape[0]):
        lo, hi = recip_rows.indptr[q], recip_rows.indptr[q + 1]
        for col, val in zip(recip_rows.indices[lo:hi], recip_rows.data[lo:hi], strict=True):
            a, b = recip.indptr[col], recip.indptr[col + 1]
            mins[q, recip.indices[a:b]] += np.minimum(recip.data[a:b], val)
    for col, shared in (overlap or {}).items():
        mins[0, col] = shared
    jac = 1.0 - mins / (2.0 - mins)
    return -(jac * (1.0 - lam) + orig * lam)


def collection_reranker(store: FeatureStore, vs: VectorSet) -> Reranker:
    """:func:`build_reranker` of a vector set's unit vectors, over its memoised cosine graph (not memoised itself:
    :func:`mess.search.rerank_store.load_reranker` is)."""
    graph = collection_graph(store, vs, DBA_K)
    return _reranker(vs.unit(), Augmentation.from_graph(vs.unit(), graph), K1, K2, LAMBDA)
