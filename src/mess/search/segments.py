"""Set similarity over window vectors: compare two tracks by their windows, not by their mean.

Each track is the set of its window (segment) vectors, preprocessed like its track vector
and L2-normalised per window. Two tracks score the symmetric Chamfer similarity: the mean,
over each track's windows, of the best cosine to any window of the other, averaged both ways.
It rewards a shared passage that a mean over a long track would dilute. Exact and brute force:
one query costs one product with every stored window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mess.constants import FUSED
from mess.search.vectors import VectorSet, in_space
from mess.store import FeatureStore

MATCHES: tuple[str, ...] = ("mean", "segments")


@dataclass(frozen=True)
class SegmentSet:
    """Unit window vectors of the tracks of a :class:`VectorSet`, grouped by track in its row order."""

    ids: np.ndarray  # track ids, as in the vector set
    offsets: np.ndarray  # track i owns rows offsets[i]:offsets[i + 1]
    unit: np.ndarray  # [n_windows, dim]

    def windows(self, row: int) -> np.ndarray:
        """Unit window vectors of the track in ``row``."""
        return self.unit[self.offsets[row]:self.offsets[row + 1]]


def check_match(match: str) -> str:
    """``match`` itself, or ValueError naming the choices."""
    if match not in MATCHES:
        raise ValueError(f"unknown match {match!r}; choose {' or '.join(MATCHES)}")
    return match


SEGMENT_QUERY = "--match segments needs a track or audio file as query, and no --hubness or --expand"


def check_segment_options(match: str, hubness: str | None, expand: int | None) -> None:
    """ValueError (:data:`SEGMENT_QUERY`) for segment matching with hubness reduction or query expansion, which work
    on track vectors."""
    if match == "segments" and (hubness or expand):
        raise ValueError(SEGMENT_QUERY)


def read_segments(store: FeatureStore, vs: VectorSet, ids: np.ndarray | None = None) -> SegmentSet:
    """Window vectors of the tracks ``ids`` (default: all of ``vs``), through the preprocessor of ``vs``."""
    if vs.spec.kind == FUSED:
        raise ValueError("segment matching needs layer vectors; fused vectors have no windows")
    # every layer's windows from one catalog version, though an extract may be committing (or a reclaim moving rows)
    mats = store.reading(lambda: [store.segment_matrix(vs.run, name) for name in vs.layers])
    seg_ids = mats[0][0]
    raw = np.concatenate([m for _, _, m in mats], axis=1)
    return group_windows(vs.ids if ids is None else ids, seg_ids, vs.prep.apply(in_space(vs.spec, vs.run, raw)))


def group_windows(ids: np.ndarray, seg_ids: np.ndarray, unit: np.ndarray) -> SegmentSet:
    """Order window rows (owned by ``seg_ids``) to follow the track order ``ids``; other tracks are dropped."""
    pos = {int(i): n for n, i in enumerate(ids)}
    owner = np.array([pos.get(int(i), -1) for i in seg_ids], dtype=np.int64)
    keep = np.flatnonzero(owner >= 0)
    order = keep[np.argsort(owner[keep], kind="stable")]
    counts = np.bincount(owner[keep], minlength=len(ids))
    if (counts == 0).any():
        raise ValueError(f"{int((counts == 0).sum())} track(s) have no window vectors")
    return SegmentSet(np.asarray(ids), np.concatenate([[0], np.cumsum(counts)]), unit[order])


def chamfer_scores(segments: SegmentSet, query: np.ndarray) -> np.ndarray:
    """Symmetric Chamfer similarity of one query's unit window vectors [m, dim] to every track."""
    sims = np.atleast_2d(query) @ segments.unit.T  # [m, n_windows]
    starts = segments.offsets[:-1]
    forward = np.maximum.reduceat(sims, starts, axis=1).mean(axis=0)
    backward = np.add.reduceat(sims.max(axis=0), starts) / np.diff(segments.offsets)
    return (forward + backward) / 2


def chamfer_rows(segments: SegmentSet, rows: Sequence[int] | np.ndarray) -> np.ndarray:
    """Chamfer similarity [len(rows), n_tracks] of the tracks in ``rows`` to every track."""
    return np.stack([chamfer_scores(segments, segments.windows(int(r))) for r in rows])
