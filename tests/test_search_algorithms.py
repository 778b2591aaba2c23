"""Search algorithms on computed data: metrics vs scikit-learn, ANN recall vs exact, hubness, preprocessing."""

from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, ndcg_score

from mess.search.ann import (
    _BREADTHS,
    FLAT_MAX,
    IVFPQ_MIN,
    TRAIN_PER_LIST,
    AnnIndex,
    built_kind,
    choose_kind,
    exact_knn,
    n_lists,
    recall_at_k,
)
from mess.search.hubness import HubnessReducer, HubnessStats, hubness_stats, k_occurrence
from mess.search.metrics import (
    average_precision,
    chance_scores,
    ndcg_at_k,
    precision_at_k,
    ranked_relevance,
    retrieval_scores,
)
from mess.search.vectors import MIN_FIT_TRACKS, Preprocessor, VectorSet, VectorSpec


@pytest.fixture(autouse=True)
def one_faiss_thread():
    """Small data: OpenMP start-up and barriers cost more than a second thread gives."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def clustered(n: int, dim: int, n_clusters: int, seed: int, spread: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around random centres, and their cluster labels."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim))
    labels = rng.integers(n_clusters, size=n)
    x = (centres[labels] + spread * rng.standard_normal((n, dim))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


# ---- metrics -------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["four large classes", "pairs and singletons"])
def test_metrics_match_sklearn_per_query(layout: str) -> None:
    """Every query's scores equal scikit-learn's, also where a query has one relevant item (a composer with two
    tracks) or none (its only track)."""
    rng = np.random.default_rng(3)
    n, k = 60, 5
    pairs_and_singletons = rng.permutation(np.concatenate([np.repeat(np.arange(20), 2), np.arange(20, 40)]))
    labels = rng.integers(4, size=n) if layout == "four large classes" else pairs_and_singletons
    scores = rng.random((n, n))
    rows = np.arange(n)
    rel = ranked_relevance(scores, labels, labels, rows)
    ap, nd, p = average_precision(rel), ndcg_at_k(rel, k), precision_at_k(rel, k)
    assert set(rel.sum(axis=1)) == {0, 1} if layout == "pairs and singletons" else rel.sum(axis=1).min() > 5
    for q in range(n):
        others = rows != q
        truth = (labels[others] == labels[q]).astype(int)
        if not truth.any():
            assert ap[q] == nd[q] == p[q] == 0.0
            continue
        assert ap[q] == pytest.approx(average_precision_score(truth, scores[q, others]))
        assert nd[q] == pytest.approx(ndcg_score(truth[None], scores[q, others][None], k=k))
        top = np.argsort(-scores[q, others])[:k]
        assert p[q] == pytest.approx(truth[top].mean())


def test_precision_at_k_divides_by_k_when_the_collection_is_smaller() -> None:
    labels = np.repeat([0, 1], 4)  # 8 tracks, so each query ranks 7 others
    rows = np.arange(8)
    perfect = (labels[:, None] == labels[None, :]).astype(float)
    scores = retrieval_scores(ranked_relevance(perfect, labels, labels, rows), k=10)
    assert scores.precision == pytest.approx(3 / 10)  # 3 relevant others: at most 3/k (it was 3/7 for every method)


def test_perfect_ranking_scores_one_and_chance_matches_expectation() -> None:
    labels = np.repeat(np.arange(5), 8)
    rows = np.arange(len(labels))
    perfect = (labels[:, None] == labels[None, :]).astype(float)
    best = retrieval_scores(ranked_relevance(perfect, labels, labels, rows), k=7)
    assert (best.precision, best.map, best.ndcg) == pytest.approx((1.0, 1.0, 1.0))
    chance = chance_scores(labels, labels, rows, k=7, repeats=200)
    expected = 7 / (len(labels) - 1)  # 7 same-label others among 39
    assert chance.precision == pytest.approx(expected, abs=0.02)
    assert chance.map < best.map / 2


# ---- ANN indexes ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "ivfpq"])
def test_index_kinds_reach_tuned_recall_on_held_out_queries(kind: str) -> None:
    x, _ = clustered(3300, 32, 30, seed=1)
    base, queries = x[:3000], x[3000:]
    ids = np.arange(3000, dtype=np.int64) * 3 + 7  # ids are not row numbers
    ann = AnnIndex.build(base, ids, kind, target_recall=0.9)
    assert ann.kind == kind and ann.ntotal == 3000
    truth = ids[exact_knn(base, queries, 10)[1]]
    recall = recall_at_k(truth, ann.search(queries, 10)[1], 10)
    floor = 0.6 if kind == "ivfpq" else 0.85  # PQ codes are lossy; the others were tuned to 0.9
    assert recall >= floor
    if kind == "flat":
        assert recall == 1.0
        scores, _ = ann.search(queries[:3], 4)
        exact_scores, _ = exact_knn(base, queries[:3], 4)
        np.testing.assert_allclose(scores, exact_scores, rtol=1e-5)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_exclude_remove_add_and_save_roundtrip(kind: str, tmp_path: Path) -> None:
    x, _ = clustered(2000, 16, 20, seed=2)
    ids = np.arange(2000, dtype=np.int64) + 100
    ann = AnnIndex.build(x, ids, kind, target_recall=0.95)
    q = x[:5]
    _, top = ann.search(q, 10)
    banned = np.unique(top[:, :3])
    _, again = ann.search(q, 10, exclude=banned)
    assert not np.isin(again, banned).any()
    assert ann.remove(banned) == len(banned) and ann.ntotal == 2000 - len(banned)
    _, after = ann.search(q, 10)
    assert not np.isin(after, banned).any()
    ann.add(x[banned - 100], banned)
    path = tmp_path / "x.faiss"
    ann.save(path, {"note": "kept"})
    loaded, meta = AnnIndex.load(path)
    assert meta["note"] == "kept" and loaded.kind == ann.kind and loaded.breadth == ann.breadth
    np.testing.assert_array_equal(loaded.search(q, 10)[1], ann.search(q, 10)[1])
    assert set(loaded.search(q[:1], 1)[1][0]) == {100}  # re-added vector is its own nearest


def test_ivf_trained_on_a_sample_is_exact_at_full_breadth_and_tuned_against_flat() -> None:
    x, _ = clustered(30_200, 16, 60, seed=5)
    base, queries = x[:30_000], x[30_000:]
    ann = AnnIndex.build(base, np.arange(30_000), "ivf", target_recall=0.95)
    nlist = ann.index.nlist
    assert TRAIN_PER_LIST * nlist < 30_000 and ann.ntotal == 30_000  # k-means saw a sample; every vector is in
    scores, found = ann.search(queries, 10, breadth=nlist)  # every list probed: exact search
    exact_scores, exact_ids = exact_knn(base, queries, 10)
    np.testing.assert_array_equal(found, exact_ids)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)
    flat = AnnIndex.build(base, np.arange(30_000), "flat")
    assert ann.breadth < nlist
    assert recall_at_k(flat.search(queries, 10)[1], ann.search(queries, 10)[1], 10) >= 0.9


def test_ivf_trains_on_every_collection_of_32_or_more() -> None:
    """From 33 to 63 vectors the list count (the power of two nearest 4 sqrt(n)) jumped to 32, which needs 64 to
    train, so IVF fell back to flat between 32 and 64 vectors; the count is now capped at n / 2 there."""
    assert built_kind("ivf", 31) == "flat"
    assert [n for n in range(32, 5000) if built_kind("ivf", n) != "ivf"] == []
    for n in (100, 1000, 30_000, 1_000_000):  # large collections keep the nearest power of two to 4 sqrt(n)
        assert n_lists(n) == min((2 ** e for e in range(4, 20)), key=lambda c: abs(math.log2(c / (4 * math.sqrt(n)))))
    x, _ = clustered(40, 8, 4, seed=6)
    ann = AnnIndex.build(x, np.arange(40), "ivf")
    assert ann.kind == "ivf" and ann.index.nlist == 16
    np.testing.assert_array_equal(ann.search(x[:5], 5, breadth=16)[1], exact_knn(x, x[:5], 5)[1])


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_excluding_ids_the_index_does_not_hold_still_finds_every_track_left(kind: str) -> None:
    """Ids in ``exclude`` the index does not hold (tracks without vectors in this set) were counted as excluded
    tracks: a search that left fewer than k tracks stopped at its tuned breadth and returned none of them."""
    x, _ = clustered(400, 16, 8, seed=7)
    ids = np.arange(400, dtype=np.int64) * 3
    ann = AnnIndex.build(x, ids, kind, target_recall=0.5)
    left = ids[[5, 77, 123, 250, 399]]
    banned = np.setdiff1d(ids, left)
    for exclude in (banned, np.concatenate([banned, ids + 1]), np.concatenate([banned, banned])):
        _, found = ann.search(x[:3], 10, exclude=exclude)
        for row in found:
            assert sorted(row[row >= 0].tolist()) == left.tolist() and (row < 0).sum() == 10 - len(left)
    assert np.array_equal(np.sort(ann._ids()), ids)  # what it counts exclusions against


def test_auto_kind_follows_the_collection_size_and_an_unknown_kind_is_refused() -> None:
    """Flat below FLAT_MAX vectors, IVF below IVFPQ_MIN, IVF-PQ from there (the module's documented defaults)."""
    sizes = (1, FLAT_MAX - 1, FLAT_MAX, IVFPQ_MIN - 1, IVFPQ_MIN)
    assert [choose_kind(n) for n in sizes] == ["flat", "flat", "ivf", "ivf", "ivfpq"]
    assert [built_kind("auto", n) for n in sizes] == ["flat", "flat", "ivf", "ivf", "ivfpq"]
    assert built_kind("hnsw", 10) == "hnsw"  # nothing to train: any size
    x, _ = clustered(100, 8, 4, seed=8)
    assert AnnIndex.build(x, np.arange(100)).kind == "flat"
    with pytest.raises(ValueError, match="unknown index kind 'lsh'"):
        AnnIndex.build(x, np.arange(100), "lsh")


def test_hnsw_refuses_removal() -> None:
    x, _ = clustered(500, 8, 5, seed=4)
    ann = AnnIndex.build(x, np.arange(500), "hnsw")
    assert not ann.removable
    with pytest.raises(ValueError, match="rebuild"):
        ann.remove(np.array([1]))


def test_search_takes_one_vector_and_returns_every_track_once_when_asked_for_more() -> None:
    x, _ = clustered(40, 8, 4, seed=9)
    ids = np.arange(40, dtype=np.int64) + 1000
    ann = AnnIndex.build(x, ids, "flat")
    assert (ann.breadth, ann.recall) == (0, 1.0)  # exact
    np.testing.assert_array_equal(ann.search(x[3], 5)[1], ids[exact_knn(x, x[3:4], 5)[1]])  # a vector, no matrix
    _, found = ann.search(x[:2], 100)  # more than the 40 it holds
    assert [sorted(row) for row in found.tolist()] == [ids.tolist()] * 2


def test_a_tiny_hnsw_index_is_tuned_on_what_it_holds_or_not_at_all() -> None:
    """Eight vectors, two held out to tune: recall@10 is measured over the six the index holds, all found at the
    smallest breadth tried. Three vectors leave none to tune with: no estimate, and every vector is still found."""
    x, _ = clustered(8, 8, 2, seed=10)
    ann = AnnIndex.build(x, np.arange(8), "hnsw", target_recall=1.0)
    assert (ann.ntotal, ann.recall, ann.breadth) == (8, 1.0, min(_BREADTHS["hnsw"]))
    tiny = AnnIndex.build(x[:3], np.arange(3), "hnsw")
    assert tiny.recall is None
    assert [sorted(row) for row in tiny.search(x[:3], 3)[1].tolist()] == [[0, 1, 2]] * 3


# ---- hubness -------------------------------------------------------------------------


def _knn_lists(sim: np.ndarray, k: int) -> np.ndarray:
    sim = sim.copy()
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1)[:, :k]


