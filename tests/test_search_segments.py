"""Set similarity over window vectors (``--match segments``) on real, rendered audio.

The window vectors are log band energies of 5 s windows of rendered corpus pieces, computed
here with numpy and written to a real feature store: the code under test is the Chamfer
matching, the store reads and the search / evaluate hooks, not a model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from mess.audio.decode import load_audio
from mess.audio.tags import read_tags
from mess.audio.windows import WindowPolicy
from mess.cli.search import register
from mess.extract.runs import run_key
from mess.models.base import ModelInfo
from mess.query import resolve_query
from mess.search.evaluate import evaluate
from mess.search.query import similar_tracks
from mess.search.segments import chamfer_rows, chamfer_scores, check_match, group_windows, read_segments
from mess.search.vectors import VectorSpec, load_vectors
from mess.store import FeatureStore, Run, TrackVectors

RATE, WINDOW_S, BANDS = 16000, 5.0, (24, 8)


def _band_windows(path: Path, n_windows: int) -> list[np.ndarray]:
    """Per layer, [n_windows, bands] log band energies of the first ``n_windows`` 5 s windows."""
    audio = load_audio(path, RATE, max_seconds=n_windows * WINDOW_S)
    windows = np.array_split(audio, n_windows)
    out = []
    for n_bands in BANDS:
        rows = []
        for w in windows:
            power = np.abs(np.fft.rfft(w)) ** 2
            rows.append(np.log1p([b.sum() for b in np.array_split(power, n_bands)]))
        out.append(np.array(rows, dtype=np.float32))
    return out


def _store(root: Path, paths: list[Path], n_windows: int) -> tuple[FeatureStore, Run]:
    store = FeatureStore(root)
    info = ModelInfo("bands", "r1", RATE, ("wide", "coarse"), BANDS)
    run = store.ensure_run(run_key(info, WindowPolicy(window_seconds=WINDOW_S)))
    for i, path in enumerate(paths):
        segments = _band_windows(path, n_windows)
        store.upsert_track(path, f"hash-{i}", path.stat().st_size, 0.0, {"duration": 20.0}, read_tags(path))
        store.write_vectors(run, [TrackVectors(f"hash-{i}", [s.mean(axis=0) for s in segments], segments,
                                               list(np.arange(n_windows) * WINDOW_S))])
    return store, run


@pytest.fixture(scope="module")
def pieces(rendered_collection: list[Path]) -> list[Path]:
    """Three pieces by each of the four composers."""
    by_composer: dict[str, list[Path]] = {}
    for p in rendered_collection:
        by_composer.setdefault(p.name.split("__")[0], []).append(p)
    return [p for ps in by_composer.values() for p in ps[:3]]


@pytest.fixture()
def windowed(pieces: list[Path], tmp_path: Path) -> tuple[FeatureStore, Run]:
    store, run = _store(tmp_path / "store", pieces, 4)
    yield store, run
    store.close()


def _direct_chamfer(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Chamfer similarity written out pair by pair."""
    forward = np.mean([max(float(x @ y) for y in b) for x in a])
    backward = np.mean([max(float(x @ y) for x in a) for y in b])
    return (forward + backward) / 2


def test_chamfer_matches_its_definition(windowed: tuple[FeatureStore, Run]) -> None:
    store, run = windowed
    vs = load_vectors(store, run, VectorSpec("all"))
    seg = read_segments(store, vs)
    _, _, wide = store.segment_matrix(run, "wide")
    _, _, coarse = store.segment_matrix(run, "coarse")
    unit = vs.prep.apply(np.concatenate([wide, coarse], axis=1)).reshape(len(vs.ids), 4, -1)
    got = chamfer_rows(seg, np.arange(len(vs.ids)))
    want = np.array([[_direct_chamfer(unit[i], unit[j]) for j in range(len(vs.ids))] for i in range(len(vs.ids))])
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.diag(got), 1.0, atol=1e-5)
    assert not np.allclose(got, vs.unit() @ vs.unit().T, atol=1e-3)  # not the cosine of the means


