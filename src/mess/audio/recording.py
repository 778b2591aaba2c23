"""Whether two files hold the same recording: a lossy copy (MP3, AAC, Opus of a FLAC), a resampled one, or one
with a few ms of encoder delay or silence added, but not another mix or render of the same piece.

Three spans of both files (:data:`SPAN_SECONDS` at fixed fractions of the first file's duration, moved where that
file sounds when it is silent there) are decoded at :data:`RATE` Hz and turned into log-mel spectrograms; each span
of one is slid against the other's within :data:`MAX_LAG` seconds. Two files are one recording when every span
correlates at its best lag (:data:`SAME_SCORE`) and their loudness keeps one ratio throughout (:data:`SAME_LEVEL_DB`:
another mix of the same stems rides the levels differently). Thresholds were calibrated on the development
soundtracks (notes/same_recording_session33.md, notes/recording_session34.md). Nothing is stored or extracted:
callers check only pairs that are already close in embedding space; a file's decoded spans are kept in the process
(by path and its stamp: size, mtime, inode, ctime) for the files it meets next.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from mess.audio.spectrum import stft
from mess.constants import file_stamp

RATE = 8000  # Hz: the band every lossy codec keeps at its lowest rates
SPAN_SECONDS = 8.0  # of each span compared
AT_FRACTIONS = (0.2, 0.5, 0.8)  # where the spans start, as fractions of the first file's duration
MAX_LAG = 1.5  # seconds either way: encoder delay, padding, a trimmed lead-in
DURATION_TOLERANCE = 1.0  # seconds the two durations may differ
MIN_SPAN = 3.0  # seconds: shorter files are not compared
SAME_SCORE = 0.95  # the lowest span's correlation at its best lag from which two files may be one recording
SAME_LEVEL_DB = 1.0  # and the most their loudness may drift apart (another mix of the same stems drifts more)
SILENT_DB = -60.0  # dBFS: a half second quieter than this is silence, where the first file's spans are not placed
_STEP = 0.25  # seconds: durations are rounded down to a multiple before spans are placed, so that files of nearly one
# length (previews, renders, a recording's copies) are decoded at the same places: once each, whatever they meet
_BLOCK = 0.5  # seconds of each level compared with SILENT_DB, and the grid of spans moved off silence
_N_FFT, _HOP, _BANDS = 512, 128, 40
_FLOOR_DB = 60.0  # log-mel values more than this below the span's loudest are clipped (silence, codec noise)
_LEVEL_RANGE_DB = 30.0  # frames this far below the loudest have no say in the loudness drift
_LEVEL_FRAMES = 32  # frames (0.5 s) a level is averaged over
_LAG_FRAMES = int(MAX_LAG * RATE / _HOP)  # frames either way: no more than MAX_LAG, which the spans keep clear of


@dataclass(frozen=True)
class RecordingMatch:
    """The verdict on two files and its evidence: ``score`` (the lowest correlation at its best lag of the spans
    compared, which stop at the first under :data:`SAME_SCORE`; NaN when not compared), ``lag`` (seconds the second
    file runs late), ``level_drift`` (dB the loudness of the two drifts apart across the spans, its 90th
    percentile), ``durations`` and ``reason`` in words."""

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


@dataclass(frozen=True)
class FirstSpans:
    """A first file's side of :func:`same_recording`, made by :func:`first_spans` where the file may be decoded (an
    upload's, in the server's embedding process) and compared where it may not: its ``duration``, where its spans
    would fall (``starts``) and where they fell (``places``: moved off silence by :func:`place`), the floored log-mel
    spectrogram of each span there (``fixed``: place -> [frames, bands]); ``error``: why there are none (the reason
    to give)."""

    duration: float = 0.0
    starts: tuple[float, ...] = ()
    places: tuple[float, ...] = ()
    fixed: dict[float, np.ndarray] = field(default_factory=dict)
    error: str | None = None


def first_spans(path: str | Path) -> FirstSpans:
    """The :class:`FirstSpans` of ``path``: its three spans decoded and placed (none for a file too short to compare);
    never raises for bad audio (``error`` says why)."""
    from mess.audio.decode import AudioError

    path = Path(path)
    try:
        duration = _duration(path)
        starts, span = span_starts(duration)
        if span < MIN_SPAN:
            return FirstSpans(duration, tuple(starts))
        places = [place(path, duration, start) for start in starts]
        return FirstSpans(duration, tuple(starts), tuple(places), {p: _fixed(path, p, span) for p in places})
    except (AudioError, OSError) as exc:
        return FirstSpans(error=str(exc))


def same_recording(a: str | Path | FirstSpans, b: str | Path) -> RecordingMatch:
    """Whether ``a`` (a file, or the :func:`first_spans` of one) and ``b`` are the same recording. Files that cannot
    be read, or whose durations differ by more than :data:`DURATION_TOLERANCE`, are not (the reason says which);
    never raises for bad audio."""
    from mess.audio.decode import AudioError  # here: only a comparison made loads the decoders

    a = a if isinstance(a, FirstSpans) else Path(a)
    b = Path(b)
    nan = float("nan")
    try:
        if isinstance(a, FirstSpans) and a.error is not None:
            raise AudioError(a.error)
        durations = (a.duration if isinstance(a, FirstSpans) else _duration(a), _duration(b))
    except (AudioError, OSError) as exc:
        return RecordingMatch(False, nan, 0.0, nan, (0.0, 0.0), f"not compared: {exc}")
    if abs(durations[0] - durations[1]) > DURATION_TOLERANCE:
        return RecordingMatch(False, nan, 0.0, nan, durations,
                              f"durations differ: {durations[0]:.1f} s and {durations[1]:.1f} s")
    starts, span = span_starts(durations[0])
    if span < MIN_SPAN:
        return RecordingMatch(False, nan, 0.0, nan, durations, f"too short to compare ({min(durations):.1f} s)")
    placed: list[float] = []  # where the spans compared fell in ``a``

    def placing() -> Iterator[float]:
        for i, start in enumerate(starts):
            placed.append(a.places[i] if isinstance(a, FirstSpans) else place(a, durations[0], start))
            yield placed[-1]

    try:
        score, lag, drift = compare(spans(a, b, placing(), span), stop_below=SAME_SCORE)
    except (AudioError, OSError) as exc:
        return RecordingMatch(False, nan, 0.0, nan, durations, f"not compared: {exc}")
    same = score >= SAME_SCORE and drift <= SAME_LEVEL_DB
    verdict = "same recording" if same else "different recordings"
    moved = sum(p != s for p, s in zip(placed, starts, strict=False))
    return RecordingMatch(same, score, lag, drift, durations, f"{verdict}: correlation {score:.3f} at {lag:+.2f} s, "
                          f"loudness drift {drift:.1f} dB over {len(placed)} of {len(starts)} spans of {span:.0f} s"
                          + (f", {moved} moved off silence" if moved else ""))


def compared(a: str | FirstSpans, a_duration: float | None, b: str, b_duration: float | None) -> RecordingMatch | None:
    """:func:`same_recording` of ``a`` (a file, or the :func:`first_spans` of one) and file ``b`` when both are there
    and their catalogued durations agree as a recording's copies do (either unknown: :func:`same_recording` reads the
    files' own); None, without decoding, otherwise."""
    if a_duration and b_duration and abs(a_duration - b_duration) > DURATION_TOLERANCE:
        return None
    if not ((isinstance(a, FirstSpans) or Path(a).is_file()) and Path(b).is_file()):
        return None
    return same_recording(a, b)


