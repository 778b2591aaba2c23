"""The re-ranking build as it was before it was made faster (commit 8a9ac60): mess.search.graph and
mess.search.rerank, frozen, for benchmarks/rerank.py to time and compare against. Not used by mess itself. The pieces
the faster build left as they were (NeighbourGraph, top_columns, Augmentation) are the library's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import sparse

from mess.search.augment import Augmentation
from mess.search.expansion import EXPAND_ALPHA, EXPAND_K, expand
from mess.search.graph import NeighbourGraph, top_columns

CHUNK = 1024  # rows of the score matrix held at once


def score_graph(scores: Callable[[np.ndarray], np.ndarray], n: int, k: int, chunk: int = CHUNK) -> NeighbourGraph:
    """The ``k`` best other tracks of each of ``n`` tracks under ``scores(rows)`` -> [len(rows), n] (rows of
    the score matrix; the diagonal is ignored). Ties go to the lower row, as a stable sort does."""
    k = max(0, min(k, n - 1))
    rows_out = np.zeros((n, k), dtype=np.int64)
    scores_out = np.zeros((n, k), dtype=np.float32)
    lowest = np.zeros(n, dtype=np.float32)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        s = np.array(scores(rows), dtype=np.float32)
        s[np.arange(len(rows)), rows] = np.inf
        lowest[rows] = s.min(axis=1) if n > 1 else 0.0
        s[np.arange(len(rows)), rows] = -np.inf
        best = top_columns(s, None, k)
        rows_out[rows] = best
        scores_out[rows] = np.take_along_axis(s, best, axis=1)
    return NeighbourGraph(rows_out, scores_out, lowest)


def neighbour_graph(unit: np.ndarray, k: int, chunk: int = CHUNK) -> NeighbourGraph:
    """Cosine graph of unit vectors [n, dim]: each row's ``k`` nearest other rows."""
    return score_graph(lambda rows: unit[rows] @ unit.T, len(unit), k, chunk)


DBA_K = 3
K1 = 10
K2 = 3
LAMBDA = 0.3


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
