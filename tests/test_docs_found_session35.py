"""A defect found running the docs as written (notes/docs_session35.md): ``mess probe-validate`` run in a process
that had computed targets in another directory found none of its renders (FileNotFoundError for each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mess.audio.discover import content_hash
from mess.audio.windows import WindowPolicy
from mess.probing.target_cache import PARALLEL_MIN_TRACKS, file_targets, track_mean, track_targets
from mess.store import Track


def _excerpts(sources: list[Path], folder: Path) -> list[Track]:
    """Three-second excerpts of ``sources`` under ``folder/m``, as tracks with paths relative to ``folder``."""
    (folder / "m").mkdir(parents=True)
    tracks = []
    for i, src in enumerate(sources):
        audio, rate = sf.read(src, dtype="float32")
        sf.write(folder / "m" / f"{src.stem}.flac", audio[5 * rate:8 * rate], rate)
        rel = Path("m") / f"{src.stem}.flac"
        tracks.append(Track(i, str(rel), content_hash(folder / rel), 3.0, None, None, None, None, None))
    return tracks


def test_targets_of_relative_paths_after_the_caller_changed_directory(
        rendered_collection: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The target workers (joblib's reused processes) keep the directory they started in: relative track paths
    (probe-validate's renders under a store given as ``.mess``) were read there, so a second call from another
    directory lost every track. Paths are now made absolute by the caller; the targets are those of each file."""
    pieces = sorted(p for p in rendered_collection if p.suffix == ".flac")
    n = PARALLEL_MIN_TRACKS
    first, second = _excerpts(pieces[:n], tmp_path / "a"), _excerpts(pieces[n:2 * n], tmp_path / "b")
    monkeypatch.chdir(tmp_path / "a")
    assert track_targets(Path("store"), first, WindowPolicy()).computed == n  # starts the workers here
    monkeypatch.chdir(tmp_path / "b")
    got = track_targets(Path("store"), second, WindowPolicy())
    assert got.missing == [] and got.computed == n
    policy = WindowPolicy().to_json()
    want = np.stack([track_mean(file_targets(str(tmp_path / "b" / t.path), policy)[1]) for t in second])
    assert got.track_ids.tolist() == [t.id for t in second]
    np.testing.assert_allclose(got.values, want, rtol=1e-5)
