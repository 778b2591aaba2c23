"""A sonic path: from track A to track B in small steps through the collection."""

from __future__ import annotations

import numpy as np

from mess.audio.recording import compared
from mess.constants import DEFAULT_NORM
from mess.playlists.playlist import DuplicateGuard, Playlist, PlaylistError, vanished_copies
from mess.search.query import no_vectors
from mess.search.vectors import Norm, VectorSpec, load_vectors, track_by_id
from mess.store import FeatureStore, Run, Track
from mess.store.consistent import one_state


@one_state
def sonic_path(store: FeatureStore, run: Run, start: Track, end: Track, n: int = 12, *,
               aspect: str | None = None, norm: Norm = DEFAULT_NORM) -> Playlist:
    """``n`` tracks that start at ``start``, end at ``end`` and move between them in even steps.

    Step i aims at the point a fraction i/(n-1) of the way along the great circle from A to B
    (unit vectors of the chosen vector set) and takes the nearest unused track that is not a
    near-duplicate of one already on the path. The tracks between A and B are then ordered by
    progress (cosine to B minus cosine to A), so the path never turns back. Scores are each
    track's cosine to the target it was chosen for.
    """
    if n < 2:
        raise PlaylistError("a path needs -n of at least 2 (the start and the end)")
    if start.content_hash == end.content_hash:
        raise PlaylistError(f"the start and the end are the same recording ({start.name})")
    if (match := compared(start.path, start.duration, end.path, end.duration)) is not None and match.same:
        raise PlaylistError(f"the start and the end are the same recording ({start.name} and {end.name}: "
                            f"{match.reason})")
    tracks = store.tracks(run)
    vs = load_vectors(store, run, VectorSpec.from_options(aspect=aspect, norm=norm), tracks)
    for t in (start, end):
        if t.id not in vs:
            raise no_vectors(store, run, t)
    if len(vs.ids) < n:
        raise PlaylistError(f"the collection has {len(vs.ids)} tracks with vectors, fewer than -n {n}")
    unit, by_id = vs.unit(), track_by_id(tracks)
    a, b = unit[vs.rows(np.array([start.id, end.id]))]
    guard = DuplicateGuard(unit.shape[1])
    guard.add(a, start)
    guard.add(b, end)
    free = np.ones(len(vs.ids), dtype=bool)
    free[vs.rows(np.array([start.id, end.id]))] = False
    free[list(vanished_copies(range(len(vs.ids)), vs.ids, by_id))] = False  # a renamed file: its copy on disk
    chosen: list[tuple[int, float]] = []  # (row, cosine to its target)
    for t in np.linspace(0.0, 1.0, n)[1:-1]:
        target = _slerp(a, b, float(t))
        sims = np.where(free, unit @ target, -np.inf)
        for row in np.argsort(-sims, kind="stable"):
            if not free[row]:
                raise PlaylistError(f"too few distinct tracks for a path of {n}")
            free[row] = False
            track = by_id[int(vs.ids[row])]
            if not guard.duplicate(unit[row], track):
                guard.add(unit[row], track)
                chosen.append((int(row), float(sims[row])))
                break
    chosen.sort(key=lambda rs: float(unit[rs[0]] @ b - unit[rs[0]] @ a))  # progress from A towards B
    picked = [start, *(by_id[int(vs.ids[r])] for r, _ in chosen), end]
    scores = [1.0, *(x for _, x in chosen), 1.0]
    return Playlist(f"path: {start.name} -> {end.name}", tuple(picked), tuple(scores))


def _slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """The unit vector a fraction ``t`` of the way from unit ``a`` to unit ``b`` (linear when nearly parallel)."""
    cos = float(np.clip(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12), -1.0, 1.0))
    omega = np.arccos(cos)
    if omega < 1e-6:
        out = (1 - t) * a + t * b
    else:
        out = (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)
    return (out / max(float(np.linalg.norm(out)), 1e-12)).astype(np.float32)
