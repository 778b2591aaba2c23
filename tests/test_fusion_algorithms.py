"""Fusion building blocks on synthetic clustered layer vectors: network, mining, splits, training, checkpoints."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mess.audio.windows import WindowPolicy
from mess.fusion import evaluate
from mess.fusion.apply import check_compatible
from mess.fusion.data import FusionError, LabelSplit, LayerData, split_labels
from mess.fusion.mining import PKSampler, triplet_loss
from mess.fusion.network import LayerFusion
from mess.fusion.report import compare
from mess.fusion.train import (
    MAX_RATE,
    EpochLog,
    FusionConfig,
    FusionResult,
    StoppedBeforeFirstEpoch,
    checkpoint_path,
    checkpoint_problem,
    embed,
    initial_network,
    load_checkpoint,
    save_checkpoint,
    saved_checkpoint,
    train_fusion,
)
from mess.store import Run, Track

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small batches: fastest, reproducible


def clustered(n_labels: int = 40, per_label: int = 6, dims: tuple[int, ...] = (24, 24, 24, 24, 24),
              informative: int = 2, seed: int = 0) -> LayerData:
    """Tracks whose label shows only in layer ``informative``; the other layers hold a label-free nuisance."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_labels), per_label)
    nuisance = rng.normal(size=(12, 8))[rng.integers(0, 12, len(labels))]
    parts = []
    for i, dim in enumerate(dims):
        noise = rng.normal(size=(len(labels), dim))
        if i == informative:
            parts.append(2.0 * rng.normal(size=(n_labels, dim))[labels] + noise)
        else:
            parts.append(3.0 * nuisance @ rng.normal(size=(8, dim)) + noise)
    run = Run("synthetic", "r1", WindowPolicy().to_json(), 16000, tuple(f"l{i}" for i in range(len(dims))), dims, id=1)
    tracks = [Track(i, f"/x/{i}.wav", f"h{i}", 30.0, f"artist{lab}", None, None, None, None)
              for i, lab in enumerate(labels)]
    return LayerData(run, tracks, np.hstack(parts).astype(np.float32))


# ---- network -----------------------------------------------------------------------


@pytest.mark.parametrize("dims, gated", [((16, 16, 16), False), ((40, 24, 6), False), ((16, 16, 16), True)])
def test_network_outputs_unit_vectors_and_softmax_weights(dims: tuple[int, ...], gated: bool) -> None:
    net = LayerFusion(dims, fusion_dim=8, hidden_dim=16, common_dim=12, gated=gated)
    x = torch.randn(5, sum(dims))
    out = net(x)
    assert out.shape == (5, 8)
    assert torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)
    weights = net.weights(net.layer_vectors(x))
    assert weights.shape == (5, len(dims))
    assert torch.allclose(weights.sum(dim=1), torch.ones(5), atol=1e-6)
    rows_differ = not torch.allclose(weights[0], weights[1])
    assert rows_differ == gated  # only the gating MLP makes weights depend on the track


_LAYER_WEIGHTS_MEMORY = """
import resource, sys, numpy as np, torch
from mess.fusion.network import LayerFusion
x = np.random.default_rng(0).random((40000, 13 * 256), dtype=np.float32)  # any values; every page written
net = LayerFusion((256,) * 13, 64, gated=sys.argv[1] == "gated").eval()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
weights = net.mean_weights(torch.from_numpy(x))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 / x.nbytes, float(weights.sum()))
"""


