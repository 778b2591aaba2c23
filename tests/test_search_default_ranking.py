"""The default ranking on real extracted vectors: all layers get power normalisation and the augmented ranking
where it applies (no other ranking asked for, and the data saved or quick to build), the plain ranking with a note
otherwise; one layer gets z-scores and the plain ranking; every answer says which it used."""

from __future__ import annotations

import json
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

HINT = "mess index --model musicnn-msd --norm power"


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


def test_the_default_is_power_and_augmented_for_all_layers_zscores_and_plain_for_one(
        msd_copy: tuple[FeatureStore, Run]) -> None:
    fs, run = msd_copy
    ids = [t.id for t in fs.tracks(run)]
    for tid in ids[::5]:
        notes: list[str] = []
        assert _answer(fs, run, tid, notes) == _answer(fs, run, tid, norm="power", ranking="augmented")
        assert notes == []
        layer = _answer(fs, run, tid, layer="penultimate")
        assert layer == _answer(fs, run, tid, layer="penultimate", norm="zscore", ranking="plain")
    plain = [_answer(fs, run, tid, ranking="plain") for tid in ids[::5]]
    assert plain == [_answer(fs, run, tid, norm="power", expand=3, ranking="plain") for tid in ids[::5]]
    assert plain != [_answer(fs, run, tid) for tid in ids[::5]]  # augmentation changes the answers
    assert [_answer(fs, run, tid, layer="penultimate") for tid in ids[::5]] != [
        _answer(fs, run, tid, layer="penultimate", norm="power") for tid in ids[::5]]


def test_above_the_limit_without_saved_data_the_default_is_plain_with_one_note(msd_copy: tuple[FeatureStore, Run],
                                                                                monkeypatch: pytest.MonkeyPatch
                                                                                ) -> None:
    fs, run = msd_copy
    monkeypatch.setattr(rerank_store, "IN_MEMORY_TRACKS", 4)  # the 16 tracks are a "large" collection
    tid = fs.tracks(run)[3].id
    notes: list[str] = []
    assert _answer(fs, run, tid, notes) == _answer(fs, run, tid, ranking="plain")
    assert len(notes) == 1 and HINT in notes[0] and "tens of seconds" in notes[0]
    asked: list[str] = []  # asked for, it is built in memory
    assert _answer(fs, run, tid, asked, ranking="augmented") == _answer(fs, run, tid, norm="power",
                                                                        ranking="augmented")
    answer = _json(fs, "similar", str(tid))
    assert answer["ranking"] == "plain" and len(answer["notes"]) == 1 and HINT in answer["notes"][0]


