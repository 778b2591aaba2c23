"""Query expansion on real extracted vectors: the served ranking is the evaluated one, scores stay cosines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mess.audio.windows import WindowPolicy
from mess.extract.runs import run_key
from mess.models.base import ModelInfo
from mess.search.evaluate import evaluate
from mess.search.expansion import expand, expand_collection, expanded_scores
from mess.search.query import collection_query, similar_tracks
from mess.search.vectors import VectorSet
from mess.store import FeatureStore, Run, TrackVectors


def test_similar_with_expansion_ranks_as_evaluation_does_and_scores_stay_cosines(
    msd: tuple[FeatureStore, Run, VectorSet],
) -> None:
    fs, run, vs = msd
    unit = vs.unit()
    expanded = expand_collection(unit, 3)
    for row in (0, len(unit) // 2, len(unit) - 1):
        tid = int(vs.ids[row])
        got = similar_tracks(fs, run, collection_query(fs, tid), 5, expand=3, ranking="plain")
        ranking = np.maximum(expanded[row] @ unit.T, unit[row] @ unit.T)  # never below the plain cosine
        ranking[row] = -np.inf
        want = vs.ids[np.argsort(-ranking, kind="stable")[:5]]
        assert [n.track.id for n in got] == want.tolist()
        rows = vs.rows(want)
        assert np.allclose([n.score for n in got], unit[rows] @ unit[row], atol=1e-5)
        assert np.allclose([n.adjusted for n in got], ranking[rows], atol=1e-5)
        assert all(n.adjusted is not None for n in got)
        default = similar_tracks(fs, run, collection_query(fs, tid), 5, ranking="plain")  # plain: expanded by 3
        assert [(n.track.id, n.adjusted) for n in default] == [(n.track.id, n.adjusted) for n in got]


def test_expansion_with_hubness_keeps_plain_cosines_as_scores(msd: tuple[FeatureStore, Run, VectorSet]) -> None:
    fs, run, vs = msd
    unit = vs.unit()
    got = similar_tracks(fs, run, collection_query(fs, int(vs.ids[0])), 5, expand=3, hubness="csls")
    rows = vs.rows(np.array([n.track.id for n in got]))
    assert np.allclose([n.score for n in got], unit[rows] @ unit[0], atol=1e-5)
    adjusted = [n.adjusted for n in got]
    assert adjusted == sorted(adjusted, reverse=True)


def test_expansion_moves_a_query_towards_its_neighbourhood() -> None:
    """A query between a tight group and one stray point: plain cosine ranks the stray point among the group;
    expanded with its nearest neighbours (mostly the group), the query ranks the stray point last."""
    rng = np.random.default_rng(0)
    centre, stray = np.eye(16)[0], np.eye(16)[1]
    group = centre + 0.05 * rng.standard_normal((6, 16))
    unit = np.vstack([0.5 * centre + 0.5 * stray, stray, group])
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    plain = unit[1:] @ unit[0]
    assert (plain[1:] < plain[0]).sum() >= 3  # the stray point beats half the group
    moved = expand_collection(unit, 3)[0] @ unit[1:].T
    assert moved[0] < moved[1:].min()
    assert np.allclose(np.linalg.norm(expand(unit[:1], unit[None, 2:5], plain[None, 1:4]), axis=1), 1.0)


def test_evaluate_reports_expanded_cosine_alongside_the_plain_one(extracted_store: Path) -> None:
    fs = FeatureStore(extracted_store, readonly=True)
    try:
        run = fs.run("musicnn-msd")
        plain = evaluate(fs, run, "composer", expand=0)
        expanded = evaluate(fs, run, "composer", expand=3, ranking="plain")
        default = evaluate(fs, run, "composer", ranking="plain")  # the plain ranking expands by 3
    finally:
        fs.close()
    assert [s.scores for s in default.sets] == [s.scores for s in expanded.sets]
    assert [s.name for s in plain.sets] == [s.name for s in expanded.sets]
    assert all(s.metric == "cosine" for s in plain.sets)
    assert all(s.metric == "cosine, expanded (3)" for s in expanded.sets)
    assert any(a.scores.map != b.scores.map for a, b in zip(plain.sets, expanded.sets, strict=True))


def test_http_similar_with_expansion_answers_as_the_library(extracted_store: Path) -> None:
    from fastapi.testclient import TestClient

    from mess.serve.app import create_app

    fs = FeatureStore(extracted_store, readonly=True)
    try:
        run = fs.run("musicnn-msd")
        tid = fs.tracks(run)[0].id
        want = similar_tracks(fs, run, collection_query(fs, tid), 4, expand=3, ranking="plain")
    finally:
        fs.close()
    with TestClient(base_url="http://127.0.0.1", app=create_app(extracted_store)) as client:
        body = client.get(f"/api/tracks/{tid}/similar", params={"model": "musicnn-msd", "k": 4, "expand": 3,
                                                                 "ranking": "plain"}).json()
        bad = client.get(f"/api/tracks/{tid}/similar", params={"expand": -1})
    assert [r["id"] for r in body["results"]] == [n.track.id for n in want]
    assert [r["adjusted"] for r in body["results"]] == pytest.approx([n.adjusted for n in want], abs=1e-5)
    assert bad.status_code == 422


def test_expansion_never_pushes_a_near_copy_of_the_query_down(tmp_path: Path) -> None:
    """The expanded query (pulled towards the cluster) can be closer to another member than to a near-copy
    of the query; `similar` ranks by the better of the two cosines and keeps the copy first."""
    rng = np.random.default_rng(430)  # one such configuration; about one in 50 random ones here
    centre = np.eye(8)[0]
    members = (centre + 0.3 * rng.standard_normal((5, 8))).astype(np.float16).astype(np.float32)  # as stored
    query = members[0] + 0.05 * rng.standard_normal(8).astype(np.float32)  # e.g. a quieter re-encoding of member 0
    unit = np.vstack([query, members])
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    plain = unit[1:] @ unit[0]
    nearest = np.argsort(-plain)[:3]
    moved = expand(unit[:1], unit[None, 1 + nearest], plain[None, nearest])[0] @ unit[1:].T
    assert np.argmax(plain) == 0 and np.argmax(moved) != 0  # the expanded query alone would demote the copy
    store = FeatureStore(tmp_path / "store")
    try:
        run = store.ensure_run(run_key(ModelInfo("toy", "r1", 16000, ("l0",), (8,)), WindowPolicy()))
        ids = []
        for i, vector in enumerate(members):
            ids.append(store.upsert_track(Path(f"/music/{i}.wav"), f"h{i}", 1, 0.0, {"duration": 10.0},
                                          {"artist": None, "album": None, "title": str(i), "genre": None,
                                           "composer": None}))
            store.write_vectors(run, [TrackVectors(f"h{i}", [vector], [vector[None]], [0.0])])
        # norm "none": only L2 normalisation, so the library sees the geometry computed above
        got = similar_tracks(store, run, query, k=5, norm="none", expand=3, ranking="plain")
    finally:
        store.close()
    assert got[0].track.id == ids[0]
    want = expanded_scores(plain, moved)
    assert [n.track.id for n in got] == [ids[i] for i in np.argsort(-want, kind="stable")]
    assert [n.adjusted for n in got] == pytest.approx(np.sort(want)[::-1].tolist(), abs=1e-5)


def test_expanded_query_is_the_alpha_weighted_sum_of_the_query_and_its_k_nearest_tracks() -> None:
    """alpha-QE computed here from its definition: q + sum over the k nearest other tracks of max(cos, 0)^alpha
    times the track, L2-normalised. With k = n - 1 about half the neighbours have negative cosines: no weight."""
    rng = np.random.default_rng(4)
    unit = rng.standard_normal((30, 8))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    sims = unit @ unit.T
    for k, alpha in ((3, 1.0), (5, 2.0), (29, 1.0)):
        got = expand_collection(unit, k, alpha)
        for i in range(len(unit)):
            others = np.delete(np.arange(len(unit)), i)
            top = others[np.argsort(-sims[i, others])[:k]]
            want = unit[i] + (np.clip(sims[i, top], 0.0, None) ** alpha) @ unit[top]
            np.testing.assert_allclose(got[i], want / np.linalg.norm(want), atol=1e-6, err_msg=f"k={k} alpha={alpha}")
