"""A store's vectors by file path, and their comparison: how the Ray tests check a run against the local pipeline."""

from __future__ import annotations

import numpy as np

from mess.store import FeatureStore


def vectors_by_path(store: FeatureStore, model: str, *, starts: bool = False) -> dict[str, list[np.ndarray]]:
    """path -> [track row per layer..., segment rows per layer...] (float16-stored values); with ``starts``, each
    layer's segment rows are followed by their start times."""
    run = store.run(model)
    paths = {t.id: t.path for t in store.tracks(run)}
    out: dict[str, list[np.ndarray]] = {}
    for layer in range(len(run.layer_names)):
        ids, mat = store.layer_matrix(run, layer)
        for tid, row in zip(ids, mat, strict=True):
            out.setdefault(paths[tid], []).append(row)
    for layer in range(len(run.layer_names)):
        seg_ids, seg_starts, segs = store.segment_matrix(run, layer)
        for tid in np.unique(seg_ids):
            out[paths[tid]].append(segs[seg_ids == tid])
            if starts:
                out[paths[tid]].append(np.asarray(seg_starts)[seg_ids == tid])
    return out


def assert_same_vectors(got: dict[str, list[np.ndarray]], want: dict[str, list[np.ndarray]], *,
                        ulps: int = 0) -> None:
    """Equal vectors per path, or within ``ulps`` float16 units in the last place (the store's precision)."""
    assert got.keys() == want.keys()
    for path, arrays in want.items():
        assert len(got[path]) == len(arrays)
        for a, b in zip(got[path], arrays, strict=True):
            np.testing.assert_allclose(a, b, rtol=ulps * 2.0**-10, atol=ulps * 2.0**-24, err_msg=path)
