"""Re-ranking (DBA, expansion, k-reciprocal) and power normalisation: the library against direct computations of
their definitions, and `similar --ranking reranked` against `evaluate --ranking reranked` on real extracted music."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from scipy import sparse
from typer.testing import CliRunner

from mess.cli.search import register
from mess.search import graph
from mess.search.augment import Augmentation, expanded_rows
from mess.search.evaluate import evaluate, track_labels
from mess.search.expansion import expand_collection, expanded_scores
from mess.search.graph import TOP_BY_ARGMAX, gram, neighbour_graph, top_columns
from mess.search.metrics import average_precision, ranked_relevance
from mess.search.query import collection_query, similar_tracks
from mess.search.rerank import build_reranker, copy_first, shared_weights
from mess.search.vectors import POWER, Preprocessor, VectorSet
from mess.store import FeatureStore, Run


@pytest.fixture(params=["whole", "blocks"])
def held(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Builds that hold the n x n scores whole, then builds in row blocks (as beyond graph.GRAM_BYTES)."""
    if request.param == "blocks":
        monkeypatch.setattr(graph, "GRAM_BYTES", 0)
    return str(request.param)


def clusters(n: int = 36, dim: int = 12, seed: int = 0) -> np.ndarray:
    """Unit vectors in a few loose clusters (ties in their cosines have probability 0)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((4, dim))
    x = centres[rng.integers(0, 4, n)] + 0.8 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_graph_lists_each_rows_nearest_other_rows_best_first(held: str) -> None:
    unit = clusters()
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    graph = neighbour_graph(unit, 7, chunk=5)
    want = np.argsort(-sims, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(graph.rows, want)
    np.testing.assert_allclose(graph.scores, np.take_along_axis(sims, want, axis=1), atol=1e-6)
    np.fill_diagonal(sims, np.inf)
    np.testing.assert_allclose(graph.lowest, sims.min(axis=1), atol=1e-6)


def test_dba_in_score_space_equals_scores_against_the_augmented_vectors() -> None:
    unit = clusters()
    explicit = expand_collection(unit, 3, 1.0)  # DBA is alpha-QE of each track
    aug = Augmentation.from_graph(unit, neighbour_graph(unit, 3))
    np.testing.assert_allclose(aug.vectors(unit, np.arange(len(unit))), explicit, atol=1e-6)
    queries = clusters(5, seed=1)
    np.testing.assert_allclose(aug.scores(queries @ unit.T), queries @ explicit.T, atol=1e-5)


def k_reciprocal(s: np.ndarray, k1: int = 10, k2: int = 3, lam: float = 0.3) -> np.ndarray:
    """Zhong et al. 2017, all-to-all and dense, from the paper (and its code's row normalisation)."""
    d = np.maximum(2.0 - 2.0 * s.astype(np.float64), 0.0)
    np.fill_diagonal(d, 0.0)
    orig = d / d.max(axis=1, keepdims=True)
    n = len(s)
    rank = np.argsort(orig, axis=1, kind="stable")
    v = np.zeros((n, n))
    for i in range(n):
        forward = rank[i, : k1 + 1]
        recip = [c for c in forward if i in rank[c, : k1 + 1]]
        grown = list(recip)
        for c in recip:
            half = rank[c, : round(k1 / 2) + 1]
            candidate = [x for x in half if c in rank[x, : round(k1 / 2) + 1]]
            if len(set(candidate) & set(recip)) > 2 / 3 * len(candidate):
                grown += candidate
        members = np.unique(grown)
        v[i, members] = np.exp(-orig[i, members]) / np.exp(-orig[i, members]).sum()
    v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
    shared = np.array([[np.minimum(v[i], v[j]).sum() for j in range(n)] for i in range(n)])
    jaccard = 1 - shared / (2 - shared)
    return -(jaccard * (1 - lam) + orig * lam)


def test_k_reciprocal_reranking_equals_its_formula_over_the_expanded_augmented_scores(held: str) -> None:
    unit = clusters()
    augmented = expand_collection(unit, 3, 1.0)
    scores = expanded_scores(augmented @ augmented.T, expand_collection(augmented, 3, 1.0) @ augmented.T)
    np.testing.assert_allclose(expanded_rows(unit, Augmentation.from_graph(unit, neighbour_graph(unit, 3)),
                                             np.arange(len(unit))), scores, atol=1e-5)
    got = build_reranker(unit).rows(np.arange(len(unit)))
    np.testing.assert_allclose(got, k_reciprocal(scores), atol=1e-5)


def test_whole_and_row_block_builds_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """The build that holds the n x n scores and the one in row blocks: the same lists, the same vectors."""
    unit = clusters(300, 40, seed=3)
    whole = build_reranker(unit)
    monkeypatch.setattr(graph, "GRAM_BYTES", 0)
    blocks = build_reranker(unit)
    for a, b in ((whole.aug.rows, blocks.aug.rows), (whole.top.rows, blocks.top.rows), (whole.qe_rows, blocks.qe_rows)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(whole.top.scores, blocks.top.scores, atol=1e-5)
    np.testing.assert_allclose(whole.top.lowest, blocks.top.lowest, atol=1e-5)
    np.testing.assert_allclose(whole.recip.toarray(), blocks.recip.toarray(), atol=1e-6)


@pytest.mark.parametrize("dim", [1, 7, 300])
def test_gram_is_every_product_of_the_vectors(dim: int) -> None:
    x = np.random.default_rng(dim).standard_normal((257, dim)).astype(np.float32)
    got = gram(x, block=50)
    assert got.flags.c_contiguous and got.dtype == np.float32
    np.testing.assert_array_equal(got, got.T)
    np.testing.assert_allclose(got, x @ x.T, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape", [(0, 4), (3, 0), (0, 0)])
def test_gram_of_no_vectors_or_no_dimensions_is_empty_or_zero_and_silent(shape: tuple[int, int],
                                                                         capfd: pytest.CaptureFixture[str]) -> None:
    """OpenBLAS printed 'On entry to SSYRK parameter number 10 had an illegal value' (to stdout) for no vectors
    (7 for vectors of no dimension)."""
    x = np.zeros(shape, dtype=np.float32)
    got = gram(x)
    assert got.shape == (shape[0], shape[0]) and got.dtype == np.float32
    np.testing.assert_array_equal(got, x @ x.T)  # an empty sum is 0
    assert capfd.readouterr() == ("", "")


def test_shared_weights_sum_the_smaller_of_each_tracks_two_weights() -> None:
    rng = np.random.default_rng(4)
    collection = sparse.random(40, 40, density=0.2, random_state=rng, format="csr")
    queries = sparse.random(6, 40, density=0.3, random_state=rng, format="lil")
    queries[2] = 0  # a query with no weights
    queries = queries.tocsr()
    want = np.minimum(queries.toarray()[:, None, :], collection.toarray()[None]).sum(axis=2)
    np.testing.assert_allclose(shared_weights(queries, collection.tocsc()), want, atol=1e-12)


def test_power_normalisation_is_zscores_of_signed_roots() -> None:
    rng = np.random.default_rng(2)
    raw = (rng.standard_normal((20, 6)) * [1, 5, 0.1, 2, 3, 1]).astype(np.float32)
    prep = Preprocessor.fit(raw, [3, 3], "power")
    rooted = np.sign(raw) * np.abs(raw) ** POWER
    want = Preprocessor.fit(rooted, [3, 3], "zscore").apply(rooted)
    np.testing.assert_allclose(prep.apply(raw), want, atol=1e-5)
    again = Preprocessor.from_arrays(prep.arrays())
    np.testing.assert_allclose(again.apply(raw), want, atol=1e-5)
    assert Preprocessor.from_arrays({k: v for k, v in prep.arrays().items() if k != "power"}).power == 1.0


def test_similar_with_rerank_ranks_a_collection_query_as_evaluate_does(
    msd: tuple[FeatureStore, Run, VectorSet],
) -> None:
    """Every labelled track queried through `similar_tracks`; the mean AP of those rankings is the all-layers row of
    `evaluate(..., ranking="reranked")`, and each ranking is the re-ranking of the augmented, expanded scores."""
    fs, run, vs = msd
    labels = track_labels(fs.tracks(run), "composer")
    ids = np.array([i for i in vs.ids if int(i) in labels])
    item_labels = np.array([labels[int(i)] for i in ids])
    augmented = expand_collection(vs.unit(), 3, 1.0)
    direct = k_reciprocal(expanded_scores(augmented @ augmented.T, expand_collection(augmented, 3) @ augmented.T))
    scores = np.zeros((len(ids), len(ids)))
    for q, tid in enumerate(ids):
        got = similar_tracks(fs, run, collection_query(fs, int(tid)), len(vs.ids), norm="power",
                             ranking="reranked")
        row = int(vs.rows(np.array([tid]))[0])
        want = vs.ids[np.argsort(-np.where(vs.ids == tid, -np.inf, direct[row]), kind="stable")][:-1]
        assert [n.track.id for n in got] == want.tolist()
        assert np.allclose([n.score for n in got], vs.unit()[vs.rows(want)] @ vs.unit()[row], atol=1e-5)
        position = {n.track.id: r for r, n in enumerate(got)}
        scores[q] = [-position.get(int(i), -1) for i in ids]
    _, inverse, counts = np.unique(item_labels, return_inverse=True, return_counts=True)
    queries = np.flatnonzero(counts[inverse] >= 2)
    ap = average_precision(ranked_relevance(scores[queries], item_labels[queries], item_labels, queries))
    ev = evaluate(fs, run, "composer", norm="power", ranking="reranked")
    row = next(s for s in ev.sets if s.kind == "all")
    assert row.metric == "cosine, re-ranked (DBA + k-reciprocal)"
    assert row.scores.map == pytest.approx(float(ap.mean()), abs=1e-9)


def test_rerank_answers_a_file_from_outside_the_collection(msd: tuple[FeatureStore, Run, VectorSet]) -> None:
    fs, run, vs = msd
    raw = vs.raw[3] * 1.01  # a louder copy of track 3, as an outside file's vector
    got = similar_tracks(fs, run, raw, 5, norm="power", ranking="reranked")
    assert got[0].track.id == int(vs.ids[3])
    adjusted = [n.adjusted for n in got]
    assert all(a is not None and np.isfinite(a) for a in adjusted) and adjusted == sorted(adjusted, reverse=True)


def test_a_noisy_copy_of_each_track_finds_it_first(msd: tuple[FeatureStore, Run, VectorSet]) -> None:
    """Before: re-ranking an outside copy of a track (2% noise on every raw dimension) put other tracks of its
    neighbourhood first for some tracks. Now the query's plain nearest track, when clearly nearer than the next,
    ranks first with the query's own score (0), and the rest keep their re-ranked order."""
    fs, run, vs = msd
    rng = np.random.default_rng(0)
    reranker = build_reranker(vs.unit())
    demoted = 0
    for row, tid in enumerate(vs.ids):
        raw = vs.raw[row] * (1 + 0.02 * rng.standard_normal(vs.raw.shape[1])).astype(np.float32)
        q = vs.prep.apply(raw)
        demoted += int(np.argmax(reranker.outside(q)[0]) != row)  # re-ranking alone
        got = similar_tracks(fs, run, raw, 3, norm="power", ranking="reranked")
        assert got[0].track.id == int(tid)
        assert [n.adjusted for n in got] == sorted((n.adjusted for n in got), reverse=True)  # type: ignore[type-var]
    assert demoted > 0  # what the rule is for: re-ranking alone demotes some copies


@pytest.mark.parametrize("options, message", [
    ({"match": "segments"}, "--match mean"),
    ({"hubness": "csls"}, "--hubness"),
    ({"expand": 5}, "--expand"),
])
def test_rerank_refuses_what_it_cannot_combine_with(msd: tuple[FeatureStore, Run, VectorSet], options: dict,
                                                    message: str) -> None:
    fs, run, vs = msd
    with pytest.raises(ValueError, match=message):
        similar_tracks(fs, run, collection_query(fs, int(vs.ids[0])), 3, ranking="reranked", **options)
    if "hubness" not in options:
        with pytest.raises(ValueError, match=message):
            evaluate(fs, run, "composer", ranking="reranked", **options)


def test_cli_rerank_options_and_one_line_errors(extracted_store: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    store = str(extracted_store)
    out = runner.invoke(app, ["similar", "1", "--model", "musicnn-msd", "-k", "3", "--norm", "power", "--ranking",
                              "reranked", "--store", store, "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["ranking"] == "reranked" and data["norm"] == "power" and len(data["results"]) == 3
    assert all(r["adjusted"] is not None for r in data["results"])
    out = runner.invoke(app, ["evaluate", "--model", "musicnn-msd", "--label", "composer", "--norm", "power",
                              "--ranking", "reranked", "--store", store, "--plot", str(tmp_path / "q.png"), "--json"])
    assert out.exit_code == 0, out.output
    assert {s["metric"] for s in json.loads(out.stdout)["sets"]} == {"cosine, re-ranked (DBA + k-reciprocal)"}
    for extra in (["--match", "segments"], ["--hubness", "mp"], ["--expand", "0"]):
        out = runner.invoke(app, ["similar", "1", "--model", "musicnn-msd", "--ranking", "reranked", *extra,
                                  "--store", store])
        assert out.exit_code != 0
        assert "--ranking reranked" in out.output and len(out.output.strip().splitlines()) == 1, out.output


def test_http_similar_with_rerank_answers_as_the_library(extracted_store: Path) -> None:
    from fastapi.testclient import TestClient

    from mess.serve.app import create_app

    fs = FeatureStore(extracted_store, readonly=True)
    try:
        run = fs.run("musicnn-msd")
        tid = fs.tracks(run)[0].id
        want = similar_tracks(fs, run, collection_query(fs, tid), 4, norm="power", ranking="reranked")
    finally:
        fs.close()
    url = f"/api/tracks/{tid}/similar"
    with TestClient(base_url="http://127.0.0.1", app=create_app(extracted_store)) as client:
        body = client.get(url, params={"model": "musicnn-msd", "k": 4, "norm": "power",
                                       "ranking": "reranked"}).json()
        both = client.get(url, params={"model": "musicnn-msd", "ranking": "reranked", "hubness": "mp"})
        bad_norm = client.get(url, params={"model": "musicnn-msd", "norm": "cube"})
    assert [r["id"] for r in body["results"]] == [n.track.id for n in want]
    assert [r["adjusted"] for r in body["results"]] == pytest.approx([n.adjusted for n in want], abs=1e-5)
    assert both.status_code == 400 and "hubness" in both.json()["detail"]
    assert bad_norm.status_code == 400


@pytest.mark.parametrize("k", [1, 5, 32, 40])
def test_top_columns_are_a_stable_sort_of_each_row(k: int) -> None:
    rng = np.random.default_rng(k)
    scores = np.round(rng.standard_normal((30, 60)), 1).astype(np.float32)  # many ties
    own = rng.integers(0, 60, 30)
    masked = scores.copy()
    masked[np.arange(30), own] = -np.inf
    want = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    got = top_columns(scores, own, k)
    if k <= TOP_BY_ARGMAX:
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.take_along_axis(masked, got, axis=1), np.take_along_axis(masked, want, axis=1))


@pytest.mark.parametrize("n", [1, 2, 3, 11])
def test_rerank_on_collections_smaller_than_its_neighbour_lists(n: int, held: str) -> None:
    unit = clusters(n)
    reranker = build_reranker(unit)
    scores = reranker.rows(np.arange(n))
    assert scores.shape == (n, n) and np.isfinite(scores).all()
    assert np.allclose(np.diag(scores), 0.0) and (scores <= 1e-12).all()  # each track nearest itself
    assert np.isfinite(reranker.outside(clusters(2, seed=5))).all()


def test_an_outside_querys_near_copy_gets_its_own_score_only_when_clearly_nearest() -> None:
    """The plain nearest track gets the query's own score when its cosine is at least the gap above the next (at
    the gap exactly too); a closer race, or a collection of one track, leaves the scores as they were. Ties go to
    the lower row; the scores given are not changed in place."""
    scores = np.array([-0.4, -0.1, -0.3, -0.2])
    cosines = np.array([0.5, 0.75, 0.25, 0.5])  # dyadic: 0.75 - 0.5 is 0.25 exactly
    got = copy_first(scores, cosines, 0.0, gap=0.25)
    np.testing.assert_array_equal(got, [-0.4, 0.0, -0.3, -0.2])
    np.testing.assert_array_equal(scores, [-0.4, -0.1, -0.3, -0.2])
    np.testing.assert_array_equal(copy_first(scores, cosines, 0.0, gap=0.375), scores)
    np.testing.assert_array_equal(copy_first(scores, np.array([0.75, 0.5, 0.75, 0.0]), 1.0, gap=0.0),
                                  [1.0, -0.1, -0.3, -0.2])  # a tie: the lower row, though no gap
    np.testing.assert_array_equal(copy_first(scores[:1], cosines[:1], 0.0, gap=0.0), scores[:1])
    np.testing.assert_array_equal(copy_first(np.array([0.2, 0.6]), np.array([0.0, 0.5]), 1.0), [0.2, 1.0])


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_a_graph_asked_for_more_neighbours_than_there_are_other_rows_lists_every_other_row(n: int,
                                                                                           held: str) -> None:
    """Each row lists the n - 1 others, never itself; a single track lists none, and its lowest score stays finite
    (saved re-ranking data with a non-finite one is refused as damaged)."""
    unit = clusters(n)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    got = neighbour_graph(unit, 10, chunk=3)
    want = np.argsort(-sims, axis=1, kind="stable")[:, : n - 1]
    np.testing.assert_array_equal(got.rows, want)
    np.testing.assert_allclose(got.scores, np.take_along_axis(sims, want, axis=1), atol=1e-6)
    assert neighbour_graph(unit, 0).rows.shape == (n, 0)
    if n == 1:
        assert np.isfinite(got.lowest).all()
    else:
        np.fill_diagonal(sims, np.inf)
        np.testing.assert_allclose(got.lowest, sims.min(axis=1), atol=1e-6)


def test_a_score_graph_ignores_the_diagonal_whatever_it_scores() -> None:
    """A score matrix whose diagonal is each row's lowest score (a distance, negated the wrong way) and then its
    highest: neither the lists nor the lowest score of a row over the other tracks see it."""
    rng = np.random.default_rng(6)
    scores = rng.uniform(-1, 1, (9, 9)).astype(np.float32)
    off = ~np.eye(9, dtype=bool)
    want_rows = np.argsort(-np.where(off, scores, -np.inf), axis=1, kind="stable")[:, :4]
    for diagonal in (-5.0, 5.0):
        np.fill_diagonal(scores, diagonal)
        got = graph.held_graph(scores.copy(), 4, chunk=4)
        np.testing.assert_array_equal(got.rows, want_rows)
        np.testing.assert_array_equal(got.lowest, [scores[i, off[i]].min() for i in range(9)])


def test_the_score_matrix_is_held_whole_up_to_two_gib_of_float32() -> None:
    """2 GiB holds 23,170 x 23,170 float32 scores (4 x 23,170^2 = 2,147,395,600 bytes) and not one row more."""
    assert graph.fits_whole(0) and graph.fits_whole(23_170)
    assert not graph.fits_whole(23_171)


@pytest.mark.parametrize("n, k1, k2, lam", [(36, 5, 1, 0.0), (36, 6, 4, 0.7), (36, 35, 2, 1.0), (36, 8, 2, 0.3),
                                            (3, 10, 3, 0.3), (5, 10, 3, 0.3)])
def test_k_reciprocal_reranking_with_other_constants_equals_its_formula(n: int, k1: int, k2: int, lam: float) -> None:
    """Other list lengths, k2 averaging (none at 1) and mixing weights, and collections smaller than the lists:
    still the paper's formula, computed densely."""
    unit = clusters(n)
    augmented = expand_collection(unit, 3, 1.0)
    scores = expanded_scores(augmented @ augmented.T, expand_collection(augmented, 3, 1.0) @ augmented.T)
    got = build_reranker(unit, k1, k2, lam).rows(np.arange(len(unit)))
    np.testing.assert_allclose(got, k_reciprocal(scores, k1, k2, lam), atol=1e-5)


@pytest.mark.parametrize("k", [TOP_BY_ARGMAX + 1, 150])
def test_top_columns_beyond_the_argmax_passes_are_each_rows_k_best_in_order(k: int) -> None:
    """Scores without ties: the partition path finds exactly the k best columns, in order (200 rows of 1000: a
    partition at the wrong place leaves a wrong column at the cut in some of them)."""
    scores = np.random.default_rng(1).standard_normal((200, 1000)).astype(np.float32)
    want = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(top_columns(scores, None, k), want)
