"""`mess fuse` on real rendered music (the session's ``extracted_store``: composers x pieces)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import typer
from fastapi.testclient import TestClient
from mutagen.flac import FLAC
from scipy.stats import wilcoxon
from typer.testing import CliRunner

from mess.audio.windows import WindowPolicy
from mess.cli import search as search_cli
from mess.cli.fuse import register
from mess.cli.main import app as mess_app
from mess.extract.embed import embed_file
from mess.extract.pipeline import extract
from mess.extract.runs import run_policy
from mess.fusion.apply import FUSED, apply_fusion, fuse_query
from mess.fusion.data import FusionError, LayerData, load_layers
from mess.fusion.report import FusionReport, compare
from mess.fusion.tracking import TrainingLog, log_mismatch, training_log_path
from mess.fusion.train import (
    EpochLog,
    FusionConfig,
    FusionResult,
    StoppedBeforeFirstEpoch,
    checkpoint_digest,
    checkpoint_path,
    embed,
    load_checkpoint,
    save_checkpoint,
    train_fusion,
)
from mess.models.registry import load_model
from mess.query import resolve_query
from mess.search.query import similar_tracks
from mess.search.vectors import VectorSpec, load_vectors
from mess.serve.app import create_app
from mess.store import FeatureStore, Run, RunKey, StoreError, Track, TrackVectors
from mess.store.reports import fusion_stem

MODELS = ("dsp", "musicnn-msd")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small batches: fastest, reproducible


@pytest.fixture(scope="module")
def writable(extracted_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the session store (`fuse apply` writes to it)."""
    root = tmp_path_factory.mktemp("fuse") / "store"
    shutil.copytree(extracted_store, root)
    return root


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """mess"""

    register(app)
    search_cli.register(app)
    return app


