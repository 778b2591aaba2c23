"""Retrieval quality of a set of tracks querying each other by cosine similarity (same label = relevant)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mess.search.metrics import RetrievalScores, ndcg_at_k, ranked_relevance, retrieval_scores


def relevance(unit: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Ranked relevance [q, n-1]: each track of ``unit`` [n, dim] queries all the others.

    Only tracks with at least one other track of their label are queries.
    """
    return ranked(lambda queries: unit[queries] @ unit.T, labels)


def ranked(similarity: Callable[[np.ndarray], np.ndarray], labels: np.ndarray) -> np.ndarray:
    """Ranked relevance [q, n-1] of the tracks querying each other by ``similarity`` (query rows -> their scores
    [q, n] against every track), as :func:`relevance` ranks cosines."""
    lab = np.asarray(labels).astype(str)
    names, inverse, counts = np.unique(lab, return_inverse=True, return_counts=True)
    queries = np.flatnonzero(counts[inverse] >= 2)
    if len(queries) == 0 or len(names) < 2:
        raise ValueError("retrieval needs at least 2 labels, one of them with 2+ tracks")
    return ranked_relevance(similarity(queries), lab[queries], lab, queries)


def scores(unit: np.ndarray, labels: np.ndarray, k: int = 10) -> RetrievalScores:
    """Mean precision@k, mAP and nDCG@k of the tracks querying each other."""
    return retrieval_scores(relevance(unit, labels), k)


def ndcg_per_query(unit: np.ndarray, labels: np.ndarray, k: int = 10) -> np.ndarray:
    """nDCG@k of each query (for paired comparisons between vector sets)."""
    return ndcg_at_k(relevance(unit, labels), k)