def test_k_occurrence_counts_every_slot() -> None:
    x, _ = clustered(300, 20, 6, seed=5)
    top = _knn_lists(x @ x.T, 10)
    occ = k_occurrence(top, 300)
    assert occ.sum() == 300 * 10
    stats = hubness_stats(top, 300)
    assert stats.max_occurrence == occ.max() and 0 <= stats.antihub_fraction < 1


def test_hubness_of_no_items_is_none_at_all() -> None:
    """n = 0 raised ValueError (the maximum of an empty array) and warned of the mean of an empty slice."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = hubness_stats(np.zeros((0, 10), dtype=np.int64), 0)
    assert stats == HubnessStats(k=10, skewness=0.0, antihub_fraction=0.0, top1pct_share=0.0, max_occurrence=0)


def test_csls_and_mutual_proximity_reduce_hubness() -> None:
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((1000, 100)) + 0.3).astype(np.float32)  # off-centre high-dim data is hub-prone
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    base = hubness_stats(_knn_lists(sim, 10), len(x)).skewness
    assert base > 0.5
    for method in ("csls", "mp"):
        reducer = HubnessReducer(method, x, lambda v, kk: exact_knn(x, v, kk), k=10, sample=len(x))
        stats = reducer.stats(x, np.arange(len(x)))
        reduced = hubness_stats(_knn_lists(reducer.rescore(sim, stats, stats), 10), len(x)).skewness
        assert reduced < base * 0.7, (method, base, reduced)


def test_hub_statistics_leave_out_own_vector() -> None:
    x, _ = clustered(200, 12, 4, seed=7)
    reducer = HubnessReducer("csls", x, lambda v, kk: exact_knn(x, v, kk), k=5, sample=200)
    stats = reducer.stats(x[:3], np.arange(3))
    sims = x[:3] @ x.T
    for i in range(3):
        others = np.delete(sims[i], i)
        assert stats.r[i] == pytest.approx(np.sort(others)[-5:].mean(), rel=1e-5)
        assert stats.mu[i] == pytest.approx((1 - others).mean(), rel=1e-5)


def test_hub_statistics_of_outside_queries_average_exactly_k_neighbours() -> None:
    """A query that is not in the collection (a file given by path) has nothing to leave out: its CSLS
    neighbourhood is still its k nearest tracks, not the k + 1 the search asks for."""
    x, _ = clustered(200, 12, 4, seed=7)
    outside, _ = clustered(4, 12, 4, seed=8)
    reducer = HubnessReducer("csls", x, lambda v, kk: exact_knn(x, v, kk), k=5, sample=200)
    stats = reducer.stats(outside)
    sims = outside @ x.T
    np.testing.assert_allclose(stats.r, np.sort(sims, axis=1)[:, -5:].mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(stats.mu, (1 - sims).mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(stats.sd, (1 - sims).std(axis=1), rtol=1e-4)


# ---- preprocessing -------------------------------------------------------------------


def test_all_layer_vectors_average_per_layer_cosines() -> None:
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((50, 6)) + 4, rng.standard_normal((50, 10)) * 9
    raw = np.concatenate([a, b], axis=1)
    prep = Preprocessor.fit(raw, (6, 10), "center")
    unit = prep.apply(raw)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    per_layer = [Preprocessor.fit(m, (m.shape[1],), "center").apply(m) for m in (a, b)]
    expected = np.mean([p[:5] @ p[5:10].T for p in per_layer], axis=0)
    np.testing.assert_allclose(unit[:5] @ unit[5:10].T, expected, atol=1e-5)


def test_zscore_removes_scale_dominance() -> None:
    rng = np.random.default_rng(9)
    raw = np.concatenate([rng.standard_normal((40, 1)) * 1000, rng.standard_normal((40, 5))], axis=1)
    plain = Preprocessor.fit(raw, (6,), "center").apply(raw)
    scaled = Preprocessor.fit(raw, (6,), "zscore").apply(raw)
    assert np.abs(plain[:, 0]).mean() > 0.99  # one loud dimension decides every cosine
    assert np.abs(scaled[:, 0]).mean() < 0.6


def test_zscore_does_not_let_a_nearly_constant_dimension_decide_a_new_tracks_vector() -> None:
    """A dimension that barely varies over the collection (a dead unit) is divided by at least ZSCORE_FLOOR of
    its layer's mean spread: a new file that differs there by a hair still lands next to its original."""
    from mess.search.vectors import ZSCORE_FLOOR

    rng = np.random.default_rng(0)
    raw = np.hstack([rng.standard_normal((50, 3)), 1.0 + 1e-6 * rng.standard_normal((50, 1))]).astype(np.float32)
    prep = Preprocessor.fit(raw, (4,), "zscore")
    assert prep.scale[3] == pytest.approx(ZSCORE_FLOOR * raw.std(axis=0).mean(), rel=1e-5)
    assert np.allclose(prep.scale[:3], raw.std(axis=0)[:3], rtol=1e-5)  # the other dimensions: plain z-scores
    copy = raw[:1] + np.array([[0.0, 0.0, 0.0, 1e-4]], dtype=np.float32)  # 100 times the spread of that unit
    assert float(prep.apply(copy)[0] @ prep.apply(raw[:1])[0]) > 0.99
    unfloored = (copy - raw.mean(axis=0)) / raw.std(axis=0)  # what a plain z-score would make of it
    assert np.argmax(np.abs(unfloored)) == 3


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_a_spec_resolves_its_normalisation_and_names_its_files_as_documented() -> None:
    """"auto" is power for all layers, centring for the learned head and z-scores for one layer, aspect or group;
    fused vectors never z-score nor power (their own norm is kept otherwise); one choice of vectors at most; slugs keep
    letters, digits and "-_." and make every other character "_"."""
    auto = {kind: VectorSpec(kind, "x" if kind in ("layer", "aspect", "group") else "").norm
            for kind in ("all", "layer", "aspect", "group", "learned", "fused")}
    assert auto == {"all": "power", "layer": "zscore", "aspect": "zscore", "group": "zscore", "learned": "center",
                    "fused": "none"}
    assert [VectorSpec("fused", "", norm).norm for norm in ("none", "center", "zscore", "power")] == [
        "none", "center", "none", "none"]
    assert [VectorSpec("all", "", norm).norm for norm in ("none", "center", "zscore", "power")] == [
        "none", "center", "zscore", "power"]
    assert VectorSpec.from_options() == VectorSpec("all", "", "power")
    assert VectorSpec.from_options(layer=7, norm="center") == VectorSpec("layer", "7", "center")
    assert VectorSpec.from_options(aspect="timbre") == VectorSpec("aspect", "timbre", "zscore")
    assert VectorSpec.from_options(fused=True, norm="zscore") == VectorSpec("fused", "", "none")
    assert VectorSpec.from_options(learned=True) == VectorSpec("learned", "", "center")
    assert VectorSpec.from_options(layer="l1", fused=False, learned=False) == VectorSpec("layer", "l1", "zscore")
    for options in ({"layer": "l1", "aspect": "timbre"}, {"fused": True, "learned": True},
                    {"layer": "", "fused": True}):
        with pytest.raises(ValueError, match="choose at most one"):
            VectorSpec.from_options(**options)
    with pytest.raises(ValueError, match="unknown normalisation 'l2'"):
        VectorSpec.from_options(norm="l2")
    assert VectorSpec("layer", "7", "center").slug == "layer-7-center"
    assert VectorSpec("fused").slug == "fused-none"
    assert VectorSpec("group", "msd.cnn1+mtt.cnn1", "zscore").slug == "group-msd.cnn1_mtt.cnn1-zscore"
    assert VectorSpec("aspect", "a/b c_d-é", "none").slug == "aspect-a_b_c_d-é-none"


