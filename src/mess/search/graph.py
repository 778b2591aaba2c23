"""Neighbour graphs of a collection: each track's nearest other tracks and their scores, computed exactly.

A graph is built in row blocks from any score function (cosines of unit vectors, or the scores
of :mod:`mess.search.rerank`). Costs one matrix product of the collection with itself: half of one
(:func:`gram`, BLAS syrk, the matrix held whole) while the n x n matrix fits in :data:`GRAM_BYTES`,
else a full one in row blocks, so memory stays at one block of rows by the collection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

CHUNK = 1024  # rows of the score matrix held at once
TOP_BY_ARGMAX = 32  # up to this many neighbours, found by repeated argmax
GRAM_BYTES = 2 << 30  # the largest n x n score matrix held whole (n = 23,170 in float32)


@dataclass(frozen=True)
class NeighbourGraph:
    """Per track (row of the vector set): its ``k`` nearest other tracks, best first, and their scores."""

    rows: np.ndarray  # [n, k] int64 row positions
    scores: np.ndarray  # [n, k] float32
    lowest: np.ndarray  # [n] float32: the lowest score of the row over the other tracks

    @property
    def k(self) -> int:
        """Neighbours per track."""
        return int(self.rows.shape[1])


def score_graph(scores: Callable[[np.ndarray], np.ndarray], n: int, k: int, chunk: int = CHUNK) -> NeighbourGraph:
    """The ``k`` best other tracks of each of ``n`` tracks under ``scores(rows)`` -> [len(rows), n] (rows of
    the score matrix, a new array each call, overwritten here; the diagonal is ignored). Ties go to the lower
    row, as a stable sort does."""
    k = max(0, min(k, n - 1))
    rows_out = np.zeros((n, k), dtype=np.int64)
    scores_out = np.zeros((n, k), dtype=np.float32)
    lowest = np.zeros(n, dtype=np.float32)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        s = np.asarray(scores(rows), dtype=np.float32)
        s[np.arange(len(rows)), rows] = np.inf
        lowest[rows] = s.min(axis=1) if n > 1 else 0.0
        s[np.arange(len(rows)), rows] = -np.inf
        best = top_columns(s, None, k)
        rows_out[rows] = best
        scores_out[rows] = np.take_along_axis(s, best, axis=1)
    return NeighbourGraph(rows_out, scores_out, lowest)


def top_columns(scores: np.ndarray, own: np.ndarray | None, k: int) -> np.ndarray:
    """Columns [m, k] of each row's ``k`` highest scores, best first, ties to the lower column (a row's ``own``
    column skipped): ``k`` passes of argmax for a few, faster than a partition; a stable sort of a partition
    for more."""
    work = scores.copy()
    every = np.arange(len(work))
    if own is not None:
        work[every, own] = -np.inf
    if k > TOP_BY_ARGMAX:
        part = np.sort(np.argpartition(-work, k - 1, axis=1)[:, :k], axis=1)  # ties at the cut: any of them
        order = np.argsort(-np.take_along_axis(work, part, axis=1), axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1)
    out = np.zeros((len(work), k), dtype=np.int64)
    for j in range(k):
        out[:, j] = np.argmax(work, axis=1)
        work[every, out[:, j]] = -np.inf
    return out


def neighbour_graph(unit: np.ndarray, k: int, chunk: int = CHUNK) -> NeighbourGraph:
    """Cosine graph of unit vectors [n, dim]: each row's ``k`` nearest other rows."""
    if fits_whole(len(unit)):
        return held_graph(gram(unit), k, chunk)
    return score_graph(lambda rows: unit[rows] @ unit.T, len(unit), k, chunk)


def held_graph(scores: np.ndarray, k: int, chunk: int = CHUNK) -> NeighbourGraph:
    """The graph of a score matrix [n, n] held whole: each row's ``k`` best other rows."""
    return score_graph(lambda rows: scores[rows], len(scores), k, chunk)


def fits_whole(n: int) -> bool:
    """Whether an n x n float32 score matrix is held whole (:data:`GRAM_BYTES`)."""
    return 4 * n * n <= GRAM_BYTES


def gram(vectors: np.ndarray, block: int = 2048) -> np.ndarray:
    """All products ``vectors @ vectors.T`` [n, n] float32, in half the work of that product (syrk computes one
    triangle; the other is copied from it in blocks). No vectors, or vectors of no dimension, are not given to
    BLAS, which refuses them aloud."""
    from scipy.linalg import blas  # here: scipy.linalg costs `mess check` and the other commands a tenth of a second

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if not x.size:
        return np.zeros((len(x), len(x)), dtype=np.float32)
    full = blas.ssyrk(1.0, x.T, trans=1).T  # C-ordered view with the lower triangle filled
    n = len(full)
    for start in range(0, n, block):
        stop = min(start + block, n)
        full[start:stop, stop:] = full[stop:, start:stop].T
        diagonal = full[start:stop, start:stop]
        diagonal[:] = np.tril(diagonal) + np.tril(diagonal, -1).T
    return full

