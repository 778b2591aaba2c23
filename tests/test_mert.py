"""MERT loading: a tiny random-weights MERT-shaped HubertModel through the real loading code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from ports import refusing_port
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

from conftest import network_waits
from mess.models.checkpoints import CHECKPOINTS
from mess.models.mert import MertModel, hubert_config
from mess.models.registry import ModelError, load_model, load_run_model

MERT_FRONT_END = dict(conv_dim=(16,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
                      conv_bias=False, feat_extract_norm="group", feat_proj_layer_norm=True,
                      num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, layer_norm_eps=1e-5)


def _tiny_mert_dir(tmp: Path, *, stable: bool, mert_style_config: bool) -> tuple[Path, HubertModel]:
    """Save a MERT-shaped model; optionally rewrite it the way MERT's hub checkpoints are stored."""
    torch.manual_seed(0)
    cfg = HubertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                       do_stable_layer_norm=stable, **MERT_FRONT_END)
    model = HubertModel(cfg).eval()
    model.save_pretrained(tmp)
    Wav2Vec2FeatureExtractor(sampling_rate=24000, do_normalize=True).save_pretrained(tmp)
    if mert_style_config:
        # MERT's hub layout: remote-code config and a pytorch_model.bin with weight_g / weight_v keys.
        config = json.loads((tmp / "config.json").read_text())
        config.update(model_type="mert_model", auto_map={"AutoModel": "modeling_MERT.MERTModel"},
                      architectures=["MERTModel"], feature_extractor_cqt=False, deepnorm=False, mask_time_prob=0.0)
        (tmp / "config.json").write_text(json.dumps(config))
        state = {}
        for key, value in model.state_dict().items():
            key = key.replace("parametrizations.weight.original0", "weight_g")
            key = key.replace("parametrizations.weight.original1", "weight_v")
            state[key] = value
        (tmp / "model.safetensors").unlink()
        torch.save(state, tmp / "pytorch_model.bin")
    return tmp, model


@pytest.mark.parametrize("stable", [False, True], ids=["95m-shape", "330m-shape"])
def test_mert_style_checkpoint_loads_strictly_into_hubert(tmp_path: Path, stable: bool) -> None:
    folder, reference = _tiny_mert_dir(tmp_path, stable=stable, mert_style_config=True)
    loaded = MertModel.from_pretrained(str(folder))
    ref_state, got_state = reference.state_dict(), loaded.network.state_dict()
    assert ref_state.keys() == got_state.keys()
    assert all(torch.equal(ref_state[k], got_state[k]) for k in ref_state), "weight-norm rename lost weights"
    assert loaded.info.layer_names == tuple(f"layer_{i}" for i in range(4))
    assert loaded.info.sample_rate == 24000


def test_hidden_states_are_time_means_of_the_reference_forward(tmp_path: Path) -> None:
    folder, reference = _tiny_mert_dir(tmp_path, stable=True, mert_style_config=True)
    model = MertModel.from_pretrained(str(folder))
    rng = np.random.default_rng(0)
    windows = (rng.standard_normal((2, 24000 * 2)) * 0.1).astype(np.float32)
    layers = model.embed(windows)
    norm = (windows - windows.mean(axis=1, keepdims=True)) / np.sqrt(windows.var(axis=1, keepdims=True) + 1e-7)
    # the on-device normalisation in embed() is Wav2Vec2FeatureExtractor's
    processed = model.processor(list(windows), sampling_rate=24000, return_tensors="np")["input_values"]
    np.testing.assert_allclose(processed, norm, atol=1e-5)
    with torch.no_grad():
        out = reference(torch.from_numpy(norm), output_hidden_states=True)
    # The last layer must be the output after the stable-layer-norm model's final LayerNorm.
    expected = [*out.hidden_states[:-1], out.last_hidden_state]
    assert len(layers) == len(expected) == 4
    for got, hidden in zip(layers, expected, strict=False):
        np.testing.assert_allclose(got, hidden.mean(dim=1).numpy(), atol=1e-4)


def test_config_translation_keeps_architecture_and_rejects_cqt() -> None:
    cfg = hubert_config({"model_type": "mert_model", "hidden_size": 768, "num_hidden_layers": 12,
                         "do_stable_layer_norm": False, "mask_time_prob": 0.0, **MERT_FRONT_END})
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.mask_time_prob) == (768, 12, 0.05)
    assert cfg.tie_last_hidden_states is True
    with pytest.raises(ValueError, match="CQT"):
        hubert_config({"feature_extractor_cqt": True})


