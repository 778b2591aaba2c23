"""The default ranking on real extracted vectors: power normalisation and re-ranking where it applies (no other
ranking asked for, and the re-ranking data saved or quick to build), the plain ranking with a note otherwise, and
every answer saying which it used."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mess.cli.search import register
from mess.search import rerank_store
from mess.search.evaluate import evaluate
from mess.search.index import build_index
from mess.search.query import collection_query, similar_tracks
from mess.search.vectors import VectorSpec, load_vectors
from mess.store import FeatureStore, Run

HINT = "mess index --model musicnn-msd --norm power --rerank"


@pytest.fixture
def store(extracted_store: Path, tmp_path: Path) -> Iterator[tuple[FeatureStore, Run]]:
    """A writable copy of the real store (16 rendered tracks), with its musicnn-msd run."""
    root = tmp_path / "store"
    shutil.copytree(extracted_store, root)
    fs = FeatureStore(root)
    try:
        yield fs, fs.run("musicnn-msd")
    finally:
        fs.close()


def _answer(fs: FeatureStore, run: Run, tid: int, notes: list[str] | None = None,
            **options: object) -> list[tuple[int, float | None]]:
    got = similar_tracks(fs, run, collection_query(fs, tid), 6, on_note=None if notes is None else notes.append,
                         **options)  # type: ignore[arg-type]
    return [(n.track.id, n.adjusted) for n in got]


def _cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def _json(fs: FeatureStore, *args: str) -> dict:
    out = CliRunner().invoke(_cli(), [*args, "--model", "musicnn-msd", "--store", str(fs.root), "--json"])
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


def test_the_default_on_a_small_collection_is_power_and_re_ranking(store: tuple[FeatureStore, Run]) -> None:
    fs, run = store
    ids = [t.id for t in fs.tracks(run)]
    for tid in ids[::5]:
        notes: list[str] = []
        default = _answer(fs, run, tid, notes)
        assert default == _answer(fs, run, tid, norm="power", rerank=True) and notes == []
    plain = [_answer(fs, run, tid, rerank=False) for tid in ids[::5]]
    assert plain == [_answer(fs, run, tid, norm="power", expand=3, rerank=False) for tid in ids[::5]]
    assert plain != [_answer(fs, run, tid) for tid in ids[::5]]  # re-ranking changes the answers


def test_above_the_limit_without_saved_data_the_default_is_plain_with_one_note(store: tuple[FeatureStore, Run],
                                                                                monkeypatch: pytest.MonkeyPatch
                                                                                ) -> None:
    fs, run = store
    monkeypatch.setattr(rerank_store, "IN_MEMORY_TRACKS", 4)  # the 16 tracks are a "large" collection
    tid = fs.tracks(run)[3].id
    notes: list[str] = []
    assert _answer(fs, run, tid, notes) == _answer(fs, run, tid, rerank=False)
    assert len(notes) == 1 and HINT in notes[0] and "minutes" in notes[0]
    asked: list[str] = []  # asked for, it is built in memory (with its own note)
    assert _answer(fs, run, tid, asked, rerank=True) == _answer(fs, run, tid, norm="power", rerank=True)
    assert len(asked) == 1 and HINT in asked[0]
    answer = _json(fs, "similar", str(tid))
    assert answer["rerank"] is False and len(answer["notes"]) == 1 and HINT in answer["notes"][0]


def test_above_the_limit_saved_current_data_is_re_ranked_with(store: tuple[FeatureStore, Run],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    fs, run = store
    monkeypatch.setattr(rerank_store, "IN_MEMORY_TRACKS", 4)
    tid = fs.tracks(run)[7].id
    build_index(fs, load_vectors(fs, run, VectorSpec.from_options()), rerank=True)
    notes: list[str] = []
    assert _answer(fs, run, tid, notes) == _answer(fs, run, tid, rerank=True) != _answer(fs, run, tid, rerank=False)
    assert notes == []
    assert _json(fs, "similar", str(tid))["rerank"] is True


def test_another_ranking_asked_for_is_used_silently_by_default_and_refused_with_rerank(
        store: tuple[FeatureStore, Run]) -> None:
    fs, run = store
    tid = fs.tracks(run)[1].id
    for options in ({"match": "segments", "layer": "penultimate"}, {"hubness": "csls"}, {"expand": 0},
                    {"expand": 5}):
        notes: list[str] = []
        assert _answer(fs, run, tid, notes, **options) == _answer(fs, run, tid, rerank=False, **options)
        assert notes == []
        if "expand" not in options or options["expand"]:
            with pytest.raises(ValueError, match="rerank"):
                _answer(fs, run, tid, rerank=True, **options)


def test_similar_cli_says_which_ranking_it_used(store: tuple[FeatureStore, Run]) -> None:
    fs, run = store
    tid = fs.tracks(run)[5].id
    default, plain = _json(fs, "similar", str(tid)), _json(fs, "similar", str(tid), "--no-rerank")
    hub = _json(fs, "similar", str(tid), "--hubness", "csls")
    assert (default["rerank"], plain["rerank"], hub["rerank"]) == (True, False, False)
    assert default["norm"] == "power" and default["notes"] == []
    for answer, options in ((default, {"rerank": True}), (plain, {"rerank": False}), (hub, {"hubness": "csls"})):
        want = similar_tracks(fs, run, collection_query(fs, tid), 10, **options)  # type: ignore[arg-type]
        assert [r["id"] for r in answer["results"]] == [n.track.id for n in want]
        assert [r["adjusted"] for r in answer["results"]] == pytest.approx([n.adjusted for n in want], abs=1e-5)
    args = ["similar", str(tid), "-k", "3", "--model", "musicnn-msd", "--store", str(fs.root)]
    table = CliRunner().invoke(_cli(), args, env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "re-ranked" in table.output, table.output
    table = CliRunner().invoke(_cli(), [*args, "--no-rerank"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "re-ranked" not in table.output and "expanded" in table.output, table.output
    both = CliRunner().invoke(_cli(), [*args, "--hubness", "csls", "--rerank"])
    assert both.exit_code != 0 and "two re-rankings" in both.output and "Traceback" not in both.output


def test_evaluate_re_ranks_every_vector_set_by_default(store: tuple[FeatureStore, Run],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fs, run = store
    default, asked = evaluate(fs, run, "composer"), evaluate(fs, run, "composer", norm="power", rerank=True)
    assert [s.scores for s in default.sets] == [s.scores for s in asked.sets] and default.notes == []
    assert all("re-ranked" in s.metric for s in default.sets)
    plain = evaluate(fs, run, "composer", rerank=False)
    assert all(s.metric == "cosine, expanded (3)" for s in plain.sets)
    assert [s.scores for s in plain.sets] != [s.scores for s in default.sets]
    cli = _json(fs, "evaluate", "--label", "composer", "--plot", str(fs.root / "e.png"))
    assert [s["scores"] for s in cli["sets"]] == [s["scores"] for s in
                                                 _json(fs, "evaluate", "--label", "composer", "--rerank", "--plot",
                                                       str(fs.root / "e.png"))["sets"]]
    assert all("re-ranked" in s["metric"] for s in cli["sets"])
    monkeypatch.setattr(rerank_store, "IN_MEMORY_TRACKS", 4)
    large = evaluate(fs, run, "composer")
    assert [s.scores for s in large.sets] == [s.scores for s in plain.sets]
    assert len(large.notes) == len(large.sets) and all("mess index --model musicnn-msd" in n for n in large.notes)


def test_index_saves_the_re_ranking_data_by_default(store: tuple[FeatureStore, Run]) -> None:
    fs, _ = store
    skipped = _json(fs, "index", "--layer", "penultimate", "--no-rerank")
    assert skipped["rerank"] == "" and skipped["rerank_path"] is None and skipped["norm"] == "power"
    built = _json(fs, "index", "--layer", "penultimate")
    assert built["rerank"] == "built" and Path(built["rerank_path"]).is_file()
