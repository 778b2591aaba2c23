"""Whether two files hold the same recording: a lossy copy (MP3, AAC, Opus of a FLAC), a resampled one, or one
with a few ms of encoder delay or silence added, but not another mix or render of the same piece.

Three spans of both files (:data:`SPAN_SECONDS` at fixed fractions of the first file's duration) are decoded at
:data:`RATE` Hz and turned into log-mel spectrograms; each span of one is slid against the other's within
:data:`MAX_LAG` seconds. Two files are one recording when every span correlates at its best lag
(:data:`SAME_SCORE`) and their loudness keeps one ratio throughout (:data:`SAME_LEVEL_DB`: another mix of the same
stems rides the levels differently). Thresholds were calibrated on the development soundtracks
(notes/same_recording_session33.md). Nothing is stored or extracted: callers check only pairs that are already
close in embedding space.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from mess.audio.spectrum import stft

RATE = 8000  # Hz: the band every lossy codec keeps at its lowest rates
SPAN_SECONDS = 8.0  # of each span compared
AT_FRACTIONS = (0.2, 0.5, 0.8)  # where the spans start, as fractions of the first file's duration
MAX_LAG = 1.5  # seconds either way: encoder delay, padding, a trimmed lead-in
DURATION_TOLERANCE = 1.0  # seconds the two durations may differ
MIN_SPAN = 3.0  # seconds: shorter files are not compared
SAME_SCORE = 0.95  # the lowest span's correlation at its best lag from which two files may be one recording
SAME_LEVEL_DB = 1.0  # and the most their loudness may drift apart (another mix of the same stems drifts more)
_N_FFT, _HOP, _BANDS = 512, 128, 40
_FLOOR_DB = 60.0  # log-mel values more than this below the span's loudest are clipped (silence, codec noise)
_LEVEL_RANGE_DB = 30.0  # frames this far below the loudest have no say in the loudness drift
_LEVEL_FRAMES = 32  # frames (0.5 s) a level is averaged over
_LAG_FRAMES = int(MAX_LAG * RATE / _HOP)  # frames either way: no more than MAX_LAG, which the spans keep clear of


@dataclass(frozen=True)
class RecordingMatch:
    """The verdict on two files and its evidence: ``score`` (the lowest span's correlation at its best lag, NaN
    when not compared), ``lag`` (seconds the second file runs late), ``level_drift`` (dB the loudness of the two
    drifts apart across the spans, its 90th percentile), ``durations`` and ``reason`` in words."""

    same: bool
    score: float
    lag: float
    level_drift: float
    durations: tuple[float, float]
    reason: str

    def to_dict(self) -> dict:
        """JSON-ready form."""
        def num(x: float, digits: int) -> float | None:
            return None if np.isnan(x) else round(x, digits)

        return {"same": self.same, "score": num(self.score, 4), "lag": round(self.lag, 3),
                "level_drift": num(self.level_drift, 2), "durations": [round(d, 3) for d in self.durations],
                "reason": self.reason}


def same_recording(a: str | Path, b: str | Path) -> RecordingMatch:
    """Whether ``a`` and ``b`` are the same recording. Files that cannot be read, or whose durations differ by more
    than :data:`DURATION_TOLERANCE`, are not (the reason says which); never raises for bad audio."""
    from mess.audio.decode import AudioError  # here: only a comparison made loads the decoders

    a, b = Path(a), Path(b)
    nan = float("nan")
    try:
        durations = (_duration(a), _duration(b))
    except (AudioError, OSError) as exc:
        return RecordingMatch(False, nan, 0.0, nan, (0.0, 0.0), f"not compared: {exc}")
    if abs(durations[0] - durations[1]) > DURATION_TOLERANCE:
        return RecordingMatch(False, nan, 0.0, nan, durations,
                              f"durations differ: {durations[0]:.1f} s and {durations[1]:.1f} s")
    starts, span = span_starts(durations[0])
    if span < MIN_SPAN:
        return RecordingMatch(False, nan, 0.0, nan, durations, f"too short to compare ({min(durations):.1f} s)")
    try:
        score, lag, drift = compare(*spans(a, b, starts, span))
    except (AudioError, OSError) as exc:
        return RecordingMatch(False, nan, 0.0, nan, durations, f"not compared: {exc}")
    same = score >= SAME_SCORE and drift <= SAME_LEVEL_DB
    verdict = "same recording" if same else "different recordings"
    return RecordingMatch(same, score, lag, drift, durations, f"{verdict}: correlation {score:.3f} at {lag:+.2f} s, "
                          f"loudness drift {drift:.1f} dB over {len(starts)} spans of {span:.0f} s")


def compared(a: str, a_duration: float | None, b: str, b_duration: float | None) -> RecordingMatch | None:
    """:func:`same_recording` of files ``a`` and ``b`` when both are on disk and their catalogued durations agree as a
    recording's copies do (either unknown: :func:`same_recording` reads the files' own); None, without decoding,
    otherwise."""
    if a_duration and b_duration and abs(a_duration - b_duration) > DURATION_TOLERANCE:
        return None
    if not (Path(a).is_file() and Path(b).is_file()):
        return None
    return same_recording(a, b)


def span_starts(duration: float) -> tuple[list[float], float]:
    """(where the spans compared start, their length) in seconds, for a first file of ``duration`` seconds (so its
    spans are decoded once for every file it is compared with): at :data:`AT_FRACTIONS` of it, clear of either end
    by :data:`MAX_LAG` in a second file up to :data:`DURATION_TOLERANCE` shorter."""
    usable = duration - DURATION_TOLERANCE
    span = min(SPAN_SECONDS, usable - 2 * MAX_LAG - 0.2)
    return [min(max(MAX_LAG, f * duration), usable - span - MAX_LAG - 0.1) for f in AT_FRACTIONS], span


def spans(a: Path, b: Path, starts: list[float], seconds: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Log-mel spectrograms [frames, bands] of ``a``'s spans of ``seconds`` at ``starts`` and of ``b``'s, each
    :data:`MAX_LAG` longer at both ends."""
    pad = _LAG_FRAMES * _HOP / RATE
    return _log_mels(a, starts, seconds), _log_mels(b, [s - pad for s in starts], seconds + 2 * pad)