def span_starts(duration: float) -> tuple[list[float], float]:
    """(where the spans compared start, their length) in seconds, for a first file of ``duration`` seconds: at
    :data:`AT_FRACTIONS` of it (rounded down to a multiple of :data:`_STEP`, so that files of nearly one length share
    their spans), within :func:`_span_range`."""
    span, first, last = _span_range(duration)
    rounded = _rounded(duration)
    return [min(max(first, f * rounded), last) for f in AT_FRACTIONS], span


def place(path: Path, duration: float, start: float) -> float:
    """Where the span at ``start`` (one of :func:`span_starts` for ``duration``) of the file at ``path`` is
    compared: there, or, when it is silent in part (a half second under :data:`SILENT_DB`: a hidden track after
    minutes of silence, a long pause), at the nearest start on a half-second grid, within the same range, from
    which the file sounds throughout; left where no start does. The second file is read at the same place: the
    first file's content decides, and each file is decoded once, whatever it meets."""
    stamp = _stamp(path)
    span = span_starts(duration)[1]
    if not (_decoded(path, stamp, start, span).levels < SILENT_DB).any():
        return start
    grid = _sounding(path, stamp, duration)
    return float(grid[np.argmin(np.abs(grid - start))]) if grid.size else start


def spans(a: Path | FirstSpans, b: Path, starts: Iterable[float],
          seconds: float) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each of ``starts`` in turn, decoded when it is reached: the log-mel spectrograms [frames, bands] (dB,
    floored :data:`_FLOOR_DB` under each one's loudest) of ``a``'s span of ``seconds`` there (made already when ``a``
    is its :class:`FirstSpans`) and of ``b``'s, :data:`MAX_LAG` longer at both ends."""
    for start in starts:
        fixed = a.fixed[start] if isinstance(a, FirstSpans) else _fixed(a, start, seconds)
        yield fixed, _floored(_decoded(b, _stamp(b), start, seconds).log_mel)


def _fixed(path: Path, start: float, seconds: float) -> np.ndarray:
    """The floored log-mel spectrogram of ``path``'s span of ``seconds`` at ``start``, as the first file."""
    frames = 1 + round(seconds * RATE) // _HOP
    return _floored(_decoded(path, _stamp(path), start, seconds).log_mel[_LAG_FRAMES:_LAG_FRAMES + frames])


def compare(pairs: Iterable[tuple[np.ndarray, np.ndarray]],
            stop_below: float = -np.inf) -> tuple[float, float, float]:
    """(the lowest span's correlation at its best lag, the median of the lags in seconds, the loudness drift in dB)
    of spans of one file against the longer spans of the other (``pairs``), up to the first whose correlation is
    under ``stop_below``: the rest are not decoded."""
    scores, lags, level = [], [], []
    for x, y in pairs:
        score, at = best_lag(x, y)
        scores.append(score)
        lags.append(at - _LAG_FRAMES)
        level.append(_loudness(y[at:at + len(x)]) - _loudness(x))
        if score < stop_below:
            break
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


def _span_range(duration: float) -> tuple[float, float, float]:
    """(the spans' length, their earliest start, their latest) in seconds for a first file of ``duration`` (rounded
    down to a multiple of :data:`_STEP`): clear of either end by :data:`MAX_LAG` in a second file up to
    :data:`DURATION_TOLERANCE` shorter."""
    usable = _rounded(duration) - DURATION_TOLERANCE
    span = min(SPAN_SECONDS, usable - 2 * MAX_LAG - 0.2)
    return span, MAX_LAG, usable - span - MAX_LAG - 0.1


def _rounded(duration: float) -> float:
    """``duration`` rounded down to a multiple of :data:`_STEP`."""
    return math.floor(duration / _STEP) * _STEP


def _stamp(path: Path) -> str:
    """:func:`mess.constants.file_stamp` of ``path`` (size, mtime, inode, ctime): what its cached spans are kept for."""
    return file_stamp(path.stat())


@lru_cache(maxsize=16)
def _sounding(path: Path, stamp: str, duration: float) -> np.ndarray:
    """The starts (s), on a half-second grid within :func:`_span_range`, from which ``path`` as it is (``stamp``)
    sounds throughout a span: the whole file decoded (only for a file with a span silent in part), its levels taken
    chunk by chunk (an hour's samples are never held: 115 MB at :data:`RATE`)."""
    from mess.audio.decode import reduce_audio

    span, first, last = _span_range(duration)
    sounds = (reduce_audio(path, RATE, _chunk_levels) >= SILENT_DB).astype(np.float64)
    blocks = math.ceil(span / _BLOCK)
    grid = np.flatnonzero(np.convolve(sounds, np.ones(blocks), "valid") == blocks) * _BLOCK
    return grid[(grid >= first) & (grid <= last)]


def _chunk_levels(chunks: Iterator[np.ndarray]) -> np.ndarray:
    """:func:`_levels` of the audio that ``chunks`` make up, each block's as if they were joined."""
    n = int(_BLOCK * RATE)
    rest = np.zeros(0, np.float32)
    levels = [np.zeros(0)]
    for chunk in chunks:
        joined = np.concatenate([rest, chunk])
        whole = len(joined) // n * n
        levels.append(_levels(joined[:whole]))
        rest = joined[whole:]
    return np.concatenate(levels)


@dataclass(frozen=True)
class _Decoded:
    """A file's span as compared: ``log_mel`` [frames, bands] (dB, unfloored) with :data:`MAX_LAG` more at both
    ends (the padding serves the file as the second one), ``levels`` (dBFS of each half second of the span)."""

    log_mel: np.ndarray
    levels: np.ndarray


@lru_cache(maxsize=192)
def _decoded(path: Path, stamp: str, start: float, seconds: float) -> _Decoded:
    """The span of ``seconds`` at ``start`` of ``path`` as it is (``stamp``), decoded once for all the files it is
    compared with, first or second (a radio's candidate meets several kept tracks, then is kept)."""
    from mess.audio.decode import load_segments

    pad = _LAG_FRAMES * _HOP  # samples: a whole number of frames, so the span's frames fall on the padded ones'
    audio = load_segments(path, RATE, [start - pad / RATE], seconds + 2 * pad / RATE)[0]
    power = np.abs(stft(audio[None], _N_FFT, _HOP, "float32")[0]) ** 2
    return _Decoded(10 * np.log10(power @ _mel_bank() + 1e-10), _levels(audio[pad:pad + round(seconds * RATE)]))


def _floored(log_mel: np.ndarray) -> np.ndarray:
    return np.maximum(log_mel, log_mel.max() - _FLOOR_DB)


def _levels(audio: np.ndarray) -> np.ndarray:
    """dBFS (mean square) of each whole :data:`_BLOCK` of mono ``audio`` at :data:`RATE`."""
    n = int(_BLOCK * RATE)
    blocks = audio[:len(audio) // n * n].reshape(-1, n).astype(np.float64)
    return 10 * np.log10(np.mean(np.square(blocks), axis=1) + 1e-20)


def _duration(path: Path) -> float:
    """The duration ``probe`` reads; AudioError when it has none."""
    if not path.is_file():
        from mess.audio.decode import AudioError

        raise AudioError(f"{path}: not on disk")
    return _probed(path, _stamp(path))


@lru_cache(maxsize=256)
def _probed(path: Path, stamp: str) -> float:
    """:func:`_duration` of ``path`` as it is (``stamp``): probing an MP3 reads its packets (60 ms for 5 minutes)."""
    from mess.audio.decode import AudioError, probe

    if (seconds := probe(path).duration) <= 0:
        raise AudioError(f"{path}: its length is unknown without decoding it whole")
    return seconds


@lru_cache(maxsize=1)
def _mel_bank() -> np.ndarray:
    """[bins, bands] triangular filters evenly spaced on the mel scale (HTK's formula) from 0 to RATE / 2, unscaled."""
    import librosa  # here: the import costs a second that a process comparing no files should not pay

    return librosa.filters.mel(sr=RATE, n_fft=_N_FFT, n_mels=_BANDS, fmin=0.0, fmax=RATE / 2, htk=True, norm=None).T
