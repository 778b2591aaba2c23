"""A no-weights baseline: handcrafted descriptors from one shared STFT, grouped as 'layers'."""

from __future__ import annotations

from functools import lru_cache

import librosa
import numpy as np
import scipy.signal
from librosa.version import version as librosa_version
from scipy.fft import dct
from scipy.ndimage import maximum_filter1d, uniform_filter1d

from mess.audio.jit_cache import ensure_warm
from mess.audio.spectrum import stft
from mess.models.base import EmbeddingModel, ModelInfo

_SR = 22050
_N_FFT = 2048
_HOP = 512
_GROUPS = {"mfcc": 40, "chroma": 24, "spectral": 24, "rhythm": 6}
_TOP_DB = 80.0


def _stats(feature: np.ndarray) -> np.ndarray:
    """Mean and standard deviation over time of [batch, frames, n_features] -> [batch, 2 * n_features]."""
    return np.concatenate([feature.mean(axis=1), feature.std(axis=1)], axis=-1)


def _db(power: np.ndarray) -> np.ndarray:
    """librosa's ``power_to_db`` (ref 1, amin 1e-10, top_db 80), with the top_db floor taken per window."""
    db = 10.0 * np.log10(np.maximum(power, 1e-10))
    return np.maximum(db, db.max(axis=(-2, -1), keepdims=True) - _TOP_DB)


