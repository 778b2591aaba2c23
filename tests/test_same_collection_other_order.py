"""One collection extracted twice, its files committed in opposite orders (so every track has another id and every
"rows in id order" matrix another row order), gives the same answers, compared track by track through paths.

Seeded steps (a permutation, a sample, k-means starts, mini-batches) pick rows by position; keyed to content they
pick the same tracks in both stores. The stores hold the dsp run (fast) of :func:`rendered_collection`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mess.audio.windows import WindowPolicy
from mess.extract.pipeline import extract
from mess.models.registry import load_model
from mess.store import FeatureStore, Run


@dataclass(frozen=True)
class Extracted:
    store: FeatureStore
    run: Run

    def path_of(self, track_id: int) -> str:
        return next(t.path for t in self.store.tracks(self.run) if t.id == track_id)


@pytest.fixture(scope="module")
def twins(rendered_collection: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Extracted,
                                                                                                         Extracted]]:
    """The dsp run of the collection in two stores: files committed in the given order, and in a shuffled one (not
    reversed: the collection is 4 x 4 tracks of one composer each, whose reversal mirrors its label blocks)."""
    model = load_model("dsp")
    shuffled = [rendered_collection[i] for i in np.random.default_rng(1).permutation(len(rendered_collection))]
    with ExitStack() as stack:
        out = []
        for name, files in (("given", rendered_collection), ("shuffled", shuffled)):
            store = stack.enter_context(closing(FeatureStore(tmp_path_factory.mktemp(name) / "store")))
            summary = extract(store, files, model, WindowPolicy(), workers=1)
            assert not summary.failed, summary.failed
            out.append(Extracted(store, store.run("dsp")))
        a, b = out
        ids_a = {t.path: t.id for t in a.store.tracks(a.run)}
        ids_b = {t.path: t.id for t in b.store.tracks(b.run)}
        assert ids_a.keys() == ids_b.keys() and ids_a != ids_b  # the same tracks, numbered otherwise
        yield a, b


def test_the_twins_hold_the_same_vectors_under_other_ids(twins: tuple[Extracted, Extracted]) -> None:
    a, b = twins
    rows = []
    for x in (a, b):
        ids, matrix = x.store.layer_matrix(x.run, 0)
        rows.append({x.path_of(int(i)): m for i, m in zip(ids, matrix, strict=True)})
    assert rows[0].keys() == rows[1].keys()
    assert all(np.array_equal(rows[0][p], rows[1][p]) for p in rows[0])


def _by_path(x: Extracted, ids: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    return {x.path_of(int(i)): r for i, r in zip(ids, rows, strict=True)}


# ---------------------------------------------------------------- mess evaluate


def test_evaluate_scores_and_chance_do_not_follow_the_ids(twins: tuple[Extracted, Extracted]) -> None:
    from mess.search.evaluate import evaluate

    a, b = (evaluate(x.store, x.run, "artist", k=3, compare=True) for x in twins)
    assert (a.n_queries, a.n_classes) == (b.n_queries, b.n_classes) and a.n_queries == 16
    for name in ("precision", "map", "ndcg"):
        assert getattr(a.chance, name) == pytest.approx(getattr(b.chance, name), abs=1e-12), name
    for sa, sb in zip(a.sets + a.variants, b.sets + b.variants, strict=True):
        assert (sa.name, sa.metric, sa.hubness) == (sb.name, sb.metric, sb.hubness)
        assert vars(sa.scores) == pytest.approx(vars(sb.scores), abs=1e-9), sa.name
        assert vars(sa.hub) == pytest.approx(vars(sb.hub), abs=1e-9), sa.name


def test_evaluate_samples_the_same_queries_beyond_max_queries(twins: tuple[Extracted, Extracted],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Above MAX_QUERIES (5,000) queries are sampled; made small, 7 of the 16 tracks are."""
    from mess.search import evaluate as module

    monkeypatch.setattr(module, "MAX_QUERIES", 7)
    a, b = (module.evaluate(x.store, x.run, "artist", k=3) for x in twins)
    assert a.n_queries == b.n_queries == 7
    for sa, sb in zip(a.sets, b.sets, strict=True):
        assert vars(sa.scores) == pytest.approx(vars(sb.scores), abs=1e-9), sa.name