@pytest.mark.parametrize("gated", ["gated", "static"])
def test_mean_layer_weights_of_a_collection_take_little_memory_beyond_it(gated: str) -> None:
    """`fuse apply`, `fuse report` and `fuse train`'s summary took the mean layer weights over every track at once:
    3.3x the collection's vectors more memory (12 GiB more for 100,000 tracks of 13 x 768), where fusing them
    (:func:`embed`) goes 4096 tracks at a time. Measured in a fresh process (peak RSS)."""
    done = subprocess.run([sys.executable, "-c", _LAYER_WEIGHTS_MEMORY, gated], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
    growth, total = map(float, done.stdout.split())
    assert growth < 1.0 and total == pytest.approx(1.0, abs=1e-5), done.stdout


def test_mean_layer_weights_are_the_mean_over_tracks() -> None:
    net = LayerFusion((16, 16, 16), fusion_dim=8, hidden_dim=16, gated=True)
    x = torch.randn(10, 48)
    assert torch.allclose(net.mean_weights(x, batch=3), net.weights(net.layer_vectors(x)).mean(dim=0), atol=1e-6)


@pytest.mark.parametrize("n_tracks", [3, 50])
def test_fit_projection_is_orthonormal_and_starts_on_principal_directions(n_tracks: int) -> None:
    torch.manual_seed(0)
    net = LayerFusion((16, 16), fusion_dim=8)
    x = torch.randn(n_tracks, 32) * torch.linspace(0.1, 3.0, 32)
    net.set_standardisation(torch.randn(200, 32))
    net.fit_projection(x)
    w = net.project.weight.detach()
    assert torch.allclose(w @ w.T, torch.eye(8), atol=1e-5)
    mixed = net.mix(x).detach()
    top = torch.linalg.svd(mixed, full_matrices=False).Vh[0]
    assert abs(float(w[0] @ top)) == pytest.approx(1.0, abs=1e-4)


# ---- mining ------------------------------------------------------------------------


def _reference_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float, mining: str) -> float:
    """Loop-by-loop FaceNet semi-hard / batch-hard triplet loss, to check the vectorised one."""
    d = torch.cdist(emb, emb).pow(2)
    n, losses = len(labels), []
    for a in range(n):
        pos = [p for p in range(n) if p != a and labels[p] == labels[a]]
        neg = [q for q in range(n) if labels[q] != labels[a]]
        if not pos or not neg:
            continue
        if mining == "batch-hard":
            losses.append(max(0.0, max(d[a, p] for p in pos) - min(d[a, q] for q in neg) + margin))
            continue
        for p in pos:
            farther = [d[a, q] for q in neg if d[a, q] > d[a, p]]
            d_an = min(farther) if farther else max(d[a, q] for q in neg)
            losses.append(max(0.0, float(d[a, p] - d_an + margin)))
    return float(np.mean([float(v) for v in losses]))


@pytest.mark.parametrize("mining", ["semi-hard", "batch-hard"])
def test_triplet_loss_matches_loop_reference(mining: str) -> None:
    torch.manual_seed(1)
    emb = torch.nn.functional.normalize(torch.randn(12, 5), dim=1)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 3])
    loss, active = triplet_loss(emb, labels, margin=0.5, mining=mining)
    assert float(loss) == pytest.approx(_reference_loss(emb, labels, 0.5, mining), rel=1e-5)
    assert 0.0 < active <= 1.0


def test_triplet_loss_is_zero_for_separated_clusters_and_rejects_unknown_mining() -> None:
    emb = torch.eye(3).repeat_interleave(2, dim=0)  # identical within a label, orthogonal across
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss, active = triplet_loss(emb, labels, margin=0.5)
    assert float(loss) == 0.0 and active == 0.0
    with pytest.raises(ValueError):
        triplet_loss(emb, labels, mining="easy")


def test_pk_sampler_draws_p_labels_times_k_distinct_tracks_deterministically() -> None:
    labels = np.repeat(np.arange(10), [5, 5, 5, 5, 5, 5, 5, 5, 3, 1])
    batches = list(PKSampler(labels, p=4, k=4, seed=3).batches(20))
    again = list(PKSampler(labels, p=4, k=4, seed=3).batches(20))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=False))
    for batch in batches:
        assert len(set(batch.tolist())) == len(batch)  # no track twice
        chosen, counts = np.unique(labels[batch], return_counts=True)
        assert len(chosen) == 4 and 9 not in chosen  # the single-track label never anchors
        assert all(c == min(4, (labels == lab).sum()) for lab, c in zip(chosen, counts, strict=False))
    with pytest.raises(ValueError):
        PKSampler(np.array([0, 0, 1]), p=2, k=2, seed=0)


@pytest.mark.parametrize("mining", ["semi-hard", "batch-hard"])
def test_triplet_loss_skips_anchors_without_a_positive_and_a_batch_without_a_triplet(mining: str) -> None:
    """A track alone with its label in the batch anchors no triplet (the loop reference skips it); a batch of one
    label has no negative: its loss is 0, not the NaN mean of no triplets, and back-propagates zeros."""
    torch.manual_seed(2)
    emb = torch.nn.functional.normalize(torch.randn(9, 5), dim=1).requires_grad_()
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])  # label 3 alone
    loss, _ = triplet_loss(emb, labels, margin=0.5, mining=mining)
    assert float(loss.detach()) == pytest.approx(_reference_loss(emb.detach(), labels, 0.5, mining), rel=1e-5)
    alone, active = triplet_loss(emb, torch.zeros(9, dtype=torch.long), margin=0.5, mining=mining)
    alone.backward()
    assert float(alone.detach()) == 0.0 and active == 0.0
    assert emb.grad is not None and torch.equal(emb.grad, torch.zeros_like(emb))


def test_pk_sampler_takes_two_labels_the_fewest_mining_needs() -> None:
    labels = np.array([0, 0, 1, 1, 1, 2])  # label 2 has one track: it never anchors
    batch = next(PKSampler(labels, p=4, k=2, seed=0).batches(1))
    chosen, counts = np.unique(labels[batch], return_counts=True)
    assert chosen.tolist() == [0, 1] and counts.tolist() == [2, 2]


