"""Saved ranking data: the augmentation `mess index` saves by default and the whole re-ranking data of `mess index
--rerank` answer as the data built in memory, are never used once their vectors changed or their file is damaged,
and are reported and removed by `mess check` as stale indexes are."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from mess.audio.windows import WindowPolicy
from mess.cli.search import register
from mess.extract.runs import run_key
from mess.models.base import ModelInfo
from mess.search import rerank_store
from mess.search.augment import build_augmentation
from mess.search.evaluate import evaluate
from mess.search.health import check_store
from mess.search.index import build_index, index_path, stale_indexes
from mess.search.query import collection_query, similar_tracks
from mess.search.rerank import Reranker, build_reranker
from mess.search.rerank_store import augment_path, load_reranker, read_augmentation, read_reranker, rerank_path
from mess.search.vectors import VectorSpec, load_vectors
from mess.store import FeatureStore, Run, TrackVectors

POWER = VectorSpec.from_options(norm="power")
HINT = "mess index --model musicnn-msd --norm power"


def _reopened(fs: FeatureStore) -> FeatureStore:
    """Another FeatureStore on the same folder: nothing memoised, as in a new process."""
    return FeatureStore(fs.root, readonly=True)


def _assert_same(a: Reranker, b: Reranker) -> None:
    """The same data, array for array, and the same answers for every track and an outside query."""
    for x, y in ((a.aug.rows, b.aug.rows), (a.aug.weights, b.aug.weights), (a.aug.norms, b.aug.norms),
                 (a.top.rows, b.top.rows), (a.top.scores, b.top.scores), (a.top.lowest, b.top.lowest),
                 (a.qe_rows, b.qe_rows), (a.qe_scores, b.qe_scores), (a.recip.toarray(), b.recip.toarray()),
                 (a.recip0.toarray(), b.recip0.toarray()), (a.unit, b.unit)):
        np.testing.assert_array_equal(x, y)
    n = len(a.unit)
    np.testing.assert_array_equal(a.rows(np.arange(n)), b.rows(np.arange(n)))
    outside = a.unit[2] + 0.1 * a.unit[5]
    outside /= np.linalg.norm(outside)
    np.testing.assert_array_equal(a.outside(outside), b.outside(outside))


def _ranking(fs: FeatureStore, run: Run, tid: int, notes: list[str] | None = None) -> list[int]:
    got = similar_tracks(fs, run, collection_query(fs, tid), 8, norm="power", ranking="reranked",
                         on_note=None if notes is None else notes.append)
    return [n.track.id for n in got]


def _direct_ranking(fs: FeatureStore, run: Run, tid: int) -> list[int]:
    """The ranking by a re-ranker built here from the vectors as they are now."""
    vs = load_vectors(fs, run, POWER)
    row = vs.rows(np.array([tid]))
    scores = build_reranker(vs.unit()).rows(row)[0]
    scores[row[0]] = -np.inf
    return vs.ids[np.argsort(-scores, kind="stable")[:8]].tolist()


def test_saved_reranker_answers_exactly_as_one_built_in_memory(msd_copy: tuple[FeatureStore, Run],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    fs, run = msd_copy
    monkeypatch.setattr(rerank_store, "IN_MEMORY_TRACKS", 0)  # every collection is "large": the note shows the path
    vs = load_vectors(fs, run, POWER)
    in_memory = evaluate(fs, run, "composer", norm="power", ranking="reranked")
    _, report = build_index(fs, vs, rerank=True)
    assert report.rerank == "built" and report.rerank_path == rerank_path(fs, run, vs.spec)
    assert report.rerank_nbytes == report.rerank_path.stat().st_size > 0
    saved = read_reranker(report.rerank_path, vs)
    assert saved is not None
    _assert_same(saved, build_reranker(vs.unit()))
    assert build_index(fs, vs, rerank=True)[1].rerank == "unchanged"
    assert build_index(fs, vs, rerank=True, rebuild=True)[1].rerank == "built"
    other = _reopened(fs)
    try:
        notes: list[str] = []
        tid = int(vs.ids[4])
        assert _ranking(other, other.run("musicnn-msd"), tid, notes) == _direct_ranking(fs, run, tid)
        assert notes == []  # answered from the saved data: nothing built
        assert load_reranker(other, load_vectors(other, other.run("musicnn-msd"), POWER)).top.k == 10
        loaded = evaluate(other, other.run("musicnn-msd"), "composer", norm="power", ranking="reranked")
        assert [s.scores for s in loaded.sets] == [s.scores for s in in_memory.sets]  # its all-layers set: saved
    finally:
        other.close()
    assert stale_indexes(fs) == [] and check_store(fs.root).stale == []


def test_after_a_track_is_added_the_saved_data_is_stale_and_repair_removes_it(
        msd_copy: tuple[FeatureStore, Run], monkeypatch: pytest.MonkeyPatch) -> None:
    fs, run = msd_copy
    monkeypatch.setattr(rerank_store, "IN_MEMORY_TRACKS", 0)
    vs = load_vectors(fs, run, POWER)
    path = build_index(fs, vs, rerank=True)[1].rerank_path
    assert path is not None and read_reranker(path, vs) is not None
    source = fs.tracks(run)[3]
    layers = [fs.layer_matrix(run, name)[1][vs.rows(np.array([source.id]))[0]] * 1.5 + 0.2
              for name in run.layer_names]
    added = fs.upsert_track(Path("/music/added.wav"), "hash-added", 1, 0.0, {"duration": 10.0},
                            {"artist": "Someone", "album": None, "title": "Added", "genre": None, "composer": None})
    fs.write_vectors(run, [TrackVectors("hash-added", layers, [v[None] for v in layers], [0.0])])
    now = load_vectors(fs, run, POWER)
    assert added in now and read_reranker(path, now) is None
    notes: list[str] = []
    tid = int(vs.ids[4])
    assert _ranking(fs, run, tid, notes) == _direct_ranking(fs, run, tid)  # built afresh, the new track in it
    assert len(notes) == 1 and f"{HINT} --rerank`" in notes[0]
    health = check_store(fs.root)
    aug = augment_path(fs, run, POWER)  # --rerank saved the augmentation file too
    assert health.stale == [aug, path]  # the index itself is updated in place, not stale
    for p in (aug, path):
        assert {"kind": "stale-index", "run": None, "damage": False,
                "message": f"{p.name} is out of date"} in health.to_dict()["problems"]
    repaired = check_store(fs.root, fix=True)
    assert f"deleted stale index {path.name}" in repaired.repaired and repaired.stale == []
    assert not path.exists() and not aug.exists() and index_path(fs, run, POWER).exists()


def _layer_data(fs: FeatureStore, run: Run) -> tuple[Path, Path]:
    """The saved re-ranking and augmentation files of another vector set (the penultimate layer's, power)."""
    layer = load_vectors(fs, run, VectorSpec.from_options(layer="penultimate", norm="power"))
    report = build_index(fs, layer, rerank=True)[1]
    assert report.rerank_path is not None and report.augment_path is not None
    return report.rerank_path, report.augment_path


@pytest.mark.parametrize("damage", ["truncated", "bytes changed", "another vector set's data"])
def test_a_damaged_saved_file_is_ignored_and_reported(msd_copy: tuple[FeatureStore, Run], damage: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fs, run = msd_copy
    monkeypatch.setattr(rerank_store, "IN_MEMORY_TRACKS", 0)
    vs = load_vectors(fs, run, POWER)
    path = build_index(fs, vs, rerank=True)[1].rerank_path
    assert path is not None
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "bytes changed":  # inside the k-reciprocal vectors' values
        start = data.index(b"recip_data.npy") + 200
        path.write_bytes(data[:start] + bytes(b ^ 0x55 for b in data[start : start + 64]) + data[start + 64 :])
    else:
        shutil.copyfile(_layer_data(fs, run)[0], path)
    assert read_reranker(path, vs) is None
    reopened = _reopened(fs)
    try:
        notes: list[str] = []
        tid = int(vs.ids[1])
        assert _ranking(reopened, reopened.run("musicnn-msd"), tid, notes) == _direct_ranking(fs, run, tid)
        assert len(notes) == 1  # built in memory
    finally:
        reopened.close()
    assert check_store(fs.root).stale == [path]
    assert check_store(fs.root, fix=True).stale == [] and not path.exists()


def test_index_rerank_in_a_process_then_similar_rerank_ranks_as_the_library(msd_copy: tuple[FeatureStore, Run]) -> None:
    fs, run = msd_copy
    root = str(fs.root)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def mess(*args: str) -> dict:
        out = subprocess.run([sys.executable, "-c", "from mess.cli.main import main; main()", *args, "--store", root,
                              "--json"], capture_output=True, text=True, timeout=300, env=env)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    built = mess("index", "--model", "musicnn-msd", "--norm", "power", "--rerank")
    assert built["rerank"] == "built" and Path(built["rerank_path"]).is_file()
    tid = int(fs.tracks(run)[6].id)
    answer = mess("similar", str(tid), "-k", "8", "--model", "musicnn-msd", "--norm", "power", "--ranking",
                  "reranked")
    assert [r["id"] for r in answer["results"]] == _direct_ranking(fs, run, tid) == _ranking(fs, run, tid)
    assert answer["notes"] == []
    assert mess("index", "--model", "musicnn-msd", "--norm", "power", "--rerank")["rerank"] == "unchanged"


def test_similar_notes_once_that_index_rerank_saves_the_data(msd_copy: tuple[FeatureStore, Run],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fs, _ = msd_copy
    monkeypatch.setattr(rerank_store, "IN_MEMORY_TRACKS", 0)
    app = typer.Typer()
    register(app)
    args = ["similar", "2", "-k", "3", "--model", "musicnn-msd", "--norm", "power", "--ranking", "reranked",
            "--store", str(fs.root)]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert out.output.count("note:") == 1 and f"{HINT} --rerank`" in out.output
    assert "Traceback" not in out.output
    out = CliRunner().invoke(app, ["index", "--model", "musicnn-msd", "--norm", "power", "--rerank", "--store",
                                   str(fs.root)])
    assert out.exit_code == 0 and "built re-ranking data" in out.output, out.output
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0 and "note:" not in out.output, out.output


def _default(fs: FeatureStore, run: Run, tid: int, notes: list[str] | None = None,
             **options: object) -> list[tuple[int, float | None]]:
    got = similar_tracks(fs, run, collection_query(fs, tid), 8, on_note=None if notes is None else notes.append,
                         **options)  # type: ignore[arg-type]
    return [(n.track.id, n.adjusted) for n in got]


def test_index_saves_the_augmentation_by_default_and_the_default_ranking_reads_it(
        msd_copy: tuple[FeatureStore, Run], monkeypatch: pytest.MonkeyPatch) -> None:
    fs, run = msd_copy
    monkeypatch.setattr(rerank_store, "IN_MEMORY_TRACKS", 0)  # every collection is "large"
    vs = load_vectors(fs, run, VectorSpec.from_options())
    tids = [int(t) for t in vs.ids[::3]]
    in_memory = [_default(fs, run, tid, ranking="augmented") for tid in tids]  # asked for: built in memory
    in_memory_eval = evaluate(fs, run, "composer", ranking="augmented")
    assert [_default(fs, run, tid, ranking="plain") for tid in tids] != in_memory
    _, report = build_index(fs, vs)
    path = augment_path(fs, run, vs.spec)
    assert (report.augment, report.augment_path, report.rerank, report.rerank_path) == ("built", path, "", None)
    assert report.augment_nbytes == path.stat().st_size > 0 and not rerank_path(fs, run, vs.spec).exists()
    saved, built = read_augmentation(path, vs), build_augmentation(vs.unit())
    assert saved is not None
    for x, y in ((saved.rows, built.rows), (saved.weights, built.weights), (saved.norms, built.norms)):
        np.testing.assert_array_equal(x, y)
    assert build_index(fs, vs)[1].augment == "unchanged"
    assert build_index(fs, vs, rebuild=True)[1].augment == "built"

    def never(unit: np.ndarray) -> None:
        raise AssertionError("built in memory, not read from the saved file")

    reads: list[Path] = []
    real = rerank_store.read_augmentation
    monkeypatch.setattr(rerank_store, "build_augmentation", never)
    monkeypatch.setattr(rerank_store, "read_augmentation", lambda p, v: reads.append(p) or real(p, v))
    other = _reopened(fs)
    try:
        again = other.run("musicnn-msd")
        notes: list[str] = []
        assert [_default(other, again, tid, notes) for tid in tids] == in_memory and notes == []
        assert reads == [path]  # read once, then memoised while the file stays the same
        loaded = evaluate(other, again, "composer")
        assert loaded.notes == [] and [s.scores for s in loaded.sets if s.name == "all layers"] == [
            s.scores for s in in_memory_eval.sets if s.name == "all layers"]
    finally:
        other.close()
    assert reads == [path] and stale_indexes(fs) == [] and check_store(fs.root).stale == []


def test_the_augmentation_of_the_saved_re_ranking_data_is_read_without_its_own_file(
        msd_copy: tuple[FeatureStore, Run], monkeypatch: pytest.MonkeyPatch) -> None:
    fs, run = msd_copy
    monkeypatch.setattr(rerank_store, "IN_MEMORY_TRACKS", 0)
    vs = load_vectors(fs, run, VectorSpec.from_options())
    tid = int(vs.ids[5])
    in_memory = _default(fs, run, tid, ranking="augmented")
    report = build_index(fs, vs, rerank=True)[1]
    assert (report.rerank, report.augment) == ("built", "built") and report.rerank_path is not None
    assert report.rerank_nbytes == report.rerank_path.stat().st_size > report.augment_nbytes > 0
    assert report.augment_path is not None
    report.augment_path.unlink()

    def never(unit: np.ndarray) -> None:
        raise AssertionError("built in memory, not read from the saved file")

    monkeypatch.setattr(rerank_store, "build_augmentation", never)
    other = _reopened(fs)
    try:
        notes: list[str] = []
        assert _default(other, other.run("musicnn-msd"), tid, notes) == in_memory and notes == []
    finally:
        other.close()


@pytest.mark.parametrize("damage", ["truncated", "bytes changed", "another vector set's data"])
def test_a_damaged_augmentation_file_is_ignored_reported_and_removed(msd_copy: tuple[FeatureStore, Run], damage: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    fs, run = msd_copy
    monkeypatch.setattr(rerank_store, "IN_MEMORY_TRACKS", 0)
    vs = load_vectors(fs, run, VectorSpec.from_options())
    path = build_index(fs, vs)[1].augment_path
    assert path is not None and read_augmentation(path, vs) is not None
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "bytes changed":  # inside the neighbours' weights, past their .npy header
        start = data.index(b"\x93NUMPY", data.index(b"aug_weights.npy")) + 128
        path.write_bytes(data[:start] + bytes(b ^ 0x55 for b in data[start : start + 32]) + data[start + 32 :])
    else:
        shutil.copyfile(_layer_data(fs, run)[1], path)  # a layer's augmentation: asked for with --rerank
    assert read_augmentation(path, vs) is None
    reopened = _reopened(fs)
    try:
        notes: list[str] = []
        again = reopened.run("musicnn-msd")
        tid = int(vs.ids[1])
        assert _default(reopened, again, tid, notes) == _default(reopened, again, tid, ranking="plain")
        assert len(notes) == 1 and HINT in notes[0] and "plain ranking" in notes[0]
    finally:
        reopened.close()
    assert check_store(fs.root).stale == [path]
    assert check_store(fs.root, fix=True).stale == [] and not path.exists()
    assert index_path(fs, run, vs.spec).exists()


@pytest.fixture()
def toy(tmp_path: Path) -> Iterator[tuple[FeatureStore, Run]]:
    """A store of 24 tracks in three clusters, written here (two layers of 6 and 4 dims): no model, no audio."""
    rng = np.random.default_rng(11)
    store = FeatureStore(tmp_path / "toy")
    run = store.ensure_run(run_key(ModelInfo("toy", "r1", 16000, ("first layer", "b"), (6, 4)), WindowPolicy()))
    centres = rng.standard_normal((3, 10)) * 3
    for i in range(24):
        v = (centres[i % 3] + rng.standard_normal(10)).astype(np.float32)
        store.upsert_track(Path(f"/music/{i}.wav"), f"h{i}", 1, 0.0, {"duration": 10.0},
                           {"title": str(i), "composer": "abc"[i % 3]})
        store.write_vectors(run, [TrackVectors(f"h{i}", [v[:6], v[6:]], [v[None, :6], v[None, 6:]], [0.0])])
    try:
        yield store, run
    finally:
        store.close()


def _resaved(path: Path, **changes: np.ndarray) -> Path:
    """``path``'s arrays saved again with ``changes``, to a new file beside it."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    out = path.with_name(f"changed-{len(list(path.parent.iterdir()))}{path.name}")
    np.savez(out, **{**arrays, **changes})
    return out


def test_saved_data_is_read_only_for_the_vectors_and_constants_it_was_computed_from(
        toy: tuple[FeatureStore, Run], tmp_path: Path) -> None:
    """A saved re-ranker and augmentation read back array for array; any other vectors (a unit vector moved past
    float rounding, another preprocessor), other constants or arrays no re-ranker of these tracks has are not
    used."""
    store, run = toy
    vs = load_vectors(store, run, POWER)
    built = build_reranker(vs.unit())
    path, aug_path = tmp_path / "r.rerank.npz", tmp_path / "a.augment.npz"
    assert rerank_store.save_reranker(path, vs, built) == path.stat().st_size
    assert rerank_store.save_augmentation(aug_path, vs, built.aug) == aug_path.stat().st_size
    saved = read_reranker(path, vs)
    assert saved is not None
    _assert_same(saved, built)
    for aug in (read_augmentation(aug_path, vs), saved.aug):
        assert aug is not None
        for x, y in ((aug.rows, built.aug.rows), (aug.weights, built.aug.weights), (aug.norms, built.aug.norms)):
            np.testing.assert_array_equal(x, y)
    # the unit vectors: a row sum moved by float rounding (below 1e-4) is the same data, beyond it other data
    rounded, moved = vs.unit().copy(), vs.unit().copy()
    rounded[3, 0] += 5e-5
    moved[3, 0] += 3e-4
    assert read_reranker(path, replace(vs, _unit=rounded)) is not None
    assert read_reranker(path, replace(vs, _unit=moved)) is None
    assert read_augmentation(aug_path, replace(vs, _unit=moved)) is None
    # the preprocessor: statistics up to float rounding; its power, blocks and block weights exactly
    prep = vs.prep
    assert read_reranker(path, replace(vs, prep=replace(prep, mean=prep.mean * (1 + 1e-7)))) is not None
    for other in (replace(prep, mean=prep.mean + 0.01), replace(prep, scale=prep.scale * 1.01),
                  replace(prep, power=0.5), replace(prep, blocks=(4, 6)), replace(prep, weights=(1.0, 2.0)),
                  replace(prep, unpowered=(True, False)), replace(prep, mean=prep.mean[:-1]),
                  replace(prep, scale=prep.scale[:-1])):
        assert read_reranker(path, replace(vs, prep=other)) is None, other
    # another vector set's tracks, hashes or constants
    assert read_reranker(path, replace(vs, hashes=vs.hashes[::-1].copy())) is None
    assert read_reranker(_resaved(path, params=np.zeros(7)), vs) is None
    assert read_augmentation(_resaved(aug_path, params=np.zeros(3)), vs) is None
    assert read_augmentation(path, vs) is None and read_reranker(aug_path, vs) is None  # neither passes for other
    cut, missing = tmp_path / "cut.npz", tmp_path / "missing.npz"
    cut.write_bytes(aug_path.read_bytes()[:300])
    assert read_augmentation(cut, vs) is None and read_augmentation(missing, vs) is None
    cut.write_bytes(path.read_bytes()[:300])
    assert read_reranker(cut, vs) is None and read_reranker(missing, vs) is None
    n = len(vs.ids)
    assert read_reranker(_resaved(path), vs) is not None  # saved again unchanged: still read
    for changes in ({"top_rows": np.full_like(built.top.rows, n)}, {"top_rows": np.full_like(built.top.rows, -1)},
                    {"top_rows": built.top.rows.astype(np.float64)}, {"top_rows": built.top.rows[:, :-1]},
                    {"top_scores": built.top.scores[:, :-1]}, {"top_scores": np.full_like(built.top.scores, np.nan)},
                    {"top_scores": built.top.scores.astype(np.int64)}, {"top_lowest": built.top.lowest[:-1]},
                    {"top_lowest": np.full_like(built.top.lowest, np.inf)}, {"qe_rows": built.qe_rows[:, :2]},
                    {"qe_scores": np.full_like(built.qe_scores, np.nan)},
                    {"recip_data": np.full_like(built.recip.data, np.nan)},
                    {"recip0_data": np.full_like(built.recip0.data, np.inf)},
                    {"recip_indices": np.full_like(built.recip.indices, n)},
                    {"aug_norms": np.zeros_like(built.aug.norms)}, {"aug_norms": -built.aug.norms},
                    {"aug_norms": built.aug.norms[:-1]}, {"aug_norms": np.full_like(built.aug.norms, np.nan)},
                    {"aug_rows": built.aug.rows[:, :1]}, {"aug_weights": built.aug.weights[:, :1]}):
        assert read_reranker(_resaved(path, **changes), vs) is None, changes
        aug_changes = {k: v for k, v in changes.items() if k.startswith("aug_")}
        if aug_changes:
            assert read_augmentation(_resaved(aug_path, **aug_changes), vs) is None, changes
    for few in (1, 2):  # collections smaller than the lists: one track lists none, its augmentation's norm is 1
        small = replace(vs, ids=vs.ids[:few], hashes=vs.hashes[:few], raw=vs.raw[:few], _unit=None)
        rerank_store.save_reranker(path, small, build_reranker(small.unit()))
        rerank_store.save_augmentation(aug_path, small, build_augmentation(small.unit()))
        again = read_reranker(path, small)
        assert again is not None and again.top.rows.shape == (few, few - 1), few
        assert read_augmentation(aug_path, small) is not None, few
    with pytest.raises(ValueError, match="default constants"):
        rerank_store.save_reranker(path, vs, replace(built, lam=0.5))
    with pytest.raises(ValueError, match="default constants"):
        rerank_store.save_reranker(path, vs, replace(built, k2=2))
    with pytest.raises(ValueError, match="default constants"):
        rerank_store.save_reranker(path, vs, replace(built, unit=built.unit[:-1]))
    with pytest.raises(ValueError, match="own tracks"):
        rerank_store.save_augmentation(aug_path, vs, replace(built.aug, norms=built.aug.norms[:-1]))


def test_the_default_ranking_is_augmented_for_all_layers_of_a_small_collection_or_saved_data(
        toy: tuple[FeatureStore, Run], monkeypatch: pytest.MonkeyPatch) -> None:
    """"auto": augmented for all layers, mean matching, no hubness and the default expansion, while the collection is
    small or its augmentation is saved; plain otherwise, saying why only when the size was the reason. A ranking
    asked for is used, or refused (one line) with what it cannot combine with."""
    store, run = toy
    vs = load_vectors(store, run, POWER)
    layer = load_vectors(store, run, VectorSpec.from_options(layer="first layer", norm="power"))
    choice = rerank_store.ranking_choice
    notes: list[str] = []
    assert choice(store, vs, on_note=notes.append) == "augmented"
    assert choice(store, vs, expand=3) == "augmented"  # the default expansion, given
    for other in ({"match": "segments"}, {"hubness": "csls"}, {"expand": 0}, {"expand": 5}):
        assert choice(store, vs, on_note=notes.append, **other) == "plain", other
    assert choice(store, layer, on_note=notes.append) == "plain"
    assert notes == []
    for asked in ("plain", "augmented", "reranked"):
        assert choice(store, vs, asked) == asked
    assert choice(store, vs, "plain", match="segments", hubness="mp", expand=5) == "plain"
    for asked in ("augmented", "reranked"):
        for other, message in (({"match": "segments"}, "--match mean"), ({"hubness": "csls"}, "--hubness"),
                               ({"expand": 5}, "leave out --expand")):
            with pytest.raises(ValueError, match=message):
                choice(store, vs, asked, **other)
        with pytest.raises(ValueError, match="unknown match"):
            choice(store, vs, asked, match="best")
        assert choice(store, vs, asked, expand=3) == asked
    with pytest.raises(ValueError, match="unknown ranking 'best'"):
        choice(store, vs, "best")
    monkeypatch.setattr(rerank_store, "IN_MEMORY_TRACKS", len(vs.ids))
    assert choice(store, vs) == "augmented"  # at the limit: still built in memory
    monkeypatch.setattr(rerank_store, "IN_MEMORY_TRACKS", len(vs.ids) - 1)
    assert choice(store, vs, on_note=notes.append) == "plain"
    assert notes == [f"plain ranking: the augmented ranking of {len(vs.ids)} tracks needs data that takes tens of "
                     "seconds to build at this size; `mess index --model toy --norm power` saves it, and later "
                     "commands use it"]
    path = rerank_store.augment_path(store, run, vs.spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    rerank_store.save_augmentation(path, vs, build_augmentation(vs.unit()))
    assert choice(store, vs, on_note=notes.append) == "augmented" and len(notes) == 1
    assert rerank_store.index_command(run, layer.spec) == "mess index --model toy --layer 'first layer' --norm power"
