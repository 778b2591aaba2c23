"""Read the tags that similarity cares about (artist, album, title, genre, composer)."""

from __future__ import annotations

from pathlib import Path

import mutagen

TAG_FIELDS = ("artist", "album", "title", "genre", "composer")


def read_tags(path: Path) -> dict[str, str | None]:
    """Return the first value of each field in :data:`TAG_FIELDS` (None when absent)."""
    tags: dict[str, str | None] = dict.fromkeys(TAG_FIELDS)
    try:
        audio = mutagen.File(str(path), easy=True)
    except (mutagen.MutagenError, OSError, ValueError):
        return tags
    if audio is None or audio.tags is None:
        return tags
    for field in TAG_FIELDS:
        values = audio.tags.get(field)
        if values:
            tags[field] = str(values[0]).strip() or None
    return tags
