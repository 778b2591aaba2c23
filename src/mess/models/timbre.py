"""The timbre layer: the MFCC Gaussian up to 16 kHz of each window, and of all a track's analysed frames.

musicnn hears 16 kHz audio, nothing above 8 kHz; on real soundtracks the spectral envelope up to 16 kHz beside
its layers finds more of a track's own soundtrack and composer (docs/quality.md). Per window: 20 MFCCs from 40
Slaney mel bands 0-16 kHz of a 44.1 kHz STFT (2048 points, hop 1024), in dB floored 80 dB below the window's
peak. A window's vector is the Gaussian of its frames in log-Euclidean coordinates: the mean (20), then the upper
triangle of logm(covariance + RIDGE I) (210), so that the distance between two vectors is the log-Euclidean
distance between the Gaussians (a single-Gaussian timbre model). A track's vector (:func:`pool`) is the Gaussian
of all its windows' frames together, not the mean of the windows' vectors: the spread between windows is part
of a track's timbre (on the soundtracks, beside the network layers, its weight chosen by leave-one-game-out: mAP
x1.049 over the network layers alone, against x1.009 for the mean of the windows' vectors in a prototype;
docs/quality.md).
"""

from __future__ import annotations

import numpy as np

from mess.audio.spectrum import stft

LAYER = "timbre"
REVISION = "timbre-v1"  # part of the ensemble's revision: a change to what this layer computes changes it
SAMPLE_RATE = 44100
N_FFT = 2048
HOP = 1024
N_MELS = 40
F_MAX = 16000.0
N_MFCC = 20
TOP_DB = 80.0
RIDGE = 1e-3  # added to a covariance's diagonal before its logarithm (a silent window's covariance is 0)
DIM = N_MFCC + N_MFCC * (N_MFCC + 1) // 2
_UPPER = np.triu_indices(N_MFCC)


def _dct_basis() -> np.ndarray:
    """The first ``N_MFCC`` rows of the orthonormal DCT-II of ``N_MELS`` points: [N_MFCC, N_MELS] float64."""
    k, n = np.arange(N_MFCC)[:, None], np.arange(N_MELS)[None, :]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2 * N_MELS)) * np.sqrt(2.0 / N_MELS)
    basis[0] /= np.sqrt(2.0)
    return basis


_DCT = _dct_basis()


def mfcc(windows: np.ndarray, mel_basis: np.ndarray) -> np.ndarray:
    """MFCCs of 44.1 kHz windows [batch, samples]: [batch, frames, N_MFCC] float64 (librosa's
    ``power_to_db`` of the mel power, top_db 80 per window, then the orthonormal DCT-II).

    ``mel_basis`` is librosa's ``filters.mel(sr=44100, n_fft=2048, n_mels=40, fmax=16000)``.
    """
    mel = np.stack([(np.abs(stft(window[None], N_FFT, HOP, dtype="float32")[0]) ** 2) @ mel_basis.T
                    for window in np.atleast_2d(windows)])  # one window at a time: its spectrogram is 10 MB
    db = 10.0 * np.log10(np.maximum(mel.astype(np.float64), 1e-10))
    db = np.maximum(db, db.max(axis=(1, 2), keepdims=True) - TOP_DB)
    return db @ _DCT.T


def window_vectors(windows: np.ndarray, mel_basis: np.ndarray) -> np.ndarray:
    """The timbre layer of 44.1 kHz windows [batch, samples]: [batch, DIM] float32, each window's Gaussian."""
    m = mfcc(windows, mel_basis)
    mean = m.mean(axis=1)
    centred = m - mean[:, None, :]
    return _log_euclidean(mean, np.einsum("bti,btj->bij", centred, centred) / m.shape[1])


def pool(vectors: np.ndarray) -> np.ndarray:
    """A track's timbre vector [DIM] from its equal-length windows' vectors [windows, DIM]: the Gaussian of all
    their frames (the mean of the windows' covariances plus the spread of their means), float32."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    means = vectors[:, :N_MFCC]
    logm = np.zeros((len(vectors), N_MFCC, N_MFCC))
    logm[:, *_UPPER] = vectors[:, N_MFCC:]
    logm = logm + np.triu(logm, 1).swapaxes(1, 2)
    values, basis = np.linalg.eigh(logm)
    covs = (basis * np.exp(values)[:, None, :]) @ basis.swapaxes(1, 2) - RIDGE * np.eye(N_MFCC)
    mean = means.mean(axis=0)
    spread = (means - mean).T @ (means - mean) / len(vectors)
    return _log_euclidean(mean[None], (covs.mean(axis=0) + spread)[None])[0]


def _log_euclidean(mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """[n, N_MFCC] means and [n, N_MFCC, N_MFCC] covariances -> [n, DIM]: the mean, then the upper triangle of
    logm(cov + RIDGE I), float32."""
    values, basis = np.linalg.eigh(cov + RIDGE * np.eye(N_MFCC))
    logm = (basis * np.log(np.maximum(values, RIDGE))[:, None, :]) @ basis.swapaxes(1, 2)
    return np.concatenate([mean, logm[:, *_UPPER]], axis=1).astype(np.float32)
