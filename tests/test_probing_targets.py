"""Proxy targets on synthesised signals whose musical answer is known, and their per-track cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mess.audio.windows import WindowPolicy
from mess.probing.target_cache import cache_dir, track_targets
from mess.probing.targets import ASPECTS, SAMPLE_RATE, TARGET_NAMES, TARGETS, audio_targets, window_targets
from mess.store import Track

SR = SAMPLE_RATE


def tone(midi: float, seconds: float, tilt: float = 1.0, n_harmonics: int = 12) -> np.ndarray:
    """A harmonic note with a short attack and decay; partial k has amplitude k**-tilt."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    y = sum(k**-tilt * np.sin(2 * np.pi * k * f0 * t) for k in range(1, n_harmonics + 1) if k * f0 < SR / 2 - 500)
    envelope = np.minimum(1.0, t / 0.01) * np.exp(-1.5 * t)
    return (y * envelope).astype(np.float32)


def melody(midis: list[float], note_seconds: float = 0.5, **kw: float) -> np.ndarray:
    return np.concatenate([tone(m, note_seconds, **kw) for m in midis])


def chord(midis: list[float], seconds: float, **kw: float) -> np.ndarray:
    return sum(tone(m, seconds, **kw) for m in midis) / len(midis)


def targets(y: np.ndarray) -> dict[str, float]:
    return dict(zip(TARGET_NAMES, window_targets(0.3 * y / np.abs(y).max()), strict=False))


C_MAJOR = [60, 64, 67, 72, 67, 64] * 3


def test_every_target_is_documented_and_grouped_into_the_six_aspects() -> None:
    assert len(TARGETS) >= 12
    assert {t.aspect for t in TARGETS} == set(ASPECTS)
    assert all(len(t.meaning) > 20 for t in TARGETS)
    assert len(set(TARGET_NAMES)) == len(TARGET_NAMES)


def test_loudness_is_the_level_of_hann_windowed_frames_as_its_meaning_says() -> None:
    """A steady sine's loudness is its dBFS level (amplitude / sqrt 2) plus the Hann window's mean square (3/8 in
    dB, -4.26): the offset the target's meaning states, so a reader comparing it with a meter is not misled."""
    t = np.arange(10 * SAMPLE_RATE) / SAMPLE_RATE
    got = dict(zip(TARGET_NAMES, window_targets(0.5 * np.sin(2 * np.pi * 440 * t)), strict=False))
    dbfs, hann = 20 * np.log10(0.5 / np.sqrt(2)), 10 * np.log10(np.mean(np.hanning(2048 + 1)[:-1] ** 2))
    assert got["loudness"] == pytest.approx(dbfs + hann, abs=0.05)
    meaning = next(x.meaning for x in TARGETS if x.name == "loudness")
    assert f"{-hann:.1f} below the dBFS" in meaning


def test_gain_moves_loudness_by_its_decibels_and_leaves_timbre_alone() -> None:
    y = melody(C_MAJOR)
    loud, soft = (
        dict(zip(TARGET_NAMES, window_targets(0.4 * y), strict=False)),
        dict(zip(TARGET_NAMES, window_targets(0.1 * y), strict=False)),
    )
    assert loud["loudness"] - soft["loudness"] == pytest.approx(20 * np.log10(4), abs=0.05)
    for name in ("centroid", "rolloff", "mfcc1", "mfcc2", "pitch_height", "key_clarity"):
        assert loud[name] == pytest.approx(soft[name], rel=0.01, abs=0.01), name


def test_octave_transposition_raises_pitch_height_by_twelve_and_keeps_the_key() -> None:
    low, high = targets(melody(C_MAJOR)), targets(melody([m + 12 for m in C_MAJOR]))
    assert high["pitch_height"] - low["pitch_height"] == pytest.approx(12, abs=0.5)
    assert high["centroid"] > low["centroid"]
    for name in ("fifths_x", "fifths_y", "key_clarity", "chroma_entropy"):
        assert high[name] == pytest.approx(low[name], abs=0.05), name


def test_transposing_by_a_fifth_turns_the_tonal_centroid_by_thirty_degrees() -> None:
    base, fifth = targets(melody(C_MAJOR)), targets(melody([m + 7 for m in C_MAJOR]))
    turn = np.arctan2(fifth["fifths_y"], fifth["fifths_x"]) - np.arctan2(base["fifths_y"], base["fifths_x"])
    angle = np.degrees(turn)
    assert abs((angle + 180) % 360 - 180) == pytest.approx(30, abs=3)