def test_one_window_per_track_reduces_to_cosine(pieces: list[Path], tmp_path: Path) -> None:
    store, run = _store(tmp_path / "one", pieces, 1)
    try:
        mean = evaluate(store, run, "artist", k=3, expand=0)
        seg = evaluate(store, run, "artist", k=3, match="segments")
    finally:
        store.close()
    assert [s.metric for s in seg.sets] == ["chamfer"] * len(seg.sets)
    for a, b in zip(mean.sets, seg.sets, strict=False):
        assert a.name == b.name
        assert a.scores.map == pytest.approx(b.scores.map)


def test_evaluate_refuses_an_expansion_segment_matching_cannot_use(windowed: tuple[FeatureStore, Run]) -> None:
    """`mess evaluate --match segments --expand 2` scored plain Chamfer rows and said nothing: the --expand asked
    for was ignored (`mess similar` refuses the same pair)."""
    store, run = windowed
    with pytest.raises(ValueError, match="no query expansion"):
        evaluate(store, run, "artist", k=3, match="segments", expand=2)
    off = evaluate(store, run, "artist", k=3, match="segments", expand=0)  # off is what segments do anyway
    assert [s.metric for s in off.sets] == ["chamfer"] * len(off.sets)


def test_similar_ranks_by_chamfer_and_excludes_the_query(windowed: tuple[FeatureStore, Run]) -> None:
    store, run = windowed
    vs = load_vectors(store, run, VectorSpec("layer", "wide"))
    full = chamfer_rows(read_segments(store, vs), np.arange(len(vs.ids)))
    query = resolve_query(store, int(vs.ids[2]), run)
    found = similar_tracks(store, run, query, k=4, layer="wide", match="segments")
    row = full[2].copy()
    row[2] = -np.inf
    assert [n.track.id for n in found] == [int(vs.ids[j]) for j in np.argsort(-row, kind="stable")[:4]]
    assert [n.score for n in found] == pytest.approx(np.sort(row)[::-1][:4].tolist(), abs=1e-6)
    with pytest.raises(ValueError, match="hubness"):
        similar_tracks(store, run, query, k=4, match="segments", hubness="csls")


def test_cli_match_option(windowed: tuple[FeatureStore, Run]) -> None:
    store, _ = windowed
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    ok = runner.invoke(app, ["evaluate", "--store", str(store.root), "--label", "artist", "--match", "segments",
                             "--plot", str(store.root / "e.png")])
    assert ok.exit_code == 0, ok.output
    assert "match segments" in ok.output
    bad = runner.invoke(app, ["similar", "1", "--store", str(store.root), "--match", "best"])
    assert bad.exit_code != 0
    assert "unknown match 'best'" in bad.output
    assert "Traceback" not in bad.output


def test_segment_search_asked_for_more_than_the_collection_lists_every_other_track_once(
        windowed: tuple[FeatureStore, Run]) -> None:
    store, run = windowed
    vs = load_vectors(store, run, VectorSpec("layer", "wide"))
    query = resolve_query(store, int(vs.ids[2]), run)
    found = similar_tracks(store, run, query, k=len(vs.ids) + 5, layer="wide", match="segments")
    assert sorted(n.track.id for n in found) == sorted(int(i) for i in vs.ids if i != vs.ids[2])
    assert all(np.isfinite(n.score) for n in found)