# ---------------------------------------------------------------- mess playlist clusters


def test_clusters_hold_the_same_tracks_in_the_same_order(twins: tuple[Extracted, Extracted]) -> None:
    from mess.playlists.clusters import clusters

    a, b = (clusters(x.store, x.run, k=4) for x in twins)
    assert [[t.path for t in p.tracks] for p in a] == [[t.path for t in p.tracks] for p in b]
    assert [p.title for p in a] == [p.title for p in b]
    for pa, pb in zip(a, b, strict=True):
        np.testing.assert_allclose(pa.scores, pb.scores, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- mess fuse train


def test_fusion_trains_the_same_network(twins: tuple[Extracted, Extracted]) -> None:
    import torch

    from mess.fusion.data import load_layers
    from mess.fusion.train import FusionConfig, embed, train_fusion

    config = FusionConfig(fusion_dim=8, hidden_dim=16, common_dim=8, labels_per_batch=2, tracks_per_label=2,
                          weight_epochs=4, max_epochs=2, val_frac=0.0, test_frac=0.5, dropout=0.0)
    fused, weights = [], []
    with torch.random.fork_rng():
        for x in twins:
            data = load_layers(x.store, x.run)
            result = train_fusion(data, config)
            fused.append(_by_path(x, data.track_ids, embed(result.network, data.x)))
            weights.append(result.layer_weights(data.x))
    assert weights[0] == pytest.approx(weights[1], abs=1e-5)
    assert fused[0].keys() == fused[1].keys()
    for path in fused[0]:
        np.testing.assert_allclose(fused[0][path], fused[1][path], atol=1e-4, err_msg=path)


# ---------------------------------------------------------------- mess probe


@pytest.mark.parametrize("probe", ["ridge", "mlp"])
def test_probe_scores_and_shuffled_control_do_not_follow_the_ids(twins: tuple[Extracted, Extracted],
                                                                 probe: str) -> None:
    from mess.probing.study import ProbeOptions, probe_run

    layers = None if probe == "ridge" else ("spectral",)  # an MLP per fold and layer: one layer is enough
    reports = [probe_run(x.store, x.run, ProbeOptions(layers=layers, probe=probe, workers=1)) for x in twins]
    assert reports[0].folds == reports[1].folds
    for condition in ("trained", "shuffled"):
        a, b = (r.conditions[condition] for r in reports)
        np.testing.assert_allclose(a.r2, b.r2, rtol=1e-6, atol=1e-9, err_msg=condition)
        np.testing.assert_allclose(a.r2_std, b.r2_std, rtol=1e-6, atol=1e-9, err_msg=condition)


# ---------------------------------------------------------------- mess artists


def test_artists_are_represented_by_the_same_tracks(twins: tuple[Extracted, Extracted], tmp_path: Path) -> None:
    """Two tracks per artist (of four): which two is chosen by path, not by which the store numbered first."""
    from mess.artists.analysis import ArtistOptions, discrimination, validate_layers

    options = ArtistOptions(model="dsp", max_tracks=2, min_tracks=1)
    names = sorted({t.artist or t.composer or "" for t in twins[0].store.tracks(twins[0].run)} - {""})
    assert len(names) == 4
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps({n: [m for m in names if m != n][:2] for n in names}))
    chosen, validated, reports = [], [], []
    for x in twins:
        run, artists, layer_reports = discrimination(x.store, options)
        chosen.append({p.name: sorted(x.path_of(i) for i in p.track_ids) for p in artists.profiles})
        reports.append([(r.label, r.separation.effect, r.silhouette) for r in layer_reports])
        validation = validate_layers(x.store, reference, 2, options)
        validated.append([(label, vars(m), o) for label, m, o in validation.layers])
    assert chosen[0] == chosen[1]
    assert [r[0] for r in reports[0]] == [r[0] for r in reports[1]]
    assert [r[1:] for r in reports[0]] == pytest.approx([r[1:] for r in reports[1]], abs=1e-9)
    assert [v[0] for v in validated[0]] == [v[0] for v in validated[1]]
    for (_, ma, oa), (_, mb, ob) in zip(*validated, strict=True):
        assert ma == pytest.approx(mb, abs=1e-9) and oa == pytest.approx(ob, abs=1e-9)