def test_semi_hard_negatives_lie_strictly_farther_than_the_positive() -> None:
    """FaceNet's semi-hard negative is farther than the positive; one exactly as far is not semi-hard. Squared
    distances: 2 between orthogonal unit vectors, 4 between opposite ones. Anchor 0 (positive 1 at 2) has negative 2
    at 2, a tie, and 3 at 4: 3 is its negative, loss max(0, 2 - 4 + 0.5) = 0; anchor 3 likewise; anchors 1 and 2 have
    no farther negative, so the farthest (at 2) gives 0.5: mean 0.25 (a tie taken as semi-hard gave 0.5)."""
    e = torch.eye(3)
    emb = torch.stack([e[0], e[1], e[2], -e[0]])
    labels = torch.tensor([0, 0, 1, 1])
    loss, active = triplet_loss(emb, labels, margin=0.5, mining="semi-hard")
    assert float(loss) == pytest.approx(0.25) == _reference_loss(emb, labels, 0.5, "semi-hard")
    assert active == 0.5


# ---- splits ------------------------------------------------------------------------


def test_split_labels_is_disjoint_deterministic_and_holds_out_enough() -> None:
    labels = np.array([f"a{i % 20}" for i in range(100)] + ["lonely", None], dtype=object)
    split = split_labels(labels, 0.15, 0.15, seed=7)
    parts = [set(split.train), set(split.val), set(split.test)]
    assert all(not (a & b) for a, b in itertools.combinations(parts, 2))
    assert set().union(*parts) == {f"a{i}" for i in range(20)}  # singletons and untagged tracks left out
    assert len(split.test) == 3 and len(split.val) == 3
    assert split == split_labels(labels, 0.15, 0.15, seed=7)
    assert split != split_labels(labels, 0.15, 0.15, seed=8)
    rows = split.rows(labels, "test")
    assert set(labels[rows]) == set(split.test)


def test_split_labels_drops_validation_for_few_labels_and_refuses_too_few() -> None:
    four = np.repeat(["a", "b", "c", "d"], 4).astype(object)
    split = split_labels(four, 0.15, 0.15, seed=0)
    assert (len(split.train), len(split.val), len(split.test)) == (2, 0, 2)
    with pytest.raises(FusionError, match=r"found 3 \(12 of 12 tracks have a label\)"):
        split_labels(four[:12], 0.15, 0.15, seed=0)
    with pytest.raises(FusionError, match=r"found 0 \(0 of 3 tracks have a label\)"):  # no track has the tag
        split_labels(np.array(["", "", ""], dtype=object), 0.15, 0.15, seed=0)


def test_split_labels_keeps_validation_while_two_labels_train_and_leaves_it_out_when_asked() -> None:
    """Six labels of two tracks (the fewest a label needs): two each for test and validation (their floor) leave two
    to train, enough to keep validation; --val-frac 0 asks for none."""
    six = np.repeat([f"l{i}" for i in range(6)], 2).astype(object)
    split = split_labels(six, 0.15, 0.15, seed=1)
    assert (len(split.train), len(split.val), len(split.test)) == (2, 2, 2)
    assert sorted(split.train + split.val + split.test) == [f"l{i}" for i in range(6)]
    unvalidated = split_labels(six, 0.0, 0.15, seed=1)
    assert (len(unvalidated.train), len(unvalidated.val), len(unvalidated.test)) == (4, 0, 2)
    assert unvalidated.to_json() == {"train": list(unvalidated.train), "val": [], "test": list(unvalidated.test)}
    assert set(six[unvalidated.rows(six, "train")]) == set(unvalidated.train)
    assert unvalidated.rows(six, "val").size == 0


# ---- training ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained() -> tuple[LayerData, object]:
    """A unit test of the training loop on clustered synthetic data that plants its answer (layer l2).

    Not a quality figure: real-music quality is measured by benchmarks/quality.py (docs/quality.md).
    """
    data = clustered()
    config = FusionConfig(fusion_dim=16, hidden_dim=32, common_dim=16, labels_per_batch=8, tracks_per_label=4,
                          weight_epochs=8, max_epochs=15, patience=5, val_frac=0.2, test_frac=0.25, seed=0)
    return data, train_fusion(data, config)


def test_training_lowers_loss_and_finds_the_informative_layer(trained: tuple) -> None:
    data, result = trained
    losses = [h.loss for h in result.history[1:]]
    assert losses[-1] < 0.5 * losses[0]
    weights = result.layer_weights(data.x)
    assert max(weights, key=weights.get) == "l2"
    assert weights["l2"] > 0.5
    vals = [h.val_ndcg for h in result.history]
    assert result.history[result.best_epoch].val_ndcg == max(vals) > vals[0]


