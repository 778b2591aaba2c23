"""A no-weights baseline: handcrafted descriptors from one shared STFT, grouped as 'layers'."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version

import numpy as np
from scipy.fft import dct, next_fast_len
from scipy.ndimage import maximum_filter1d, uniform_filter1d
from threadpoolctl import ThreadpoolController

from mess.audio.spectrum import frames, hann, spectra
from mess.models.base import EmbeddingModel, ModelInfo
from mess.models.filters import chroma_basis, mel_basis

librosa_version = version("librosa")  # its filters and the algorithms below are librosa's: its version names them

_SR = 22050
_N_FFT = 2048
_HOP = 512
_GROUPS = {"mfcc": 40, "chroma": 24, "spectral": 24, "rhythm": 6}
_TOP_DB = 80.0
_BLOCK = 512  # frames per block of per-frame work


def _stats(feature: np.ndarray) -> np.ndarray:
    """Mean and standard deviation over time of [batch, frames, n_features] -> [batch, 2 * n_features]."""
    return np.concatenate([feature.mean(axis=1), feature.std(axis=1)], axis=-1)


def _db(power: np.ndarray) -> np.ndarray:
    """librosa's ``power_to_db`` (ref 1, amin 1e-10, top_db 80), with the top_db floor taken per window."""
    db = np.float32(10.0 / np.log(10.0)) * np.log(np.maximum(power, 1e-10))  # float32 log is SIMD, log10 is not
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