@pytest.mark.parametrize("saved", ["augmentation (the default)", "re-ranking data alone"])
def test_above_the_limit_saved_current_data_is_used(msd_copy: tuple[FeatureStore, Run], saved: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    fs, run = msd_copy
    tid = fs.tracks(run)[7].id
    small = _answer(fs, run, tid)  # built in memory
    monkeypatch.setattr(rerank_store, "IN_MEMORY_TRACKS", 4)
    assert _answer(fs, run, tid) == _answer(fs, run, tid, ranking="plain") != small
    vs = load_vectors(fs, run, VectorSpec.from_options())
    if saved == "augmentation (the default)":
        build_index(fs, vs)
        assert not rerank_store.rerank_path(fs, run, vs.spec).exists()
    else:
        build_index(fs, vs, rerank=True)
        rerank_store.augment_path(fs, run, vs.spec).unlink()
    notes: list[str] = []
    assert _answer(fs, run, tid, notes) == small and notes == []
    assert _json(fs, "similar", str(tid))["ranking"] == "augmented"


@pytest.mark.parametrize("asked", ["augmented", "reranked"])
def test_another_ranking_asked_for_is_used_silently_by_default_and_refused_with_an_exact_one(
        msd_copy: tuple[FeatureStore, Run], asked: str) -> None:
    fs, run = msd_copy
    tid = fs.tracks(run)[1].id
    for options in ({"match": "segments", "layer": "penultimate"}, {"hubness": "csls"}, {"expand": 0},
                    {"expand": 5}):
        notes: list[str] = []
        assert _answer(fs, run, tid, notes, **options) == _answer(fs, run, tid, ranking="plain", **options)
        assert notes == []
        with pytest.raises(ValueError, match=f"--ranking {asked}"):
            _answer(fs, run, tid, ranking=asked, **options)
    with pytest.raises(ValueError, match="unknown ranking 'best'"):
        _answer(fs, run, tid, ranking="best")


def test_similar_cli_says_which_ranking_it_used(msd_copy: tuple[FeatureStore, Run]) -> None:
    fs, run = msd_copy
    tid = fs.tracks(run)[5].id
    answers = {name: _json(fs, "similar", str(tid), *args) for name, args in (
        ("default", ()), ("plain", ("--ranking", "plain")), ("reranked", ("--ranking", "reranked")),
        ("hub", ("--hubness", "csls")), ("layer", ("--layer", "penultimate")))}
    assert {k: a["ranking"] for k, a in answers.items()} == {
        "default": "augmented", "plain": "plain", "reranked": "reranked", "hub": "plain", "layer": "plain"}
    assert (answers["default"]["norm"], answers["layer"]["norm"]) == ("power", "zscore")
    assert answers["default"]["notes"] == []
    for name, options in (("default", {"ranking": "augmented"}), ("plain", {"ranking": "plain"}),
                          ("reranked", {"ranking": "reranked"}), ("hub", {"hubness": "csls"})):
        want = similar_tracks(fs, run, collection_query(fs, tid), 10, **options)  # type: ignore[arg-type]
        assert [r["id"] for r in answers[name]["results"]] == [n.track.id for n in want]
        assert [r["adjusted"] for r in answers[name]["results"]] == pytest.approx([n.adjusted for n in want],
                                                                                  abs=1e-5)
    args = ["similar", str(tid), "-k", "3", "--model", "musicnn-msd", "--store", str(fs.root)]
    for extra, column in (((), "augmented"), (("--ranking", "reranked"), "re-ranked"),
                          (("--ranking", "plain"), "expanded")):
        table = CliRunner().invoke(_cli(), [*args, *extra], env={"COLUMNS": "200"})
        assert table.exit_code == 0 and column in table.output, table.output
    both = CliRunner().invoke(_cli(), [*args, "--hubness", "csls", "--ranking", "augmented"])
    assert both.exit_code != 0 and "two re-rankings" in both.output and "Traceback" not in both.output


def test_evaluate_ranks_each_vector_set_as_similar_does_by_default(msd_copy: tuple[FeatureStore, Run],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fs, run = msd_copy
    default = evaluate(fs, run, "composer")
    by_name = {s.name: s for s in default.sets}
    assert by_name["all layers"].metric == "cosine, augmented (DBA)" and default.notes == []
    assert all(s.metric == "cosine, expanded (3)" for s in default.sets if s.name != "all layers")
    everything = {s.name: s for s in evaluate(fs, run, "composer", ranking="augmented").sets}
    assert by_name["all layers"].scores == everything["all layers"].scores
    plain = {s.name: s for s in evaluate(fs, run, "composer", ranking="plain").sets}
    assert all(by_name[n].scores == plain[n].scores for n in by_name if n != "all layers")
    assert by_name["all layers"].scores != plain["all layers"].scores
    reranked = evaluate(fs, run, "composer", ranking="reranked")
    assert all("re-ranked" in s.metric for s in reranked.sets)
    cli = _json(fs, "evaluate", "--label", "composer", "--plot", str(fs.root / "e.png"))
    assert [s["scores"]["map"] for s in cli["sets"]] == [s.scores.map for s in default.sets]
    monkeypatch.setattr(rerank_store, "IN_MEMORY_TRACKS", 4)
    large = evaluate(fs, run, "composer")
    assert [s.scores for s in large.sets] == [s.scores for s in plain.values()]
    assert len(large.notes) == 1 and "mess index --model musicnn-msd" in large.notes[0]


def test_index_saves_the_augmentation_by_default_and_the_re_ranking_data_when_asked(
        msd_copy: tuple[FeatureStore, Run]) -> None:
    fs, run = msd_copy
    for extra in (["--no-rerank"], []):  # one layer: the default ranks it plain, so nothing beside the index
        skipped = _json(fs, "index", "--layer", "penultimate", *extra)
        assert (skipped["augment"], skipped["augment_path"], skipped["rerank"], skipped["rerank_path"]) == (
            "", None, "", None)
        assert skipped["norm"] == "zscore"
    neither = _json(fs, "index", "--no-rerank")
    assert neither["augment"] == neither["rerank"] == "" and not any(
        p.name.endswith((".augment.npz", ".rerank.npz")) for p in fs.indexes_dir.iterdir())
    built = _json(fs, "index")
    assert built["augment"] == "built" and built["norm"] == "power" and built["rerank"] == ""
    assert built["augment_nbytes"] == Path(built["augment_path"]).stat().st_size > 0 and built["rerank_path"] is None
    assert not rerank_store.rerank_path(fs, run, VectorSpec.from_options()).exists()
    full = _json(fs, "index", "--rerank")
    assert full["rerank"] == "built" and full["augment"] == "unchanged"
    assert full["rerank_nbytes"] == Path(full["rerank_path"]).stat().st_size > built["augment_nbytes"]
    shown = CliRunner().invoke(_cli(), ["index", "--rebuild", "--model", "musicnn-msd", "--store", str(fs.root)],
                               env={"COLUMNS": "300"})
    assert shown.exit_code == 0 and "built augmentation, " in shown.output, shown.output
    assert "re-ranking data" not in shown.output
