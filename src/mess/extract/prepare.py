"""Per-file work before inference: fingerprint, tags, decode, validate, window."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soxr

from mess.audio.decode import AudioError, load_audio, load_segments, probe
from mess.audio.discover import content_hash, open_for_writing
from mess.audio.incomplete import cut_short
from mess.audio.tags import read_tags
from mess.audio.windows import WindowPolicy
from mess.constants import file_stamp, stamp_matches

log = logging.getLogger(__name__)

SILENCE_PEAK = 1e-4  # -80 dBFS
# Silence is judged below 8 kHz, at whatever rate a model decodes: a lossy encoder's noise above it peaks near
# -79 dBFS in Wesnoth's silence.ogg at 44.1 kHz (-97 at 16 kHz), so a 44.1 kHz model embedded what others refused.
SILENCE_BAND_RATE = 16000
QUIET_PEAK = 1e-3  # -60 dBFS: a full-band peak below it is looked at again in that band
MAX_PEAK = 1e3  # +60 dBFS: float samples beyond this are not audio anyone mastered
RINGING = 256  # samples at each end of a window where the resampler rings at the step into a constant offset
DURATION_TOLERANCE = 0.5  # seconds a header's duration may be off before the decoded length replaces it
# a file open for writing by another process and written this recently is still being written (a download); one
# held open for writing but untouched longer (a torrent seeding it, say) is read
WRITING_WINDOW = 300.0


@dataclass
class FileRecord:
    """What the catalog stores about a file, gathered without decoding it."""

    path: Path
    content_hash: str
    size: int
    mtime: float
    info: dict[str, object]
    tags: dict[str, str | None]
    stamp: str = ""  # size, mtime, inode, ctime: unchanged stamp, unchanged content


@dataclass
class Windows:
    """A decoded track cut into equal-length windows at the model's rate."""

    record: FileRecord
    starts: np.ndarray  # seconds
    audio: np.ndarray  # [n_windows, samples]
    warnings: list[str] = field(default_factory=list)
    duration: float | None = None  # the decoded length, when the whole file was decoded and its header said otherwise


def inspect_file(path: Path, known: tuple[str, str] | None = None, *, arriving: bool = True) -> FileRecord:
    """Stat, hash (reusing ``known`` = (hash, stamp) when the file's stamp is unchanged), probe, read tags; AudioError
    for a file still being written (a download: :func:`_check_not_being_written`), and with ``arriving`` for one
    still arriving (:func:`_check_arrived`; without it, as for an upload, what it holds is embedded, warning)."""
    stat = path.stat()
    _check_not_being_written(path, stat.st_mtime)
    if arriving:
        _check_arrived(path, stat.st_mtime)
    stamp = file_stamp(stat)
    digest = known[0] if known is not None and stamp_matches(stat, known[1]) else content_hash(path)
    _check_unchanged(path, stamp)  # the hash is of the file the stamp describes
    try:
        meta = probe(path)
        info: dict[str, object] = {
            "duration": meta.duration,
            "sample_rate": meta.sample_rate,
            "channels": meta.channels,
        }
    except AudioError:
        info = {}
    return FileRecord(path, digest, stat.st_size, stat.st_mtime, info, read_tags(path), stamp)


