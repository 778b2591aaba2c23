"""Search against a real feature store filled with computed (clustered) vectors: queries, indexes, evaluation, CLI."""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from conftest import mess_here
from mess.audio.windows import WindowPolicy
from mess.cli.search import register
from mess.extract.runs import run_key
from mess.models.base import ModelInfo
from mess.query import resolve_query
from mess.search.evaluate import LabelError, evaluate, plot_evaluation, read_label_csv, track_labels
from mess.search.index import CollectionIndex, build_index, index_path, open_index, stale_indexes
from mess.search.query import similar_tracks
from mess.search.vectors import VectorSpec, load_vectors
from mess.store import FeatureStore, Run, StoreError, TrackFailed, TrackVectors

ARTISTS, PER_ARTIST, DIMS = 4, 6, (8, 16, 16)


def _add_track(store: FeatureStore, run: Run, path: str, content: str, layers: list[np.ndarray],
               artist: str | None, title: str, album: str | None = None) -> int:
    tid = store.upsert_track(Path(path), content, 1, 0.0, {"duration": 10.0},
                             {"artist": artist, "album": album, "title": title, "genre": None, "composer": artist})
    store.write_vectors(run, [TrackVectors(content, layers, [v[None] for v in layers], [0.0])])
    return tid


def _vectors(rng: np.random.Generator, centres: list[np.ndarray], a: int) -> list[np.ndarray]:
    """Layer 0 is noise; layers 1 and 2 carry the artist."""
    return [(rng.standard_normal(DIMS[0]) * 3 + 5).astype(np.float32)] + [
        (c[a] + rng.standard_normal(c.shape[1])).astype(np.float32) for c in centres]


@pytest.fixture()
def synth(tmp_path: Path) -> tuple[FeatureStore, Run]:
    """4 artists x 6 tracks, plus a second copy of track 1 (same content) under another artist."""
    rng = np.random.default_rng(0)
    store = FeatureStore(tmp_path / "store")
    info = ModelInfo("synth", "r1", 16000, ("l0", "l1", "l2"), DIMS)
    run = store.ensure_run(run_key(info, WindowPolicy()))
    centres = [rng.standard_normal((ARTISTS, d)) * 3 + 5 for d in DIMS[1:]]
    for a in range(ARTISTS):
        for j in range(PER_ARTIST):
            _add_track(store, run, f"/music/artist{a}/track{j}.wav", f"hash-{a}-{j}", _vectors(rng, centres, a),
                       f"Artist {a}", f"Track {j}", f"Album {a}-{j % 2}")
    store.upsert_track(Path("/music/copies/track0.wav"), "hash-0-0", 1, 0.0, {"duration": 10.0},
                       {"artist": "Someone Else", "album": None, "title": "Copy", "genre": None, "composer": None})
    store.centres = centres  # for tests that add tracks
    yield store, run
    store.close()


def _hashes(store: FeatureStore, ids: np.ndarray) -> list[str]:
    """The content hash of each track id (what derived vectors are written by)."""
    return [store.track(int(i)).content_hash for i in ids]