def test_a_vector_sets_rows_and_its_note_of_too_few_tracks_to_fit() -> None:
    """Rows of ids in any order are their positions in the set; a set smaller than MIN_FIT_TRACKS says its scores are
    plain cosines, unless plain cosines were asked for."""
    rng = np.random.default_rng(1)

    def vector_set(ids: list[int], norm: str = "zscore") -> VectorSet:
        raw = rng.standard_normal((len(ids), 3)).astype(np.float32)
        spec = VectorSpec("layer", "l1", norm)
        return VectorSet(None, spec, ("l1",), np.array(ids), np.array([f"h{i}" for i in ids]), raw,
                         Preprocessor.fit(raw, (3,), spec.norm))

    ids = [40, 7, 19, 3, 25]
    vs = vector_set(ids)
    wanted = [19, 3, 40, 25, 7]
    assert vs.rows(np.array(wanted)).tolist() == [ids.index(i) for i in wanted]
    assert 19 in vs and 20 not in vs
    np.testing.assert_allclose(vs.unit(), _l2(vs.raw), atol=1e-6)  # 5 tracks: plain cosines
    assert vs.norm_note == f"only 5 tracks have these vectors: scores are plain cosines (zscore normalisation needs " \
                           f"{MIN_FIT_TRACKS})"
    assert vector_set([4]).norm_note.startswith("only 1 track has these vectors")
    assert vector_set(list(range(MIN_FIT_TRACKS - 1)), "center").norm_note.startswith(
        f"only {MIN_FIT_TRACKS - 1} tracks have")
    assert vector_set(list(range(MIN_FIT_TRACKS))).norm_note == ""
    assert vector_set([1, 2], "none").norm_note == ""