def _onset_strength(log_mel: np.ndarray) -> np.ndarray:
    """``librosa.onset.onset_strength(S=log_mel.transpose(0, 2, 1))``, its defaults, for log-mel [batch, frames,
    bands]: the mean over bands of each band's rise from the frame before, delayed 3 frames as librosa centres it.
    The same operations on the same arrays, so the same float32 values (test)."""
    spectrum = log_mel.transpose(0, 2, 1)
    rise = np.maximum(0.0, spectrum[..., 1:] - spectrum[..., :-1])
    envelope = np.mean(rise, axis=-2)
    return np.pad(envelope, ((0, 0), (1 + 2048 // (2 * _HOP), 0)))[:, :spectrum.shape[-1]]


def _autocorrelate(x: np.ndarray) -> np.ndarray:
    """``librosa.autocorrelate(x, axis=-1)``: numpy's FFT of ``x`` zero-padded to a fast length, its power, back."""
    n = x.shape[-1]
    size = next_fast_len(2 * n - 1, real=True)
    spectrum = np.fft.rfft(x, n=size, axis=-1)
    return np.fft.irfft(spectrum.real**2 + spectrum.imag**2, n=size, axis=-1)[..., :n]


def _tempo(envelope: np.ndarray, sr: int, stride: int = 8) -> np.ndarray:
    """``librosa.feature.tempo`` (8 s autocorrelation windows, mean tempogram, log-normal prior around 120 BPM,
    nothing above 320) of onset envelopes [batch, frames], with the tempogram's windows taken every ``stride``
    frames, not every one.

    The mean over windows ``stride`` frames apart estimates the mean over all of them at
    ``1 / stride`` of the cost (the tempogram was a fifth of the whole descriptor time).
    """
    win = int(8.0 * sr) // _HOP  # librosa.time_to_frames(8.0)
    n = envelope.shape[-1]
    padded = np.pad(envelope, ((0, 0), (win // 2, win // 2)), mode="linear_ramp", end_values=(0, 0))
    frames = np.lib.stride_tricks.sliding_window_view(padded, win, axis=-1)[:, :n:stride]  # [batch, t, win]
    ac = _autocorrelate(frames * hann(win, "float64"))
    ac /= np.maximum(np.abs(ac).max(axis=-1, keepdims=True), np.finfo(ac.dtype).tiny)
    tempogram = np.mean(ac.swapaxes(-1, -2), axis=-1, keepdims=True)  # [batch, win, 1]
    bpms = np.empty(win)
    bpms[0] = np.inf  # lag 0
    bpms[1:] = 60.0 * sr / (_HOP * np.arange(1.0, win))
    log_prior = -0.5 * ((np.log2(bpms) - np.log2(120.0)) / 1.0) ** 2
    log_prior[:int(np.argmax(bpms < 320.0))] = -np.inf
    best = np.argmax(np.log1p(1e6 * tempogram) + log_prior[:, None], axis=-2)
    return np.take(bpms, best).reshape(len(envelope))


@dataclass(frozen=True)
class _Banks:
    """Linear maps of the spectrum: the 128 mel and 12 chroma (A440) filters and the RMS weights as column groups,
    each with the only bins its columns touch, and the bin frequencies with their squares."""

    groups: tuple[tuple[slice, slice, np.ndarray], ...]  # (bins, columns, weights [bins, columns])
    moments: np.ndarray  # [bins, 2]: f, f**2
    freqs: np.ndarray


@lru_cache(maxsize=4)
def _banks(sr: int) -> _Banks:
    """The maps for ``sr``; the mel filters come in groups of 8 (a filter spans a few bins, so a dense product
    would be ~95% zeros); chroma and the RMS weights (|X|^2 counted twice except DC and Nyquist) span all bins."""
    mel = mel_basis(sr, _N_FFT, 128).T
    chroma = chroma_basis(sr, _N_FFT).T
    rms = np.full((mel.shape[0], 1), 2.0 / _N_FFT**2)
    rms[[0, -1]] /= 2
    bank = np.concatenate([mel, chroma, rms], axis=1).astype(np.float32)
    groups = []
    for first, last in [*((k, k + 8) for k in range(0, mel.shape[1], 8)), (mel.shape[1], bank.shape[1])]:
        rows = np.flatnonzero(bank[:, first:last].any(axis=1))
        bins = slice(rows[0], rows[-1] + 1)
        groups.append((bins, slice(first, last), np.ascontiguousarray(bank[bins, first:last])))
    freqs = np.fft.rfftfreq(_N_FFT, 1.0 / sr).astype(np.float32)  # librosa.fft_frequencies
    return _Banks(tuple(groups), np.stack([freqs, freqs**2], axis=1), freqs)


def _project(power: np.ndarray, banks: _Banks) -> np.ndarray:
    """``power @ bank`` for power [frames, bins], each column group multiplying only its bins: [frames, 141]."""
    out = np.empty((power.shape[0], banks.groups[-1][1].stop), np.float32)
    for bins, columns, weights in banks.groups:
        np.matmul(power[:, bins], weights, out=out[:, columns])
    return out


def _rolloff_bin(mag: np.ndarray, block_sums: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """How many bins' cumulative magnitude stays below ``threshold`` [frames], for mag [frames, 1 + k * block] and
    its block sums [frames, k]: the crossing block from the sums, then the bin inside it (not a cumsum of every bin)."""
    n, block = mag.shape[0], (mag.shape[1] - 1) // block_sums.shape[1]
    blocks = mag[:, :-1].reshape(n, -1, block)
    ends = np.cumsum(block_sums, axis=-1)  # cumulative magnitude at each block's end
    below = (ends < threshold[:, None]).sum(axis=-1)
    inside = blocks[np.arange(n), np.minimum(below, blocks.shape[1] - 1)]
    before = np.where(below > 0, ends[np.arange(n), np.maximum(below - 1, 0)], 0)
    return below * block + ((before[:, None] + np.cumsum(inside, axis=-1)) < threshold[:, None]).sum(axis=-1)


def _spectral_shape(mag: np.ndarray, power: np.ndarray, banks: _Banks) -> list[np.ndarray]:
    """Centroid, bandwidth and 85% roll-off (log1p Hz) and flatness (log10) of magnitudes [frames, bins]."""
    block_sums = mag[:, :-1].reshape(len(mag), -1, 32) @ np.ones(32, np.float32)  # bins 0-1023 in 32 blocks
    total = block_sums.sum(axis=-1) + mag[:, -1]
    centroid, second = ((mag @ banks.moments) / (total[:, None] + 1e-10)).T
    bandwidth = np.sqrt(np.maximum(second - centroid**2, 0.0))
    rolloff = banks.freqs[np.minimum(_rolloff_bin(mag, block_sums, 0.85 * total), banks.freqs.size - 1)]
    floored = np.maximum(power, 1e-10)
    pairs = floored[:, 0:-1:2] * floored[:, 1::2]  # in [1e-20, 1e12]: half the logs for the same sum
    log_mean = (np.log(pairs, out=pairs).sum(axis=-1) + np.log(floored[:, -1])) / floored.shape[1]
    flatness = np.exp(log_mean) / floored.mean(axis=-1)
    return [np.log1p(centroid), np.log1p(bandwidth), np.log1p(rolloff), np.log10(flatness + 1e-10)]


@lru_cache(maxsize=4)
def _contrast_bands(sr: int, quantile: float = 0.02) -> tuple[tuple[int, int, int], ...]:
    """librosa's spectral contrast bands (octaves from 200 Hz; 7 bands) as (first bin, end bin, values averaged)."""
    freqs = np.fft.rfftfreq(_N_FFT, 1.0 / sr)
    edges = np.concatenate([[0.0], 200.0 * 2.0 ** np.arange(7)])
    bands = []
    for k, (low, high) in enumerate(zip(edges[:-1], edges[1:], strict=False)):
        band = np.flatnonzero((freqs >= low) & (freqs <= high))
        first, last = (band[0] - 1 if k else band[0]), (freqs.size if k == 6 else band[-1])
        bands.append((int(first), int(last), max(1, int(np.rint(quantile * (last - first + (k < 6)))))))
    return tuple(bands)


def _contrast(mag: np.ndarray, sr: int) -> list[np.ndarray]:
    """Spectral contrast as librosa computes it: 10 log10 of the mean of the top over the bottom 2% of the
    magnitudes [frames, bins] in each band (sorting a band costs less than selecting both ends of it)."""
    out = []
    for first, last, n in _contrast_bands(sr):
        sub = mag[:, first:last]
        if n == 1:
            peak, valley = sub.max(axis=-1), sub.min(axis=-1)
        else:
            ordered = np.sort(sub, axis=-1)
            peak, valley = ordered[:, -n:].mean(axis=-1), ordered[:, :n].mean(axis=-1)
        out.append(10 * np.log10(np.maximum(peak, 1e-10)) - 10 * np.log10(np.maximum(valley, 1e-10)))
    return out


def _frame_features(framed: np.ndarray, banks: _Banks, sr: int) -> np.ndarray:
    """Per-frame descriptors of frames [rows, n_fft]: mel power (128), chroma (12), mean square (1), spectral
    shape (4) and contrast (7): [rows, 152]."""
    mag = np.abs(spectra(framed))
    power = mag * mag
    shape = np.stack([*_spectral_shape(mag, power, banks), *_contrast(mag, sr)], axis=-1)
    return np.concatenate([_project(power, banks), shape], axis=-1)


def _zero_crossing_rate(y: np.ndarray, frames: int) -> np.ndarray:
    """Zero crossings per sample in centred 2048-sample frames every 512 samples: [batch, frames].

    Counted per 512-sample block of the crossings, then summed over each frame's 4 blocks; as in librosa, the
    edge samples that pad the signal cross nothing.
    """
    sign = np.signbit(y)
    crossings = np.empty(y.shape, bool)
    crossings[:, 0] = False
    np.not_equal(sign[:, 1:], sign[:, :-1], out=crossings[:, 1:])
    per = _N_FFT // _HOP
    padded = np.pad(crossings, ((0, 0), (_N_FFT // 2, _N_FFT // 2)))[:, :(frames + per - 1) * _HOP]
    counts = padded.reshape(len(y), -1, _HOP).view(np.uint8).sum(axis=-1, dtype=np.int32)
    cum = np.concatenate([np.zeros((len(y), 1), np.int32), np.cumsum(counts, axis=-1)], axis=-1)
    return (cum[:, per:] - cum[:, :-per]).astype(np.float32) / _N_FFT


@lru_cache(maxsize=1)
def _dct_basis() -> np.ndarray:
    """Orthonormal DCT-II of the 128 log-mel bands, coefficients 1-20 (c0 is level, not timbre): [128, 20]."""
    return dct(np.eye(128), type=2, norm="ortho", axis=-1)[:, 1:21].astype(np.float32)


@lru_cache(maxsize=1)
def _blas() -> ThreadpoolController:
    """The process's BLAS thread pools, found once (finding them takes milliseconds)."""
    return ThreadpoolController()


def describe(windows: np.ndarray, sr: int = _SR) -> dict[str, np.ndarray]:
    """Descriptor groups of a batch of equal-length mono windows [batch, samples] (or one window).

    One STFT feeds every descriptor (mel/MFCC, chroma without a tuning estimate, spectral
    shape and contrast, onset envelope, RMS), for the whole batch in one call. Each
    window is first scaled to peak 1: the descriptors are meant to ignore playback gain, and
    the scaling keeps float input of any magnitude (a float WAV holding 3e19) finite.
    The per-frame work runs on blocks of 512 frames, whose spectra stay in cache, with one
    BLAS thread (its products are small; a second thread slowed them on a busy machine; the
    setting is process-wide while the call runs).
    Returns [batch, dim] per group ([dim] for one window).
    """
    single = windows.ndim == 1
    y = np.atleast_2d(np.asarray(windows))
    y = y if y.dtype == np.float32 else y.astype(np.float64)
    peak = np.maximum(y.max(axis=-1), -y.min(axis=-1))
    y = (y / np.maximum(peak, 1e-30).astype(y.dtype)[:, None]).astype(np.float32, copy=False)
    banks = _banks(sr)
    framed = frames(y, _N_FFT, _HOP, "float32")  # [batch, frames, n_fft] view
    batch, n = framed.shape[:2]
    per_frame = np.empty((batch, n, 152), np.float32)
    with _blas().limit(limits=1, user_api="blas"):
        for b, start in itertools.product(range(batch), range(0, n, _BLOCK)):
            per_frame[b, start:start + _BLOCK] = _frame_features(framed[b, start:start + _BLOCK], banks, sr)
        log_mel = _db(per_frame[..., :128])  # [batch, frames, 128]
        mfcc = (log_mel.reshape(-1, 128) @ _dct_basis()).reshape(batch, n, -1)
    chroma = per_frame[..., 128:140]
    chroma = chroma / np.maximum(chroma.max(axis=-1, keepdims=True), 1e-30)
    spectral = np.concatenate([per_frame[..., 141:145], _zero_crossing_rate(y, n)[..., None], per_frame[..., 145:]],
                              axis=-1)
    onset_env = _onset_strength(log_mel)
    tempo = _tempo(onset_env, sr)
    rms = np.sqrt(np.maximum(per_frame[..., 140], 0))
    level_db = 20 * np.log10(rms + 1e-9)
    # gain-invariant dynamics (range and variation), not the absolute level, which mastering decides
    rhythm = np.stack([np.log(tempo + 1.0), _onset_rate(onset_env, max(y.shape[-1] / sr, 1e-6), sr),
                       onset_env.mean(axis=-1), onset_env.std(axis=-1),
                       np.percentile(level_db, 95, axis=-1) - np.percentile(level_db, 10, axis=-1),
                       rms.std(axis=-1) / (rms.mean(axis=-1) + 1e-9)], axis=-1)
    out = {"mfcc": _stats(mfcc), "chroma": _stats(chroma), "spectral": _stats(spectral), "rhythm": rhythm}
    return {k: v[0] for k, v in out.items()} if single else out


class DspModel(EmbeddingModel):
    """Timbre (MFCC), harmony (chroma), spectral shape and rhythm descriptors per window."""

    def __init__(self) -> None:
        self.info = ModelInfo(name="dsp", revision=f"v6-librosa-{librosa_version}", sample_rate=_SR,
                              layer_names=tuple(_GROUPS), layer_dims=tuple(_GROUPS.values()))

    def embed(self, windows: np.ndarray) -> list[np.ndarray]:
        """Descriptor groups for each window, as float32 [batch, dim] per group."""
        groups = describe(np.asarray(windows, dtype=np.float32))
        return [groups[g].astype(np.float32) for g in _GROUPS]
