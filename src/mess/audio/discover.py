"""Find audio files under a folder and fingerprint their content."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from mess.audio.decode import AUDIO_EXTENSIONS

_HASH_CHUNK = 1 << 20


def find_audio(roots: Iterable[Path]) -> list[Path]:
    """All audio files under the given files/folders, resolved, sorted, hidden folders skipped."""
    found: set[Path] = set()
    for root in roots:
        root = root.expanduser().resolve()
        if root.is_file():
            found.add(root)
            continue
        for path in root.rglob("*"):
            rel = path.relative_to(root).parts
            if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file() and not any(p.startswith(".") for p in rel):
                found.add(path)
    return sorted(found)


def content_hash(path: Path) -> str:
    """BLAKE2b-128 of the file bytes: moved or renamed files keep their vectors."""
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
