"""Search and evaluation on real rendered music (the session's ``extracted_store``: composers x pieces)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import typer
from typer.testing import CliRunner

from mess.cli.search import register
from mess.query import resolve_query
from mess.search.evaluate import evaluate
from mess.search.query import similar_tracks
from mess.store import FeatureStore

MODELS = ("dsp", "musicnn-msd")


@pytest.fixture()
def real(extracted_store: Path) -> FeatureStore:
    store = FeatureStore(extracted_store, readonly=True)
    yield store
    store.close()


@pytest.mark.parametrize("model", MODELS)
def test_composer_retrieval_beats_chance(real: FeatureStore, model: str) -> None:
    run = real.run(model)
    ev = evaluate(real, run, "composer", k=3)
    assert [s.name for s in ev.sets if s.kind == "layer"] == list(run.layer_names)
    assert ev.n_classes >= 3 and ev.n_queries == ev.n_tracks
    best = ev.best()
    assert best.scores.map > ev.chance.map + 0.15, (best, ev.chance)
    assert best.scores.precision > ev.chance.precision


@pytest.mark.parametrize("model", MODELS)
def test_similar_excludes_seed_and_artist(real: FeatureStore, model: str) -> None:
    run = real.run(model)
    seed = real.tracks(run)[0]
    query = resolve_query(real, str(seed.id), run)
    results = similar_tracks(real, run, query, k=5)
    assert len(results) == 5 and seed.id not in [n.track.id for n in results]
    assert all(n.why and set(n.why) == set(n.why_percentile) for n in results)
    others = similar_tracks(real, run, query, k=5, exclude_same_artist=True)
    assert others and all(n.track.artist != seed.artist for n in others)


def test_external_audio_is_embedded_and_finds_its_original(real: FeatureStore, tmp_path: Path) -> None:
    run = real.run("musicnn-msd")
    seed = real.tracks(run)[1]
    copy = tmp_path / ("copy" + Path(seed.path).suffix)
    shutil.copy(seed.path, copy)
    same = resolve_query(real, copy, run)
    assert same.track is not None and same.track.id == seed.id  # same content -> the collection track itself
    audio, sr = sf.read(seed.path, dtype="float32")
    rng = np.random.default_rng(0)
    altered = tmp_path / "altered.wav"
    sf.write(altered, 0.7 * audio + 0.002 * rng.standard_normal(audio.shape).astype(np.float32), sr)
    query = resolve_query(real, altered, run)
    assert query.track is None and query.layers is not None and len(query.layers) == len(run.layer_names)
    top = similar_tracks(real, run, query, k=3)
    assert top[0].track.content_hash == seed.content_hash


def test_cli_on_real_store(extracted_store: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    out = runner.invoke(app, ["evaluate", "--model", "musicnn-msd", "--label", "composer", "-k", "3",
                              "--store", str(extracted_store), "--plot", str(tmp_path / "q.png"), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["n_tracks"] >= 12 and (tmp_path / "q.png").stat().st_size > 0
    out = runner.invoke(app, ["similar", "1", "--model", "dsp", "--layer", "mfcc", "-k", "3",
                              "--store", str(extracted_store), "--json"])
    assert out.exit_code == 0, out.output
    assert [r["id"] for r in json.loads(out.stdout)["results"]].count(1) == 0


def test_a_file_changed_since_extraction_is_never_its_own_answer(rendered_collection: list[Path],
                                                                 tmp_path: Path) -> None:
    """A collection file rewritten with other audio is searched as it is now; its stale catalogue entry (vectors of
    what the file held before) is left out of the answers, which otherwise list every other track."""
    import os
    from contextlib import closing

    from mess.audio.windows import WindowPolicy
    from mess.extract.pipeline import extract
    from mess.models.registry import load_model

    music = tmp_path / "music"
    music.mkdir()
    for path in rendered_collection[0:12:2]:
        shutil.copy(path, music)
    with closing(FeatureStore(tmp_path / "store")) as store:
        assert not extract(store, sorted(music.iterdir()), load_model("dsp"), WindowPolicy()).failed
    target = music / rendered_collection[0].name
    shutil.copy(rendered_collection[13], target)  # another piece, not in the collection
    os.utime(target, (1e9, 1e9))  # a change stamp of its own, whatever the file system's time resolution
    with closing(FeatureStore(tmp_path / "store", readonly=True)) as store:
        run = store.run("dsp")
        stale = store.track_at(str(target.resolve()))
        query = resolve_query(store, target, run)
        assert stale is not None and query.replaces is not None and query.replaces.id == stale.id
        found = [n.track.id for n in similar_tracks(store, run, query, k=20)]
        assert sorted(found) == sorted(t.id for t in store.tracks(run) if t.id != stale.id)