def test_registry_loads_local_folder_and_pins_hub_revisions(tmp_path: Path) -> None:
    folder, _ = _tiny_mert_dir(tmp_path, stable=False, mert_style_config=False)
    model = load_model(str(folder))
    assert model.info.revision.startswith("local-")
    assert all(len(c.revision) == 40 for c in CHECKPOINTS.values())
    with pytest.raises(ModelError, match="unknown model"):
        load_model("no-such-model")


def test_weights_saved_again_in_the_folder_are_another_revision(tmp_path: Path) -> None:
    """A local folder's revision hashed its files' sizes, which weights retrained and saved again in place keep: `mess
    extract` called every file unchanged and `mess similar FILE` embedded with the new weights against the old
    vectors. The revision follows the files' contents."""
    folder, network = _tiny_mert_dir(tmp_path, stable=False, mert_style_config=False)
    before = load_model(str(folder)).info.revision
    size = (folder / "model.safetensors").stat().st_size
    with torch.no_grad():
        network.feature_projection.projection.weight.mul_(-1.0)
    network.save_pretrained(folder)
    assert (folder / "model.safetensors").stat().st_size == size
    assert load_model(str(folder)).info.revision != before
    with pytest.raises(ModelError, match="re-extract the collection"):
        load_run_model(str(folder), before)


