"""Set-to-set similarity between groups of unit vectors (symmetric Chamfer)."""

from __future__ import annotations

import numpy as np

_BLOCK_ROWS = 1024


def _directed(vectors: np.ndarray, offsets: np.ndarray, rows: slice) -> np.ndarray:
    """For each row in ``rows``: its best cosine match inside every group, [rows, groups]."""
    return np.maximum.reduceat(vectors[rows] @ vectors.T, offsets, axis=1)


def chamfer_matrix(vectors: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Symmetric Chamfer similarity between every two groups.

    ``vectors`` are unit rows sorted by group; group g owns rows
    ``offsets[g]:offsets[g+1]``. The directed score a->b is the mean, over a's
    vectors, of the best cosine match in b; the result averages a->b and b->a, so
    an artist whose tracks each have a close counterpart in another artist's set
    scores high even when the two sets' means differ. Costs one pass over
    [M x M] cosines in blocks of rows (memory ``O(block x M)``).
    """
    n_groups = len(offsets)
    bounds = np.append(offsets, len(vectors))
    group_of_row = np.repeat(np.arange(n_groups), np.diff(bounds))
    sums = np.zeros((n_groups, n_groups), dtype=np.float64)
    for start in range(0, len(vectors), _BLOCK_ROWS):
        block = slice(start, min(start + _BLOCK_ROWS, len(vectors)))
        np.add.at(sums, group_of_row[block], _directed(vectors, offsets, block))
    directed = sums / np.diff(bounds)[:, None]
    return np.clip((directed + directed.T) / 2, -1.0, 1.0).astype(np.float32)  # float32 cosines overshoot 1


def chamfer_row(vectors: np.ndarray, offsets: np.ndarray, group: int) -> np.ndarray:
    """Symmetric Chamfer similarity of one group to every group, in ``O(n_group x M)``."""
    bounds = np.append(offsets, len(vectors))
    rows = slice(bounds[group], bounds[group + 1])
    sims = vectors[rows] @ vectors.T  # [n_group, M]
    forward = np.maximum.reduceat(sims, offsets, axis=1).mean(axis=0)
    backward = np.add.reduceat(sims.max(axis=0), offsets) / np.diff(bounds)
    return np.clip((forward + backward) / 2, -1.0, 1.0).astype(np.float32)