def test_held_out_labels_retrieve_better_than_untrained_and_all_layers(trained: tuple) -> None:
    data, result = trained
    labels = data.labels("artist")
    test = result.split.rows(labels, "test")
    assert not set(labels[test]) & set(labels[result.split.rows(labels, "train")])
    untrained = initial_network(result.config, data.run.layer_dims, torch.from_numpy(data.x))
    fused = evaluate.scores(embed(result.network, data.x[test]), labels[test]).map
    before = evaluate.scores(embed(untrained, data.x[test]), labels[test]).map
    assert fused > before + 0.2
    report = compare(result, data)
    assert report.score("fused").map == pytest.approx(fused, abs=1e-3)
    assert report.score("fused").ndcg > report.score("all-layers").ndcg
    assert report.score("best-layer").detail.startswith("l2 ")  # chosen on training labels only
    assert report.verdict.startswith("fused beats")
    assert report.n_test_tracks == len(test) >= 50 and report.caveat == ""  # big enough to conclude


def test_training_is_deterministic_per_seed() -> None:
    data = clustered(n_labels=12, per_label=4)
    config = FusionConfig(fusion_dim=8, hidden_dim=16, common_dim=8, labels_per_batch=4, weight_epochs=3,
                          max_epochs=2, val_frac=0.2, test_frac=0.2, seed=5)
    a, b = train_fusion(data, config), train_fusion(data, config)
    assert [h.loss for h in a.history] == [h.loss for h in b.history]
    assert all(torch.equal(a.network.state_dict()[k], v) for k, v in b.network.state_dict().items())


