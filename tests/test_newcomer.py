"""The newcomer path: the default model is the best extracted, local MERT folders work offline, plain help."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor
from typer.testing import CliRunner

from mess.cli.main import app
from mess.store.config import ConfigError, preferred_model

runner = CliRunner()
MERT_FRONT_END = dict(conv_dim=(16,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
                      conv_bias=False, feat_extract_norm="group", feat_proj_layer_norm=True,
                      num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, layer_norm_eps=1e-5)


def _tiny_mert(folder: Path) -> Path:
    """A random-weights MERT-shaped HubertModel saved the way `mess models fetch` leaves a snapshot."""
    torch.manual_seed(0)
    cfg = HubertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                       **MERT_FRONT_END)
    HubertModel(cfg).eval().save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=24000, do_normalize=True).save_pretrained(folder)
    return folder


def test_preferred_model_ranks_mert_then_musicnn_then_dsp() -> None:
    assert preferred_model(["musicnn-msd", "dsp"]) == "musicnn-msd"  # dsp extracted last, musicnn is better
    assert preferred_model(["dsp", "/models/MERT-v1-95M", "musicnn-msd"]) == "/models/MERT-v1-95M"
    assert preferred_model(["musicnn-msd-random-init", "dsp"]) == "dsp"  # a probe control is never the default
    assert preferred_model(["musicnn-msd", "dsp"], configured="dsp") == "dsp"
    with pytest.raises(ConfigError, match="--unset"):  # a configured model without vectors is never replaced
        preferred_model(["musicnn-msd"], configured="gone")


def test_local_mert_folder_run_works_offline_and_is_the_default(rendered_collection: list[Path], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = _tiny_mert(tmp_path / "mert-v1-95m")  # named like the hub model on purpose
    store, music = tmp_path / "store", rendered_collection[:3]
    for model in (str(folder), "dsp"):  # dsp extracted last
        out = runner.invoke(app, ["extract", *map(str, music), "--model", model, "--store", str(store),
                                  "--window", "5", "--max-windows", "1"])
        assert out.exit_code == 0, out.output
    outside = rendered_collection[-1]  # not in this store: embedded on the fly with the folder's model
    out = runner.invoke(app, ["similar", str(outside), "-k", "2", "--store", str(store), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["model"] == str(folder.resolve()) and data["query"]["external"] and len(data["results"]) == 2
    out = runner.invoke(app, ["similar", "1", "-k", "2", "--model", str(folder), "--store", str(store), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["model"] == str(folder.resolve())
    out = runner.invoke(app, ["config", "default-model", "dsp", "--store", str(store)])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["similar", "1", "-k", "2", "--store", str(store), "--json"])
    assert json.loads(out.stdout)["model"] == "dsp"
    out = runner.invoke(app, ["config", "default-model", "nope", "--store", str(store)])
    assert out.exit_code == 1 and "no vectors for model 'nope'" in out.output


def test_default_model_on_the_demo_store(extracted_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(extracted_store, store)
    out = runner.invoke(app, ["config", "--store", str(store), "--json"])
    assert json.loads(out.stdout)["default_model"] == "musicnn-msd"
    runner.invoke(app, ["config", "default-model", "dsp", "--store", str(store)])
    out = runner.invoke(app, ["similar", "1", "-k", "1", "--store", str(store), "--json"])
    assert json.loads(out.stdout)["model"] == "dsp"
    out = runner.invoke(app, ["config", "default-model", "dsp", "--unset", "--store", str(store)])  # which one?
    assert out.exit_code == 1 and "--unset takes no value" in out.output, out.output  # it unset, value ignored
    out = runner.invoke(app, ["config", "--store", str(store), "--json"])
    assert json.loads(out.stdout)["settings"] == {"default-model": "dsp"}
    runner.invoke(app, ["config", "default-model", "--unset", "--store", str(store)])
    out = runner.invoke(app, ["similar", "1", "-k", "1", "--store", str(store), "--json"])
    assert json.loads(out.stdout)["model"] == "musicnn-msd"
    (store / "config.json").write_text("")  # a write cut short: a traceback before, and `mess config` refused it
    out = runner.invoke(app, ["similar", "1", "-k", "1", "--store", str(store)])
    assert out.exit_code == 1 and "mess config default-model --unset" in " ".join(out.output.split())
    assert out.exception is None or isinstance(out.exception, SystemExit)
    (store / "config.json").write_text('[{"default-model": "dsp"}]')  # not an object: read as no settings before
    out = runner.invoke(app, ["similar", "1", "-k", "1", "--store", str(store)])
    assert out.exit_code == 1 and "not a JSON object of settings" in " ".join(out.output.split()), out.output
    out = runner.invoke(app, ["config", "default-model", "--unset", "--store", str(store)])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["similar", "1", "-k", "1", "--store", str(store), "--json"])
    assert json.loads(out.stdout)["model"] == "musicnn-msd"


def test_version_and_help_pages_without_type_markers() -> None:
    out = runner.invoke(app, ["--version"])
    assert out.exit_code == 0 and re.fullmatch(r"mess \S+\n", out.stdout)
    commands = [["similar"], ["extract"], ["playlist", "radio"], ["playlist", "path"], ["mpd", "play"], ["export"],
                ["artists", "similar"], ["config"], ["artists"], []]
    for cmd in commands:
        out = runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "160"})
        assert out.exit_code == 0, (cmd, out.output)
        markers = re.findall(r"<(?:bool|str|int|float|path|list\[[^\]]*\]|int range|float range)>|\{\w+\}", out.output)
        assert not markers, (cmd, markers)


def test_similar_offers_only_encoded_aspects_as_evidence(extracted_store: Path, tmp_path: Path) -> None:
    from contextlib import closing

    from mess.store import FeatureStore

    store = tmp_path / "store"
    shutil.copytree(extracted_store, store)
    with closing(FeatureStore(store)) as fs:  # musicnn-msd's R^2 on real soundtracks (issue 16)
        run = fs.run("musicnn-msd")
        names = run.layer_names
        fs.set_aspect_map(run, [("timbre", names[-2], 0.66, 0.1), ("dynamics", names[-2], 0.59, 0.1),
                                ("texture", names[-3], 0.49, 0.1), ("rhythm", names[1], 0.21, 0.1),
                                ("harmony", names[2], 0.06, 0.1)])
    out = runner.invoke(app, ["similar", "1", "-k", "3", "--model", "musicnn-msd", "--store", str(store), "--json"])
    data = json.loads(out.stdout)
    assert data["weak_aspects"] == {"harmony": 0.06, "rhythm": 0.21}
    for r in data["results"]:
        assert set(r["why"]) == {"dynamics/timbre", "texture"}
        assert all(re.fullmatch(r"(tone colour and loudness|texture): closer than \d+% of tracks", t)
                   for t in r["reasons_text"]), r["reasons_text"]
    # no expansion column: the table stays narrow enough that no "why" phrase wraps inside its cell
    out = runner.invoke(app, ["similar", "1", "-k", "3", "--model", "musicnn-msd", "--store", str(store),
                              "--expand", "0"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert ("not used as evidence (the probe's best R^2, less what shuffled targets reach, below 0.3): rhythm 0.21, "
            "harmony 0.06") in out.output
    assert "harmony 1" not in out.output and "tone colour and loudness: closer than" in out.output
