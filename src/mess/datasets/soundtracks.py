"""Real game soundtracks as a labelled development set: six Debian packages, label = the game.

The music files of 45 s or more from wesnoth-1.16-music, widelands-data, flare-game, warmux-data,
openclonk-data and xmoto-data (104 tracks), skipping sound-effect folders and byte-identical copies.
Each copy's ALBUM tag is set to its game, so ``mess evaluate --label album`` scores by soundtrack;
its own ARTIST tag, where it has one, is kept. ``manifest.csv`` lists path, game, artist, duration.
Other soundtracks are deliberately not fetched: they are kept back for an independent check.
"""

from __future__ import annotations

import contextlib
import csv
import filecmp
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import chain, count
from pathlib import Path

import mutagen
from mutagen.aac import AAC
from mutagen.id3 import ID3, TALB

from mess.audio.decode import AudioError, probe
from mess.audio.tags import read_tags
from mess.constants import audio_suffix
from mess.datasets.debian import FetchError, unpack_package

PACKAGES: dict[str, str] = {
    "wesnoth-1.16-music": "wesnoth",
    "widelands-data": "widelands",
    "flare-game": "flare",
    "warmux-data": "warmux",
    "openclonk-data": "openclonk",
    "xmoto-data": "xmoto",
}
MIN_SECONDS = 45.0
SKIP_FOLDER_WORDS = ("sfx", "sound")
MANIFEST = "manifest.csv"
PACKAGES_RECORD = ".packages.json"  # the packages the set was fetched from, beside its manifest
LABEL_TAG = "album"

__all__ = ["FetchError", "LABEL_TAG", "MANIFEST", "MIN_SECONDS", "PACKAGES", "SoundtrackTrack",
           "fetch_soundtracks", "music_files", "read_manifest"]


@dataclass(frozen=True)
class SoundtrackTrack:
    """One music file of the set: where it lies, its game (the label), its own artist tag, its length."""

    path: Path
    game: str
    artist: str | None
    duration: float


def fetch_soundtracks(out_dir: Path, packages: Mapping[str, str] | None = None) -> list[SoundtrackTrack]:
    """Fetch the packages (package -> game; None: the six games of :data:`PACKAGES`), copy their music into
    ``out_dir/<game>/``, write the manifest.

    A folder whose manifest lists files that all exist is reused without touching apt: with ``packages`` None,
    whatever set it holds (a set of one's own, as `benchmarks/quality.py --data` reads); with ``packages`` given, only
    a set fetched from exactly those packages (as recorded in .packages.json beside the manifest; a set without that
    record: of exactly their games). Another is fetched anew and its manifest replaced. A folder moved or copied with
    its manifest is read where it now lies, and its manifest rewritten to name these files (where it can be). A file
    mutagen cannot tag (Matroska) is copied as it is: labelled by the manifest alone. A set fetched anew removes
    the copies of the set the folder held before that it does not hold (:func:`_remove_earlier`).
    Raises :class:`FetchError` where apt-get or dpkg is missing or a package cannot be fetched, or where
    ``out_dir`` is not named in UTF-8 (the manifest's paths are UTF-8 text).
    """
    try:
        str(out_dir.resolve()).encode("utf-8")
    except UnicodeEncodeError:
        raise FetchError(f"{out_dir} is not named in UTF-8, as manifest.csv's paths must be; "
                         "choose a folder named in UTF-8") from None
    cached = read_manifest(out_dir)
    recorded = _recorded_packages(out_dir, cached)
    if packages is None:
        same = bool(cached)
    elif recorded is not None:  # a package without music, two packages of one game: told by the record
        same = recorded == dict(packages)
    else:  # a set fetched before packages were recorded: by its games
        same = bool(cached) and {t.game for t in cached} == set(packages.values())
    if same and all(t.path.is_file() for t in cached):
        if any(str(t.path) != row["path"] for t, row in zip(cached, _manifest_rows(out_dir), strict=True)):
            with contextlib.suppress(OSError):  # a read-only copy: the tracks are right, its manifest stays
                _write_manifest(out_dir, cached)
        return cached
    tracks: list[SoundtrackTrack] = []
    seen: set[str] = set()
    taken: set[Path] = set()
    for package, game in (PACKAGES if packages is None else packages).items():
        with tempfile.TemporaryDirectory() as tmp:
            root = unpack_package(package, Path(tmp))
            for src, duration in music_files(root.rglob("*"), root):
                digest = hashlib.sha256(src.read_bytes()).hexdigest()
                if digest not in seen:
                    seen.add(digest)
                    tracks.append(_copy_labelled(src, out_dir / game, game, duration, taken))
    _write_manifest(out_dir, tracks)
    _record_packages(out_dir, dict(PACKAGES if packages is None else packages), tracks)
    _remove_earlier(out_dir, cached, tracks)
    return tracks