def test_checkpoint_round_trip_and_data_hash(tmp_path: Path, trained: tuple) -> None:
    data, result = trained
    path = tmp_path / "fusion" / "synthetic.pt"
    save_checkpoint(result, path)
    loaded = load_checkpoint(path)
    assert np.array_equal(embed(loaded.network, data.x), embed(result.network, data.x))
    assert loaded.split == result.split and loaded.data_hash == result.data_hash == data.data_hash("artist")
    assert path.with_suffix(".json").exists()
    relabelled = LayerData(data.run, [t if t.id else Track(0, t.path, t.content_hash, 30.0, "other", None, None,
                                                               None, None) for t in data.tracks], data.x)
    assert relabelled.data_hash("artist") != data.data_hash("artist")
    for junk in (b"not a checkpoint", path.read_bytes()[:-40], os.urandom(4096)):  # garbage, cut short, noise
        (tmp_path / "bad.pt").write_bytes(junk)
        with pytest.raises(FusionError) as bad:
            load_checkpoint(tmp_path / "bad.pt")
        assert "\n" not in str(bad.value)  # one line (torch's own message runs to many)
    with pytest.raises(FusionError):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_save_that_fails_leaves_the_previous_checkpoint(tmp_path: Path, trained: tuple,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save wrote over the checkpoint in place: a retrain killed (or a disk filling) mid-save lost the model."""
    data, result = trained
    path = tmp_path / "fusion" / "synthetic.pt"
    save_checkpoint(result, path)
    before = path.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(result, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["synthetic.json",
                                                                                             "synthetic.pt"]
    assert np.array_equal(embed(load_checkpoint(path).network, data.x), embed(result.network, data.x))


def test_layer_mixture_is_the_softmax_weighted_sum_of_standardised_layer_normed_blocks() -> None:
    """Written out with numpy: z-score each feature over the training tracks, layer-normalise each layer's block per
    track, and sum the blocks weighted by the softmax of the layer logits."""
    dims = (6, 6, 6)
    net = LayerFusion(dims, fusion_dim=4, hidden_dim=8).eval()
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((20, sum(dims))) * rng.uniform(0.1, 30, sum(dims)) + rng.uniform(-50, 50, sum(dims)))
    logits = np.array([0.5, -1.0, 2.0])
    with torch.no_grad():
        net.logits.copy_(torch.tensor(logits, dtype=torch.float32))
    xt = torch.tensor(x, dtype=torch.float32)
    net.set_standardisation(xt)
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    blocks = np.split(z, np.cumsum(dims)[:-1], axis=1)
    normed = [(b - b.mean(axis=1, keepdims=True)) / np.sqrt(b.var(axis=1, keepdims=True) + 1e-5) for b in blocks]
    weights = np.exp(logits) / np.exp(logits).sum()
    want = sum(w * b for w, b in zip(weights, normed, strict=True))
    with torch.no_grad():
        np.testing.assert_allclose(net.mix(xt).numpy(), want, atol=1e-4)


# ---- training loop edges, checkpoints' places and compatibility ---------------------------------------------------


def test_a_stop_keeps_the_epochs_done_and_a_stop_before_the_first_ends_keeps_nothing() -> None:
    data = clustered(n_labels=12, per_label=4)
    config = FusionConfig(fusion_dim=8, hidden_dim=16, common_dim=8, labels_per_batch=4, weight_epochs=3,
                          max_epochs=4, val_frac=0.2, test_frac=0.2, seed=1)
    logs: list[EpochLog] = []
    result = train_fusion(data, config, on_epoch=logs.append, stop=lambda: len(logs) >= 2)
    assert result.interrupted_at == 2 and [h.epoch for h in result.history] == [0, 1, 2] and logs == result.history[1:]
    assert not result.stopped_early and result.best_epoch <= 2
    with pytest.raises(StoppedBeforeFirstEpoch):
        train_fusion(data, config, stop=lambda: True)


def test_training_without_validation_runs_the_weight_epochs_and_ends_on_the_refitted_projection() -> None:
    """No validation labels: phase 2 is skipped, the last epoch is kept, and its projection is refitted to the
    principal directions of the mixture its learned layer weights make (numpy's SVD of the network's own mix)."""
    data = clustered(n_labels=12, per_label=4)
    config = FusionConfig(fusion_dim=8, hidden_dim=16, common_dim=8, labels_per_batch=4, weight_epochs=3,
                          max_epochs=50, val_frac=0.0, test_frac=0.2, seed=2)
    result = train_fusion(data, config)
    assert not result.split.val and [h.epoch for h in result.history] == [0, 1, 2, 3]
    assert result.best_epoch == 3 and not result.stopped_early and result.interrupted_at is None
    assert all(h.val_ndcg is None and h.loss is not None for h in result.history[1:])
    with torch.no_grad():
        mixed = result.network.mix(torch.from_numpy(data.x)).double().numpy()
    top = np.linalg.svd(mixed, full_matrices=False)[2][:8]
    weight = result.network.project.weight.detach().double().numpy()
    np.testing.assert_allclose(np.abs(weight @ top.T), np.eye(8), atol=1e-3)


def test_phase_two_stops_patience_epochs_after_its_best_and_keeps_the_best() -> None:
    data = clustered(n_labels=20, per_label=4)
    config = FusionConfig(fusion_dim=8, hidden_dim=16, common_dim=8, labels_per_batch=4, weight_epochs=2,
                          max_epochs=40, patience=2, lr=3e-2, val_frac=0.25, test_frac=0.2, seed=0)
    result = train_fusion(data, config)
    vals = [h.val_ndcg for h in result.history]
    last = result.history[-1].epoch
    assert result.stopped_early and last < config.weight_epochs + config.max_epochs
    assert last - max(result.best_epoch, config.weight_epochs) == config.patience  # no later, no sooner
    assert vals[result.best_epoch] == max(vals)  # the first best epoch (no later epoch ties above it)
    assert all(v < vals[result.best_epoch] for v in vals[result.best_epoch + 1:])
    state = result.network.state_dict()
    assert np.array_equal(embed(result.network, data.x), embed(result.network, data.x))
    assert all(torch.equal(state[k], v) for k, v in result.network.state_dict().items())


def test_fusion_config_takes_rates_up_to_its_ceiling_and_refuses_nan_inf_and_unknown_mining() -> None:
    FusionConfig(lr=MAX_RATE, weights_lr=MAX_RATE)
    for wrong in ({"lr": MAX_RATE * 1.01}, {"weights_lr": MAX_RATE * 1.01}, {"margin": float("nan")},
                  {"weight_decay": float("inf")}, {"dropout": float("-inf")}, {"mining": "hardest"}):
        with pytest.raises(ValueError):
            FusionConfig(**wrong)


def test_embed_in_batches_is_embed_at_once_and_of_no_tracks_is_empty() -> None:
    data = clustered(n_labels=6, per_label=3)
    network = initial_network(FusionConfig(fusion_dim=8, common_dim=8, hidden_dim=8), data.run.layer_dims,
                              torch.from_numpy(data.x))
    whole = embed(network, data.x)
    np.testing.assert_allclose(embed(network, data.x, batch=5), whole, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(whole, axis=1), 1, atol=1e-5)
    empty = embed(network, data.x[:0])
    assert empty.shape == (0, 8) and empty.dtype == np.float32


def _untrained_result(run: Run, config: FusionConfig = FusionConfig(weight_epochs=3, max_epochs=5)) -> FusionResult:
    """What training on ``run`` would return, without the training (for the checks that read only its record)."""
    return FusionResult(LayerFusion(run.layer_dims, 4, 4, 4), config, run.model, run.revision, run.layer_names,
                        run.layer_dims, LabelSplit(("a", "b"), ("c", "d"), ("e", "f")), "hash", 0,
                        [EpochLog(0, None, None, 0.5, 0.0)], run.policy, run.id)


def test_stopped_early_is_phase_two_ended_by_patience_only() -> None:
    result = _untrained_result(clustered(n_labels=2, per_label=2).run)
    end = result.config.weight_epochs + result.config.max_epochs

    def ending(epoch: int, **changes: object) -> FusionResult:
        done = [EpochLog(e, 0.1, 0.1, 0.5, 1.0) for e in (1, epoch)]  # the last epoch, not the first, decides
        return replace(result, history=[*result.history, *done], **changes)

    assert ending(end - 1).stopped_early
    assert not ending(end).stopped_early  # ran to the end
    assert not ending(end - 1, split=replace(result.split, val=())).stopped_early  # no phase 2
    assert not ending(end - 1, interrupted_at=end - 1).stopped_early  # stopped by hand


def test_a_checkpoint_is_refused_where_it_would_replace_what_it_must_not(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "fusion").mkdir(parents=True)
    (store / "catalog.sqlite").write_bytes(b"")
    (tmp_path / "file").write_text("x")
    assert checkpoint_problem(store / "fusion" / "m.pt", store) is None
    assert checkpoint_problem(store / "fusion" / "deeper" / "m.pt", store) is None
    assert checkpoint_problem(tmp_path / "elsewhere" / "m.pt", store) is None  # outside the store, folder made
    assert checkpoint_problem(store / "vectors" / "m.pt") is None  # no store given: only the path is checked
    for inside in (store / "catalog.sqlite", store / "fusion" / ".." / "m.pt", store / "vectors" / "m.pt"):
        assert "inside the feature store" in checkpoint_problem(inside, store)
    assert checkpoint_problem(store / "fusion", store) == "it is a folder"
    assert checkpoint_problem(tmp_path / "file" / "m.pt") == "its parent is a file"
    assert ".json" in checkpoint_problem(tmp_path / "m.json")
    assert checkpoint_problem(tmp_path / "m") is None  # its description goes to m.json
    with pytest.raises(FusionError, match="is a folder"):
        load_checkpoint(store / "fusion")


def test_a_runs_checkpoint_is_found_where_an_older_mess_saved_it_only_while_the_new_place_is_empty(
        tmp_path: Path) -> None:
    store = SimpleNamespace(root=tmp_path)
    run = Run("musicnn/msd", "r1", WindowPolicy().to_json(), 16000, ("a",), (4,), id=2)
    new = checkpoint_path(store, run)
    older = new.with_name(new.name.replace("-run2.pt", ".pt"))  # one file for every run
    assert new.parent == tmp_path / "fusion" and new.name.endswith("-run2.pt") and "/" not in new.name
    assert saved_checkpoint(store, run) == new  # neither saved
    older.parent.mkdir()
    older.write_bytes(b"older")
    assert saved_checkpoint(store, run) == older
    new.write_bytes(b"new")
    assert saved_checkpoint(store, run) == new


def test_a_checkpoint_is_checked_against_the_run_and_names_what_differs() -> None:
    run = clustered(n_labels=2, per_label=2).run
    result = _untrained_result(run)
    assert check_compatible(result, run) is None
    assert check_compatible(result, replace(run, id=7)) is None  # another store's run of the same vectors

    def refusal(res: FusionResult, other: Run) -> str:
        with pytest.raises(FusionError) as refused:
            check_compatible(res, other)
        return str(refused.value)

    said = refusal(result, replace(run, model="other"))
    assert "trained on synthetic layers ['l0', 'l1', 'l2', 'l3', 'l4']" in said and "run 1 is other" in said
    more = replace(run, layer_names=(*run.layer_names, "timbre"), layer_dims=(*run.layer_dims, 24), id=3)
    said = refusal(result, more)
    assert "trained on synthetic run 1 (5 layers); run 3 has 6 layers (adds timbre)" in said
    assert "pick run 1 (--model synthetic@1) or train again" in said
    fewer = replace(run, layer_names=run.layer_names[:-1], layer_dims=run.layer_dims[:-1], id=3)
    assert "run 3 has 4 layers (lacks l4)" in refusal(result, fewer)
    resized = replace(run, layer_dims=(24, 24, 24, 24, 12))
    said = refusal(result, resized)
    assert "run 1 has 5 layers of other sizes or order" in said and "pick run" not in said  # the same id
    said = refusal(replace(result, run_id=None), replace(run, revision="r2", id=4))
    assert "trained on synthetic another run (revision r1); run 4 has revision r2" in said and "pick run" not in said
    note = check_compatible(replace(result, policy=None), run)
    assert note is not None and "cannot check" in note and "run 1" in note
    assert "revision" in refusal(replace(result, policy=None), replace(run, revision="r2"))


@pytest.mark.parametrize("dims", [(16, 16, 16), (40, 24, 6)])
def test_the_untrained_network_is_pca_of_the_layer_mixture(dims: tuple[int, ...]) -> None:
    """The class docstring's promise: a fresh projection has orthonormal rows, and once fitted the residual MLP adds
    nothing, so a track's fused vector is its mixture projected on the mixture's principal directions (numpy's
    SVD), L2-normalised."""
    data = clustered(n_labels=10, per_label=4, dims=dims)
    fresh = LayerFusion(dims, fusion_dim=6, hidden_dim=8, common_dim=12)
    w = fresh.project.weight.detach().double().numpy()
    np.testing.assert_allclose(w @ w.T, np.eye(6), atol=1e-5)
    x = data.x.copy()
    x[:, 3] = 5.0  # a constant feature: standardised to 0, not to NaN
    net = initial_network(FusionConfig(fusion_dim=6, hidden_dim=8, common_dim=12), dims, torch.from_numpy(x))
    net.train()  # dropout on: the residual branch is zero all the same
    with torch.no_grad():
        mixed = net.mix(torch.from_numpy(x)).double().numpy()
        trained_mode = net(torch.from_numpy(x)).numpy()
    top = np.linalg.svd(mixed, full_matrices=False)[2][:6]
    want = mixed @ top.T
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    got = embed(net, x)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(np.abs(got), np.abs(want), atol=1e-4)  # each axis up to its sign
    np.testing.assert_allclose(trained_mode, got, atol=1e-5)


def test_the_fused_vector_may_be_as_wide_as_the_layer_mixture_and_no_wider() -> None:
    for dims, common, width in (((8, 8), 256, 8), ((8, 4), 6, 6)):  # one size: the layers'; else common_dim
        net = LayerFusion(dims, fusion_dim=width, hidden_dim=4, common_dim=common)
        assert tuple(net.project.weight.shape) == (width, width)
        with pytest.raises(ValueError, match=rf"--fusion-dim \({width + 1}\) must be at most {width},"):
            LayerFusion(dims, fusion_dim=width + 1, hidden_dim=4, common_dim=common)


def test_gated_weights_and_a_trained_residual_follow_the_class_definition() -> None:
    """Written out with numpy from the network's own parameters: layer weights are the softmax of the static logits
    plus the gating MLP's per-track score, and the output is the L2-normalised projection of the mixture plus the
    residual MLP of the mixture (here set to non-zero weights, as training leaves it)."""
    from scipy.special import erf

    def gelu(v: np.ndarray) -> np.ndarray:
        return 0.5 * v * (1 + erf(v / np.sqrt(2)))

    def numpy_of(layer: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
        return layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()

    torch.manual_seed(1)
    net = LayerFusion((6, 6, 6), fusion_dim=4, hidden_dim=8, gated=True).eval()
    x = torch.randn(7, 18)
    with torch.no_grad():
        for p in net.residual.parameters():
            p.copy_(torch.randn_like(p))
        net.logits.copy_(torch.tensor([0.3, -0.2, 1.0]))
        net.set_standardisation(torch.randn(30, 18) * 3 + 1)
        h = net.layer_vectors(x).double().numpy()  # the mixture test checks these against numpy
        weights = net.weights(net.layer_vectors(x)).double().numpy()
        out = net(x).double().numpy()
    (w1, b1), (w2, b2) = numpy_of(net.gate[0]), numpy_of(net.gate[2])
    scores = net.logits.detach().double().numpy() + (gelu(h @ w1.T + b1) @ w2.T + b2)[..., 0]
    want = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(weights, want, atol=1e-5)
    mixed = (want[..., None] * h).sum(axis=1)
    (r1, c1), (r2, c2) = numpy_of(net.residual[0]), numpy_of(net.residual[3])
    y = mixed @ net.project.weight.detach().double().numpy().T + gelu(mixed @ r1.T + c1) @ r2.T + c2
    np.testing.assert_allclose(out, y / np.linalg.norm(y, axis=1, keepdims=True), atol=1e-5)


def test_a_checkpoint_s_description_never_replaces_a_file_that_is_not_one(tmp_path: Path) -> None:
    """save_checkpoint wrote NAME.json over whatever file had that name: a user's own notes.json was lost to
    `mess fuse train --checkpoint notes.pt`. A file there that is not a checkpoint description is refused, before
    anything is written; an earlier description (a retrain), an older mess's too, is replaced as before."""
    result = _untrained_result(clustered(n_labels=2, per_label=2).run)
    path = tmp_path / "notes.pt"
    theirs = (b'{"todo": ["mix", "master"]}', b"[1, 2]", b"not json at all", b"\xff\xfe")
    for mine in theirs:
        path.with_suffix(".json").write_bytes(mine)
        problem = checkpoint_problem(path)
        assert problem is not None and str(path.with_suffix(".json")) in problem
        with pytest.raises(FusionError, match=r"notes\.json.* not the description of a mess fusion checkpoint"):
            save_checkpoint(result, path)
        assert path.with_suffix(".json").read_bytes() == mine and not path.exists()
    path.with_suffix(".json").unlink()
    path.with_suffix(".json").mkdir()
    assert checkpoint_problem(path) is not None and not path.exists()
    path.with_suffix(".json").rmdir()
    digest = save_checkpoint(result, path)
    assert json.loads(path.with_suffix(".json").read_text())["checkpoint_sha256"] == digest
    older = {k: v for k, v in result.meta().items() if k not in ("policy", "run_id", "interrupted_at")}
    path.with_suffix(".json").write_text(json.dumps(older))  # as the first mess to save checkpoints described one
    assert checkpoint_problem(path) is None
    assert save_checkpoint(result, path) == digest
    assert json.loads(path.with_suffix(".json").read_text()) == {**result.meta(), "checkpoint_sha256": digest}


def test_a_checkpoint_never_replaces_a_pt_file_that_is_not_one(tmp_path: Path) -> None:
    """save_checkpoint wrote NAME.pt over whatever file had that name: a user's own PyTorch weights, or a photo
    named x.pt, were lost to `mess fuse train --checkpoint x.pt`. A file there that is not a mess checkpoint is
    refused before anything is written; a mess checkpoint (a retrain), an older mess's or one whose description a
    killed save never wrote, is replaced as before."""
    result = _untrained_result(clustered(n_labels=2, per_label=2).run)
    path = tmp_path / "x.pt"
    torch.save({"weight": torch.ones(3, 2), "bias": torch.zeros(3)}, path)  # a user's own PyTorch weights
    theirs = [path.read_bytes(), b"\x89PNG\r\n\x1a\n" + os.urandom(2048), b""]
    torch.save(torch.arange(5), path)  # a PyTorch file of a lone tensor
    theirs.append(path.read_bytes())
    for mine in theirs:
        path.write_bytes(mine)
        problem = checkpoint_problem(path)
        assert problem is not None and str(path) in problem and "\n" not in problem
        with pytest.raises(FusionError, match=r"x\.pt, which is not a mess fusion checkpoint"):
            save_checkpoint(result, path)
        assert path.read_bytes() == mine and not path.with_suffix(".json").exists()
    path.unlink()
    path.symlink_to(tmp_path / "nowhere.pt")  # a link of theirs, dangling: not replaced by a file
    assert checkpoint_problem(path) is not None
    path.unlink()
    digest = save_checkpoint(result, path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert checkpoint_problem(path) is None and save_checkpoint(result, path) == digest  # a retrain replaces it
    path.with_suffix(".json").unlink()  # a save killed before its description
    assert checkpoint_problem(path) is None
    older = {k: v for k, v in result.meta().items() if k not in ("policy", "run_id", "interrupted_at")}
    torch.save({"state_dict": result.network.state_dict(), **older}, path)  # as the first mess saved checkpoints
    assert checkpoint_problem(path) is None
    assert save_checkpoint(result, path) == digest and hashlib.sha256(path.read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("arrives", [".pt", ".json"])
def test_a_file_that_comes_between_the_check_and_the_write_is_never_replaced(
        tmp_path: Path, trained: tuple, monkeypatch: pytest.MonkeyPatch, arrives: str) -> None:
    """Before: a user's file made at NAME.pt or NAME.json in the instant after save_checkpoint's check was renamed
    over (lost). Now each name free at the check is taken by an exclusive create: the save is refused with the
    user's file as it was, nothing of ours left at either name, no temp file beside them."""
    from mess.fusion import train
    data, result = trained
    path = tmp_path / "net.pt"
    theirs = path.with_suffix(arrives)
    real = train.checkpoint_problem

    def then_their_file_comes(place: Path, store_root: Path | None = None) -> str | None:
        problem = real(place, store_root)
        theirs.write_bytes(b"their own file")
        return problem

    monkeypatch.setattr(train, "checkpoint_problem", then_their_file_comes)
    with pytest.raises(FusionError, match=f"cannot save a checkpoint at {path}: .*{theirs.name}"):
        save_checkpoint(result, path)
    assert theirs.read_bytes() == b"their own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == [theirs.name]


def test_retraining_still_replaces_the_previous_checkpoint_and_its_description(tmp_path: Path,
                                                                                 trained: tuple) -> None:
    """The exclusive create is for free names only: a checkpoint saved again at its own name replaces both files."""
    data, result = trained
    path = tmp_path / "net.pt"
    save_checkpoint(result, path)
    path.with_suffix(".json").unlink()  # a save killed between the two files: the .pt alone
    first = save_checkpoint(result, path)
    second = save_checkpoint(result, path)
    assert first == second == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.json", "net.pt"]
    assert json.loads(path.with_suffix(".json").read_text())["checkpoint_sha256"] == second
    assert np.array_equal(embed(load_checkpoint(path).network, data.x), embed(result.network, data.x))
