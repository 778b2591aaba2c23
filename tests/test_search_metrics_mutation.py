"""Retrieval metrics (mess.search.metrics) at their edges: non-finite scores, integer scores, queries with nothing
relevant, tiny collections; expected answers from scikit-learn or from the toy ranking's own definition."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, ndcg_score

from mess.search.metrics import (
    average_precision,
    ndcg_at_k,
    precision_at_k,
    ranked_relevance,
    retrieval_scores,
)


def _sklearn(scores: np.ndarray, labels: np.ndarray, q: int, k: int) -> tuple[float, float]:
    """scikit-learn's AP and nDCG@k of query ``q`` over the other items (ties absent in the callers' scores)."""
    others = np.arange(len(labels)) != q
    truth = (labels[others] == labels[q]).astype(int)
    return (float(average_precision_score(truth, scores[q, others])),
            float(ndcg_score(truth[None], scores[q, others][None], k=k)))


@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_a_non_finite_score_never_puts_the_query_in_its_own_ranking(bad: float) -> None:
    """A query's own item is left out of its ranking whatever the other scores hold. Its own score was set to -inf
    and the last of the sorted row dropped: with a NaN (sorted after everything) or another -inf after it, that
    other item was dropped instead and the query counted itself as a relevant hit."""
    labels = np.array([0, 1, 0, 1])
    scores = np.array([[0.9, 0.5, 0.2, bad]])  # query 0: item 2 is its only relevant other; item 3 has no score
    rel = ranked_relevance(scores, labels[:1], labels, np.array([0]))
    # the ranking of the other items: 1 (0.5), 2 (0.2), then 3 (NaN/-inf last): relevant at rank 2 only
    np.testing.assert_array_equal(rel, [[False, True, False]])
    assert average_precision(rel)[0] == pytest.approx(1 / 2)
    assert precision_at_k(rel, 3)[0] == pytest.approx(1 / 3)


def test_non_finite_scores_rank_last_and_agree_with_sklearn_elsewhere() -> None:
    """Each query's items with a finite score rank as scikit-learn ranks them; those without, after them."""
    rng = np.random.default_rng(7)
    n, k = 24, 5
    labels = rng.integers(3, size=n)
    scores = rng.random((n, n))
    rows = np.arange(n)
    worst = rng.random((n, n)) < 0.2
    worst[rows, rows] = False
    nan = worst & (rng.random((n, n)) < 0.5)
    spoiled = np.where(worst, np.where(nan, np.nan, -np.inf), scores)
    rel = ranked_relevance(spoiled, labels, labels, rows)
    # the same order in finite scores: -inf below every score, NaN below -inf, each group by item (a stable sort)
    floor = np.where(worst, np.where(nan, -3.0, -2.0) - np.arange(n)[None, :] * 1e-6, scores)
    ap, nd = average_precision(rel), ndcg_at_k(rel, k)
    for q in range(n):
        if (labels[rows != q] == labels[q]).any():
            want_ap, want_nd = _sklearn(floor, labels, q, k)
            assert ap[q] == pytest.approx(want_ap)
            assert nd[q] == pytest.approx(want_nd)
    assert rel.shape == (n, n - 1)


def test_integer_scores_are_ranked_and_the_callers_array_is_left_as_it_was() -> None:
    """Scores may be counts (votes, shared tags): an int matrix is ranked like its float copy, and the caller's
    matrix keeps its diagonal (it is the caller's, read again after the metrics)."""
    labels = np.array([0, 0, 1, 1, 0])
    votes = np.array([[9, 3, 5, 1, 4],
                      [2, 9, 1, 0, 3],
                      [0, 1, 9, 4, 2],
                      [1, 0, 2, 9, 3],
                      [5, 1, 0, 2, 9]])
    before = votes.copy()
    rows = np.arange(5)
    rel = ranked_relevance(votes, labels, labels, rows)
    np.testing.assert_array_equal(votes, before)
    for q in rows:
        want_ap, want_nd = _sklearn(votes.astype(float), labels, q, 3)
        assert average_precision(rel)[q] == pytest.approx(want_ap)
        assert ndcg_at_k(rel, 3)[q] == pytest.approx(want_nd)
    floats = votes.astype(np.float64)
    ranked_relevance(floats, labels, labels, rows)
    np.testing.assert_array_equal(floats, before)


