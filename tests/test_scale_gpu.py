"""Reduced-precision inference and exact-length batching, on a small MERT-shaped model on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor
from typer.testing import CliRunner

from mess.extract.embed import embed_windows
from mess.models.dsp import DspModel
from mess.models.mert import MertModel
from mess.scale.gpu import AutocastModel, with_precision

SR = 24000


@pytest.fixture(scope="module")
def mert(tmp_path_factory: pytest.TempPathFactory) -> MertModel:
    """A small random-weights model with MERT-95M's front end (group norm, no attention mask)."""
    folder = tmp_path_factory.mktemp("mert")
    torch.manual_seed(0)
    cfg = HubertConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        conv_dim=(32,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_bias=False,
        feat_extract_norm="group",
        feat_proj_layer_norm=True,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        do_stable_layer_norm=False,
    )
    HubertModel(cfg).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=SR, do_normalize=True).save_pretrained(folder)
    return MertModel.from_pretrained(str(folder))


def _windows(n: int, seconds: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    tones = [np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) for f in rng.uniform(100, 900, n)]
    return (0.3 * np.stack(tones) + 0.01 * rng.standard_normal((n, t.size))).astype(np.float32)


def _cosines(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    return np.array(
        [np.sum(x * y, 1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)) for x, y in zip(a, b, strict=False)]
    )


def test_bf16_mert_casts_its_weights_is_close_to_fp32_and_is_stored_as_its_own_run(mert: MertModel) -> None:
    windows = _windows(3, 2.0, seed=1)
    fp32 = mert.embed(windows)
    half = with_precision(mert, "bf16")
    assert isinstance(half, MertModel) and with_precision(mert, "fp32") is mert
    assert half.network.dtype == torch.bfloat16 and mert.network.dtype == torch.float32, "the fp32 model is untouched"
    assert half.info.revision == f"{mert.info.revision}+bf16"
    assert half.info.layer_names == mert.info.layer_names and half.info.sample_rate == SR
    low = half.embed(windows)
    assert all(x.dtype == np.float32 and x.shape == y.shape for x, y in zip(low, fp32, strict=False))
    assert not all(np.array_equal(x, y) for x, y in zip(low, fp32, strict=False)), "bf16 should change the arithmetic"
    assert _cosines(low, fp32).min() > 0.99
    np.testing.assert_array_equal(mert.embed(windows)[-1], fp32[-1])


def test_autocast_runs_a_torch_network_in_bf16_close_to_fp32(mert: MertModel) -> None:
    """What with_precision gives torch models without a weight cast (musicnn's torch path)."""
    windows = _windows(2, 2.0, seed=5)
    half = AutocastModel(mert, "bf16")
    assert half.info.revision == f"{mert.info.revision}+bf16"
    fp32, low = mert.embed(windows), half.embed(windows)
    assert not all(np.array_equal(x, y) for x, y in zip(low, fp32, strict=False)), "autocast changes the arithmetic"
    assert _cosines(low, fp32).min() > 0.99


def test_precision_is_refused_for_models_without_torch_and_unknown_names(mert: MertModel) -> None:
    with pytest.raises(ValueError, match="does not run on torch"):
        with_precision(DspModel(), "fp16")
    with pytest.raises(ValueError, match="unknown precision"):
        with_precision(mert, "int4")


def test_exact_length_batches_match_one_by_one_and_padding_would_not(mert: MertModel) -> None:
    long, short = _windows(3, 2.0, seed=2), _windows(2, 0.75, seed=3)
    tracks = [long[:2], short[:1], long[2:], short[1:]]  # two window lengths, interleaved
    batched = embed_windows(mert, tracks, batch_size=4)
    for track, vectors in zip(tracks, batched, strict=False):
        alone = [mert.embed(w[None]) for w in track]
        for layer, got in enumerate(vectors):
            np.testing.assert_allclose(got, np.concatenate([a[layer] for a in alone]), rtol=1e-4, atol=1e-5)
    padded = np.pad(short[:1], ((0, 0), (0, long.shape[1] - short.shape[1])))
    assert _cosines(mert.embed(padded), mert.embed(short[:1])).min() < 0.99, "padding changes MERT's vectors"


