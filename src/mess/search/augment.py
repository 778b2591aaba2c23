"""The augmented ranking (``--ranking augmented``): database-side augmentation, then query expansion.

Every collection track is compared as its augmented vector: itself plus its :data:`~mess.search.rerank.DBA_K`
nearest other tracks, each weighted by its cosine (:class:`~mess.search.rerank.Augmentation`, applied in score
space, so the index keeps the plain vectors). A query is augmented the same way (a collection track is its own
augmented vector; a file from outside is expanded with its nearest tracks, as a track is) and then expanded as
every default query is (:mod:`mess.search.expansion`). These are the first two steps of ``--ranking reranked``
without its k-reciprocal third, and need only each track's nearest tracks: one product of the collection with
itself (seconds at 5,000 tracks).

It is the default for all layers together, with power normalisation: on real soundtracks x1.041 [1.018, 1.066]
mAP over the previous default on all 104 tracks, and x1.054 at the shape of a held-out set (10 tracks per game,
150 draws; better in 99% of them, where k-reciprocal re-ranking gave x1.042 and 85%); composers within a game
x0.97 [0.92, 1.02] where re-ranking gave x0.93 (docs/quality.md).
"""

from __future__ import annotations

import numpy as np

from mess.search.expansion import EXPAND_ALPHA, EXPAND_K, expand
from mess.search.graph import neighbour_graph
from mess.search.rerank import DBA_K, Augmentation


def build_augmentation(unit: np.ndarray) -> Augmentation:
    """The augmentation of unit vectors [n, dim] over each one's :data:`DBA_K` nearest others (exact)."""
    return Augmentation.from_graph(unit, neighbour_graph(unit, DBA_K))


def augmented_outside(unit: np.ndarray, aug: Augmentation, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A unit query [dim] from outside the collection, augmented from its :data:`DBA_K` nearest tracks as a track
    is: its augmented vector [dim], and its augmented, expanded scores [n] against the collection (the scores a
    collection track gets from :func:`~mess.search.rerank.expanded_rows`)."""
    n = len(unit)
    cos = unit @ query
    near = np.argsort(-cos, kind="stable")[: min(DBA_K, n)]
    a = expand(query[None], unit[near][None], cos[near][None], EXPAND_ALPHA)
    plain = aug.scores(a @ unit.T)[0]
    near = np.argsort(-plain, kind="stable")[: min(EXPAND_K, n)]
    e = expand(a, aug.vectors(unit, near)[None], plain[near][None], EXPAND_ALPHA)
    return a[0], np.maximum(plain, aug.scores(e @ unit.T)[0])
