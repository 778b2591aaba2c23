"""Validation where the answer is known: Bach chorales rendered with one factor varied (real fluidsynth audio)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import cache_lock, render_cache
from mess.datasets.render import render_factor_set
from mess.models.registry import load_model
from mess.probing.validation import FACTORS, RENDER_SETTINGS, FactorResult, effect_sizes, shuffle_within, validate

needs_synth = pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="fluidsynth is not installed")
LEVELS = {"instrument": (0, 40, 73), "tempo": (0.6, 1.0, 1.6), "transpose": (-3, 0, 3), "velocity": (30, 80, 127)}


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cached = render_cache("validation", {"pieces": 3, "levels": LEVELS, "settings": repr(RENDER_SETTINGS)})
    with cache_lock(cached):  # fluidsynth renders are cached across runs; targets and vectors are computed afresh
        for factor in FACTORS:
            render_factor_set(cached, factor, 3, LEVELS[factor], RENDER_SETTINGS)
    out = tmp_path_factory.mktemp("factor-sets")
    shutil.copytree(cached, out, dirs_exist_ok=True)
    return out


@pytest.fixture(scope="module")
def results(renders: Path) -> dict[str, FactorResult]:
    return {r.factor: r for r in validate(renders, load_model("dsp"), n_pieces=3, levels=LEVELS, workers=2)}


@needs_synth
@pytest.mark.parametrize("factor", ["instrument", "tempo", "transpose"])
def test_the_varied_factor_moves_its_intended_aspect_most(results: dict[str, FactorResult], factor: str) -> None:
    result = results[factor]
    ranked = sorted(result.aspect_effect, key=result.aspect_effect.__getitem__, reverse=True)
    assert result.aspect_found, f"{factor} moved {ranked} most, expected {result.expected}"
    assert result.n_renders == 9 and result.n_pieces == 3


@needs_synth
def test_velocity_moves_dynamics_because_renders_keep_their_level(results: dict[str, FactorResult],
                                                                   renders: Path) -> None:
    # render_factor_set renders with peak=None: a harder-played render is louder, measured here from the files
    pieces = {path.name.rsplit("__", 1)[0] for path in (renders / "velocity").glob("*.flac")}
    assert len(pieces) == 3
    for piece in pieces:
        levels = []
        for velocity in LEVELS["velocity"]:
            audio, _ = sf.read(renders / "velocity" / f"{piece}__velocity_{velocity:g}.flac", dtype="float64")
            levels.append(10 * np.log10(np.mean(audio**2)))
        assert np.all(np.diff(levels) > 1.0), f"{piece}: level (dB) by velocity {levels}"
    result = results["velocity"]
    assert result.note == "", result.note  # the library agrees: the renders are not level-normalised
    assert result.aspect_found, f"velocity moved {result.moved} most, expected dynamics"


@needs_synth
@pytest.mark.parametrize("factor", FACTORS)
def test_a_layer_recovers_the_factor_from_held_out_pieces(results: dict[str, FactorResult], factor: str) -> None:
    result = results[factor]
    best = result.layer_scores[result.best_layer]
    assert result.layer_found, f"{result.best_layer}: {best:.2f} vs permutation null {result.null_scores}"


@needs_synth
def test_transposition_is_read_from_pitch_and_tempo_from_rhythm(results: dict[str, FactorResult]) -> None:
    transpose, tempo = results["transpose"].target_effect, results["tempo"].target_effect
    assert transpose["pitch_height"] > transpose["onset_rate"] + 0.5
    assert tempo["onset_rate"] > tempo["pitch_height"] + 0.5


def test_effect_size_is_within_piece_spread_over_the_spread_when_the_factor_is_fixed() -> None:
    rng = np.random.default_rng(0)
    pieces = np.repeat(np.arange(4), 5)
    base = rng.normal(0, 1, size=(4, 2))[pieces]  # piece-to-piece background on both targets
    level = np.tile(np.linspace(-2, 2, 5), 4)
    a = base + np.column_stack([3 * level, np.zeros(20)])  # factor A moves target 0
    b = base + np.column_stack([np.zeros(20), 3 * level])  # factor B moves target 1
    c = base.copy()  # factor C moves nothing
    effects = effect_sizes({"A": (a, pieces), "B": (b, pieces), "C": (c, pieces)})
    assert effects["A"][0] > 1.5 and effects["A"][1] < 1e-9
    assert effects["B"][1] > 1.5 and effects["B"][0] < 1e-9
    assert np.all(effects["C"] < 1e-9)
    shuffled = shuffle_within(level, pieces, seed=1)
    assert not np.array_equal(shuffled, level)
    for p in range(4):
        assert sorted(shuffled[pieces == p]) == sorted(level[pieces == p])
