"""Proxy targets: musically named descriptors computed from audio with librosa.

Each target is one number per window, averaged per track over the same windows the
run's model saw, so a probe can ask "how well does this layer predict it?". Targets
are grouped into the aspects that search offers (``mess similar --aspect``).
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np

from mess.audio.jit_cache import ensure_warm
from mess.audio.windows import WindowPolicy

SAMPLE_RATE = 22050
N_FFT = 2048
HOP = 512
CQT_FMIN_MIDI = 24  # C1
CQT_BINS = 84  # seven octaves, one bin per semitone
ACTIVE_DB = 40.0  # frames within this many dB of the loudest count as sounding
SALIENCE_HARMONICS = (1, 2, 3, 4, 5, 6)
SALIENCE_WEIGHTS = (1.0, 0.8, 0.64, 0.51, 0.41, 0.33)
NOTE_FLOOR = 0.5  # a note: a salience peak at least this fraction of the frame's strongest ...
NOTE_DB = 20.0  # ... that is also a spectral peak within this many dB of the frame's loudest bin


@dataclass(frozen=True)
class Target:
    """One proxy target: its name, the aspect it belongs to, and what it means musically."""

    name: str
    aspect: str
    meaning: str


TARGETS: tuple[Target, ...] = (
    Target("mfcc1", "timbre", "1st MFCC: overall spectral tilt of the sound colour (dark vs. thin)"),
    Target("mfcc2", "timbre", "2nd MFCC: balance of low-mid vs. upper-mid energy in the spectral envelope"),
    Target("contrast", "timbre", "spectral contrast (dB): clear harmonic peaks vs. dense, smeared spectra"),
    Target("flatness", "timbre", "log10 spectral flatness: noise-like (high) vs. tone-like (low) sound"),
    Target("harmonic_ratio", "timbre", "harmonic share of HPSS energy: sustained vs. percussive articulation"),
    Target("centroid", "brightness", "log2 spectral centroid (Hz): perceived brightness"),
    Target("bandwidth", "brightness", "log2 spectral bandwidth (Hz): how widely energy spreads around the centroid"),
    Target("rolloff", "brightness", "log2 85% roll-off frequency (Hz): where the treble ends"),
    Target("zcr", "brightness", "zero-crossing rate: high-frequency and noisy content of the waveform"),
    Target("loudness", "dynamics", "energy-averaged RMS level of Hann-windowed frames while sounding (dB; 4.3 "
                                   "below the dBFS of the signal itself): how loud it is played"),
    Target("loudness_cv", "dynamics", "RMS coefficient of variation while sounding: how much the level moves"),
    Target("dynamic_range", "dynamics", "95th - 10th percentile frame level (dB): soft-to-loud span"),
    Target("onset_rate", "rhythm", "detected note onsets per second: rhythmic density"),
    Target("tempo", "rhythm", "log2 estimated tempo (BPM): speed of the beat"),
    Target("pulse_clarity", "rhythm", "peak onset autocorrelation at 30-240 BPM lags: how clear the pulse is"),
    Target("chroma_entropy", "harmony", "entropy (bits) of the pitch-class energy profile: few vs. many pitch classes"),
    Target("key_clarity", "harmony", "best correlation of the pitch-class profile with 24 Krumhansl-Kessler keys"),
    Target("fifths_x", "harmony", "tonal centroid on the circle of fifths, x (which key region)"),
    Target("fifths_y", "harmony", "tonal centroid on the circle of fifths, y (which key region)"),
    Target("pitch_height", "texture", "salience-weighted mean pitch of the sounding notes (MIDI number): register"),
    Target("pitch_range", "texture", "5th-95th percentile span of note pitches (semitones): how far the voices spread"),
    Target("polyphony", "texture", "notes (harmonic-salience peaks) per frame: how many notes sound at once"),
)
TARGET_NAMES: tuple[str, ...] = tuple(t.name for t in TARGETS)
ASPECTS: tuple[str, ...] = ("timbre", "brightness", "dynamics", "rhythm", "harmony", "texture")

_KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
_KEY_PROFILES = np.stack([np.roll(p, k) for p in (_KK_MAJOR, _KK_MINOR) for k in range(12)])


def aspect_targets(aspect: str) -> list[int]:
    """Indices into TARGETS of one aspect's targets."""
    return [i for i, t in enumerate(TARGETS) if t.aspect == aspect]


