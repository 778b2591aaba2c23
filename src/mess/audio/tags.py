"""Read the tags that similarity cares about (artist, album, title, genre, composer)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import mutagen
from mutagen.apev2 import APEv2File
from mutagen.asf import ASF
from mutagen.easymp4 import EasyMP4Tags
from mutagen.id3 import ID3, ID3FileType

from mess.audio.decode import open_container

TAG_FIELDS = ("artist", "album", "title", "genre", "composer")
# every value kept: the first is the main artist (mess.audio.names.main_artist) or the genre label (label_key)
MULTI_VALUED = ("artist", "composer", "genre")
JOIN = "; "
ASF_NAMES = {"artist": "Author", "album": "WM/AlbumTitle", "title": "Title", "genre": "WM/Genre",
             "composer": "WM/Composer"}  # WMA's attributes, which mutagen reads under these names only
ID3_FRAMES = {"artist": "TPE1", "album": "TALB", "title": "TIT2", "genre": "TCON", "composer": "TCOM"}
EasyMP4Tags.RegisterTextKey("composer", "\xa9wrt")  # an M4A's composer atom, which mutagen's easy mode does not name


def read_tags(path: Path) -> dict[str, str | None]:
    """Return each field in :data:`TAG_FIELDS`: the first non-blank value, or for :data:`MULTI_VALUED` every value
    joined by ``'; '`` (two Vorbis ARTIST comments, an ID3v2.4 null-separated list: 'A; B'); None when absent."""
    tags: dict[str, str | None] = dict.fromkeys(TAG_FIELDS)
    audio = _open(path, lambda name: mutagen.File(name, easy=True))
    _fill(tags, audio)
    if not any(tags.values()):  # APEv2 where the file's own type reads other tags: an MP3's or TTA file's
        _fill(tags, _open(path, APEv2File))  # (foobar2000 writes them), which FFmpeg reads only in part
    if not any(tags.values()):  # ID3 there: a FLAC's ID3v1 tag (old rippers), one before a WavPack file
        _fill(tags, _open(path, ID3FileType))
    if not any(tags.values()):
        return _ffmpeg_tags(path, tags)
    if audio is not None and isinstance(audio.tags, ID3) and not all(tags.values()):
        found = _ffmpeg_tags(path, tags)  # a WAV's RIFF INFO list may hold what its ID3 chunk lacks
        return {field: value or found[field] for field, value in tags.items()}
    return tags


def _open(path: Path, opener: Callable[[str], mutagen.FileType | None]) -> mutagen.FileType | None:
    """``opener``'s mutagen file for ``path``; None where it reads none, or fails on malformed tags in any way."""
    try:
        return opener(str(path))
    except Exception:  # noqa: BLE001 -- mutagen's parsers raise what they meet: IndexError on a Vorbis comment cut short
        return None


def _fill(tags: dict[str, str | None], audio: mutagen.FileType | None) -> None:
    """Set each field of ``tags`` that ``audio``'s tags hold (see :func:`read_tags`)."""
    if audio is None or audio.tags is None:
        return
    for field in TAG_FIELDS:
        values = list(dict.fromkeys(v for v in (utf8_unmangled(str(x).strip()) for x in _values(audio, field)) if v))
        if values:
            tags[field] = JOIN.join(values) if field in MULTI_VALUED else values[0]


def utf8_unmangled(text: str) -> str:
    """``text`` read again as UTF-8 where it is UTF-8 bytes read as Latin-1 ('Jens Ã©rler', an ID3 frame marked
    Latin-1 that a tagger filled with UTF-8): its characters all Latin-1 and their bytes valid UTF-8. Latin-1 text is
    seldom valid UTF-8 ('São', 'Motörhead' are not), so it stays as it is."""
    if text.isascii():
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


def _values(audio: mutagen.FileType, field: str) -> list:
    """Every value of ``field`` in ``audio``'s tags: by easy name, by WMA's attribute name, or by ID3 frame in a
    WAV's or AIFF's ID3 chunk (which mutagen's easy mode does not name; FFmpeg reads only a list's first value)."""
    tags: Any = audio.tags
    if isinstance(tags, ID3):
        frame = tags.get(ID3_FRAMES[field])
        return [] if frame is None else frame.genres if field == "genre" else list(frame.text)
    found = tags.get(field)
    if not found and isinstance(audio, ASF):
        found = tags.get(ASF_NAMES[field])
    return list(found or [])


def _ffmpeg_tags(path: Path, tags: dict[str, str | None]) -> dict[str, str | None]:
    """The fields of FFmpeg's metadata (container, then first audio stream; keys in any case: Matroska's 'ARTIST')
    for a file mutagen found none in: Matroska (which mutagen does not read), a WAV file's RIFF INFO list, an AIFF's
    NAME and AUTH chunks (the author is the artist). ``tags`` where FFmpeg fails."""
    try:
        with open_container(path) as container:
            found = {k.lower(): v for k, v in container.metadata.items()}
            if container.streams.audio:
                found = {k.lower(): v for k, v in container.streams.audio[0].metadata.items()} | found
    except (av.FFmpegError, OSError, ValueError):
        return tags
    found["artist"] = found.get("artist") or found.get("author") or ""  # an AIFF's AUTH chunk (FFmpeg's name)
    return {field: (str(found.get(field) or "").strip() or None) for field in TAG_FIELDS}
