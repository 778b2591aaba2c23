"""The collection map (mess.serve.mapping) checked against PCA computed here from its definition (numpy's SVD)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from types import SimpleNamespace

import numpy as np

from mess.serve.mapping import collection_map


def _vectors(unit: np.ndarray) -> SimpleNamespace:
    """What collection_map reads of a VectorSet: its ids and unit vectors."""
    return SimpleNamespace(ids=np.arange(10, 10 + len(unit)), unit=lambda: unit)


def _pca_by_svd(unit: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, the two principal axes and the explained variance ratios, from the definition."""
    mean = unit.mean(axis=0)
    _, s, vt = np.linalg.svd(unit - mean, full_matrices=False)
    return mean, vt[:2], (s**2 / (s**2).sum())[:2]


def test_the_map_is_pca_of_the_unit_vectors_scaled_into_the_unit_square() -> None:
    rng = np.random.default_rng(3)
    # spread unequal along three axes, so the first two components are well separated and the third is not zero
    raw = rng.normal(size=(9, 5)) * np.array([6.0, 3.0, 1.0, 0.2, 0.1]) + np.array([0, 0, 0, 0, 20.0])
    unit = (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float32)
    cmap = collection_map(_vectors(unit))
    mean, axes, ratio = _pca_by_svd(unit.astype(np.float64))
    coords = (unit - mean) @ axes.T
    # each axis turned so that its largest extreme is positive, both divided by the largest |coordinate|
    coords *= np.where(coords.max(axis=0) >= -coords.min(axis=0), 1.0, -1.0)
    coords /= np.abs(coords).max()
    np.testing.assert_allclose(cmap.xy, coords, atol=1e-4)
    assert cmap.xy.dtype == np.float32
    assert np.abs(cmap.xy).max() == np.float32(1.0)
    np.testing.assert_allclose(cmap.explained, ratio, rtol=1e-4)
    assert cmap.explained[0] > cmap.explained[1] > 0
    np.testing.assert_array_equal(cmap.ids, np.arange(10, 19))
    # a new vector lands where the same projection puts it; several at once, one row each
    new = rng.normal(size=(2, 5))
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    placed = cmap.place(new)
    want = (new - mean) @ axes.T
    want *= np.where(((unit - mean) @ axes.T).max(axis=0) >= -((unit - mean) @ axes.T).min(axis=0), 1.0, -1.0)
    want /= np.abs((unit - mean) @ axes.T).max()
    np.testing.assert_allclose(placed, want, atol=1e-4)
    assert placed.dtype == np.float32
    # a track of the collection placed again lands on its own point
    np.testing.assert_allclose(cmap.place(unit[4]), cmap.xy[4:5], atol=1e-5)


def test_the_map_s_ids_are_its_own() -> None:
    unit = np.eye(4, dtype=np.float32)
    vs = _vectors(unit)
    cmap = collection_map(vs)
    vs.ids[:] = 0
    np.testing.assert_array_equal(cmap.ids, [10, 11, 12, 13])
    few = _vectors(unit[:2])
    small = collection_map(few)
    few.ids[:] = 0
    np.testing.assert_array_equal(small.ids, [10, 11])


def test_fewer_than_three_tracks_or_one_vector_repeated_sit_at_the_centre() -> None:
    for unit in (np.eye(3, dtype=np.float32)[:1], np.eye(3, dtype=np.float32)[:2],
                 np.tile(np.array([[0.6, 0.8, 0.0]], np.float32), (4, 1))):
        cmap = collection_map(_vectors(unit))
        np.testing.assert_array_equal(cmap.xy, np.zeros((len(unit), 2)))
        assert cmap.xy.dtype == np.float32
        assert cmap.explained == (0.0, 0.0)
        placed = cmap.place(np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
        np.testing.assert_array_equal(placed, np.zeros((2, 2)))
        assert placed.dtype == np.float32


def test_three_tracks_give_a_map_whose_points_keep_their_distances() -> None:
    # three points span a plane: PCA to 2-D keeps every pairwise distance, scaled by one factor on both axes
    unit = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    cmap = collection_map(_vectors(unit))
    d_in = np.linalg.norm(unit[:, None] - unit[None], axis=2)
    d_out = np.linalg.norm(cmap.xy[:, None].astype(np.float64) - cmap.xy[None], axis=2)
    factor = d_out[0, 1] / d_in[0, 1]
    np.testing.assert_allclose(d_out, d_in * factor, atol=1e-5)
    assert np.abs(cmap.xy).max() == np.float32(1.0)
    assert abs(sum(cmap.explained) - 1.0) < 1e-6


def test_scikit_learn_is_imported_by_preload_in_the_background_not_by_importing_the_map() -> None:
    # a fresh interpreter: this one has scikit-learn already
    code = ("import sys, threading\n"
            "import mess.serve.app, mess.serve.mapping as m\n"
            "before = 'sklearn.decomposition' in sys.modules\n"
            "t = m.preload()\n"
            "print(before, isinstance(t, threading.Thread), t.daemon, t.name)\n"
            "t.join(120)\n"
            "print(t.is_alive(), 'sklearn.decomposition' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=True)
    assert out.stdout.split("\n")[:2] == ["False True True mess-preload", "False True"]


def test_a_cached_map_cannot_be_changed_by_whoever_reads_it() -> None:
    # the server caches one map per vector set and hands it to every request
    cmap = collection_map(_vectors(np.eye(4, dtype=np.float32)))
    try:
        cmap.xy = np.zeros((4, 2), np.float32)  # type: ignore[misc]
    except dataclasses.FrozenInstanceError:
        pass
    else:
        raise AssertionError("a CollectionMap's fields could be replaced")