def window_targets(y: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """All proxy targets of one mono window, float64 [len(TARGETS)] in TARGETS order."""
    ensure_warm("probe-targets", lambda: _targets(_WARM_CLIP, SAMPLE_RATE))
    return _targets(np.asarray(y, dtype=np.float32), sr)


_WARM_CLIP = (0.3 * np.sin(2 * np.pi * 440.0 * np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE)
              * (1 + np.sign(np.sin(2 * np.pi * 2 * np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE)))).astype(np.float32)


def _targets(y: np.ndarray, sr: int) -> np.ndarray:
    if not y.any():  # digital silence sounds nothing: no level, pitch or timbre (not -200 dB, MIDI 0, 0 Hz)
        return np.full(len(TARGETS), np.nan)
    spec = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP))
    rms = librosa.feature.rms(S=spec, frame_length=N_FFT)[0]
    active = rms >= rms.max() * 10 ** (-ACTIVE_DB / 20)
    mel = librosa.feature.melspectrogram(S=spec**2, sr=sr)
    log_mel = librosa.power_to_db(mel)
    values = {
        **_timbre(spec, log_mel, active, sr),
        **_brightness(y, spec, active, sr),
        **_dynamics(rms, active),
        **_rhythm(log_mel, y.size / sr, sr),
        **_pitch(y, active, sr),
        "harmonic_ratio": _harmonic_ratio(mel),
    }
    return np.array([values[name] for name in TARGET_NAMES], dtype=np.float64)


def _timbre(spec: np.ndarray, log_mel: np.ndarray, active: np.ndarray, sr: int) -> dict[str, float]:
    mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=3)[:, active]
    flatness = librosa.feature.spectral_flatness(S=spec)[0, active]
    contrast = librosa.feature.spectral_contrast(S=spec, sr=sr)[:, active]
    return {"mfcc1": float(mfcc[1].mean()), "mfcc2": float(mfcc[2].mean()), "contrast": float(contrast.mean()),
            "flatness": float(np.log10(flatness.mean() + 1e-10))}


def _brightness(y: np.ndarray, spec: np.ndarray, active: np.ndarray, sr: int) -> dict[str, float]:
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=N_FFT, hop_length=HOP)[0, : spec.shape[1]]
    return {
        "centroid": float(np.log2(librosa.feature.spectral_centroid(S=spec, sr=sr)[0, active].mean() + 1.0)),
        "bandwidth": float(np.log2(librosa.feature.spectral_bandwidth(S=spec, sr=sr)[0, active].mean() + 1.0)),
        "rolloff": float(np.log2(librosa.feature.spectral_rolloff(S=spec, sr=sr)[0, active].mean() + 1.0)),
        "zcr": float(zcr[active[: zcr.size]].mean()),
    }


def _dynamics(rms: np.ndarray, active: np.ndarray) -> dict[str, float]:
    sounding = rms[active]
    level = 20 * np.log10(sounding + 1e-10)
    return {"loudness": float(10 * np.log10(np.mean(sounding**2) + 1e-20)),
            "loudness_cv": float(sounding.std() / (sounding.mean() + 1e-10)),
            "dynamic_range": float(np.percentile(level, 95) - np.percentile(level, 10))}


