"""Database-side augmentation (mess.search.augment) against DBA and alpha-QE written here from their definitions
(Arandjelovic & Zisserman 2012; Radenovic et al. 2018) with numpy, on small random collections: every score, not
only the order, and collections of 1 to k+1 tracks."""

from __future__ import annotations

import numpy as np
import pytest

from mess.search.augment import (
    DBA_K,
    Augmentation,
    _blocks,
    augmented_query,
    build_augmentation,
    expanded_rows,
)
from mess.search.graph import neighbour_graph


def _units(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _qe(query: np.ndarray, others: np.ndarray, cos: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """alpha-QE: the query plus its neighbours weighted by max(cos, 0)^alpha, L2-normalised."""
    v = query.astype(np.float64) + (np.clip(cos, 0.0, None) ** alpha) @ others.astype(np.float64)
    return v / (np.linalg.norm(v) or 1.0)  # a zero vector with no neighbour weight stays zero


def _nearest(cos: np.ndarray, k: int, own: int | None = None) -> np.ndarray:
    """The k highest of a row of cosines (its ``own`` column left out), best first, ties to the lower column."""
    cols = np.array([c for c in np.argsort(-cos, kind="stable") if c != own], dtype=np.int64)
    return cols[:k]


def _dba(unit: np.ndarray, k: int = 3, alpha: float = 1.0) -> np.ndarray:
    """Every track expanded with its k nearest other tracks: the augmented collection."""
    sims = unit.astype(np.float64) @ unit.T.astype(np.float64)
    out = np.empty(unit.shape)
    for i in range(len(unit)):
        near = _nearest(sims[i], min(k, len(unit) - 1), own=i)
        out[i] = _qe(unit[i], unit[near], sims[i, near], alpha)
    return out


def _track_scores(unit: np.ndarray, row: int) -> np.ndarray:
    """A collection track's scores: its augmented vector against the augmented collection, then expanded with
    its 3 nearest other augmented tracks; the better of the two per track."""
    aug = _dba(unit)
    plain = aug @ aug[row]
    near = _nearest(plain, min(3, len(unit) - 1), own=row)
    return np.maximum(plain, aug @ _qe(aug[row], aug[near], plain[near]))


def _outside_scores(unit: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An outside query: augmented from its 3 nearest tracks, scored against the augmented collection, expanded."""
    aug = _dba(unit)
    cos = unit.astype(np.float64) @ query
    near = _nearest(cos, min(3, len(unit)))
    a = _qe(query, unit[near], cos[near])
    plain = aug @ a
    near = _nearest(plain, min(3, len(unit)))
    return a, plain, np.maximum(plain, aug @ _qe(a, aug[near], plain[near]))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 40])
def test_every_track_s_scores_are_dba_then_alpha_qe(n: int) -> None:
    """Collections of one track, fewer than k+1, exactly k+1 (4) and more, in 16 dims: about half of a small
    collection's neighbours have negative cosines and must get no weight."""
    unit = _units(n, 16, seed=n)
    aug = build_augmentation(unit)
    assert DBA_K == 3
    np.testing.assert_allclose(aug.matrix(unit), _dba(unit), atol=1e-5)
    got = expanded_rows(unit, aug, np.arange(n))
    want = np.array([_track_scores(unit, r) for r in range(n)])
    np.testing.assert_allclose(got, want, atol=1e-5)
    some = np.arange(n)[::2]
    np.testing.assert_allclose(expanded_rows(unit, aug, some), want[some], atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 4, 40])
def test_an_outside_query_is_augmented_from_its_nearest_tracks_then_expanded(n: int) -> None:
    unit = _units(n, 16, seed=10 + n)
    aug = build_augmentation(unit)
    rng = np.random.default_rng(n)
    for _ in range(3):
        q = rng.standard_normal(16)
        q = (q / np.linalg.norm(q)).astype(np.float32)
        got = augmented_query(unit, aug, q)
        for g, w in zip(got, _outside_scores(unit, q), strict=True):
            np.testing.assert_allclose(g, w, atol=1e-5)


def test_the_weights_are_cosines_raised_to_alpha() -> None:
    """from_graph with alpha = 2 (the default 1 hides any mistake in the power)."""
    unit = _units(12, 6, seed=2)
    aug = Augmentation.from_graph(unit, neighbour_graph(unit, 3), alpha=2.0)
    np.testing.assert_allclose(aug.matrix(unit), _dba(unit, 3, 2.0), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(aug.matrix(unit), axis=1), 1.0, atol=1e-5)


def test_scores_in_score_space_are_cosines_to_the_augmented_vectors() -> None:
    """Augmentation.scores of any queries' plain cosines equals their cosines to the augmented vectors, and the
    cosines passed in are left as they were."""
    unit = _units(30, 8, seed=5)
    aug = build_augmentation(unit)
    queries = _units(7, 8, seed=6)
    cos = queries @ unit.T
    before = cos.copy()
    np.testing.assert_allclose(aug.scores(cos), queries @ _dba(unit).T, atol=1e-5)
    np.testing.assert_array_equal(cos, before)
    rows = np.array([4, 0, 29])
    np.testing.assert_allclose(aug.vectors(unit, rows), _dba(unit)[rows], atol=1e-5)


def test_a_zero_vector_is_augmented_to_its_neighbours_or_to_zero_never_nan() -> None:
    """A track with a zero vector (no direction) has cosine 0 with every track: nothing weighs into it and it
    stays zero; it weighs nothing into the others; every score stays finite."""
    unit = _units(6, 8, seed=8)
    unit[2] = 0.0
    aug = build_augmentation(unit)
    mat = aug.matrix(unit)
    assert np.isfinite(mat).all()
    np.testing.assert_array_equal(mat[2], 0.0)
    scores = expanded_rows(unit, aug, np.arange(6))
    assert np.isfinite(scores).all()
    others = np.delete(np.arange(6), 2)
    np.testing.assert_allclose(mat[others], _dba(unit)[others], atol=1e-5)


def test_blocks_cover_every_row_once_in_order() -> None:
    assert [b.tolist() for b in _blocks(10, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [b.tolist() for b in _blocks(8, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert _blocks(0, 4) == []
    assert np.concatenate(_blocks(5000)).tolist() == list(range(5000)) and len(_blocks(5000)) == 2
