"""Per-file work before inference: fingerprint, tags, decode, validate, window."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mess.audio.decode import AudioError, load_audio, probe
from mess.audio.discover import content_hash, file_stamp
from mess.audio.tags import read_tags
from mess.audio.windows import WindowPolicy
from mess.store.feature_store import legacy_stamp

log = logging.getLogger(__name__)

SILENCE_PEAK = 1e-4  # -80 dBFS
MAX_PEAK = 1e3  # +60 dBFS: float samples beyond this are not audio anyone mastered


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


def inspect_file(path: Path, known: tuple[str, str] | None = None) -> FileRecord:
    """Stat, hash (reusing ``known`` = (hash, stamp) when the file's stamp is unchanged), probe, read tags."""
    stat = path.stat()
    stamp = file_stamp(stat)
    unchanged = known is not None and known[1] in (stamp, legacy_stamp(stat.st_size, stat.st_mtime))
    digest = known[0] if unchanged else content_hash(path)
    try:
        meta = probe(path)
        info: dict[str, object] = {"duration": meta.duration, "sample_rate": meta.sample_rate, "channels": meta.channels}
    except AudioError:
        info = {}
    return FileRecord(path, digest, stat.st_size, stat.st_mtime, info, read_tags(path), stamp)


def decode_windows(record: FileRecord, sample_rate: int, policy: WindowPolicy, min_samples: int = 1) -> Windows:
    """Decode, reject unusable audio with a clear reason, and cut into windows."""
    audio = load_audio(record.path, sample_rate, max_seconds=policy.max_decode_seconds)
    warnings = []
    seconds = audio.size / sample_rate
    if seconds >= policy.max_decode_seconds:
        warnings.append(f"{record.path.name}: longer than {policy.max_decode_seconds / 3600:.1f} h, only the start is used")
    if seconds < policy.min_seconds or audio.size < min_samples:
        raise AudioError(f"{record.path}: too short ({seconds:.2f} s; the minimum is {policy.min_seconds:.2f} s)")
    peak = float(np.abs(audio).max())
    if not np.isfinite(peak) or peak > MAX_PEAK:
        raise AudioError(f"{record.path}: sample values out of range (peak {peak:.3g}; float audio lies within +-1)")
    if peak < SILENCE_PEAK:
        raise AudioError(f"{record.path}: silent (peak {20 * np.log10(peak + 1e-12):.0f} dBFS)")
    starts, windows = policy.cut(audio, sample_rate)
    return Windows(record, starts, windows, warnings)
