"""The augmented ranking (``--ranking augmented``): database-side augmentation, then query expansion.

Every collection track is compared as its augmented vector: itself plus its :data:`DBA_K` nearest other tracks,
each weighted by its cosine, ``a_i = (u_i + sum_t w_it u_t) / norm_i`` with ``w = max(cos, 0)``. That is linear in
the plain unit vectors, so a query's score against ``a_j`` is the same weighted sum of its cosines to ``u_j`` and to
``u_j``'s neighbours, over ``norm_j`` (:meth:`Augmentation.scores`): the collection keeps its plain vectors (and
its index) and one small neighbour graph. A query is augmented the same way (a collection track is its own
augmented vector; a file from outside is expanded with its nearest tracks, as a track is) and then expanded as
every default query is (:mod:`mess.search.expansion`). These are the first two steps of ``--ranking reranked``
without its k-reciprocal third, and need only each track's nearest tracks: one product of the collection with
itself (seconds at 5,000 tracks).

It is the default for all layers together, with power normalisation: on real soundtracks x1.041 [1.018, 1.066]
mAP over the previous default on all 104 tracks, and x1.055 at the shape of a held-out set (10 tracks per game,
300 draws in ``benchmarks/quality.py``; better in all of them, where k-reciprocal re-ranking gave x1.045 and 88%);
composers within a game x0.97 [0.92, 1.02] where re-ranking gave x0.93 (docs/quality.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mess.search.expansion import EXPAND_ALPHA, EXPAND_K, expand
from mess.search.graph import NeighbourGraph, neighbour_graph, top_columns

DBA_K = 3


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
        for rows in _blocks(len(unit)):
            norms[rows] = np.linalg.norm(sums.vectors(unit, rows), axis=1)
        return cls(graph.rows, weights, np.maximum(norms, 1e-12))

    def vectors(self, unit: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The augmented unit vectors [m, dim] of collection rows."""
        summed = unit[rows] + np.einsum("mk,mkd->md", self.weights[rows], unit[self.rows[rows]])
        return summed / self.norms[rows, None]

    def matrix(self, unit: np.ndarray) -> np.ndarray:
        """Every track's augmented unit vector [n, dim] (:meth:`vectors` of all rows, in blocks)."""
        out = np.empty(unit.shape, dtype=np.float32)
        for rows in _blocks(len(unit)):
            out[rows] = self.vectors(unit, rows)
        return out

    def scores(self, cosines: np.ndarray) -> np.ndarray:
        """Scores [m, n] of queries against the augmented vectors, from their cosines [m, n] to the plain ones."""
        out = np.array(cosines, dtype=np.float32)
        for t in range(self.rows.shape[1]):
            part = np.take(cosines, self.rows[:, t], axis=1)
            part *= self.weights[:, t]
            out += part
        out /= self.norms
        return out


def build_augmentation(unit: np.ndarray) -> Augmentation:
    """The augmentation of unit vectors [n, dim] over each one's :data:`DBA_K` nearest others (exact)."""
    return Augmentation.from_graph(unit, neighbour_graph(unit, DBA_K))


def augmented_query(unit: np.ndarray, aug: Augmentation, query: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                                     np.ndarray]:
    """A unit query [dim] from outside the collection, augmented from its :data:`DBA_K` nearest tracks as a track
    is: its augmented vector [dim], its scores [n] against the augmented collection, and those after the default
    expansion (the scores a collection track gets from :func:`expanded_rows`)."""
    n = len(unit)
    cos = unit @ query
    near = np.argsort(-cos, kind="stable")[: min(DBA_K, n)]
    a = expand(query[None], unit[near][None], cos[near][None], EXPAND_ALPHA)
    plain = aug.scores(a @ unit.T)[0]
    near = np.argsort(-plain, kind="stable")[: min(EXPAND_K, n)]
    e = expand(a, aug.vectors(unit, near)[None], plain[near][None], EXPAND_ALPHA)
    return a[0], plain, np.maximum(plain, aug.scores(e @ unit.T)[0])


def expanded_rows(unit: np.ndarray, aug: Augmentation, rows: np.ndarray) -> np.ndarray:
    """Scores [m, n] of collection rows against the collection after DBA and query expansion."""
    a = aug.vectors(unit, rows)
    plain = aug.scores(a @ unit.T)
    near = top_columns(plain, rows, min(EXPAND_K, len(unit) - 1))
    neighbours = aug.vectors(unit, near.ravel()).reshape(len(rows), near.shape[1], unit.shape[1])
    e = expand(a, neighbours, np.take_along_axis(plain, near, axis=1), EXPAND_ALPHA)
    return np.maximum(plain, aug.scores(e @ unit.T))


def _blocks(n: int, size: int = 4096) -> list[np.ndarray]:
    """Rows 0..n-1 in consecutive blocks of ``size``."""
    return [np.arange(start, min(start + size, n)) for start in range(0, n, size)]
