"""Query expansion: search again with the query averaged with its nearest collection tracks (alpha-QE).

A collection of one soundtrack, one album or one artist forms a neighbourhood; a query
that lands near its edge finds the rest of it better from the neighbourhood's centre.
alpha-QE (Radenovic et al., 2018) moves the query to the weighted mean of itself and its
``k`` nearest tracks, each weighted by its cosine to the query raised to ``alpha``, so
weak neighbours count little. A track then ranks by the better of its cosine to the query
and to the expanded query (:func:`expanded_scores`): expansion promotes tracks from the query's
neighbourhood but never demotes a near-copy of the query. Nothing is trained: only the
collection's own vectors are used. On real soundtracks (docs/quality.md) k = 3, alpha = 1
was chosen by leave-one-game-out in every fold; it is the default for cosine matching.
"""

from __future__ import annotations

import numpy as np

from mess.search.counts import whole_count

EXPAND_K = 3  # neighbours averaged into the query (0 = no expansion)
EXPAND_ALPHA = 1.0


def expansion(match: str, expand: int | None) -> int:
    """Neighbours to expand a query with: ``expand`` when given, else :data:`EXPAND_K` for cosine matching
    (``match`` "mean") and 0 for segment matching, which has no expansion."""
    if expand is not None:
        return whole_count(expand, "expand", "neighbours", 0)
    return EXPAND_K if match == "mean" else 0


def expand(queries: np.ndarray, neighbours: np.ndarray, sims: np.ndarray, alpha: float = EXPAND_ALPHA) -> np.ndarray:
    """Expanded unit queries [m, dim] from unit queries [m, dim], their neighbours' unit vectors [m, k, dim]
    and the neighbours' cosines to the query [m, k] (negative cosines get no weight)."""
    weights = np.maximum(sims, 0.0) ** alpha
    out = queries + np.einsum("mk,mkd->md", weights.astype(queries.dtype), neighbours)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def expanded_scores(plain: np.ndarray, expanded: np.ndarray) -> np.ndarray:
    """Ranking scores with expansion: per track, the better of its cosine to the query (``plain``) and to the
    expanded query (``expanded``; arrays of the same shape)."""
    return np.maximum(plain, expanded)


def expand_collection(
    unit: np.ndarray, k: int = EXPAND_K, alpha: float = EXPAND_ALPHA, chunk: int = 1024
) -> np.ndarray:
    """Every collection track's expanded query [n, dim] from its ``k`` nearest other tracks (exact; in row chunks)."""
    if k <= 0 or len(unit) < 2:
        return unit
    k = min(k, len(unit) - 1)
    out = np.empty_like(unit)
    for start in range(0, len(unit), chunk):
        rows = np.arange(start, min(start + chunk, len(unit)))
        sims = unit[rows] @ unit.T
        sims[np.arange(len(rows)), rows] = -np.inf
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        out[rows] = expand(unit[rows], unit[nearest], np.take_along_axis(sims, nearest, axis=1), alpha)
    return out
