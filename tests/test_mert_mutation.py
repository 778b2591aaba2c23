"""MERT loading and embedding in-process on a tiny random-weights MERT-shaped HubertModel, for mutation testing.

Expected values come from transformers' HubertModel run directly on the saved network, from numpy (the feature
extractor's normalisation written from its definition) and from the fixture's own files.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_mert import MERT_FRONT_END, _tiny_mert_dir
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

from mess.models.mert import MertModel, _local_revision, hubert_config
from mess.models.registry import ModelError, load_model


@pytest.mark.parametrize("mert_style", [True, False], ids=["pytorch_model.bin", "model.safetensors"])
def test_a_folder_whose_weights_file_is_cut_short_is_one_model_error(tmp_path: Path, mert_style: bool) -> None:
    """A weights file cut short (a download stopped, a disk full) ended `mess extract --model DIR` in a traceback:
    torch's RuntimeError 'PytorchStreamReader failed reading zip archive' or safetensors' SafetensorError."""
    folder, _ = _tiny_mert_dir(tmp_path, stable=False, mert_style_config=mert_style)
    weights = folder / ("pytorch_model.bin" if mert_style else "model.safetensors")
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    cause = "PytorchStreamReader failed reading zip archive" if mert_style else "Error while deserializing header"
    with pytest.raises(ModelError, match=f"^cannot load {tmp_path} as a MERT-shaped model: its weights cannot be "
                                         f"read \\({cause}.*\\); is the weights file whole\\?$"):
        load_model(str(folder))


def _normed(folder: Path, norm: str) -> HubertModel:
    """A tiny HubertModel whose encoder is group-normed (MERT-95M) or layer-normed, saved in ``folder``."""
    torch.manual_seed(0)
    model = HubertModel(HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                     do_stable_layer_norm=norm == "layer",
                                     **{**MERT_FRONT_END, "feat_extract_norm": norm})).eval()
    model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=24000, do_normalize=True).save_pretrained(folder)
    return model


def _windows() -> np.ndarray:
    return (np.random.default_rng(3).standard_normal((2, 24000)) * 0.2 + 0.05).astype(np.float32)


def _reference(network: HubertModel, values: np.ndarray) -> list[np.ndarray]:
    """HubertModel's own forward, hidden states averaged over time (the last after its final LayerNorm)."""
    with torch.no_grad():
        out = network(torch.from_numpy(values), output_hidden_states=True)
    return [h.mean(dim=1).numpy() for h in (*out.hidden_states[:-1], out.last_hidden_state)]


