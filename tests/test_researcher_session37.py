"""A researcher's leftovers: targets reports' names, a segment export's windows, the embedding worker's job form."""

from __future__ import annotations

import csv
import json
import os
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from mess.probing.probes import make_folds, probe_layers
from mess.probing.report import TRAINED, ProbeReport
from mess.probing.study import ProbeOptions
from mess.probing.targets import TARGET_NAMES
from mess.probing.user_probe import probe_targets, write_target_report
from mess.probing.user_targets import read_targets
from mess.store import FeatureStore
from mess.store.export import export_vectors


def _write(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_two_targets_files_of_one_name_in_two_folders_write_two_reports(extracted_store: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`a/genre.csv` and `b/genre.csv` each keep a report (the second replaced the first); one file's report keeps its
    name however the file is named (relative from its folder, or absolute), and says the file's name."""
    store = FeatureStore(extracted_store, readonly=True)
    run = store.run("dsp")
    tracks = store.tracks(run)
    options = ProbeOptions(layers=[run.layer_names[0]], controls=(), seed=0)
    reports = tmp_path / "store" / "reports"
    written = {}
    for folder, label in (("a", "composer"), ("b", "album")):
        own = _write(tmp_path / folder / "genre.csv", ["id", "genre"], [[t.id, getattr(t, label)] for t in tracks])
        report = probe_targets(store, run, read_targets(store, own), options)
        written[folder] = write_target_report(report, reports)
    assert written["a"]["json"] != written["b"]["json"]
    for folder, paths in written.items():
        assert paths["json"].name.startswith(f"probe-dsp-run{run.id}-targets-genre-")
        assert json.loads(paths["json"].read_text())["targets_file"] == str(tmp_path / folder / "genre.csv")
        assert {p.suffix for p in paths.values() if p.exists()} == {".json", ".csv", ".png"}
    monkeypatch.chdir(tmp_path / "a")
    again = probe_targets(store, run, read_targets(store, "genre.csv"), options)
    assert write_target_report(again, reports) == written["a"]  # the same file, the same names
    assert len(os.listdir(reports)) == 6


@pytest.fixture(scope="module")
def windowed_store(rendered_collection: list[Path],
                   tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """dsp over a 20 s render (three 6 s windows) and its first 4 s (one window of 4 s), with 6 s windows."""
    from mess.audio.windows import WindowPolicy
    from mess.extract.pipeline import extract
    from mess.models.registry import load_model

    folder = tmp_path_factory.mktemp("windows")
    audio, rate = sf.read(rendered_collection[0])
    short = folder / "short.flac"
    sf.write(short, audio[: 4 * rate], rate)
    files = [rendered_collection[0], short]
    with closing(FeatureStore(folder / "store")) as store:
        summary = extract(store, files, load_model("dsp"), WindowPolicy(window_seconds=6, max_windows=3), workers=1)
        assert not summary.failed, summary.failed
    return folder / "store", files


@pytest.mark.parametrize("fmt", ["npz", "csv"])
def test_a_segment_export_gives_each_window_the_start_and_length_the_extractor_cut(
        windowed_store: tuple[Path, list[Path]], tmp_path: Path, fmt: str) -> None:
    """Each exported window's start and length are those of the windows :func:`decode_windows` cuts from the file
    (the extractor's own decoding) under the run's policy: a window vector can be placed in time."""
    from mess.audio.windows import WindowPolicy
    from mess.extract.prepare import decode_windows, inspect_file

    root, files = windowed_store
    with closing(FeatureStore(root, readonly=True)) as store:
        run = store.run("dsp")
        export_vectors(store, run, tmp_path / f"v.{fmt}", fmt, layers=["mfcc"], segments=True)
    if fmt == "npz":
        data = np.load(tmp_path / "v.npz")
        got = list(zip(data["path"].tolist(), data["segment_start"].tolist(), data["segment_seconds"].tolist(),
                       strict=True))
    else:
        table = pd.read_csv(tmp_path / "v.csv")
        got = list(zip(table["path"], table["segment_start"], table["segment_seconds"], strict=True))
    rate = 22050  # dsp's
    expected = []
    for path in files:
        windows = decode_windows(inspect_file(path), rate, WindowPolicy.from_json(run.policy))
        expected += [(str(path), start, windows.audio.shape[1] / rate) for start in windows.starts.tolist()]
    assert [p for p, _, _ in got] == [p for p, _, _ in expected] and len(got) == 4  # 3 windows + 1
    np.testing.assert_allclose([g[1:] for g in got], [e[1:] for e in expected], atol=1e-4)


def test_own_targets_report_each_folds_score_so_layers_compare_with_confidence_intervals(
        extracted_store: Path, tmp_path: Path) -> None:
    """A researcher puts confidence intervals on a layer's score and compares layers fold by fold: the report gives
    every fold's score (mean and std were all), whose mean and std are the report's; the same seed gives the same
    numbers twice."""
    store = FeatureStore(extracted_store, readonly=True)
    run = store.run("dsp")
    tracks = store.tracks(run)
    own = _write(tmp_path / "mine.csv", ["id", "composer", "level"],
                 [[t.id, t.composer, t.duration * (1 + k % 3)] for k, t in enumerate(tracks)])
    options = ProbeOptions(layers=run.layer_names[:2], seed=4, group_by="none", folds=4)
    report = probe_targets(store, run, read_targets(store, own), options).to_dict()
    assert probe_targets(store, run, read_targets(store, own), options).to_dict()["conditions"] == report["conditions"]
    for condition in ("trained", "shuffled"):
        got = report["conditions"][condition]
        assert set(got["score_folds"]) == set(run.layer_names[:2])
        for layer, row in got["score_folds"].items():
            assert set(row) == {"composer", "level"}
            for target, folds in row.items():
                assert len(folds) == 4  # KFold(4): one score per fold
                assert got["score"][layer][target] == pytest.approx(np.mean(folds), abs=1e-4)
                assert got["score_std"][layer][target] == pytest.approx(np.std(folds), abs=1e-4)


def test_the_proxy_probe_report_gives_each_folds_r2(extracted_store: Path) -> None:
    """The proxy probe's report had R^2 mean and std over folds only: each fold's R^2 (one list per layer and target,
    the folds shared by every layer) now comes with them, and numpy's mean and std of it are the report's."""
    store = FeatureStore(extracted_store, readonly=True)
    run = store.run("dsp")
    ids, mfcc = store.layer_matrix(run, "mfcc")
    y = mfcc[:, : len(TARGET_NAMES)].astype(np.float64)  # 22 real columns stand in for the proxy targets
    folds = make_folds(len(ids), [], 4, seed=2)
    layers = [(name, lambda name=name: store.layer_matrix(run, name)[1]) for name in ("chroma", "spectral")]
    scores = probe_layers(layers, y, TARGET_NAMES, folds, seed=2, jobs=1)
    report = ProbeReport("dsp", run.revision, run.id, {}, len(ids), folds.scheme, "ridge", 0.0, {TRAINED: scores})
    got = report.to_dict()["conditions"][TRAINED]
    for layer in ("chroma", "spectral"):
        for target in TARGET_NAMES:
            folds_r2 = got["r2_folds"][layer][target]
            assert len(folds_r2) == 4
            assert got["r2"][layer][target] == pytest.approx(np.mean(folds_r2), abs=1e-4)
            assert got["r2_std"][layer][target] == pytest.approx(np.std(folds_r2), abs=1e-4)