def test_windows_are_grouped_in_the_order_of_the_tracks_asked_for() -> None:
    """Windows stored in another order than the tracks asked for, and windows of a track not asked for: each track
    owns exactly its own windows, in their stored order; a track without windows is refused."""
    seg_ids = np.array([10, 30, 10, 99, 20, 30, 30])  # track 99's window is not asked for
    unit = np.arange(7, dtype=np.float32)[:, None] * [1.0, 0.0]  # row i holds the number i
    seg = group_windows(np.array([30, 10, 20]), seg_ids, unit)
    assert seg.ids.tolist() == [30, 10, 20]
    assert [seg.windows(r)[:, 0].tolist() for r in range(3)] == [[1, 5, 6], [0, 2], [4]]
    with pytest.raises(ValueError, match="1 track"):
        group_windows(np.array([30, 10, 40]), seg_ids, unit)
    assert check_match("mean") == "mean" and check_match("segments") == "segments"
    with pytest.raises(ValueError, match="unknown match 'best'"):
        check_match("best")


def test_chamfer_of_tracks_with_different_window_counts_matches_its_definition() -> None:
    """Tracks of 1, 2, 3 and 5 windows and queries of 1 and 4 windows: the means of each direction are over each
    track's own windows, not a common count."""
    rng = np.random.default_rng(3)
    counts = [3, 1, 5, 2]
    unit = rng.standard_normal((sum(counts), 6))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    seg = group_windows(np.arange(4), np.repeat(np.arange(4), counts), unit)
    tracks = np.split(unit, np.cumsum(counts)[:-1])
    for query in (unit[4], rng.standard_normal((4, 6))):
        got = chamfer_scores(seg, query)
        want = [_direct_chamfer(np.atleast_2d(query), t) for t in tracks]
        np.testing.assert_allclose(got, want, atol=1e-12)
    want = [[_direct_chamfer(a, b) for b in tracks] for a in tracks[1:3]]
    np.testing.assert_allclose(chamfer_rows(seg, [1, 2]), want, atol=1e-12)


def test_segments_are_read_per_track_through_the_vector_sets_preprocessor(tmp_path: Path) -> None:
    """Two layers, tracks of 2, 1 and 3 windows written to a store: each track's windows are its own rows of both
    layers, joined and preprocessed as its track vector is; a subset of the tracks is read alone; fused vectors,
    which have no windows, are refused."""
    rng = np.random.default_rng(5)
    store = FeatureStore(tmp_path / "store")
    try:
        run = store.ensure_run(run_key(ModelInfo("toy", "r1", 16000, ("a", "b"), (3, 2)), WindowPolicy()))
        windows = []
        for i, count in enumerate([2, 1, 3]):
            layers = [rng.standard_normal((count, dim)).astype(np.float16).astype(np.float32)  # as stored
                      for dim in (3, 2)]
            windows.append(np.concatenate(layers, axis=1))
            store.upsert_track(Path(f"/music/{i}.wav"), f"h{i}", 1, 0.0, {"duration": 10.0}, {"title": str(i)})
            store.write_vectors(run, [TrackVectors(f"h{i}", [m.mean(axis=0) for m in layers], layers,
                                                   list(np.arange(count) * 5.0))])
        vs = load_vectors(store, run, VectorSpec("all", "", "none"))
        seg = read_segments(store, vs)
        for row in range(3):
            want = windows[row] / np.concatenate([np.linalg.norm(windows[row][:, :3], axis=1, keepdims=True)] * 3
                                                 + [np.linalg.norm(windows[row][:, 3:], axis=1, keepdims=True)] * 2,
                                                 axis=1) / np.sqrt(2)  # each layer unit, then the whole
            np.testing.assert_allclose(seg.windows(row), want, atol=1e-6)
        subset = read_segments(store, vs, vs.ids[[2, 0]])
        assert subset.ids.tolist() == vs.ids[[2, 0]].tolist()
        np.testing.assert_allclose(subset.windows(0), seg.windows(2))
        np.testing.assert_allclose(subset.windows(1), seg.windows(0))
        fused = replace(vs, spec=VectorSpec("fused", "", "none"))
        with pytest.raises(ValueError, match="fused vectors have no windows"):
            read_segments(store, fused)
    finally:
        store.close()
