"""musicnn PyTorch port: checkpoint reader, layer shapes, and tags on real-sounding music."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("musicnn.configuration", reason="pip install --no-deps musicnn==0.1.0")

from mess.models import filters  # noqa: E402
from mess.models.musicnn import MusicnnModel  # noqa: E402
from mess.models.musicnn.checkpoint import read_checkpoint  # noqa: E402
from mess.models.musicnn.model import MIN_SAMPLES, checkpoint_prefix, log_mel  # noqa: E402
from mess.models.registry import load_model  # noqa: E402

SR = 16000
SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
EXPECTED_SHAPES = {
    "conv2d/kernel": (7, 38, 1, 204),
    "conv2d_1/kernel": (7, 67, 1, 204),
    "conv2d_2/kernel": (128, 1, 1, 51),
    "conv2d_3/kernel": (64, 1, 1, 51),
    "conv2d_4/kernel": (32, 1, 1, 51),
    "conv2d_5/kernel": (7, 561, 1, 64),
    "conv2d_6/kernel": (7, 64, 1, 64),
    "conv2d_7/kernel": (7, 64, 1, 64),
    "dense/kernel": (1506, 200),
    "dense_1/kernel": (200, 50),
}
BN_SIZES = (1, 204, 204, 51, 51, 51, 64, 64, 64, 1506, 200)
# Arpeggiated C major / D minor chords with a bass note: (MIDI notes, seconds).
PIANO_SEQUENCE = [((60, 48), 0.5)] + [((n,), 0.5) for n in (64, 67, 72, 71, 67)]
PIANO_SEQUENCE += [((62, 50), 0.5)] + [((n,), 0.5) for n in (65, 69, 72, 69, 65)]
# Mean taggram of the original TensorFlow musicnn (extractor.py) on the 0.1-peak additive
# piano below; see notes/musicnn_tf_check.md.
TF_REFERENCE = {
    "MTT": {"piano": 0.420338, "slow": 0.327812, "solo": 0.185518, "quiet": 0.170641, "soft": 0.165859},
    "MSD": {"jazz": 0.225137, "instrumental": 0.158556, "electronic": 0.139211, "indie": 0.076988},
}


# Mean taggram of the original TensorFlow VGG models on the same piano; see notes/musicnn_vgg_tf_check.md.
VGG_TF_REFERENCE = {
    "MTT": {"piano": 0.661532, "slow": 0.401493, "guitar": 0.23538, "soft": 0.18767, "classical": 0.169035},
    "MSD": {"jazz": 0.382662, "instrumental": 0.110308, "rock": 0.105156, "electronic": 0.101888},
}


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    shapes = dict(EXPECTED_SHAPES)
    for key in list(EXPECTED_SHAPES):
        shapes[key.replace("kernel", "bias")] = EXPECTED_SHAPES[key][-1:]
    for i, size in enumerate(BN_SIZES):
        prefix = "batch_normalization" + (f"_{i}" if i else "")
        for stat in ("gamma", "beta", "moving_mean", "moving_variance"):
            shapes[f"{prefix}/{stat}"] = (size,)
    return shapes


def _midi_bytes(sequence: list[tuple[tuple[int, ...], float]], tempo_us: int = 500_000) -> bytes:
    """A type-0 MIDI file (480 ticks per quarter) playing each chord for its duration."""
    ticks_per_second = 480 * 1_000_000 / tempo_us
    track = b"\x00\xff\x51\x03" + tempo_us.to_bytes(3, "big") + b"\x00\xc0\x00"  # tempo, piano
    for notes, seconds in sequence:
        for note in notes:
            track += b"\x00\x90" + bytes([note, 90])
        delta = int(seconds * ticks_per_second)
        for i, note in enumerate(notes):
            track += _varlen(delta if i == 0 else 0) + b"\x80" + bytes([note, 0])
    track += b"\x00\xff\x2f\x00"
    header = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big")
    return header + (480).to_bytes(2, "big") + b"MTrk" + len(track).to_bytes(4, "big") + track


def _varlen(value: int) -> bytes:
    """MIDI variable-length quantity."""
    out = [value & 0x7F]
    while value := value >> 7:
        out.append(0x80 | (value & 0x7F))
    return bytes(reversed(out))


def _additive_piano(sequence: list[tuple[tuple[int, ...], float]]) -> np.ndarray:
    """Fallback without fluidsynth: decaying, slightly inharmonic partials per note."""
    chunks = []
    for notes, seconds in sequence:
        t = np.arange(int(seconds * SR)) / SR
        chunk = np.zeros_like(t)
        for note in notes:
            f0 = 440.0 * 2 ** ((note - 69) / 12)
            for h in range(1, 9):
                chunk += np.sin(2 * np.pi * f0 * h * t * (1 + 4e-4 * h * h)) * np.exp(-t * (2 + h)) / h**1.5
        chunks.append(chunk)
    return np.concatenate(chunks)


@pytest.fixture(scope="module")
def piano(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """~6 s of piano at 16 kHz, rendered with fluidsynth where available."""
    fluidsynth = shutil.which("fluidsynth")
    if fluidsynth and SOUNDFONT.is_file():
        folder = tmp_path_factory.mktemp("piano")
        (folder / "piano.mid").write_bytes(_midi_bytes(PIANO_SEQUENCE))
        command = [fluidsynth, "-ni", "-q", "-F", str(folder / "piano.wav"), "-r", str(SR)]
        subprocess.run([*command, str(SOUNDFONT), str(folder / "piano.mid")], check=True, timeout=60)
        audio, rate = sf.read(folder / "piano.wav", dtype="float32", always_2d=True)
        assert rate == SR
        audio = audio.mean(axis=1)
    else:
        audio = _additive_piano(PIANO_SEQUENCE)
    return (0.1 * audio / np.abs(audio).max()).astype(np.float32)


@pytest.fixture(scope="module")
def mtt() -> MusicnnModel:
    return MusicnnModel("MTT")


@pytest.fixture(scope="module")
def msd() -> MusicnnModel:
    return MusicnnModel("MSD")


def test_checkpoint_reader_shapes_and_parameter_count() -> None:
    tensors = read_checkpoint(f"{checkpoint_prefix('MSD')}/")
    params = {k: v for k, v in tensors.items() if "Adam" not in k and not k.endswith("_power")}
    assert {k: v.shape for k, v in params.items()} == _expected_shapes()
    assert all(v.dtype == np.float32 for v in params.values())
    assert sum(v.size for v in params.values()) == 792_079
    assert tensors["conv2d/kernel/Adam"].shape == (7, 38, 1, 204)


def test_info(msd: MusicnnModel, mtt: MusicnnModel) -> None:
    assert msd.info.name == "musicnn-msd" and mtt.info.name == "musicnn-mtt"
    assert msd.info.layer_names == (
        "timbral", "temporal", "cnn1", "cnn2", "cnn3", "mean_pool", "max_pool", "penultimate", "taggram",
    )
    assert msd.info.sample_rate == SR and MIN_SAMPLES == 186 * 256
    assert len(msd.tag_names) == 50 and "rock" in msd.tag_names and "piano" in mtt.tag_names
    with pytest.raises(ValueError, match="MSD"):
        MusicnnModel("FMA")


def test_piano_tags_are_plausible_and_differ_from_noise(mtt: MusicnnModel, piano: np.ndarray) -> None:
    ranked = mtt.tags(piano)
    piano_tags = [name for name, _ in ranked[:5]]
    assert "piano" in piano_tags[:3], piano_tags
    assert {"classical", "solo", "slow", "soft", "quiet"} & set(piano_tags), piano_tags
    noise = 0.1 * np.random.default_rng(0).standard_normal(4 * SR).astype(np.float32)
    noise_tags = [name for name, _ in mtt.tags(noise, top_k=5)]
    assert "piano" not in noise_tags and noise_tags[0] != piano_tags[0], noise_tags
    scores = [score for _, score in ranked]
    assert len(scores) == 50 and scores == sorted(scores, reverse=True)
    assert all(0.0 < s < 1.0 for s in scores)


def test_matches_tensorflow_reference(msd: MusicnnModel, mtt: MusicnnModel) -> None:
    audio = _additive_piano(PIANO_SEQUENCE)
    audio = (0.1 * audio / np.abs(audio).max()).astype(np.float32)
    for model in (msd, mtt):
        ours = dict(model.tags(audio))
        for tag, score in TF_REFERENCE[model.dataset].items():
            assert abs(ours[tag] - score) < 1e-4, (model.info.name, tag, ours[tag], score)


def test_layer_shapes_dtypes_and_determinism(msd: MusicnnModel, piano: np.ndarray) -> None:
    windows = np.stack([piano[: 4 * SR], piano[-4 * SR :]])
    first, second = msd.embed(windows), msd.embed(windows)
    for layer, dim, a, b in zip(msd.info.layer_names, msd.info.layer_dims, first, second, strict=False):
        assert a.shape == (2, dim) and a.dtype == np.float32, layer
        assert np.isfinite(a).all() and np.array_equal(a, b), layer
    alone = msd.embed(windows[1:])
    for a, b in zip(first, alone, strict=False):
        np.testing.assert_allclose(a[1], b[0], rtol=1e-4, atol=1e-5)
    assert not np.allclose(first[0][0], first[0][1])


def test_windows_average_non_overlapping_patches(msd: MusicnnModel, piano: np.ndarray) -> None:
    window = piano[: 2 * 187 * 256 + 1000]  # two full patches plus a dropped tail
    embedded = dict(zip(msd.info.layer_names, msd.embed(window[None]), strict=False))
    mel = torch.from_numpy(log_mel(window[None])[0, : 2 * 187].reshape(2, 187, 96))
    with torch.inference_mode():
        out = msd.network(mel)
    np.testing.assert_allclose(embedded["timbral"][0], out["timbral"].mean(dim=(0, 1)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(embedded["taggram"][0], out["taggram"].mean(dim=0), rtol=1e-4, atol=1e-6)


def test_short_input_is_repeat_padded(msd: MusicnnModel, piano: np.ndarray) -> None:
    short = piano[: SR // 2]
    tiled = np.tile(short, -(-MIN_SAMPLES // short.size))[:MIN_SAMPLES]
    for a, b in zip(msd.embed(short[None]), msd.embed(tiled[None]), strict=False):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="empty"):
        msd.embed(np.zeros((1, 0), dtype=np.float32))


def test_clips_shorter_than_a_patch_are_extracted_padded_and_only_sub_second_ones_refused(
        tmp_path: Path, msd: MusicnnModel, piano: np.ndarray) -> None:
    """A 1.5 s or 2.5 s clip is below musicnn's 3 s patch; extraction used to refuse it as "too short (1.50 s; the
    minimum is 1.00 s)". Now the pipeline and the query path store what the model gives for the padded clip."""
    from mess.audio.discover import find_audio
    from mess.audio.windows import WindowPolicy
    from mess.extract.embed import embed_file
    from mess.extract.pipeline import extract
    from mess.store import FeatureStore

    music = tmp_path / "music"
    music.mkdir()
    clips = {"clip15.wav": piano[: int(1.5 * SR)], "clip25.wav": piano[SR : int(3.5 * SR)]}
    for name, clip in {**clips, "blip.wav": piano[: int(0.9 * SR)]}.items():
        sf.write(music / name, clip, SR, subtype="FLOAT")
    store = FeatureStore(tmp_path / "store")
    summary = extract(store, find_audio([music]), msd, WindowPolicy())
    assert summary.done == 2 and [Path(p).name for p, _ in summary.failed] == ["blip.wav"]
    assert "too short (0.90 s; the minimum is 1.00 s)" in summary.failed[0][1]
    run = store.run("musicnn-msd")
    for name, clip in clips.items():
        want = msd.embed(clip[None])
        row = store.track(str(music / name)).id
        for layer, expected in zip(msd.info.layer_names, want, strict=True):
            ids, matrix = store.layer_matrix(run, layer)
            np.testing.assert_allclose(matrix[list(ids).index(row)], expected[0], rtol=2e-3, atol=2e-3)
        queried = embed_file(music / name, msd, WindowPolicy())
        for got, expected in zip(queried.layers, want, strict=True):
            np.testing.assert_allclose(got, expected[0], rtol=1e-5, atol=1e-6)
    store.close()


