"""Ranking metrics of artist similarity against reference lists: overlap, recall, nDCG at k, MRR."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mess.artists.profiles import ArtistError

RANDOM_REPEATS = 20
MIN_QUERIES = 5  # reference artists below which comparing scorings concludes nothing (as the fusion report's labels)


@dataclass(frozen=True)
class Metrics:
    """Mean ranking quality over the query artists that have a usable reference list.

    overlap@k: shared artists between our top k and the reference's top k, over
    ``min(k, list length)``; recall@k: share of the whole reference list in our top k;
    nDCG@k: graded by reference position (first = 1, last = 1/length); MRR: mean of
    1 / rank of the first reference artist in our full ranking.
    """

    k: int
    queries: int
    overlap: float
    recall: float
    ndcg: float
    mrr: float


def _gains(matched: dict[int, list[int]], queries: list[int], n: int) -> np.ndarray:
    """[queries, n] graded relevance: reference position p of L gets (L - p) / L, else 0."""
    gains = np.zeros((len(queries), n))
    for row, q in enumerate(queries):
        relevant = matched[q]
        gains[row, relevant] = (len(relevant) - np.arange(len(relevant))) / len(relevant)
    return gains


def evaluate(scores: np.ndarray, matched: dict[int, list[int]], k: int = 10,
             queries: list[int] | None = None) -> Metrics:
    """Rank every other artist by ``scores[q]`` (ties by row) and compare with the reference.

    ``matched`` maps a query row to its relevant rows in reference order
    (:func:`mess.artists.reference.match_reference`); ``queries`` restricts the
    evaluation to some of them (e.g. a held-out split).
    """
    if k < 1:
        raise ArtistError(f"k must be 1 or more; got {k}")
    queries = sorted(matched) if queries is None else [q for q in queries if matched.get(q)]
    if not queries:
        return Metrics(k, 0, float("nan"), float("nan"), float("nan"), float("nan"))
    n = scores.shape[1]
    rows = np.array(scores[queries], dtype=np.float64)
    rows[np.arange(len(queries)), queries] = -np.inf  # never recommend the query itself
    order = np.argsort(-rows, axis=1, kind="stable")[:, : n - 1]
    gains = _gains(matched, queries, n)
    ranked_gains = np.take_along_axis(gains, order, axis=1)
    lengths = np.array([len(matched[q]) for q in queries])
    top = ranked_gains[:, :k] > 0
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.array([((length - np.arange(min(k, length))) / length * discounts[: min(k, length)]).sum()
                      for length in lengths])
    ref_top = np.zeros_like(gains, dtype=bool)
    for i, q in enumerate(queries):
        ref_top[i, matched[q][:k]] = True
    overlap = np.take_along_axis(ref_top, order[:, :k], axis=1).sum(axis=1) / np.minimum(k, lengths)
    first_hit = (ranked_gains > 0).argmax(axis=1)
    return Metrics(
        k=k, queries=len(queries), overlap=float(overlap.mean()), recall=float((top.sum(axis=1) / lengths).mean()),
        ndcg=float(((ranked_gains[:, :k] * discounts[: order[:, :k].shape[1]]).sum(axis=1) / ideal).mean()),
        mrr=float((1.0 / (first_hit + 1)).mean()))


def random_baseline(n_artists: int, matched: dict[int, list[int]], k: int = 10,
                    queries: list[int] | None = None, repeats: int = RANDOM_REPEATS, seed: int = 0) -> Metrics:
    """Expected metrics of a random ranking (mean over ``repeats`` seeded shuffles)."""
    rng = np.random.default_rng(seed)
    runs = [evaluate(rng.random((n_artists, n_artists)), matched, k, queries) for _ in range(repeats)]
    return Metrics(k, runs[0].queries, *(float(np.mean([getattr(r, f) for r in runs]))
                                         for f in ("overlap", "recall", "ndcg", "mrr")))
