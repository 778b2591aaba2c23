"""The content hash of an Ogg Vorbis file read from its pages equals FFmpeg's packets through PyAV; every other Ogg
file (chained, cut, corrupted, Opus, ...) is hashed through PyAV as before. Real Wesnoth tracks and files made
from them; the expected digests are PyAV's packets hashed here, never the page parser's."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import soxr
from mutagen.oggvorbis import OggVorbis

from mess.audio.discover import _ogg_vorbis_hash, content_hash

FRESH_PAGE = "battle.ogg"  # its first audio packet starts a page
SHARED_PAGE = "battle-epic.ogg"  # its first audio packets share the setup header's page (an older encoder's layout)
AFTER_EOS = "northerners.ogg"  # more pages of its stream after the page marked end-of-stream


def _pyav_digest(path: Path) -> str:
    """What mess hashed before the page parser: PyAV's demuxed packets of the first audio stream, after the codec,
    rate and channels; the file's bytes where FFmpeg cannot demux it."""
    digest = hashlib.blake2b(b"mess-audio-packets-v1", digest_size=16)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            ctx = stream.codec_context
            digest.update(f"{ctx.name}:{ctx.sample_rate}:{ctx.channels}:".encode())
            for packet in container.demux(stream):
                digest.update(bytes(packet))
    except av.FFmpegError:
        return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    return digest.hexdigest()


def _page_digest(path: Path) -> str | None:
    """The page parser's digest of ``path`` (None: not a plain Ogg Vorbis file), after PyAV's prefix."""
    digest = hashlib.blake2b(b"mess-audio-packets-v1", digest_size=16)
    with av.open(str(path)) as container:
        ctx = container.streams.audio[0].codec_context
        digest.update(f"{ctx.name}:{ctx.sample_rate}:{ctx.channels}:".encode())
    return _ogg_vorbis_hash(path, digest)