def decode_windows(record: FileRecord, sample_rate: int, policy: WindowPolicy, band_hz: float = 0.0) -> Windows:
    """Decode what the window policy analyses, reject unusable audio with a clear reason, cut into windows.

    A file longer than one window (by its header) is read by seeking to each window, so
    time and memory follow the audio analysed, not the file's length; a file of one
    window or less, or one whose seeks fail, is decoded whole, as before. A file changed
    since :func:`inspect_file` (before or during decoding) is refused: its samples would be
    stored under the content hash of what it held before; so is one another program holds open for writing, as
    :func:`inspect_file` refuses it (:func:`_check_not_being_written`). A file sampled below half the model's rate
    (its header says) is used, with a warning: the model hears almost nothing of its band. For a model that reads up to
    ``band_hz`` (the default musicnn: 16 kHz for its timbre layer, 8 kHz for its networks) the warning compares the
    file's band with that: below half of it the vectors say little, below all of it the timbre differs.
    """
    _check_unchanged(record.path, record.stamp)
    windows = _decode(record, sample_rate, policy)
    _check_unchanged(record.path, record.stamp)
    _check_not_being_written(record.path, record.mtime)  # opened by a writer while it was decoded
    short = cut_short(record.path)
    if short:  # cut short for good (an older file, see _check_arrived), or a single file asked about
        windows.warnings.append(f"{record.path}: cut short: {short}; embedded as far as it goes")
    rate = record.info.get("sample_rate")
    if not isinstance(rate, int) or rate <= 0:
        return windows
    if not band_hz and rate < sample_rate / 2:
        windows.warnings.append(f"{record.path}: sampled at {rate} Hz, below half the model's {sample_rate} Hz: "
                                f"it hears nothing above {rate / 2:g} Hz, so its vectors say little")
    elif rate / 2 < band_hz:  # a model that says which band it reads (the default musicnn: 16 kHz, 8 for its networks)
        held = f"{record.path}: sampled at {rate} Hz, it holds nothing above {rate / 2:g} Hz of the {band_hz:g} Hz"
        windows.warnings.append(f"{held} the model reads, so its vectors say little" if rate < band_hz else
                                f"{held} the model reads: its timbre compares poorly with full-band files")
    return windows


def _check_unchanged(path: Path, stamp: str) -> None:
    """AudioError when the file's stamp is no longer ``stamp`` (written, replaced or removed since)."""
    try:
        now = file_stamp(path.stat())
    except FileNotFoundError:
        now = ""
    if stamp and now != stamp:
        raise AudioError(f"{path}: the file changed while it was being read; run `mess extract` again")


def _check_not_being_written(path: Path, mtime: float) -> None:
    """AudioError when another process has the file open for writing and wrote it in the last
    :data:`WRITING_WINDOW` seconds: a download paused between chunks reads as a complete, shorter file, and its
    vectors would be a part's (the stamp checks see only writes made while the file is read)."""
    if abs(time.time() - mtime) < WRITING_WINDOW and open_for_writing(path):
        raise AudioError(f"{path}: another program is writing it (a download in progress?); left as it is: run "
                         "the command again once it is written")


def _check_arrived(path: Path, mtime: float) -> None:
    """AudioError for a file whose container declares more audio than it holds (:func:`cut_short`) and that was
    written in the last :data:`WRITING_WINDOW` seconds: a download whose writer closes the file between chunks, or
    a copy, still arriving (the next run finds it whole; its vectors now would be a part's). An older one is a file
    cut short for good, which waiting will not mend: it is embedded as far as it goes, with a warning."""
    short = cut_short(path)
    if short and abs(time.time() - mtime) < WRITING_WINDOW:
        raise AudioError(f"{path}: incomplete: {short} (a download in progress?); left as it is: run the command "
                         "again once it is whole")


def _decode(record: FileRecord, sample_rate: int, policy: WindowPolicy) -> Windows:
    if record.size == 0:  # FFmpeg's words for it: "[Errno 1094995529] Invalid data found when processing input"
        raise AudioError(f"{record.path}: empty file (0 bytes)")
    duration = float(record.info.get("duration") or 0.0)  # type: ignore[arg-type]
    if duration > policy.window_seconds:
        try:
            return _seek_windows(record, sample_rate, policy, duration)
        except AudioError as exc:
            log.info("%s; decoding the whole file", exc)
    try:
        audio = load_audio(record.path, sample_rate, max_seconds=policy.max_decode_seconds)
    except AudioError as exc:
        raise _said_cut_short(record.path, exc) from None
    warnings = []
    seconds = audio.size / sample_rate
    if seconds >= policy.max_decode_seconds:
        warnings.append(_too_long(record, policy))
    if seconds < policy.min_seconds:
        shown = math.floor(seconds * 100) / 100  # rounded, a clip one sample short read '1.00 s; the minimum is 1.00 s'
        raise _said_cut_short(record.path, AudioError(f"{record.path}: too short ({shown:.2f} s; the minimum is "
                                                      f"{policy.min_seconds:.2f} s)"))
    _check_level(record, audio, sample_rate)
    starts, windows = policy.cut(audio, sample_rate)
    decoded = seconds if seconds < policy.max_decode_seconds and abs(seconds - duration) > DURATION_TOLERANCE else None
    return Windows(record, starts, windows, warnings, decoded)