def test_each_normalisation_is_the_textbook_one_and_few_tracks_get_plain_cosine() -> None:
    """none = L2 of the raw vectors, center = L2 after subtracting the collection mean, zscore = L2 after
    per-dimension standardisation; fitted on fewer than MIN_FIT_TRACKS tracks every one is plain L2."""
    rng = np.random.default_rng(10)
    raw = rng.standard_normal((20, 5)) * np.array([1.0, 2.0, 3.0, 4.0, 50.0]) + 7.0
    fit = {norm: Preprocessor.fit(raw, (5,), norm).apply(raw) for norm in ("none", "center", "zscore")}
    np.testing.assert_allclose(fit["none"], _l2(raw), atol=1e-5)
    np.testing.assert_allclose(fit["center"], _l2(raw - raw.mean(axis=0)), atol=1e-5)
    np.testing.assert_allclose(fit["zscore"], _l2((raw - raw.mean(axis=0)) / raw.std(axis=0)), atol=1e-5)
    at = raw[:MIN_FIT_TRACKS]
    np.testing.assert_allclose(Preprocessor.fit(at, (5,), "center").apply(at), _l2(at - at.mean(axis=0)), atol=1e-5)
    few = raw[: MIN_FIT_TRACKS - 1]
    for norm in ("center", "zscore"):
        np.testing.assert_allclose(Preprocessor.fit(few, (5,), norm).apply(few), _l2(few), atol=1e-5)