def _with_crc(page: bytearray) -> bytearray:
    """``page`` with its CRC field set as the Ogg spec defines it (CRC-32, polynomial 0x04C11DB7, MSB first, no
    initial or final XOR, over the page with the field zeroed), bit by bit."""
    page[22:26] = bytes(4)
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = (crc << 1 ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    page[22:26] = crc.to_bytes(4, "little")
    return page


def _pages(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each Ogg page of ``data``, by the header's segment table."""
    pages, pos = [], 0
    while pos < len(data):
        n = data[pos + 26]
        end = pos + 27 + n + sum(data[pos + 27:pos + 27 + n])
        pages.append((pos, end))
        pos = end
    return pages


def _vorbis_with_pyav(path: Path, audio: np.ndarray, rate: int) -> None:
    """``audio`` [frames, 2] encoded by FFmpeg's own Vorbis encoder (PyAV has no libvorbis)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("vorbis", rate=rate, layout="stereo")
        stream.codec_context.options = {"strict": "experimental"}
        for i in range(0, len(audio), 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[i:i + 1024].T), format="fltp",
                                               layout="stereo")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


@pytest.fixture(scope="module")
def tracks(wesnoth_tracks: list[Path]) -> dict[str, Path]:
    return {p.name: p for p in wesnoth_tracks}


@pytest.fixture(scope="module")
def reencoded(tracks: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Eight seconds of a Wesnoth track as Vorbis at other rates and channel counts (FFmpeg's encoder through PyAV,
    libvorbis through libsndfile), and as Opus."""
    out = tmp_path_factory.mktemp("reencoded")
    audio, rate = sf.read(tracks[FRESH_PAGE], frames=44100 * 8, dtype="float32")
    files = {name: out / f"{name}.ogg" for name in ("pyav-22k", "pyav-48k", "mono-16k", "six-8k", "opus")}
    _vorbis_with_pyav(files["pyav-22k"], soxr.resample(audio, rate, 22050).astype(np.float32), 22050)
    _vorbis_with_pyav(files["pyav-48k"], soxr.resample(audio, rate, 48000).astype(np.float32), 48000)
    sf.write(files["mono-16k"], soxr.resample(audio.mean(axis=1), rate, 16000), 16000, format="OGG", subtype="VORBIS")
    six = np.repeat(soxr.resample(audio, rate, 8000)[:, :1], 6, axis=1)
    sf.write(files["six-8k"], six, 8000, format="OGG", subtype="VORBIS")
    with av.open(str(files["opus"]), "w") as container:
        stream = container.add_stream("libopus", rate=48000, layout="stereo")
        opus = soxr.resample(audio, rate, 48000).astype(np.float32)
        for i in range(0, len(opus), 960):
            frame = av.AudioFrame.from_ndarray(opus[i:i + 960].reshape(1, -1), format="flt", layout="stereo")
            frame.sample_rate = 48000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return files


def test_plain_ogg_vorbis_files_are_hashed_from_their_pages_as_pyav_hashed_their_packets(
        tracks: dict[str, Path], reencoded: dict[str, Path]) -> None:
    files = [tracks[FRESH_PAGE], tracks[SHARED_PAGE]] + [reencoded[k] for k in ("pyav-22k", "pyav-48k", "mono-16k",
                                                                                  "six-8k")]
    for path in files:
        expected = _pyav_digest(path)
        assert _page_digest(path) == expected, path.name  # the page parser read it (not None), to PyAV's digest
        assert content_hash(path) == expected, path.name
    with av.open(str(reencoded["six-8k"])) as container:  # the prefix is PyAV's rate and channels
        assert (container.streams.audio[0].rate, container.streams.audio[0].channels) == (8000, 6)


def test_retagging_an_ogg_vorbis_file_with_a_cover_over_many_pages_keeps_its_page_digest(
        tracks: dict[str, Path], tmp_path: Path) -> None:
    """mutagen rewrites the header pages (the comment header now spans many) and renumbers every later page."""
    for name in (FRESH_PAGE, SHARED_PAGE):
        path = tmp_path / name
        shutil.copyfile(tracks[name], path)
        tags = OggVorbis(path)
        tags["title"], tags["comment"] = "Retagged", "x" * 300_000
        tags.save()
        assert len(_pages(path.read_bytes())) > len(_pages(tracks[name].read_bytes())) + 3
        assert _page_digest(path) == _pyav_digest(path) == _pyav_digest(tracks[name])


def test_odd_ogg_files_are_hashed_through_pyav_as_before(tracks: dict[str, Path], reencoded: dict[str, Path],
                                                         tmp_path: Path) -> None:
    """Each file the page parser cannot prove plain is left to PyAV: the digest is PyAV's, never another."""
    data = reencoded["mono-16k"].read_bytes()  # libvorbis's pages (libsndfile's), eight seconds: a quick PyAV loop
    pages = _pages(data)
    start, end = pages[len(pages) // 2]
    flipped = bytearray(data)
    flipped[(start + end) // 2] ^= 0x10  # a byte in one page's body: its CRC no longer matches (FFmpeg skips it)
    assert _with_crc(bytearray(data[start:end])) == data[start:end]  # the CRC as defined, to check the ones made here
    after = next(i for i, (a, _) in enumerate(pages[3:], 3)  # a page after one whose last segment ends a packet
                 if data[pages[i - 1][0] + 26 + data[pages[i - 1][0] + 26]] < 255 and data[a + 5] == 0)
    continued = bytearray(data[pages[after][0]:pages[after][1]])
    continued[5] |= 1  # marked as continuing a packet its previous page ended: FFmpeg drops its first packet
    second = reencoded["pyav-22k"].read_bytes()
    first = next(i for i, (a, _) in enumerate(pages) if data[a + 6:a + 14] != bytes(8))  # the first audio page
    odd = {
        "after-eos.ogg": tracks[AFTER_EOS].read_bytes(),
        "opus.ogg": reencoded["opus"].read_bytes(),
        "chained-same.ogg": data + data,  # two logical streams one after the other, the same codec and layout
        "chained-other.ogg": data + second,  # mono then stereo: FFmpeg gives up
        "truncated.ogg": data[:(start + end) // 2],
        "flipped.ogg": bytes(flipped),
        "gap.ogg": data[:start] + data[end:],  # one page missing
        "continued.ogg": data[:pages[after][0]] + _with_crc(continued) + data[pages[after][1]:],
        "other-serial.ogg": _page_changed(data, pages[len(pages) // 2], 14, data[start + 14] ^ 1),
        "bos-inside.ogg": _page_changed(data, pages[len(pages) // 2], 5, data[start + 5] | 2),
        "comment-misnamed.ogg": _page_changed(data, pages[1], 27 + data[pages[1][0] + 26] + 6, ord("z")),
        "no-eos.ogg": data[:pages[-2][1]],  # cut after a whole page
        "odd-first-packet.ogg": _page_changed(data, pages[first], 27 + data[pages[first][0] + 26], 7),  # a type
        # no Vorbis header has: FFmpeg's demuxer skips the packet as one
        "trailing.ogg": data + b"not a page",
        "multiplexed.ogg": _interleave(second, data),
    }
    for name, content in odd.items():
        path = tmp_path / name
        path.write_bytes(content)
        assert _page_digest(path) is None, name
        assert content_hash(path) == _pyav_digest(path), name
    assert _pyav_digest(tmp_path / "flipped.ogg") != _pyav_digest(reencoded["mono-16k"])
    assert _pyav_digest(tmp_path / "continued.ogg") != _pyav_digest(reencoded["mono-16k"])


def _page_changed(data: bytes, page: tuple[int, int], offset: int, value: int) -> bytes:
    """``data`` with byte ``offset`` of ``page`` set to ``value``, the page's CRC made to match."""
    changed = bytearray(data[page[0]:page[1]])
    changed[offset] = value
    return data[:page[0]] + _with_crc(changed) + data[page[1]:]


def _interleave(first: bytes, second: bytes) -> bytes:
    """Two single-stream Ogg files as one file of two concurrent logical streams: both first pages, then the rest
    in turn (the serial numbers differ: libsndfile's and FFmpeg's are random)."""
    a, b = _pages(first), _pages(second)
    out = [first[slice(*a[0])], second[slice(*b[0])]]
    for i in range(1, max(len(a), len(b))):
        out += [first[slice(*a[i])]] if i < len(a) else []
        out += [second[slice(*b[i])]] if i < len(b) else []
    return b"".join(out)
