"""`mess export`: vectors with ids, paths and tags, per track or per window, as npz and parquet."""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mess.cli.main import app
from mess.store import FeatureStore

runner = CliRunner()


def test_export_npz_tracks_match_the_store(extracted_store: Path, tmp_path: Path) -> None:
    out = runner.invoke(app, ["export", str(tmp_path / "v.npz"), "--model", "musicnn-msd", "--store",
                              str(extracted_store)])
    assert out.exit_code == 0, out.output
    data = np.load(tmp_path / "v.npz")
    with closing(FeatureStore(extracted_store, readonly=True)) as store:
        run = store.run("musicnn-msd")
        assert list(data["layers"]) == list(run.layer_names)
        for name in run.layer_names:
            ids, mat = store.layer_matrix(run, name)
            np.testing.assert_array_equal(data["track_id"], ids)
            np.testing.assert_array_equal(data[f"vectors_{name}"], mat)
        tracks = {t.id: t for t in store.tracks(run)}
    assert [tracks[int(i)].path for i in data["track_id"]] == list(data["path"])
    assert [tracks[int(i)].artist for i in data["track_id"]] == list(data["artist"])
    assert str(data["model"]) == "musicnn-msd"


@pytest.mark.parametrize("fmt", ["npz", "parquet"])
def test_export_segments_and_chosen_layers(extracted_store: Path, tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"s.{fmt}"
    out = runner.invoke(app, ["export", str(path), "--model", "dsp", "--layers", "mfcc,-1", "--segments",
                              "--store", str(extracted_store), "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    with closing(FeatureStore(extracted_store, readonly=True)) as store:
        run = store.run("dsp")
        ids, starts, last = store.segment_matrix(run, -1)
        mfcc = store.segment_matrix(run, "mfcc")[2]
    assert summary["layers"] == ["mfcc", run.layer_names[-1]] and summary["rows"] == len(ids)
    if fmt == "npz":
        data = np.load(path)
        got_ids, got_starts = data["track_id"], data["segment_start"]
        got_last, got_mfcc = data[f"vectors_{run.layer_names[-1]}"], data["vectors_mfcc"]
    else:
        table = pq.read_table(path)
        assert json.loads(table.schema.metadata[b"mess"])["model"] == "dsp"
        got_ids, got_starts = table["track_id"].to_numpy(), table["segment_start"].to_numpy()
        got_last = np.stack(table[run.layer_names[-1]].to_numpy(zero_copy_only=False))
        got_mfcc = np.stack(table["mfcc"].to_numpy(zero_copy_only=False))
        assert set(table.column_names) >= {"path", "artist", "title", "genre", "composer", "duration"}
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_allclose(got_starts, starts)
    np.testing.assert_array_equal(got_last, last)
    np.testing.assert_array_equal(got_mfcc, mfcc)


def test_export_bad_input_is_one_line(extracted_store: Path, tmp_path: Path) -> None:
    out = runner.invoke(app, ["export", str(tmp_path / "v.csv"), "--store", str(extracted_store)])
    assert out.exit_code == 1 and "npz or parquet" in out.output and "Traceback" not in out.output
    out = runner.invoke(app, ["export", str(tmp_path / "v.npz"), "--layers", "nope", "--model", "dsp",
                              "--store", str(extracted_store)])
    assert out.exit_code == 1 and "unknown layer" in out.output
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for target in (blocker / "v.npz", Path("/dev/full")):  # a parent that is a file; a full disk
        out = runner.invoke(app, ["export", str(target), "--format", "npz", "--store", str(extracted_store)])
        assert out.exit_code == 1 and f"cannot write {target}: " in " ".join(out.output.split()), out.output
        assert out.exception is None or isinstance(out.exception, SystemExit)
