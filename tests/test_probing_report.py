"""Probe report: aspect scores, layer choice, the scores the aspect map stores, and the JSON / CSV files written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from mess.probing.probes import ProbeScores
from mess.probing.report import SHUFFLED, TRAINED, ProbeReport, aspect_matrix, choose_layers, write_report
from mess.probing.targets import ASPECTS, TARGETS


def _scores(layers: tuple[str, ...], cells: dict[tuple[str, str], float], rest: float = 0.0) -> ProbeScores:
    """R^2 table: ``rest`` everywhere, and every target of ``aspect`` at ``value`` in ``layer`` for each cell."""
    r2 = np.full((len(layers), len(TARGETS)), rest)
    for (layer, aspect), value in cells.items():
        r2[layers.index(layer), [j for j, t in enumerate(TARGETS) if t.aspect == aspect]] = value
    return ProbeScores(layers, tuple(t.name for t in TARGETS), r2, np.zeros_like(r2))


def test_aspect_scores_follow_target_names_not_their_order_and_an_aspect_without_targets_is_unscored() -> None:
    """A table whose targets come in another order (and lack the harmony ones) is read by name: each aspect's score
    is the mean of its own targets' max(R^2, 0), written out here per aspect; harmony, with no target, is NaN and
    chooses no layer."""
    rng = np.random.default_rng(5)
    kept = [t for t in TARGETS if t.aspect != "harmony"][::-1]
    r2 = rng.uniform(-0.5, 0.9, size=(3, len(kept)))
    scores = ProbeScores(("a", "b", "c"), tuple(t.name for t in kept), r2, np.zeros_like(r2))
    got = aspect_matrix(scores)
    for k, aspect in enumerate(ASPECTS):
        cols = [j for j, t in enumerate(kept) if t.aspect == aspect]
        if aspect == "harmony":
            assert np.isnan(got[:, k]).all()
        else:
            np.testing.assert_allclose(got[:, k], np.maximum(r2[:, cols], 0).mean(axis=1))
    assert [c.aspect for c in choose_layers(scores)] == [a for a in ASPECTS if a != "harmony"]


def test_one_layer_is_chosen_without_a_runner_up_and_ties_go_to_the_first_layer() -> None:
    single = choose_layers(_scores(("only",), {("only", "rhythm"): 0.5}))
    rhythm = next(c for c in single if c.aspect == "rhythm")
    assert (rhythm.layer, rhythm.score, rhythm.runner_up, rhythm.margin) == ("only", 0.5, None, 0.0)
    tied = {c.aspect: c for c in choose_layers(_scores(("x", "y", "z"), {("y", "timbre"): 0.4, ("z", "timbre"): 0.4}))}
    assert (tied["timbre"].layer, tied["timbre"].runner_up, tied["timbre"].margin) == ("y", "z", 0.0)
    assert (tied["rhythm"].layer, tied["rhythm"].runner_up, tied["rhythm"].score) == ("x", "y", 0.0)
    gap = _scores(("x", "y", "z"), {("y", "timbre"): 0.2, ("x", "timbre"): float("nan")})  # x unscored on timbre
    timbre = next(c for c in choose_layers(gap) if c.aspect == "timbre")
    assert (timbre.layer, timbre.runner_up, timbre.margin) == ("y", "z", pytest.approx(0.2))


def test_the_map_stores_the_trained_score_beyond_the_shuffled_control_floored_at_zero() -> None:
    """trained best - max(shuffled best, 0), at least 0: a shuffled control below zero takes nothing off, one above
    the trained score leaves 0; without the control the trained best is stored as it is."""
    layers = ("l0", "l1")
    trained = _scores(layers, {("l0", "timbre"): 0.6, ("l1", "rhythm"): 0.3, ("l1", "dynamics"): 0.5}, rest=-0.2)
    shuffled = _scores(layers, {("l0", "rhythm"): 0.45, ("l1", "dynamics"): 0.1}, rest=-0.4)
    report = ProbeReport("m", "r", 1, {}, 10, "KFold(5)", "ridge", 1.0, {TRAINED: trained, SHUFFLED: shuffled})
    # shuffled R^2 below zero is floored at 0 by the aspect score itself, so those aspects lose nothing
    want = {a: 0.0 for a in ASPECTS} | {"timbre": 0.6, "rhythm": 0.0, "dynamics": 0.5 - 0.1}
    assert report.map_scores() == pytest.approx(want)
    alone = ProbeReport("m", "r", 1, {}, 10, "KFold(5)", "ridge", 1.0, {TRAINED: trained})
    assert alone.map_scores() == pytest.approx({a: 0.0 for a in ASPECTS} | {"timbre": 0.6, "rhythm": 0.3,
                                                                             "dynamics": 0.5})


def test_a_report_is_written_as_json_and_a_long_csv_of_every_cell_with_constant_targets_empty(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    layers = ("conv1", "conv2")
    r2 = rng.uniform(-0.3, 0.95, size=(2, len(TARGETS)))
    r2[:, 3] = np.nan  # a target constant over the tracks
    std = rng.uniform(0, 0.2, size=r2.shape)
    std[:, 3] = np.nan
    trained = ProbeScores(layers, tuple(t.name for t in TARGETS), r2, std)
    shuffled = ProbeScores(layers, trained.targets, r2 - 0.5, std)
    report = ProbeReport("some/model", "rev", 7, {"window_seconds": 3.0}, 12, "KFold(5)", "mlp", 2.345,
                         {TRAINED: trained, SHUFFLED: shuffled}, missing=[("/music/a.flac", "unreadable")])
    folder = tmp_path / "store" / "reports"  # made, parents too
    paths = write_report(report, folder, partial=True)
    assert {k: p.name for k, p in paths.items()} == {e: f"probe-some_model-run7-mlp-partial.{e}"
                                                     for e in ("json", "csv", "png")}
    whole = write_report(report, folder)  # the report of every layer, beside it in the folder that now exists
    assert {k: p.name for k, p in whole.items()} == {e: f"probe-some_model-run7-mlp.{e}"
                                                     for e in ("json", "csv", "png")}
    assert whole["csv"].read_bytes() == paths["csv"].read_bytes()
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with paths["csv"].open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["condition", "layer", "target", "aspect", "r2_mean", "r2_std", "model", "run_id", "revision",
                       "probe", "seed"]
    want = [[c, layer, t.name, t.aspect, "" if np.isnan(v[i, j]) else str(round(float(v[i, j]), 4)),
             "" if np.isnan(std[i, j]) else str(round(float(std[i, j]), 4)), "some/model", "7", "rev", "mlp", "0"]
            for c, v in ((TRAINED, r2), (SHUFFLED, r2 - 0.5)) for i, layer in enumerate(layers)
            for j, t in enumerate(TARGETS)]
    assert rows[1:] == want
    written = json.loads(paths["json"].read_text())
    assert (written["model"], written["run_id"], written["probe"], written["seconds"], written["n_tracks"]) == \
        ("some/model", 7, "mlp", 2.35, 12)
    assert written["missing_tracks"] == [{"path": "/music/a.flac", "reason": "unreadable"}]
    cells = written["conditions"][TRAINED]["r2"]
    assert cells["conv2"][TARGETS[3].name] is None
    assert cells["conv2"][TARGETS[4].name] == round(float(r2[1, 4]), 4)
    assert written["conditions"][SHUFFLED]["r2_std"]["conv1"][TARGETS[0].name] == round(float(std[0, 0]), 4)
    aspect = written["conditions"][TRAINED]["aspect_score"]
    for a in ASPECTS:
        cols = [j for j, t in enumerate(TARGETS) if t.aspect == a and j != 3]
        for i, layer in enumerate(layers):
            assert aspect[layer][a] == pytest.approx(np.maximum(r2[i, cols], 0).mean(), abs=6e-5)
    best = {c["aspect"]: c for c in written["aspects"]}
    for a in ASPECTS:
        cols = [j for j, t in enumerate(TARGETS) if t.aspect == a and j != 3]
        per_layer = np.maximum(r2[:, cols], 0).mean(axis=1)
        assert best[a]["layer"] == layers[int(np.argmax(per_layer))]
        assert best[a]["margin"] == pytest.approx(abs(per_layer[0] - per_layer[1]))
    assert written["conditions"][TRAINED]["best"] == written["aspects"]
    assert written["aspect_map_scores"] == {a: round(v, 4) for a, v in report.map_scores().items()}  # 4 decimals
    assert written["aspect_map_scores"] == pytest.approx(
        {a: round(max(0.0, best[a]["score"] - max(0.0, max(aspect_row[a] for aspect_row in
                                                           written["conditions"][SHUFFLED]["aspect_score"].values()))),
                  4) for a in ASPECTS}, abs=2e-4)


def test_the_cli_prints_names_with_markup_as_written(tmp_path: Path) -> None:
    """A track without targets named 'x [/] y.flac' ended `mess probe` in rich's MarkupError (after its report files
    were written), and '[bold]' in a name or a store folder vanished from the lines naming it."""
    from mess.cli.common import console
    from mess.cli.probe import _print_report

    layers = ("l0", "l1")
    trained = _scores(layers, {("l1", a): 0.5 for a in ASPECTS})
    failed = f"{tmp_path}/x [/] y.flac: every window is silent"
    report = ProbeReport("m", "r", 1, {}, 10, "KFold(5)", "ridge", 1.0, {TRAINED: trained},
                         notes={"[bold]shuffled": "not run [/]"}, missing=[("x [/] y.flac", failed)])
    with console.capture() as printed:
        _print_report(report, {"json": tmp_path / "[bold]store" / "probe.json"}, "[red]why")
    out = " ".join(printed.get().split())
    for written in (failed, "[bold]shuffled", "not run [/]", "[bold]store/probe.json", "[red]why"):
        assert " ".join(written.split()) in out, (written, out)