def test_toy_rankings_by_hand() -> None:
    """AP and nDCG of two rankings written out: relevant at ranks 1 and 3 of 4, and at ranks 2 and 3 of 3."""
    rel = np.array([[True, False, True, False]])
    assert average_precision(rel)[0] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert precision_at_k(rel, 3)[0] == pytest.approx(2 / 3)
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    assert ndcg_at_k(rel, 3)[0] == pytest.approx(dcg / (1 / math.log2(2) + 1 / math.log2(3)))
    rel = np.array([[False, True, True]])
    assert average_precision(rel)[0] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert ndcg_at_k(rel, 2)[0] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))


def test_a_query_with_nothing_relevant_scores_zero_without_a_warning() -> None:
    """A composer with one track: no relevant other, every metric 0, and no 'invalid value' RuntimeWarning from a
    0/0 on the way (mess evaluate would print it)."""
    labels = np.array([0, 1, 1, 2, 2, 2])
    rng = np.random.default_rng(1)
    scores = rng.random((6, 6))
    rows = np.arange(6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rel = ranked_relevance(scores, labels, labels, rows)
        got = (precision_at_k(rel, 3)[0], average_precision(rel)[0], ndcg_at_k(rel, 3)[0])
        summary = retrieval_scores(rel, 3)
    assert got == (0.0, 0.0, 0.0)
    want = [_sklearn(scores, labels, q, 3) for q in range(1, 6)]
    assert summary.map == pytest.approx(sum(a for a, _ in want) / 6)
    assert summary.ndcg == pytest.approx(sum(d for _, d in want) / 6)


@pytest.mark.parametrize("n", [1, 2, 6, 7, 30])
def test_k_at_and_past_the_collection_size(n: int) -> None:
    """k = 5 on collections of 1 track, 2, k+1 and more: scikit-learn's nDCG@k and AP, precision over k."""
    k = 5
    rng = np.random.default_rng(n)
    labels = rng.integers(2, size=n)
    scores = rng.random((n, n))
    rows = np.arange(n)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rel = ranked_relevance(scores, labels, labels, rows)
        ap, nd, p = average_precision(rel), ndcg_at_k(rel, k), precision_at_k(rel, k)
    assert rel.shape == (n, n - 1)
    for q in range(n):
        others = rows != q
        truth = labels[others] == labels[q]
        if not truth.any():
            assert ap[q] == nd[q] == p[q] == 0.0
            continue
        want_ap, want_nd = _sklearn(scores, labels, q, k)
        assert ap[q] == pytest.approx(want_ap)
        assert nd[q] == pytest.approx(want_nd)
        top = np.argsort(-scores[q, others])[:k]
        assert p[q] == pytest.approx(truth[top].sum() / k)


def test_tied_scores_rank_the_lower_item_first() -> None:
    """Four others tied for query 0: ranked 1, 2, 3, 4 (ties to the lower row, as mess.search.graph orders
    neighbours), so the two relevant items 1 and 2 come first: AP 1, where scikit-learn, averaging over the
    tied block, gives the share of relevant items (0.5)."""
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([[1.0, 0.5, 0.5, 0.5, 0.5]])
    rel = ranked_relevance(scores, labels[:1], labels, np.array([0]))
    np.testing.assert_array_equal(rel, [[True, True, False, False]])
    assert average_precision(rel)[0] == 1.0
    assert average_precision_score(labels[1:] == 0, scores[0, 1:]) == pytest.approx(0.5)
    flipped = ranked_relevance(scores[:, [0, 3, 4, 1, 2]], labels[:1], labels[[0, 3, 4, 1, 2]], np.array([0]))
    assert average_precision(flipped)[0] == pytest.approx((1 / 3 + 2 / 4) / 2)


def test_the_hubness_neighbour_lists_never_hold_the_query_whatever_its_scores() -> None:
    """`mess evaluate`'s k-occurrence hubness set each query's own score to -inf and took the first k of the sorted
    row: with a NaN or -inf among the others and k = n - 1, the query could sit in its own neighbour list (a k-NN
    slot counted for it). Expected: the neighbour lists written by hand, each query's other items best first."""
    from mess.search.evaluate import _score
    from mess.search.hubness import hubness_stats

    labels = np.array([0, 1, 0, 1])
    scores = np.array([[1.0, 0.5, 0.2, np.nan],
                       [0.3, 1.0, -np.inf, 0.6],
                       [0.4, np.nan, 1.0, 0.1],
                       [0.2, 0.7, 0.6, 1.0]])
    got = _score("all", "all", "cosine", None, lambda rows: scores[rows], labels, np.arange(4), k=3)
    lists = np.array([[1, 2, 3], [3, 0, 2], [0, 3, 1], [1, 2, 0]])  # other items by score, -inf then NaN last
    assert got.hub == hubness_stats(lists, 4)
