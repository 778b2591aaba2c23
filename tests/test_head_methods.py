"""Head trainers (PCA start, LDA, learned head), their leave-one-label-out scores and fusion's retrieval scores, on
synthetic vectors whose answer is planted: no extraction, a few seconds."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import pytest

from mess.audio.windows import WindowPolicy
from mess.fusion.data import FusionError
from mess.fusion.head import HeadConfig, HeadData, fit_head, lda_head, pca_head
from mess.fusion.head_eval import bootstrap, score_fixed, score_logo
from mess.models.head import Head
from mess.store import Run


def _synthetic(n_labels: int = 4, per_label: int = 5, windows: int = 3, dims: tuple[int, ...] = (6, 10),
               seed: int = 0) -> HeadData:
    """Tracks of ``n_labels`` labels, each the mean of its 1 to ``windows`` window vectors (so the mean track is not
    the mean window); the two layers lie on wildly different scales and offsets (x100 + 50, x0.01 - 3), so an
    unstandardised PCA would see the first one only."""
    rng = np.random.default_rng(seed)
    total = sum(dims)
    labels = np.repeat([f"label{i}" for i in range(n_labels)], per_label)
    centres = 2.0 * rng.normal(size=(n_labels, total))[np.repeat(np.arange(n_labels), per_label)]
    seg_row = np.repeat(np.arange(len(labels)), 1 + np.arange(len(labels)) % windows)
    seg = centres[seg_row] + rng.normal(size=(len(seg_row), total))
    layer_scale = np.repeat([100.0, 0.01], dims)
    layer_shift = np.repeat([50.0, -3.0], dims)
    seg_x = (seg * layer_scale + layer_shift).astype(np.float32)
    x = np.stack([seg_x[seg_row == r].mean(axis=0) for r in range(len(labels))]).astype(np.float32)
    run = Run("synthetic", "r1", WindowPolicy().to_json(), 16000, tuple(f"l{i}" for i in range(len(dims))), dims,
              id=1)
    ids = np.arange(1, len(labels) + 1)
    return HeadData(run, ids, np.array([f"h{i}" for i in ids]), labels, x, seg_x, seg_row)


def _blocks(z: np.ndarray, dims: tuple[int, ...]) -> list[np.ndarray]:
    return np.split(z, np.cumsum(dims)[:-1], axis=1)


def test_head_config_takes_its_smallest_valid_values_and_refuses_below() -> None:
    HeadConfig(dims=2, hidden=0, temperature=1e-3, steps=0, batch=2)
    for wrong in ({"dims": 1}, {"hidden": -1}, {"temperature": 0.0}, {"steps": -1}, {"batch": 1}):
        with pytest.raises(ValueError, match="invalid head config"):
            HeadConfig(**wrong)


def test_head_data_hash_is_of_the_rows_labels_and_run_not_their_order() -> None:
    data = _synthetic()
    rows = np.arange(len(data.labels))
    assert data.data_hash() == data.data_hash(rows[::-1]) == data.data_hash(rows)
    assert data.data_hash(rows[:-1]) != data.data_hash()
    relabelled = replace(data, labels=np.where(rows == 0, "label3", data.labels))
    assert relabelled.data_hash() != data.data_hash()
    other_run = replace(data, run=replace(data.run, layer_names=("l0", "other")))
    assert other_run.data_hash() != data.data_hash()


@pytest.mark.parametrize("per_dim", [False, True])
def test_pca_head_gives_each_layer_equal_variance_from_its_rows_windows_and_projects_on_principal_axes(
        per_dim: bool) -> None:
    from sklearn.decomposition import PCA

    data = _synthetic()
    dims = data.run.layer_dims
    rows = np.flatnonzero(data.labels != "label3")
    head = pca_head(data, rows, dims=4, per_dim=per_dim)
    seg = data.seg_x[np.isin(data.seg_row, rows)].astype(np.float64)
    z = head.standardise(seg).astype(np.float64)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-3)
    for block, width in zip(_blocks(z, dims), dims, strict=True):
        if per_dim:  # every dimension: variance 1 / width
            np.testing.assert_allclose(block.std(axis=0) * np.sqrt(width), 1, rtol=1e-3)
        np.testing.assert_allclose((block**2).sum(axis=1).mean(), 1, rtol=1e-3)  # every layer: variance 1
    # the windows of the rows left out play no part
    moved = replace(data, seg_x=np.where(np.isin(data.seg_row, rows)[:, None], data.seg_x, 1e4).astype(np.float32))
    same = pca_head(moved, rows, dims=4, per_dim=per_dim)
    np.testing.assert_array_equal(same.mean, head.mean)
    np.testing.assert_array_equal(same.scale, head.scale)
    pca = PCA(n_components=4).fit(head.standardise(data.x[rows]))
    np.testing.assert_allclose(np.abs(head.proj.T @ pca.components_.T), np.eye(4), atol=1e-3)  # same axes
    assert head.meta == {"method": "pca", "dims": 4} and head.dim == 4
    few = pca_head(data, rows[:3], dims=4, per_dim=per_dim)  # 3 tracks span no more than 3 axes
    assert few.meta["dims"] == few.dim == 3


def test_pca_head_gives_a_constant_dimension_no_weight_and_no_nan() -> None:
    data = _synthetic()
    flat = data.seg_x.copy()
    flat[:, 1] = 7.0
    data = replace(data, seg_x=flat, x=np.where(np.arange(flat.shape[1]) == 1, 7.0, data.x).astype(np.float32))
    head = pca_head(data, np.arange(len(data.labels)), dims=4, per_dim=True)
    z = head.standardise(data.seg_x)
    assert np.isfinite(z).all() and np.all(z[:, 1] == 0)
    assert head.scale[1] == pytest.approx(np.sqrt(data.run.layer_dims[0]))


def test_lda_head_separates_two_labels_on_one_axis_that_pca_ranks_low() -> None:
    """Two labels told apart along one quiet direction of the second layer; a loud label-free direction of the same
    layer is PCA's first axis. LDA's single output (labels - 1) orders every track of one label before the other's."""
    rng = np.random.default_rng(4)
    n = 40
    labels = np.repeat(["a", "b"], n // 2)
    x = 0.05 * rng.normal(size=(n, 8))
    x[:, 4] += np.where(labels == "a", -1.0, 1.0)  # the label
    x[:, 5] += 10.0 * rng.normal(size=n)  # loud nuisance
    run = Run("synthetic", "r1", WindowPolicy().to_json(), 16000, ("l0", "l1"), (4, 4), id=1)
    ids = np.arange(n)
    data = HeadData(run, ids, ids.astype(str), labels, x.astype(np.float32), x.astype(np.float32), ids)
    lda = lda_head(data, ids, dims=6)
    assert lda.dim == 1 and lda.meta == {"method": "lda", "dims": 1}
    out = lda.transform(data.x)[:, 0]
    a, b = out[labels == "a"], out[labels == "b"]
    assert a.max() < b.min() or b.max() < a.min()
    first = pca_head(data, ids, dims=1).transform(data.x)[:, 0]
    assert not (first[labels == "a"].max() < first[labels == "b"].min()
                or first[labels == "b"].max() < first[labels == "a"].min())
    three = _synthetic(n_labels=3)
    assert lda_head(three, np.arange(len(three.labels)), dims=6).dim == 2  # labels - 1 axes


def _supcon_reference(z: np.ndarray, label: np.ndarray, track: np.ndarray, config: HeadConfig) -> float:
    """The supervised-contrastive loss written out one anchor at a time: softmax over the other windows of the batch,
    positives weighted label_weight (same label) plus track_weight (same track), anchors without one left out."""
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    losses = []
    for i in range(len(z)):
        others = [j for j in range(len(z)) if j != i]
        sims = np.array([z[i] @ z[j] / config.temperature for j in others])
        log_prob = sims - np.log(np.exp(sims).sum())
        weight = np.array([config.label_weight * (label[i] == label[j]) + config.track_weight * (track[i] == track[j])
                           for j in others])
        if weight.sum() > 0:
            losses.append(-(weight * log_prob).sum() / weight.sum())
    return float(np.mean(losses))


def test_supcon_loss_matches_a_loop_reference() -> None:
    import torch

    from mess.fusion.head import _supcon

    rng = np.random.default_rng(2)
    z = rng.normal(size=(12, 5))
    label = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 4, 4, 5])  # labels 3 and 5: one window, no positive
    track = np.array([0, 0, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9])
    for config in (HeadConfig(), HeadConfig(temperature=0.5, label_weight=0.3, track_weight=2.0),
                   HeadConfig(label_weight=0.0, track_weight=1.0)):
        got = _supcon(torch.tensor(z, dtype=torch.float64), torch.tensor(label), torch.tensor(track), config)
        assert float(got) == pytest.approx(_supcon_reference(z, label, track, config), rel=1e-6)


