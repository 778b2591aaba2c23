"""`mess export`: vectors with ids, paths and tags, per track or per window, as npz and parquet."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mess.audio.windows import WindowPolicy
from mess.cli.main import app
from mess.constants import FUSED
from mess.extract.runs import run_key
from mess.fusion.apply import apply_fusion
from mess.fusion.data import load_layers
from mess.fusion.train import FusionConfig, checkpoint_path, save_checkpoint, train_fusion
from mess.models.base import ModelInfo
from mess.store import FeatureStore, Run, StoreError, TrackVectors
from mess.store.export import export_vectors
from mess.store.paths import printable

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


def test_an_export_to_stdout_goes_into_the_file_it_is_redirected_to(extracted_store: Path, tmp_path: Path) -> None:
    """`mess export - --format csv >> f` replaced f with the export (its earlier lines lost): /dev/stdout, a regular
    file there, was replaced by a renamed new file rather than written into. It is written at stdout's place now."""
    args = ["export", "--model", "dsp", "--format", "csv", "--store", str(extracted_store)]
    assert runner.invoke(app, [*args[:1], str(tmp_path / "alone.csv"), *args[1:]]).exit_code == 0
    out = tmp_path / "out.csv"
    out.write_text("earlier line\n")
    with out.open("a") as appended:
        done = subprocess.run([sys.executable, "-m", "mess.cli", *args[:1], "-", *args[1:]], stdout=appended,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == "earlier line\n" + (tmp_path / "alone.csv").read_text()


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
    out = runner.invoke(app, ["export", str(tmp_path / "v.xlsx"), "--store", str(extracted_store)])
    assert out.exit_code == 1 and "npz, parquet or csv" in out.output and "Traceback" not in out.output
    out = runner.invoke(app, ["export", str(tmp_path / "v.npz"), "--layers", "nope", "--model", "dsp",
                              "--store", str(extracted_store)])
    assert out.exit_code == 1 and "unknown layer" in out.output
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for target in (blocker / "v.npz", Path("/dev/full")):  # a parent that is a file; a full disk
        out = runner.invoke(app, ["export", str(target), "--format", "npz", "--store", str(extracted_store)])
        assert out.exit_code == 1 and f"cannot write {target}: " in " ".join(out.output.split()), out.output
        assert out.exception is None or isinstance(out.exception, SystemExit)


def _toy_store(root: Path) -> tuple[FeatureStore, Run]:
    """Three tracks of a two-layer toy run, one named with bytes that are not valid UTF-8."""
    store = FeatureStore(root)
    run = store.ensure_run(run_key(ModelInfo("toy", "r1", 16000, ("a", "b"), (3, 2)), WindowPolicy()))
    for i, name in enumerate(["one.flac", os.fsdecode(b"caf\xe9.flac"), "three.flac"]):
        _toy_track(store, run, Path("/music") / name, f"hash-{i}", float(i))
    return store, run


def _toy_track(store: FeatureStore, run: Run, path: Path, content: str, value: float) -> None:
    store.upsert_track(path, content, 1, 0.0, {"duration": 5.0},
                       {"artist": "A", "album": None, "title": content, "genre": None, "composer": None})
    layers = [np.full(3, value, np.float32), np.full(2, value, np.float32)]
    store.write_vectors(run, [TrackVectors(content, layers, [v[None] for v in layers], [0.0])])


def test_a_name_that_is_not_utf8_exports_exactly_to_npz_and_as_printed_to_parquet(tmp_path: Path) -> None:
    store, run = _toy_store(tmp_path / "store")
    with closing(store):
        export_vectors(store, run, tmp_path / "v.npz", "npz")
        export_vectors(store, run, tmp_path / "v.parquet", "parquet")  # raised UnicodeDecodeError before
        paths = [t.path for t in store.tracks(run)]
    assert list(np.load(tmp_path / "v.npz")["path"]) == paths
    assert pq.read_table(tmp_path / "v.parquet")["path"].to_pylist() == [printable(p) for p in paths]
    assert "/music/caf\\xe9.flac" in pq.read_table(tmp_path / "v.parquet")["path"].to_pylist()


def test_export_reads_one_catalog_version_while_another_process_commits(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process replaces a track's content between export's reads of two layers: every column still comes
    from the catalog as it was when the export began (before, layer a was old, layer b new, tags old)."""
    store, run = _toy_store(tmp_path / "store")
    writer = (f"import sys; sys.path[:0] = {sys.path!r}\n"
              "from pathlib import Path\nfrom test_export import _toy_track\nfrom mess.store import FeatureStore\n"
              f"s = FeatureStore(Path({str(tmp_path / 'store')!r}))\n"
              "_toy_track(s, s.run('toy'), Path('/music/one.flac'), 'hash-new', 9.0)\ns.close()\n")
    reads = []
    original = FeatureStore.layer_matrix

    def layer_then_commit(self: FeatureStore, run: Run, layer: str | int) -> tuple[np.ndarray, np.ndarray]:
        out = original(self, run, layer)
        if not reads:
            subprocess.run([sys.executable, "-c", writer], check=True, cwd=Path(__file__).parent, timeout=120)
        reads.append(layer)
        return out

    monkeypatch.setattr(FeatureStore, "layer_matrix", layer_then_commit)
    with closing(store):
        export_vectors(store, run, tmp_path / "v.npz", "npz")
        assert store.track("/music/one.flac").content_hash == "hash-new"  # the commit did land
    data = np.load(tmp_path / "v.npz")
    row = list(data["path"]).index("/music/one.flac")
    assert reads == ["a", "b"] and data["title"][row] == "hash-0"
    assert data["vectors_a"][row].tolist() == [0.0] * 3 and data["vectors_b"][row].tolist() == [0.0] * 2



@pytest.mark.parametrize("fmt", ["NPZ", "Parquet"])
def test_the_format_name_is_read_in_any_case_as_the_extension_is(tmp_path: Path, fmt: str) -> None:
    """`--format NPZ` was an unknown export format while `-o v.NPZ` wrote npz."""
    _toy_store(tmp_path / "store")[0].close()
    out = runner.invoke(app, ["export", str(tmp_path / "v.out"), "--format", fmt, "--store", str(tmp_path / "store")])
    assert out.exit_code == 0, out.output
    if fmt == "NPZ":
        assert list(np.load(tmp_path / "v.out")["layers"]) == ["a", "b"]
    else:
        assert pq.read_table(tmp_path / "v.out").num_rows == 3
    out = runner.invoke(app, ["export", str(tmp_path / "v.out"), "--format", "XLS", "--store", str(tmp_path / "store")])
    assert out.exit_code == 1 and "unknown export format 'XLS'; choose npz, parquet or csv" in out.output, out.output


def test_export_names_each_layer_once(tmp_path: Path) -> None:
    """'-l a -l 0' reported 2 layers and listed 'a' twice in the npz's layers, beside one vectors_a."""
    _toy_store(tmp_path / "store")[0].close()
    out = runner.invoke(app, ["export", str(tmp_path / "v.npz"), "-l", "a", "-l", "0", "-l", "b,a", "--store",
                              str(tmp_path / "store"), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["layers"] == ["a", "b"] and list(np.load(tmp_path / "v.npz")["layers"]) == ["a", "b"]


def test_export_never_writes_inside_the_store(tmp_path: Path) -> None:
    """'mess export STORE/catalog.sqlite --format npz' overwrote the catalog: the store could no longer be opened."""
    _toy_store(tmp_path / "store")[0].close()
    for target in (tmp_path / "store" / "catalog.sqlite", tmp_path / "store" / "v.npz"):
        out = runner.invoke(app, ["export", str(target), "--format", "npz", "--store", str(tmp_path / "store")])
        assert out.exit_code == 1 and "inside the feature store" in out.output, out.output
    assert not (tmp_path / "store" / "v.npz").exists()
    with closing(FeatureStore(tmp_path / "store", readonly=True)) as store:
        assert len(store.tracks()) == 3


def test_an_export_killed_while_writing_leaves_the_previous_file_whole(tmp_path: Path) -> None:
    """Export opened its output for writing first, so a kill -9 while it wrote left the previous export cut short."""
    _toy_store(tmp_path / "store")[0].close()
    out = tmp_path / "v.npz"
    assert runner.invoke(app, ["export", str(out), "--store", str(tmp_path / "store")]).exit_code == 0
    before = out.read_bytes()
    killed_mid_write = (f"import sys; sys.path[:0] = {sys.path!r}\n"
                        "import os, signal\nimport numpy as np\n"
                        "def savez(f, **arrays):\n    f.write(b'PK half an archive'); f.flush()\n"
                        "    os.kill(os.getpid(), signal.SIGKILL)\n"
                        "np.savez = savez\nfrom mess.cli.main import app\n"
                        f"app(['export', {str(out)!r}, '--store', {str(tmp_path / 'store')!r}])\n")
    run = subprocess.run([sys.executable, "-c", killed_mid_write], capture_output=True, timeout=120)
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert out.read_bytes() == before
    assert list(np.load(out)["layers"]) == ["a", "b"]


def test_a_run_with_no_vectors_yet_says_so_in_words(tmp_path: Path) -> None:
    """An extract killed before its first commit leaves a run without vectors: `similar` said 'no all vectors'."""
    store = FeatureStore(tmp_path / "store")
    store.ensure_run(run_key(ModelInfo("toy", "r1", 16000, ("a", "b"), (3, 2)), WindowPolicy()))
    store.upsert_track(Path("/music/one.flac"), "hash-0", 1, 0.0, {"duration": 5.0}, {})
    store.close()
    out = runner.invoke(app, ["similar", "/music/one.flac", "--model", "toy", "--store", str(tmp_path / "store")])
    said = " ".join(out.output.split())
    assert out.exit_code == 1 and "Traceback" not in said, said
    assert "no vectors for toy in this store yet; run `mess extract` first" in said, said


def test_export_counts_the_files_that_failed_to_extract(extracted_store: Path, tmp_path: Path) -> None:
    """A file the run failed on was in neither the rows nor any count (files_not_embedded leaves failures out):
    '16 tracks of 16 tracks' for 17 catalogued files, and nothing in the file told a reader one was missing."""
    import shutil

    from mess.extract.pipeline import extract
    from mess.models.registry import load_model

    root = tmp_path / "store"
    shutil.copytree(extracted_store, root)
    with closing(FeatureStore(root)) as store:
        good = Path(store.tracks(store.run("dsp"))[0].path)
        broken = tmp_path / "broken.flac"
        broken.write_bytes(good.read_bytes()[:3000])  # the header and no audio
        os.utime(broken, (time.time() - 3600, time.time() - 3600))  # cut short for good: new, it waits for the rest
        summary = extract(store, [broken], load_model("dsp"), WindowPolicy())
        assert len(summary.failed) == 1
        run = store.run("dsp")
        ids, _ = store.layer_matrix(run, 0)
    for name in ("v.npz", "v.parquet"):
        out = runner.invoke(app, ["export", str(tmp_path / name), "--model", "dsp", "--store", str(root)],
                            env={"COLUMNS": "300"})
        assert out.exit_code == 0, out.output
        assert "1 file failed to extract and is not in the rows" in out.output
    data = np.load(tmp_path / "v.npz")
    np.testing.assert_array_equal(data["track_id"], ids)
    assert int(data["files_failed"]) == 1 and int(data["files_not_embedded"]) == 0
    meta = json.loads(pq.read_schema(tmp_path / "v.parquet").metadata[b"mess"])
    assert meta["files_failed"] == 1
    out = runner.invoke(app, ["export", str(tmp_path / "w.npz"), "--model", "dsp", "--store", str(root), "--json"])
    assert json.loads(out.stdout)["files_failed"] == 1


def test_export_says_which_run_of_a_model_extracted_twice(extracted_store: Path, tmp_path: Path) -> None:
    """dsp extracted again with another --max-windows has two runs: the npz, parquet, --json and printed line
    named neither the run nor its window policy, so a reader could not tell which run's vectors they held."""
    import shutil

    from mess.extract.pipeline import extract
    from mess.models.registry import load_model

    root = tmp_path / "store"
    shutil.copytree(extracted_store, root)
    with closing(FeatureStore(root)) as store:
        some = [Path(t.path) for t in store.tracks(store.run("dsp"))[:2]]
        assert not extract(store, some, load_model("dsp"), WindowPolicy(max_windows=1)).failed
        run = store.run("dsp")  # the first run: it covers the most tracks
        other = next(r for r in store.runs() if r.model == "dsp" and r.id != run.id)
    assert run.policy != other.policy
    for name in ("v.npz", "v.parquet"):
        out = runner.invoke(app, ["export", str(tmp_path / name), "--model", "dsp", "--store", str(root)],
                            env={"COLUMNS": "300"})
        assert out.exit_code == 0, out.output
        said = " ".join(out.output.split())
        assert f"of dsp run {run.id} of 2 ->" in said and f"exported run {run.id}, revision {run.revision}" in said
        assert f"up to 4 windows of 30 s, the one covering the most tracks; extract the collection again with run " \
               f"{other.id}'s settings to move to it" in said
    data = np.load(tmp_path / "v.npz")
    assert (int(data["run_id"]), str(data["revision"]), str(data["policy"])) == (run.id, run.revision, run.policy)
    meta = json.loads(pq.read_schema(tmp_path / "v.parquet").metadata[b"mess"])
    assert (meta["run_id"], meta["model"], meta["revision"], meta["policy"]) == (run.id, "dsp", run.revision,
                                                                                 run.policy)
    out = runner.invoke(app, ["export", str(tmp_path / "w.npz"), "--model", "dsp", "--store", str(root), "--json"])
    summary = json.loads(out.stdout)
    assert (summary["run_id"], summary["revision"], summary["policy"]) == (run.id, run.revision, run.policy)


@pytest.mark.parametrize("fmt", ["npz", "parquet"])
def test_a_duration_of_zero_exports_as_zero_and_an_unknown_one_as_nan(tmp_path: Path, fmt: str) -> None:
    """'duration or nan' turned a catalogued 0 s into NaN, as if it were unknown."""
    store, run = _toy_store(tmp_path / "store")
    with closing(store):
        store.set_duration("hash-0", 0.0)
        store.upsert_track(Path("/music/four.flac"), "hash-3", 1, 0.0, {}, {})  # no duration known
        layers = [np.zeros(3, np.float32), np.zeros(2, np.float32)]
        store.write_vectors(run, [TrackVectors("hash-3", layers, [v[None] for v in layers], [0.0])])
        export_vectors(store, run, tmp_path / f"v.{fmt}", fmt)
    if fmt == "npz":
        data = np.load(tmp_path / "v.npz")
        paths, durations = list(data["path"]), data["duration"]
    else:
        table = pq.read_table(tmp_path / "v.parquet")
        paths, durations = table["path"].to_pylist(), table["duration"].to_numpy()
    got = dict(zip(paths, durations.tolist(), strict=True))
    assert got["/music/one.flac"] == 0.0 and got["/music/three.flac"] == 5.0
    assert np.isnan(got["/music/four.flac"])


@pytest.mark.parametrize("fmt", ["npz", "parquet"])
def test_export_fused_vectors_with_the_run_they_belong_to(extracted_store: Path, tmp_path: Path, fmt: str) -> None:
    """`mess export` had no way to export the fused vectors of `mess fuse apply`."""
    root, path = tmp_path / "store", tmp_path / f"fused.{fmt}"
    shutil.copytree(extracted_store, root)
    args = ["export", str(path), "--fused", "--model", "dsp", "--store", str(root)]
    out = runner.invoke(app, args)
    assert out.exit_code == 1 and "no 'fused' vectors for dsp" in out.output and "mess fuse apply" in out.output
    assert not path.exists() and "Traceback" not in out.output
    with closing(FeatureStore(root)) as store:
        run = store.run("dsp")
        checkpoint = checkpoint_path(store, run)
        save_checkpoint(train_fusion(load_layers(store, run), FusionConfig(label="composer", weight_epochs=1,
                                                                           max_epochs=0)), checkpoint)
        apply_fusion(store, checkpoint, "dsp")
        ids, fused = store.derived_matrix(run, FUSED)
        sha = store.derived_meta(run, FUSED)["checkpoint_sha256"]
    out = runner.invoke(app, [*args, "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["layers"] == [FUSED] and summary["rows"] == len(ids) and summary["tracks_not_fused"] == 0
    identity = {"model": "dsp", "run_id": run.id, "revision": run.revision, "policy": run.policy}
    assert {k: summary[k] for k in identity} == identity
    if fmt == "npz":
        data = np.load(path)
        got_ids, got = data["track_id"], data["vectors_fused"]
        meta = {k: data[k].item() for k in (*identity, "fused_checkpoint_sha256")}
        assert list(data["layers"]) == [FUSED]
    else:
        table = pq.read_table(path)
        got_ids, got = table["track_id"].to_numpy(), np.stack(table[FUSED].to_numpy(zero_copy_only=False))
        meta = json.loads(table.schema.metadata[b"mess"])
        assert meta["layers"] == [FUSED]
    assert {k: meta[k] for k in identity} == identity and meta["fused_checkpoint_sha256"] == sha
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got, fused)
    out = runner.invoke(app, [*args, "--segments"])
    assert out.exit_code == 1 and "fused vectors have no layers or windows" in out.output


def test_layers_named_like_a_tag_column_keep_both_in_parquet(tmp_path: Path) -> None:
    """An ONNX model's layers are named after its outputs: layers called 'genre' and 'duration' took those columns'
    places in the parquet file, and the tracks' genres and durations were lost without a word. Such a layer is
    ``vectors_<layer>`` there, as in the npz, and the metadata's ``layer_columns`` names each layer's column."""
    with closing(FeatureStore(tmp_path / "store")) as store:
        run = store.ensure_run(run_key(ModelInfo("tagger", "r1", 16000, ("genre", "duration"), (3, 2)),
                                       WindowPolicy()))
        _toy_track(store, run, Path("/music/one.flac"), "hash-0", 0.5)
        store.upsert_track(Path("/music/one.flac"), "hash-0", 1, 0.0, {"duration": 5.0},
                           {"artist": "A", "album": None, "title": "one", "genre": "Ambient", "composer": None})
        export_vectors(store, run, tmp_path / "v.parquet", "parquet")
    table = pq.read_table(tmp_path / "v.parquet")
    assert table["genre"].to_pylist() == ["Ambient"] and table["duration"].to_pylist() == [5.0]
    meta = json.loads(table.schema.metadata[b"mess"])
    assert meta["layers"] == ["genre", "duration"] and meta["layer_columns"] == ["vectors_genre", "vectors_duration"]
    assert table["vectors_genre"].to_pylist() == [[0.5] * 3] and table["vectors_duration"].to_pylist() == [[0.5] * 2]


def test_an_output_under_a_file_says_the_file_is_not_a_folder(tmp_path: Path) -> None:
    """`mess export song.ogg/x.npz` said "song.ogg: File exists", as if the export would not overwrite something."""
    store, run = _toy_store(tmp_path / "store")
    (tmp_path / "song.ogg").write_bytes(b"audio")
    with closing(store), pytest.raises(StoreError, match=f"^cannot write {tmp_path}/song.ogg/x.npz: {tmp_path}/"
                                                         "song.ogg is not a folder$"):
        export_vectors(store, run, tmp_path / "song.ogg" / "x.npz", "npz")
    assert (tmp_path / "song.ogg").read_bytes() == b"audio"


def test_a_run_whose_every_file_failed_says_so(tmp_path: Path) -> None:
    """Every file failed with the model (a graph that cannot embed them): export said "run `mess extract` first"
    to one who had."""
    with closing(FeatureStore(tmp_path / "store")) as store:
        run = store.ensure_run(run_key(ModelInfo("broken", "r1", 16000, ("a",), (3,)), WindowPolicy()))
        store.upsert_track(Path("/music/one.flac"), "hash-0", 1, 0.0, {"duration": 5.0}, {})
        store.record_failure(run, "hash-0", "/music/one.flac", "model failed (ValueError: cannot reshape)")
        with pytest.raises(StoreError, match="^no vectors for broken in .*: the 1 files extracted with it failed; "
                                             "`mess info --failures` says why$"):
            export_vectors(store, run, tmp_path / "v.npz", "npz")