def _break(folder: Path, how: str) -> None:
    """Damage a saved tiny MERT folder in one of the ways a folder given as --model can be wrong."""
    config = json.loads((folder / "config.json").read_text())
    if how == "another architecture":  # a text model saved where the MERT checkpoint was
        from transformers import BertConfig, BertModel

        (folder / "model.safetensors").unlink()
        BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64)).save_pretrained(folder)
        (folder / "config.json").write_text(json.dumps(config))
    elif how == "config of other shapes":
        (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    elif how == "config not JSON":
        (folder / "config.json").write_text('{"hidden_size": ')
    elif how == "config a list":
        (folder / "config.json").write_text("[]")
    elif how == "preprocessor not JSON":  # it read as missing: MERT's 24 kHz, though this one says 16 kHz
        (folder / "preprocessor_config.json").write_text('{"sampling_rate": 16000, ')
    else:
        (folder / "model.safetensors").unlink()


@pytest.mark.parametrize(("how", "said"), [
    ("another architecture", "weights are not in the checkpoint \\(such as "),
    ("config of other shapes", "9 of its weights have other shapes than its config.json gives"),
    ("config not JSON", "config.json is not JSON"),
    ("config a list", "config.json is not a JSON object"),
    ("no weights", "no file named model.safetensors"),
    ("preprocessor not JSON", "cannot read its preprocessor_config.json \\(It looks like the config file at "),
])
def test_a_folder_that_is_no_mert_checkpoint_is_one_line(tmp_path: Path, how: str, said: str) -> None:
    """A folder whose weights do not fill a MERT-shaped HubertModel loaded with transformers' random initialisation
    of the rest (its vectors stored as the model's, or failing every file as 'not finite'); a config.json that is not
    JSON, or whose shapes differ from the weights, ended in a traceback. Each is one ModelError naming the folder."""
    folder, _ = _tiny_mert_dir(tmp_path, stable=False, mert_style_config=False)
    _break(folder, how)
    with pytest.raises(ModelError, match=f"^cannot load {tmp_path} as a MERT-shaped model: .*{said}"):
        load_model(str(folder))


def _extract_mert(tmp: Path, **env: str) -> subprocess.CompletedProcess:
    """`mess extract --model mert-v1-95m` of one 8 s tone, with the hub cache in ``tmp`` and the hub on a closed
    local port (no route out)."""
    music = tmp / "music"
    music.mkdir(exist_ok=True)
    t = np.arange(24000 * 8) / 24000
    sf.write(music / "a.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 24000)
    with refusing_port() as port:
        environ = {**os.environ, "HF_HOME": str(tmp / "hf"), "HF_ENDPOINT": f"http://127.0.0.1:{port}",
                   "HF_HUB_OFFLINE": "0", **env}
        return subprocess.run([sys.executable, "-m", "mess.cli", "extract", str(music), "--model", "mert-v1-95m",
                               "--window", "4", "--store", str(tmp / "store")], capture_output=True, text=True,
                              env=environ, timeout=300)


@pytest.mark.parametrize("offline", ["0", "1"], ids=["hub-unreachable", "HF_HUB_OFFLINE"])
def test_a_hub_checkpoint_offline_fails_in_one_line_or_loads_from_the_cache(tmp_path: Path, offline: str) -> None:
    """Offline, `mess extract --model mert-v1-95m` waited through the hub client's half minute of retries and
    warnings before its error. Not cached: one line at once, naming the cause and `mess models fetch`. Cached at the
    pinned revision: loaded from the cache (without waiting for the hub; it took 76 s), its vectors stored.
    "At once" is counted, not timed (a loaded machine stretches any time): one connection attempt (the short
    request that finds the hub unreachable; none with HF_HUB_OFFLINE) and no sleeping (a retry's backoff)."""
    tried = 0 if offline == "1" else 1
    env, waits = network_waits(tmp_path / "waits")
    done = _extract_mert(tmp_path, HF_HUB_OFFLINE=offline, **env)
    assert done.returncode == 1, done.stderr
    assert waits()["connects"] == tried and waits()["slept"] < 1, waits()
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr and "Retrying" not in done.stderr
    cause = "HF_HUB_OFFLINE is set" if offline == "1" else "Connection refused"
    assert "cannot fetch m-a-p/MERT-v1-95M@12af15fe from the Hugging Face hub (" in done.stderr
    assert cause in done.stderr and "`mess models fetch mert-v1-95m DIR`" in done.stderr
    ckpt = CHECKPOINTS["mert-v1-95m"]
    snapshot = tmp_path / "hf" / "hub" / f"models--{ckpt.repo.replace('/', '--')}" / "snapshots" / ckpt.revision
    snapshot.mkdir(parents=True)
    _tiny_mert_dir(snapshot, stable=False, mert_style_config=True)
    env, waits = network_waits(tmp_path / "cached-waits")
    done = _extract_mert(tmp_path, HF_HUB_OFFLINE=offline, **env)
    assert done.returncode == 0 and "1 embedded" in done.stderr, done.stderr
    # mess's short request alone: the hub client's user-agent registry and transformers' safetensors check (a
    # background thread) each tried the unreachable hub again, and on a network that drops packets would each wait
    # out a time-out of their own
    assert waits()["connects"] == tried and waits()["slept"] < 1, waits()
    assert "Retrying" not in done.stderr


def test_a_damaged_hub_cache_is_one_model_error(tmp_path: Path) -> None:
    """A config.json in the hub cache that is not JSON was a ValueError, which `mess similar FILE` and the server's
    uploads (catching ModelError) showed as a traceback."""
    ckpt = CHECKPOINTS["mert-v1-95m"]
    snapshot = tmp_path / "hf" / "hub" / f"models--{ckpt.repo.replace('/', '--')}" / "snapshots" / ckpt.revision
    snapshot.mkdir(parents=True)
    _tiny_mert_dir(snapshot, stable=False, mert_style_config=True)
    (snapshot / "config.json").write_text('{"hidden_size": ')
    code = ("from mess.models.registry import ModelError, load_model\n"
            "try:\n    load_model('mert-v1-95m')\nexcept ModelError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("cannot load m-a-p/MERT-v1-95M@12af15fe from the Hugging Face hub cache (")
    assert "config.json is not JSON" in done.stdout and "mess models fetch mert-v1-95m DIR" in done.stdout


def test_a_run_whose_model_folder_is_gone_says_so(tmp_path: Path) -> None:
    """A folder's run is named by the folder's path; with the folder moved, `mess similar FILE` said "unknown model
    '/path'; choose one of dsp, musicnn, ...", as if the name were a typo."""
    folder, _ = _tiny_mert_dir(tmp_path / "mert", stable=False, mert_style_config=False)
    revision = load_model(str(folder)).info.revision
    folder.rename(tmp_path / "moved")
    with pytest.raises(ModelError, match=f"^{folder} is the model folder the collection was extracted with, and it is "
                                         "gone; .*put the folder back"):
        load_run_model(str(folder), revision)
    with pytest.raises(ModelError, match="^unknown model"):  # a probe control's twin, named after the folder
        load_run_model(f"{folder}-random-init", f"{revision}+random-init-seed0")


def test_files_that_do_not_make_the_model_leave_its_revision(tmp_path: Path) -> None:
    """Every file in the folder was hashed: a README edited, Finder's .DS_Store or the hub's remote code appearing
    made a new run, and the whole collection was embedded again."""
    folder, _ = _tiny_mert_dir(tmp_path, stable=False, mert_style_config=False)
    before = load_model(str(folder)).info.revision
    for name in ("README.md", ".DS_Store", "modeling_MERT.py", "._model.safetensors"):
        (folder / name).write_text("anything")
    assert load_model(str(folder)).info.revision == before
    (folder / "preprocessor_config.json").write_text(json.dumps({
        **json.loads((folder / "preprocessor_config.json").read_text()), "sampling_rate": 16000}))
    assert load_model(str(folder)).info.revision != before