def test_fit_head_starts_from_pca_pulls_same_label_windows_together_and_keeps_near_its_anchor(
        one_torch_thread) -> None:  # noqa: ANN001
    data = _synthetic(n_labels=5, per_label=4)
    rows = np.flatnonzero(data.labels != "label4")
    start = pca_head(data, rows, dims=6)
    for hidden in (0, 8):  # no step: the PCA start (the residual layer starts at zero)
        same = fit_head(data, rows, HeadConfig(dims=6, hidden=hidden, steps=0))
        np.testing.assert_allclose(same.transform(data.x), start.transform(data.x), rtol=1e-5, atol=1e-5)
        assert same.meta["method"] == "learned" and (same.w1 is None) == (hidden == 0)
    seg = np.isin(data.seg_row, rows)
    config = HeadConfig(dims=6, hidden=8, steps=40, batch=32, anchor=0.0, temperature=0.5, lr=3e-2)

    def loss(head: Head) -> float:
        out = head.transform(data.seg_x[seg])
        return _supcon_reference(out, data.labels[data.seg_row[seg]], data.seg_row[seg], config)

    trained = fit_head(data, rows, config)
    assert loss(trained) < loss(start) - 0.05, (loss(trained), loss(start))
    again = fit_head(data, rows, config)
    np.testing.assert_array_equal(again.transform(data.x), trained.transform(data.x))  # seeded
    assert again.meta["config"] == asdict(config)
    anchored = fit_head(data, rows, replace(config, hidden=0, anchor=1e4, lr=1e-3))
    free = fit_head(data, rows, replace(config, hidden=0, lr=1e-3))
    drift = [np.abs(h.proj - start.proj).max() for h in (anchored, free)]
    assert drift[0] < 0.2 * drift[1], drift
    with pytest.raises(FusionError, match="at least 2 labels"):
        fit_head(data, np.flatnonzero(data.labels == "label0"), config)


