"""File paths in the catalog and in messages, lossless for names that are not valid UTF-8."""

from __future__ import annotations

import os
from pathlib import Path


def to_db_path(path: str | Path) -> str | bytes:
    """A path as stored: text, or its raw bytes when the name is not valid UTF-8 (lossless)."""
    text = str(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text)


def from_db_path(value: str | bytes) -> str:
    """The inverse of :func:`to_db_path` (non-UTF-8 bytes come back as surrogate escapes)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def printable(text: str) -> str:
    """``text`` safe to print and store as text: undecodable file-name bytes become escapes (caf\\xe9)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
