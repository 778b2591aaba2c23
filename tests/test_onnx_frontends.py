"""Essentia's front ends in numpy against references written here from the published parameters.

The references loop over frames with a full complex FFT and build their mel filters band
by band from the scale formulas (Slaney for MusiCNN, HTK for VGGish), so they share no
code with ``mess.models.essentia.frontends`` (vectorised framing, rfft, librosa's filters).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mess.audio.decode import load_audio
from mess.models.essentia.frontends import patches, tensorflow_input_musicnn, tensorflow_input_vggish

SR = 16000


def _hann(n: int) -> np.ndarray:
    return np.array([0.5 - 0.5 * np.cos(2 * np.pi * i / (n - 1)) for i in range(n)])


def _frames(y: np.ndarray, frame: int, hop: int) -> list[np.ndarray]:
    padded = np.concatenate([np.zeros(frame // 2), y, np.zeros(frame // 2)])
    return [padded[start : start + frame] for start in range(0, len(padded) - frame + 1, hop)]


def _slaney_mel(f: float) -> float:
    return 3 * f / 200 if f < 1000 else 15 + 27 * np.log(f / 1000) / np.log(6.4)


def _slaney_hz(m: float) -> float:
    return 200 * m / 3 if m < 15 else 1000 * np.exp((m - 15) * np.log(6.4) / 27)


def reference_musicnn(y: np.ndarray) -> np.ndarray:
    """TensorflowInputMusiCNN: 512/256, Hann, power, 96 Slaney bands (unit area) to 8 kHz, log10(1 + 1e4 x)."""
    edges = [_slaney_hz(m) for m in np.linspace(_slaney_mel(0.0), _slaney_mel(8000.0), 98)]
    freqs = np.arange(257) * SR / 512
    bank = np.zeros((96, 257))
    for band in range(96):
        lo, mid, hi = edges[band : band + 3]
        for k, f in enumerate(freqs):
            if lo < f < hi:
                bank[band, k] = ((f - lo) / (mid - lo) if f <= mid else (hi - f) / (hi - mid)) * 2 / (hi - lo)
    window = _hann(512)
    rows = [np.log10(1 + 10000 * bank @ np.abs(np.fft.fft(f * window)[:257]) ** 2) for f in _frames(y, 512, 256)]
    return np.array(rows)


def reference_vggish(y: np.ndarray) -> np.ndarray:
    """TensorflowInputVGGish: 400/160 zero-padded to 512, Hann, magnitude, 64 HTK bands 125-7500 Hz, log(x + .01)."""
    def mel(f: float) -> float:
        return 1127 * np.log(1 + f / 700)

    edges = np.linspace(mel(125.0), mel(7500.0), 66)
    bank = np.zeros((64, 257))
    for band in range(64):
        lo, mid, hi = edges[band : band + 3]
        for k in range(1, 257):
            m = mel(k * SR / 512)
            if lo < m < hi:
                bank[band, k] = (m - lo) / (mid - lo) if m <= mid else (hi - m) / (hi - mid)
    window = _hann(400)
    rows = [np.log(bank @ np.abs(np.fft.fft(np.concatenate([f * window, np.zeros(112)]))[:257]) + 0.01)
            for f in _frames(y, 400, 160)]
    return np.array(rows)


@pytest.fixture(scope="module")
def clip(rendered_collection: list[Path]) -> np.ndarray:
    """4 s of a rendered chorale at 16 kHz."""
    return load_audio(rendered_collection[0], SR, max_seconds=4.0)


def test_musicnn_input_matches_reference(clip: np.ndarray) -> None:
    ours = tensorflow_input_musicnn(clip[None])[0]
    ref = reference_musicnn(clip.astype(np.float64))
    assert ours.shape == ref.shape == (1 + len(clip) // 256, 96)
    assert ref.max() > 1.0  # real signal, not silence
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_vggish_input_matches_reference(clip: np.ndarray) -> None:
    ours = tensorflow_input_vggish(clip[None])[0]
    ref = reference_vggish(clip.astype(np.float64))
    assert ours.shape == ref.shape == (1 + len(clip) // 160, 64)
    assert ref.min() >= np.log(0.01) - 1e-9 and ref.max() > 0.0
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_front_ends_treat_each_window_alone(clip: np.ndarray) -> None:
    pair = np.stack([clip, clip[::-1].copy()])
    for front_end in (tensorflow_input_musicnn, tensorflow_input_vggish):
        both = front_end(pair)
        np.testing.assert_allclose(both[1], front_end(pair[1:])[0], rtol=1e-5, atol=1e-5)
        assert not np.allclose(both[0], both[1])


def test_patches_follow_hop_and_drop_the_tail() -> None:
    features = np.arange(300 * 2, dtype=np.float32).reshape(1, 300, 2)
    out = patches(features, 128, 62)
    assert out.shape == (1, 3, 128, 2)  # starts 0, 62, 124; 186 + 128 > 300
    np.testing.assert_array_equal(out[0, 2, 0], features[0, 124])
    with pytest.raises(ValueError, match="fewer than one 128-frame patch"):
        patches(features[:, :100], 128, 62)
