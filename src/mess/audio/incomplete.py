"""Whether a file's container declares more audio than its bytes hold: a download in progress, or a file cut short.

Read from the container alone, without decoding: a WAV's data chunk size, an MP3's Xing/Info header (its byte and
frame counts), an Ogg stream's last page (its end-of-stream flag), a FLAC's STREAMINFO total samples against its
last frame's first sample. libsndfile and FFmpeg read such a WAV, MP3 or Ogg file as a whole, shorter one; a FLAC
cut short fails to decode ('lost sync'), which does not say why.
"""

from __future__ import annotations

import os
import struct
from functools import cache
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
                f.seek(0)
                if not _ogg_page(f.read(_OGG_TAIL)):  # not an Ogg file (a first page that fails its CRC)
                    return None
                f.seek(max(0, size - _OGG_TAIL))
                return _ogg(f.read())
            f.seek(0)
            start = _id3_end(f.read(10))
            f.seek(start)
            if f.read(4) == b"fLaC":
                return _flac(f, size)
            f.seek(start)
            return _mp3(f, size, start)
    except (OSError, struct.error):  # unreadable, or a header cut inside a field: the decoders say what is wrong
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


def _ogg_page(data: bytes) -> bool:
    """Whether ``data`` begins with a whole Ogg page whose CRC (of the page with its CRC field zeroed) is right."""
    if len(data) < 27:
        return False
    end = 27 + data[26] + sum(data[27:27 + data[26]])
    if end > len(data):
        return False
    crc = 0
    for byte in data[:22] + bytes(4) + data[26:end]:
        crc = (crc << 8 & 0xFFFFFFFF) ^ _ogg_table()[(crc >> 24) ^ byte]
    return crc == int.from_bytes(data[22:26], "little")


@cache
def _ogg_table() -> list[int]:
    """Ogg's CRC-32 table (polynomial 0x04C11DB7, not reflected)."""
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = (r << 1 ^ 0x04C11DB7) & 0xFFFFFFFF if r & 0x80000000 else r << 1
        table.append(r)
    return table


_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # by MPEG version bits


def _id3_end(head: bytes) -> int:
    """Where the audio starts after an ID3v2 tag (its size is syncsafe, 7 bits a byte; a footer adds 10), or 0."""
    if head[:3] != b"ID3" or len(head) < 10:
        return 0
    return 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10])) + (10 if head[5] & 0x10 else 0)


def _mp3(f: BinaryIO, size: int, start: int) -> str | None:
    """An MP3 whose Xing/Info header counts more bytes than follow it."""
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


_FLAC_TAIL = 1 << 18  # bytes at the end of a FLAC file searched for its last frame's header


def _flac(f: BinaryIO, size: int) -> str | None:
    """A FLAC whose STREAMINFO declares more samples than its last frame (found from the end) begins near."""
    block = f.read(4 + 34)
    if len(block) < 38 or block[0] & 0x7F != 0:  # STREAMINFO is the first metadata block
        return None
    info = int.from_bytes(block[4 + 10:4 + 18], "big")  # rate (20 bits), channels, bits, total samples (36)
    fixed_block = int.from_bytes(block[4:6], "big")
    max_block = int.from_bytes(block[6:8], "big")
    rate, total = info >> 44, info & ((1 << 36) - 1)
    if not total or not rate:
        return None  # no length declared (written to a pipe)
    f.seek(max(0, size - _FLAC_TAIL))
    tail = f.read()
    at = len(tail)
    while (at := tail.rfind(b"\xff", 0, at)) >= 0:
        first = _flac_frame(tail[at:at + 16], fixed_block)
        if first is not None:
            if total - first <= max_block + (1 - _SHORT) * total:
                return None
            return _held(total / rate, first / rate)
    return None


def _flac_frame(head: bytes, fixed_block: int) -> int | None:
    """The first sample of the FLAC frame whose header starts ``head`` (its CRC-8 checked), or None."""
    if len(head) < 6 or head[1] & 0xFE != 0xF8 or head[2] >> 4 == 0 or head[2] & 0x0F == 0x0F or head[3] & 1:
        return None
    lead, n = head[4], 0
    while n < 7 and lead & (0x80 >> n):
        n += 1
    if n == 1 or n > 7:
        return None
    size = max(n, 1)
    if 4 + size > len(head):
        return None
    number = lead & (0x7F >> n) if n else lead
    for b in head[5:4 + size]:
        if b & 0xC0 != 0x80:
            return None
        number = number << 6 | b & 0x3F
    end = 4 + size + {6: 1, 7: 2}.get(head[2] >> 4, 0) + {12: 1, 13: 2, 14: 2}.get(head[2] & 0x0F, 0)
    if end >= len(head) or _crc8(head[:end]) != head[end]:
        return None
    return number if head[1] & 1 else number * fixed_block


def _crc8(data: bytes) -> int:
    """FLAC's frame header CRC-8 (polynomial x^8 + x^2 + x + 1)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc << 1 ^ 0x07) & 0xFF if crc & 0x80 else crc << 1
    return crc