def _unit(store: FeatureStore, run: Run, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """Track ids and one layer's unit vectors computed here: z-scored per dimension (the default norm of one layer),
    then L2."""
    ids, raw = store.layer_matrix(run, layer)
    x = (raw - raw.mean(axis=0)) / raw.std(axis=0)
    return ids, x / np.linalg.norm(x, axis=1, keepdims=True)


def test_seed_excluded_duplicate_flagged_scores_are_cosines(synth: tuple[FeatureStore, Run]) -> None:
    store, run = synth
    query = resolve_query(store, "1", run)
    results = similar_tracks(store, run, query, k=8, layer="l1", expand=0)
    ids = [n.track.id for n in results]
    assert 1 not in ids and len(results) == 8
    copy = store.track("/music/copies/track0.wav").id
    assert ids[0] == copy and results[0].duplicate
    assert not any(n.duplicate for n in results[1:])
    all_ids, unit = _unit(store, run, "l1")
    row = {int(i): r for r, i in enumerate(all_ids)}
    for n in results:
        assert n.score == pytest.approx(float(unit[row[1]] @ unit[row[n.track.id]]), abs=1e-5)
    assert [n.score for n in results] == sorted((n.score for n in results), reverse=True)


def test_exclude_same_artist_and_why_scores(synth: tuple[FeatureStore, Run]) -> None:
    store, run = synth
    query = resolve_query(store, "/music/artist2/track3.wav", run)
    assert query.track.artist == "Artist 2"
    plain = similar_tracks(store, run, query, k=5)
    assert all(n.track.artist == "Artist 2" for n in plain)  # the artist signal is strong in l1, l2
    other = similar_tracks(store, run, query, k=5, exclude_same_artist=True)
    assert other and all(n.track.artist != "Artist 2" for n in other)
    # no aspect map and 3 layers: "why" is per layer, and equals that layer's cosine
    ids, unit = _unit(store, run, "l2")
    row = {int(i): r for r, i in enumerate(ids)}
    for n in plain:
        assert set(n.why) == {"l0", "l1", "l2"}
        assert n.why["l2"] == pytest.approx(float(unit[row[query.track.id]] @ unit[row[n.track.id]]), abs=1e-5)
        assert 0.0 <= n.why_percentile["l2"] <= 1.0
    # same-artist results are unusually close in the artist layers, not in the noise layer
    assert np.mean([n.why_percentile["l1"] for n in plain]) > np.mean([n.why_percentile["l0"] for n in plain])


def test_aspects_need_a_probe_then_use_its_layers(synth: tuple[FeatureStore, Run]) -> None:
    store, run = synth
    query = resolve_query(store, "/music/artist0/track2.wav", run)
    with pytest.raises(StoreError, match="mess probe"):
        similar_tracks(store, run, query, k=3, aspect="timbre")
    store.set_aspect_map(run, [("timbre", "l1", 0.9, 0.1), ("harmony", "l0", 0.5, 0.1)])
    by_aspect = similar_tracks(store, run, query, k=3, aspect="timbre")
    by_layer = similar_tracks(store, run, query, k=3, layer="l1")
    assert [n.track.id for n in by_aspect] == [n.track.id for n in by_layer]
    assert set(by_aspect[0].why) == {"timbre", "harmony"}
    store.set_aspect_map(run, [("timbre", "l1", 0.9, 0.1), ("harmony", "l0", 0.5, 0.1), ("rhythm", "l1", 0.4, 0.1)])
    shared = similar_tracks(store, run, query, k=3, aspect="rhythm")
    assert set(shared[0].why) == {"rhythm/timbre", "harmony"}  # one layer, one piece of evidence
    assert [n.track.id for n in shared] == [n.track.id for n in by_layer]
    with pytest.raises(StoreError, match="unknown aspect"):
        similar_tracks(store, run, query, k=3, aspect="tempo")
    # a probe that found every layer at R^2 0 for an aspect still names a layer (the first of the ties): ranking
    # by it passed an arbitrary layer off as that aspect, while the same answer listed it as no evidence
    store.set_aspect_map(run, [("timbre", "l1", 0.9, 0.1), ("rhythm", "l0", 0.0, 0.0)])
    with pytest.raises(StoreError, match=r"no layer of synth encodes rhythm \(the probe's best R\^2, less what "
                                         r"shuffled targets reach, is 0.00"):
        similar_tracks(store, run, query, k=3, aspect="rhythm")
    assert similar_tracks(store, run, query, k=3, aspect="timbre")  # an encoded aspect still answers


def test_an_aspect_refused_by_a_probe_of_fewer_tracks_says_to_probe_again(synth: tuple[FeatureStore, Run]) -> None:
    """A probe of 6 tracks found no layer for timbre; after 12 more were extracted `mess similar --aspect timbre`
    still said only 'choose another aspect, or leave --aspect out': not that the map is from 6 of 18 tracks and
    a new probe may find the aspect (the stale-map note of an answered search never showed, as none was given)."""
    store, run = synth
    query = resolve_query(store, "/music/artist0/track2.wav", run)
    now = len(store.tracks(run))
    store.set_aspect_map(run, [("timbre", "l1", 0.9, 0.1), ("rhythm", "l0", 0.0, 0.0)], n_tracks=now - 5)
    with pytest.raises(StoreError, match=rf"encodes rhythm in a probe of {now - 5} tracks \({now} now: rerun "
                                         r"`mess probe --model synth`\)"):
        similar_tracks(store, run, query, k=3, aspect="rhythm")
    store.set_aspect_map(run, [("timbre", "l1", 0.9, 0.1), ("rhythm", "l0", 0.0, 0.0)], n_tracks=now)
    with pytest.raises(StoreError, match=r"encodes rhythm \(the probe") as refused:
        similar_tracks(store, run, query, k=3, aspect="rhythm")
    assert "rerun" not in str(refused.value)  # a probe of every track: nothing to rerun


def _brute_force(store: FeatureStore, run: Run, layers: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Track ids and their cosine matrix computed here: the mean over layers of z-scored per-layer cosines."""
    per_layer = [_unit(store, run, layer) for layer in layers]
    ids = per_layer[0][0]
    assert all(np.array_equal(i, ids) for i, _ in per_layer)
    return ids, np.mean([u @ u.T for _, u in per_layer], axis=0)


def _assert_ranked_as(results: list, ids: np.ndarray, expected: np.ndarray, values: list[float]) -> None:
    """``results`` are the best len(results) of ``ids`` by ``expected`` (ties in any order), with these values."""
    row = {int(i): r for r, i in enumerate(ids)}
    got = np.array([expected[row[n.track.id]] for n in results])
    assert values == pytest.approx(got.tolist(), abs=1e-5)
    assert np.all(np.diff(got) <= 1e-6), "not best first"
    left_out = np.ones(len(ids), dtype=bool)
    left_out[[row[n.track.id] for n in results]] = False
    if left_out.any():
        assert got.min() >= expected[left_out].max() - 1e-6, "a better track was left out"


@pytest.mark.parametrize("layer, layers", [("l1", ("l1",)), (None, ("l0", "l1", "l2"))])
def test_neighbours_are_the_exact_nearest_by_an_independent_cosine(
        synth: tuple[FeatureStore, Run], layer: str | None, layers: tuple[str, ...]) -> None:
    store, run = synth
    ids, cos = _brute_force(store, run, layers)
    n = len(ids)
    for qid in (1, 5, 14, int(ids[-1])):  # 1 has a twin (same content): an exact tie for every other query
        q = int(np.flatnonzero(ids == qid)[0])
        others = np.flatnonzero(ids != qid)
        query = resolve_query(store, str(qid), run)
        for k in (1, 5, n + 10):  # k beyond the collection: every other track once, never the query
            results = similar_tracks(store, run, query, k=k, layer=layer, expand=0, norm="zscore")
            assert len(results) == min(k, n - 1)
            assert len({r.track.id for r in results}) == len(results) and qid not in {r.track.id for r in results}
            _assert_ranked_as(results, ids[others], cos[q, others], [r.score for r in results])


def test_hubness_reranking_matches_csls_and_mutual_proximity_computed_here(synth: tuple[FeatureStore, Run]) -> None:
    """CSLS: 2 cos - r_q - r_x, r = mean cosine to the 10 nearest other tracks. Mutual proximity: the product
    of each side's Gaussian survival function of the distance 1 - cos, fitted on its distances to all other tracks.
    The pool (100) exceeds the collection, so the re-ranking must agree over every track."""
    from scipy.stats import norm

    store, run = synth
    ids, cos = _brute_force(store, run, ("l1",))
    n = len(ids)
    other = ~np.eye(n, dtype=bool)
    r = np.array([np.sort(cos[i, other[i]])[::-1][:10].mean() for i in range(n)])
    dist = 1.0 - cos
    mu = np.array([dist[i, other[i]].mean() for i in range(n)])
    sd = np.array([dist[i, other[i]].std() for i in range(n)])
    changed = []
    for qid in (5, 1, 20):
        q = int(np.flatnonzero(ids == qid)[0])
        rest = np.flatnonzero(ids != qid)
        expected = {"csls": 2 * cos[q, rest] - r[q] - r[rest],
                    "mp": norm.sf(dist[q, rest], mu[q], sd[q]) * norm.sf(dist[q, rest], mu[rest], sd[rest])}
        for method, values in expected.items():
            results = similar_tracks(store, run, resolve_query(store, str(qid), run), k=6, layer="l1", hubness=method,
                                     expand=0)
            assert len(results) == 6 and qid not in [n.track.id for n in results]
            _assert_ranked_as(results, ids[rest], values, [n.adjusted for n in results])
            rows = [int(np.flatnonzero(ids == n.track.id)[0]) for n in results]
            assert [n.score for n in results] == pytest.approx(cos[q, rows].tolist(), abs=1e-5)  # still the cosine
        query = resolve_query(store, str(qid), run)
        plain = [n.track.id for n in similar_tracks(store, run, query, k=6, layer="l1", expand=0)]
        changed.append(plain != [n.track.id for n in results])
    assert any(changed), "the re-ranking changed nothing"


def test_index_is_saved_updated_incrementally_and_never_stale(synth: tuple[FeatureStore, Run]) -> None:
    store, run = synth
    spec = VectorSpec("all", "", "center")  # z-scores refitted on a changed collection move a few near-ties
    index, report = build_index(store, load_vectors(store, run, spec))
    assert report.mode == "built" and report.n == ARTISTS * PER_ARTIST + 1 and report.path.exists()
    assert build_index(store, load_vectors(store, run, spec))[1].mode == "unchanged"
    rng = np.random.default_rng(1)
    new_id = _add_track(store, run, "/music/new/n1.wav", "hash-new", _vectors(rng, store.centres, 3), "Artist 3", "New")
    query = resolve_query(store, "/music/artist3/track0.wav", run)
    # not re-indexed yet: search falls back to an exact in-memory index that includes the new track
    assert new_id in [n.track.id for n in similar_tracks(store, run, query, k=8)]
    store.remove_tracks(["/music/artist0/track5.wav"])
    vs = load_vectors(store, run, spec)
    updated, report = build_index(store, vs)
    assert (report.mode, report.added, report.removed) == ("updated", 1, 1)
    saved = CollectionIndex.load(report.path)  # what another process would open: the file, not this object
    assert saved is not None and saved.is_current(vs) and sorted(saved.ids.tolist()) == sorted(vs.ids.tolist())
    q = vs.unit()[:4]
    fresh, _ = build_index(store, vs, rebuild=True)
    np.testing.assert_array_equal(saved.ann.search(q, 6)[1], fresh.ann.search(q, 6)[1])
    # a later change the saved index does not hold: it is no longer current, and search does not use it
    store.remove_tracks(["/music/artist1/track5.wav"])
    later = load_vectors(store, run, spec)
    assert not CollectionIndex.load(report.path).is_current(later)
    assert open_index(store, later).ann.ntotal == len(later.ids) == len(vs.ids) - 1


def test_small_updates_add_up_until_the_index_is_rebuilt_with_fresh_statistics(synth: tuple[FeatureStore, Run]) -> None:
    """Each update used to be compared with the index before it, so updates of 3 tracks at a time kept the first
    build's z-scores for good. Changes now count from the build the statistics were fitted at (25% of 25 tracks)."""
    store, run = synth
    spec = VectorSpec("all", "", "zscore")
    build_index(store, load_vectors(store, run, spec), "hnsw")  # a flat index is refitted at every update
    rng = np.random.default_rng(3)
    modes = []
    for step in range(3):
        for j in range(3):
            _add_track(store, run, f"/music/new/{step}-{j}.wav", f"hash-new-{step}-{j}",
                       _vectors(rng, store.centres, j), f"Artist {j}", "New")
        vs = load_vectors(store, run, spec)
        index, report = build_index(store, vs)
        modes.append((report.mode, report.added))
    assert modes == [("updated", 3), ("updated", 3), ("built", 34)]
    np.testing.assert_allclose(index.prep.mean, vs.prep.mean)  # refitted on the 34 tracks
    saved = CollectionIndex.load(report.path)
    assert (saved.fitted, saved.drift) == (index.fitted, index.drift) == (34, 0)


def test_an_index_built_below_the_fitting_size_is_rebuilt_once_the_collection_reaches_it(tmp_path: Path) -> None:
    """An approximate index built on fewer than 8 tracks has no statistics (plain cosines: z-scores of so few are
    noise); one track more, and its in-place update kept that plain preparation, so `similar` through the saved
    index answered in plain cosines where the exact search z-scores, and no note said so. It is now rebuilt."""
    rng = np.random.default_rng(5)
    store = FeatureStore(tmp_path / "store")
    run = store.ensure_run(run_key(ModelInfo("synth", "r1", 16000, ("l0", "l1", "l2"), DIMS), WindowPolicy()))
    centres = [rng.standard_normal((ARTISTS, d)) * 3 + 5 for d in DIMS[1:]]
    for j in range(8):
        if j == 7:
            assert build_index(store, load_vectors(store, run, VectorSpec("layer", "l1")), "hnsw")[0].fitted == 7
        _add_track(store, run, f"/music/{j}.wav", f"hash-{j}", _vectors(rng, centres, j % ARTISTS), f"Artist {j % 4}",
                   f"Track {j}")
    vs = load_vectors(store, run, VectorSpec("layer", "l1"))
    index, report = build_index(store, vs)
    assert report.kind == "hnsw" and report.mode == "built" and index.fitted == 8
    ids, unit = _unit(store, run, "l1")  # z-scored as the exact search does
    first = similar_tracks(store, run, resolve_query(store, "1", run), k=7, layer="l1", expand=0)
    want = unit[1:] @ unit[0]
    assert [n.track.id for n in first] == ids[1:][np.argsort(-want)].tolist()
    np.testing.assert_allclose([n.score for n in first], np.sort(want)[::-1], atol=1e-5)
    _add_track(store, run, "/music/8.wav", "hash-8", _vectors(rng, centres, 0), "Artist 0", "Track 8")
    assert build_index(store, load_vectors(store, run, VectorSpec("layer", "l1")))[1].mode == "updated"  # fitted on 8
    store.close()


@pytest.mark.parametrize("mix", ["new npz", "new faiss", "new faiss and json", "truncated faiss", "truncated npz"])
def test_an_index_whose_files_come_from_two_saves_is_never_used(synth: tuple[FeatureStore, Run], mix: str) -> None:
    """A save cut short, or a reader that meets a save under way, finds files of two saves. Before, the ids of a new
    .npz beside the old .faiss passed the count check, and a changed track was searched with its old vectors."""
    store, run = synth
    spec = VectorSpec("all", "", "center")
    path = build_index(store, load_vectors(store, run, spec))[1].path
    files = {"faiss": path, "json": path.with_suffix(".json"), "npz": path.with_suffix(".npz")}
    before = {k: p.read_bytes() for k, p in files.items()}
    changed = store.track("/music/artist2/track0.wav").id
    rng = np.random.default_rng(7)
    assert _add_track(store, run, "/music/artist2/track0.wav", "hash-changed", _vectors(rng, store.centres, 0),
                      "Artist 2", "Track 0") == changed  # same file, new content: same id, same count
    vs = load_vectors(store, run, spec)
    assert build_index(store, vs)[1].mode == "updated"
    after = {k: p.read_bytes() for k, p in files.items()}
    if mix.startswith("truncated"):  # a truncated .npz raised zipfile.BadZipFile in every command, repair too
        kind = mix.split()[1]
        files[kind].write_bytes(after[kind][: len(after[kind]) // 2])
    else:
        for key, p in files.items():
            p.write_bytes(after[key] if key in mix else before[key])
    assert CollectionIndex.load(path) is None
    assert path in stale_indexes(store)  # what `mess check` reports
    exact = vs.unit() @ vs.unit()[vs.rows(np.array([changed]))][0]
    got = open_index(store, vs).ann.search(vs.unit()[vs.rows(np.array([changed]))], 5)
    np.testing.assert_array_equal(got[1][0], vs.ids[np.argsort(-exact)[:5]])  # searched with the new vectors
    assert build_index(store, vs)[1].mode == "built"
    assert CollectionIndex.load(path).is_current(vs)


def test_a_flat_index_answers_as_the_exact_search_after_an_update(synth: tuple[FeatureStore, Run]) -> None:
    """An updated flat index kept its first build's z-scores, so `similar` ranked and scored otherwise with the index
    saved than without it, while `mess index` called it exact."""
    store, run = synth
    spec = VectorSpec("all", "", "zscore")
    build_index(store, load_vectors(store, run, spec), "flat")
    rng = np.random.default_rng(5)
    for j in range(3):
        _add_track(store, run, f"/music/new/{j}.wav", f"hash-flat-{j}", _vectors(rng, store.centres, j), "A9", "N")
    vs = load_vectors(store, run, spec)
    index, report = build_index(store, vs, "flat")
    q = vs.unit()[:5]
    exact = q @ vs.unit().T
    sims, ids = CollectionIndex.load(report.path).ann.search(q, 8)
    rows = vs.rows(ids.ravel()).reshape(ids.shape)
    np.testing.assert_allclose(np.take_along_axis(exact, rows, axis=1), sims, atol=1e-5)  # each score is exact
    np.testing.assert_allclose(sims, -np.sort(-exact, axis=1)[:, :8], atol=1e-5)  # and they are the top 8 (ties: copy)


def test_search_caches_follow_store_writes_and_are_reused(synth: tuple[FeatureStore, Run],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import mess.search.vectors as vectors

    store, run = synth
    reads = {"tracks": 0, "vectors": 0}

    def counting(name: str, real):  # noqa: ANN001, ANN202
        def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            reads[name] += 1
            return real(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(FeatureStore, "_read_tracks", counting("tracks", FeatureStore._read_tracks))
    monkeypatch.setattr(vectors, "read_vectors", counting("vectors", vectors.read_vectors))
    spec = VectorSpec("all")
    query = resolve_query(store, "3", run)
    first = similar_tracks(store, run, query, k=5, exclude_same_artist=True)
    vs = load_vectors(store, run, spec)
    warm = dict(reads)
    for _ in range(3):  # nothing changed: no track list or vector set is rebuilt
        again = similar_tracks(store, run, query, k=5, exclude_same_artist=True)
        assert [(n.track, n.score, n.why) for n in again] == [(n.track, n.score, n.why) for n in first]
        assert load_vectors(store, run, spec) is vs and store.tracks(run) is store.tracks(run)
    assert reads == warm

    # another connection (e.g. `mess extract` in another process) adds a track: the next query sees it
    other = FeatureStore(store.root)
    rng = np.random.default_rng(7)
    new_id = _add_track(other, run, "/music/artist0/new.wav", "hash-other", _vectors(rng, store.centres, 0),
                        "Artist 0", "Other")
    assert load_vectors(store, run, spec) is not vs and new_id in load_vectors(store, run, spec).ids
    seed = resolve_query(store, str(new_id), run)
    assert [n.track.id for n in similar_tracks(store, run, seed, k=3, exclude_same_artist=True)]
    assert new_id in {t.id for t in store.tracks(run)}
    # ... and renames an artist: exclude_same_artist follows
    other.upsert_track(Path("/music/artist1/track0.wav"), "hash-1-0", 1, 0.0, {"duration": 10.0},
                       {"artist": "Artist 0", "album": None, "title": "Moved", "genre": None, "composer": None})
    moved = store.track("/music/artist1/track0.wav").id
    seed = resolve_query(store, "2", run)  # Artist 0
    assert moved not in [n.track.id for n in similar_tracks(store, run, seed, k=30, exclude_same_artist=True)]
    other.close()

    # this connection's own writes
    vs = load_vectors(store, run, spec)
    store.remove_tracks(["/music/artist0/new.wav"])
    assert new_id not in load_vectors(store, run, spec).ids and new_id not in {t.id for t in store.tracks(run)}
    own_id = _add_track(store, run, "/music/artist2/own.wav", "hash-own", _vectors(rng, store.centres, 2),
                        "Artist 2", "Own")
    assert own_id in load_vectors(store, run, spec).ids
    assert own_id in [n.track.id for n in similar_tracks(store, run, resolve_query(store, "13", run), k=30)]


def test_fused_vectors_are_searched_and_evaluated(synth: tuple[FeatureStore, Run]) -> None:
    store, run = synth
    ids, l2 = store.layer_matrix(run, "l2")
    store.write_derived(run, "fused", _hashes(store, ids), l2[:, ::-1].copy(), {"note": "reversed l2"})
    query = resolve_query(store, "7", run)
    fused = similar_tracks(store, run, query, k=4, fused=True)  # fused vectors are never z-scored
    plain = similar_tracks(store, run, query, k=4, layer="l2", norm="none")
    assert [n.track.id for n in fused] == [n.track.id for n in plain]  # a permutation of dims keeps cosines
    assert [n.score for n in fused] == pytest.approx([n.score for n in plain], abs=1e-5)
    # the same vectors as fused give the same evaluation (a permutation would reorder exact ties, such as
    # the duplicate track's, by float rounding alone)
    store.write_derived(run, "fused", _hashes(store, ids), l2, {"note": "l2"})
    ev = evaluate(store, run, "artist", k=5, norm="center")  # centred, fused and layer vectors alike
    rows = {s.name: s for s in ev.sets}
    assert rows["fused"].scores.map == pytest.approx(rows["l2"].scores.map)


def test_unknown_queries_fail_cleanly(synth: tuple[FeatureStore, Run]) -> None:
    store, run = synth
    with pytest.raises(StoreError, match="unknown track"):
        resolve_query(store, "999", run)
    with pytest.raises(StoreError, match="unknown layer"):
        similar_tracks(store, run, resolve_query(store, "1", run), layer="nope")
    with pytest.raises(ValueError, match="at most one"):
        similar_tracks(store, run, resolve_query(store, "1", run), layer="l1", fused=True)


def test_evaluation_ranks_the_artist_layers_above_noise(synth: tuple[FeatureStore, Run], tmp_path: Path) -> None:
    store, run = synth
    ev = evaluate(store, run, "artist", k=5, compare=True)
    by_name = {s.name: s for s in ev.sets}
    assert set(by_name) == {"l0", "l1", "l2", "all layers"}
    # the copy of track 1 (another artist's tag, track 1's audio) is counted once, as track 1: left out, said
    assert ev.n_classes == ARTISTS and ev.n_tracks == ev.n_queries == ARTISTS * PER_ARTIST
    assert ev.notes == ["1 byte-identical copy of labelled tracks left out (each recording counted once)"]
    assert by_name["l1"].scores.map > 0.9 and by_name["l2"].scores.map > 0.9
    assert by_name["l0"].scores.map < by_name["l1"].scores.map
    assert abs(by_name["l0"].scores.map - ev.chance.map) < 0.2
    # with expansion on (the default) the unexpanded cosine is scored too: the variants are not expanded
    assert {(v.metric, v.hubness) for v in ev.variants} == {("cosine", None), ("euclidean", None), ("dot", None),
                                                            ("cosine", "csls"), ("cosine", "mp")}
    png = plot_evaluation(ev, tmp_path / "eval.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_label_csv_overrides_tags(synth: tuple[FeatureStore, Run], tmp_path: Path) -> None:
    store, run = synth
    csv_path = tmp_path / "labels.csv"
    rows = [f"/music/artist{a}/track{j}.wav,{'even' if j % 2 == 0 else 'odd'}"
            for a in range(ARTISTS) for j in range(PER_ARTIST)]
    csv_path.write_text("path,mood\n" + "\n".join(rows) + "\n")
    labels = read_label_csv(store, csv_path, "mood").labels
    assert len(labels) == ARTISTS * PER_ARTIST and set(labels.values()) == {"even", "odd"}
    ev = evaluate(store, run, "mood", k=5, labels=labels)
    assert ev.n_classes == 2 and ev.best().scores.map < 0.8  # parity of the track number is not in the vectors
    bad = tmp_path / "bad.csv"
    bad.write_text("name,x\na,b\n")
    with pytest.raises(LabelError, match="needs an id, path or file column"):
        read_label_csv(store, bad, "mood")
    excel = tmp_path / "excel.csv"  # a byte-order mark, as Excel saves UTF-8: its first column was '\ufeffpath'
    excel.write_bytes(b"\xef\xbb\xbf" + csv_path.read_bytes())
    assert read_label_csv(store, excel, "mood").labels == labels
    same = {tid: "all" for tid in labels}
    with pytest.raises(LabelError, match=r"the same label \('all'\)"):  # was 1.000 everywhere, chance too
        evaluate(store, run, "mood", k=5, labels=same)  # and named it np.str_('all')


def test_a_label_column_keeps_its_labels_unless_label_names_a_credit(synth: tuple[FeatureStore, Run],
                                                                    tmp_path: Path) -> None:
    """`mess evaluate --labels moods.csv` with an id,label file read its 'label' column as artist credits (the
    default --label artist): 'Ambient; Dark' and 'Ambient; Bright' became one label 'ambient', 'Sad, slow' was
    'sad slow', and the scores were of labels the file never had."""
    store, run = synth
    tracks = sorted(t.id for t in store.tracks(run))[:8]
    moods = ["Ambient; Dark", "Ambient; Bright", "Epic feat. Choir", "Epic"]
    path = tmp_path / "moods.csv"
    path.write_text("id,label\n" + "".join(f"{t},{moods[i % 4]}\n" for i, t in enumerate(tracks)))
    labels = read_label_csv(store, path, "artist", field_given=False).labels
    assert sorted(set(labels.values())) == sorted(moods)
    assert len(set(read_label_csv(store, path, "artist").labels.values())) == 2  # --label artist: credits, asked
    runner, app = CliRunner(), _cli()
    args = ["evaluate", "--store", str(store.root), "--labels", str(path), "-k", "3", "--plot",
            str(tmp_path / "e.png"), "--json"]
    assert json.loads(runner.invoke(app, args).stdout)["n_classes"] == 4
    assert json.loads(runner.invoke(app, [*args, "--label", "artist"]).stdout)["n_classes"] == 2


def test_label_files_as_spreadsheets_save_them_are_read(synth: tuple[FeatureStore, Run], tmp_path: Path) -> None:
    """A label file saved by a spreadsheet was refused although it names its columns plainly: 'ID,Label' and
    'id , label' ("needs an id, path or file column ...; it has ['ID', 'Label']"), Excel's ';' in many locales and
    a tab-separated copy ("it has ['id;label']"); a header without rows was said to have 'no header'."""
    store, run = synth
    tracks = sorted(t.id for t in store.tracks(run))[:8]
    rows = [(t, "even" if i % 2 == 0 else "odd") for i, t in enumerate(tracks)]
    want = dict(rows)
    for name, header, sep, end in [("caps", "ID,Label", ",", "\n"), ("spaced", "id , label ", " , ", "\r\n"),
                                   ("semicolons", "id;label", ";", "\r\n"), ("tabs", "Id\tLABEL", "\t", "\n")]:
        path = tmp_path / f"{name}.csv"
        path.write_text(header + end + "".join(f"{t}{sep}{label}{end}" for t, label in rows), encoding="utf-8",
                        newline="")
        assert read_label_csv(store, path, "mood").labels == want, name
    game = tmp_path / "game.csv"  # a column named like --label, in another case
    game.write_text("Path;Game\n/music/artist0/track0.wav;x\n/music/artist0/track1.wav;x\n")
    assert set(read_label_csv(store, game, "game").labels.values()) == {"x"}
    quoted = tmp_path / "quoted.csv"  # a ';' file whose quoted header cell holds a comma (was split on the comma)
    quoted.write_text('"id";"label, as tagged"\n' + "".join(f'{t};"{label}, x"\n' for t, label in rows))
    assert read_label_csv(store, quoted, "label, as tagged").labels == {t: f"{label}, x" for t, label in rows}
    empty = tmp_path / "empty.csv"
    empty.write_text("id,label\n")
    with pytest.raises(LabelError, match="has a header and no rows"):
        read_label_csv(store, empty, "mood")


def test_a_label_row_naming_no_track_at_all_is_counted_as_left_out(synth: tuple[FeatureStore, Run],
                                                                   tmp_path: Path) -> None:
    """A row with a label and an empty id (',rock') was dropped without a word, while '999,rock' was named in the
    note of rows left out; a row with an id and no label is an unlabelled track, left out quietly."""
    store, run = synth
    tracks = sorted(t.id for t in store.tracks(run))[:4]
    path = tmp_path / "labels.csv"
    path.write_text("id,label\n" + "".join(f"{t},{'a' if i % 2 else 'b'}\n" for i, t in enumerate(tracks))
                    + ",rock\n999,rock\n" + f"{max(tracks) + 1},\n")
    got = read_label_csv(store, path, "label")
    assert got.unknown == [(6, ""), (7, "999")] and len(got.labels) == 4
    assert got.note().startswith("2 label rows name unknown tracks and were left out: line 6 '', line 7 '999'")


def test_label_rows_name_each_track_exactly_and_once(synth: tuple[FeatureStore, Run], tmp_path: Path) -> None:
    store, run = synth
    solo = _add_track(store, run, "/music/solo/only.wav", "hash-solo", _vectors(np.random.default_rng(1),
                                                                                store.centres, 0), "Solo", "Only")
    one, two = store.track("/music/artist0/track1.wav").id, store.track("/music/artist1/track2.wav").id
    paths = tmp_path / "paths.csv"  # another machine's path of only.wav matched it by name
    paths.write_text("path,label\n/music/artist0/track1.wav,a\n/music/artist0/track1.wav,a\n/elsewhere/only.wav,b\n"
                     "/music/artist1/track2.wav,b\n")
    got = read_label_csv(store, paths, "label")
    assert got.labels == {one: "a", two: "b"} and got.unknown == [(4, "/elsewhere/only.wav")]
    assert got.note() == ("1 label row names an unknown track and was left out: line 4 '/elsewhere/only.wav' (a path "
                          "matches only the file's path in the store; a 'file' column matches file names)")
    names = tmp_path / "names.csv"
    names.write_text("file,label\nonly.wav,b\n")
    assert read_label_csv(store, names, "label").labels == {solo: "b"}
    names.write_text("file,label\nonly.wav,b\ntrack1.wav,a\n")
    with pytest.raises(LabelError, match=r"names.csv:3: 4 tracks are named 'track1.wav'"):
        read_label_csv(store, names, "label")
    conflict = tmp_path / "conflict.csv"  # the last row won
    conflict.write_text(f"id,label\n{one},a\n{two},b\n{one},b\n")
    with pytest.raises(LabelError, match=rf"conflict.csv:4: track {one} \(Artist 0 - Track 1\) is labelled 'b' here "
                                         "and 'a' on line 2"):
        read_label_csv(store, conflict, "label")


def test_label_file_lines_are_named_as_an_editor_numbers_them(synth: tuple[FeatureStore, Run],
                                                                tmp_path: Path) -> None:
    """A blank line or a label quoted over two lines shifted every later line number the messages name: a row
    naming no track on line 6 was called 'line 4', a conflicting label on line 8 'line 6' (and the label it
    conflicts with, quoted from line 4 to 5, 'line 3'), a row of 3 cells after two blank lines on line 5 'line 3'
    (the records were counted, not the lines)."""
    store, run = synth
    one, two = sorted(t.id for t in store.tracks(run))[:2]
    lines = ["id,label", f"{one},a", "", f'{two},"b', 'c"', "999,x", "", f"{two},z", ""]
    path = tmp_path / "labels.csv"
    path.write_text("\n".join(lines[:-3]) + "\n")
    got = read_label_csv(store, path, "label")
    assert got.labels == {one: "a", two: "b\nc"}
    assert got.unknown == [(lines.index("999,x") + 1, "999")] == [(6, "999")]
    path.write_text("\n".join(lines), newline="")
    with pytest.raises(LabelError, match=rf"labels.csv:8: track {two} .* is labelled 'z' here and 'b\\nc' on line 4"):
        read_label_csv(store, path, "label")
    path.write_text("id,label\r\n\r\n\r\n999,x\r\n" + f"{one},a,b\r\n", newline="")
    with pytest.raises(LabelError, match="labels.csv:5: 3 cells where the header has 2"):
        read_label_csv(store, path, "label")


def test_a_label_file_without_its_columns_or_not_text_is_refused_saying_so(synth: tuple[FeatureStore, Run],
                                                                            tmp_path: Path) -> None:
    store, run = synth
    one = min(t.id for t in store.tracks(run))
    path = tmp_path / "labels.csv"
    for header in ("name,label", "id,genre", "title;year"):  # no track column, no label column, neither
        path.write_text(f"{header}\n{one},x\n")
        columns = re.escape(str(sorted(header.replace(";", ",").split(","))))
        with pytest.raises(LabelError, match=f"needs an id, path or file column and a 'mood' or 'label' column; "
                                             f"it has {columns}"):
            read_label_csv(store, path, "mood")
    for header, rows, message in (("id,label,note", f"{one}\n", "labels.csv:2: 1 cells where the header has 3"),
                                  ("id,label", f'{one},"x"y\n', "labels.csv:2: not valid CSV")):  # quote mid-cell
        path.write_text(f"{header}\n{rows}")
        with pytest.raises(LabelError, match=message):
            read_label_csv(store, path, "label")
    path.write_text(f"id,label\n{one},x\n" + "".join(f"{999 + i},x\n" for i in range(3)))  # (none known: refused)
    assert read_label_csv(store, path, "label").note(shown=3).endswith("line 5 '1001'")  # all 3 named: no '...'
    assert read_label_csv(store, path, "label").note(shown=2).endswith("line 4 '1000', ...")
    two = sorted(t.id for t in store.tracks(run))[1]
    path.write_text(f"id,label\n{one},Artist 0\n{two},artist 0 feat. Someone\n")  # one main artist, two spellings
    asked = read_label_csv(store, path, "artist")  # --label artist given: the label column holds artist credits
    assert len(set(asked.labels.values())) == 1 and asked.note() == ""
    default = read_label_csv(store, path, "artist", field_given=False)  # the default field: labels as written
    assert default.labels == {one: "Artist 0", two: "artist 0 feat. Someone"}
    path.write_bytes(b"id,label\n" + f"{one},".encode() + b"caf\xe9\n")  # Latin-1, not UTF-8
    with pytest.raises(LabelError, match="cannot read label file"):
        read_label_csv(store, path, "label")
    path.write_text(f'id,label\n{one},x\n{one},"y\n')
    with pytest.raises(LabelError, match=r"labels.csv:\d+: not valid CSV"):
        read_label_csv(store, path, "label")


def _cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_cli_index_similar_evaluate(synth: tuple[FeatureStore, Run], tmp_path: Path) -> None:
    store, _ = synth
    root = str(store.root)
    runner = CliRunner()
    app = _cli()
    out = runner.invoke(app, ["index", "--layer", "l2", "--store", root, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["kind"] == "flat"
    out = runner.invoke(app, ["similar", "3", "-k", "4", "--store", root, "--json", "--exclude-same-artist"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert len(data["results"]) == 4 and data["why_source"] == "layers"
    assert all(r["artist"] != "Artist 0" and r["id"] != 3 for r in data["results"])
    out = runner.invoke(app, ["evaluate", "--label", "artist", "--store", root, "--plot", str(tmp_path / "e.png")])
    assert out.exit_code == 0, out.output
    assert "best:" in out.output and (tmp_path / "e.png").exists()


def test_evaluate_titles_name_the_label_file(synth: tuple[FeatureStore, Run], tmp_path: Path) -> None:
    store, _ = synth
    moods = tmp_path / "moods.csv"
    moods.write_text("path,label\n" + "".join(f"/music/artist{a}/track{j}.wav,{'even' if j % 2 == 0 else 'odd'}\n"
                                              for a in range(ARTISTS) for j in range(PER_ARTIST)))
    args = ["evaluate", "--store", str(store.root), "--plot", str(tmp_path / "e.png")]
    tags = CliRunner().invoke(_cli(), args)
    from_file = CliRunner().invoke(_cli(), [*args, "--labels", str(moods)])
    as_json = CliRunner().invoke(_cli(), [*args, "--labels", str(moods), "--json"])
    assert tags.exit_code == from_file.exit_code == as_json.exit_code == 0, tags.output + from_file.output
    assert "synth: same-artist retrieval, 24 tracks, 4 labels," in " ".join(tags.output.split())  # one copy out
    said = " ".join(from_file.output.split())
    assert "synth: same-label (moods.csv) retrieval, 24 tracks, 2 labels," in said and "same-artist" not in said
    assert json.loads(as_json.stdout)["labels_from"] == "moods.csv"


def test_a_label_file_run_does_not_overwrite_the_tag_label_runs_plot(synth: tuple[FeatureStore, Run],
                                                                      tmp_path: Path) -> None:
    """Both wrote STORE/reports/evaluate-MODEL-artist.png: the label file's plot replaced the tag run's."""
    store, run = synth
    moods = tmp_path / "moods.csv"
    moods.write_text("path,label\n" + "".join(f"/music/artist{a}/track{j}.wav,{'even' if j % 2 == 0 else 'odd'}\n"
                                              for a in range(ARTISTS) for j in range(PER_ARTIST)))
    args = ["evaluate", "--store", str(store.root)]
    tags = CliRunner().invoke(_cli(), [*args, "--json"])
    from_file = CliRunner().invoke(_cli(), [*args, "--labels", str(moods), "--json"])
    table = CliRunner().invoke(_cli(), [*args, "--labels", str(moods)])
    assert tags.exit_code == from_file.exit_code == table.exit_code == 0, tags.output + from_file.output
    tag_png, file_png = (Path(json.loads(out.stdout)["plot"]) for out in (tags, from_file))
    assert tag_png.parent == file_png.parent == store.root / "reports"
    assert tag_png.name == f"evaluate-synth-run{run.id}-artist.png" and "moods" in file_png.name and tag_png != file_png
    assert tag_png.is_file() and file_png.is_file()
    assert f"plot -> {file_png}" in "".join(table.output.split("\n")), table.output


def test_fused_searches_say_how_many_tracks_they_leave_out(synth: tuple[FeatureStore, Run]) -> None:
    """Tracks extracted after `mess fuse apply` have no fused vector: --fused answers and indexes used to leave
    them out without a word."""
    store, run = synth
    ids, l2 = store.layer_matrix(run, "l2")
    store.write_derived(run, "fused", _hashes(store, ids), l2, {"note": "l2"})
    rng = np.random.default_rng(5)
    for j in range(3):
        _add_track(store, run, f"/music/late/{j}.wav", f"hash-late-{j}", _vectors(rng, store.centres, j), "Late", "L")
    app, root = _cli(), str(store.root)
    similar = CliRunner().invoke(app, ["similar", "3", "-k", "40", "--fused", "--store", root, "--json"])
    index = CliRunner().invoke(app, ["index", "--fused", "--store", root, "--json"])
    assert similar.exit_code == index.exit_code == 0, similar.output + index.output
    data = json.loads(similar.stdout)
    assert data["tracks_without_fused_vectors"] == 3 and len(data["results"]) == len(set(ids.tolist())) - 1
    assert json.loads(index.stdout)["tracks_without_fused_vectors"] == 3
    table = CliRunner().invoke(app, ["similar", "3", "--fused", "--store", root])
    assert "3 tracks have no fused vectors yet" in " ".join(table.output.split())


@pytest.mark.parametrize("args, message", [
    (["similar", "999"], "unknown track"),
    (["similar", "1", "--layer", "zzz"], "unknown layer"),
    (["similar", "1", "--layer", " 1"], "unknown layer ' 1'; synth has l0, l1, l2"),  # a typo is not layer 1 ...
    (["similar", "1", "--layer", "\u0661"], "unknown layer '\u0661'"),  # ... nor an Arabic-Indic one
    (["similar", "1", "--layer", "1_0"], "unknown layer '1_0'"),  # nor layer 10 (out of range)
    (["similar", "1", "--hubness", "magic"], "unknown hubness"),
    (["similar", "1", "--aspect", "timbre"], "mess probe"),
    (["index", "--kind", "lsh"], "unknown index kind"),
    (["evaluate", "--label", "mood"], "unknown label"),
    (["evaluate", "--labels", "/nonexistent.csv"], "no such label file"),
    (["evaluate", "--norm", "bogus"], "unknown normalisation"),
    (["similar", "1", "--model", "mert-v1-95m"], "no vectors for model"),
])
def test_cli_bad_input_is_one_clean_line(synth: tuple[FeatureStore, Run], args: list[str], message: str) -> None:
    store, _ = synth
    out = CliRunner().invoke(_cli(), [*args, "--store", str(store.root)])
    assert out.exit_code == 1
    assert message in out.output and "Traceback" not in out.output
    assert out.exception is None or isinstance(out.exception, SystemExit)


def test_cli_missing_store(tmp_path: Path) -> None:
    out = CliRunner().invoke(_cli(), ["similar", "1", "--store", str(tmp_path / "none")])
    assert out.exit_code == 1 and "no feature store" in out.output


def test_an_ensembles_why_groups_hold_the_same_third_of_each_member(tmp_path: Path) -> None:
    """Without a probe, "why" splits a deep model's layers into early/middle/late thirds; for an ensemble
    (layers 'msd.x', 'mtt.x') each group holds that third of every member, not a slice across members."""
    from mess.search.query import aspect_layers

    names = tuple(f"{m}.l{i}" for m in ("msd", "mtt") for i in range(4))
    store = FeatureStore(tmp_path / "store")
    try:
        run = store.ensure_run(run_key(ModelInfo("pair", "r1", 16000, names, (2,) * 8), WindowPolicy()))
        source, groups = aspect_layers(store, run)
        with_timbre = store.ensure_run(run_key(ModelInfo("pair+", "r1", 16000, (*names, "timbre"), (2,) * 9),
                                               WindowPolicy()))
        _, beside = aspect_layers(store, with_timbre)
        single = store.ensure_run(run_key(ModelInfo("deep", "r1", 16000, names[:4] + ("x", "y", "z"), (2,) * 7),
                                          WindowPolicy()))
        _, plain = aspect_layers(store, single)
        six = store.ensure_run(run_key(ModelInfo("six", "r1", 16000, names[:6], (2,) * 6), WindowPolicy()))
        _, each = aspect_layers(store, six)
        uneven = (*names[:4], *names[4:7])  # members of 4 and 3 layers: not an ensemble of equal members
        _, split = aspect_layers(store, store.ensure_run(run_key(ModelInfo("uneven", "r1", 16000, uneven, (2,) * 7),
                                                                            WindowPolicy())))
        trio = tuple(f"{m}.l{i}" for m in ("a", "b", "c") for i in range(3))  # three members of three layers
        _, thirds = aspect_layers(store, store.ensure_run(run_key(ModelInfo("trio", "r1", 16000, trio, (2,) * 9),
                                                                            WindowPolicy())))
    finally:
        store.close()
    assert source == "layers"
    assert {g: s.name for g, s in groups.items()} == {
        "early (l0-l1)": "msd.l0+msd.l1+mtt.l0+mtt.l1", "middle (l2-l2)": "msd.l2+mtt.l2",
        "late (l3-l3)": "msd.l3+mtt.l3"}
    # a layer beside the members (the default musicnn's timbre layer) is evidence of its own
    assert {g: (s.kind, s.name) for g, s in beside.items()} == {
        **{g: ("group", s.name) for g, s in groups.items()}, "timbre": ("layer", "timbre")}
    assert [s.name for s in plain.values()] == ["msd.l0+msd.l1+msd.l2", "msd.l3+x", "y+z"]  # one member: contiguous
    assert each == {name: VectorSpec("layer", name) for name in names[:6]}  # at most 6 layers: each its own
    assert [s.name for s in thirds.values()] == ["a.l0+b.l0+c.l0", "a.l1+b.l1+c.l1", "a.l2+b.l2+c.l2"]
    assert [s.name for s in split.values()] == ["msd.l0+msd.l1+msd.l2", "msd.l3+mtt.l0", "mtt.l1+mtt.l2"]


def test_a_track_without_vectors_of_the_model_is_named_in_plain_words(synth: tuple[FeatureStore, Run]) -> None:
    from mess.search.query import collection_query

    store, run = synth
    tid = store.upsert_track(Path("/music/other/only-dsp.wav"), "hash-elsewhere", 1, 0.0, {}, {"title": "Lone"})
    advice = "has no vectors of synth yet; run `mess extract /music/other --model synth` first"
    with pytest.raises(StoreError, match=advice):
        similar_tracks(store, run, collection_query(store, tid), k=3)  # it said "has no all vectors for synth"


def test_evaluation_groups_artist_spellings_as_the_artist_commands_do(synth: tuple[FeatureStore, Run]) -> None:
    store, run = synth
    before = evaluate(store, run, "artist", k=5)
    for j, credit in ((0, "ARTIST 1"), (1, "Artist 1 feat. Guest"), (2, "artist 1")):  # one artist, three spellings
        store.upsert_track(Path(f"/music/artist1/track{j}.wav"), f"hash-1-{j}", 1, 0.0, {"duration": 10.0},
                           {"artist": credit, "album": None, "title": f"Track {j}", "genre": None, "composer": None})
    after = evaluate(store, run, "artist", k=5)
    assert after.n_classes == before.n_classes  # was 3 more classes, and same-artist hits scored as misses
    assert after.best().scores.map == pytest.approx(before.best().scores.map)


def test_artist_labels_from_a_csv_group_spellings_as_artist_tags_do(synth: tuple[FeatureStore, Run],
                                                                     tmp_path: Path) -> None:
    """A label file's 'ARTIST 1' and 'Artist 1 feat. Guest' were two more artists (and two rows of one track
    spelled twice a conflict), while the same spellings as tags are one artist."""
    store, run = synth
    spell = {0: "ARTIST 1", 1: "Artist 1 feat. Guest", 2: "artist 1"}
    rows = [f"/music/artist{a}/track{j}.wav,{spell.get(j, 'Artist 1') if a == 1 else f'Artist {a}'}"
            for a in range(ARTISTS) for j in range(PER_ARTIST)]
    labels_csv = tmp_path / "artists.csv"
    labels_csv.write_text("path,artist\n" + "\n".join(rows) + "\n/music/artist1/track0.wav,Artist 1\n")
    labels = read_label_csv(store, labels_csv, "artist").labels
    from_tags = track_labels(store.tracks(run), "artist")
    assert len(labels) == ARTISTS * PER_ARTIST and labels == {t: from_tags[t] for t in labels}
    assert evaluate(store, run, "artist", k=5, labels=labels).n_classes == ARTISTS


def test_evaluate_measures_the_ranking_similar_gives_when_some_tracks_are_unlabelled(
        synth: tuple[FeatureStore, Run]) -> None:
    """Query expansion took its neighbours from the labelled tracks only, `mess similar` from all of them.

    The copy of track 1 loses its tags too: its vectors are track 1's, so the two tie in every ranking, and which comes
    first was left to the rounding of the BLAS kernel; with OpenBLAS's AVX2 (Haswell) kernels evaluate and similar
    ordered them apart (mAP 0.30920 against 0.30966: failed), with the AVX-512 ones alike."""
    from mess.search.metrics import average_precision
    from mess.search.query import collection_query

    store, run = synth
    for j in range(3):  # three tracks of artist 2 lose their tags: not queries, not ranked, still neighbours
        store.upsert_track(Path(f"/music/artist2/track{j}.wav"), f"hash-2-{j}", 1, 0.0, {"duration": 10.0},
                           {"artist": None, "album": None, "title": f"Track {j}", "genre": None, "composer": None})
    store.upsert_track(Path("/music/copies/track0.wav"), "hash-0-0", 1, 0.0, {"duration": 10.0},
                       {"artist": None, "album": None, "title": "Copy", "genre": None, "composer": None})
    ev = evaluate(store, run, "artist", k=5)
    labels = {t.id: t.artist for t in store.tracks(run) if t.artist}
    aps = []
    for q, label in labels.items():
        if sum(v == label for v in labels.values()) < 2:
            continue
        ranked = similar_tracks(store, run, collection_query(store, q), k=len(labels) + 5, layer="l0")  # noise:
        rel = np.array([[labels[n.track.id] == label for n in ranked if n.track.id in labels]], dtype=float)
        aps.append(average_precision(rel)[0])  # where expansion's neighbours change the order most
    assert {s.name: s for s in ev.sets}["l0"].scores.map == pytest.approx(np.mean(aps))


def test_a_saved_index_of_other_vectors_for_the_same_tracks_is_never_used(synth: tuple[FeatureStore, Run]) -> None:
    """An index was current when it held the same track ids and contents: after `mess fuse apply` wrote new fused
    vectors, or a probe gave an aspect another layer, `similar` searched the old vectors with the new query's
    (the aspect's answer matched neither layer) and `mess index` called the old index unchanged."""
    store, run = synth
    app, root = _cli(), str(store.root)
    ids, l2 = store.layer_matrix(run, "l2")
    store.write_derived(run, "fused", _hashes(store, ids), l2, {"note": "l2"})
    store.set_aspect_map(run, [("timbre", "l2", 0.9, 0.1)])
    for args in (["--fused"], ["--aspect", "timbre"]):
        out = CliRunner().invoke(app, ["index", *args, "--rerank", "--store", root, "--json"])
        assert json.loads(out.stdout)["mode"] == "built"

    def similar(*args: str) -> list[int]:
        out = CliRunner().invoke(app, ["similar", "3", "-k", "6", *args, "--store", root, "--json"])
        assert out.exit_code == 0, out.output
        return [r["id"] for r in json.loads(out.stdout)["results"]]

    _, l0 = store.layer_matrix(run, "l0")
    store.write_derived(run, "fused", _hashes(store, ids), np.concatenate([l0, l0], axis=1), {"note": "l0 twice"})
    store.set_aspect_map(run, [("timbre", "l1", 0.9, 0.1)])
    assert similar("--aspect", "timbre") == similar("--layer", "l1")
    fused = similar("--fused")
    # both indexes, their augmentation files and re-ranking data (--rerank): what `mess check --repair` deletes
    assert len(stale_indexes(store)) == 6
    for path in store.indexes_dir.glob("*"):
        path.unlink()
    assert fused == similar("--fused")  # as the exact search without an index
    build_index(store, load_vectors(store, run, VectorSpec.from_options(fused=True)))
    store.write_derived(run, "fused", _hashes(store, ids), l2, {"note": "l2 again"})
    assert build_index(store, load_vectors(store, run, VectorSpec.from_options(fused=True)))[1].mode == "built"


@pytest.mark.parametrize("text", ["[]", "null", "7", '{"spec": 5}'])
def test_an_index_description_of_the_wrong_shape_is_an_index_out_of_date(synth: tuple[FeatureStore, Run],
                                                                          text: str) -> None:
    """An index's JSON that parsed to something other than an object (or a malformed one) crashed `similar`, `index`
    and `mess check` itself with an AttributeError."""
    from mess.search.health import check_store

    store, _ = synth
    app, root = _cli(), str(store.root)
    assert CliRunner().invoke(app, ["index", "--store", root]).exit_code == 0
    path = next(store.indexes_dir.glob("*.json"))
    path.write_text(json.dumps({**json.loads(path.read_text()), **json.loads(text)}) if text.startswith("{") else text)
    assert check_store(store.root).stale == [path.with_suffix(".faiss")]
    similar = CliRunner().invoke(app, ["similar", "3", "--store", root, "--json"])
    assert similar.exit_code == 0 and len(json.loads(similar.stdout)["results"]) == 10, similar.output
    index = CliRunner().invoke(app, ["index", "--store", root, "--json"])
    assert index.exit_code == 0 and json.loads(index.stdout)["mode"] == "built", index.output
    assert check_store(store.root, fix=True).stale == []


def test_check_names_an_index_lacking_tracks_added_since_and_the_command_that_adds_them(
        synth: tuple[FeatureStore, Run]) -> None:
    """A saved index that lacked tracks added since it was built was not flagged by `mess check` (its tracks were all
    current): every search passed it by for an exact index built in memory, without a word. Check now names it, how
    many tracks it lacks and the `mess index` command that adds them; an index whose vector set lacks the new tracks
    too (fused vectors written before they came) is not flagged."""
    store, run = synth
    root = str(store.root)
    ids, l2 = store.layer_matrix(run, "l2")
    store.write_derived(run, "fused", _hashes(store, ids), l2, {"note": "l2"})
    for args in (["--layer", "l1", "--norm", "center"], ["--fused"], []):
        done = CliRunner().invoke(_cli(), ["index", *args, "--no-rerank", "--store", root])
        assert done.exit_code == 0, done.output
    rng = np.random.default_rng(3)
    for j in range(3):
        _add_track(store, run, f"/music/new/track{j}.wav", f"hash-new-{j}", _vectors(rng, store.centres, 1),
                   "Artist 1", f"New {j}")
    tracks = len(store.tracks(run))

    def check(*args: str) -> subprocess.CompletedProcess:
        return mess_here("check", *args, "--store", root, env={"COLUMNS": "300"})

    said = check()
    lines = [line for line in said.stdout.splitlines() if line.startswith("behind-index:")]
    assert said.returncode == 0 and len(lines) == 2, said.stdout
    commands = []
    options = (" --norm power", " --layer l1 --norm center")
    for line, name, option in zip(lines, ("all-power", "layer-l1-center"), options, strict=True):
        assert line == (f"behind-index: run{run.id}-{name}.faiss lacks 3 of its {tracks} tracks (added since it was "
                        "built), so every search builds an exact index in memory instead; "
                        f"`mess index --model synth{option}` adds them"), said.stdout
        commands.append(line.split("`")[1].split()[1:])
    assert said.stdout.splitlines()[-1].endswith("2 index(es) lack tracks added since they were built: `mess index` "
                                                 "(as named above) adds them"), said.stdout
    problems = json.loads(check("--json").stdout)["problems"]
    assert [p["kind"] for p in problems] == ["behind-index", "behind-index"]
    for command in commands:  # what the message says to run
        done = mess_here(*command, "--store", root)
        assert done.returncode == 0 and "updated" in done.stdout, done.stdout + done.stderr
    assert check().stdout.strip().endswith(": ok")


def test_a_file_where_the_indexes_folder_belongs_is_named_and_moved_aside(synth: tuple[FeatureStore, Run]) -> None:
    """A file named STORE/indexes: `mess check` said ok, `--repair` left it, and `mess index` built the index and then
    ended in "indexes: File exists". Check names it, the repair moves it aside (nothing deleted), index says so first.
    """
    store, _ = synth
    root, blocker = str(store.root), store.root / "indexes"
    blocker.write_text("not a folder")

    def mess(*args: str) -> subprocess.CompletedProcess:
        return mess_here(*args, "--store", root, env={"COLUMNS": "300"})

    index = mess("index")
    assert index.returncode == 1 and index.stderr.strip() == (
        f"error: cannot save the index: {blocker} is a file, not the folder of saved indexes; `mess check --repair` "
        "moves it aside"), index.stderr
    check = mess("check")
    assert check.returncode == 0 and check.stdout.splitlines() == [
        "not-a-folder: indexes is a file, not the folder of saved indexes, so `mess index` cannot save one; `mess "
        "check --repair` moves it aside",
        f"{root}: whole, no index can be saved: `mess check --repair` moves the file aside"], check.stdout
    repair = mess("check", "--repair")
    moved = [p for p in store.root.iterdir() if p.name.startswith("indexes.") and p.name.endswith(".not-the-indexes")]
    assert repair.returncode == 0 and len(moved) == 1 and moved[0].read_text() == "not a folder", repair.stdout
    assert f"repaired: moved indexes (a file) aside to {moved[0].name}; delete it when you no longer need it" \
        in repair.stdout.splitlines() and repair.stdout.strip().endswith(": ok"), repair.stdout
    assert mess("index").returncode == 0 and blocker.is_dir() and mess("check").stdout.strip().endswith(": ok")


def test_evaluate_says_when_too_few_queries_back_its_best_vectors(synth: tuple[FeatureStore, Run],
                                                                   tmp_path: Path) -> None:
    """11 queries over 5 game labels printed 'best: rhythm (mAP 0.561)' with nothing saying so few queries cannot
    tell the vector sets apart (fusion's report says it of its held-out split)."""
    store, run = synth
    args = ["evaluate", "--store", str(store.root), "--plot", str(tmp_path / "e.png")]
    few = CliRunner().invoke(_cli(), args, env={"COLUMNS": "200"})
    assert few.exit_code == 0, few.output
    assert ("caveat: 24 queries over 4 labels: too few to conclude which vectors retrieve best (want >= 50 queries "
            "and >= 5 labels)") in few.output
    rng = np.random.default_rng(1)
    for a in range(ARTISTS + 1):  # 70 labelled tracks over 5 artists
        for j in range(PER_ARTIST, PER_ARTIST + (10 if a < ARTISTS else 6)):
            _add_track(store, run, f"/music/artist{a}/track{j}.wav", f"hash-{a}-{j}",
                       _vectors(rng, store.centres, a % ARTISTS), f"Artist {a}", f"Track {j}")
    enough = CliRunner().invoke(_cli(), [*args, "--json"])
    assert enough.exit_code == 0, enough.output
    data = json.loads(enough.stdout)
    assert data["n_queries"] == 70 and data["caveat"] is None
    assert json.loads(CliRunner().invoke(_cli(), args[:3] + ["--json"]).stdout)["caveat"] is None


def test_evaluation_scores_and_hubness_are_those_of_the_cosine_rankings_computed_here(
        synth: tuple[FeatureStore, Run]) -> None:
    """mAP against scikit-learn, and the k-occurrence of each query's k nearest other tracks (itself left out),
    for every layer and all layers, from the unit vectors ranked here."""
    from scipy.stats import skew
    from sklearn.metrics import average_precision_score

    from mess.audio.names import name_key
    from mess.search.evaluate import track_labels

    store, run = synth
    tracks = store.tracks(run)
    labels = {i: a for i, a in track_labels(tracks, "artist").items() if a != name_key("someone else")}  # no copy
    k = 5
    ev = evaluate(store, run, "artist", k=k, labels=labels, expand=0)
    assert [s.name for s in ev.sets] == ["l0", "l1", "l2", "all layers"]
    for s in ev.sets:
        spec = VectorSpec.from_options(layer=None if s.kind == "all" else s.name)
        vs = load_vectors(store, run, spec, tracks)
        keep = np.array([int(i) in labels for i in vs.ids])
        unit, lab = vs.unit()[keep], np.array([labels[int(i)] for i in vs.ids[keep]])
        sims = unit @ unit.T
        np.fill_diagonal(sims, -np.inf)
        others = ~np.eye(len(lab), dtype=bool)
        aps = [average_precision_score(lab[others[q]] == lab[q], sims[q][others[q]]) for q in range(len(lab))]
        assert s.scores.map == pytest.approx(np.mean(aps), abs=1e-6), s.name
        top = np.argsort(-sims, axis=1)[:, :k]
        assert not (top == np.arange(len(lab))[:, None]).any()
        occ = np.bincount(top.ravel(), minlength=len(lab))
        assert s.hub.max_occurrence == occ.max(), s.name
        assert s.hub.skewness == pytest.approx(skew(occ) if occ.std() > 0 else 0.0, abs=1e-9), s.name  # even: 0
        assert s.hub.antihub_fraction == pytest.approx((occ == 0).mean()), s.name


def test_hubness_reranking_brings_in_tracks_beyond_the_k_nearest_cosines(synth: tuple[FeatureStore, Run]) -> None:
    """With a small k the re-ranked answer is the best k by CSLS over the whole collection (computed here), also
    where those are not among the k nearest by cosine: the re-ranking draws on a pool wider than k."""
    store, run = synth
    ids, cos = _brute_force(store, run, ("l1",))
    n = len(ids)
    other = ~np.eye(n, dtype=bool)
    r = np.array([np.sort(cos[i, other[i]])[::-1][:10].mean() for i in range(n)])
    differs = 0
    for k, q in itertools.product((1, 2, 3), range(n)):
        rest = np.flatnonzero(other[q] & (ids != ids[q]))
        csls = 2 * cos[q, rest] - r[q] - r[rest]
        if set(rest[np.argsort(-csls)[:k]]) == set(rest[np.argsort(-cos[q, rest])[:k]]):
            continue
        differs += 1
        results = similar_tracks(store, run, resolve_query(store, str(int(ids[q])), run), k=k, layer="l1",
                                 hubness="csls", expand=0)
        _assert_ranked_as(results, ids[rest], csls, [x.adjusted for x in results])
    assert differs, "no query whose CSLS neighbours differ from its cosine ones"


def test_copies_of_one_recording_get_the_same_why_percentiles(synth: tuple[FeatureStore, Run]) -> None:
    """Two copies of one recording have the same vectors, so "closer than X% of tracks" must say the same of both.
    The percentile compared a result's cosine from one matrix product with the collection's from another, whose
    last bits differ: a copy tied with itself counted below it (on the real soundtracks, one copy "brightness 95%",
    the other 84%, with the same cosine)."""
    store, run = synth
    copy = store.track("/music/copies/track0.wav").id
    compared = 0
    for ref, k in itertools.product(range(2, 7), (3, 4, 5)):  # artist 0, as track 1 and its copy
        query = resolve_query(store, str(ref), run)
        results = {n.track.id: n for n in similar_tracks(store, run, query, k=k, expand=0)}
        if 1 in results and copy in results:
            compared += 1
            assert results[1].why == pytest.approx(results[copy].why, abs=1e-6)
            assert results[1].why_percentile == results[copy].why_percentile, (ref, k)
    assert compared >= 5


def test_evaluate_with_k_beyond_the_collection_never_counts_a_query_as_its_own_neighbour(
        synth: tuple[FeatureStore, Run]) -> None:
    """-k larger than the collection: each query's top-k for the k-occurrence statistics took every track, itself
    included (its own score set to -inf sorts last, but was still taken): N_k counted n - 1 + 1 = n slots per list,
    `hub.k` said 25 of 25 tracks and a track occurred in 25 lists, one of them its own."""
    store, run = synth
    ev = evaluate(store, run, "artist", k=50, compare=True)
    for s in [*ev.sets, *ev.variants]:
        assert s.hub.k == ev.n_tracks - 1, s.name
        assert s.hub.max_occurrence <= ev.n_tracks - 1, s.name


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_an_approximate_index_gives_as_many_tracks_as_asked_for(tmp_path: Path, kind: str) -> None:
    """`mess similar -k 300` through a saved IVF index probed only the lists its tuned breadth names (about 50 tracks
    here), and HNSW as many as its tuned breadth: the answer held those, not 300, without a word. The search now widens
    until it has k tracks (or every list), excluded tracks included in the count."""
    rng = np.random.default_rng(11)
    store = FeatureStore(tmp_path / "store")
    info = ModelInfo("synth", "r1", 16000, ("l0", "l1", "l2"), DIMS)
    run = store.ensure_run(run_key(info, WindowPolicy()))
    centres = [rng.standard_normal((20, d)) * 3 for d in DIMS[1:]]
    for i in range(600):
        _add_track(store, run, f"/music/a{i % 20}/t{i}.wav", f"hash-{i}", _vectors(rng, centres, i % 20),
                   f"Artist {i % 20}", f"Track {i}")
    vs = load_vectors(store, run, VectorSpec("layer", "l1"))
    _, report = build_index(store, vs, kind)
    assert report.kind == kind and open_index(store, vs).ann.kind == kind  # the saved index answers
    query = resolve_query(store, "1", run)
    for k, same_artist in ((300, False), (599, False), (500, True)):
        results = similar_tracks(store, run, query, k=k, layer="l1", expand=0, exclude_same_artist=same_artist)
        ids = [n.track.id for n in results]
        wanted = min(k, 600 - (30 if same_artist else 1))
        assert len(ids) == len(set(ids)) == wanted and 1 not in ids
    store.close()


_PEAKS = """
import re, sys
from pathlib import Path
import faiss, numpy as np
from mess.search.ann import AnnIndex
def grown(step):  # what this program's resident memory grew by, at its peak, while it ran ``step``
    status = Path("/proc/self/status")
    Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from here
    before = int(re.search(r"VmRSS:\\s+(\\d+) kB", status.read_text()).group(1))
    out = step()
    return out, (int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read_text()).group(1)) - before) * 1024
n, dim = 50_000, 1024
flat = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
x = np.random.default_rng(0).random((n, dim), dtype=np.float32)
flat.add_with_ids(x, np.arange(n))
del x
path = Path(sys.argv[1])
_, saving = grown(lambda: AnnIndex(flat, "flat").save(path))
del flat
(ann, _), loading = grown(lambda: AnnIndex.load(path))
print(ann.ntotal, path.stat().st_size, saving, loading)
"""


def test_a_saved_index_is_written_and_read_holding_it_once_in_memory(tmp_path: Path) -> None:
    """`mess index` serialised the index and copied that to bytes before writing it, and every `mess similar` and
    `mess check` read it whole, then deserialised it: each held it three times at its peak (30 GB for the 10 GB IVF
    index of a million tracks of the default model). Written and read through to the file, the index is held once."""
    out = subprocess.run([sys.executable, "-c", _PEAKS, str(tmp_path / "big.faiss")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    loaded, size, saving, loading = map(int, out.stdout.split())
    assert loaded == 50_000 and saving < 0.5 * size and loading < 1.5 * size, (size, saving, loading)


_CHECK_PEAK = """
import re, sys
from pathlib import Path
from mess.search.index import stale_indexes
from mess.store import FeatureStore
status = Path("/proc/self/status")
store = FeatureStore(Path(sys.argv[1]), readonly=True)
Path("/proc/self/clear_refs").write_text("5")  # this program's peak starts again from here
before = int(re.search(r"VmRSS:\\s+(\\d+) kB", status.read_text()).group(1))
stale = stale_indexes(store)
print(len(stale), (int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read_text()).group(1)) - before) * 1024)
"""


def test_check_compares_a_saved_indexs_tracks_without_reading_the_index_into_memory(
        synth: tuple[FeatureStore, Run]) -> None:
    """`mess check` loaded every saved index whole to compare the track ids beside it with the store's: a 10 GB IVF
    index needed 10 GB (30 before the index was read through to faiss) of a check that only sums its file."""
    import faiss

    from mess.search.ann import AnnIndex

    store, run = synth
    vs = load_vectors(store, run, VectorSpec("layer", "l1"))
    n, dim = 50_000, 1024
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    flat.add_with_ids(np.random.default_rng(0).random((n, dim), dtype=np.float32), np.arange(n))
    path = index_path(store, run, vs.spec)  # tracks the store never had: out of date
    CollectionIndex(AnnIndex(flat, "flat"), vs.prep, np.arange(n), np.array([f"h{i}" for i in range(n)]), vs.spec,
                    run.id, source=vs.source).save(path)
    del flat
    out = subprocess.run([sys.executable, "-c", _CHECK_PEAK, str(store.root)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    stale, grown = map(int, out.stdout.split())
    assert stale == 1 and grown < 0.3 * path.stat().st_size, (grown, path.stat().st_size)


def test_check_in_process_names_behind_stale_and_orphaned_indexes_and_repairs_each(
        synth: tuple[FeatureStore, Run]) -> None:
    """What `mess check` reports of saved indexes, read in this process: none at first; an index lacking tracks added
    since (not the fused one, whose set lacks them too); an index of fused vectors written again (stale), the sidecars
    of an index file deleted by hand (stale), an aspect map probed on fewer tracks; and what `--repair` deletes."""
    from mess.search.health import behind_message, check_store
    from mess.search.index import index_states

    store, run = synth
    ids, l2 = store.layer_matrix(run, "l2")
    store.write_derived(run, "fused", _hashes(store, ids), l2, {"note": "l2"})
    specs = [VectorSpec("all"), VectorSpec("fused"), VectorSpec("layer", "l1", "center")]
    paths = [build_index(store, load_vectors(store, run, spec), rerank=False)[1].path for spec in specs]
    assert [p.name for p in paths] == [f"run{run.id}-all-power.faiss", f"run{run.id}-fused-none.faiss",
                                       f"run{run.id}-layer-l1-center.faiss"]
    assert index_states(store) == ([], [])
    health = check_store(store.root)
    assert (health.problems, health.stale, health.behind, health.repaired) == ([], [], [], [])
    assert health.to_dict() == {"ok": True, "repaired": [], "problems": []}

    rng = np.random.default_rng(3)
    for j in range(3):
        _add_track(store, run, f"/music/new/track{j}.wav", f"hash-new-{j}", _vectors(rng, store.centres, 1),
                   "Artist 1", f"New {j}")
    tracks = len(store.tracks(run))
    health = check_store(store.root)
    assert health.problems == [] and health.stale == [] and health.damaged == []
    assert [(b.path, b.run.id, b.spec, b.missing, b.tracks) for b in health.behind] == [
        (paths[0], run.id, specs[0], 3, tracks), (paths[2], run.id, specs[2], 3, tracks)]
    for b, option in zip(health.behind, ("", " --layer l1"), strict=True):
        assert f"lacks 3 of its {tracks} tracks" in behind_message(b)
        assert f"`mess index --model synth{option} --norm {b.spec.norm}` adds them" in behind_message(b)
    assert health.to_dict() == {"ok": True, "repaired": [], "problems": [
        {"kind": "behind-index", "run": run.id, "damage": False, "message": behind_message(b)} for b in health.behind]}

    ids, l1 = store.layer_matrix(run, "l1")  # fused vectors applied again (for every track now): a new source
    store.write_derived(run, "fused", _hashes(store, ids), l1, {"note": "l1"})
    paths[2].unlink()  # an index file deleted by hand: its sidecars are left
    store.set_aspect_map(run, [("timbre", "l1", 0.9, 0.1)], n_tracks=tracks - 1)
    health = check_store(store.root)
    orphans = [paths[2].with_suffix(".json"), paths[2].with_suffix(".npz")]
    assert health.stale == [paths[1], *orphans]
    assert [b.path for b in health.behind] == [paths[0]]
    assert [(p.kind, p.run_id, p.damage) for p in health.problems] == [("stale-aspect-map", run.id, False)]
    assert health.problems[0].message.startswith(f"synth (run {run.id}): aspect map from a probe of {tracks - 1}")
    assert [p["kind"] for p in health.to_dict()["problems"]] == ["stale-aspect-map", "stale-index", "stale-index",
                                                                  "stale-index", "behind-index"]
    assert health.to_dict()["ok"] and [p for p in health.to_dict()["problems"] if p["kind"] == "stale-index"] == [
        {"kind": "stale-index", "run": None, "damage": False, "message": f"{p.name} is out of date"}
        for p in health.stale]

    repaired = check_store(store.root, fix=True)
    assert repaired.repaired == [f"deleted stale index {p.name}" for p in health.stale]
    assert repaired.stale == [] and [b.path for b in repaired.behind] == [paths[0]]
    assert sorted(p.name for p in store.indexes_dir.iterdir()) == sorted(
        paths[0].with_suffix(s).name for s in (".faiss", ".json", ".npz"))
    # damaged windows: the store is to be repaired first (which may make the index stale), so it is not named behind
    with (store.root / f"runs/{run.id}/segment/001.f16").open("r+b") as f:
        value = np.frombuffer(f.read(2), "<f2")[0]
        f.seek(0)
        f.write(np.array([value + 1], "<f2").tobytes())
    damaged = check_store(store.root)
    assert [(p.kind, p.damage) for p in damaged.problems] == [("checksum", True), ("stale-aspect-map", False)]
    assert damaged.behind == [] and damaged.stale == [] and not damaged.to_dict()["ok"]
    store.remove_tracks(["/music/artist0/track0.wav"])  # a track the index holds is gone: the index is stale
    assert check_store(store.root).stale == [paths[0]]
    rows = store.root / f"runs/{run.id}/track/002.f16"  # cut short: what opening a store refuses, a check names
    rows.write_bytes(rows.read_bytes()[:-2])
    assert "short-file" in [p.kind for p in check_store(store.root).problems]
    # a corrupt catalog is the one thing named: nothing read through it is trusted, nor repaired
    store.close()
    with sqlite3.connect(store.root / "catalog.sqlite") as conn:  # an index that no longer matches its table
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute("UPDATE sqlite_master SET sql=replace(sql, 'content_hash)', 'size)') WHERE name='tracks_hash'")
    paths[0].unlink()
    for fix in (False, True):
        corrupt = check_store(store.root, fix=fix)
        assert [p.kind for p in corrupt.problems] == ["catalog"] and (corrupt.stale, corrupt.behind) == ([], [])
    for fix in (False, True):
        with pytest.raises(StoreError):  # a check makes no store where there is none
            check_store(store.root.parent / "nothing", fix=fix)
    assert not (store.root.parent / "nothing").exists()


def test_what_stands_where_an_index_or_the_indexes_folder_belongs_is_named_and_moved_aside(
        synth: tuple[FeatureStore, Run]) -> None:
    """A folder where one of an index's files belongs is renamed aside by the deletion, nothing in it deleted; a file
    or a broken link where the folder of indexes belongs is named by the check and moved aside by the repair."""
    from mess.search.health import check_store
    from mess.search.index import delete_index, indexes_blocked

    store, run = synth
    assert indexes_blocked(store) is None  # no folder yet: the first save makes it
    path = build_index(store, load_vectors(store, run, VectorSpec("layer", "l1")), rerank=False)[1].path
    assert indexes_blocked(store) is None
    for suffix in (".json", ".npz"):
        path.with_suffix(suffix).unlink()
        path.with_suffix(suffix).mkdir()
        (path.with_suffix(suffix) / "kept").write_text(suffix)
    said = delete_index(path)
    aside = sorted(p for p in store.indexes_dir.iterdir() if p.name.endswith(".not-an-index"))
    assert [p.name.split(".")[0] for p in aside] == [path.stem] * 2
    assert [(p / "kept").read_text() for p in aside] == [".json", ".npz"]
    assert said == (f"deleted stale index {path.name}; moved the folders standing in its place aside to "
                    f"{', '.join(p.name for p in aside)}")
    assert not path.exists() and delete_index(path) == f"deleted stale index {path.name}"
    path.with_suffix(".json").mkdir()
    assert delete_index(path).endswith("; moved the folder standing in its place aside to "
                                       f"{next(p.name for p in store.indexes_dir.iterdir() if p not in aside)}")

    elsewhere = store.root.parent / "kept-indexes"
    store.indexes_dir.rename(elsewhere)
    store.indexes_dir.symlink_to(elsewhere)  # a link to a folder is a folder
    assert indexes_blocked(store) is None and check_store(store.root).problems == []
    store.indexes_dir.unlink()
    for blocker, odd in (("link", "a broken symbolic link"), ("file", "a file")):
        if blocker == "link":
            store.indexes_dir.symlink_to(store.root.parent / "gone")
        else:
            store.indexes_dir.write_text("not a folder")
        assert indexes_blocked(store) == odd
        health = check_store(store.root)
        assert [(p.kind, p.run_id, p.damage) for p in health.problems] == [("not-a-folder", None, False)]
        assert health.problems[0].message.startswith(f"indexes is {odd}, not the folder of saved indexes")
        assert health.stale == [] and health.to_dict()["ok"]
        repaired = check_store(store.root, fix=True)
        moved = [p for p in store.root.iterdir() if p.name.endswith(".not-the-indexes")]
        assert len(moved) == 1 and repaired.repaired == [
            f"moved indexes ({odd}) aside to {moved[0].name}; delete it when you no longer need it"]
        assert repaired.problems == [] and not store.indexes_dir.exists() and not store.indexes_dir.is_symlink()
        moved[0].unlink()
    # a folder where the write lock belongs (no writer could take the lock) and the indexes' file: both moved aside
    lock = store.root / "write.lock"
    lock.unlink(missing_ok=True)
    lock.mkdir()
    store.indexes_dir.write_text("not a folder")
    repaired = check_store(store.root, fix=True)
    assert [line.split(" aside to ")[0] for line in repaired.repaired] == ["moved write.lock (a folder)",
                                                                          "moved indexes (a file)"]
    assert repaired.problems == [] and lock.is_file()


def test_listener_words_and_a_results_reasons_name_its_most_unusual_aspects() -> None:
    """Aspects read as a listener says them, tone colour first; layer groups as "early layers"; a result's reasons are
    its aspects of highest percentile, in words, and its JSON rounds what it shows."""
    from mess.search.query import Neighbour, listener_words
    from mess.store import Track

    assert listener_words("brightness/dynamics/timbre") == "tone colour, brightness and loudness"
    assert listener_words("harmony/rhythm") == "harmony and rhythm"
    assert listener_words("texture") == "texture"
    assert listener_words("dynamics") == "loudness"
    assert listener_words("early (cnn1-cnn3)") == "early layers"
    assert listener_words("late (l3-l3)") == "late layers"
    assert listener_words("penultimate") == "penultimate"
    assert listener_words("timbre/tempo") == "timbre/tempo"  # one aspect unknown: named as stored
    track = Track(7, "/music/a.flac", "h", 10.0, "Artist", "Album", "Title", None, None)
    n = Neighbour(track, 0.123456789, why={"timbre": 0.81234567, "rhythm": 0.5, "l0": 0.25},
                  why_percentile={"timbre": 0.97436, "rhythm": 0.5, "l0": 0.996}, adjusted=0.987654321)
    assert n.reasons() == ["l0", "timbre"] and n.reasons(3) == ["l0", "timbre", "rhythm"] and n.reasons(1) == ["l0"]
    assert n.reasons_text() == ["l0: closer than 100% of tracks", "tone colour: closer than 97% of tracks"]
    assert n.reasons_text(3)[2] == "rhythm: closer than 50% of tracks"
    assert n.to_dict() == {
        "id": 7, "path": "/music/a.flac", "name": "Artist - Title", "artist": "Artist", "title": "Title",
        "album": "Album", "score": 0.123457, "duplicate": False, "same_recording": None, "adjusted": 0.987654,
        "why": {"timbre": 0.8123, "rhythm": 0.5, "l0": 0.25},
        "why_percentile": {"timbre": 0.9744, "rhythm": 0.5, "l0": 0.996}, "reasons": ["l0", "timbre"],
        "reasons_text": ["l0: closer than 100% of tracks", "tone colour: closer than 97% of tracks"]}
    assert Neighbour(track, 0.5).to_dict()["adjusted"] is None and Neighbour(track, 0.5).reasons() == []


def test_why_percentiles_count_the_other_tracks_at_most_as_close_and_exclusions_follow_the_artist(
        synth: tuple[FeatureStore, Run], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each result's percentile in a layer is the share of the collection's other tracks (the query's own left out;
    all of them for a file from outside) whose cosine to the query is at most its own; the same-artist exclusion
    groups credits as `mess artists` does, a composer standing in for a missing artist."""
    from mess.search.query import TrackQuery, _excluded, collection_query

    store, run = synth
    query = resolve_query(store, "/music/artist1/track2.wav", run)
    results = similar_tracks(store, run, query, k=6, layer="l1", expand=0)
    layer_rows = [store.layer_matrix(run, name) for name in ("l0", "l1", "l2")]
    outside = TrackQuery("outside", layers=tuple(m[list(i).index(query.track.id)] + 0.5 for i, m in layer_rows))
    far = similar_tracks(store, run, outside, k=6, layer="l1", expand=0)
    for name in ("l0", "l1", "l2"):
        ids, unit = _unit(store, run, name)
        row = {int(i): r for r, i in enumerate(ids)}
        cos = unit @ unit[row[query.track.id]]
        others = np.delete(cos, row[query.track.id])
        for n in results:
            assert n.why[name] == pytest.approx(float(cos[row[n.track.id]]), abs=1e-5)
            assert n.why_percentile[name] == pytest.approx(np.mean(others <= cos[row[n.track.id]] + 1e-6))
        raw = store.layer_matrix(run, name)[1]
        x = np.asarray(outside.layers[("l0", "l1", "l2").index(name)], dtype=np.float64)
        q = (x - raw.mean(axis=0)) / raw.std(axis=0)
        ext = unit @ (q / np.linalg.norm(q))
        for n in far:
            assert n.why_percentile[name] == pytest.approx(np.mean(ext <= ext[row[n.track.id]] + 1e-6))
        if name == "l1":  # what the outside file was searched by
            assert [n.track.id for n in far] == ids[np.argsort(-ext)[:6]].tolist()
            np.testing.assert_allclose([n.score for n in far], np.sort(ext)[::-1][:6], atol=1e-5)

    import mess.search.query as query_module

    monkeypatch.setattr(query_module, "PERCENTILE_SAMPLE", 10)  # a large collection: counted among a sample of 10
    sampled = similar_tracks(store, run, query, k=6, layer="l1", expand=0)
    assert [n.track.id for n in sampled] == [n.track.id for n in results]
    assert all(abs(10 * p - round(10 * p)) < 1e-9 for n in sampled for p in n.why_percentile.values())
    assert any(n.why_percentile != m.why_percentile for n, m in zip(sampled, results, strict=True))

    by_id = {t.id: t for t in store.tracks(run)}
    artist2 = {t.id for t in by_id.values() if t.artist == "Artist 2"}
    assert _excluded(store.tracks(run), query, False) == {query.track.id}
    assert _excluded(store.tracks(run), None, True) == set()
    assert _excluded(store.tracks(run), TrackQuery("x", artist="artist 2 feat. Someone"), True) == artist2
    assert _excluded(store.tracks(run), TrackQuery("x", artist="Various Artists"), True) == set()
    moved = by_id[5]
    assert _excluded(store.tracks(run), TrackQuery("x", replaces=moved, artist="Nobody"), True) == {5}
    lone = store.upsert_track(Path("/music/lone.wav"), "hash-lone", 1, 0.0, {"duration": 10.0},
                              {"artist": None, "album": None, "title": "Lone", "genre": None, "composer": "Artist 3"})
    layers = _vectors(np.random.default_rng(2), store.centres, 3)
    store.write_vectors(run, [TrackVectors("hash-lone", layers, [v[None] for v in layers], [0.0])])
    artist3 = {t.id for t in store.tracks(run) if "Artist 3" in (t.artist, t.composer)}
    assert lone in artist3 and len(artist3) == PER_ARTIST + 1
    assert _excluded(store.tracks(run), collection_query(store, lone), True) == artist3


def test_an_aspect_map_is_stale_when_probed_on_other_tracks_or_older_than_its_probe_report(
        synth: tuple[FeatureStore, Run]) -> None:
    """`mess check` and answers note an aspect map probed on fewer or other tracks than the run has, one from an older
    mess that recorded no digest, and one older than the probe report beside it; a map of the tracks there are, or no
    map at all, is not stale."""
    from mess.search.query import aspect_layers, stale_aspect_map, weak_aspects
    from mess.store.reports import report_paths

    store, run = synth
    now = len(store.tracks(run))
    assert stale_aspect_map(store, run) is None  # never probed
    entries = [("timbre", "l1", 0.9, 0.1), ("rhythm", "l1", 0.5, 0.1), ("harmony", "l0", 0.01, 0.0)]
    store.set_aspect_map(run, entries, n_tracks=now, probed_at=100.0, tracks_digest=store.tracks_digest(run))
    assert stale_aspect_map(store, run) is None
    assert weak_aspects(store, run) == {"harmony": pytest.approx(0.01)}
    assert weak_aspects(store, run, threshold=0.5) == {"harmony": pytest.approx(0.01)}  # 0.5 itself is encoded
    assert {g: s for g, s in aspect_layers(store, run)[1].items()} == {"rhythm/timbre": VectorSpec("layer", "l1")}
    store.set_aspect_map(run, entries, n_tracks=now - 1, probed_at=100.0, tracks_digest=store.tracks_digest(run))
    assert stale_aspect_map(store, run) == (f"aspect map from a probe of {now - 1} tracks; {now} now: rerun "
                                            "`mess probe --model synth`")
    store.set_aspect_map(run, entries, n_tracks=now, probed_at=100.0)
    assert "recorded no digest of its tracks" in stale_aspect_map(store, run)
    store.set_aspect_map(run, entries, n_tracks=now, probed_at=100.0, tracks_digest="another set")
    assert stale_aspect_map(store, run).startswith(f"aspect map from a probe of other tracks than the {now} there")
    store.set_aspect_map(run, entries, n_tracks=now, probed_at=100.0, tracks_digest=store.tracks_digest(run))
    report = report_paths(store.reports_dir, run.model, run.id, "mlp")["json"]
    report.parent.mkdir(parents=True, exist_ok=True)
    for stamp, stale in ((100.0, False), (99.0, False), (101.0, True)):
        report.write_text(json.dumps({"probed_at": stamp, "aspects": {"timbre": "l1"}}))
        note = stale_aspect_map(store, run)
        assert (note is not None) == stale and (note is None or note.startswith(
            f"the aspect map is from an older probe than the report {report.name}")), (stamp, note)


def test_an_index_saved_after_a_search_is_the_one_the_next_search_opens(synth: tuple[FeatureStore, Run]) -> None:
    """A long-lived process (`mess serve`) memoises the index it searched with: one saved since (`mess index` in
    another process), or deleted since, is what its next search opens."""
    from mess.search.index import delete_index

    store, run = synth
    vs = load_vectors(store, run, VectorSpec("layer", "l1"))
    before = open_index(store, vs)
    assert before.ann.kind == "flat" and open_index(store, vs) is before  # memoised while nothing changed
    other = FeatureStore(store.root)
    path = build_index(other, load_vectors(other, run, VectorSpec("layer", "l1")), "hnsw", rerank=False)[1].path
    other.close()
    saved = open_index(store, vs)
    assert saved.ann.kind == "hnsw" and saved.is_current(vs) and open_index(store, vs) is saved
    flat = build_index(store, vs, "flat", rebuild=True, rerank=False)[0]  # saved again, another kind
    assert open_index(store, vs).ann.kind == "flat" and open_index(store, vs).fitted == flat.fitted
    delete_index(path)
    assert open_index(store, vs).ann.kind == "flat"


def test_an_indexs_drift_counts_tracks_removed_and_added_up_to_a_quarter_of_its_fit(
        synth: tuple[FeatureStore, Run]) -> None:
    """An IVF index (whose tracks can be removed in place) over 40 tracks: removals and additions both count towards
    the quarter of the fitted tracks an index is updated for (10 of 40, itself included); one more, and it is rebuilt
    with fresh statistics."""
    store, run = synth
    rng = np.random.default_rng(11)

    def add(names: range) -> None:
        for j in names:
            _add_track(store, run, f"/music/more/{j}.wav", f"hash-more-{j}", _vectors(rng, store.centres, j % ARTISTS),
                       f"Artist {j % ARTISTS}", f"More {j}")

    def index() -> tuple[CollectionIndex, object]:
        return build_index(store, load_vectors(store, run, VectorSpec("layer", "l1")), rerank=False)

    add(range(15))
    first, report = build_index(store, load_vectors(store, run, VectorSpec("layer", "l1")), "ivf", rerank=False)
    assert (report.kind, report.mode, report.added, report.removed, first.fitted) == ("ivf", "built", 40, 0, 40)
    store.remove_tracks([f"/music/more/{j}.wav" for j in range(4)])
    updated, report = index()
    assert (report.mode, report.added, report.removed, updated.drift) == ("updated", 0, 4, 4)
    add(range(20, 26))
    updated, report = index()
    assert (report.mode, report.added, report.removed, updated.drift, updated.fitted) == ("updated", 6, 0, 10, 40)
    assert (CollectionIndex.load(report.path).drift, CollectionIndex.load(report.path).fitted) == (10, 40)
    add(range(30, 31))
    rebuilt, report = index()
    assert (report.kind, report.mode, report.added, report.removed) == ("ivf", "built", 43, 0)
    assert (rebuilt.drift, rebuilt.fitted) == (0, 43)


def test_an_index_of_fused_vectors_that_cannot_be_read_is_not_stale_until_the_repair_drops_them(
        synth: tuple[FeatureStore, Run]) -> None:
    """Fused vectors changed on disk: the check names them (damage), not their index, which is only stale once the
    repair has dropped the vectors it holds."""
    from mess.search.health import check_store
    from mess.search.index import index_states

    store, run = synth
    ids, l2 = store.layer_matrix(run, "l2")
    store.write_derived(run, "fused", _hashes(store, ids), l2, {"note": "l2"})
    path = build_index(store, load_vectors(store, run, VectorSpec("fused")), rerank=False)[1].path
    rows = store.root / f"runs/{run.id}/derived" / store.derived_meta(run, "fused")["file"]
    damaged = bytearray(rows.read_bytes())
    damaged[0] ^= 0x40
    rows.write_bytes(bytes(damaged))
    assert index_states(store) == ([], [])
    health = check_store(store.root)
    assert [(p.kind, p.damage) for p in health.problems] == [("checksum-derived", True)] and health.stale == []
    repaired = check_store(store.root, fix=True)
    assert repaired.repaired[-1] == f"deleted stale index {path.name}" and not path.exists()


def test_a_file_from_outside_is_searched_by_the_fused_vector_it_carries(synth: tuple[FeatureStore, Run]) -> None:
    """An outside file's fused vector (computed when it was embedded) is what a fused search ranks by, plain cosines
    (fused vectors are never z-scored); without one the search says how to get it. ``query_unit`` (radio, the map)
    is the same unit vector."""
    from mess.search.query import TrackQuery, query_unit

    store, run = synth
    ids, l2 = store.layer_matrix(run, "l2")
    store.write_derived(run, "fused", _hashes(store, ids), l2, {"note": "l2"})
    fused = (l2[3] + np.random.default_rng(4).standard_normal(l2.shape[1])).astype(np.float32)
    layers = tuple(np.zeros(d, dtype=np.float32) for d in DIMS)
    outside = TrackQuery("outside", layers=layers, fused=fused)
    unit = l2 / np.linalg.norm(l2, axis=1, keepdims=True)
    want = unit @ (fused / np.linalg.norm(fused))
    got = similar_tracks(store, run, outside, k=5, fused=True, expand=0)
    assert [n.track.id for n in got] == ids[np.argsort(-want)[:5]].tolist()
    np.testing.assert_allclose([n.score for n in got], np.sort(want)[::-1][:5], atol=1e-5)
    vs = load_vectors(store, run, VectorSpec("fused"))
    np.testing.assert_allclose(query_unit(store, vs, outside), fused / np.linalg.norm(fused), atol=1e-6)
    with pytest.raises(StoreError, match="no fused vector for outside"):
        similar_tracks(store, run, TrackQuery("outside", layers=layers), k=5, fused=True)


def test_a_query_without_vectors_of_the_set_searched_says_why_whatever_the_search(
        synth: tuple[FeatureStore, Run]) -> None:
    """A track with no vectors of the run (never extracted, or failed), or no fused vector, is refused with what to run
    (or the recorded failure) by the plain, segment and fused searches alike, never answered with another track's
    vector; a query with neither a track nor vectors is refused."""
    from mess.search.query import TrackQuery, collection_query

    store, run = synth
    lone = store.upsert_track(Path("/music/other/lone.wav"), "hash-elsewhere", 1, 0.0, {}, {"title": "Lone"})
    advice = "has no vectors of synth yet; run `mess extract /music/other --model synth` first"
    for options in ({"layer": "l1"}, {"layer": "l1", "match": "segments"}):
        with pytest.raises(StoreError, match=advice):
            similar_tracks(store, run, collection_query(store, lone), k=3, **options)
    store.record_failure(run, "hash-elsewhere", "/music/other/lone.wav", "cannot decode: not audio")
    with pytest.raises(TrackFailed, match="failed to extract with synth, so it has no vectors: cannot decode"):
        similar_tracks(store, run, collection_query(store, lone), k=3, layer="l1")
    ids, l2 = store.layer_matrix(run, "l2")
    keep = ids != 2  # track 2 alone has its content (track 1's has a copy)
    store.write_derived(run, "fused", _hashes(store, ids[keep]), l2[keep], {"note": "l2"})
    with pytest.raises(StoreError, match=r"track 2 .* has no fused vector for synth; run `mess fuse apply` first"):
        similar_tracks(store, run, collection_query(store, 2), k=3, fused=True)
    with pytest.raises(StoreError, match="nothing has neither a collection track nor layer vectors"):
        similar_tracks(store, run, TrackQuery("nothing"), k=3, layer="l1")


def _alpha_qe(unit: np.ndarray, query: int, expand: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ``query``'s cosines to every row and each row's better of that and its cosine to the alpha-QE query (the
    query plus its ``expand`` nearest other rows weighted by their cosines, normalised); the query's own: -inf."""
    q = unit[query]
    cos = unit @ q
    cos[query] = -np.inf
    near = np.argsort(-cos)[:expand]
    e = q + (np.maximum(cos[near], 0)[:, None] * unit[near]).sum(axis=0)
    e /= np.linalg.norm(e)
    better = np.maximum(cos, unit @ e)
    better[query] = -np.inf
    return cos, better


def test_a_plain_search_with_expansion_ranks_by_the_better_of_the_two_cosines(synth: tuple[FeatureStore, Run]) -> None:
    """alpha-QE as the expansion module defines it, computed here: the query plus its 3 nearest other tracks weighted by
    their cosines, normalised; each track ranks by the better of its cosine to the query and to that, and keeps its
    cosine to the query as its score."""
    store, run = synth
    ids, unit = _unit(store, run, "l1")
    row = {int(i): r for r, i in enumerate(ids)}
    for tid, k in ((3, 3), (9, 3), (14, 3), (9, 1)):
        cos, better = _alpha_qe(unit, row[tid], k)
        order = np.argsort(-better)[:8]
        got = similar_tracks(store, run, resolve_query(store, str(tid), run), k=8, layer="l1", expand=k)
        assert {n.track.id for n in got} == set(ids[order].tolist())  # tracks 1 and 25 (one content) tie
        np.testing.assert_allclose([n.adjusted for n in got], better[order], atol=1e-5)
        np.testing.assert_allclose([n.score for n in got], [cos[row[n.track.id]] for n in got], atol=1e-5)
    plain = similar_tracks(store, run, resolve_query(store, "9", run), k=8, layer="l1", expand=0)
    assert all(n.adjusted is None for n in plain)  # not expanded: no ranking score beside the cosine


def test_expansion_finds_tracks_only_the_expanded_query_reaches(synth: tuple[FeatureStore, Run]) -> None:
    """The expanded query's own nearest tracks join the candidates: here a track outside the query's nearest
    max(k, expand) by cosine ranks among the k best by the better of the two cosines (alpha-QE computed here as
    above), so a search of the query's neighbours alone would miss it."""
    store, run = synth
    ids, unit = _unit(store, run, "l1")
    row = {int(i): r for r, i in enumerate(ids)}
    for tid, k, expand in ((3, 5, 3), (9, 6, 4), (2, 8, 5)):
        cos, better = _alpha_qe(unit, row[tid], expand)
        order = np.argsort(-better)[:k]
        beyond = set(ids[order].tolist()) - set(ids[np.argsort(-cos)[: max(k, expand)]].tolist())
        assert beyond, (tid, k, expand)  # the fixture reaches further than the query's own candidates
        got = similar_tracks(store, run, resolve_query(store, str(tid), run), k=k, layer="l1", expand=expand)
        assert {n.track.id for n in got} == set(ids[order].tolist())  # tracks 1 and 25 (one content) tie
        np.testing.assert_allclose([n.adjusted for n in got], better[order], atol=1e-5)
        np.testing.assert_allclose([n.score for n in got], [cos[row[n.track.id]] for n in got], atol=1e-5)