def test_a_triad_has_a_clearer_key_and_fewer_pitch_classes_than_a_chromatic_cluster() -> None:
    triad, cluster = targets(melody(C_MAJOR)), targets(melody(list(range(60, 72)) + list(range(60, 66))))
    assert triad["key_clarity"] > cluster["key_clarity"] + 0.2
    assert triad["chroma_entropy"] < cluster["chroma_entropy"] - 0.3


def test_duller_partials_give_lower_brightness() -> None:
    bright, dull = targets(melody(C_MAJOR, tilt=0.5)), targets(melody(C_MAJOR, tilt=2.5))
    for name in ("centroid", "rolloff", "bandwidth", "zcr"):
        assert bright[name] > dull[name], name
    assert bright["mfcc1"] < dull["mfcc1"]  # a flatter spectrum has less negative-tilt energy in MFCC 1


def test_note_rate_and_beat_are_measured() -> None:
    slow, fast = targets(melody([60, 64, 67, 64] * 4, note_seconds=0.5)), targets(melody([60, 64, 67, 64] * 8, 0.25))
    assert slow["onset_rate"] == pytest.approx(2.0, abs=0.3)
    assert fast["onset_rate"] == pytest.approx(4.0, abs=0.5)
    assert 2 ** slow["tempo"] == pytest.approx(120, rel=0.05)
    assert slow["pulse_clarity"] > 0.5