def test_windows_are_not_normalised_where_the_preprocessor_says_so(tmp_path: Path) -> None:
    folder, reference = _tiny_mert_dir(tmp_path, stable=False, mert_style_config=False)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=False).save_pretrained(folder)
    model = MertModel.from_pretrained(str(folder))
    assert model.info.sample_rate == 16000
    for got, want in zip(model.embed(_windows()), _reference(reference, _windows()), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_without_a_preprocessor_mert_s_is_used_and_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "Tiny-MERT"
    reference = _normed(folder, "layer")  # a group-normed first conv cancels any scale and offset: this one does not
    (folder / "preprocessor_config.json").unlink()
    with caplog.at_level(logging.WARNING, logger="mess.models.mert"):
        model = MertModel.from_pretrained(str(folder))
    assert "has no preprocessor_config.json; using MERT's (24 kHz, normalised)" in caplog.text
    assert model.info.sample_rate == 24000 and model.info.name == "tiny-mert"
    assert model.info.licence.startswith("CC BY-NC 4.0")
    windows = _windows()
    norm = (windows - windows.mean(axis=1, keepdims=True)) / np.sqrt(windows.var(axis=1, keepdims=True) + 1e-7)
    for got, want in zip(model.embed(windows), _reference(reference, norm.astype(np.float32)), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_a_copy_in_bfloat16_is_its_own_run(tmp_path: Path) -> None:
    folder, reference = _tiny_mert_dir(tmp_path, stable=False, mert_style_config=False)
    model = MertModel.from_pretrained(str(folder), name="tiny")
    half = model.in_dtype(torch.bfloat16, "bf16")
    assert half.info.revision == f"{model.info.revision}+bf16" and half.info.name == "tiny"
    assert half.network.dtype == torch.bfloat16 and model.network.dtype == torch.float32
    # the matrix-product convs are for cuDNN: on the CPU the network keeps transformers' own modules
    assert type(model.network.feature_extractor).__name__ == "HubertFeatureEncoder"
    assert type(half.network.encoder.pos_conv_embed).__name__ == "HubertPositionalConvEmbedding"
    assert half.info.layer_names == model.info.layer_names == tuple(f"layer_{i}" for i in range(4))
    assert half.info.layer_dims == (32,) * 4
    full, low = model.embed(_windows()), half.embed(_windows())
    assert all(layer.dtype == np.float32 for layer in low)
    for got, want in zip(low, full, strict=True):
        np.testing.assert_allclose(got, want, atol=0.1, rtol=0.1)


def test_the_config_translation_keeps_what_hubert_reads() -> None:
    cfg = hubert_config({"model_type": "mert_model", "architectures": ["MERTModel"], "auto_map": {"AutoModel": "m"},
                         "hidden_size": 64, "mask_time_prob": 0.3, **MERT_FRONT_END})
    assert (cfg.hidden_size, cfg.mask_time_prob, cfg.model_type, cfg.architectures) == (64, 0.3, "hubert", None)
    assert not hasattr(cfg, "auto_map")
    assert hubert_config({}).mask_time_prob == 0.05
    with pytest.raises(ValueError, match="^MERT checkpoints with a CQT front end or DeepNorm are not HuBERT"):
        hubert_config({"deepnorm": True})


def test_the_revision_follows_the_files_that_make_the_model(tmp_path: Path) -> None:
    """Sharded weights and their index are model files; hidden files (macOS's ._ copies) and other JSON are not."""
    folder, _ = _tiny_mert_dir(tmp_path, stable=False, mert_style_config=False)
    before = _local_revision(str(folder))
    for name in ("notes.json", ".model.safetensors", ".x.bin", "README.md"):
        (folder / name).write_text("anything")
        assert _local_revision(str(folder)) == before, name
    revisions = [before]
    for name in ("model.safetensors.index.json", "pytorch_model-00001-of-00002.bin", "extra.safetensors"):
        (folder / name).write_text("anything")
        revisions.append(_local_revision(str(folder)))
    assert len(set(revisions)) == 4, revisions
    (folder / "extra.safetensors").write_text("something else")
    assert _local_revision(str(folder)) not in revisions
    assert _local_revision(str(folder)).startswith("local-") and len(_local_revision(str(folder))) == 6 + 16


@pytest.mark.parametrize("mert_style", [True, False], ids=["pytorch_model.bin", "model.safetensors"])
def test_a_folder_named_in_other_bytes_than_utf8_is_named_so(tmp_path: Path, mert_style: bool) -> None:
    """A checkpoint folder named in Latin-1 ('café' as b'caf\\xe9') was refused as "'utf-8' codec can't encode
    character '\\udce9'", or as weights that cannot be read (safetensors: "is not valid UTF-8")."""
    folder, _ = _tiny_mert_dir(tmp_path / os.fsdecode(b"caf\xe9"), stable=False, mert_style_config=mert_style)
    with pytest.raises(ModelError, match="as a MERT-shaped model: its path is not UTF-8 text, which transformers "
                                         "cannot open; rename the folder$"):
        load_model(str(folder))


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_windows_off_zero_and_silent_windows_are_normalised_as_the_feature_extractor_does(tmp_path: Path,
                                                                                          norm: str) -> None:
    """A window with a DC offset (which a layer-normed encoder does not cancel, as a group-normed first conv does) and
    a silent one (its variance 0: zero, not NaN, once 1e-7 is added)."""
    reference = _normed(tmp_path, norm)
    model = MertModel.from_pretrained(str(tmp_path))
    windows = np.stack([_windows()[0] + 0.3, np.zeros(24000, np.float32)])
    normalised = (windows - windows.mean(axis=1, keepdims=True)) / np.sqrt(windows.var(axis=1, keepdims=True) + 1e-7)
    got = model.embed(windows)
    assert all(np.isfinite(layer).all() for layer in got)
    for layer, want in zip(got, _reference(reference, normalised.astype(np.float32)), strict=True):
        np.testing.assert_allclose(layer, want, atol=1e-4)


def test_weights_missing_or_of_other_shapes_are_named(tmp_path: Path) -> None:
    """One weight missing: counted and named; weights of other shapes than config.json gives: the first by name."""
    folder, network = _tiny_mert_dir(tmp_path, stable=False, mert_style_config=False)
    state = load_file(folder / "model.safetensors")
    gone = "encoder.layers.1.final_layer_norm.bias"
    save_file({k: v for k, v in state.items() if k != gone}, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelError, match=f"1 of a MERT-shaped HubertModel's weights are not in the checkpoint "
                                         f"\\(such as {re.escape(gone)}\\)"):
        load_model(str(folder))
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    other = HubertModel(HubertConfig(**{**config, "intermediate_size": 48})).state_dict()
    first = sorted(k for k, v in network.state_dict().items() if k in other and other[k].shape != v.shape)[0]
    with pytest.raises(ModelError, match=f"have other shapes than its config.json gives \\(such as {re.escape(first)}"
                                         "\\)"):
        load_model(str(folder))