def _unit(x: np.ndarray, norm: str) -> np.ndarray:
    """Centred ("center"), standardised ("zscore") or raw ("none") rows over all tracks, then unit length."""
    x = x.astype(np.float64)
    if norm != "none":
        x = x - x.mean(axis=0)
    if norm == "zscore":
        sd = x.std(axis=0)
        x = x / np.where(sd > 1e-8, sd, 1.0)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _per_query(sims: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """P@k, AP and nDCG@k [q, 3] of every track querying the others by ``sims``, one query at a time (as written
    up in Manning et al., Introduction to Information Retrieval, ch. 8); queries need a same-label track."""
    rows = []
    for q in range(len(labels)):
        if (labels == labels[q]).sum() < 2:
            continue
        others = [i for i in np.argsort(-sims[q], kind="stable") if i != q]
        rel = [bool(labels[i] == labels[q]) for i in others]
        hits = np.cumsum(rel)
        dcg = sum(1 / np.log2(j + 2) for j in range(min(k, len(rel))) if rel[j])
        rows.append((sum(rel[:k]) / min(k, len(rel)), np.mean([hits[j] / (j + 1) for j in range(len(rel)) if rel[j]]),
                     dcg / sum(1 / np.log2(j + 2) for j in range(min(k, sum(rel))))))
    return np.array(rows)


def _retrieval(sims: np.ndarray, labels: np.ndarray, k: int) -> tuple[float, float, float]:
    """Mean P@k, mAP and nDCG@k of :func:`_per_query`."""
    precision, ap, ndcg = _per_query(sims, labels, k).mean(axis=0)
    return float(precision), float(ap), float(ndcg)


def _check_report_numbers(report: FusionReport, result: FusionResult, data: LayerData) -> None:
    """The report's rows are what they say, recomputed here from the vectors on the same held-out tracks."""
    labels = data.labels(result.config.label)
    test = result.split.rows(labels, "test")
    lab, k = labels[test].astype(str), report.k
    names, dims = list(data.run.layer_names), data.run.layer_dims
    starts = np.cumsum([0, *dims])
    layer = {n: data.x[:, starts[i]:starts[i + 1]] for i, n in enumerate(names)}

    def single(name: str, norm: str) -> np.ndarray:
        u = _unit(layer[name], norm)[test]
        return u @ u.T

    def all_layers(norm: str) -> np.ndarray:  # mean of per-layer cosines
        return np.mean([single(n, norm) for n in names], axis=0)

    fused = embed(result.network, data.x[test]).astype(np.float64)
    fused /= np.linalg.norm(fused, axis=1, keepdims=True)
    expected = {"fused": _retrieval(fused @ fused.T, lab, k)}
    best, norm = re.fullmatch(r"(\S+) \((\w+)\), chosen on training labels", report.score("best-layer").detail).groups()
    expected["best-layer"] = _retrieval(single(best, norm), lab, k)
    norm = re.fullmatch(r"mean of per-layer cosines \((\w+)\)", report.score("all-layers").detail).group(1)
    expected["all-layers"] = _retrieval(all_layers(norm), lab, k)
    for method, (precision, ap, ndcg) in expected.items():
        row = report.score(method)
        assert (row.precision, row.map, row.ndcg) == pytest.approx((precision, ap, ndcg), abs=2e-4), method
    for name in names:
        alone = max(_retrieval(single(name, n), lab, k)[2] for n in ("none", "center", "zscore"))
        assert report.per_layer[name] == pytest.approx(alone, abs=2e-4), name
    # a random ranking's expected precision@k is the fraction of same-label tracks among the others
    same = np.array([(lab == lab[q]).sum() - 1 for q in range(len(lab)) if (lab == lab[q]).sum() >= 2])
    assert report.score("chance").precision == pytest.approx(np.mean(same / (len(lab) - 1)), abs=0.05)
    fused_q, mean_q = _per_query(fused @ fused.T, lab, k)[:, 2], _per_query(all_layers(norm), lab, k)[:, 2]
    p = wilcoxon(fused_q, mean_q).pvalue if np.any(np.abs(fused_q - mean_q) > 1e-9) else None
    assert report.wilcoxon_p == (None if p is None else pytest.approx(p, abs=1e-6))
    gain = fused_q.mean() - mean_q.mean()
    if p is not None and abs(gain) > 2e-4:  # the verdict names a winner only where the paired test does
        word = "is not significantly different from" if p >= 0.05 else "beats" if gain > 0 else "is worse than"
        assert report.verdict.startswith(f"fused {word} the mean of all layers"), report.verdict


def _planted(seed: int) -> LayerData:
    """16 labels x 5 tracks; of three 12-d layers only the middle one carries the label."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(16), 5)
    dims = (12, 12, 12)
    parts = [rng.normal(size=(len(labels), d)) + (2.0 * rng.normal(size=(16, d))[labels] if i == 1 else 0)
             for i, d in enumerate(dims)]
    run = Run("synthetic", "r1", WindowPolicy().to_json(), 16000, ("l0", "l1", "l2"), dims, id=1)
    tracks = [Track(i, f"/x/{i}.wav", f"h{i}", 30.0, f"artist{lab}", None, None, None, None)
              for i, lab in enumerate(labels)]
    return LayerData(run, tracks, np.hstack(parts).astype(np.float32))


SMALL = FusionConfig(fusion_dim=8, hidden_dim=16, common_dim=8, labels_per_batch=4, tracks_per_label=4,
                     weight_epochs=2, max_epochs=2, patience=2, val_frac=0.2, test_frac=0.3, seed=0)


def test_report_rows_are_the_retrieval_they_name_when_it_is_not_perfect() -> None:
    """The rendered store's held-out composers are often perfectly separated (every row 1.0), which no
    recomputation can tell apart; here only one layer carries the label, so every row has its own value."""
    data = _planted(0)
    result = train_fusion(data, SMALL)
    report = compare(result, data, k=5)
    assert len({m.ndcg for m in report.methods}) >= 4  # not saturated
    assert report.wilcoxon_p is not None and report.wilcoxon_p < 0.05 and report.verdict.startswith("fused beats")
    _check_report_numbers(report, result, data)


def test_verdict_names_a_winner_only_where_the_paired_test_does() -> None:
    """The verdict said "fused beats" on any higher mean nDCG, even at p = 1."""
    data = _planted(2)
    result = train_fusion(data, SMALL)
    report = compare(result, data, k=5)
    fused, mean = report.score("fused").ndcg, report.score("all-layers").ndcg
    assert fused > mean and report.wilcoxon_p is not None and report.wilcoxon_p >= 0.05  # higher, but by chance
    assert report.verdict.startswith("fused is not significantly different from the mean of all layers")
    assert f"({fused:.3f} vs {mean:.3f}, paired Wilcoxon p={report.wilcoxon_p:.3g})" in report.verdict
    _check_report_numbers(report, result, data)


@pytest.mark.parametrize("model", MODELS)
def test_training_on_real_vectors_lowers_loss_and_reports_honestly(extracted_store: Path, model: str) -> None:
    with closing(FeatureStore(extracted_store, readonly=True)) as fs:
        data = load_layers(fs, fs.run(model))
    config = FusionConfig(label="composer", weight_epochs=8, max_epochs=4, patience=2)
    result = train_fusion(data, config)
    losses = [h.loss for h in result.history[1:]]
    assert losses[-1] < losses[0], losses
    weights = result.layer_weights(data.x)
    assert list(weights) == list(data.run.layer_names) and sum(weights.values()) == pytest.approx(1.0, abs=1e-4)

    report = compare(result, data, k=3)
    fused, chance = report.score("fused"), report.score("chance")
    assert fused.map > chance.map  # held-out composers were never trained on
    assert set(report.per_layer) == set(data.run.layer_names)
    _check_report_numbers(report, result, data)
    assert f"n={report.n_test_tracks} tracks" in report.caveat  # a 16-track store is too small to conclude

    again = train_fusion(data, config)
    assert np.array_equal(embed(again.network, data.x), embed(result.network, data.x))


def test_cli_train_apply_report_and_query_fusion(writable: Path) -> None:
    runner = CliRunner()
    app = _app()
    store = ["--store", str(writable)]
    out = runner.invoke(app, ["fuse", "train", "--model", "dsp", "--label", "composer", "--weight-epochs", "6",
                              "--max-epochs", "3", *store, "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert Path(summary["checkpoint"]).exists() and Path(summary["checkpoint"]).with_suffix(".json").exists()
    assert summary["split"]["test"] >= 2 and summary["split"]["train"] >= 2
    log = json.loads(Path(summary["log"]).read_text())
    assert len(log["epochs"]) == summary["epochs"] and log["summary"]["data_hash"] == summary["data_hash"]

    out = runner.invoke(app, ["fuse", "apply", "--model", "dsp", *store, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["data_hash_matches"] is True
    with closing(FeatureStore(writable, readonly=True)) as fs:
        run = fs.run("dsp")
        ids, fused = fs.derived_matrix(run, FUSED)
        assert sorted(ids.tolist()) == sorted(t.id for t in fs.tracks(run))
        assert np.allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-2)
        track = fs.tracks(run)[0]
        vectors = embed_file(Path(track.path), load_model("dsp"), run_policy(run))
        query = fuse_query(fs, run, vectors.layers)
        stored = fused[ids.tolist().index(track.id)]
        assert float(query @ stored) / np.linalg.norm(stored) > 0.99
        # an external file (a quieter re-encoding) goes through the same network and finds its original
        audio, sr = sf.read(track.path, dtype="float32")
        copy = writable.parent / "quieter-copy.wav"
        sf.write(copy, 0.8 * audio, sr)
        found = similar_tracks(fs, run, resolve_query(fs, str(copy), run), k=3, fused=True)
        assert found[0].track.id == track.id
        # searched as the network makes them: z-scored on a collection smaller than their size, every cosine
        # between two tracks was about -1/(n-1) (mAP at chance while the fusion report measured far above)
        unit = load_vectors(fs, run, VectorSpec.from_options(fused=True)).unit()
        between = (unit @ unit.T)[~np.eye(len(unit), dtype=bool)]
        assert between.std() > 0.2, between.std()  # 0.04 z-scored, 0.40 as made

    out = runner.invoke(app, ["fuse", "train", "--model", "dsp", "--label", "composer", "--weight-epochs", "6",
                              "--max-epochs", "3", "--seed", "5", *store, "--json"])
    assert out.exit_code == 0, out.output
    with closing(FeatureStore(writable, readonly=True)) as fs, pytest.raises(StoreError, match="fuse apply` again"):
        run = fs.run("dsp")  # retrained, not applied: an outside file would be fused by another network
        similar_tracks(fs, run, resolve_query(fs, str(copy), run), k=3, fused=True)
    out = runner.invoke(app, ["fuse", "apply", "--model", "dsp", *store, "--json"])
    assert out.exit_code == 0, out.output

    out = runner.invoke(app, ["fuse", "report", "--model", "dsp", "-k", "3", *store, "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert {m["method"] for m in report["methods"]} >= {"fused", "untrained", "best-layer", "all-layers", "chance"}
    for path in report["files"].values():
        assert Path(path).stat().st_size > 0
    assert "too small to conclude" in report["caveat"]


def test_training_without_validation_says_why(writable: Path, tmp_path: Path) -> None:
    """`mess fuse train --val-frac 0` said "too few labels for a validation split" (the user had asked for none);
    it now names the option, and says "too few labels" where the labels were too few (4 composers here)."""
    runner, store = CliRunner(), ["--store", str(writable)]
    for option, why in ((["--val-frac", "0"], "no validation labels (--val-frac 0)"),
                        ([], "too few labels for a validation split")):
        out = runner.invoke(_app(), ["fuse", "train", "--model", "dsp", "--label", "composer", "--weight-epochs", "1",
                                     "--max-epochs", "0", "--checkpoint", str(tmp_path / "net.pt"), *option, *store],
                            env={"COLUMNS": "400"})
        assert out.exit_code == 0 and f"{why}: only the layer weights were trained" in out.output, out.output


def test_training_says_how_many_tracks_its_labels_leave_out(tmp_path: Path) -> None:
    """With tags on part of the collection, `mess fuse train` said "trained on 2 artist labels (...) of 12 tracks",
    as if all 12 were trained on; 3 untagged tracks and one alone in its artist were in no label. It now says so,
    and --json counts the ``labelled_tracks``."""
    music, sr = tmp_path / "music", 22050
    music.mkdir()
    t = np.arange(2 * sr) / sr
    artists = [f"Artist {i // 2}" for i in range(8)] + ["Solo", None, None, None]
    for i, artist in enumerate(artists):
        path = music / f"tone{i}.flac"
        sf.write(path, (0.3 * np.sin(2 * np.pi * 110.0 * (i + 1) * t)).astype(np.float32), sr)
        if artist:
            tags = FLAC(path)
            tags["artist"] = artist
            tags.save()
    store = tmp_path / "store"
    with closing(FeatureStore(store)) as fs:
        assert not extract(fs, sorted(music.iterdir()), load_model("dsp"), WindowPolicy()).failed
    train = ["fuse", "train", "--model", "dsp", "--weight-epochs", "1", "--max-epochs", "0", "--store", str(store)]
    out = CliRunner().invoke(_app(), train, env={"COLUMNS": "400"})
    said = " ".join(out.output.split())
    assert out.exit_code == 0 and "of 12 tracks" in said, said
    assert ("note: 4 of the 12 tracks are in none of these labels (no artist tag, or the only track of theirs): not "
            "trained on or scored") in said
    out = CliRunner().invoke(_app(), [*train, "--json"])
    assert json.loads(out.stdout)["labelled_tracks"] == 8 and json.loads(out.stdout)["tracks"] == 12


def test_a_retrain_killed_mid_run_leaves_the_checkpoint_and_its_log(writable: Path, tmp_path: Path) -> None:
    """The training log was rewritten every epoch: a retrain killed part-way left the old checkpoint beside
    a log of the dead run's epochs."""
    checkpoint = tmp_path / "killed.pt"
    args = ["fuse", "train", "--model", "dsp", "--label", "composer", "--checkpoint", str(checkpoint),
            "--store", str(writable), "--json"]
    out = CliRunner().invoke(_app(), [*args, "--weight-epochs", "2", "--max-epochs", "0"])
    assert out.exit_code == 0, out.output
    log = Path(json.loads(out.stdout)["log"])
    before = {p: p.read_bytes() for p in (checkpoint, checkpoint.with_suffix(".json"), log)}
    partial = log.with_suffix(".partial.json")
    assert not partial.exists()  # a finished run leaves only its log
    proc = subprocess.Popen([sys.executable, "-m", "mess.cli", *args, "--weight-epochs", "100000", "--max-epochs",
                             "0", "--seed", "3", "--threads", "1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300  # a cold start on a loaded machine takes a while
    while time.time() < deadline and proc.poll() is None and log.read_bytes() == before[log]:
        if _epochs(partial) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the kill should land mid-training"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert {p: p.read_bytes() for p in before} == before  # the old checkpoint and the log that describes it
    assert _epochs(partial) >= 2  # the dead run's epochs, beside them


SAVE = """
import os, signal, sys
from contextlib import closing
from pathlib import Path

from mess.fusion.data import load_layers
from mess.fusion.train import FusionConfig, save_checkpoint, train_fusion
from mess.store import FeatureStore

store, checkpoint, seed = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
with closing(FeatureStore(store, readonly=True)) as fs:
    config = FusionConfig(label="composer", weight_epochs=2, max_epochs=0, seed=seed)
    result = train_fusion(load_layers(fs, fs.run("dsp")), config)


def killed_before_the_json(event, args):
    if event == "os.rename" and str(args[1]).endswith(".json"):  # the .pt is in place, the .json not yet
        os.kill(os.getpid(), signal.SIGKILL)


if sys.argv[4] == "kill":
    sys.addaudithook(killed_before_the_json)
save_checkpoint(result, checkpoint)
"""


def test_a_save_killed_between_the_checkpoint_and_its_json_is_told_apart(writable: Path, tmp_path: Path) -> None:
    """save_checkpoint writes the .pt, then its .json: a kill between the two left the old .json beside the new
    .pt, describing the old checkpoint with nothing to tell them apart. The .json names the .pt's SHA-256."""
    checkpoint = tmp_path / "pair.pt"
    sidecar = checkpoint.with_suffix(".json")

    def save(seed: int, how: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", SAVE, str(writable), str(checkpoint), str(seed), how],
                              capture_output=True, text=True, timeout=300)

    with closing(FeatureStore(writable, readonly=True)) as fs:  # the whole save, here; only the kill needs a process
        save_checkpoint(train_fusion(load_layers(fs, fs.run("dsp")), FusionConfig(
            label="composer", weight_epochs=2, max_epochs=0, seed=0)), checkpoint)
    assert json.loads(sidecar.read_text())["checkpoint_sha256"] == checkpoint_digest(checkpoint)
    before = checkpoint.read_bytes(), sidecar.read_bytes()
    assert save(3, "kill").returncode == -signal.SIGKILL
    assert checkpoint.read_bytes() != before[0] and sidecar.read_bytes() == before[1]  # killed between the two
    assert json.loads(sidecar.read_text())["checkpoint_sha256"] != checkpoint_digest(checkpoint)


def _epochs(log: Path) -> int:
    """Epochs in a training log (0 while it is missing or half-written)."""
    try:
        return len(json.loads(log.read_text())["epochs"])
    except (OSError, ValueError, KeyError):
        return 0


def _fused_copy(extracted_store: Path, tmp_path: Path, weight_epochs: int = 2) -> Path:
    """A copy of the extracted store (``tmp_path``/store) whose dsp run has fused vectors, from a network trained
    briefly on the composer tags and applied."""
    root = tmp_path / "store"
    shutil.copytree(extracted_store, root)
    with closing(FeatureStore(root)) as fs:
        checkpoint = checkpoint_path(fs, fs.run("dsp"))
        save_checkpoint(train_fusion(load_layers(fs, fs.run("dsp")), FusionConfig(
            label="composer", weight_epochs=weight_epochs, max_epochs=0)), checkpoint)
        apply_fusion(fs, checkpoint, "dsp")
    return root


def test_a_retrain_saved_while_apply_runs_is_not_taken_for_the_network_it_used(
        extracted_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`mess fuse apply` recorded the SHA-256 of the checkpoint file as it was once the vectors were fused, not of
    the bytes it had loaded: a `mess fuse train` that saved while apply read the vectors left the old network's
    fused vectors recorded as the new one's, and an outside file (`mess similar FILE --fused`) was fused by the new
    network against them. The recorded hash is now the loaded network's: the query is refused until apply again."""
    from mess.fusion import apply as apply_module

    root = _fused_copy(extracted_store, tmp_path)
    with closing(FeatureStore(root)) as fs:
        run = fs.run("dsp")
        checkpoint, data = checkpoint_path(fs, run), load_layers(fs, run)
        loaded = checkpoint_digest(checkpoint)
        retrained = train_fusion(data, FusionConfig(label="composer", weight_epochs=2, max_epochs=0, seed=7))
        read = apply_module.load_layers

        def retrain_meanwhile(store: FeatureStore, of: Run) -> LayerData:
            save_checkpoint(retrained, checkpoint)  # a `mess fuse train` beside it saves now
            return read(store, of)

        monkeypatch.setattr(apply_module, "load_layers", retrain_meanwhile)
        apply_fusion(fs, checkpoint, "dsp")
        assert checkpoint_digest(checkpoint) != loaded
        assert fs.derived_meta(run, FUSED)["checkpoint_sha256"] == loaded  # the network that made them
        layers = np.split(data.x[0], np.cumsum(run.layer_dims)[:-1])
        with pytest.raises(FusionError, match="has changed since `mess fuse apply`"):
            fuse_query(fs, run, layers)
        monkeypatch.setattr(apply_module, "load_layers", read)
        apply_fusion(fs, checkpoint, "dsp")  # as the refusal advises
        assert fuse_query(fs, run, layers) @ embed(retrained.network, data.x[:1])[0] == pytest.approx(1.0, abs=1e-5)


def test_evaluate_says_why_the_fused_row_is_left_out(extracted_store: Path, tmp_path: Path) -> None:
    """A track extracted after `mess fuse apply` made `mess evaluate` drop the fused row without a word."""
    root = _fused_copy(extracted_store, tmp_path)
    with closing(FeatureStore(root)) as fs:
        run = fs.run("dsp")
        original = fs.tracks(run)[0].path
        audio, sr = sf.read(original, dtype="float32")
        new = tmp_path / "new.flac"
        sf.write(new, 0.8 * audio, sr)
        tagged = FLAC(new)
        tagged.update(FLAC(original).tags.as_dict())  # same composer: a labelled track
        tagged.save()
        extract(fs, [new], load_model("dsp"), WindowPolicy())
    runner, app = CliRunner(), _app()
    args = ["evaluate", "--model", "dsp", "--label", "composer", "-k", "3", "--store", str(root),
            "--plot", str(tmp_path / "q.png")]
    out = runner.invoke(app, [*args, "--json"])
    assert out.exit_code == 0, out.output
    ev = json.loads(out.stdout)
    assert ev["tracks_without_fused_vectors"] == 1 and FUSED not in {s["kind"] for s in ev["sets"]}
    out = runner.invoke(app, args, env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    fix = f"mess fuse apply --model dsp --store {root}"
    assert "fused row left out: 1 labelled track has no fused vectors" in out.output and f"`{fix}`" in out.output
    out = runner.invoke(app, fix.split()[1:])  # the note's command fixes it
    assert out.exit_code == 0, out.output
    ev = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert ev["tracks_without_fused_vectors"] == 0 and FUSED in {s["kind"] for s in ev["sets"]}


@pytest.mark.parametrize("args, message", [
    (["fuse", "train", "--model", "dsp", "--label", "mood"], "unknown label"),
    (["fuse", "train", "--model", "dsp", "--label", "genre"], "need at least 4 labels with 2+ tracks"),
    (["fuse", "train", "--model", "nosuchmodel"], "no vectors for model"),
    (["fuse", "train", "--model", "dsp", "--mining", "easy"], "unknown mining"),
    (["fuse", "train", "--model", "dsp", "--label", "composer", "--fusion-dim", "300"], "must be at most 256"),
    (["fuse", "train", "--model", "dsp", "--label", "composer", "--checkpoint", "{tmp}"], "it is a folder"),
    # its .json description went to the same name, over the weights: trained, said saved, unusable
    (["fuse", "train", "--model", "dsp", "--label", "composer", "--checkpoint", "{tmp}/net.json"], "name it .pt"),
    # a file of the user's at that name was replaced by the checkpoint, after training
    (["fuse", "train", "--model", "dsp", "--label", "composer", "--checkpoint", "{tmp}/garbage.pt"],
     "garbage.pt, which is not a mess fusion checkpoint"),
    (["fuse", "apply", "--model", "dsp", "--checkpoint", "{tmp}/missing.pt"], "no fusion checkpoint"),
    (["fuse", "report", "--model", "dsp", "--checkpoint", "{tmp}/garbage.pt"], "not a mess fusion checkpoint"),
])
def test_cli_bad_input_is_one_clean_line(extracted_store: Path, tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "garbage.pt").write_text("{not json, not torch")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    before = _files(extracted_store)
    out = CliRunner().invoke(_app(), [*args, "--store", str(extracted_store)], env={"COLUMNS": "400"})
    assert out.exit_code == 1
    assert message in out.output and "Traceback" not in out.output
    # the error is the last line: a refusal found while training set out came before the bar's last line
    assert out.output.strip().splitlines()[-1].startswith("error:"), out.output
    assert _files(extracted_store) == before  # no checkpoint, log or vectors written
    assert (tmp_path / "garbage.pt").read_text() == "{not json, not torch"


def _files(root: Path) -> set[Path]:
    """Files under a store, leaving out SQLite's own WAL bookkeeping."""
    return {p.relative_to(root) for p in root.rglob("*") if not p.name.startswith("catalog.sqlite")}


def test_cli_refuses_a_checkpoint_of_another_model(writable: Path) -> None:
    runner, app = CliRunner(), _app()
    out = runner.invoke(app, ["fuse", "train", "--model", "musicnn-msd", "--label", "composer", "--weight-epochs", "2",
                              "--max-epochs", "0", "--store", str(writable), "--json"])
    assert out.exit_code == 0, out.output
    checkpoint = json.loads(out.stdout)["checkpoint"]
    out = runner.invoke(app, ["fuse", "apply", "--model", "dsp", "--checkpoint", checkpoint, "--store", str(writable)])
    assert out.exit_code == 1 and "checkpoint was trained on musicnn-msd" in out.output
    out = runner.invoke(app, ["fuse", "apply", "--store", str(writable.parent / "nowhere")])
    assert out.exit_code == 1 and "no feature store" in out.output


def test_a_retrain_stopped_between_its_checkpoint_and_its_log_is_said(extracted_store: Path, tmp_path: Path) -> None:
    """`fuse train` saves the checkpoint, then replaces its training log: stopped between the two, the log described
    the previous checkpoint and nothing said so. Here a retrain's checkpoint is saved as `fuse train` saves it,
    and its log is not written. `fuse report` says so in its written fusion-MODEL.md and .json as well (they
    carried no note while its console and --json did)."""
    root = tmp_path / "store"
    shutil.copytree(extracted_store, root)
    checkpoint = tmp_path / "between.pt"
    args = ["--model", "dsp", "--checkpoint", str(checkpoint), "--store", str(root)]
    train = ["fuse", "train", "--label", "composer", "--weight-epochs", "2", "--max-epochs", "0", *args, "--json"]
    readers = (["fuse", "report", "-k", "3", *args], ["fuse", "apply", *args])

    def said(cmd: list[str]) -> str:
        out = CliRunner().invoke(_app(), cmd)
        assert out.exit_code == 0, out.output
        return " ".join(out.output.split())

    log = Path(json.loads(said(train))["log"])
    assert not any("training log" in said(cmd) for cmd in readers)
    with closing(FeatureStore(root, readonly=True)) as fs:
        data = load_layers(fs, fs.run("dsp"))
    retrained = train_fusion(data, FusionConfig(label="composer", weight_epochs=2, max_epochs=0, seed=3))
    save_checkpoint(retrained, checkpoint)  # the checkpoint is replaced; the log still describes the one before
    want = f"the training log {log} describes another checkpoint than {checkpoint}"
    written = root / "reports" / fusion_stem(root, checkpoint)
    for cmd in readers:
        assert f"note: {want}" in said(cmd)
        assert json.loads(CliRunner().invoke(_app(), [*cmd, "--json"]).stdout)["training_log_note"].startswith(want)
    assert json.loads(written.with_suffix(".json").read_text())["training_log_note"].startswith(want)
    assert f"**Note:** {want}" in written.with_suffix(".md").read_text()
    said(train)
    assert not any("training log" in said(cmd) for cmd in readers)
    assert json.loads(written.with_suffix(".json").read_text())["training_log_note"] is None
    assert "training log" not in written.with_suffix(".md").read_text()


def test_index_and_similar_name_the_normalisation_fused_vectors_get(extracted_store: Path, tmp_path: Path) -> None:
    """`mess index --fused` printed '(zscore)' and `similar --fused --json` "norm": "zscore" while both used the
    fused vectors as made (never z-scored): the output named a normalisation that was not applied."""
    root = _fused_copy(extracted_store, tmp_path)
    with closing(FeatureStore(root, readonly=True)) as fs:
        ids, fused = fs.derived_matrix(fs.run("dsp"), FUSED)
    runner, app, store = CliRunner(), _app(), ["--store", str(root)]
    out = runner.invoke(app, ["index", "--fused", "--model", "dsp", *store, "--json"])
    assert out.exit_code == 0, out.output
    built = json.loads(out.stdout)
    assert built["norm"] == "none" and Path(built["path"]).name.endswith("-none.faiss")
    out = runner.invoke(app, ["index", "--fused", "--model", "dsp", *store], env={"COLUMNS": "300"})
    assert "fused (none)" in out.output and "zscore" not in out.output
    query = int(ids[0])
    out = runner.invoke(app, ["similar", str(query), "--fused", "--model", "dsp", "--expand", "0", "-k", "3",
                              *store, "--json"])
    assert out.exit_code == 0, out.output
    answer = json.loads(out.stdout)
    unit = fused / np.linalg.norm(fused, axis=1, keepdims=True)  # the vectors as stored: plain cosines
    cos = dict(zip(ids.tolist(), (unit @ unit[0]).tolist(), strict=True))
    assert answer["norm"] == "none"
    assert [round(cos[r["id"]], 4) for r in answer["results"]] == [round(r["score"], 4) for r in answer["results"]]
    out = runner.invoke(app, ["similar", str(query), "--fused", "--model", "dsp", "--norm", "center", *store, "--json"])
    assert json.loads(out.stdout)["norm"] == "center"


def test_evaluate_does_not_crown_fused_vectors_scored_on_the_labels_they_learned(extracted_store: Path,
                                                                                tmp_path: Path) -> None:
    """`mess evaluate --label composer` after `mess fuse train --label composer` scored the fused row on the very
    labels it was trained on and named it best, without a word: a training score shown as a comparison."""
    root = _fused_copy(extracted_store, tmp_path, weight_epochs=4)
    runner, app = CliRunner(), _app()
    args = ["evaluate", "--model", "dsp", "-k", "3", "--store", str(root), "--plot", str(tmp_path / "q.png")]
    ev = json.loads(runner.invoke(app, [*args, "--label", "composer", "--json"]).stdout)
    assert ev["fused_trained_on"] == "composer"
    others = [s for s in ev["sets"] if s["kind"] != FUSED]
    fair = max(others, key=lambda s: s["scores"]["map"])
    out = runner.invoke(app, [*args, "--label", "composer"], env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    assert f"best: {fair['name']} (mAP {fair['scores']['map']:.3f})" in out.output
    assert "trained on these tracks' composer tags" in out.output and "mess fuse report" in out.output
    ev = json.loads(runner.invoke(app, [*args, "--label", "album", "--json"]).stdout)  # not what it learned
    assert ev["fused_trained_on"] is None and FUSED in {s["kind"] for s in ev["sets"]}
    # a label file that groups the tracks as the composer tags do (as the soundtrack demo's manifest.csv groups them
    # as the album tags do) was taken for other labels: the fused row could be named best on labels it learned
    with closing(FeatureStore(root)) as fs:
        tracks = fs.tracks(fs.run("dsp"))
    for name, of in (("maker", lambda t: f"by {t.composer.upper()}"), ("half", lambda t: str(t.id % 2))):
        rows = ["id,label", *(f"{t.id},{of(t)}" for t in tracks)]
        (tmp_path / f"{name}.csv").write_text("\n".join(rows) + "\n")
        labelled = [*args, "--labels", str(tmp_path / f"{name}.csv")]
        ev = json.loads(runner.invoke(app, [*labelled, "--json"]).stdout)
        assert ev["fused_trained_on"] == ("composer" if name == "maker" else None), name
    out = runner.invoke(app, [*args, "--labels", str(tmp_path / "maker.csv")], env={"COLUMNS": "400"})
    assert out.exit_code == 0 and f"best: {fair['name']} (mAP {fair['scores']['map']:.3f})" in out.output
    assert "trained on these tracks' composer tags, which group them as maker.csv does" in out.output, out.output


def test_evaluate_says_nothing_of_a_fused_row_it_left_out(extracted_store: Path, tmp_path: Path) -> None:
    """With --match segments (no fused row) `mess evaluate --label composer` after training on composer still noted
    that 'the fused vectors ... row scores labels they learned and is not named best': a note on a row not shown."""
    root = _fused_copy(extracted_store, tmp_path, weight_epochs=4)
    runner, app = CliRunner(), _app()
    args = ["evaluate", "--model", "dsp", "-k", "3", "--store", str(root), "--plot", str(tmp_path / "q.png"),
            "--label", "composer", "--match", "segments"]
    ev = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert FUSED not in {s["kind"] for s in ev["sets"]} and ev["fused_trained_on"] is None
    out = runner.invoke(app, args, env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    assert "trained on these tracks' composer tags" not in out.output


def _add_default_model_run(root: Path) -> None:
    """A run of 'musicnn' (vectors of the dsp run's tracks), which the store then uses by default."""
    from mess.extract.runs import run_key
    from mess.models.base import ModelInfo
    from mess.store import TrackVectors

    with closing(FeatureStore(root)) as fs:
        hashes = [t.content_hash for t in fs.tracks(fs.run("dsp"))]
        other = fs.ensure_run(run_key(ModelInfo("musicnn", "r1", 16000, ("a", "b"), (4, 4)), WindowPolicy()))
        rng = np.random.default_rng(0)
        fs.write_vectors(other, [TrackVectors(h, [rng.standard_normal(4, dtype=np.float32)] * 2,
                                              [rng.standard_normal((1, 4), dtype=np.float32)] * 2, [0.0])
                                 for h in hashes])
        assert fs.run(None).model == "musicnn"


def test_fused_searches_of_the_default_model_name_the_run_that_has_fused_vectors(extracted_store: Path,
                                                                                 tmp_path: Path) -> None:
    """With fused vectors of dsp and musicnn extracted since (the default model now), `mess similar --fused`,
    `index --fused` (and `export --fused`) said only 'run `mess fuse train` and `mess fuse apply` first'."""
    root = _fused_copy(extracted_store, tmp_path)
    _add_default_model_run(root)
    runner, app = CliRunner(), _app()
    for args in (["similar", "1", "--fused"], ["index", "--fused"]):
        out = runner.invoke(app, [*args, "--store", str(root)], env={"COLUMNS": "400"})
        assert out.exit_code == 1 and "Traceback" not in out.output, out.output
        assert "no 'fused' vectors for musicnn; dsp@1 has them: pick one with --model dsp@1, or run" in out.output
        out = runner.invoke(app, [*args, "--model", "dsp@1", "--store", str(root)])  # as advised
        assert out.exit_code == 0, out.output
    from fastapi.testclient import TestClient

    from mess.serve.app import create_app

    with TestClient(base_url="http://127.0.0.1", app=create_app(root)) as client:  # the server advises the same
        answer = client.get("/api/tracks/1/similar", params={"fused": "true"})
        assert answer.status_code == 400
        assert "dsp@1 has them: pick one with model=dsp@1, or run" in answer.json()["detail"], answer.json()
        assert client.get("/api/tracks/1/similar", params={"fused": "true", "model": "dsp@1"}).status_code == 200


def test_apply_without_a_checkpoint_of_the_default_model_names_the_ones_the_store_has(extracted_store: Path,
                                                                                      tmp_path: Path) -> None:
    """After `mess fuse train --model dsp`, extracting a musicnn run made musicnn the default model, and `mess fuse
    apply` / `report` said only 'no fusion checkpoint at .../musicnn-run2.pt; run `mess fuse train` first': the
    advice trains another network, while the store's dsp checkpoint needs only --model dsp."""
    root = _fused_copy(extracted_store, tmp_path)
    _add_default_model_run(root)
    runner, app = CliRunner(), _app()
    for command in ("apply", "report"):
        out = runner.invoke(app, ["fuse", command, "--store", str(root)], env={"COLUMNS": "400"})
        assert out.exit_code == 1 and "Traceback" not in out.output, out.output
        assert "this store has dsp-run1.pt (--model dsp@1): pick one with --model" in out.output, out.output
    out = runner.invoke(app, ["fuse", "apply", "--model", "dsp@1", "--store", str(root)])  # the advice works
    assert out.exit_code == 0, out.output


def test_the_checkpoint_of_a_model_named_by_its_file_is_named_with_that_model(extracted_store: Path,
                                                                              tmp_path: Path) -> None:
    """A model loaded from its file or folder is named by its path, its checkpoint by the path's slug
    (`_..._tiny.onnx-run3.pt`): `mess fuse apply` advised `--model _..._tiny.onnx@3`, a model no store has. It now
    names the run's model, and the advice works."""
    root = tmp_path / "store"
    shutil.copytree(extracted_store, root)
    model = str(tmp_path / "models" / "tiny.onnx")
    with closing(FeatureStore(root)) as fs:
        dsp = fs.run("dsp")
        data = load_layers(fs, dsp)
        onnx = fs.ensure_run(RunKey(model, "r1", dsp.policy, dsp.sample_rate, dsp.layer_names, dsp.layer_dims))
        blocks = np.split(data.x, np.cumsum(dsp.layer_dims)[:-1], axis=1)
        fs.write_vectors(onnx, [TrackVectors(t.content_hash, [b[i] for b in blocks], [b[i][None] for b in blocks],
                                             [0.0]) for i, t in enumerate(data.tracks)])
    runner, store = CliRunner(), ["--store", str(root)]
    out = runner.invoke(mess_app, ["fuse", "train", "--model", f"{model}@{onnx.id}", "--label", "composer",
                                   "--weight-epochs", "1", "--max-epochs", "0", *store])
    assert out.exit_code == 0, out.output
    out = runner.invoke(mess_app, ["fuse", "apply", "--model", "dsp", *store], env={"COLUMNS": "400"})
    said = " ".join(out.output.split())
    assert out.exit_code == 1 and f"-run{onnx.id}.pt (--model {model}@{onnx.id}): pick one" in said, said
    out = runner.invoke(mess_app, ["fuse", "apply", "--model", f"{model}@{onnx.id}", *store])  # as advised
    assert out.exit_code == 0, out.output


def test_a_moved_store_fuses_an_outside_file_with_its_own_checkpoint(extracted_store: Path, tmp_path: Path) -> None:
    """`fuse apply` recorded the checkpoint's absolute path: after the store was moved (or copied to another
    machine), `mess similar FILE --fused` failed with 'no fusion checkpoint ... run `mess fuse train` first'
    though the checkpoint was in the store."""
    root = _fused_copy(extracted_store, tmp_path)
    moved = tmp_path / "elsewhere" / "store"
    shutil.move(root, moved)
    with closing(FeatureStore(moved, readonly=True)) as fs:
        run = fs.run("dsp")
        ids, fused = fs.derived_matrix(run, FUSED)
        track = fs.tracks(run)[0]
        vectors = embed_file(Path(track.path), load_model("dsp"), run_policy(run))
        query = fuse_query(fs, run, vectors.layers)  # the network in the moved store, as `apply` used it
        stored = fused[ids.tolist().index(track.id)]
        assert float(query @ stored) / np.linalg.norm(stored) > 0.99


def test_a_checkpoint_is_never_saved_over_the_stores_own_files(extracted_store: Path, tmp_path: Path) -> None:
    """`mess fuse train --checkpoint STORE/catalog.sqlite` trained, then wrote the weights over the catalog (and
    their description beside it): every later command said the store was damaged."""
    root = tmp_path / "store"
    shutil.copytree(extracted_store, root)
    with closing(FeatureStore(root, readonly=True)) as fs:
        before = [(t.id, t.content_hash) for t in fs.tracks(fs.run("dsp"))]
    args = ["fuse", "train", "--model", "dsp", "--label", "composer", "--weight-epochs", "1", "--max-epochs", "0",
            "--store", str(root)]
    out = CliRunner().invoke(_app(), [*args, "--checkpoint", str(root / "catalog.sqlite")])
    assert out.exit_code == 1 and "inside the feature store" in out.output and "Traceback" not in out.output
    with closing(FeatureStore(root, readonly=True)) as fs:
        assert [(t.id, t.content_hash) for t in fs.tracks(fs.run("dsp"))] == before
    out = CliRunner().invoke(_app(), [*args, "--checkpoint", str(root / "fusion" / "composer.pt")])
    assert out.exit_code == 0, out.output  # its fusion/ folder is where checkpoints go
    assert (root / "fusion" / "composer.pt").is_file()


def test_evaluate_plots_where_it_says_and_refuses_a_format_it_cannot_write(extracted_store: Path,
                                                                           tmp_path: Path) -> None:
    """`--plot FILE` without a suffix said 'plot -> FILE' (and "plot": FILE in --json) while matplotlib wrote
    FILE.png; `--plot FILE.sqlite` evaluated every layer, then ended in a ValueError traceback."""
    runner, app = CliRunner(), _app()
    args = ["evaluate", "--model", "dsp", "--label", "composer", "-k", "3", "--store", str(extracted_store)]
    out = runner.invoke(app, [*args, "--plot", str(tmp_path / "quality"), "--json"])
    assert out.exit_code == 0, out.output
    said = Path(json.loads(out.stdout)["plot"])
    assert said.is_file() and said.stat().st_size > 0 and list(tmp_path.iterdir()) == [said]
    out = runner.invoke(app, [*args, "--plot", str(tmp_path / "quality.sqlite")])
    assert out.exit_code == 1 and "cannot plot to" in out.output and ".png" in out.output
    assert "Traceback" not in out.output and not (tmp_path / "quality.sqlite").exists()


def test_a_checkpoint_is_refused_on_another_run_of_its_model(extracted_store: Path, tmp_path: Path) -> None:
    """`mess fuse apply` fuses the model's run that covers the most tracks: after `mess extract --max-windows 8` made
    a second dsp run, a network trained on the 4-window run fused the 8-window vectors it never saw, with only a
    note that 'the store changed since training'. A checkpoint from before runs were recorded still applies, noted."""
    root = tmp_path / "store"
    shutil.copytree(extracted_store, root)
    runner, app, store = CliRunner(), _app(), ["--store", str(root)]
    out = runner.invoke(app, ["fuse", "train", "--model", "dsp", "--label", "composer", "--weight-epochs", "2",
                              "--max-epochs", "0", *store, "--json"])
    assert out.exit_code == 0, out.output
    checkpoint = Path(json.loads(out.stdout)["checkpoint"])
    with closing(FeatureStore(root)) as fs:
        first = fs.run("dsp")
        extract(fs, [Path(t.path) for t in fs.tracks(first)], load_model("dsp"), WindowPolicy(max_windows=8))
        second = fs.run("dsp")  # as many tracks, newer: the run in use
        assert second.id != first.id and run_policy(second).max_windows == 8
    before = _files(root)
    for command in ("apply", "report"):
        out = runner.invoke(app, ["fuse", command, "--model", "dsp", "--checkpoint", str(checkpoint), *store],
                            env={"COLUMNS": "400"})
        assert out.exit_code == 1, out.output
        assert (f"trained on dsp run {first.id} (max_windows 4); run {second.id} has max_windows 8; pick run "
                f"{first.id} (--model dsp@{first.id}) or train again with `mess fuse train`") in out.output
        assert "Traceback" not in out.output
        out = runner.invoke(app, ["fuse", command, "--model", "dsp", *store], env={"COLUMNS": "400"})
        assert out.exit_code == 1 and f"no fusion checkpoint at {root / 'fusion' / f'dsp-run{second.id}.pt'}" in \
            "".join(out.output.split("\n")), out.output  # each run has its own network
    assert _files(root) == before  # no fused vectors of the 8-window run
    out = runner.invoke(app, ["fuse", "apply", "--model", f"dsp@{first.id}", "--checkpoint", str(checkpoint), *store,
                              "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout)["trained_on"]["run_id"] == first.id, out.output  # as advised

    # a checkpoint saved before the run's policy was recorded: its run cannot be checked, and it still applies
    old = tmp_path / "old.pt"
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    torch.save({k: v for k, v in saved.items() if k not in ("policy", "run_id")}, old)
    out = runner.invoke(app, ["fuse", "apply", "--model", "dsp", "--checkpoint", str(old), *store],
                        env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    assert f"cannot check that it was trained on run {second.id}" in out.output
    out = runner.invoke(app, ["fuse", "apply", "--model", "dsp", "--checkpoint", str(old), *store, "--json"])
    assert f"run {second.id}" in json.loads(out.stdout)["run_note"]
    # fused vectors of the 8-window run made by that old checkpoint; replaced by the 4-window one, an outside file
    # (`mess similar FILE --fused`) is refused as well, not fused by a network that never saw this run
    shutil.copy(checkpoint, old)
    with closing(FeatureStore(root, readonly=True)) as fs:
        audio, sr = sf.read(fs.tracks(second)[0].path, dtype="float32")
        sf.write(tmp_path / "quieter.wav", 0.8 * audio, sr)
        with pytest.raises(StoreError, match=f"trained on dsp run {first.id} .max_windows 4.; run {second.id}"):
            similar_tracks(fs, second, resolve_query(fs, str(tmp_path / "quieter.wav"), second), k=3, fused=True)


def test_a_checkpoint_of_a_run_with_other_layers_names_its_run(extracted_store: Path, tmp_path: Path) -> None:
    """A model that gained a layer in a new revision (musicnn's `timbre`: runs 1 and 3 of the soundtrack store) made
    `mess fuse apply` refuse a checkpoint of the older run with both runs' whole layer lists (600 characters there)
    and no way on, though the run it was trained on was in the store; and `mess fuse report --model dsp@1` advised
    `mess probe --model dsp`, which probes the other run. Both now name the run."""
    root = tmp_path / "store"
    shutil.copytree(extracted_store, root)
    runner, store = CliRunner(), ["--store", str(root)]
    out = runner.invoke(mess_app, ["fuse", "train", "--model", "dsp", "--label", "composer", "--weight-epochs", "2",
                                   "--max-epochs", "0", *store, "--json"])
    assert out.exit_code == 0, out.output
    checkpoint = Path(json.loads(out.stdout)["checkpoint"])
    with closing(FeatureStore(root)) as fs:
        first = fs.run("dsp")
        data, dims = load_layers(fs, first), first.layer_dims
        later = fs.ensure_run(RunKey("dsp", "next", first.policy, first.sample_rate, (*first.layer_names, "extra"),
                                     (*dims, 3)))
        blocks = np.split(data.x, np.cumsum(dims)[:-1], axis=1)
        fs.write_vectors(later, [TrackVectors(t.content_hash, [*(b[i] for b in blocks), np.ones(3)],
                                              [*(b[i][None] for b in blocks), np.ones((1, 3))], [0.0])
                                 for i, t in enumerate(data.tracks)])
        assert fs.run("dsp").id == later.id  # as many tracks, newer: the run in use
    out = runner.invoke(mess_app, ["fuse", "apply", "--checkpoint", str(checkpoint), *store], env={"COLUMNS": "400"})
    said = " ".join(out.output.split())
    assert out.exit_code == 1 and said == (
        f"error: checkpoint was trained on dsp run {first.id} ({len(dims)} layers); run {later.id} has "
        f"{len(dims) + 1} layers (adds extra); pick run {first.id} (--model dsp@{first.id}) or train again with "
        "`mess fuse train`"), said
    out = runner.invoke(mess_app, ["fuse", "report", "-k", "3", "--model", f"dsp@{first.id}", *store, "--json"])
    assert out.exit_code == 0, out.output
    assert f"run `mess probe --model dsp@{first.id}` to compare" in json.loads(out.stdout)["probe_note"]


def test_two_checkpoints_of_one_file_name_keep_their_own_training_logs(writable: Path, tmp_path: Path) -> None:
    """Training logs were named after the checkpoint's file name only: training a/net.pt, then b/net.pt wrote both
    logs to fusion-net-train.json, and `fuse apply --checkpoint a/net.pt` said its log described another one."""
    runner, app = CliRunner(), _app()
    logs = {}
    for folder in ("a", "b"):
        checkpoint = tmp_path / folder / "net.pt"
        checkpoint.parent.mkdir()
        out = runner.invoke(app, ["fuse", "train", "--model", "dsp", "--label", "composer", "--weight-epochs", "1",
                                  "--max-epochs", "0", "--seed", str(len(logs)), "--checkpoint", str(checkpoint),
                                  "--store", str(writable), "--json"])
        assert out.exit_code == 0, out.output
        logs[checkpoint] = Path(json.loads(out.stdout)["log"])
    assert len(set(logs.values())) == 2
    for checkpoint, log in logs.items():
        summary = json.loads(log.read_text())["summary"]
        assert summary["checkpoint"] == str(checkpoint)
        assert summary["checkpoint_sha256"] == checkpoint_digest(checkpoint)
        assert log.name.startswith("fusion-net-") and log.name.endswith("-train.json")  # still says whose it is
        out = runner.invoke(app, ["fuse", "apply", "--checkpoint", str(checkpoint), "--store", str(writable),
                                  "--json"])
        assert out.exit_code == 0, out.output
        assert json.loads(out.stdout)["training_log_note"] is None


def test_a_checkpoint_named_in_another_encoding_trains_applies_and_reports(writable: Path, tmp_path: Path) -> None:
    """A checkpoint named in Latin-1 (caf\\xe9.pt) could not be trained: `mess fuse train` ended with "'utf-8' codec
    can't encode character '\\udce9'" (its log's name hashes the path); and where the training log described another
    checkpoint, `mess fuse report` ended in a traceback writing the note that names it. Both now work."""
    checkpoint = tmp_path / os.fsdecode(b"caf\xe9.pt")
    runner, store = CliRunner(), ["--checkpoint", str(checkpoint), "--store", str(writable)]
    out = runner.invoke(_app(), ["fuse", "train", "--model", "dsp", "--label", "composer", "--weight-epochs", "1",
                                 "--max-epochs", "0", *store, "--json"])
    assert out.exit_code == 0, out.output
    log = Path(json.loads(out.stdout)["log"])
    record = json.loads(log.read_text())
    record["summary"]["checkpoint_sha256"] = "0" * 64  # as a retrain stopped between its checkpoint and its log
    log.write_text(json.dumps(record))
    assert (out := runner.invoke(_app(), ["fuse", "apply", *store])).exit_code == 0, out.output
    out = runner.invoke(_app(), ["fuse", "report", "-k", "3", *store, "--json"])
    assert out.exit_code == 0, out.output
    md = Path(json.loads(out.stdout)["files"]["md"]).read_text(encoding="utf-8")
    assert f"describes another checkpoint than {tmp_path}/caf\\xe9.pt" in md


def test_reports_of_two_checkpoints_of_one_model_are_kept_apart(extracted_store: Path, tmp_path: Path) -> None:
    """`mess fuse report` named its files after the model (fusion-dsp.json, .md, .png): reporting a second
    checkpoint of dsp overwrote the first one's report."""
    root = tmp_path / "store"
    shutil.copytree(extracted_store, root)
    runner, app, store = CliRunner(), _app(), ["--store", str(root)]
    reports = {}
    for seed, checkpoint in enumerate((root / "fusion" / "dsp.pt", tmp_path / "other.pt")):
        out = runner.invoke(app, ["fuse", "train", "--model", "dsp", "--label", "composer", "--weight-epochs", "2",
                                  "--max-epochs", "0", "--seed", str(seed), "--checkpoint", str(checkpoint), *store])
        assert out.exit_code == 0, out.output
        out = runner.invoke(app, ["fuse", "report", "-k", "3", "--checkpoint", str(checkpoint), *store, "--json"])
        assert out.exit_code == 0, out.output
        reports[checkpoint] = json.loads(out.stdout)
    first, second = reports.values()
    assert first["layer_weights"] != second["layer_weights"]  # two networks, two reports
    for checkpoint, report in reports.items():
        files = {ext: Path(path) for ext, path in report["files"].items()}
        assert all(p.parent == root / "reports" and p.stat().st_size > 0 for p in files.values())
        assert json.loads(files["json"].read_text())["layer_weights"] == report["layer_weights"]  # not overwritten
        assert files["json"].name.startswith(f"fusion-{checkpoint.stem}-")  # says whose report it is


@pytest.mark.parametrize(("sig", "code", "how"), [(signal.SIGINT, 130, "interrupted"),
                                                  (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_ctrl_c_saves_the_best_epoch_so_far_marked_interrupted(writable: Path, tmp_path: Path, sig: signal.Signals,
                                                               code: int, how: str) -> None:
    """Ctrl-C during a long `mess fuse train` ended in a KeyboardInterrupt traceback and saved nothing, though the
    best weights so far were in memory. A real SIGINT mid-training now saves them, marked interrupted, exit 130.
    SIGTERM (a service manager, `kill`) stopped at once, saving nothing; it now does as Ctrl-C, exit 143."""
    checkpoint = tmp_path / "interrupted.pt"
    partial = writable / "reports" / f"{fusion_stem(writable, checkpoint)}-train.partial.json"
    proc = subprocess.Popen([sys.executable, "-m", "mess.cli", "fuse", "train", "--model", "dsp", "--label", "composer",
                             "--weight-epochs", "100000", "--max-epochs", "0", "--threads", "1", "--checkpoint",
                             str(checkpoint), "--store", str(writable)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "400"})
    deadline = time.time() + 300  # a cold start on a loaded machine takes a while
    while time.time() < deadline and proc.poll() is None and _epochs(partial) < 3:
        time.sleep(0.05)
    assert proc.poll() is None, "the signal should land mid-training"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err + out and "KeyboardInterrupt" not in err
    saved = json.loads(checkpoint.with_suffix(".json").read_text())
    reached = saved["interrupted_at"]
    assert reached >= 2 and saved["history"][-1]["epoch"] == reached and saved["best_epoch"] == reached
    assert saved["checkpoint_sha256"] == checkpoint_digest(checkpoint)
    said = " ".join(err.split())
    assert f"{how} at epoch {reached} of 100000: saved the best weights so far (epoch {reached}) to " \
           f"{checkpoint}" in said
    log = json.loads((writable / "reports" / f"{fusion_stem(writable, checkpoint)}-train.json").read_text())
    assert log["summary"]["interrupted_at"] == reached and len(log["epochs"]) == reached and not partial.exists()
    stopped = f"the checkpoint is from a training interrupted at epoch {reached} (best epoch {reached})"
    out = CliRunner().invoke(_app(), ["fuse", "apply", "--checkpoint", str(checkpoint), "--store", str(writable)],
                             env={"COLUMNS": "400"})
    assert out.exit_code == 0 and f"note: {stopped}" in out.output, out.output  # usable, and said to be cut short
    out = CliRunner().invoke(_app(), ["fuse", "report", "-k", "3", "--checkpoint", str(checkpoint), "--store",
                                      str(writable), "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["interrupted_note"].startswith(stopped)
    assert f"**Note:** {stopped}" in Path(report["files"]["md"]).read_text()


def test_a_stop_before_the_first_epoch_ends_saves_nothing(writable: Path, tmp_path: Path) -> None:
    """A Ctrl-C before any epoch ended has no best epoch to save: training says so with its own exception (a second
    Ctrl-C's KeyboardInterrupt was reported with the same words, 'nothing saved', even while a save was under way),
    and neither a checkpoint nor a training log is written."""
    from mess.fusion.pipeline import train_and_save

    checkpoint = tmp_path / "never.pt"
    with closing(FeatureStore(writable, readonly=False)) as fs, pytest.raises(StoppedBeforeFirstEpoch):
        train_and_save(fs, fs.run("dsp"), FusionConfig(label="composer", weight_epochs=3, max_epochs=0), checkpoint,
                       stop=lambda: True)
    assert not checkpoint.exists() and not checkpoint.with_suffix(".json").exists()
    assert list((writable / "reports").glob(f"{fusion_stem(writable, checkpoint)}*")) == []


def test_a_report_says_when_its_probe_saw_fewer_tracks_than_the_run(extracted_store: Path,
                                                                    tmp_path: Path) -> None:
    """`mess fuse report` set the probe R^2 of a `mess probe` of 12 tracks beside the weights of a network trained
    and scored on 16 without a word. It now notes it (console, .md, ``probe_tracks_note``), and not once the probe
    covers the run again."""
    root, dsp = tmp_path / "store", ["--model", "dsp", "--store", str(tmp_path / "store")]
    shutil.copytree(extracted_store, root)  # its 16 tracks, 4 of them forgotten until after the first probe
    with closing(FeatureStore(root)) as fs:
        later = [Path(t.path) for t in fs.tracks(fs.run("dsp"))[12:]]
        assert fs.remove_tracks([str(p) for p in later]) == 4 and len(fs.tracks(fs.run("dsp"))) == 12
    runner, probe = CliRunner(), ["probe", "--control", "none", "--workers", "1", *dsp, "--json"]
    assert (out := runner.invoke(mess_app, probe)).exit_code == 0, out.output
    with closing(FeatureStore(root)) as fs:
        extract(fs, later, load_model("dsp"), WindowPolicy())
        run = fs.run("dsp")
        assert len(fs.tracks(run)) == 16
    out = runner.invoke(mess_app, ["fuse", "train", "--label", "composer", "--weight-epochs", "2", "--max-epochs", "0",
                                   *dsp])
    assert out.exit_code == 0, out.output
    out = runner.invoke(mess_app, ["fuse", "report", "-k", "3", *dsp], env={"COLUMNS": "400"})
    stale = f"the probe report probe-dsp-run{run.id}.json is from a probe of 12 tracks; dsp run {run.id} has 16 now"
    assert out.exit_code == 0 and f"note: {stale}: rerun `mess probe --model dsp`" in out.output, out.output
    out = runner.invoke(mess_app, ["fuse", "report", "-k", "3", *dsp, "--json"])
    report = json.loads(out.stdout)
    assert report["probe_tracks_note"].startswith(stale) and report["probe"]  # still shown, and said to be older
    assert f"**Note:** {stale}" in Path(report["files"]["md"]).read_text()
    assert (out := runner.invoke(mess_app, probe)).exit_code == 0, out.output
    out = runner.invoke(mess_app, ["fuse", "report", "-k", "3", *dsp, "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout)["probe_tracks_note"] is None, out.output


def _apply_as_before_the_run_check(fs: FeatureStore, run: Run, checkpoint: Path) -> None:
    """Fused vectors of ``run`` as `mess fuse apply` wrote them before it checked (and recorded) the run its checkpoint
    was trained on: every track through the checkpoint's network, whichever run that was."""
    result, data = load_checkpoint(checkpoint), load_layers(fs, run)
    fused = embed(result.network, data.x)
    meta = {"checkpoint": str(checkpoint.resolve()), "checkpoint_sha256": checkpoint_digest(checkpoint),
            "checkpoint_in_store": checkpoint.resolve().relative_to(fs.root.resolve()).as_posix(),
            "label": result.config.label, "fusion_dim": int(fused.shape[1]), "tracks": len(fused),
            "data_hash": result.data_hash, "data_hash_matches": data.data_hash("composer") == result.data_hash,
            "layer_weights": result.layer_weights(data.x)}
    fs.write_derived(run, FUSED, [t.content_hash for t in data.tracks], fused, meta)


def test_fused_vectors_made_for_another_run_are_refused_where_read(extracted_store: Path, tmp_path: Path) -> None:
    """Fused vectors that `mess fuse apply` wrote before it checked the checkpoint's run (a network trained on the
    4-window dsp run fusing the 8-window run's vectors) were still read by `mess index --fused` and `mess similar ID
    --fused`. Readers now check the run they were made for: recorded with them, or, for older sets, in the
    description (.json) of the checkpoint that made them."""
    root = _fused_copy(extracted_store, tmp_path)
    runner, app, store = CliRunner(), _app(), ["--model", "dsp", "--store", str(root)]
    with closing(FeatureStore(root)) as fs:
        first = fs.run("dsp")
        checkpoint = checkpoint_path(fs, first)
        recorded = fs.derived_meta(first, FUSED)
        assert recorded["trained_on"] == {"run_id": first.id, "revision": first.revision, "policy": first.policy}
        _apply_as_before_the_run_check(fs, first, checkpoint)  # an older set of the right run: its checkpoint says so
        query = str(fs.tracks(first)[0].id)
    out = runner.invoke(app, ["similar", query, "--fused", "-k", "3", *store])
    assert out.exit_code == 0, out.output
    with closing(FeatureStore(root)) as fs:
        extract(fs, [Path(t.path) for t in fs.tracks(first)], load_model("dsp"), WindowPolicy(max_windows=8))
        second = fs.run("dsp")  # as many tracks, newer: the run in use
        assert second.id != first.id
        _apply_as_before_the_run_check(fs, second, checkpoint)
    want = (f"the stored fused vectors of dsp run {second.id} were made by a network trained on run {first.id} "
            f"(max_windows 4; run {second.id} has max_windows 8); run `mess fuse apply --model dsp` again")
    for command in (["index", "--fused"], ["similar", query, "--fused", "-k", "3"]):
        out = runner.invoke(app, [*command, *store], env={"COLUMNS": "400"})
        assert out.exit_code == 1 and want in out.output and "Traceback" not in out.output, out.output
    with closing(FeatureStore(root)) as fs:  # recorded with them (as `fuse apply` does now), on the wrong run
        ids, fused = fs.derived_matrix(second, FUSED)
        hashes = {t.id: t.content_hash for t in fs.tracks(second)}
        fs.write_derived(second, FUSED, [hashes[int(i)] for i in ids], fused, recorded)
    out = runner.invoke(app, ["index", "--fused", *store], env={"COLUMNS": "400"})
    assert out.exit_code == 1 and want in out.output, out.output
    out = runner.invoke(app, ["evaluate", "--label", "composer", "--json", *store])  # the other sets still scored
    assert out.exit_code == 0, out.output
    scored = json.loads(out.stdout)
    assert FUSED not in {s["kind"] for s in scored["sets"]} and scored["fused_note"] == f"fused row left out: {want}"
    out = runner.invoke(mess_app, ["artists", "discrimination", "--json", *store], env={"COLUMNS": "400"})
    assert out.exit_code == 0 and f"fused vectors left out: {want}" in " ".join(out.stderr.split()), out.stderr
    assert "fused" not in {layer["label"] for layer in json.loads(out.stdout)["layers"]}
    with TestClient(create_app(root), base_url="http://127.0.0.1") as client:  # the page offers no fused choice
        listed = {r["id"]: r for r in client.get("/api/runs").json()["runs"]}
    assert listed[second.id]["fused"] is False and listed[second.id]["fused_note"] == want
    assert listed[first.id]["fused"] is True and listed[first.id]["fused_note"] is None
    with closing(FeatureStore(root)) as fs:  # retrained since: the older set of run 1 can no longer be checked
        save_checkpoint(train_fusion(load_layers(fs, first), FusionConfig(label="composer", weight_epochs=1,
                                                                          max_epochs=0, seed=4)), checkpoint)
        with pytest.raises(StoreError, match="cannot tell which run of dsp .* run `mess fuse apply --model dsp` again"):
            load_vectors(fs, first, VectorSpec.from_options(fused=True))


def test_a_file_that_comes_at_the_checkpoint_s_name_while_training_never_costs_the_network(
        writable: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A NAME.json of the user's (or a NAME.pt) made while `mess fuse train` ran made the final save refuse: the
    trained network was lost. It is saved under the next free name beside it, which it says, and its training log
    is that checkpoint's."""
    checkpoint = tmp_path / "net.pt"
    theirs = {checkpoint.with_suffix(".json"): b'{"todo": ["mix"]}',
              tmp_path / "net-1.pt": b"\x89PNG\r\n\x1a\n not a checkpoint"}  # the next name is taken too
    logged = TrainingLog.epoch

    def arriving(self: TrainingLog, entry: EpochLog) -> None:  # the files come once training is under way
        logged(self, entry)
        for path, data in theirs.items():
            path.write_bytes(data)

    monkeypatch.setattr(TrainingLog, "epoch", arriving)
    args = ["fuse", "train", "--model", "dsp", "--label", "composer", "--weight-epochs", "2", "--max-epochs", "0",
            "--checkpoint", str(checkpoint), "--store", str(writable)]
    out = CliRunner().invoke(_app(), [*args, "--json"])
    assert out.exit_code == 0, out.output
    summary, saved = json.loads(out.stdout), tmp_path / "net-2.pt"
    assert summary["checkpoint"] == str(saved) and not checkpoint.exists()
    assert {p: p.read_bytes() for p in theirs} == theirs
    why = summary["checkpoint_note"]
    assert str(checkpoint.with_suffix(".json")) in why and str(saved) in why
    assert load_checkpoint(saved).sha256 == summary["checkpoint_sha256"] == checkpoint_digest(saved)
    assert json.loads(saved.with_suffix(".json").read_text())["checkpoint_sha256"] == checkpoint_digest(saved)
    with closing(FeatureStore(writable, readonly=True)) as fs:
        assert Path(summary["log"]) == training_log_path(fs, saved)
        assert log_mismatch(fs, saved) is None
        assert not training_log_path(fs, checkpoint).with_suffix(".partial.json").exists()  # its epochs went there
    assert json.loads(Path(summary["log"]).read_text())["summary"]["checkpoint"] == str(saved)
    for path in (saved, saved.with_suffix(".json"), *theirs):
        path.unlink()
    out = CliRunner().invoke(_app(), args, env={"COLUMNS": "400"})
    said = " ".join(out.output.split())
    assert out.exit_code == 0 and saved.exists(), out.output
    assert f"note: not saved at {checkpoint}: " in said and f"saved at {saved} instead" in said


def test_a_file_that_comes_at_the_checkpoint_s_name_in_the_instant_of_the_save_is_kept_and_the_network_saved(
        writable: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a user's NAME.pt made in the instant after the last check was renamed over by the trained network
    (and one made between the pipeline's check and the save's made the save refuse, the network lost). Now the
    name is taken by an exclusive create, which fails: the user's file stays as it was and the network is saved
    at the next free name, which the summary says."""
    from mess.fusion import train
    from mess.fusion.pipeline import train_and_save
    checkpoint = tmp_path / "race.pt"
    real, arrived = train.checkpoint_problem, []

    def then_their_file_comes(place: Path, store_root: Path | None = None) -> str | None:
        problem = real(place, store_root)
        if place == checkpoint and not arrived:
            checkpoint.write_bytes(b"\x89PNG\r\n\x1a\n their photo")
            arrived.append(place)
        return problem

    monkeypatch.setattr(train, "checkpoint_problem", then_their_file_comes)
    with closing(FeatureStore(writable)) as fs:
        summary = train_and_save(fs, fs.run("dsp"), FusionConfig(label="composer", weight_epochs=1, max_epochs=0,
                                                                 seed=3), checkpoint).summary
    saved = tmp_path / "race-1.pt"
    assert arrived and checkpoint.read_bytes() == b"\x89PNG\r\n\x1a\n their photo"
    assert not checkpoint.with_suffix(".json").exists()
    assert summary["checkpoint"] == str(saved) and str(checkpoint) in summary["checkpoint_note"]
    assert load_checkpoint(saved).sha256 == summary["checkpoint_sha256"] == checkpoint_digest(saved)
    assert json.loads(saved.with_suffix(".json").read_text())["checkpoint_sha256"] == checkpoint_digest(saved)