def compare(fixed: list[np.ndarray], sliding: list[np.ndarray]) -> tuple[float, float, float]:
    """(the lowest span's correlation at its best lag, the median of the lags in seconds, the loudness drift in dB)
    of spans of one file (``fixed``) against the longer spans of the other."""
    scores, lags, level = [], [], []
    for x, y in zip(fixed, sliding, strict=True):
        score, at = best_lag(x, y)
        scores.append(score)
        lags.append(at - _LAG_FRAMES)
        level.append(_loudness(y[at:at + len(x)]) - _loudness(x))
    diff = np.concatenate(level)
    keep = np.isfinite(diff)
    drift = np.abs(diff[keep] - np.median(diff[keep])) if keep.any() else np.array([np.inf])
    return min(scores), float(np.median(lags)) * _HOP / RATE, float(np.percentile(drift, 90))


def best_lag(fixed: np.ndarray, sliding: np.ndarray) -> tuple[float, int]:
    """(the highest Pearson correlation of ``fixed`` [frames, bands] with an equal run of ``sliding``'s frames,
    the frame of ``sliding`` where that run starts)."""
    n = fixed.size
    x = fixed - fixed.mean()
    # x sums to 0, so a run's mean drops out of the products; its spread comes from running sums
    products = sum(np.correlate(sliding[:, b], x[:, b], "valid") for b in range(x.shape[1]))
    totals = np.concatenate([[0.0], np.cumsum(sliding.sum(axis=1, dtype=np.float64))])
    squares = np.concatenate([[0.0], np.cumsum(np.square(sliding, dtype=np.float64).sum(axis=1))])
    run = len(fixed)
    sums, sums2 = totals[run:] - totals[:-run], squares[run:] - squares[:-run]
    spread = np.sqrt(np.maximum(sums2 - sums**2 / n, 1e-12)) * max(float(np.linalg.norm(x)), 1e-12)
    scores = np.asarray(products) / spread
    best = int(np.argmax(scores))
    return float(scores[best]), best


def _loudness(log_mel: np.ndarray) -> np.ndarray:
    """Each frame's level in dB (its bands' energies summed over :data:`_LEVEL_FRAMES` around it), NaN for frames
    :data:`_LEVEL_RANGE_DB` below the loudest (quiet frames: codec noise and rounding). Averaged over half a second,
    as a mix rides levels, so that an onset a few ms off the frame grid (a copy shifted by 20 ms) does not count."""
    power = np.convolve(np.sum(10 ** (log_mel / 10), axis=1), np.full(_LEVEL_FRAMES, 1 / _LEVEL_FRAMES), "same")
    level = 10 * np.log10(np.maximum(power, 1e-10))
    return np.where(level >= level.max() - _LEVEL_RANGE_DB, level, np.nan)


def _log_mels(path: Path, starts: list[float], seconds: float) -> list[np.ndarray]:
    """[frames, bands] log-mel energies (dB, floored :data:`_FLOOR_DB` below the loudest) of ``seconds`` of
    ``path`` from each of ``starts``; kept for the file as it is (a kept track meets many candidates)."""
    stat = path.stat()
    return _stamped_log_mels(path, (stat.st_size, stat.st_mtime_ns, stat.st_ino), tuple(starts), seconds)


@lru_cache(maxsize=32)
def _stamped_log_mels(path: Path, stamp: tuple[int, int, int], starts: tuple[float, ...],
                      seconds: float) -> list[np.ndarray]:
    """:func:`_log_mels` of ``path`` as it is (``stamp``: size, mtime, inode)."""
    from mess.audio.decode import load_segments

    audio = load_segments(path, RATE, starts, seconds)
    power = np.abs(stft(audio, _N_FFT, _HOP, "float32")) ** 2
    db = 10 * np.log10(power @ _mel_bank() + 1e-10)
    return [np.maximum(d, d.max() - _FLOOR_DB) for d in db]


def _duration(path: Path) -> float:
    """The duration ``probe`` reads; AudioError when it has none."""
    from mess.audio.decode import AudioError, probe

    if not path.is_file():
        raise AudioError(f"{path}: not on disk")
    if (seconds := probe(path).duration) <= 0:
        raise AudioError(f"{path}: its length is unknown without decoding it whole")
    return seconds


@lru_cache(maxsize=1)
def _mel_bank() -> np.ndarray:
    """[bins, bands] triangular filters evenly spaced on the mel scale (HTK's formula) from 0 to RATE / 2, unscaled."""
    import librosa  # here: the import costs a second that a process comparing no files should not pay

    return librosa.filters.mel(sr=RATE, n_fft=_N_FFT, n_mels=_BANDS, fmin=0.0, fmax=RATE / 2, htk=True, norm=None).T