def test_log_mel_matches_musicnn_float16_formula(piano: np.ndarray) -> None:
    quiet = 0.3 * piano[None, :MIN_SAMPLES]
    mel = log_mel(quiet)
    power = librosa.feature.melspectrogram(y=quiet, sr=SR, n_fft=512, hop_length=256, n_mels=96)
    musicnn = np.log10(10000 * power[0].T.astype(np.float16) + 1)  # musicnn/extractor.py
    assert mel.shape == (1, 187, 96) and mel.dtype == np.float32
    np.testing.assert_array_equal(mel[0], musicnn)
    loud = log_mel(np.clip(50 * piano[None, :MIN_SAMPLES], -1, 1))
    assert np.isfinite(loud).all() and loud.max() > np.log10(65504)


def test_vgg_checkpoints_read_with_the_same_reader() -> None:
    for dataset in ("MSD", "MTT"):
        tensors = read_checkpoint(f"{checkpoint_prefix(dataset, 'vgg')}/")
        params = {k: v for k, v in tensors.items() if "Adam" not in k and not k.endswith("_power")}
        assert params["1CNN/kernel"].shape == (3, 3, 1, 128) and params["5CNN/kernel"].shape == (3, 3, 128, 128)
        assert params["dense/kernel"].shape == (256, 50) and params["batch_normalization_5/gamma"].shape == (128,)
        convs = (9 * 1 * 128 + 128) + 4 * (9 * 128 * 128 + 128)
        norms = 4 * 1 + 5 * 4 * 128  # gamma, beta, mean, variance of the input and 5 conv batch norms
        assert sum(v.size for v in params.values()) == convs + norms + (256 * 50 + 50) == 607_030


