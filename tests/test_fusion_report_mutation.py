"""`mess fuse report`'s verdict, notes, Markdown page and probe columns (mess.fusion.report), on reports built by
hand: each expected word follows from the figures put in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_fusion_pipeline_mutation import N_LABELS, PER_LABEL, UNLABELLED, _store

from mess.fusion.report import FusionReport, MethodScores, _verdict, attach_probe, interrupted_note, markdown
from mess.store.reports import report_paths


def _report(fused: float, mean: float, p: float | None, *, tracks: int = 60, labels: int = 6,
            same_data: bool = True) -> FusionReport:
    methods = [MethodScores("fused", "learned, 8-d", 0.5, 0.4, fused), MethodScores("untrained", "u", 0.1, 0.1, 0.1),
               MethodScores("best-layer", "l1 (center), chosen on training labels", 0.3, 0.3, 0.25),
               MethodScores("all-layers", "mean of per-layer cosines (zscore)", 0.3, 0.2, mean),
               MethodScores("chance", "random ranking", 0.05, 0.05, 0.05)]
    return FusionReport("m", "artist", 5, tracks, labels, methods, {"l0": 0.2, "l1": 0.6},
                        {"l0": 0.25, "l1": 0.75}, "", "", p, same_data)


@pytest.mark.parametrize(("fused", "mean", "p", "outcome"), [
    (0.6, 0.5, 0.01, "beats"),
    (0.4, 0.5, 0.01, "is worse than"),
    (0.6, 0.5, 0.05, "is not significantly different from"),  # ALPHA = 0.05: not below it
    (0.6, 0.5, 0.049, "beats"),
    (0.5, 0.5, None, "ties with"),
    (0.6, 0.5, None, "is not significantly different from"),  # one query: no test
    (0.5, 0.5, 0.01, "is not significantly different from"),
])
def test_the_verdict_follows_the_paired_test(fused: float, mean: float, p: float | None, outcome: str) -> None:
    verdict, caveat = _verdict(_report(fused, mean, p))
    test = "" if p is None else f", paired Wilcoxon p={p:.3g}"
    assert verdict == (f"fused {outcome} the mean of all layers on held-out nDCG@5 ({fused:.3f} vs {mean:.3f}{test}); "
                       "best single layer: 0.250")
    assert caveat == ""


@pytest.mark.parametrize(("tracks", "labels", "small"), [(50, 5, False), (49, 5, True), (50, 4, True),
                                                          (10, 2, True)])
def test_the_caveat_names_a_split_too_small_and_a_changed_store(tracks: int, labels: int, small: bool) -> None:
    for same in (True, False):
        _, caveat = _verdict(_report(0.6, 0.5, 0.01, tracks=tracks, labels=labels, same_data=same))
        parts = [f"held-out split holds n={tracks} tracks of {labels} labels: too small to conclude anything (want "
                 ">= 50 tracks and >= 5 labels)"] if small else []
        parts += [] if same else ["the store changed since training (data hash differs)"]
        assert caveat == "; ".join(parts), (tracks, labels, same)


def test_the_markdown_page_shows_every_row_note_and_the_strongest_probe_aspect() -> None:
    report = _report(0.6, 0.5, 0.01)
    report.verdict, report.caveat = "VERDICT", "CAVEAT"
    report.training_log_note, report.interrupted_note, report.probe_tracks_note = "LOG", None, "PROBE"
    report.probe = {"l0": {"timbre": 0.1, "rhythm": None, "harmony": 0.3}, "l1": {"timbre": None}}
    report.probe_note = "PROBE NOTE"
    report.files = {"png": "/somewhere/fusion-x.png"}
    lines = markdown(report).splitlines()
    assert lines[:3] == ["# Layer fusion: m (label = artist)", "", "VERDICT"]
    assert "**Caveat:** CAVEAT" in lines and "**Note:** LOG" in lines and "**Note:** PROBE" in lines
    assert sum(line.startswith("**Note:**") for line in lines) == 2
    assert "Held-out labels (never trained on): 6, tracks: 60." in lines
    assert "| method | what | P@5 | mAP | nDCG@5 |" in lines
    assert "| fused | learned, 8-d | 0.500 | 0.400 | 0.600 |" in lines
    assert "| chance | random ranking | 0.050 | 0.050 | 0.050 |" in lines
    assert "| l0 | 0.250 | 0.200 | harmony (0.30) |" in lines
    assert "| l1 | 0.750 | 0.600 | - |" in lines  # its only aspect has no score
    assert "PROBE NOTE" in lines and "![layer weights](fusion-x.png)" in lines
    plain = _report(0.6, 0.5, 0.01)
    plain.probe_note = "none"
    text = markdown(plain)
    assert "**Caveat:**" not in text and "**Note:**" not in text and "![" not in text
    assert "| l0 | 0.250 | 0.200 | - |" in text.splitlines()


def test_probe_columns_come_from_the_probe_report_of_the_run(tmp_path: Path) -> None:
    store, run = _store(tmp_path / "store")
    report = _report(0.6, 0.5, 0.01)
    report.model, report.layer_weights = run.model, {"l0": 0.3, "l1": 0.3, "l2": 0.4}
    path = report_paths(store.reports_dir, run.model, run.id, "ridge")["json"]
    attach_probe(report, store, run)
    assert report.probe is None
    assert report.probe_note == f"no probe report ({path.name}); run `mess probe --model synthetic` to compare"
    store.reports_dir.mkdir(parents=True, exist_ok=True)
    tracks = N_LABELS * PER_LABEL + 1 + UNLABELLED
    table = {"l0": {"timbre": 0.5}, "l2": {"rhythm": 0.25, "timbre": None}, "other": {"x": 1.0}}
    for key in ("aspect_score", "aspect_r2"):  # the older name, from reports before aspect scores
        path.write_text(json.dumps({"conditions": {"trained": {key: table}}, "n_tracks": tracks - 3,
                                    "missing_tracks": [{"path": "a"}, {"path": "b"}]}))
        attach_probe(report, store, run)
        assert report.probe == {"l0": {"timbre": 0.5}, "l1": {}, "l2": {"rhythm": 0.25, "timbre": None}}
        assert report.probe_note == f"probe R^2 per aspect (mean over its targets, clipped at 0) from {path.name}"
        assert report.probe_tracks_note == (f"the probe report {path.name} is from a probe of {tracks - 1} tracks; "
                                            f"synthetic run {run.id} has {tracks} now: rerun `mess probe --model "
                                            "synthetic`")
    report.probe_tracks_note = None
    path.write_text(json.dumps({"conditions": {"trained": {"aspect_score": table}}, "n_tracks": tracks - 1,
                                "missing_tracks": [{"path": "a"}]}))
    attach_probe(report, store, run)
    assert report.probe_tracks_note is None  # every track of the run was probed
    for bad in ("{", json.dumps({"conditions": {}}), json.dumps([1])):
        report.probe = None
        path.write_text(bad)
        attach_probe(report, store, run)
        assert report.probe is None and report.probe_note.startswith(f"probe report {path.name} has no per-layer")


def test_only_a_checkpoint_of_an_interrupted_training_gets_a_note() -> None:
    from types import SimpleNamespace

    assert interrupted_note(SimpleNamespace(interrupted_at=None, best_epoch=4)) is None  # type: ignore[arg-type]
    note = interrupted_note(SimpleNamespace(interrupted_at=7, best_epoch=5))  # type: ignore[arg-type]
    assert note is not None and note.startswith("the checkpoint is from a training interrupted at epoch 7 (best "
                                                "epoch 5)")
