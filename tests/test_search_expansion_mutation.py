"""Query expansion (mess.search.expansion) against alpha-QE written here from its definition (Radenovic et al.
2018): the query plus its k nearest other tracks weighted by max(cos, 0)^alpha, L2-normalised; in-process and
fast, at the edges (one track, k past the collection, row chunks, zero vectors, float16-rounded vectors)."""

from __future__ import annotations

import numpy as np
import pytest

from mess.search.expansion import EXPAND_ALPHA, EXPAND_K, expand, expand_collection, expanded_scores, expansion


def _units(n: int, dim: int, seed: int, dtype: type = np.float32) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


def _alpha_qe(unit: np.ndarray, k: int, alpha: float) -> np.ndarray:
    """Every track's expanded query, one at a time: its k nearest others by cosine (ties to the lower row)."""
    u = unit.astype(np.float64)
    sims = u @ u.T
    out = np.empty_like(u)
    for i in range(len(u)):
        others = np.delete(np.arange(len(u)), i)
        top = others[np.argsort(-sims[i, others], kind="stable")[:k]]
        v = u[i] + (np.clip(sims[i, top], 0.0, None) ** alpha) @ u[top]
        out[i] = v / (np.linalg.norm(v) or 1.0)
    return out


def test_the_documented_defaults() -> None:
    """docs/search.md: '--expand 3' by default for cosine matching, none for segment matching, 0 turns it off;
    alpha 1 (docs/quality.md: k = 3, alpha = 1)."""
    assert (EXPAND_K, EXPAND_ALPHA) == (3, 1.0)
    assert expansion("mean", None) == 3
    assert expansion("segments", None) == 0
    assert expansion("mean", 0) == 0
    assert expansion("segments", 2) == 2
    assert expansion("mean", 5) == 5


@pytest.mark.parametrize(("n", "k", "alpha", "chunk"), [(1, 3, 1.0, 1024), (2, 3, 1.0, 1024), (4, 3, 1.0, 1024),
                                                        (4, 9, 1.0, 1024), (25, 3, 2.0, 7), (25, 1, 0.5, 25),
                                                        (25, 24, 1.0, 4), (300, 1, 1.0, 128)])
def test_expand_collection_is_alpha_qe(n: int, k: int, alpha: float, chunk: int) -> None:
    """Chunks of 7 and 4 rows (the last one short) and of exactly the collection; k at and past n - 1; k = 1 in a
    collection large enough that numpy's partition does not sort the whole row."""
    unit = _units(n, 8, seed=n + k)
    got = expand_collection(unit, k, alpha, chunk=chunk)
    assert got.dtype == unit.dtype and got.shape == unit.shape
    np.testing.assert_allclose(got, _alpha_qe(unit, min(k, n - 1), alpha), atol=1e-6)


def test_two_tracks_expand_each_other() -> None:
    """The smallest collection that has a neighbour: each track is expanded with the other (cosine 0.6 here)."""
    unit = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    want = np.array([[1.36, 0.48], [1.2, 0.8]])  # u0 + 0.6 u1 and u1 + 0.6 u0, then normalised
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(expand_collection(unit, 3), want, atol=1e-6)
    np.testing.assert_array_equal(expand_collection(unit[:1], 3), unit[:1])


def test_k_zero_is_no_expansion() -> None:
    unit = _units(10, 8, seed=1)
    np.testing.assert_array_equal(expand_collection(unit, 0), unit)
    np.testing.assert_array_equal(expand_collection(unit, -1), unit)


def test_expand_weighs_by_positive_cosines_to_the_alpha() -> None:
    """expand itself, float64 and float32: negative cosines get no weight, a query of zeros with no weight stays
    zeros (not NaN), every other result has unit length."""
    rng = np.random.default_rng(3)
    for dtype in (np.float64, np.float32):
        queries = _units(5, 6, seed=4, dtype=dtype)
        neighbours = np.stack([_units(3, 6, seed=10 + i, dtype=dtype) for i in range(5)])
        sims = rng.uniform(-1, 1, (5, 3))
        for alpha in (1.0, 3.0):
            got = expand(queries, neighbours, sims, alpha)
            assert got.dtype == dtype
            for q in range(5):
                v = queries[q].astype(np.float64) + (np.clip(sims[q], 0, None) ** alpha) @ neighbours[q]
                np.testing.assert_allclose(got[q], v / np.linalg.norm(v), atol=1e-6)
    zero = expand(np.zeros((1, 4)), np.ones((1, 2, 4)) / 2, np.array([[-0.5, 0.0]]))
    np.testing.assert_array_equal(zero, 0.0)


def test_expanded_scores_never_demote() -> None:
    plain = np.array([[0.9, 0.1, -0.3]])
    moved = np.array([[0.5, 0.4, -0.5]])
    np.testing.assert_array_equal(expanded_scores(plain, moved), [[0.9, 0.4, -0.3]])
