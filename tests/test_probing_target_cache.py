"""The probe's target cache (mess.probing.target_cache) in-process on short real WAV files: what is computed, what is
read back, what is left out and why. Expected targets come from decoding and measuring each file here
(mess.audio.decode.load_audio and mess.probing.targets.audio_targets, the cache's inputs, not the cache)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from mess.audio.decode import load_audio
from mess.audio.windows import WindowPolicy
from mess.constants import file_stamp
from mess.probing.target_cache import (
    CHANGED,
    REMOVED,
    STALE,
    TARGETS_VERSION,
    _attempt,
    cache_dir,
    stale_reason,
    track_targets,
)
from mess.probing.targets import SAMPLE_RATE, TARGET_NAMES, audio_targets
from mess.store import Track

POLICY = WindowPolicy(window_seconds=1.0, max_windows=2)


def _tone(path: Path, hz: float, seconds: float = 1.5, level: float = 0.3) -> Path:
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    sf.write(path, (level * np.sin(2 * np.pi * hz * t)).astype(np.float32), SAMPLE_RATE)
    return path


def _track(i: int, path: Path) -> Track:
    return Track(i, str(path), f"hash{i}", 1.5, None, None, None, None, None)


def _want(path: Path) -> np.ndarray:
    """The track's targets measured here: each window's, averaged."""
    return audio_targets(load_audio(path, SAMPLE_RATE), POLICY)[1].mean(axis=0)


def test_the_cache_folder_names_the_version_and_the_policy(tmp_path: Path) -> None:
    digest = hashlib.blake2b(POLICY.to_json().encode(), digest_size=6).hexdigest()
    assert cache_dir(tmp_path, POLICY) == tmp_path / "targets" / f"v{TARGETS_VERSION}-{digest}"
    assert len(digest) == 12
    assert cache_dir(tmp_path, WindowPolicy(window_seconds=2.0)) != cache_dir(tmp_path, POLICY)


def test_targets_are_computed_cached_and_read_back(tmp_path: Path) -> None:
    """Three tones, a file gone and a text file: the tones' targets by id, the two others named with a reason,
    every track counted by on_track, each tone's window targets cached under its content hash."""
    music = tmp_path / "music"
    music.mkdir()
    tones = [_tone(music / f"t{i}.wav", hz) for i, hz in enumerate((220.0, 330.0, 440.0))]
    (music / "notes.wav").write_text("not audio")
    silent = _tone(music / "silent.wav", 440.0, level=0.0)  # digital silence: no target is defined
    tracks = [_track(7, tones[2]), _track(3, tones[0]), _track(5, tones[1]),
              _track(9, music / "gone.wav"), _track(4, music / "notes.wav"), _track(6, silent)]
    calls: list[int] = []
    store = tmp_path / "store"
    got = track_targets(store, tracks, POLICY, workers=1, on_track=lambda: calls.append(1))
    assert len(calls) == 6
    assert got.computed == 4  # the silent file too: measured and cached, its targets undefined
    assert got.track_ids.tolist() == [3, 5, 7] and got.track_ids.dtype == np.int64
    np.testing.assert_allclose(got.values, np.stack([_want(t) for t in tones]), rtol=1e-5, atol=1e-5)
    assert [p for p, _ in got.missing] == sorted(str(music / n) for n in ("gone.wav", "notes.wav", "silent.wav"))
    assert all(reason and reason not in STALE for _, reason in got.missing)
    said = dict(got.missing)[str(silent)]
    assert said.startswith(f"{silent}: ") and "every target" in said and "silent" in said
    folder = cache_dir(store, POLICY)
    assert sorted(f.name for f in folder.iterdir()) == ["hash3.npz", "hash5.npz", "hash6.npz", "hash7.npz"]
    with np.load(folder / "hash5.npz") as data:
        starts, values = audio_targets(load_audio(tones[1], SAMPLE_RATE), POLICY)
        np.testing.assert_allclose(data["starts"], starts)
        np.testing.assert_allclose(data["values"], values, rtol=1e-6)
        assert tuple(data["names"].tolist()) == TARGET_NAMES
    calls.clear()
    again = track_targets(store, tracks[:3] + tracks[5:], POLICY, workers=1, on_track=lambda: calls.append(1))
    assert again.computed == 0 and len(calls) == 4
    assert again.missing == [(str(silent), said)]  # read back from the cache: still silent
    np.testing.assert_array_equal(again.values, got.values)
    np.testing.assert_array_equal(again.track_ids, got.track_ids)


