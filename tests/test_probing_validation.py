"""Validation where the answer is known: Bach chorales rendered with one factor varied (real fluidsynth audio)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import cache_lock, render_cache
from mess.datasets.render import render_factor_set
from mess.models.registry import load_model
from mess.probing.probes import Folds, ProbeError, make_folds
from mess.probing.targets import TARGET_NAMES
from mess.probing.validation import (
    FACTORS,
    RENDER_SETTINGS,
    FactorResult,
    _render_note,
    centre_within,
    effect_sizes,
    factor_probe,
    shuffle_within,
    validate,
    within_sd,
    write_validation,
)

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
    # in this process: two worker processes cost their imports (test_probing_store's `mess probe` runs the pool)
    return {r.factor: r for r in validate(renders, load_model("dsp"), n_pieces=3, levels=LEVELS, workers=1)}


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


def test_centring_within_pieces_and_the_within_piece_spread_are_taken_per_group_of_any_labels() -> None:
    """Written out per group here: rows less their own group's mean, and the root-mean-square of what is left;
    groups are strings interleaved among the rows, of unequal size."""
    rng = np.random.default_rng(2)
    groups = np.array(["b", "a", "b", "c", "a", "b", "c", "b"])
    values = rng.normal(5, 3, size=(8, 3))
    want = values.copy()
    for g in ("a", "b", "c"):
        rows = [i for i in range(8) if groups[i] == g]
        want[rows] = values[rows] - values[rows].sum(axis=0) / len(rows)
    np.testing.assert_allclose(centre_within(values, groups), want, atol=1e-12)
    np.testing.assert_allclose(within_sd(values, groups), np.sqrt((want**2).sum(axis=0) / 8), atol=1e-12)
    assert values.dtype == np.float64 and not np.allclose(values, want)  # the input is left as it was


def test_a_target_that_never_moves_in_the_other_sets_has_no_effect_size() -> None:
    """Background spread 0 (the target is the same in every other set): the effect is undefined (NaN), not inf."""
    pieces = np.repeat(np.arange(2), 3)
    moving = np.column_stack([np.tile([0.0, 1.0, 2.0], 2), np.arange(6.0)])
    still = np.column_stack([np.zeros(6), np.arange(6.0)])
    effects = effect_sizes({"A": (moving, pieces), "B": (still, pieces)})
    assert np.isnan(effects["A"][0])
    # target 1 moves by -1, 0, +1 within each piece of A, over a background (B's renders) of 0..5
    assert effects["A"][1] == pytest.approx(np.sqrt(4 / 6) / np.std(np.arange(6.0)))
    assert effects["B"][0] == 0.0  # B does not move target 0, whose background (A's renders) does
    with pytest.raises(ProbeError, match="at least two factor sets"):
        effect_sizes({"A": (moving, pieces)})


def _factor_data(seed: int, levels: np.ndarray, n_pieces: int = 4) -> tuple[np.ndarray, np.ndarray, Folds]:
    """Renders of ``n_pieces`` pieces at every level: features = a large piece offset + the level along one direction
    + a little noise; folds leave one piece out."""
    rng = np.random.default_rng(seed)
    pieces = np.repeat(np.array([f"piece{k}" for k in range(n_pieces)]), len(levels))
    level = np.tile(np.arange(len(levels)), n_pieces)
    x = 10 * rng.standard_normal((n_pieces, 8))[np.repeat(np.arange(n_pieces), len(levels))]
    x[:, :len(levels)] += 2.0 * np.eye(len(levels))[level]  # each level its own direction (one-hot)
    x[:, -1] += 3.0 * level  # ... and an ordered one
    x += 0.05 * rng.standard_normal(x.shape)
    folds = make_folds(len(pieces), [("piece", pieces.tolist())], n_folds=n_pieces, seed=seed)
    return x, pieces, folds


def test_a_factor_the_features_carry_within_pieces_is_recovered_from_held_out_pieces() -> None:
    """The features put the renders of every piece in level order and name each level: held out piece by piece, the
    numeric probe ranks them perfectly (Spearman 1) and the classifier names every render (accuracy 1); with the
    levels permuted within pieces the numeric link is gone."""
    levels = np.array([0.6, 1.0, 1.6])
    x, pieces, folds = _factor_data(0, levels)
    values = np.tile(np.log2(levels), 4)
    assert [len(np.unique(pieces[test])) for _, test in folds.splits] == [1, 1, 1, 1]
    assert factor_probe(x, values, pieces, folds, categorical=False) == pytest.approx(1.0)
    assert factor_probe(x, -values, pieces, folds, categorical=False) == pytest.approx(1.0)  # the sign is learned
    instrument = np.tile(np.array([0, 40, 73]), 4)
    assert factor_probe(x, instrument, pieces, folds, categorical=True) == 1.0
    rolled = np.tile(np.array([40, 73, 0]), 4)  # names swapped: still one per direction
    assert factor_probe(x, rolled, pieces, folds, categorical=True) == 1.0
    noise = np.random.default_rng(1).standard_normal(len(values))
    assert abs(factor_probe(x, noise, pieces, folds, categorical=False)) < 0.9
    half = np.tile(np.array([0, 0, 73]), 4)  # two levels look different but share a name: still learnable
    assert factor_probe(x, half, pieces, folds, categorical=True) == 1.0
    wrong = np.array([0, 40, 73] * 2 + [73, 0, 40] * 2)  # half the pieces name the levels otherwise: not learnable
    assert factor_probe(x, wrong, pieces, folds, categorical=True) < 0.75


def _result(**kw: object) -> FactorResult:
    base = dict(factor="tempo", expected=("rhythm",), n_renders=9, n_pieces=3,
                target_effect={"onset_rate": 1.23456, "mfcc1": float("nan")},
                aspect_effect={"timbre": float("nan"), "rhythm": 0.5, "harmony": 0.7},
                layer_scores={"a": 0.30, "b": float("nan"), "c": 0.26}, null_scores={"a": 0.1, "b": 0.9, "c": 0.5},
                metric="spearman", chance=0.0)
    return FactorResult(**(base | kw))  # type: ignore[arg-type]


def test_a_factor_result_ignores_undefined_scores_and_needs_both_margin_and_null_to_find_a_layer() -> None:
    result = _result()
    assert (result.moved, result.aspect_found, result.best_layer) == ("harmony", False, "a")
    assert result.layer_found  # 0.30 > 0 + 0.25 and > its null 0.1
    assert _result(aspect_effect={"timbre": float("nan"), "rhythm": 0.9}).aspect_found
    assert not _result(layer_scores={"a": 0.25, "c": 0.1}).layer_found  # not *beyond* chance + margin
    assert not _result(null_scores={"a": 0.30, "b": 0.0, "c": 0.0}).layer_found  # not beyond its own null
    assert _result(metric="accuracy", chance=1 / 3, layer_scores={"a": 0.6, "c": 0.5}).layer_found
    assert not _result(metric="accuracy", chance=1 / 3, layer_scores={"a": 0.55, "c": 0.5}).layer_found
    d = result.to_dict()
    assert d["target_effect"] == {"onset_rate": 1.2346, "mfcc1": None}
    assert d["layer_scores"] == {"a": 0.3, "b": None, "c": 0.26} and d["null_scores_p95"]["b"] == 0.9
    assert (d["moved"], d["aspect_found"], d["best_layer"], d["layer_found"], d["expected"]) == \
        ("harmony", False, "a", True, ["rhythm"])
    json.dumps(d, allow_nan=False)


def test_velocity_renders_whose_level_barely_moves_are_flagged_as_normalised() -> None:
    pieces = np.repeat(np.arange(3), 3)
    loud = TARGET_NAMES.index("loudness")
    values = np.zeros((9, len(TARGET_NAMES)))
    values[:, loud] = np.tile([-20.0, -14.0, -8.0], 3)  # 6 dB a step: sqrt(24 / 3) = 4.9 dB within-piece SD
    assert _render_note("velocity", values, pieces) == ""
    values[:, loud] = np.tile([-20.0, -19.5, -19.0], 3) + np.repeat([0.0, 5.0, -3.0], 3)  # 0.41 dB
    assert "(0.41 dB within-piece SD)" in _render_note("velocity", values, pieces)
    assert _render_note("tempo", values, pieces) == ""  # only velocity is meant to move the level
    pairs = np.repeat(np.arange(2), 2)
    values = np.zeros((4, len(TARGET_NAMES)))
    values[:, loud] = [-21.0, -19.0, -31.0, -29.0]  # exactly 1 dB within-piece SD: not below LEVEL_SD_DB
    assert _render_note("velocity", values, pairs) == ""


def test_validation_refuses_an_unknown_factor_and_fewer_than_two_factors(tmp_path: Path) -> None:
    model = load_model("dsp")
    with pytest.raises(ProbeError, match="unknown factor 'pitch'; use instrument, tempo"):
        validate(tmp_path, model, factors=("tempo", "pitch"))
    for factors in (("tempo",), ("tempo", "tempo")):
        with pytest.raises(ProbeError, match="at least two factors"):
            validate(tmp_path, model, factors=factors)
    assert not any(tmp_path.iterdir())  # refused before rendering anything


@needs_synth
def test_two_factors_are_enough_to_render_the_first_set(tmp_path: Path) -> None:
    """Two factors pass: the first set is rendered (two pieces at one level here), then stopped at its step."""
    rendered = []

    def stop(step: str) -> None:
        rendered.append((step, sorted(p.name for p in (tmp_path / "velocity").glob("*.flac"))))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        validate(tmp_path, load_model("dsp"), factors=("velocity", "tempo"), n_pieces=2,
                 levels={"velocity": (80,), "tempo": ()}, on_step=stop)
    assert len(rendered) == 1 and rendered[0][0] == "render velocity"
    assert len(rendered[0][1]) == 2 and all(name.endswith("__velocity_80.flac") for name in rendered[0][1])


def test_validation_results_are_written_as_one_json_file_named_after_the_model(tmp_path: Path) -> None:
    model = load_model("dsp")
    (tmp_path / f"probe-validate-{model.info.name}.json").write_text("{old")
    written = write_validation(tmp_path, model, 3, [_result(), _result(factor="velocity", expected=("dynamics",))],
                               seed=7)
    path = tmp_path / f"probe-validate-{model.info.name}.json"
    assert written["file"] == str(path) and [p.name for p in tmp_path.iterdir()] == [path.name]
    on_disk = json.loads(path.read_text())
    assert on_disk == {k: v for k, v in written.items() if k != "file"}
    assert (on_disk["model"], on_disk["revision"], on_disk["pieces"], on_disk["seed"]) == \
        (model.info.name, model.info.revision, 3, 7)  # the seed of the null permutations, named
    assert [f["factor"] for f in on_disk["factors"]] == ["tempo", "velocity"]