def _onset_rate(envelope: np.ndarray, seconds: float, sr: int = _SR) -> np.ndarray:
    """Onsets per second: peaks of each normalised onset envelope [batch, frames].

    A peak is the maximum within +-30 ms that exceeds the mean of the surrounding 200 ms by
    0.07 (librosa's ``onset_detect`` defaults, without its sequential 30 ms wait rule).
    """
    low, high = envelope.min(axis=-1, keepdims=True), envelope.max(axis=-1, keepdims=True)
    env = (envelope - low) / np.maximum(high - low, 1e-12)
    frames = max(1, int(0.03 * sr // _HOP))
    local_max = maximum_filter1d(env, size=2 * frames + 1, axis=-1, mode="nearest")
    local_mean = uniform_filter1d(env, size=2 * int(0.1 * sr // _HOP) + 1, axis=-1, mode="nearest")
    peaks = (env == local_max) & (env >= local_mean + 0.07)
    return peaks.sum(axis=-1) / seconds


def _tempo(envelope: np.ndarray, sr: int, stride: int = 8) -> np.ndarray:
    """``librosa.feature.tempo`` (8 s autocorrelation windows, mean tempogram, log-normal prior around 120 BPM)
    of onset envelopes [batch, frames], with the tempogram's windows taken every ``stride`` frames, not every one.

    The mean over windows ``stride`` frames apart estimates the mean over all of them at
    ``1 / stride`` of the cost (the tempogram was a fifth of the whole descriptor time).
    """
    win = int(librosa.time_to_frames(8.0, sr=sr, hop_length=_HOP))
    n = envelope.shape[-1]
    padded = np.pad(envelope, ((0, 0), (win // 2, win // 2)), mode="linear_ramp", end_values=(0, 0))
    frames = np.lib.stride_tricks.sliding_window_view(padded, win, axis=-1)[:, :n:stride]  # [batch, t, win]
    ac = librosa.autocorrelate(frames * scipy.signal.get_window("hann", win, fftbins=True), axis=-1)
    ac /= np.maximum(np.abs(ac).max(axis=-1, keepdims=True), np.finfo(ac.dtype).tiny)
    return librosa.feature.tempo(tg=ac.swapaxes(-1, -2), sr=sr, hop_length=_HOP).reshape(len(envelope))


@lru_cache(maxsize=4)
def _banks(sr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mel (128) and chroma (12, A440 tuning) filter banks as [bins, n] matrices, and the bin frequencies."""
    mel = librosa.filters.mel(sr=sr, n_fft=_N_FFT).T.astype(np.float32)
    chroma = librosa.filters.chroma(sr=sr, n_fft=_N_FFT, tuning=0.0).T.astype(np.float32)
    return mel, chroma, librosa.fft_frequencies(sr=sr, n_fft=_N_FFT).astype(np.float32)


def _spectral_shape(mag: np.ndarray, power: np.ndarray, freqs: np.ndarray) -> list[np.ndarray]:
    """Centroid, bandwidth and 85% roll-off (log1p Hz) and flatness (log10) of magnitudes [batch, frames, bins]."""
    total = mag.sum(axis=-1)
    centroid = (mag @ freqs) / (total + 1e-10)
    bandwidth = np.sqrt(np.maximum((mag @ freqs**2) / (total + 1e-10) - centroid**2, 0.0))
    rolloff = freqs[np.minimum((np.cumsum(mag, axis=-1) < 0.85 * total[..., None]).sum(axis=-1), freqs.size - 1)]
    floored = np.maximum(power, 1e-10)
    flatness = np.exp(np.log(floored).mean(axis=-1)) / floored.mean(axis=-1)
    return [np.log1p(centroid), np.log1p(bandwidth), np.log1p(rolloff), np.log10(flatness + 1e-10)]


def _contrast(mag: np.ndarray, freqs: np.ndarray, quantile: float = 0.02) -> list[np.ndarray]:
    """Spectral contrast as librosa computes it: 10 log10 of the mean of the top over the bottom
    ``quantile`` of the magnitudes in each octave band from 200 Hz; 7 bands."""
    edges = np.concatenate([[0.0], 200.0 * 2.0 ** np.arange(7)])
    out = []
    for k, (low, high) in enumerate(zip(edges[:-1], edges[1:], strict=False)):
        band = np.flatnonzero((freqs >= low) & (freqs <= high))
        first, last = (band[0] - 1 if k else band[0]), (freqs.size if k == 6 else band[-1])
        sub = mag[..., first:last]
        n = max(1, int(np.rint(quantile * (last - first + (k < 6)))))
        part = np.partition(sub, (n - 1, sub.shape[-1] - n), axis=-1)
        valley, peak = part[..., :n].mean(axis=-1), part[..., -n:].mean(axis=-1)
        out.append(10 * np.log10(np.maximum(peak, 1e-10)) - 10 * np.log10(np.maximum(valley, 1e-10)))
    return out


def _zero_crossing_rate(y: np.ndarray, frames: int) -> np.ndarray:
    """Zero crossings per sample in centred 2048-sample frames every 512 samples: [batch, frames]."""
    crossings = np.abs(np.diff(np.signbit(y), axis=-1, prepend=False)).astype(np.float32)
    padded = np.pad(crossings, ((0, 0), (_N_FFT // 2, _N_FFT // 2)), mode="edge")
    cum = np.concatenate([np.zeros((len(y), 1), np.float32), np.cumsum(padded, axis=-1)], axis=-1)
    starts = np.arange(frames) * _HOP
    return (cum[:, np.minimum(starts + _N_FFT, cum.shape[1] - 1)] - cum[:, starts]) / _N_FFT


def describe(windows: np.ndarray, sr: int = _SR) -> dict[str, np.ndarray]:
    """Descriptor groups of a batch of equal-length mono windows [batch, samples] (or one window).

    One STFT feeds every descriptor (mel/MFCC, chroma without a tuning estimate, spectral
    shape and contrast, onset envelope, RMS), computed for the whole batch at once. Each
    window is first scaled to peak 1: the descriptors are meant to ignore playback gain, and
    the scaling keeps float input of any magnitude (a float WAV holding 3e19) finite.
    Returns [batch, dim] per group ([dim] for one window).
    """
    single = windows.ndim == 1
    y = np.atleast_2d(np.asarray(windows, dtype=np.float64))
    y = (y / np.maximum(np.abs(y).max(axis=-1, keepdims=True), 1e-30)).astype(np.float32)
    mel_bank, chroma_bank, freqs = _banks(sr)
    spectrum = stft(y, _N_FFT, _HOP, "float32")  # [batch, frames, bins]
    power = spectrum.real**2 + spectrum.imag**2
    mag = np.sqrt(power)
    log_mel = _db(power @ mel_bank)  # [batch, frames, 128]
    mfcc = dct(log_mel, axis=-1, type=2, norm="ortho")[..., 1:21]  # c0 is level, not timbre
    chroma = power @ chroma_bank
    chroma /= np.maximum(chroma.max(axis=-1, keepdims=True), 1e-30)
    frames = mag.shape[1]
    spectral = np.stack([*_spectral_shape(mag, power, freqs), _zero_crossing_rate(y, frames), *_contrast(mag, freqs)],
                        axis=-1)
    onset_env = librosa.onset.onset_strength(S=log_mel.transpose(0, 2, 1), sr=sr, hop_length=_HOP)
    tempo = _tempo(onset_env, sr)
    rms = np.sqrt(np.maximum(2 * power.sum(axis=-1) - power[..., 0] - power[..., -1], 0) / _N_FFT**2)
    level_db = 20 * np.log10(rms + 1e-9)
    # gain-invariant dynamics (range and variation), not the absolute level, which mastering decides
    rhythm = np.stack([np.log(tempo + 1.0), _onset_rate(onset_env, max(y.shape[-1] / sr, 1e-6), sr),
                       onset_env.mean(axis=-1), onset_env.std(axis=-1),
                       np.percentile(level_db, 95, axis=-1) - np.percentile(level_db, 10, axis=-1),
                       rms.std(axis=-1) / (rms.mean(axis=-1) + 1e-9)], axis=-1)
    out = {"mfcc": _stats(mfcc), "chroma": _stats(chroma), "spectral": _stats(spectral), "rhythm": rhythm}
    return {k: v[0] for k, v in out.items()} if single else out


def _warm_clip() -> np.ndarray:
    """Three seconds of a chord in noise: enough to reach every librosa path :func:`describe` takes."""
    t = np.arange(3 * _SR) / _SR
    y = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 3
    return (y + 0.01 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)


class DspModel(EmbeddingModel):
    """Timbre (MFCC), harmony (chroma), spectral shape and rhythm descriptors per window."""

    def __init__(self) -> None:
        self.info = ModelInfo(name="dsp", revision=f"v5-librosa-{librosa_version}", sample_rate=_SR,
                              layer_names=tuple(_GROUPS), layer_dims=tuple(_GROUPS.values()), min_samples=_N_FFT)

    def embed(self, windows: np.ndarray) -> list[np.ndarray]:
        """Descriptor groups for each window, as float32 [batch, dim] per group."""
        ensure_warm("dsp", lambda: describe(_warm_clip()))
        groups = describe(np.asarray(windows, dtype=np.float32))
        return [groups[g].astype(np.float32) for g in _GROUPS]