def _rhythm(log_mel: np.ndarray, seconds: float, sr: int) -> dict[str, float]:
    env = librosa.onset.onset_strength(S=log_mel, sr=sr, hop_length=HOP)
    onsets = librosa.onset.onset_detect(onset_envelope=env, sr=sr, hop_length=HOP)
    tempo = float(np.atleast_1d(librosa.feature.tempo(onset_envelope=env, sr=sr, hop_length=HOP))[0])
    ac = librosa.autocorrelate(env - env.mean())
    frames_per_second = sr / HOP
    lo, hi = int(0.25 * frames_per_second), min(int(2.0 * frames_per_second) + 1, ac.size)
    clarity = float(ac[lo:hi].max() / ac[0]) if ac[0] > 0 and hi > lo else 0.0
    return {"onset_rate": onsets.size / seconds, "tempo": float(np.log2(max(tempo, 1.0))), "pulse_clarity": clarity}


def _pitch(y: np.ndarray, active: np.ndarray, sr: int) -> dict[str, float]:
    fmin = float(librosa.midi_to_hz(CQT_FMIN_MIDI))
    cqt = np.abs(librosa.cqt(y, sr=sr, hop_length=HOP, fmin=fmin, n_bins=CQT_BINS))
    cqt = cqt[:, active[: cqt.shape[1]]]
    energy = (cqt**2).sum(axis=1)
    profile = librosa.filters.cq_to_chroma(CQT_BINS, bins_per_octave=12, fmin=fmin) @ energy
    p = profile / max(profile.sum(), 1e-20)
    fifths = librosa.feature.tonnetz(chroma=profile[:, None], sr=sr)[:2, 0]
    # harmonic summation gathers each note's partials at its fundamental, and a note must be a
    # spectral peak itself, so register and voice counts follow the notes, not the overtones
    salience = librosa.salience(cqt, freqs=librosa.cqt_frequencies(CQT_BINS, fmin=fmin), harmonics=SALIENCE_HARMONICS,
                                weights=SALIENCE_WEIGHTS, fill_value=0.0)
    notes = (librosa.util.localmax(salience, axis=0) & librosa.util.localmax(cqt, axis=0)
             & (salience >= salience.max(axis=0, keepdims=True) * NOTE_FLOOR)
             & (cqt >= cqt.max(axis=0, keepdims=True) * 10 ** (-NOTE_DB / 20)))
    per_pitch = np.where(notes, salience, 0.0).sum(axis=1)
    spread = np.cumsum(per_pitch) / max(per_pitch.sum(), 1e-20)
    return {
        "chroma_entropy": float(-(p * np.log2(p + 1e-12)).sum()),
        "key_clarity": _key_clarity(profile),
        "fifths_x": float(fifths[0]),
        "fifths_y": float(fifths[1]),
        "pitch_height": float((per_pitch * (CQT_FMIN_MIDI + np.arange(CQT_BINS))).sum() / max(per_pitch.sum(), 1e-20)),
        "pitch_range": float(np.searchsorted(spread, 0.95) - np.searchsorted(spread, 0.05)),
        "polyphony": float(notes.sum(axis=0).mean()),
    }


def _key_clarity(profile: np.ndarray) -> float:
    """Best correlation of a pitch-class profile with the key profiles; NaN (undefined) for a flat one: silence."""
    if np.ptp(profile) == 0:
        return float("nan")
    return float(np.corrcoef(np.vstack([profile, _KEY_PROFILES]))[0, 1:].max())


def _harmonic_ratio(mel: np.ndarray) -> float:
    harmonic, percussive = librosa.decompose.hpss(mel, kernel_size=31)
    total = harmonic.sum() + percussive.sum()
    return float(harmonic.sum() / total) if total > 0 else 0.5


def audio_targets(audio: np.ndarray, policy: WindowPolicy, sr: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
    """(window starts in seconds, targets [n_windows, len(TARGETS)]) over the policy's windows."""
    starts, windows = policy.cut(audio, sr)
    return starts, np.stack([window_targets(w, sr) for w in windows])
