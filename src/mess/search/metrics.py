"""Retrieval quality with binary relevance (same label = relevant): precision@k, AP/mAP, nDCG@k.

All metrics are computed from one ranked relevance matrix per evaluation (one
argsort), vectorised over queries; they agree with
``sklearn.metrics.average_precision_score`` and ``sklearn.metrics.ndcg_score``
(checked in the tests) without their per-query Python loop, except where scores tie:
tied items rank lower item first (a stable sort, as the neighbour graphs of
:mod:`mess.search.graph` order them), where scikit-learn averages over the tied block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RetrievalScores:
    """Mean precision@k, mean average precision and mean nDCG@k over queries."""

    k: int
    precision: float
    map: float
    ndcg: float


def ranking(scores: np.ndarray, query_rows: np.ndarray) -> np.ndarray:
    """Each query's items [q, n-1], best first, its own item (``query_rows``) left out wherever it sorts.

    Ties go to the lower item (a stable sort); -inf scores rank last, and NaN scores after them.
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float64), axis=1, kind="stable")
    others = order != np.asarray(query_rows)[:, None]  # the query's own item, wherever a NaN or -inf sorted it
    return order[others].reshape(len(order), max(order.shape[1] - 1, 0))


def ranked_relevance(scores: np.ndarray, query_labels: np.ndarray, item_labels: np.ndarray,
                     query_rows: np.ndarray) -> np.ndarray:
    """Relevance [q, n-1] of each query's :func:`ranking` of the items, best first, its own item left out.

    Args:
        scores: similarities [q, n] of queries to all items (higher = closer).
        query_labels: label of each query.
        item_labels: label of each item.
        query_rows: the item index of each query (dropped from its ranking).
    """
    return item_labels[ranking(scores, query_rows)] == query_labels[:, None]


def precision_at_k(rel: np.ndarray, k: int) -> np.ndarray:
    """Relevant items among the first k, divided by k, per query (also when fewer than k items are ranked: a
    collection smaller than k made every method, chance too, score the same fraction)."""
    return rel[:, :k].sum(axis=1) / k


def average_precision(rel: np.ndarray) -> np.ndarray:
    """Average precision per query over the full ranking (0 for queries with no relevant item)."""
    hits = np.cumsum(rel, axis=1)
    prec = hits / np.arange(1, rel.shape[1] + 1)
    n_rel = rel.sum(axis=1)
    return np.where(n_rel > 0, (prec * rel).sum(axis=1) / np.maximum(n_rel, 1), 0.0)


def ndcg_at_k(rel: np.ndarray, k: int) -> np.ndarray:
    """Normalised discounted cumulative gain of the first k results, per query."""
    disc = 1.0 / np.log2(np.arange(2, rel.shape[1] + 2))
    dcg = (rel[:, :k] * disc[:k]).sum(axis=1)
    ideal_hits = np.minimum(rel.sum(axis=1), k)
    idcg = np.concatenate([[0.0], np.cumsum(disc[:k])])[ideal_hits]
    return np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), 0.0)


def retrieval_scores(rel: np.ndarray, k: int) -> RetrievalScores:
    """All three metrics, averaged over queries."""
    return RetrievalScores(k, float(precision_at_k(rel, k).mean()), float(average_precision(rel).mean()),
                           float(ndcg_at_k(rel, k).mean()))


def chance_scores(query_labels: np.ndarray, item_labels: np.ndarray, query_rows: np.ndarray, k: int,
                  repeats: int = 20, seed: int = 0) -> RetrievalScores:
    """The same metrics for random rankings (averaged over ``repeats``): the floor to beat."""
    rng = np.random.default_rng(seed)
    runs = [retrieval_scores(ranked_relevance(rng.random((len(query_rows), len(item_labels))), query_labels,
                                              item_labels, query_rows), k) for _ in range(repeats)]
    return RetrievalScores(k, float(np.mean([r.precision for r in runs])), float(np.mean([r.map for r in runs])),
                           float(np.mean([r.ndcg for r in runs])))
