"""A researcher's leftovers: targets reports' names, a segment export's windows, the embedding worker's job form."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from mess.probing.study import ProbeOptions
from mess.probing.user_probe import probe_targets, write_target_report
from mess.probing.user_targets import read_targets
from mess.store import FeatureStore


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
