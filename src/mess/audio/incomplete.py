"""Whether a file's container declares more audio than its bytes hold: a download in progress, or a file cut short.

Read from the container alone, without decoding: a WAV's data chunk size, an MP3's Xing/Info header (its byte and
frame counts), an Ogg stream's last page (its end-of-stream flag). libsndfile and FFmpeg read such a WAV, MP3 or
Ogg file as a whole, shorter one. A FLAC cut short needs no such check: it fails to decode (its frames carry
checksums, libsndfile loses sync), naming the file.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO

_SHORT = 0.99  # a file holding less than this share of what its header declares is incomplete (not rounding)
_OGG_TAIL = 65536  # bytes at the end of an Ogg file that hold its last page (at most 65307)
_MP3_HEAD = 8192  # bytes after an ID3v2 tag searched for the first MPEG frame


def cut_short(path: Path) -> str | None:
    """What the container declares and what the file holds ('its header declares 20.0 s of audio, the file holds
    10.0 s'), for a file that holds clearly less; None for a whole file, another container, or one that says
    nothing of its length (a WAV written to a pipe, an MP3 without a Xing/Info header)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(12)
            if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
                return _wav(f, size)
            if head[:4] == b"OggS":
                f.seek(max(0, size - _OGG_TAIL))
                return _ogg(f.read())
            f.seek(0)
            return _mp3(f, size)
    except OSError:
        return None


def _held(declared: float, held: float) -> str:
    return f"its header declares {declared:.1f} s of audio, the file holds {held:.1f} s"


def _wav(f: BinaryIO, size: int) -> str | None:
    """A RIFF WAVE file's data chunk against the bytes after it."""
    at, byte_rate = 12, 0
    while at + 8 <= size:
        f.seek(at)
        chunk, length = struct.unpack("<4sI", f.read(8))
        if chunk == b"fmt ":
            byte_rate = struct.unpack("<I", f.read(12)[8:12])[0]
        elif chunk == b"data":
            held = size - at - 8
            if length in (0, 0xFFFFFFFF) or not byte_rate or held >= _SHORT * length:  # streamed: no length
                return None
            return _held(length / byte_rate, held / byte_rate)
        at += 8 + length + (length & 1)
    return None


def _ogg(tail: bytes) -> str | None:
    """An Ogg file whose last page does not end its stream (the end-of-stream flag, 0x04, of its header type)."""
    last = tail.rfind(b"OggS\x00")
    if last < 0 or last + 6 > len(tail) or tail[last + 5] & 0x04:
        return None
    return "its Ogg stream stops before the page that ends it: the rest of the file is missing"


_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # by MPEG version bits


def _mp3(f: BinaryIO, size: int) -> str | None:
    """An MP3 whose Xing/Info header counts more bytes than follow it."""
    head = f.read(10)
    start = 0
    if head[:3] == b"ID3" and len(head) == 10:  # ID3v2: its size is syncsafe (7 bits a byte), a footer adds 10
        start = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10])) + (10 if head[5] & 0x10 else 0)
    f.seek(start)
    data = f.read(_MP3_HEAD)
    for at in range(len(data) - 4):
        b1, b2, b3 = data[at + 1], data[at + 2], data[at + 3]
        version, layer, rate = b1 >> 3 & 3, b1 >> 1 & 3, b2 >> 2 & 3
        if data[at] != 0xFF or b1 & 0xE0 != 0xE0 or version == 1 or layer != 1 or rate == 3:
            continue  # not the header of an MPEG layer III frame
        mono = b3 >> 6 == 3
        side = (17 if mono else 32) if version == 3 else (9 if mono else 17)
        tag = data[at + 4 + side: at + 4 + side + 16]
        if len(tag) < 16 or tag[:4] not in (b"Xing", b"Info"):
            return None
        flags, frames, length = struct.unpack(">III", tag[4:16])
        held = size - start - at
        if flags & 3 != 3 or not length or held >= _SHORT * length:
            return None
        seconds = frames * (1152 if version == 3 else 576) / _RATES[version][rate]
        return _held(seconds, seconds * held / length)
    return None