def test_texture_counts_voices_and_their_spread() -> None:
    single, full = targets(tone(60, 4.0)), targets(chord([40, 55, 62, 71, 79], 4.0))
    assert full["polyphony"] > single["polyphony"] + 2
    assert full["pitch_range"] > single["pitch_range"] + 12
    noise = np.random.default_rng(0).standard_normal(4 * SR).astype(np.float32)
    clicks = np.zeros(4 * SR, np.float32)
    clicks[:: SR // 4] = 1.0
    sustained = targets(np.sin(2 * np.pi * 261.6 * np.arange(4 * SR) / SR).astype(np.float32))
    assert sustained["harmonic_ratio"] > targets(clicks)["harmonic_ratio"] + 0.3
    assert targets(noise)["flatness"] > sustained["flatness"] + 2


def test_a_crescendo_has_more_dynamic_range_and_level_movement() -> None:
    y = melody(C_MAJOR)
    steady = targets(y)
    ramp = targets(y * np.geomspace(0.05, 1.0, y.size).astype(np.float32))
    assert ramp["dynamic_range"] > steady["dynamic_range"] + 10
    assert ramp["loudness_cv"] > steady["loudness_cv"]


def test_targets_follow_the_run_windows() -> None:
    y = melody(C_MAJOR * 2)  # 18 s
    starts, values = audio_targets(y, WindowPolicy(window_seconds=5.0, max_windows=8))
    assert len(starts) == values.shape[0] == 4
    assert values.shape[1] == len(TARGETS) and np.isfinite(values).all()


def test_cache_computes_once_per_content_and_policy(tmp_path: Path) -> None:
    tracks = []
    for i, shift in enumerate((0, 5, 9)):
        path = tmp_path / f"t{i}.wav"
        sf.write(path, 0.3 * melody([m + shift for m in C_MAJOR]), SR)
        tracks.append(Track(i + 1, str(path), f"hash{i}", 9.0, None, None, None, None, None))
    gone = Track(9, str(tmp_path / "gone.wav"), "hash9", 9.0, None, None, None, None, None)
    policy = WindowPolicy(window_seconds=4.0)
    first = track_targets(tmp_path, tracks + [gone], policy, workers=1)
    assert first.computed == 3 and first.track_ids.tolist() == [1, 2, 3]
    assert [p for p, _ in first.missing] == [gone.path]
    assert len(list(cache_dir(tmp_path, policy).glob("*.npz"))) == 3
    again = track_targets(tmp_path, tracks, policy, workers=1)
    assert again.computed == 0
    np.testing.assert_array_equal(again.values, first.values)
    cached = sorted(cache_dir(tmp_path, policy).glob("*.npz"))[0]
    cached.write_bytes(cached.read_bytes()[:100])  # cut short: it raised zipfile.BadZipFile out of `mess probe`
    mended = track_targets(tmp_path, tracks, policy, workers=1)
    assert mended.computed == 1
    np.testing.assert_array_equal(mended.values, first.values)
    other = track_targets(tmp_path, tracks[:1], WindowPolicy(window_seconds=9.0), workers=1)
    assert other.computed == 1
    pitch = TARGET_NAMES.index("pitch_height")
    assert first.values[1, pitch] - first.values[0, pitch] == pytest.approx(5, abs=0.7)


def test_a_digitally_silent_window_leaves_key_clarity_to_the_others_instead_of_voiding_it(tmp_path: Path) -> None:
    """key_clarity of a silent window is undefined (NaN, with numpy's 'invalid value' warning); the track's mean over
    windows turned NaN, and one such track made key_clarity NaN ('constant') for the whole collection, so no layer
    was scored on it. A window without it is left out of the mean; a track without it in any window is named."""
    import warnings

    policy = WindowPolicy(window_seconds=4.0)
    sounding = 0.3 * melody(C_MAJOR[:8])  # 4 s
    quiet = np.zeros_like(sounding)
    files = {"gap": [sounding, quiet, sounding[::-1]], "whole": [sounding, sounding, sounding[::-1]],
             "mute": [quiet, quiet, quiet]}
    tracks = []
    for i, (name, parts) in enumerate(files.items()):
        sf.write(tmp_path / f"{name}.wav", np.concatenate(parts), SR)
        tracks.append(Track(i + 1, str(tmp_path / f"{name}.wav"), f"hash{i}", 12.0, None, None, None, None, None))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = track_targets(tmp_path / "store", tracks, policy, workers=1)
    assert got.track_ids.tolist() == [1, 2] and np.isfinite(got.values).all()
    key = TARGET_NAMES.index("key_clarity")
    per_window = audio_targets(np.concatenate(files["gap"]), policy)[1]
    assert np.isnan(per_window[1, key]) and np.isfinite(np.delete(per_window, 1, axis=0)).all()
    assert got.values[0, key] == pytest.approx(per_window[[0, 2], key].mean())
    mute = str(tmp_path / "mute.wav")
    assert got.missing == [(mute, f"{mute}: every target undefined in every window (silent)")]
    again = track_targets(tmp_path / "store", tracks, policy, workers=1)  # from the cache: the same
    assert again.computed == 0 and again.missing == got.missing
    np.testing.assert_array_equal(again.values, got.values)


def test_a_digitally_silent_window_leaves_every_target_to_the_sounding_windows(tmp_path: Path) -> None:
    """A silent window measured a level of -200 dB, MIDI 0 for the pitch of its notes and 0 for its centroid: one
    silent stretch (a gap between movements, a long silence before a hidden track) took 60 dB off its track's
    loudness, and that one track then set the collection's spread of loudness. A silent window now leaves every
    target to the sounding windows of its track: its level is the sounding audio's (by numpy, within 1 dB) and its
    register the melody's."""
    policy = WindowPolicy(window_seconds=4.0)
    sounding = 0.3 * melody(C_MAJOR[:8])  # 4 s of C4..C5
    whole = np.concatenate([sounding, sounding[::-1]])
    gap = np.concatenate([sounding, np.zeros_like(sounding), sounding[::-1]])
    tracks = []
    for i, audio in enumerate((whole, gap)):
        sf.write(tmp_path / f"t{i}.wav", audio, SR, subtype="FLOAT")
        tracks.append(Track(i + 1, str(tmp_path / f"t{i}.wav"), f"hash{i}", 12.0, None, None, None, None, None))
    got = track_targets(tmp_path / "store", tracks, policy, workers=1)
    assert got.track_ids.tolist() == [1, 2] and not got.missing
    # the level of the sounding audio by numpy, through the Hann window of the STFT frames (mean square 3/8)
    level = 10 * np.log10(np.mean(sounding.astype(np.float64) ** 2) * 3 / 8)
    loud, pitch = TARGET_NAMES.index("loudness"), TARGET_NAMES.index("pitch_height")
    assert got.values[1, loud] == pytest.approx(level, abs=1.0)
    assert 60 <= got.values[1, pitch] <= 72
    np.testing.assert_allclose(got.values[1], got.values[0], rtol=1e-6, atol=1e-6)  # the gap takes nothing away


KK_MAJOR = [6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88]  # Krumhansl & Kessler (1982)
KK_MINOR = [6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17]


def test_key_clarity_is_the_best_pearson_correlation_with_the_24_krumhansl_kessler_keys() -> None:
    """A profile that is a key's profile has clarity 1 (G major, F# minor); any other, the best of scipy's Pearson
    correlations with the 24 published profiles; a flat one (silence) has none."""
    from scipy.stats import pearsonr

    from mess.probing.targets import _key_clarity

    assert _key_clarity(np.roll(KK_MAJOR, 7)) == pytest.approx(1.0)
    assert _key_clarity(np.array(KK_MAJOR)) == pytest.approx(1.0)  # C major, the first of the 24
    assert _key_clarity(3.0 * np.roll(KK_MINOR, 6) + 1.0) == pytest.approx(1.0)
    profile = np.random.default_rng(0).uniform(0, 1, 12)
    keys = [np.roll(p, k) for p in (KK_MAJOR, KK_MINOR) for k in range(12)]
    assert _key_clarity(profile) == pytest.approx(max(pearsonr(profile, key).statistic for key in keys))
    assert np.isnan(_key_clarity(np.full(12, 0.5)))


def test_dynamics_are_the_energy_mean_level_its_variation_and_span_of_the_sounding_frames() -> None:
    """Frames outside ``active`` are ignored; level = 10 log10 of the mean power; span = 95th - 10th percentile of
    the frame levels (scipy's scoreatpercentile); variation = SD / mean of the RMS."""
    from scipy.stats import scoreatpercentile

    from mess.probing.targets import _dynamics

    rms = np.array([0.1, 0.1, 1e-6, 0.01, 0.1, 0.01, 0.05])
    active = np.array([True, True, False, True, True, True, True])
    got = _dynamics(rms, active)
    sounding = np.array([0.1, 0.1, 0.01, 0.1, 0.01, 0.05])
    levels = 20 * np.log10(sounding)
    assert got["loudness"] == pytest.approx(10 * np.log10((3 * 0.01 + 2 * 1e-4 + 0.0025) / 6))
    assert got["loudness_cv"] == pytest.approx(np.std(sounding) / np.mean(sounding), rel=1e-6)
    assert got["dynamic_range"] == pytest.approx(scoreatpercentile(levels, 95) - scoreatpercentile(levels, 10),
                                                 rel=1e-6)
    spread = np.random.default_rng(3).permutation(np.geomspace(1e-3, 0.5, 41))  # 41 distinct frame levels
    loud = np.arange(41) % 4 != 0
    assert _dynamics(spread, loud)["dynamic_range"] == pytest.approx(
        scoreatpercentile(20 * np.log10(spread[loud]), 95) - scoreatpercentile(20 * np.log10(spread[loud]), 10),
        rel=1e-6)
    steady = _dynamics(np.full(5, 0.1), np.ones(5, dtype=bool))
    assert steady == pytest.approx({"loudness": -20.0, "loudness_cv": 0.0, "dynamic_range": 0.0}, abs=1e-6)


def test_a_track_mean_leaves_out_undefined_windows_and_names_targets_undefined_everywhere() -> None:
    from mess.probing.target_cache import track_mean

    rng = np.random.default_rng(4)
    windows = rng.standard_normal((3, len(TARGET_NAMES)))
    windows[1, 2] = np.nan
    mean = track_mean(windows)
    assert isinstance(mean, np.ndarray)
    want = windows.sum(axis=0) / 3
    want[2] = (windows[0, 2] + windows[2, 2]) / 2
    np.testing.assert_allclose(mean, want)
    windows[:, [4, 7]] = np.nan
    assert track_mean(windows) == f"{TARGET_NAMES[4]}, {TARGET_NAMES[7]} undefined in every window (silent)"
    assert track_mean(np.full((2, len(TARGET_NAMES)), np.nan)) == "every target undefined in every window (silent)"


def test_an_aspect_names_its_own_targets() -> None:
    from mess.probing.targets import aspect_targets

    assert [TARGET_NAMES[i] for i in aspect_targets("harmony")] == ["chroma_entropy", "key_clarity", "fifths_x",
                                                                     "fifths_y"]
    assert [TARGET_NAMES[i] for i in aspect_targets("dynamics")] == ["loudness", "loudness_cv", "dynamic_range"]
    assert aspect_targets("melody") == []
