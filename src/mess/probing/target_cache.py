"""Per-track proxy targets for a run: computed in parallel, cached by content hash.

Layout: ``STORE/targets/v<version>-<policy digest>/<content hash>.npz`` holding the
window starts and per-window targets, so re-probing (or probing another model with
the same window policy) never decodes audio again. A catalogued file is only read while
its change stamp is the catalog's: the audio then is what its content hash names.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed

from mess.audio.decode import AudioError, load_audio
from mess.audio.windows import WindowPolicy
from mess.constants import NPZ_ERRORS, stamp_matches
from mess.probing.targets import SAMPLE_RATE, TARGET_NAMES, audio_targets
from mess.store import Track
from mess.store.paths import replace_file

TARGETS_VERSION = 4  # bump when a target's definition changes: old caches are then ignored
PARALLEL_MIN_TRACKS = 8  # below this, starting worker processes (librosa imports) costs more than it saves
CHANGED = "changed since it was extracted"
REMOVED = "removed since it was extracted"
STALE = (CHANGED, REMOVED)  # reasons of tracks left out because their file is not what the catalog describes


@dataclass(frozen=True)
class TrackTargets:
    """Track-level targets (mean over the run's windows) for the tracks that have audio."""

    track_ids: np.ndarray  # [n]
    values: np.ndarray  # [n, len(TARGETS)]
    missing: list[tuple[str, str]]  # (path, reason) of tracks left out
    computed: int  # how many tracks were computed now (the rest came from the cache)


def cache_dir(store_root: Path, policy: WindowPolicy) -> Path:
    """Folder of cached targets for one window policy and target definition version."""
    digest = hashlib.blake2b(policy.to_json().encode(), digest_size=6).hexdigest()
    return Path(store_root) / "targets" / f"v{TARGETS_VERSION}-{digest}"


def file_targets(path: str, policy_json: str) -> tuple[np.ndarray, np.ndarray]:
    """(window starts, per-window targets) of one file under a window policy (picklable worker)."""
    policy = WindowPolicy.from_json(policy_json)
    audio = load_audio(Path(path), SAMPLE_RATE, max_seconds=policy.max_decode_seconds)
    return audio_targets(audio, policy)


def track_mean(per_window: np.ndarray) -> np.ndarray | str:
    """A track's targets: the mean over its windows of each, leaving out the windows where one is undefined (every
    target of a digitally silent window is NaN); why not, when a target is undefined in every window."""
    undefined = np.isnan(per_window).all(axis=0)
    if undefined.any():
        names = "every target" if undefined.all() else ", ".join(n for n, u in zip(TARGET_NAMES, undefined, strict=True)
                                                                  if u)
        return f"{names} undefined in every window (silent)"
    return np.nanmean(per_window, axis=0)


def _read(file: Path) -> np.ndarray | None:
    try:
        with np.load(file) as data:
            if tuple(data["names"].tolist()) != TARGET_NAMES:
                return None
            return data["values"]
    except NPZ_ERRORS:
        return None


def _write(file: Path, starts: np.ndarray, values: np.ndarray) -> None:
    arrays = io.BytesIO()
    np.savez(arrays, starts=starts, values=values, names=np.array(TARGET_NAMES))
    replace_file(file, arrays.getvalue())


def stale_reason(path: str, stamp: str | None) -> str | None:
    """CHANGED or REMOVED when the file is not the one the catalog stamped ``stamp`` (None: it is, or no stamp)."""
    if stamp is None:
        return None
    try:
        return None if stamp_matches(os.stat(path), stamp) else CHANGED
    except FileNotFoundError:
        return REMOVED


def _attempt(index: int, path: str, policy_json: str,
             stamp: str | None) -> tuple[int, tuple[np.ndarray, np.ndarray] | str]:
    """file_targets of a file still as catalogued (checked before and after reading it), with a failure returned
    as its reason (one bad file must not stop the rest)."""
    try:
        result = stale_reason(path, stamp) or file_targets(path, policy_json)  # checked before reading it ...
        return index, stale_reason(path, stamp) or result  # ... and after: a file replaced meanwhile is not as
        # catalogued
    except AudioError as exc:
        return index, str(exc)
    except Exception as exc:  # decoders and librosa raise many types: report the file, do not abort
        return index, f"{path}: {type(exc).__name__}: {exc}"


def track_targets(store_root: Path, tracks: Sequence[Track], policy: WindowPolicy, *,
                  known: Callable[[Path], tuple[str, str] | None] | None = None, workers: int = 2,
                  on_track: Callable[[], None] | None = None) -> TrackTargets:
    """Targets of ``tracks``: cached ones are read, the rest computed in ``workers`` processes and cached.

    With ``known`` (:meth:`~mess.store.FeatureStore.known_file`), a file to compute that was changed or removed
    since the catalog stamped it is left out (reason in :data:`STALE`): its audio is not what its content hash and
    vectors are of, so its targets are neither computed nor cached.
    """
    folder = cache_dir(store_root, policy)
    values: dict[int, np.ndarray] = {}
    todo: list[Track] = []
    missing: list[tuple[str, str]] = []

    def keep(track: Track, per_window: np.ndarray) -> None:
        mean = track_mean(per_window)
        if isinstance(mean, str):
            missing.append((track.path, f"{track.path}: {mean}"))
        else:
            values[track.id] = mean

    for track in tracks:
        cached = _read(folder / f"{track.content_hash}.npz")
        if cached is None:
            todo.append(track)
        else:
            keep(track, cached)
            if on_track:
                on_track()
    jobs = workers if len(todo) >= PARALLEL_MIN_TRACKS else 1
    stamps = [None if known is None else (known(Path(t.path)) or ("", ""))[1] for t in todo]
    # absolute here: the worker processes outlive a call, and a caller may have changed directory since they started
    calls = (delayed(_attempt)(i, os.path.abspath(t.path), policy.to_json(), stamps[i]) for i, t in enumerate(todo))
    computed = 0
    for i, result in Parallel(n_jobs=jobs, return_as="generator_unordered")(calls):
        track = todo[i]
        if isinstance(result, str):
            missing.append((track.path, result))
        else:
            _write(folder / f"{track.content_hash}.npz", *result)
            computed += 1
            keep(track, result[1])
        if on_track:
            on_track()
    ids = np.array(sorted(values), dtype=np.int64)
    matrix = np.stack([values[i] for i in ids]) if len(ids) else np.zeros((0, len(TARGET_NAMES)))
    return TrackTargets(ids, matrix, sorted(missing), computed)
