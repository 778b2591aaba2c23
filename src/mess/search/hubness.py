"""Hubness: measuring it (k-occurrence skewness) and reducing it (CSLS, mutual proximity).

In high-dimensional embedding spaces a few "hub" tracks land in almost everyone's
nearest-neighbour lists while "anti-hubs" are nobody's neighbour. The k-occurrence
``N_k(x)`` counts how many k-NN lists contain ``x``; its skewness is the standard
hubness measure (0 for a symmetric spread, > 1 is strong hubness).

Two re-scorings that down-weight hubs, both driven by per-track neighbourhood statistics:

* CSLS (Conneau et al. 2018): ``2 cos(q, x) - r_q - r_x`` with ``r`` the mean cosine
  of a vector to its k nearest collection neighbours.
* Mutual proximity (Schnitzer et al. 2012, Gaussian variant): the probability that
  ``x`` is closer to ``q`` than a typical track is to ``q`` *and* ``q`` closer to ``x``
  than a typical track is to ``x``: ``SF_q(d) * SF_x(d)`` with ``d = 1 - cos`` and each
  track's distance distribution modelled as a normal with its own mean and spread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

METHODS = ("csls", "mp")
KnnFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class HubnessStats:
    """k-occurrence summary of a collection's k-NN graph."""

    k: int
    skewness: float
    antihub_fraction: float
    top1pct_share: float
    max_occurrence: int


def k_occurrence(neighbours: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` items appears in the k-NN lists (row indices; -1 = none)."""
    flat = neighbours[neighbours >= 0].ravel()
    return np.bincount(flat, minlength=n)


def hubness_stats(neighbours: np.ndarray, n: int) -> HubnessStats:
    """Skewness of N_k, fraction of anti-hubs (N_k = 0) and share of k-NN slots taken by the top 1%; all 0 for
    no items."""
    from scipy.stats import skew  # here, not at the top: `mess similar` starts without scipy.stats

    if n == 0:
        return HubnessStats(neighbours.shape[1], 0.0, 0.0, 0.0, 0)
    occ = k_occurrence(neighbours, n)
    top = np.sort(occ)[::-1][: max(1, n // 100)]
    slots = max(int(occ.sum()), 1)
    sk = float(skew(occ)) if occ.std() > 0 else 0.0
    return HubnessStats(neighbours.shape[1], sk, float((occ == 0).mean()), float(top.sum() / slots), int(occ.max()))


def csls(sim: np.ndarray, r_query: np.ndarray, r_items: np.ndarray) -> np.ndarray:
    """CSLS scores for similarities [q, m] given each query's and item's mean k-NN similarity."""
    return 2.0 * sim - r_query[:, None] - r_items[None, :]


def mutual_proximity(sim: np.ndarray, mu_q: np.ndarray, sd_q: np.ndarray, mu_x: np.ndarray,
                     sd_x: np.ndarray) -> np.ndarray:
    """Gaussian mutual proximity [q, m] from cosine similarities and per-track distance mean/std."""
    from scipy.special import ndtr

    d = 1.0 - sim
    sf_q = ndtr((mu_q[:, None] - d) / sd_q[:, None])
    sf_x = ndtr((mu_x[None, :] - d) / sd_x[None, :])
    return sf_q * sf_x


@dataclass
class NeighbourhoodStats:
    """Per-vector statistics the re-scorings need: mean k-NN similarity, distance mean and std."""

    r: np.ndarray
    mu: np.ndarray
    sd: np.ndarray


class HubnessReducer:
    """Computes neighbourhood statistics against a collection and re-scores candidate lists."""

    def __init__(self, method: str, base: np.ndarray, knn: KnnFn, *, base_ids: np.ndarray | None = None,
                 k: int = 10, sample: int = 2048, seed: int = 0, keys: np.ndarray | None = None) -> None:
        """Set up against a collection.

        Args:
            base: the collection's unit vectors.
            knn: ``knn(vectors, k) -> (similarities, ids)`` search over the collection.
            base_ids: id of each base row as ``knn`` returns it (default: row numbers).
            k: neighbourhood size for CSLS.
            sample: collection rows used to estimate each distance distribution.
            keys: one per base row (e.g. content hashes): the sample is drawn in their order, not the rows', which
                follow track ids, numbered in the order a store committed the tracks.
        """
        if method not in METHODS:
            raise ValueError(f"unknown hubness reduction {method!r}; choose one of {', '.join(METHODS)}")
        self.method, self.knn, self.k = method, knn, k
        ids = np.arange(len(base)) if base_ids is None else np.asarray(base_ids)
        rows = np.arange(len(base))
        if len(base) > sample:
            order = np.argsort(np.asarray(keys), kind="stable") if keys is not None else rows
            rows = order[np.sort(np.random.default_rng(seed).choice(len(base), sample, replace=False))]
        self.sample_ids, self.sample = ids[rows], base[rows]

    def stats(self, vectors: np.ndarray, own_ids: np.ndarray | None = None) -> NeighbourhoodStats:
        """Statistics of ``vectors``; each one's own id in ``own_ids`` (or -1) is left out of its neighbourhood."""
        own = np.full(len(vectors), -1) if own_ids is None else np.asarray(own_ids)
        sims, found = self.knn(vectors, self.k + 1)
        mask = (found != own[:, None]) & (found >= 0)
        keep = np.cumsum(mask, axis=1) <= self.k
        r = np.where(mask & keep, sims, 0.0).sum(axis=1) / np.maximum((mask & keep).sum(axis=1), 1)
        dist = 1.0 - vectors @ self.sample.T
        valid = self.sample_ids[None, :] != own[:, None]
        count = np.maximum(valid.sum(axis=1), 1)
        mu = np.where(valid, dist, 0.0).sum(axis=1) / count
        var = np.where(valid, (dist - mu[:, None]) ** 2, 0.0).sum(axis=1) / count
        return NeighbourhoodStats(r.astype(np.float64), mu, np.sqrt(np.maximum(var, 1e-12)))

    def rescore(self, sim: np.ndarray, query: NeighbourhoodStats, items: NeighbourhoodStats) -> np.ndarray:
        """Re-scored similarities [q, m] (higher = closer) for queries x items."""
        if self.method == "csls":
            return csls(sim, query.r, items.r)
        return mutual_proximity(sim, query.mu, query.sd, items.mu, items.sd)