def test_hubness_statistics_of_lists_built_by_hand() -> None:
    """k-occurrences counted here slot by slot: their skewness (scipy), the anti-hub fraction, the share of the
    slots the top 1% of items take and the largest count; empty slots (-1) count for no one."""
    from collections import Counter

    from scipy.stats import skew

    rng = np.random.default_rng(12)
    n = 300  # top 1%: the three most listed items
    lists = rng.choice(n, size=(180, 6), p=np.linspace(1, 40, n) ** 2 / (np.linspace(1, 40, n) ** 2).sum())
    lists[::7, -1] = -1
    counts = Counter(int(i) for i in lists.ravel() if i >= 0)
    occ = np.array([counts.get(i, 0) for i in range(n)])
    stats = hubness_stats(lists, n)
    assert stats.k == 6
    assert stats.skewness == pytest.approx(skew(occ), rel=1e-9) and stats.skewness != 0
    assert stats.antihub_fraction == pytest.approx(sum(1 for i in range(n) if i not in counts) / n)
    assert stats.top1pct_share == pytest.approx(sum(sorted(counts.values())[-3:]) / sum(counts.values()))
    assert stats.max_occurrence == max(counts.values())
    even = hubness_stats(np.array([[1, 2], [2, 0], [0, 1]]), 3)  # everyone listed twice: no skew, no anti-hub
    assert (even.skewness, even.antihub_fraction, even.top1pct_share, even.max_occurrence) == (0.0, 0.0, 2 / 6, 2)
    one = hubness_stats(np.array([[1], [-1], [-1]]), 3)  # a single slot filled: its item takes all of the slots
    assert one.skewness == pytest.approx(skew([0, 1, 0])) and one.skewness > 0
    assert (one.antihub_fraction, one.top1pct_share, one.max_occurrence) == (2 / 3, 1.0, 1)
    none = hubness_stats(np.full((3, 2), -1), 3)
    assert (none.skewness, none.antihub_fraction, none.top1pct_share, none.max_occurrence) == (0.0, 1.0, 0.0, 0)