def test_a_cache_file_of_other_targets_is_computed_again(tmp_path: Path) -> None:
    """A cached file naming other targets (a definition changed without a version bump) is not read."""
    tone = _tone(tmp_path / "t.wav", 262.0)
    store = tmp_path / "store"
    first = track_targets(store, [_track(1, tone)], POLICY, workers=1)
    cached = cache_dir(store, POLICY) / "hash1.npz"
    np.savez(cached, starts=np.zeros(1), values=np.full((1, len(TARGET_NAMES)), 99.0),
             names=np.array(TARGET_NAMES[::-1]))
    again = track_targets(store, [_track(1, tone)], POLICY, workers=1)
    assert again.computed == 1
    np.testing.assert_allclose(again.values, first.values)


def test_a_file_not_as_catalogued_is_left_out_and_not_cached(tmp_path: Path) -> None:
    """With ``known`` (the catalog's stamps), a file rewritten since it was stamped is CHANGED, one deleted is
    REMOVED: neither is measured nor cached; one still as stamped is."""
    same, changed, removed = (_tone(tmp_path / f"{n}.wav", hz) for n, hz in (("same", 200), ("changed", 300),
                                                                           ("removed", 400)))
    stamps = {str(p): ("size:mtime", file_stamp(os.stat(p))) for p in (same, changed, removed)}
    _tone(changed, 300, seconds=1.25)
    os.utime(changed, ns=(1, 1))
    removed.unlink()
    tracks = [_track(1, same), _track(2, changed), _track(3, removed)]
    store = tmp_path / "store"
    got = track_targets(store, tracks, POLICY, workers=1, known=lambda p: stamps.get(str(p)))
    assert got.track_ids.tolist() == [1]
    assert got.missing == sorted([(str(changed), CHANGED), (str(removed), REMOVED)])
    assert all(reason in STALE for _, reason in got.missing)  # `mess probe` tells these from failures by STALE
    assert got.computed == 1
    assert sorted(f.name for f in cache_dir(store, POLICY).iterdir()) == ["hash1.npz"]


def test_stale_reason(tmp_path: Path) -> None:
    path = _tone(tmp_path / "a.wav", 100.0)
    stamp = file_stamp(os.stat(path))
    assert stale_reason(str(path), None) is None
    assert stale_reason(str(path), stamp) is None
    assert stale_reason(str(path), "1:2:3:4") == CHANGED
    assert stale_reason(str(tmp_path / "none.wav"), stamp) == REMOVED


def test_an_attempt_returns_the_reason_of_any_failure(tmp_path: Path) -> None:
    """One bad file is a reason, not an exception: a folder named like audio, a stamp that does not match."""
    folder = tmp_path / "dir.wav"
    folder.mkdir()
    index, reason = _attempt(4, str(folder), POLICY.to_json(), None)
    assert index == 4 and isinstance(reason, str) and str(folder) in reason
    tone = _tone(tmp_path / "t.wav", 150.0)
    assert _attempt(2, str(tone), POLICY.to_json(), "1:2:3:4") == (2, CHANGED)
    index, result = _attempt(1, str(tone), POLICY.to_json(), file_stamp(os.stat(tone)))
    assert index == 1 and not isinstance(result, str)
    starts, values = audio_targets(load_audio(tone, SAMPLE_RATE), POLICY)
    np.testing.assert_allclose(result[0], starts)
    np.testing.assert_allclose(result[1], values, rtol=1e-6)


def test_no_tracks_give_an_empty_matrix_of_every_target(tmp_path: Path) -> None:
    got = track_targets(tmp_path, [], POLICY, workers=1)
    assert got.values.shape == (0, len(TARGET_NAMES)) and got.track_ids.shape == (0,)
    assert got.computed == 0 and got.missing == []
