"""Find audio files under a folder and fingerprint their audio content."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import signal
import stat
import struct
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import av

from mess.audio.decode import open_container, tag_bounds
from mess.constants import audio_suffix

_HASH_CHUNK = 1 << 20
_AUDIO_DOMAIN = b"mess-audio-packets-v1"
_APPLE_DOUBLE = b"\x00\x05\x16\x07"  # the magic number of an AppleDouble file
_OGG_PAGE = struct.Struct("<4sBBqIIIB")  # capture, version, flags, granule, serial, sequence, CRC, segments
_OGG_MAX_PAGE = 27 + 255 + 255 * 255
_BIT_REVERSED = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))  # the Ogg CRC through zlib's reflected one
_VORBIS_HEADERS = (b"\x01vorbis", b"\x03vorbis", b"\x05vorbis")


def find_audio(roots: Iterable[Path], on_skip: Callable[[str], None] | None = None,
               on_hidden: Callable[[Path], None] | None = None,
               on_linked: Callable[[Path], None] | None = None) -> list[Path]:
    """All audio files under the given files/folders, resolved, sorted, hidden files and folders skipped.

    A name is audio by :func:`audio_suffix` ('song.wav ' with its trailing space is). Symlinked folders are
    followed (each real folder once, so a link loop ends). A folder that cannot be read, an audio name that
    cannot be looked at, a link to nothing and a folder removed while it is walked are skipped, each told to
    ``on_skip`` in one line (os.walk passed over such folders without a word; a folder removed between its listing
    and its look ended the run). Each audio file skipped as hidden (a dot-file such as '._song.mp3' or
    '.wav', or one in a dot-folder) is told to ``on_hidden``; one named in ``roots`` is found. Each folder reached
    through a symbolic link is told to ``on_linked``, resolved: its files are found (and catalogued) under that
    path, outside the root's, so ``mess extract ROOT --prune`` prunes there too; so is the target of each audio-named
    link to a missing file (a file catalogued there is gone). macOS's AppleDouble files ('._song.mp3') are not audio,
    and not told.
    """
    def skip(error: OSError) -> None:
        if on_skip is not None:
            on_skip(f"{error.filename}: cannot read ({error.strerror}); skipped")

    found: set[Path] = set()
    for root in roots:
        root = root.expanduser().resolve()
        if root.is_file():
            found.add(root)
            continue
        seen: set[tuple[int, int]] = set()
        for folder, dirs, files in os.walk(root, followlinks=True, onerror=skip):
            try:
                st = os.stat(folder)
            except OSError as exc:  # removed (or its link broken) since os.walk listed it: its files are gone too
                skip(exc)
                dirs[:] = []
                continue
            if (st.st_dev, st.st_ino) in seen:
                dirs[:] = []
                continue
            seen.add((st.st_dev, st.st_ino))
            if on_linked is not None and os.path.islink(folder):
                on_linked(Path(folder).resolve())
            if on_hidden is not None:
                for hidden in sorted(d for d in dirs if d.startswith(".")):
                    _tell_hidden(Path(folder, hidden), on_hidden)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                path = Path(folder, name)
                if not audio_suffix(name):
                    continue
                if name.startswith("."):
                    if on_hidden is not None and not _apple_double(path):
                        on_hidden(path)
                    continue
                try:
                    if path.is_file():
                        found.add(path.resolve())
                    elif path.is_symlink():
                        if on_skip is not None:
                            on_skip(f"{path}: a link to a missing file; skipped")
                        if on_linked is not None:  # its file was catalogued under the target's path
                            on_linked(Path(os.path.realpath(path)))
                except OSError as exc:
                    skip(exc)
    return sorted(found)


def _tell_hidden(folder: Path, on_hidden: Callable[[Path], None]) -> None:
    """Tell ``on_hidden`` each audio-named file under the hidden ``folder`` (links not followed; unreadable
    parts passed over: nothing there is extracted either way)."""
    for sub, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if audio_suffix(name) and not _apple_double(Path(sub, name)):
                on_hidden(Path(sub, name))


def _apple_double(path: Path) -> bool:
    """Whether ``path`` is the AppleDouble file macOS writes beside each file it copies to a foreign disk
    ('._song.mp3': the song's Finder data, not audio)."""
    if not path.name.startswith("._"):
        return False
    try:
        with path.open("rb") as f:
            return f.read(4) == _APPLE_DOUBLE
    except OSError:
        return False


def content_hash(path: str | Path) -> str:
    """BLAKE2b-128 of the audio content, independent of tags and file name.

    The digest covers the codec, rate and channel layout and every demuxed audio
    packet (no decoding), so retagging a file (beets, Picard) or moving it keeps its
    vectors. Files that no demuxer reads are hashed by their bytes instead. A plain Ogg
    Vorbis file's packets are read from its pages (the same digest, without PyAV's per-packet cost).
    """
    path = Path(path)
    try:
        return _packets_hash(path)
    except (av.FFmpegError, IndexError, ValueError):
        return _bytes_hash(path)


def _packets_hash(path: Path) -> str:
    digest = hashlib.blake2b(_AUDIO_DOMAIN, digest_size=16)
    with open_container(path) as container:
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        digest.update(f"{ctx.name}:{ctx.sample_rate}:{ctx.channels}:".encode())
        if container.format.name == "ape":  # FFmpeg's demuxer reads the last frame to the file's end, tags included
            return _untagged_hash(path, digest)
        if (container.format.name == "ogg" and len(container.streams) == 1 and ctx.name == "vorbis"
                and (fast := _ogg_vorbis_hash(path, digest.copy())) is not None):
            return fast
        n = 0
        for packet in container.demux(stream):
            if packet.size:
                digest.update(memoryview(packet))
                n += 1
        if n == 0:
            raise ValueError("no audio packets")
    return digest.hexdigest()


def _ogg_vorbis_hash(path: Path, digest: hashlib.blake2b) -> str | None:
    """``digest`` updated with the audio packets of a plain Ogg Vorbis file read from its pages (no Python call per
    packet: PyAV's per-packet cost was most of the hash's), or None where the file is not plain.

    FFmpeg's demuxer gives the three header packets to the codec's extradata and every later packet whole, so the
    packets joined are the page bodies after the headers. Plain: pages one after another from the file's first byte
    to its last, each CRC-checked (FFmpeg skips a page whose CRC is wrong), of one logical stream numbered from 0
    without a gap, BOS on the first page alone and EOS on the last alone, continuation flags agreeing with the
    lacing; the 30-byte identification header alone on the first page, then the comment and setup headers, then
    audio packets (the first not empty and not a header's).
    """
    headers, sizes, part, done = bytearray(), [], 0, False  # the comment and setup headers' bytes and sizes
    serial, carry, ended, audio = -1, False, False, 0
    buf, pos, eof, seq = b"", 0, False, 0
    view = rev = memoryview(buf)
    with path.open("rb") as f:
        while True:
            if not eof and len(buf) - pos < _OGG_MAX_PAGE:
                more = f.read(_HASH_CHUNK)
                eof = len(more) < _HASH_CHUNK
                buf, pos = buf[pos:] + more, 0
                view, rev = memoryview(buf), memoryview(buf.translate(_BIT_REVERSED))
            if pos == len(buf):
                break
            if len(buf) - pos < 27 or ended:
                return None
            capture, version, flags, _, page_serial, sequence, _, nseg = _OGG_PAGE.unpack_from(buf, pos)
            body = pos + 27 + nseg
            lacing = buf[pos + 27:body]
            end = body + sum(lacing)
            if (capture != b"OggS" or version or not nseg or end > len(buf) or sequence != seq
                    or flags & ~7 or bool(flags & 1) != carry or bool(flags & 2) != (seq == 0)):
                return None
            crc = zlib.crc32(b"\0\0\0\0", zlib.crc32(rev[pos:pos + 22], 0xFFFFFFFF))
            if zlib.crc32(rev[pos + 26:end], crc) ^ 0xFFFFFFFF != int.from_bytes(rev[pos + 22:pos + 26], "big"):
                return None
            if seq == 0:
                if lacing != b"\x1e" or buf[body:body + 7] != _VORBIS_HEADERS[0]:
                    return None
                serial = page_serial
            elif page_serial != serial:
                return None
            elif not done:
                used = taken = 0  # this page's bytes and segments of the comment and setup headers
                for size in lacing:
                    used, part, taken = used + size, part + size, taken + 1
                    if size < 255:
                        sizes.append(part)
                        part = 0
                        if len(sizes) == 2:
                            break
                headers += view[body:body + used]
                if len(sizes) == 2:
                    done, start = True, body + used
                    if (headers[:7] != _VORBIS_HEADERS[1] or headers[sizes[0]:sizes[0] + 7] != _VORBIS_HEADERS[2]
                            or taken < nseg and (not lacing[taken] or buf[start] & 1)):
                        return None
                    digest.update(view[start:end])  # audio after the setup header on its page
                    audio += end - start
            else:
                if not audio and (flags & 1 or not lacing[0] or buf[body] & 1):
                    return None
                digest.update(view[body:end])
                audio += end - body
            carry, ended, pos, seq = lacing[-1] == 255, bool(flags & 4), end, seq + 1
    return digest.hexdigest() if ended and audio else None


def _untagged_hash(path: Path, digest: hashlib.blake2b) -> str:
    """``digest`` updated with the bytes of ``path`` between its tags: an ID3v2 tag at the start, an APEv2 and an
    ID3v1 tag at the end (Monkey's Audio: its header, seek table and frames)."""
    start, end, _ = tag_bounds(path)
    with path.open("rb") as f:
        f.seek(start)
        left = end - start
        while left > 0 and (chunk := f.read(min(_HASH_CHUNK, left))):
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def _bytes_hash(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def open_for_writing(path: str | Path) -> bool | None:
    """Whether another process holds ``path`` open for writing now (a download in progress, paused or not): Linux
    grants a read lease only on a file no one has open for writing. The lease is given back at once (a writer opening
    the file meanwhile waits that long; the break notice is SIGURG, which no one handles, not SIGIO, which would end
    this process). None where it cannot tell: not Linux, a file system without leases, a file of another user."""
    if not hasattr(fcntl, "F_SETLEASE"):
        return None
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a pipe's writer would take this open for its reader's
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return True if exc.errno == errno.EAGAIN else None
    else:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)
