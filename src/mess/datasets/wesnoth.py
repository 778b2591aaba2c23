"""Real game music with composer tags: the 41 OGG tracks of Debian's wesnoth-1.16-music.

40 tracks carry an ARTIST tag (10 composers, 2-8 tracks each); ``silence.ogg`` carries none.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mess.audio.tags import read_tags
from mess.datasets.debian import FetchError, unpack_package

PACKAGE = "wesnoth-1.16-music"
N_TRACKS = 41
TRACK_LIST = ".wesnoth-tracks"  # the copied files' names, one a line: the folder may hold other files too

__all__ = ["FetchError", "N_TRACKS", "PACKAGE", "fetch_wesnoth", "read_artists"]


def fetch_wesnoth(out_dir: Path) -> list[Path]:
    """Download the package with apt-get, unpack it, and copy its OGG files into ``out_dir``.

    Returns the package's tracks sorted by name, never other files in the folder; a folder that already holds
    them (as its hidden track list, written after a fetch, names them; or, fetched before that list, as 41 OGGs)
    is reused.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    listed = out_dir / TRACK_LIST
    if listed.is_file():
        names = listed.read_text(encoding="utf-8").splitlines()
        if names and all((out_dir / name).is_file() for name in names):
            return sorted(out_dir / name for name in names)
    else:
        existing = sorted(out_dir.glob("*.ogg"))
        if len(existing) >= N_TRACKS:
            return existing
    copied = []
    with tempfile.TemporaryDirectory() as tmp:
        for ogg in sorted(unpack_package(PACKAGE, Path(tmp)).rglob("*.ogg")):
            partial = out_dir / f".{ogg.name}.partial"
            shutil.copyfile(ogg, partial)
            copied.append(partial.replace(out_dir / ogg.name))
    partial_list = out_dir / f"{TRACK_LIST}.partial"
    partial_list.write_text("".join(f"{path.name}\n" for path in copied), encoding="utf-8")
    partial_list.replace(listed)
    return sorted(copied)


def read_artists(paths: Sequence[Path]) -> dict[Path, str | None]:
    """Each file's ARTIST tag, else its COMPOSER tag, else None."""
    return {path: (tags := read_tags(path))["artist"] or tags["composer"] for path in paths}