def test_csls_and_mutual_proximity_follow_their_definitions() -> None:
    """CSLS 2 cos - r_q - r_x; mutual proximity the product of the two normal survival functions of the distance
    1 - cos (scipy.stats.norm), each with its own track's mean and spread."""
    from scipy.stats import norm

    from mess.search.hubness import csls, mutual_proximity

    rng = np.random.default_rng(13)
    sim = rng.uniform(-1, 1, (3, 5))
    r_q, r_x = rng.uniform(0, 1, 3), rng.uniform(0, 1, 5)
    want = np.array([[2 * sim[i, j] - r_q[i] - r_x[j] for j in range(5)] for i in range(3)])
    np.testing.assert_allclose(csls(sim, r_q, r_x), want, rtol=1e-12)
    mu_q, mu_x = rng.uniform(0.5, 1.5, 3), rng.uniform(0.5, 1.5, 5)
    sd_q, sd_x = rng.uniform(0.05, 0.5, 3), rng.uniform(0.05, 0.5, 5)
    want = np.array([[norm.sf(1 - sim[i, j], mu_q[i], sd_q[i]) * norm.sf(1 - sim[i, j], mu_x[j], sd_x[j])
                      for j in range(5)] for i in range(3)])
    np.testing.assert_allclose(mutual_proximity(sim, mu_q, sd_q, mu_x, sd_x), want, rtol=1e-9)


