"""musicnn's input (repeat-padding, log-mel, patches) and how patch vectors become a window's, without PyTorch."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.signal

pytest.importorskip("musicnn.configuration", reason="pip install --no-deps musicnn==0.1.0")

from mess.models import filters  # noqa: E402
from mess.models.musicnn import model  # noqa: E402

SR, PATCH_FRAMES, BANDS = 16000, 187, 96  # musicnn's input as its extractor makes it: 16 kHz, 3 s of 96 bands


def _tones(seconds: float, level: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    y = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((220.0, 440.0, 1250.0, 3100.0), 1))
    return (level * (y + 0.01 * np.random.default_rng(0).standard_normal(t.size))).astype(np.float32)


def test_a_window_is_tiled_cyclically_to_a_patch_and_cut_into_whole_patches() -> None:
    short = np.random.default_rng(1).standard_normal((2, 1000)).astype(np.float32)
    assert np.array_equal(model.repeat_pad(short, 2500), np.stack([np.resize(w, 2500) for w in short]))
    assert np.array_equal(model.repeat_pad(short, 3000), np.tile(short, 3))
    for length in (1000, 999):  # long enough already: as it is
        assert model.repeat_pad(short, length) is short
    with pytest.raises(ValueError, match="empty"):
        model.repeat_pad(short[:, :0], 10)
    mel = np.arange(2 * (2 * PATCH_FRAMES + 5) * BANDS, dtype=np.float32).reshape(2, 2 * PATCH_FRAMES + 5, BANDS)
    cut = model.patches(mel)
    assert cut.shape == (2, 2, PATCH_FRAMES, BANDS)
    for b in range(2):
        for k in range(2):
            assert np.array_equal(cut[b, k], mel[b, k * PATCH_FRAMES:(k + 1) * PATCH_FRAMES])
    assert model.patches(mel[:, :PATCH_FRAMES - 1]).shape == (2, 0, PATCH_FRAMES, BANDS)
    # 3 s at 16 kHz, hop 256, centred frames: (187 - 1) * 256 samples make 187 frames, one patch
    assert model.MIN_SAMPLES == (PATCH_FRAMES - 1) * 256
    one = model.input_patches(_tones(0.5, 0.1)[None])
    assert one.shape == (1, 1, PATCH_FRAMES, BANDS)
    tiled = np.resize(_tones(0.5, 0.1), model.MIN_SAMPLES)
    assert np.array_equal(one[0, 0], model.log_mel(tiled[None])[0])


def test_log_mel_is_musicnns_float16_formula_and_float32_where_float16_overflows() -> None:
    """musicnn's extractor: librosa's power mel (centred frames of 512 zero-padded at the ends, hop 256, periodic
    Hann; 96 Slaney bands), cast to float16, log10(10000 x + 1) in float16; where 10000 x passes float16's
    largest value (65504) the formula runs in float32 instead (test_musicnn.py compares quiet input with librosa's
    melspectrogram to the bit; this power is written out, float64)."""
    bank = librosa.filters.mel(sr=SR, n_fft=512, n_mels=BANDS)
    window = scipy.signal.get_window("hann", 512)
    for level, overflows in ((0.05, False), (0.9, True)):
        y = _tones(3.2, level)
        frames = np.lib.stride_tricks.sliding_window_view(np.pad(y.astype(np.float64), 256), 512)[::256]
        power = (np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2) @ bank.T
        over = 10000 * power > np.finfo(np.float16).max
        assert over.any() == overflows
        got = model.log_mel(y[None])[0]
        assert got.shape == power.shape and got.dtype == np.float32
        with np.errstate(over="ignore"):
            half = np.log10(10000 * power.astype(np.float16) + np.float16(1)).astype(np.float32)
        np.testing.assert_allclose(got[~over], half[~over], rtol=1e-3)  # float16: 11 significant bits
        np.testing.assert_allclose(got[over], np.log10(10000 * power[over] + 1), rtol=1e-5)


def test_the_mel_basis_is_librosas_and_a_damaged_cached_copy_is_made_again(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESS_ONNX_CACHE", str(tmp_path))
    filters.mel_basis.cache_clear()
    try:
        want = librosa.filters.mel(sr=22050, n_fft=1024, n_mels=40, fmax=8000.0)
        first = filters.mel_basis(22050, 1024, 40, 8000.0)
        assert first.dtype == np.float32 and np.array_equal(first, want)
        (cached,) = tmp_path.glob("mel-22050-1024-40-fmax8000-*.npy")
        assert np.array_equal(np.load(cached), want)
        for damage in (b"not a numpy file", None):
            if damage is None:  # a whole .npy of another shape
                np.save(cached, want[:-1])
            else:
                cached.write_bytes(damage)
            filters.mel_basis.cache_clear()
            assert np.array_equal(filters.mel_basis(22050, 1024, 40, 8000.0), want)
            assert np.array_equal(np.load(cached), want)
        cached.unlink()
        cached.mkdir()  # a folder in the file's place: no copy can be kept, the bank is still computed
        filters.mel_basis.cache_clear()
        assert np.array_equal(filters.mel_basis(22050, 1024, 40, 8000.0), want) and cached.is_dir()
        filters.mel_basis.cache_clear()
        assert np.array_equal(filters.mel_basis(22050, 1024, 40), librosa.filters.mel(sr=22050, n_fft=1024, n_mels=40))
        assert len(list(tmp_path.glob("mel-22050-1024-40*.npy"))) == 2  # the band limit names its own file
    finally:
        filters.mel_basis.cache_clear()


def test_a_windows_vectors_are_the_mean_of_its_patches_vectors_on_onnx_runtime() -> None:
    """embed_patches runs the patches of a batch in chunks: each window's vector per layer is the mean of its own
    patches' vectors, each patch run alone."""
    msd = model.MusicnnModel("MSD")
    if msd.runner is None:
        pytest.skip("no ONNX Runtime path here")
    rng = np.random.default_rng(2)
    batch = (rng.standard_normal((2, 3, PATCH_FRAMES, BANDS)) * 0.3 + 1.0).astype(np.float32)
    got = msd.embed_patches(batch)
    assert [layer.shape for layer in got] == [(2, dim) for dim in msd.info.layer_dims]
    for b in range(2):
        alone = [msd.runner(batch[b, k][None]) for k in range(3)]
        for index, layer in enumerate(got):
            want = np.mean([patch[index][0] for patch in alone], axis=0)
            np.testing.assert_allclose(layer[b], want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
