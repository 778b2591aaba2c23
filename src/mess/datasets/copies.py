"""Copies of a real recording as libraries hold them: lossy encodings (MP3, AAC, Opus), resampled, with silence
added or trimmed at the start, louder or quieter. For calibrating and testing :mod:`mess.audio.recording`."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import soxr

from mess.audio.decode import AudioError, channel_blocks


def read_channels(path: Path, seconds: float | None = None) -> tuple[np.ndarray, int]:
    """([channels, samples] float32 in [-1, 1], rate) of ``path`` as :func:`mess.audio.decode.channel_blocks` reads
    it, the first ``seconds`` when given. AudioError for a file whose rate or channels change part-way."""
    blocks: list[np.ndarray] = []
    rates: set[int] = set()
    for block, rate in channel_blocks(path):
        blocks.append(block)
        rates.add(rate)
        if seconds is not None and sum(map(len, blocks)) >= seconds * rate:
            break
    if not blocks:
        raise AudioError(f"{path}: contains no audio samples")
    if len(rates) > 1 or len({b.shape[1] for b in blocks}) > 1:
        raise AudioError(f"{path}: its rate or channels change part-way")
    audio = np.concatenate(blocks).T
    return np.ascontiguousarray(audio if seconds is None else audio[:, :int(seconds * rate)]), rate


def write_copy(audio: np.ndarray, rate: int, target: Path, codec: str, *, bit_rate: int | None = None,
               out_rate: int | None = None, lead: float = 0.0, gain_db: float = 0.0) -> Path:
    """Encode [channels, samples] ``audio`` at ``rate`` into ``target`` with FFmpeg's ``codec`` (libmp3lame, aac,
    libopus, flac, pcm_s16le) at ``bit_rate`` b/s, resampled to ``out_rate`` (soxr), with ``lead`` seconds of
    silence added (trimmed when negative) and ``gain_db`` applied."""
    out_rate = out_rate or rate
    if lead > 0:
        audio = np.pad(audio, ((0, 0), (round(lead * rate), 0)))
    elif lead < 0:
        audio = audio[:, round(-lead * rate):]
    audio = np.clip(audio * np.float32(10 ** (gain_db / 20)), -1.0, 1.0)
    if out_rate != rate:
        audio = np.ascontiguousarray(soxr.resample(audio.T, rate, out_rate).T, dtype=np.float32)
    layout = "stereo" if len(audio) == 2 else "mono"
    with av.open(str(target), "w") as container:
        stream = container.add_stream(codec, rate=out_rate, layout=layout)
        if not isinstance(stream, av.audio.stream.AudioStream):
            raise ValueError(f"{codec} is not an audio codec")
        if bit_rate:
            stream.bit_rate = bit_rate
        fmt = stream.codec_context.format.name
        size = stream.codec_context.frame_size or 4096
        for i in range(0, audio.shape[1], size):
            frame = av.AudioFrame.from_ndarray(_samples(audio[:, i:i + size], fmt), format=fmt, layout=layout)
            frame.sample_rate, frame.pts = out_rate, i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return target


def _samples(part: np.ndarray, fmt: str) -> np.ndarray:
    """[channels, n] float32 in the array PyAV takes for sample format ``fmt`` (planar or packed, float or int)."""
    if fmt.startswith("s16"):
        part = (part * 32767).astype(np.int16)
    elif fmt.startswith("s32"):
        part = (part.astype(np.float64) * 2147483647).astype(np.int32)
    elif fmt.startswith("dbl"):
        part = part.astype(np.float64)
    return np.ascontiguousarray(part if fmt.endswith("p") else part.T.reshape(1, -1))