def test_hubness_reducer_samples_its_distance_statistics_and_rescores_by_its_method() -> None:
    """Above ``sample`` rows the distance statistics come from a sample of the collection (the rows the seed
    draws, by their ids); at or below it from every row. The reducer rescores by the method it was made for."""
    from scipy.stats import norm

    x, _ = clustered(60, 8, 3, seed=14)
    ids = np.arange(1000, 1060)
    knn = lambda v, kk: exact_knn(x, v, kk)  # noqa: E731
    with pytest.raises(ValueError, match="unknown hubness reduction 'cos'"):
        HubnessReducer("cos", x, knn)
    whole = HubnessReducer("mp", x, knn, base_ids=ids, k=4, sample=60)
    assert whole.sample_ids.tolist() == ids.tolist()
    part = HubnessReducer("mp", x, knn, base_ids=ids, k=4, sample=20, seed=3)
    rows = np.sort(np.random.default_rng(3).choice(60, 20, replace=False))
    assert part.sample_ids.tolist() == ids[rows].tolist()
    np.testing.assert_array_equal(part.sample, x[rows])
    own = ids[rows[:2]]  # two tracks of the sample: each left out of its own statistics
    got = part.stats(x[rows[:2]], own)
    for q in range(2):
        dist = 1 - x[np.delete(rows, q)] @ x[rows[q]]
        assert got.mu[q] == pytest.approx(dist.mean(), rel=1e-5)
        assert got.sd[q] == pytest.approx(dist.std(), rel=1e-4)
    pair = HubnessReducer("mp", x[:2], lambda v, kk: exact_knn(x[:2], v, kk), k=4)  # one other track each
    alone = pair.stats(x[:2], np.arange(2))
    np.testing.assert_allclose(alone.mu, 1 - x[0] @ x[1], rtol=1e-5)
    np.testing.assert_allclose(alone.r, x[0] @ x[1], rtol=1e-5)
    assert (alone.sd > 0).all()
    stats = whole.stats(x[:3])
    sim = x[:3] @ x.T
    items = whole.stats(x)
    want = norm.sf(1 - sim, stats.mu[:, None], stats.sd[:, None]) * norm.sf(1 - sim, items.mu[None], items.sd[None])
    np.testing.assert_allclose(whole.rescore(sim, stats, items), want, rtol=1e-5)
    csls = HubnessReducer("csls", x, knn, k=4)
    np.testing.assert_allclose(csls.rescore(sim, stats, items), 2 * sim - stats.r[:, None] - items.r[None], rtol=1e-6)