def _said_cut_short(path: Path, exc: AudioError) -> AudioError:
    """``exc`` (a decoder's refusal, or too short) saying why where the file is cut short (its container declares more
    than it holds: :func:`cut_short`): a file that lost its end read as a short clip (too short (0.61 s; ...)) or
    as damaged (a FLAC: cannot decode, invalid data)."""
    short = cut_short(path)
    return exc if short is None else AudioError(f"{exc} because the file is cut short: {short}")


def _seek_windows(record: FileRecord, sample_rate: int, policy: WindowPolicy, duration: float) -> Windows:
    """The policy's windows over the header's duration, each decoded by seeking."""
    usable = min(duration, policy.max_decode_seconds)
    starts, length = policy.starts(int(round(usable * sample_rate)), sample_rate)
    windows = load_segments(record.path, sample_rate, starts / sample_rate, length / sample_rate)
    _check_level(record, windows, sample_rate)
    warnings = [_too_long(record, policy)] if duration >= policy.max_decode_seconds else []
    return Windows(record, starts / sample_rate, windows, warnings)


def _check_level(record: FileRecord, audio: np.ndarray, sample_rate: int) -> None:
    """Reject silent audio (below 8 kHz, :data:`SILENCE_BAND_RATE`; a constant offset is silent too) and samples no
    one mastered (NaN, infinity, beyond +60 dBFS). Each window's highest and lowest samples give its peak: no copy of
    its absolute values (5 ms a file of four 30 s windows, 1 GB for 4 hours decoded whole)."""
    inner = audio[..., RINGING:-RINGING] if audio.shape[-1] > 4 * RINGING else audio
    highs, lows = inner.max(axis=-1), inner.min(axis=-1)  # of each window
    ends = (audio[..., :RINGING], audio[..., -RINGING:]) if inner is not audio else ()
    peak = float(np.abs([highs.max(), lows.min(), *(e.max() for e in ends), *(e.min() for e in ends)]).max())
    if not np.isfinite(peak) or peak > MAX_PEAK:
        raise AudioError(f"{record.path}: sample values out of range (peak {peak:.3g}; float audio lies within +-1)")
    if peak < SILENCE_PEAK:
        raise AudioError(f"{record.path}: silent (peak {_db(peak)} dBFS)")
    if peak < QUIET_PEAK and sample_rate > SILENCE_BAND_RATE:
        low = soxr.resample(np.ascontiguousarray(audio.T), sample_rate, SILENCE_BAND_RATE, quality="HQ")
        band = float(np.abs(low).max())
        if band < SILENCE_PEAK:
            raise AudioError(f"{record.path}: silent (peak {_db(band)} dBFS below 8 kHz; above it only noise, "
                             f"peak {_db(peak)} dBFS)")
    swing = float((highs - lows).max())
    if swing < SILENCE_PEAK:
        raise AudioError(f"{record.path}: silent (a constant offset of {float(inner.flat[0]):.3g}, varying by "
                         f"{_db(swing)} dBFS)")


def _db(level: float) -> str:
    """``level`` in whole dBFS."""
    return f"{20 * np.log10(level + 1e-12):.0f}"


def describe(exc: Exception) -> str:
    """One line for an unexpected error: its type and first line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _too_long(record: FileRecord, policy: WindowPolicy) -> str:
    return f"{record.path}: longer than {_span(policy.max_decode_seconds)}, only the start is used"


def _span(seconds: float) -> str:
    """A decoding limit in the unit that reads best: '4 h', '1.5 h', '20 min', '6 s' (a server's 20-minute upload
    limit read '0.3 h', and one of seconds '0.0 h')."""
    for unit, size in (("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def planned_seconds(paths: list[Path], policy: WindowPolicy) -> float:
    """Audio seconds the policy will analyse in ``paths``, from their headers (unreadable files count 0)."""
    total = 0.0
    for path in paths:
        try:
            total += policy.analysed_seconds(probe(path).duration)
        except (AudioError, OSError):
            continue
    return total
