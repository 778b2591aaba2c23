"""Set similarity over window vectors (``--match segments``) on real, rendered audio.

The window vectors are log band energies of 5 s windows of rendered corpus pieces, computed
here with numpy and written to a real feature store: the code under test is the Chamfer
matching, the store reads and the search / evaluate hooks, not a model.
"""

from __future__ import annotations

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
from mess.search.segments import chamfer_rows, read_segments
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