def test_cli_rejects_precision_for_dsp_in_one_line(tmp_path: Path) -> None:
    from mess.cli.main import app

    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "a.wav", _windows(1, 2.0, seed=4)[0], SR)
    result = CliRunner().invoke(
        app, ["extract", str(music), "--model", "dsp", "--precision", "bf16", "--store", str(tmp_path / "store")]
    )
    assert result.exit_code == 1
    assert "does not run on torch" in result.output and "Traceback" not in result.output


def _musicnn_windows(n: int, seed: int) -> np.ndarray:
    """``n`` 4 s tone windows at musicnn's 16 kHz."""
    t = np.arange(4 * 16000) / 16000
    rng = np.random.default_rng(seed)
    return np.stack([0.3 * np.sin(2 * np.pi * f * t) for f in rng.uniform(100, 900, n)]).astype(np.float32)


def test_precision_is_refused_for_musicnn_on_onnx_runtime() -> None:
    """On the CPU musicnn (and the default ``musicnn`` pair) runs on ONNX Runtime, where autocast changes nothing:
    bf16 would only store the fp32 vectors again as another run."""
    pytest.importorskip("musicnn.configuration", reason="pip install --no-deps musicnn==0.1.0")
    from mess.models.musicnn import MusicnnModel
    from mess.models.musicnn.ensemble import MusicnnEnsemble

    onnx = MusicnnModel("MSD")
    assert onnx.runner is not None, "the CPU default is ONNX Runtime"
    with pytest.raises(ValueError, match="musicnn-msd does not run on torch on cpu but on ONNX Runtime") as refused:
        with_precision(onnx, "bf16")
    assert "\n" not in str(refused.value) and "--device cuda" in str(refused.value)
    with pytest.raises(ValueError, match="does not run on torch"):
        with_precision(MusicnnEnsemble(), "fp16")
    assert with_precision(onnx, "fp32") is onnx
    # a Ray driver's CPU copy, checked for its GPU workers (which build no ONNX runner): the run's +bf16 revision
    assert with_precision(onnx, "bf16", device="cuda").info.revision == "musicnn-0.1.0+bf16"
    pair = MusicnnEnsemble()
    with pytest.raises(ValueError, match="does not run on torch on cpu"):
        with_precision(pair, "bf16", device="cpu")
    assert with_precision(pair, "bf16", device="cuda").info.revision == "musicnn-0.1.0+timbre-v1+bf16"


def test_precision_applies_to_musicnn_and_the_musicnn_pair_on_pytorch() -> None:
    """Where musicnn runs on PyTorch (as on a GPU; here runtime="torch"), bf16 autocast changes its vectors a little,
    the default ``musicnn`` pair included, and they form their own +bf16 run."""
    pytest.importorskip("musicnn.configuration", reason="pip install --no-deps musicnn==0.1.0")
    from mess.models.musicnn import MusicnnModel
    from mess.models.musicnn.ensemble import MusicnnEnsemble

    windows = _musicnn_windows(2, seed=6)
    for model in (MusicnnModel("MSD", runtime="torch"), MusicnnEnsemble(runtime="torch")):
        half = with_precision(model, "bf16")
        assert isinstance(half, AutocastModel) and half.info.revision == f"{model.info.revision}+bf16"
        fp32, low = model.embed(windows), half.embed(windows)
        assert not all(np.array_equal(x, y) for x, y in zip(low, fp32, strict=True)), "bf16 changes the arithmetic"
        assert _cosines(low, fp32).min() > 0.98


def test_cli_rejects_precision_for_musicnn_on_the_cpu_in_one_line(tmp_path: Path) -> None:
    """`mess extract --model musicnn-msd --precision bf16` on the CPU: one error line, exit 1, no run stored."""
    pytest.importorskip("musicnn.configuration", reason="pip install --no-deps musicnn==0.1.0")
    from mess.cli.main import app

    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "a.wav", _musicnn_windows(1, seed=7)[0], 16000)
    result = CliRunner().invoke(
        app, ["extract", str(music), "--model", "musicnn-msd", "--precision", "bf16", "--store", str(tmp_path / "s")]
    )
    assert result.exit_code == 1, result.output
    assert "does not run on torch" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "s").exists(), "refused before the store is opened"
