"""Short-time Fourier transform as librosa computes it, without librosa's JIT-compiled framing."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=8)
def hann(n_fft: int, dtype: str) -> np.ndarray:
    """Periodic Hann window (librosa's default), computed in float64 and stored as ``dtype``: the arithmetic of
    ``scipy.signal.get_window("hann", n_fft)``, whose import (scipy.signal, scipy.stats) cost musicnn's load 0.5 s."""
    return (0.5 + 0.5 * np.cos(np.linspace(-np.pi, np.pi, n_fft + 1)))[:-1].astype(dtype)


def frames(windows: np.ndarray, n_fft: int, hop: int, dtype: str = "float64") -> np.ndarray:
    """Centred, zero-padded ``n_fft``-sample frames every ``hop`` samples of [batch, samples]: a strided view
    [batch, frames, n_fft] (librosa's framing)."""
    padded = np.pad(np.asarray(windows, dtype=dtype), ((0, 0), (n_fft // 2, n_fft // 2)))
    return np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::hop]


def spectra(framed: np.ndarray) -> np.ndarray:
    """Hann-windowed spectra of frames [..., n_fft] in their own precision: [..., n_fft // 2 + 1] complex64.

    float64 frames go through numpy's FFT, whose values are scipy's (the same pocketfft; test), so musicnn's load
    skips importing scipy.fft (0.24 s); float32 frames through scipy's, as numpy's float32 FFT rounds otherwise.
    """
    window = hann(framed.shape[-1], framed.dtype.name)
    if framed.dtype == np.float64:
        return np.fft.rfft(framed * window, axis=-1).astype(np.complex64, copy=False)
    import scipy.fft

    return scipy.fft.rfft(framed * window, axis=-1).astype(np.complex64, copy=False)


def stft(windows: np.ndarray, n_fft: int, hop: int, dtype: str = "float64") -> np.ndarray:
    """``librosa.stft(windows, n_fft=n_fft, hop_length=hop)`` for [batch, samples]: [batch, frames, bins] complex64.

    Centred zero padding and a periodic Hann window, as librosa (0.11) does. ``dtype`` is the
    precision of the FFT: float64 gives librosa's values exactly (it computes in float64 and
    stores complex64); float32 is about twice as fast and differs by float32 rounding.
    """
    return spectra(frames(windows, n_fft, hop, dtype))
