"""`mess fuse` on real rendered music (the session's ``extracted_store``: composers x pieces)."""

from __future__ import annotations

import json
import shutil
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import typer
from typer.testing import CliRunner

from mess.cli.fuse import register
from mess.extract.embed import embed_file
from mess.extract.runs import run_policy
from mess.fusion.apply import FUSED, fuse_query
from mess.fusion.data import load_layers
from mess.fusion.report import compare
from mess.fusion.train import FusionConfig, embed, train_fusion
from mess.models.registry import load_model
from mess.query import resolve_query
from mess.search.query import similar_tracks
from mess.store import FeatureStore

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
    return app


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
    assert ("fused beats" in report.verdict) == (fused.ndcg > report.score("all-layers").ndcg)
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

    out = runner.invoke(app, ["fuse", "report", "--model", "dsp", "-k", "3", *store, "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert {m["method"] for m in report["methods"]} >= {"fused", "untrained", "best-layer", "all-layers", "chance"}
    for path in report["files"].values():
        assert Path(path).stat().st_size > 0
    assert "too small to conclude" in report["caveat"]


@pytest.mark.parametrize("args, message", [
    (["fuse", "train", "--model", "dsp", "--label", "mood"], "unknown label"),
    (["fuse", "train", "--model", "nosuchmodel"], "no vectors for model"),
    (["fuse", "train", "--model", "dsp", "--mining", "easy"], "unknown mining"),
    (["fuse", "apply", "--model", "dsp", "--checkpoint", "{tmp}/missing.pt"], "no fusion checkpoint"),
    (["fuse", "report", "--model", "dsp", "--checkpoint", "{tmp}/garbage.pt"], "not a mess fusion checkpoint"),
])
def test_cli_bad_input_is_one_clean_line(extracted_store: Path, tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "garbage.pt").write_text("{not json, not torch")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    before = _files(extracted_store)
    out = CliRunner().invoke(_app(), [*args, "--store", str(extracted_store)])
    assert out.exit_code == 1
    assert message in out.output and "Traceback" not in out.output
    assert _files(extracted_store) == before  # no checkpoint, log or vectors written


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
