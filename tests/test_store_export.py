"""export_vectors in process on a toy store whose every value the test wrote: columns, rows, counts, refusals."""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mess.audio.windows import WindowPolicy
from mess.constants import FUSED
from mess.extract.runs import run_key
from mess.models.base import ModelInfo
from mess.store import FeatureStore, StoreError, TrackVectors
from mess.store.export import export_vectors

INFO = ModelInfo("toy", "r1", 16000, ("a", "b"), (3, 2))
# path, content, tags, duration, windows: each track's window starts (none: not embedded, "failed": its run failed)
TRACKS = [
    ("/music/one.flac", "h1", {"artist": "Ann", "album": "First", "title": "One", "genre": "Folk", "composer": "C"},
     200.0, [0.0, 30.0, 60.0]),
    ("/music/two.flac", "h2", {"artist": "Bo", "album": None, "title": None, "genre": None, "composer": None},
     None, [0.0]),
    ("/music/three.flac", "h3", {"artist": "Cy", "album": None, "title": "Three", "genre": None, "composer": None},
     0.0, [0.0, 12.5]),
    ("/music/late.flac", "h4", {}, 10.0, None),
    ("/music/bad.flac", "h5", {}, 10.0, "failed"),
]


def _vectors(content: str, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per layer: the track vector (the mean of the windows) and the windows, exact in float16."""
    base = float(content[1:])
    segments = [np.arange(n * d, dtype=np.float32).reshape(n, d) / 4 + base * 10 + layer
                for layer, d in enumerate(INFO.layer_dims)]
    return [s.mean(axis=0) for s in segments], segments


@pytest.fixture
def toy(tmp_path: Path) -> tuple[FeatureStore, object]:
    store = FeatureStore(tmp_path / "store")
    run = store.ensure_run(run_key(INFO, WindowPolicy()))
    for path, content, tags, duration, windows in TRACKS:
        info = {} if duration is None else {"duration": duration}
        store.upsert_track(Path(path), content, 1, 0.0, info, {k: tags.get(k) for k in TRACKS[0][2]})
        if windows == "failed":
            store.record_failure(run, content, path, "cannot decode")
        elif windows is not None:
            layers, segments = _vectors(content, len(windows))
            store.write_vectors(run, [TrackVectors(content, layers, segments, windows)])
    with closing(store):
        yield store, run


def _embedded() -> list[tuple]:
    return [t for t in TRACKS if isinstance(t[4], list)]


def test_an_npz_export_holds_each_embedded_track_its_tags_and_vectors_and_what_was_left_out(toy, tmp_path) -> None:
    store, run = toy
    summary = export_vectors(store, run, tmp_path / "out" / "v.npz")
    assert (summary.rows, summary.tracks, summary.layers, summary.segments) == (3, 3, ("a", "b"), False)
    assert (summary.files_not_embedded, summary.files_failed, summary.tracks_not_fused) == (1, 1, 0)
    data = np.load(tmp_path / "out" / "v.npz")
    ids = {t.path: t.id for t in store.tracks(run)}
    order = [list(data["path"]).index(t[0]) for t in _embedded()]
    assert data["track_id"].dtype == np.int64 and data["track_id"][order].tolist() == [ids[t[0]] for t in _embedded()]
    assert data["content_hash"][order].tolist() == [t[1] for t in _embedded()]
    for tag in ("artist", "album", "title", "genre", "composer"):
        assert data[tag][order].tolist() == [t[2][tag] or "" for t in _embedded()], tag
    durations = data["duration"][order]
    assert durations[0] == 200.0 and np.isnan(durations[1]) and durations[2] == 0.0
    for layer, name in enumerate(INFO.layer_names):
        want = np.stack([_vectors(t[1], len(t[4]))[0][layer] for t in _embedded()])
        np.testing.assert_allclose(data[f"vectors_{name}"][order], want, rtol=1e-3)
        assert data[f"vectors_{name}"].dtype == np.float32
    assert data["layers"].tolist() == ["a", "b"] and data["model"].item() == "toy"
    assert data["run_id"].item() == run.id and data["revision"].item() == "r1"
    assert json.loads(data["policy"].item()) == json.loads(WindowPolicy().to_json())
    assert data["files_not_embedded"].item() == 1 and data["files_failed"].item() == 1
    assert "segment_start" not in data and "fused_checkpoint_sha256" not in data


@pytest.mark.parametrize("fmt", ["npz", "parquet"])
def test_a_segment_export_has_a_row_per_window_with_its_start(toy, tmp_path, fmt: str) -> None:
    store, run = toy
    out = tmp_path / f"v.{fmt}"
    summary = export_vectors(store, run, out, fmt, layers=["-1", "b"], segments=True)
    windows = [(t, k, start) for t in _embedded() for k, start in enumerate(t[4])]
    assert (summary.rows, summary.tracks, summary.layers, summary.segments) == (len(windows), 3, ("b",), True)
    if fmt == "npz":
        data = np.load(out)
        cols = {k: data[k] for k in ("path", "segment_start", "vectors_b")}
        assert "vectors_a" not in data and data["layers"].tolist() == ["b"]
    else:
        table = pq.read_table(out)
        cols = {"path": np.array(table["path"].to_pylist()), "segment_start": table["segment_start"].to_numpy(),
                "vectors_b": np.array(table["b"].to_pylist())}
        meta = json.loads(table.schema.metadata[b"mess"])
        assert meta["layers"] == ["b"] and meta["layer_columns"] == ["b"] and meta["files_failed"] == 1
        assert "a" not in table.column_names
    got = sorted(zip(cols["path"].tolist(), cols["segment_start"].tolist(), cols["vectors_b"].tolist(), strict=True))
    want = sorted((t[0], start, _vectors(t[1], len(t[4]))[1][1][k].tolist()) for t, k, start in windows)
    assert got == want


@pytest.mark.parametrize("fmt", ["npz", "parquet"])
def test_fused_vectors_export_as_one_column_and_count_the_tracks_without_one(toy, tmp_path, fmt: str) -> None:
    store, run = toy
    with pytest.raises(StoreError, match="no 'fused' vectors for toy; run `mess fuse train`"):
        export_vectors(store, run, tmp_path / f"v.{fmt}", fmt, fused=True)
    meta = {"trained_on": {"run_id": run.id, "revision": run.revision, "policy": run.policy}}
    store.write_derived(run, FUSED, ["gone"], np.ones((1, 2), np.float32), meta)  # of no content the run holds
    with pytest.raises(StoreError, match="^no fused vectors for toy in .*; run `mess fuse apply --model toy` first$"):
        export_vectors(store, run, tmp_path / f"v.{fmt}", fmt, fused=True)
    fused = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)  # h1 and h3; h2 was extracted since
    meta |= {"checkpoint": "/nets/a.pt", "checkpoint_sha256": "ab" * 32}
    store.write_derived(run, FUSED, ["h1", "h3"], fused, meta)
    summary = export_vectors(store, run, tmp_path / f"v.{fmt}", fmt, fused=True)
    assert (summary.rows, summary.tracks, summary.layers, summary.tracks_not_fused) == (2, 2, (FUSED,), 1)
    if fmt == "npz":
        data = np.load(tmp_path / "v.npz")
        got = dict(zip(data["content_hash"].tolist(), data["vectors_fused"].tolist(), strict=True))
        assert data["fused_checkpoint_sha256"].item() == "ab" * 32 and data["tracks_not_fused"].item() == 1
    else:
        table = pq.read_table(tmp_path / "v.parquet")
        got = dict(zip(table["content_hash"].to_pylist(), table[FUSED].to_pylist(), strict=True))
        info = json.loads(table.schema.metadata[b"mess"])
        assert info["fused_checkpoint_sha256"] == "ab" * 32 and info["tracks_not_fused"] == 1
    assert got == {"h1": [1.0, 2.0], "h3": [3.0, 4.0]}
    store.write_derived(run, FUSED, ["h1", "h2", "h3"], np.ones((3, 2), np.float32),
                        {k: v for k, v in meta.items() if k != "checkpoint_sha256"})
    summary = export_vectors(store, run, tmp_path / "w.npz", fused=True)
    assert summary.tracks_not_fused == 0 and np.load(tmp_path / "w.npz")["fused_checkpoint_sha256"].item() == ""
    store.write_derived(run, FUSED, ["h1"], fused[:1], {**meta, "trained_on": {**meta["trained_on"], "revision": "r0"}})
    with pytest.raises(StoreError, match="trained on run"):
        export_vectors(store, run, tmp_path / "x.npz", fused=True)


def test_what_export_refuses_it_says_before_writing_anything(toy, tmp_path) -> None:
    store, run = toy
    (tmp_path / "folder").mkdir()
    for out, fmt, said in [(tmp_path / "folder", "npz", f"{tmp_path / 'folder'} is a folder; give the file to "
                            f"write, such as {tmp_path / 'folder' / 'vectors.npz'}"),
                           (tmp_path / "folder", "PARQUET", "such as .*vectors.parquet$"),
                           (tmp_path / "folder", "xlsx", "such as .*vectors.npz$"),
                           (tmp_path / "v.xlsx", "XLSX", "unknown export format 'XLSX'; choose npz, parquet or csv"),
                           (store.root / "v.npz", "npz", "is inside the feature store")]:
        with pytest.raises(StoreError, match=said):
            export_vectors(store, run, out, fmt)
    for kwargs in ({"layers": ["a"]}, {"segments": True}):
        with pytest.raises(StoreError, match="fused vectors have no layers or windows"):
            export_vectors(store, run, tmp_path / "v.npz", fused=True, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "store"]
    assert export_vectors(store, run, tmp_path / "v.NPZ", "NPZ").path == tmp_path / "v.NPZ"
    assert np.load(tmp_path / "v.NPZ")["layers"].tolist() == ["a", "b"]


def test_a_run_with_no_vectors_and_no_failures_says_run_extract(tmp_path: Path) -> None:
    with closing(FeatureStore(tmp_path / "store")) as store:
        run = store.ensure_run(run_key(INFO, WindowPolicy()))
        store.upsert_track(Path("/music/one.flac"), "h1", 1, 0.0, {}, {})
        with pytest.raises(StoreError, match="^no vectors for toy in .*; run `mess extract` first$"):
            export_vectors(store, run, tmp_path / "v.npz")
        store.record_failure(run, "h1", "/music/one.flac", "cannot decode")
        with pytest.raises(StoreError, match="the 1 files extracted with it failed"):
            export_vectors(store, run, tmp_path / "v.npz")
        store.write_derived(run, FUSED, ["gone"], np.ones((1, 2), np.float32), {})
        with pytest.raises(StoreError, match="^no fused vectors for toy"):  # failures say nothing of fused vectors
            export_vectors(store, run, tmp_path / "v.npz", fused=True)


def test_an_output_under_the_home_folder_is_written_there(toy, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, run = toy
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    summary = export_vectors(store, run, Path("~/exports/v.npz"))
    assert summary.path == tmp_path / "home" / "exports" / "v.npz"
    assert np.load(tmp_path / "home" / "exports" / "v.npz")["layers"].tolist() == ["a", "b"]


def test_an_output_under_a_file_is_refused_naming_the_file(toy, tmp_path) -> None:
    store, run = toy
    (tmp_path / "song.ogg").write_bytes(b"audio")
    with pytest.raises(StoreError, match=f"^cannot write {tmp_path}/song.ogg/v.npz: {tmp_path}/song.ogg is not a "
                                         "folder$"):
        export_vectors(store, run, tmp_path / "song.ogg" / "v.npz")
    assert (tmp_path / "song.ogg").read_bytes() == b"audio"


def test_layers_named_like_tag_columns_keep_both_in_parquet(tmp_path: Path) -> None:
    with closing(FeatureStore(tmp_path / "store")) as store:
        run = store.ensure_run(run_key(ModelInfo("tagger", "r1", 16000, ("genre", "vectors_genre"), (2, 1)),
                                       WindowPolicy()))
        store.upsert_track(Path("/music/one.flac"), "h1", 1, 0.0, {"duration": 5.0},
                           {"artist": None, "album": None, "title": None, "genre": "Folk", "composer": None})
        layers = [np.full(2, 0.5, np.float32), np.full(1, 0.25, np.float32)]
        store.write_vectors(run, [TrackVectors("h1", layers, [v[None] for v in layers], [0.0])])
        export_vectors(store, run, tmp_path / "v.parquet", "parquet")
    table = pq.read_table(tmp_path / "v.parquet")
    meta = json.loads(table.schema.metadata[b"mess"])
    assert meta["layer_columns"] == ["vectors_genre", "vectors_vectors_genre"]
    assert table["genre"].to_pylist() == ["Folk"] and table["vectors_genre"].to_pylist() == [[0.5, 0.5]]
    assert table["vectors_vectors_genre"].to_pylist() == [[0.25]]