@pytest.fixture(scope="module")
def vgg_mtt() -> MusicnnModel:
    return load_model("musicnn-vgg-mtt")


def test_vgg_layers_and_piano_tags(vgg_mtt: MusicnnModel, piano: np.ndarray) -> None:
    assert vgg_mtt.info.name == "musicnn-vgg-mtt" and vgg_mtt.arch == "vgg"
    assert vgg_mtt.info.layer_names == ("pool1", "pool2", "pool3", "pool4", "pool5", "taggram")
    windows = np.stack([piano[: 4 * SR], piano[-4 * SR :]])
    layers = vgg_mtt.embed(windows)
    for layer, dim, value in zip(vgg_mtt.info.layer_names, vgg_mtt.info.layer_dims, layers, strict=False):
        assert value.shape == (2, dim) and value.dtype == np.float32 and np.isfinite(value).all(), layer
    piano_tags = [name for name, _ in vgg_mtt.tags(piano, top_k=5)]
    assert "piano" in piano_tags[:3], piano_tags
    noise = 0.1 * np.random.default_rng(0).standard_normal(4 * SR).astype(np.float32)
    assert "piano" not in [name for name, _ in vgg_mtt.tags(noise, top_k=5)]
    assert load_model("musicnn-vgg-msd").info.name == "musicnn-vgg-msd"
    with pytest.raises(ValueError, match="architecture"):
        MusicnnModel("MSD", arch="resnet")


