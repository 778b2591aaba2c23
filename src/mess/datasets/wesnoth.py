"""Real game music with composer tags: the 41 OGG tracks of Debian's wesnoth-1.16-music.

40 tracks carry an ARTIST tag (10 composers, 2-8 tracks each); ``silence.ogg`` carries none.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mess.audio.tags import read_tags

PACKAGE = "wesnoth-1.16-music"
N_TRACKS = 41


class FetchError(Exception):
    """The package could not be downloaded or unpacked."""


def fetch_wesnoth(out_dir: Path) -> list[Path]:
    """Download the package with apt-get, unpack it, and copy its OGG files into ``out_dir``.

    Returns the tracks sorted by name; a folder that already holds them is reused.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = sorted(out_dir.glob("*.ogg"))
    if len(existing) >= N_TRACKS:
        return existing
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise FetchError(f"{tool} is not available: fetching {PACKAGE} needs Debian or Ubuntu")
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run(["apt-get", "download", PACKAGE], cwd=tmp, capture_output=True, text=True)
        debs = sorted(Path(tmp).glob("*.deb"))
        if got.returncode != 0 or not debs:
            raise FetchError(f"apt-get download {PACKAGE} failed (try apt-get update first): "
                             f"{got.stderr.strip()[-300:]}")
        unpacked = subprocess.run(["dpkg", "-x", str(debs[0]), f"{tmp}/root"], capture_output=True, text=True)
        if unpacked.returncode != 0:
            raise FetchError(f"dpkg -x {debs[0].name} failed: {unpacked.stderr.strip()[-300:]}")
        for ogg in sorted(Path(tmp, "root").rglob("*.ogg")):
            partial = out_dir / f".{ogg.name}.partial"
            shutil.copyfile(ogg, partial)
            partial.replace(out_dir / ogg.name)
    return sorted(out_dir.glob("*.ogg"))


def read_artists(paths: Sequence[Path]) -> dict[Path, str | None]:
    """Each file's ARTIST tag, else its COMPOSER tag, else None."""
    return {path: (tags := read_tags(path))["artist"] or tags["composer"] for path in paths}
