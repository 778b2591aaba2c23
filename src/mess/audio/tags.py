"""Read the tags that similarity cares about (artist, album, title, genre, composer)."""

from __future__ import annotations

from pathlib import Path

import mutagen

TAG_FIELDS = ("artist", "album", "title", "genre", "composer")
CREDITS = ("artist", "composer")  # every value kept: the first is the main artist (mess.audio.names.main_artist)
JOIN = "; "


def read_tags(path: Path) -> dict[str, str | None]:
    """Return each field in :data:`TAG_FIELDS`: the first non-blank value, or for :data:`CREDITS` every value
    joined by ``'; '`` (two Vorbis ARTIST comments, an ID3v2.4 null-separated list: 'A; B'); None when absent."""
    tags: dict[str, str | None] = dict.fromkeys(TAG_FIELDS)
    try:
        audio = mutagen.File(str(path), easy=True)
    except (mutagen.MutagenError, OSError, ValueError):
        return tags
    if audio is None or audio.tags is None:
        return tags
    for field in TAG_FIELDS:
        values = list(dict.fromkeys(v for v in (str(x).strip() for x in audio.tags.get(field) or []) if v))
        if values:
            tags[field] = JOIN.join(values) if field in CREDITS else values[0]
    return tags
