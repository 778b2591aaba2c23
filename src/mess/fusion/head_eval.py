"""Leave-one-label-out scoring of heads and fixed vector sets, with paired bootstrap intervals over queries.

In a fold, the tracks of one held-out label (a game) are the queries; whatever the method
trains sees only the other labels. Each query ranks every other track of the data (all
labels, same-label = relevant) in the fold's vectors, after the search's own
preprocessing (collection centring, per-block L2). Per-query AP, P@k and nDCG@k from all
folds form one array per method, so two methods compare query by query.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mess.fusion.head import HeadData
from mess.models.head import Head
from mess.search.metrics import average_precision, ndcg_at_k, precision_at_k, ranked_relevance
from mess.search.vectors import Preprocessor

Trainer = Callable[[HeadData, np.ndarray], Head]


@dataclass(frozen=True)
class QueryScores:
    """Per-query retrieval scores of one method, aligned with :attr:`HeadData.labels` rows."""

    name: str
    ap: np.ndarray
    precision: np.ndarray
    ndcg: np.ndarray


def unit_vectors(raw: np.ndarray, blocks: tuple[int, ...]) -> np.ndarray:
    """The search's default preprocessing: centre on the collection, L2-normalise each block."""
    return Preprocessor.fit(raw, blocks, "center").apply(raw)


def _score_rows(unit: np.ndarray, labels: np.ndarray, rows: np.ndarray, k_p: int, k_n: int) -> tuple:
    rel = ranked_relevance(unit[rows] @ unit.T, labels[rows], labels, rows)
    return average_precision(rel), precision_at_k(rel, k_p), ndcg_at_k(rel, k_n)


def score_fixed(name: str, raw: np.ndarray, blocks: tuple[int, ...], labels: np.ndarray, k_p: int = 5,
                k_n: int = 10) -> QueryScores:
    """Scores of vectors that need no training (a layer, all layers), every track a query."""
    ap, p, nd = _score_rows(unit_vectors(raw, blocks), labels, np.arange(len(labels)), k_p, k_n)
    return QueryScores(name, ap, p, nd)


def score_logo(name: str, data: HeadData, train: Trainer, k_p: int = 5, k_n: int = 10) -> QueryScores:
    """Leave-one-label-out: for each label, train on the others and query with its tracks."""
    ap, p, nd = (np.zeros(len(data.labels)) for _ in range(3))
    for label in np.unique(data.labels):
        held = np.flatnonzero(data.labels == label)
        head = train(data, np.flatnonzero(data.labels != label))
        out = head.transform(data.x)
        ap[held], p[held], nd[held] = _score_rows(unit_vectors(out, (out.shape[1],)), data.labels, held, k_p, k_n)
    return QueryScores(name, ap, p, nd)


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% bootstrap interval."""

    mean: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap(values: np.ndarray, base: np.ndarray | None = None, n: int = 2000, seed: int = 0) -> Interval:
    """Mean of ``values`` (or the ratio of its mean to ``base``'s, resampling the same queries), 95% interval."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(n, len(values)))
    if base is None:
        stats = values[picks].mean(axis=1)
        mean = float(values.mean())
    else:
        stats = values[picks].mean(axis=1) / np.maximum(base[picks].mean(axis=1), 1e-12)
        mean = float(values.mean() / max(base.mean(), 1e-12))
    low, high = np.percentile(stats, [2.5, 97.5])
    return Interval(mean, float(low), float(high))
