"""Decode any supported audio file to mono float32 at a target rate, streaming."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import soxr

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aiff", ".aif"})
_BLOCK_FRAMES = 1 << 16


class AudioError(Exception):
    """A file that cannot be turned into usable audio; the message says why."""


@dataclass(frozen=True)
class AudioInfo:
    """Container-level facts about a file, read without decoding it."""

    duration: float
    sample_rate: int
    channels: int


@contextmanager
def open_container(path: Path) -> Iterator[av.container.InputContainer]:
    """PyAV's container for ``path``; a name that is not valid UTF-8 is opened through a Python file."""
    name = str(path)
    if name.encode("utf-8", "surrogatepass").decode("utf-8", "ignore") == name:
        with av.open(name) as container:
            yield container
    else:
        with path.open("rb") as raw, av.open(raw) as container:
            yield container


def probe(path: Path) -> AudioInfo:
    """Read duration, native rate and channel count from the file header."""
    try:
        info = sf.info(os.fsencode(path))
        return AudioInfo(info.frames / info.samplerate, info.samplerate, info.channels)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass
    try:
        with open_container(path) as container:
            stream = _audio_stream(container, path)
            duration = float(stream.duration * stream.time_base) if stream.duration else (
                container.duration / av.time_base if container.duration else 0.0)
            return AudioInfo(duration, stream.codec_context.sample_rate, stream.codec_context.channels)
    except av.FFmpegError as exc:
        raise AudioError(f"{path}: not a readable audio file ({exc.__class__.__name__}: {exc})") from exc


def load_audio(path: Path, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sample_rate``.

    Channels are averaged (mono, stereo and 5.1 alike); resampling is soxr's
    streaming high-quality mode, so memory is bounded by the output length.
    Decoding stops after ``max_seconds`` of output when given.
    """
    limit = None if max_seconds is None else int(max_seconds * sample_rate)
    try:
        blocks = _soundfile_blocks(path)
        first = next(blocks, None)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        blocks, first = _pyav_blocks(path), None
    try:
        out = _resample_stream(chain([first] if first is not None else [], blocks), sample_rate, limit)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"{path}: decoding failed part-way ({exc})") from exc
    if out.size == 0:
        raise AudioError(f"{path}: contains no audio samples")
    if not np.all(np.isfinite(out)):
        raise AudioError(f"{path}: decoded samples contain NaN or infinity")
    return out


def _resample_stream(blocks: Iterable[tuple[np.ndarray, int]], sample_rate: int, limit: int | None) -> np.ndarray:
    """Downmix and resample a stream of (frames x channels, rate) blocks."""
    stream: soxr.ResampleStream | None = None
    parts: list[np.ndarray] = []
    total = 0
    for block, in_rate in blocks:
        mono = np.ascontiguousarray(block.mean(axis=1, dtype=np.float32))
        if in_rate != sample_rate:
            stream = stream or soxr.ResampleStream(in_rate, sample_rate, 1, dtype="float32", quality="HQ")
            mono = stream.resample_chunk(mono)
        parts.append(mono)
        total += mono.size
        if limit is not None and total >= limit:
            break
    if stream is not None:
        parts.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return audio[:limit] if limit is not None else audio


def _soundfile_blocks(path: Path) -> Iterator[tuple[np.ndarray, int]]:
    with sf.SoundFile(os.fsencode(path)) as f:
        rate = f.samplerate
        for block in f.blocks(blocksize=_BLOCK_FRAMES, dtype="float32", always_2d=True):
            yield block, rate


def _pyav_blocks(path: Path) -> Iterator[tuple[np.ndarray, int]]:
    try:
        with open_container(path) as container:
            stream = _audio_stream(container, path)
            for frame in container.decode(stream):
                arr = frame.to_ndarray()
                arr = _as_frames_by_channels(arr, frame.format.is_planar, len(frame.layout.channels))
                yield arr, frame.sample_rate
    except av.FFmpegError as exc:
        raise AudioError(f"{path}: cannot decode ({exc.__class__.__name__}: {exc})") from exc


def _as_frames_by_channels(arr: np.ndarray, planar: bool, channels: int) -> np.ndarray:
    """PyAV gives [channels, frames] (planar) or [1, frames*channels] (packed)."""
    if not planar:
        arr = arr.reshape(-1, channels).T
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / np.float32(np.iinfo(arr.dtype).max)
    return np.ascontiguousarray(arr.T, dtype=np.float32)


def _audio_stream(container: av.container.InputContainer, path: Path) -> av.audio.stream.AudioStream:
    if not container.streams.audio:
        raise AudioError(f"{path}: has no audio stream")
    return container.streams.audio[0]