def test_artist_silhouette_samples_the_same_tracks(twins: tuple[Extracted, Extracted],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Above SILHOUETTE_SAMPLE (2,000) tracks the silhouette is estimated on a sample of rows; made 8 (of 16), the
    rows (artists by name, each artist's tracks by path) are the same tracks in both stores."""
    from mess.artists import discrimination as module
    from mess.artists.analysis import ArtistOptions, discrimination

    monkeypatch.setattr(module, "SILHOUETTE_SAMPLE", 8)
    a, b = ([(r.label, r.silhouette) for r in discrimination(x.store, ArtistOptions(model="dsp"))[2]] for x in twins)
    assert [label for label, _ in a] == [label for label, _ in b]
    assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-6)


# ---------------------------------------------------------------- mess similar, and samples above a size


def test_similar_tracks_why_percentiles_sample_the_same_tracks(twins: tuple[Extracted, Extracted],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Above PERCENTILE_SAMPLE (20,000) tracks the "why" percentiles rank against a sample; made small, 6 of 15."""
    from mess.search import query as module

    monkeypatch.setattr(module, "PERCENTILE_SAMPLE", 6)
    seed = twins[0].store.tracks(twins[0].run)[0].path
    found = []
    for x in twins:
        neighbours = module.similar_tracks(x.store, x.run, module.collection_query(x.store, seed), 5, ranking="plain")
        found.append([(x.path_of(n.track.id), n.why_percentile) for n in neighbours])
    assert [p for p, _ in found[0]] == [p for p, _ in found[1]]
    assert [w for _, w in found[0]] == [w for _, w in found[1]]


def _unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_hubness_sample_is_drawn_by_content_not_by_row() -> None:
    """Above ``sample`` (2,048) base rows the distance statistics use a sample; with ``keys`` it is the same
    tracks whatever order the rows come in (here 40 rows, a sample of 10)."""
    from mess.search.ann import exact_knn
    from mess.search.hubness import HubnessReducer

    base, keys = _unit_rows(40, 8, 0), np.array([f"{h:08x}" for h in np.random.default_rng(1).permutation(40)])
    queries = _unit_rows(5, 8, 2)
    shuffle = np.random.default_rng(3).permutation(40)
    stats = []
    for rows in (np.arange(40), shuffle):
        b = base[rows]
        reducer = HubnessReducer("mp", b, lambda v, kk, b=b: exact_knn(b, v, kk), k=3, sample=10, keys=keys[rows])
        stats.append(reducer.stats(queries))
    np.testing.assert_allclose(stats[0].mu, stats[1].mu, rtol=1e-6)
    np.testing.assert_allclose(stats[0].sd, stats[1].sd, rtol=1e-6)
    # the sample is a tenth of the rows: drawn by row, one order against the other gives other statistics
    positional = [HubnessReducer("mp", base[rows], lambda v, kk: (v[:, :kk], np.zeros((len(v), kk), int)), k=3,
                                 sample=10).stats(queries).mu for rows in (np.arange(40), shuffle)]
    assert not np.allclose(*positional)


def test_ann_index_is_built_by_content_not_by_row() -> None:
    """An IVF index trains its lists and tunes its breadth on rows drawn by position; with ``keys`` the same
    collection in another row order gives the same index (breadth, recall and the neighbours a narrow search
    finds)."""
    from mess.search.ann import AnnIndex

    vectors, ids = _unit_rows(300, 16, 0), np.arange(300) + 1000
    keys = np.array([f"{h:08x}" for h in np.random.default_rng(1).permutation(300)])
    shuffle = np.random.default_rng(2).permutation(300)
    queries = _unit_rows(20, 16, 3)
    built = [AnnIndex.build(vectors[rows], ids[rows], "ivf", keys=keys[rows]) for rows in (np.arange(300), shuffle)]
    assert (built[0].breadth, built[0].recall) == (built[1].breadth, built[1].recall)
    np.testing.assert_array_equal(built[0].search(queries, 5, breadth=1)[1], built[1].search(queries, 5, breadth=1)[1])
    plain = [AnnIndex.build(vectors[rows], ids[rows], "ivf") for rows in (np.arange(300), shuffle)]
    assert not np.array_equal(plain[0].search(queries, 5, breadth=1)[1], plain[1].search(queries, 5, breadth=1)[1])


# ---------------------------------------------------------------- benchmarks/head.py


def test_learned_head_and_its_bootstrap_do_not_follow_the_ids(twins: tuple[Extracted, Extracted]) -> None:
    """The head benchmark's data: the PCA start, the head's seeded window batches and the bootstrap over queries."""
    from mess.fusion.head import HeadConfig, fit_head, load_head_data
    from mess.fusion.head_eval import bootstrap, score_fixed

    config = HeadConfig(dims=6, steps=20, batch=4, lr=0.05)  # a few training windows a step
    out, intervals = [], []
    for x in twins:
        data = load_head_data(x.store, x.run, {t.id: t.composer or "" for t in x.store.tracks(x.run)})
        rows = np.flatnonzero(data.labels != data.labels[0])
        out.append(_by_path(x, data.track_ids, fit_head(data, rows, config).transform(data.x)))
        intervals.append(vars(bootstrap(score_fixed("all", data.x, x.run.layer_dims, data.labels).ap, n=200)))
    assert out[0].keys() == out[1].keys()
    for path in out[0]:
        np.testing.assert_allclose(out[0][path], out[1][path], rtol=1e-4, atol=1e-5, err_msg=path)
    assert intervals[0] == pytest.approx(intervals[1], abs=1e-9)


# ---------------------------------------------------------------- copies of one file in mess similar


@pytest.fixture(scope="module")
def copied_twins(rendered_collection: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[Extracted, Extracted]]:
    """Six files, each in folders a/ and b/ (copies: one content hash, two paths), committed in opposite orders."""
    import shutil

    folder = tmp_path_factory.mktemp("copies")
    files = []
    for f in rendered_collection[:6]:
        for sub in ("a", "b"):
            (folder / sub).mkdir(exist_ok=True)
            files.append(Path(shutil.copy(f, folder / sub / f.name)))
    model = load_model("dsp")
    with ExitStack() as stack:
        out = []
        for name, order in (("given", files), ("reversed", files[::-1])):
            store = stack.enter_context(closing(FeatureStore(folder / f"store-{name}")))
            assert not extract(store, order, model, WindowPolicy(), workers=1).failed
            out.append(Extracted(store, store.run("dsp")))
        yield out[0], out[1]


@pytest.mark.parametrize("ranking", ["plain", "augmented"])
def test_similar_lists_copies_of_one_file_in_path_order(copied_twins: tuple[Extracted, Extracted],
                                                         ranking: str) -> None:
    """Copies score alike: the answer lists (and cuts at k) the one under a/ before the one under b/."""
    from mess.search.query import collection_query, similar_tracks

    seed = str(copied_twins[0].store.tracks(copied_twins[0].run)[0].path)
    found = [[x.path_of(n.track.id) for n in similar_tracks(x.store, x.run, collection_query(x.store, seed), 4,
                                                            ranking=ranking)] for x in copied_twins]
    assert found[0] == found[1]
    by_name: dict[str, list[str]] = {}
    for path in found[0]:
        by_name.setdefault(Path(path).name, []).append(Path(path).parent.name)
    assert all(folders == sorted(folders) for folders in by_name.values())
    assert len(found[0]) == 4 and list(by_name.values())[-1] == ["a"]  # the 4th place: a/'s copy, b/'s cut off