def test_vgg_pools_average_each_patch_map(vgg_mtt: MusicnnModel, piano: np.ndarray) -> None:
    window = piano[: 2 * 187 * 256 + 1000]
    embedded = dict(zip(vgg_mtt.info.layer_names, vgg_mtt.embed(window[None]), strict=False))
    mel = torch.from_numpy(log_mel(window[None])[0, : 2 * 187].reshape(2, 187, 96))
    with torch.inference_mode():
        out = vgg_mtt.network(mel)
    assert out["pool1"].shape == (2, 92, 48, 128) and out["pool4"].shape == (2, 11, 6, 128)
    np.testing.assert_allclose(embedded["pool2"][0], out["pool2"].mean(dim=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(embedded["pool5"][0], out["pool5"].mean(dim=0), rtol=1e-4, atol=1e-5)


def test_vgg_matches_tensorflow_reference(vgg_mtt: MusicnnModel) -> None:
    audio = _additive_piano(PIANO_SEQUENCE)
    audio = (0.1 * audio / np.abs(audio).max()).astype(np.float32)
    for model in (vgg_mtt, MusicnnModel("MSD", arch="vgg")):
        ours = dict(model.tags(audio))
        for tag, score in VGG_TF_REFERENCE[model.dataset].items():
            assert abs(ours[tag] - score) < 1e-4, (model.info.name, tag, ours[tag], score)


def test_frontend_pools_frequency_first_with_the_same_result(msd: MusicnnModel, piano: np.ndarray) -> None:
    """max_f(BN(ReLU(conv))) is computed as BN(ReLU(max or min of conv)); both signs of the norm's scale."""
    import copy

    from torch.nn import functional as F

    from mess.models.musicnn.network import _channel_bn, _pad_time

    network = msd.network
    mel = torch.from_numpy(log_mel(piano[None, :MIN_SAMPLES]))
    x = _pad_time(_channel_bn(network.bns[0], mel.unsqueeze(1)), 3, 3)
    for conv, bn in zip(network.timbral_convs, network.bns[1:3], strict=False):
        flipped = copy.deepcopy(bn)
        with torch.no_grad():
            flipped.weight[::2] *= -1
        for norm in (bn, flipped):
            with torch.inference_mode():
                direct = _channel_bn(norm, F.relu(conv(x))).amax(dim=3)
                fast = network._frontend_block(conv, norm, x)
            torch.testing.assert_close(fast, direct, rtol=1e-5, atol=1e-4)


def test_vgg_pools_before_relu_and_norm_to_the_bit(vgg_mtt: MusicnnModel, piano: np.ndarray) -> None:
    """Each VGG block is pool(BN(ReLU(conv))) exactly, though the network pools first; both signs of the scale."""
    import copy

    network = copy.deepcopy(vgg_mtt.network)
    with torch.no_grad():
        for bn in network.bns[1:]:
            bn.weight[::3] *= -1  # falling channels take the min-pool path
    mel = torch.from_numpy(log_mel(piano[None, :MIN_SAMPLES]))
    with torch.inference_mode():
        fast = network(mel)
        x = network.bns[0](mel.unsqueeze(1))
        for i, (conv, bn, pool) in enumerate(zip(network.convs, network.bns[1:], network.pools, strict=False)):
            x = pool(bn(torch.relu(conv(x))))
            want = x.permute(0, 2, 3, 1)
            got = fast[f"pool{i + 1}"] if i < 4 else fast["pool5"].view_as(want)
            assert torch.equal(got, want), f"pool{i + 1}"


def test_ensemble_is_both_models_on_one_log_mel_then_timbre(msd: MusicnnModel, mtt: MusicnnModel,
                                                            piano: np.ndarray) -> None:
    """`musicnn` (the default model) takes 44.1 kHz windows: musicnn-msd's and musicnn-mtt's layers, with their exact
    vectors of the windows resampled to 16 kHz, then the timbre layer of the 44.1 kHz windows."""
    import soxr

    from mess.models import timbre
    from mess.models.filters import mel_basis

    ensemble = load_model("musicnn")
    assert ensemble.info.sample_rate == timbre.SAMPLE_RATE
    assert ensemble.info.layer_names == tuple(f"msd.{n}" for n in msd.info.layer_names) + tuple(
        f"mtt.{n}" for n in mtt.info.layer_names) + (timbre.LAYER,)
    assert ensemble.info.layer_dims == msd.info.layer_dims + mtt.info.layer_dims + (timbre.DIM,)
    assert ensemble.info.revision == f"{msd.info.revision}+{timbre.REVISION}"
    high = soxr.resample(piano, SR, timbre.SAMPLE_RATE)
    windows = np.stack([high[: 4 * timbre.SAMPLE_RATE], high[-4 * timbre.SAMPLE_RATE :]]).astype(np.float32)
    got = ensemble.embed(windows)
    low = soxr.resample(windows.T, timbre.SAMPLE_RATE, SR, quality="HQ").T
    want = msd.embed(np.ascontiguousarray(low)) + mtt.embed(np.ascontiguousarray(low))
    assert len(got) == 19
    for a, b in zip(got[:-1], want, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(got[7], got[16])  # msd's and mtt's penultimate layers differ: two trainings
    basis = mel_basis(timbre.SAMPLE_RATE, timbre.N_FFT, timbre.N_MELS, timbre.F_MAX)
    np.testing.assert_array_equal(got[-1], timbre.window_vectors(windows, basis))
    pooled = ensemble.pool(got)
    for a, b in zip(pooled[:-1], got[:-1], strict=True):
        np.testing.assert_array_equal(a, b.mean(axis=0))
    np.testing.assert_array_equal(pooled[-1], timbre.pool(got[-1]))


def test_onnxruntime_path_matches_pytorch(msd: MusicnnModel, piano: np.ndarray) -> None:
    """The default CPU path (the network exported to ONNX Runtime) gives PyTorch's vectors up to float32 order."""
    assert msd.runner is not None
    torch_msd = MusicnnModel("MSD", runtime="torch")
    assert torch_msd.runner is None
    windows = np.stack([piano[: 4 * SR], piano[-4 * SR :], piano[SR : 5 * SR]])
    for name, got, want in zip(msd.info.layer_names, msd.embed(windows), torch_msd.embed(windows), strict=True):
        assert got.shape == want.shape and got.dtype == np.float32
        assert np.abs(got - want).max() <= 2e-5 * np.abs(want).max(), name
    with pytest.raises(ValueError, match="runtime"):
        MusicnnModel("MSD", runtime="tensorflow")


def test_onnx_graph_cache_survives_a_truncated_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    piano: np.ndarray) -> None:
    """The exported graph is cached whole; a damaged cache file is exported afresh, with the same vectors."""
    monkeypatch.setenv("MESS_ONNX_CACHE", str(tmp_path))
    first = MusicnnModel("MTT", arch="vgg")
    (graph,) = tmp_path.glob("*.onnx")
    size = graph.stat().st_size
    assert size > 1_000_000 and not [p for p in tmp_path.iterdir() if p != graph]
    graph.write_bytes(graph.read_bytes()[: size // 2])  # as after a crash or a full disk
    second = MusicnnModel("MTT", arch="vgg")
    assert second.runner is not None and graph.stat().st_size == size
    window = piano[None, : 4 * SR]
    for a, b in zip(first.embed(window), second.embed(window), strict=True):
        np.testing.assert_array_equal(a, b)


def test_with_the_graph_cached_a_process_embeds_without_pytorch(tmp_path: Path, piano: np.ndarray,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime needs PyTorch only to export the graph, and librosa only for the mel filter bank, both
    cached: the next process embeds without importing either (about 240 MB less per extraction process) and
    gets the vectors of the embedding that exported (here, in the test's process). A damaged cached filter bank is
    computed again."""
    script = textwrap.dedent("""
        import sys
        import numpy as np
        from mess.models.musicnn import MusicnnModel
        model = MusicnnModel("MSD")
        vectors = model.embed(np.load(sys.argv[1]))
        np.save(sys.argv[2], vectors[7])  # penultimate
        print("torch" in sys.modules, "librosa" in sys.modules)
    """)
    np.save(tmp_path / "window.npy", piano[None, : 4 * SR])
    env = {**os.environ, "MESS_ONNX_CACHE": str(tmp_path / "cache")}

    def run(i: int) -> list[str]:
        args = [sys.executable, "-c", script, str(tmp_path / "window.npy"), str(tmp_path / f"{i}.npy")]
        return subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout.split()

    monkeypatch.setenv("MESS_ONNX_CACHE", str(tmp_path / "cache"))
    filters.mel_basis.cache_clear()  # as in a fresh process: the bank is computed (and cached on disk) again
    np.save(tmp_path / "0.npy", MusicnnModel("MSD").embed(piano[None, : 4 * SR])[7])  # exports, computes the bank
    assert {p.suffix for p in (tmp_path / "cache").iterdir()} == {".onnx", ".npy"}, list((tmp_path / "cache").iterdir())
    assert run(1) == ["False", "False"]  # reads both from the cache
    (mel,) = (tmp_path / "cache").glob("mel-*.npy")
    mel.write_bytes(mel.read_bytes()[:1000])  # as after a full disk
    assert run(2) == ["False", "True"]  # computed and cached again
    assert run(3) == ["False", "False"]
    for i in range(1, 4):
        np.testing.assert_array_equal(np.load(tmp_path / "0.npy"), np.load(tmp_path / f"{i}.npy"))


def test_a_network_first_built_inside_inference_mode_has_ordinary_parameters() -> None:
    """The PyTorch network is built on first use; first use inside ``torch.inference_mode`` must not make its
    parameters inference tensors (a random-init control or a fine-tune updates them in place later)."""
    model = MusicnnModel("MTT", arch="vgg")
    with torch.inference_mode():
        network = model.network
    assert not any(p.is_inference() for p in network.parameters())
    with torch.no_grad():
        next(network.parameters()).mul_(1.0)  # raises for an inference tensor


def test_the_graph_cache_key_follows_the_network_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An edit to the networks' code names a new cached graph, so a stale export is never run for new code."""
    from mess.models.musicnn import runtime

    tensors = {"w": np.arange(6, dtype=np.float32)}
    before = runtime.weights_key("musicnn", tensors)
    for name in runtime.NETWORK_SOURCES:
        (tmp_path / name).write_bytes((Path(runtime.__file__).parent / name).read_bytes())
    monkeypatch.setattr(runtime, "__file__", str(tmp_path / "runtime.py"))
    assert runtime.weights_key("musicnn", tensors) == before  # same code, same key
    with (tmp_path / "network.py").open("a") as f:
        f.write("\n# an edit\n")
    assert runtime.weights_key("musicnn", tensors) != before
    assert runtime.weights_key("musicnn", {"w": tensors["w"] + 1}) != runtime.weights_key("musicnn", tensors)


def test_the_exported_graph_holds_no_underflowing_weights_and_gives_pytorchs_vectors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piano: np.ndarray) -> None:
    """vgg-msd's checkpoint switches channels off with batch-norm scales of ~1e-36: the exported graph held 177k
    weights below 1e-30, whose products are float32 denormals (ONNX Runtime ran it at 2/3 of vgg-mtt's speed with
    the same ops). They are zeroed at export; the vectors stay PyTorch's (from the unchanged checkpoint)."""
    import onnx
    from onnx import numpy_helper

    monkeypatch.setenv("MESS_ONNX_CACHE", str(tmp_path))
    model = MusicnnModel("MSD", arch="vgg")
    assert model.runner is not None
    (graph,) = tmp_path.glob("*.onnx")
    weights = [numpy_helper.to_array(i) for i in onnx.load(str(graph)).graph.initializer]
    assert sum(w.size for w in weights) > 600_000
    assert not any(((np.abs(w) < 1e-30) & (w != 0)).any() for w in weights if w.dtype.kind == "f")
    windows = np.stack([piano[: 4 * SR], piano[-4 * SR :]])
    want = MusicnnModel("MSD", arch="vgg", runtime="torch").embed(windows)
    for name, got, ref in zip(model.info.layer_names, model.embed(windows), want, strict=True):
        assert np.abs(got - ref).max() <= 2e-5 * np.abs(ref).max(), name