def _set_names(tracks: list[SoundtrackTrack]) -> list[str]:
    """The set's files as GAME/NAME, wherever its folder lies now."""
    return [f"{t.game}/{t.path.name}" for t in tracks]


def _recorded_packages(out_dir: Path, tracks: list[SoundtrackTrack]) -> dict[str, str] | None:
    """The packages (package -> game) the set of ``tracks`` (its manifest's) was fetched from, as
    :func:`_record_packages` wrote them; None where there is no record of these very tracks (none, another set's, a
    fetch killed between its manifest and its record: only the record of the same files tells their packages)."""
    try:
        record = json.loads((out_dir / PACKAGES_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("tracks") != _set_names(tracks):
        return None
    packages = record.get("packages")
    return packages if isinstance(packages, dict) else None


def _record_packages(out_dir: Path, packages: dict[str, str], tracks: list[SoundtrackTrack]) -> None:
    """Write, beside the manifest, which packages gave the set ``tracks`` (its manifest lists only what they held)."""
    partial = out_dir / f"{PACKAGES_RECORD}.partial"
    partial.write_text(json.dumps({"packages": packages, "tracks": _set_names(tracks)}, indent=1), encoding="utf-8")
    partial.replace(out_dir / PACKAGES_RECORD)


def _remove_earlier(out_dir: Path, earlier: list[SoundtrackTrack], tracks: list[SoundtrackTrack]) -> None:
    """Delete the copies of the set the folder held before (``earlier``, its manifest's) that the new set
    (``tracks``) does not hold, and the game folders they leave empty: `mess extract` would read them as part of the
    set. A copy is known as :func:`_copy_labelled` knows one, at ``out_dir/<game>/`` with its game as album tag;
    any other file (a user's, one mutagen cannot tag) is left where it is."""
    kept = {t.path for t in tracks}
    root = out_dir.resolve()
    for t in earlier:
        if t.path not in kept and t.path.parent == root / t.game and t.path.is_file() \
                and read_tags(t.path)["album"] == t.game:
            with contextlib.suppress(OSError):
                t.path.unlink()
    for folder in {t.path.parent for t in earlier} - {t.path.parent for t in tracks}:
        with contextlib.suppress(OSError):  # not empty (a file of the user's), or gone: left as it is
            folder.rmdir()


def music_files(paths: Iterable[Path], root: Path | None = None) -> list[tuple[Path, float]]:
    """The audio files (with their durations) of at least :data:`MIN_SECONDS` outside sound-effect folders (those
    below ``root``, where given: not the folders it lies in); a file is audio by its name as `mess extract` reads
    it (:func:`mess.constants.audio_suffix`: 'a.flac.' is)."""
    found = []
    for path in sorted(paths):
        if not audio_suffix(path.name) or not path.is_file():  # names read as the extractor reads them
            continue
        folders = path.parent.relative_to(root).parts if root is not None else path.parent.parts
        if any(word in part.lower() for part in folders for word in SKIP_FOLDER_WORDS):
            continue
        try:
            duration = probe(path).duration
        except AudioError:
            continue
        if duration >= MIN_SECONDS:
            found.append((path, duration))
    return found


def read_manifest(out_dir: Path) -> list[SoundtrackTrack]:
    """The tracks listed in ``out_dir/manifest.csv`` (empty where there is none), each at ``out_dir/<game>/<name>``
    where the folder was moved or copied since the manifest was written; FetchError where it is not such a list."""
    root = out_dir.resolve()
    try:
        return [SoundtrackTrack(_here(Path(row["path"]), root), row["game"], row["artist"] or None,
                                float(row["duration"])) for row in _manifest_rows(out_dir)]
    except (KeyError, TypeError, ValueError, csv.Error) as exc:  # a column missing, a row cut short, not a number
        raise FetchError(f"{out_dir / MANIFEST} is not a manifest this command wrote ({type(exc).__name__}: {exc}); "
                         "move it away to fetch the set again") from exc


def _here(written: Path, root: Path) -> Path:
    """A manifest's path, or where its file lies now that the set's folder is ``root``."""
    return written if written.is_relative_to(root) else root / written.parent.name / written.name


def _manifest_rows(out_dir: Path) -> list[dict[str, str]]:
    manifest = out_dir / MANIFEST
    if not manifest.is_file():
        return []
    with manifest.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _copy_labelled(src: Path, game_dir: Path, game: str, duration: float, taken: set[Path]) -> SoundtrackTrack:
    """Copy one file, naming it uniquely among the names ``taken`` in this fetch, and set its album tag to the game.

    A file already at that name is replaced where it is an earlier, interrupted fetch's copy (its album tag is the
    game, or, of a type mutagen cannot tag, its bytes are the source's), never where it is another file: the copy then
    takes the longer name (FOLDER__NAME, then FOLDER__2__NAME, FOLDER__3__NAME, ...: the first free one).
    """
    game_dir.mkdir(parents=True, exist_ok=True)
    names = chain([src.name, f"{src.parent.name}__{src.name}"],
                  (f"{src.parent.name}__{n}__{src.name}" for n in count(2)))
    dest = next(d for d in (game_dir / name for name in names)
                if d not in taken and not (d.exists() and read_tags(d)["album"] != game
                                           and not filecmp.cmp(d, src, shallow=False)))
    taken.add(dest)
    # the copy keeps the extension: mutagen tells an MP3 without an ID3 header by it
    partial = dest.with_name(f".{dest.stem}.partial{dest.suffix}")
    shutil.copyfile(src, partial)
    try:
        _label(partial, game)
    except mutagen.MutagenError:  # a type it reads but cannot tag: copied as it is
        shutil.copyfile(src, partial)
    partial.replace(dest)
    return SoundtrackTrack(dest, game, read_tags(dest)["artist"], duration)


def _label(path: Path, game: str) -> None:
    """Set the album tag of ``path`` to ``game`` where mutagen knows its type (else leave it: Matroska); MutagenError
    where that type holds no tags."""
    audio = mutagen.File(str(path), easy=True)
    if audio is None:
        return
    if isinstance(audio, AAC):  # raw AAC (ADTS) holds no tags: an ID3 tag before it, which FFmpeg and mutagen read
        tags = ID3()
        tags.add(TALB(encoding=3, text=[game]))
        tags.save(str(path))
        return
    if audio.tags is None:
        audio.add_tags()
    if isinstance(audio.tags, ID3):  # a WAV's or AIFF's: ID3 without mutagen's easy names
        audio.tags.add(TALB(encoding=3, text=[game]))
    else:
        audio.tags[LABEL_TAG] = game
    audio.save()


def _write_manifest(out_dir: Path, tracks: list[SoundtrackTrack]) -> None:
    """Write ``manifest.csv`` (absolute path, game, artist, duration in seconds): a label CSV for ``evaluate``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / f".{MANIFEST}.partial"
    with partial.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "game", "artist", "duration"])
        for t in tracks:
            writer.writerow([str(t.path.resolve()), t.game, t.artist or "", f"{t.duration:.2f}"])
    partial.replace(out_dir / MANIFEST)
