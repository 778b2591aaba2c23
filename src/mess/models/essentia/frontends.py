"""Essentia's model inputs in numpy: ``TensorflowInputMusiCNN`` and ``TensorflowInputVGGish``.

Both follow Essentia's ``FrameCutter`` (first frame centred on sample 0, zero-padded),
a symmetric Hann window (``Windowing(normalized=False)``) and the fixed parameters of
``src/algorithms/spectral/tensorflowinput{musicnn,vggish}.cpp``:

* MusiCNN (also EffNet-Discogs): 16 kHz, 512-sample frames and FFT, hop 256, power
  spectrum, 96 Slaney mel bands (unit-area triangles) up to 8 kHz, ``log10(1 + 10000 x)``.
* VGGish: 16 kHz, 400-sample frames zero-padded to a 512-point FFT, hop 160, magnitude
  spectrum, 64 HTK mel bands from 125 to 7500 Hz with triangles drawn on the mel axis
  (peak 1, DC bin excluded), ``log(x + 0.01)``.
"""

from __future__ import annotations

from functools import cache

import librosa
import numpy as np

SAMPLE_RATE = 16000
MUSICNN_FRAME, MUSICNN_HOP, MUSICNN_BANDS = 512, 256, 96
VGGISH_FRAME, VGGISH_FFT, VGGISH_HOP, VGGISH_BANDS = 400, 512, 160, 64
VGGISH_FMIN, VGGISH_FMAX = 125.0, 7500.0


def centred_frames(windows: np.ndarray, frame: int, hop: int) -> np.ndarray:
    """Frames of a [batch, samples] array, the first centred on sample 0: [batch, 1 + samples // hop, frame].

    >>> centred_frames(np.arange(8.0)[None], 4, 2).shape
    (1, 5, 4)
    """
    half = frame // 2
    padded = np.pad(np.asarray(windows, dtype=np.float32), ((0, 0), (half, half)))
    return np.lib.stride_tricks.sliding_window_view(padded, frame, axis=1)[:, ::hop]


@cache
def _slaney_filters() -> np.ndarray:
    """[96, 257] Slaney mel filters, unit-area triangles (Essentia ``normalize='unit_tri'``)."""
    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=MUSICNN_FRAME, n_mels=MUSICNN_BANDS, fmin=0.0,
                               fmax=SAMPLE_RATE / 2, htk=False, norm="slaney").astype(np.float32)


@cache
def _vggish_filters() -> np.ndarray:
    """[64, 257] HTK mel filters with triangles on the mel axis, peak 1 (``weighting='warping'``, ``unit_max``)."""
    def mel(hz: np.ndarray | float) -> np.ndarray:
        return 1127.0 * np.log1p(np.asarray(hz) / 700.0)

    bins = mel(np.linspace(0.0, SAMPLE_RATE / 2, VGGISH_FFT // 2 + 1))
    edges = np.linspace(mel(VGGISH_FMIN), mel(VGGISH_FMAX), VGGISH_BANDS + 2)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    weights = np.maximum(0.0, np.minimum((bins - lower) / (centre - lower), (upper - bins) / (upper - centre)))
    weights[:, 0] = 0.0
    return weights.astype(np.float32)


def tensorflow_input_musicnn(windows: np.ndarray) -> np.ndarray:
    """Essentia's ``TensorflowInputMusiCNN`` for a batch of 16 kHz windows: [batch, frames, 96] float32.

    >>> tensorflow_input_musicnn(np.zeros((2, 16000), np.float32)).shape
    (2, 63, 96)
    """
    frames = centred_frames(windows, MUSICNN_FRAME, MUSICNN_HOP) * np.hanning(MUSICNN_FRAME).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, n=MUSICNN_FRAME)) ** 2
    return np.log10(1.0 + 10000.0 * (power @ _slaney_filters().T)).astype(np.float32)


def tensorflow_input_vggish(windows: np.ndarray) -> np.ndarray:
    """Essentia's ``TensorflowInputVGGish`` for a batch of 16 kHz windows: [batch, frames, 64] float32.

    >>> tensorflow_input_vggish(np.zeros((1, 16000), np.float32)).shape
    (1, 101, 64)
    """
    frames = centred_frames(windows, VGGISH_FRAME, VGGISH_HOP) * np.hanning(VGGISH_FRAME).astype(np.float32)
    magnitude = np.abs(np.fft.rfft(frames, n=VGGISH_FFT))
    return np.log(magnitude @ _vggish_filters().T + 0.01).astype(np.float32)


def patches(features: np.ndarray, size: int, hop: int) -> np.ndarray:
    """Patches of ``size`` frames every ``hop`` frames: [batch, frames, bands] -> [batch, n, size, bands].

    Trailing frames that do not fill a patch are dropped (Essentia's ``lastPatchMode='discard'``).

    >>> patches(np.zeros((1, 300, 96)), 128, 62).shape
    (1, 3, 128, 96)
    """
    count = 1 + (features.shape[1] - size) // hop
    if count < 1:
        raise ValueError(f"{features.shape[1]} frames are fewer than one {size}-frame patch")
    index = np.arange(count)[:, None] * hop + np.arange(size)
    return features[:, index]