def _unit_reference(raw: np.ndarray, blocks: tuple[int, ...]) -> np.ndarray:
    """Centre on the collection, then L2-normalise each block: the search's default, written out."""
    centred = raw - raw.mean(axis=0)
    return np.hstack([b / np.linalg.norm(b, axis=1, keepdims=True) for b in _blocks(centred, blocks)])


def _sklearn_scores(unit: np.ndarray, labels: np.ndarray, rows: np.ndarray, k_p: int, k_n: int) -> tuple:
    from sklearn.metrics import average_precision_score, ndcg_score

    ap, p, nd = [], [], []
    for r in rows:
        others = np.delete(np.arange(len(labels)), r)
        sims, rel = unit[others] @ unit[r], (labels[others] == labels[r]).astype(int)
        ap.append(average_precision_score(rel, sims))
        p.append(rel[np.argsort(-sims)][:k_p].sum() / k_p)
        nd.append(ndcg_score(rel[None], sims[None], k=k_n))
    return np.array(ap), np.array(p), np.array(nd)


def test_fixed_and_leave_one_label_out_scores_agree_with_sklearn_per_query() -> None:
    rng = np.random.default_rng(5)
    labels = np.repeat(["a", "b", "c", "d"], [3, 4, 5, 3])
    raw = (rng.normal(size=(4, 9))[np.searchsorted(np.unique(labels), labels)] + rng.normal(size=(15, 9))) * 3 + 5
    blocks = (4, 5)
    fixed = score_fixed("raw", raw, blocks, labels, k_p=3, k_n=4)
    want = _sklearn_scores(_unit_reference(raw, blocks), labels, np.arange(len(labels)), 3, 4)
    for got, expected in zip((fixed.ap, fixed.precision, fixed.ndcg), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert fixed.name == "raw"
    seen = []

    def identity(data: HeadData, rows: np.ndarray) -> Head:
        seen.append(rows)
        return Head("m", ("l",), (9,), np.zeros(9), np.ones(9), np.eye(9))

    run = Run("m", "r1", WindowPolicy().to_json(), 16000, ("l",), (9,), id=1)
    ids = np.arange(len(labels))
    data = HeadData(run, ids, ids.astype(str), labels, raw.astype(np.float32), raw.astype(np.float32), ids)
    logo = score_logo("identity", data, identity, k_p=3, k_n=4)
    want = _sklearn_scores(_unit_reference(raw, (9,)), labels, ids, 3, 4)
    for got, expected in zip((logo.ap, logo.precision, logo.ndcg), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert [sorted(set(labels) - set(labels[r])) for r in seen] == [["a"], ["b"], ["c"], ["d"]]
    assert all(len(r) == len(labels) - (labels == held).sum() for r, held in zip(seen, "abcd", strict=True))
    # a trainer that learns from its rows: each label's queries are scored by the head trained without it
    by_pca = score_logo("pca", data, lambda d, r: pca_head(d, r, dims=3), k_p=3, k_n=4)
    for held in "abcd":
        rows = np.flatnonzero(labels == held)
        out = pca_head(data, np.flatnonzero(labels != held), dims=3).transform(data.x)
        want = _sklearn_scores(_unit_reference(out, (3,)), labels, rows, 3, 4)
        for got, expected in zip((by_pca.ap, by_pca.precision, by_pca.ndcg), want, strict=True):
            np.testing.assert_allclose(got[rows], expected, rtol=1e-5, atol=1e-6)


def test_fixed_and_leave_one_label_out_scores_default_to_precision_at_5_and_ndcg_at_10() -> None:
    """benchmarks/head.py reports the shipped head's p@5 and ndcg@10 from these defaults, which no test fixed."""
    rng = np.random.default_rng(11)
    labels = np.repeat(["a", "b", "c", "d"], [6, 7, 5, 6])
    raw = rng.normal(size=(4, 8))[np.searchsorted(np.unique(labels), labels)] + 1.5 * rng.normal(size=(24, 8))
    rows = np.arange(len(labels))
    for blocks in ((3, 5), (8,)):  # k = 6 or 11 would give other scores
        want = _sklearn_scores(_unit_reference(raw, blocks), labels, rows, 5, 10)
        other = _sklearn_scores(_unit_reference(raw, blocks), labels, rows, 6, 11)
        assert not np.allclose(want[1], other[1]) and not np.allclose(want[2], other[2])
    fixed = score_fixed("raw", raw, (3, 5), labels)
    run = Run("m", "r1", WindowPolicy().to_json(), 16000, ("l",), (8,), id=1)
    data = HeadData(run, rows, rows.astype(str), labels, raw.astype(np.float32), raw.astype(np.float32), rows)
    logo = score_logo("identity", data, lambda d, r: Head("m", ("l",), (8,), np.zeros(8), np.ones(8), np.eye(8)))
    for scores, blocks in ((fixed, (3, 5)), (logo, (8,))):
        want = _sklearn_scores(_unit_reference(raw, blocks), labels, rows, 5, 10)
        for got, expected in zip((scores.ap, scores.precision, scores.ndcg), want, strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_bootstrap_interval_is_the_central_95_percent_of_resampled_means() -> None:
    rng = np.random.default_rng(7)
    values = rng.normal(10.0, 2.0, size=400)
    iv = bootstrap(values)
    se = values.std() / np.sqrt(len(values))  # the normal approximation the bootstrap tends to
    assert iv.mean == pytest.approx(values.mean())
    assert iv.low == pytest.approx(values.mean() - 1.96 * se, abs=0.15 * se)
    assert iv.high == pytest.approx(values.mean() + 1.96 * se, abs=0.15 * se)
    ratio = bootstrap(values, values / 2)
    assert (ratio.mean, ratio.low, ratio.high) == pytest.approx((2.0, 2.0, 2.0))
    assert str(iv) == f"{iv.mean:.3f} [{iv.low:.3f}, {iv.high:.3f}]"
    assert bootstrap(values, seed=1) != iv and bootstrap(values) == iv
    outlier = bootstrap(np.r_[100.0, np.zeros(9)])  # every value may be drawn, the first too
    assert outlier.low == 0.0 and outlier.high > 0.0


def test_fusion_retrieval_scores_agree_with_sklearn_and_skip_labels_of_one_track() -> None:
    from mess.fusion import evaluate

    rng = np.random.default_rng(8)
    labels = np.array(["a", "a", "a", "b", "b", "c", "c", "c", "c", "d"])  # d: one track, never a query
    unit = _unit_reference(rng.normal(size=(10, 6)) + np.eye(10, 6) * 2, (6,))
    queries = np.flatnonzero(labels != "d")
    ap, p, nd = _sklearn_scores(unit, labels, queries, 3, 3)
    got = evaluate.scores(unit, labels, k=3)
    assert (got.k, got.precision, got.map, got.ndcg) == pytest.approx((3, p.mean(), ap.mean(), nd.mean()))
    np.testing.assert_allclose(evaluate.ndcg_per_query(unit, labels, k=3), nd)
    assert evaluate.relevance(unit, labels).shape == (len(queries), len(labels) - 1)
    assert evaluate.scores(unit[:5], labels[:5]).map > 0  # two labels: the fewest that rank anything
    for wrong in (np.array(["a"] * 10), np.array(list("abcdefghij"))):  # one label; no label of two tracks
        with pytest.raises(ValueError, match="at least 2 labels"):
            evaluate.scores(unit, wrong)
