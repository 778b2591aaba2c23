"""Names every layer shares: the kinds of vector set a run offers, and the tags that can define "similar".

This module imports nothing from mess (it is the bottom layer of the import contract).
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path, PurePath
from typing import Final, Literal

DEFAULT_STORE: Final = Path(".mess")  # the store of a command given no --store (nor MESS_STORE)

VectorKind = Literal["layer", "group", "aspect", "fused", "learned", "all"]
FUSED: VectorKind = "fused"  # vectors of `mess fuse apply`, stored as the run's derived set of this name
LEARNED: VectorKind = "learned"  # the head shipped for a model (mess.models.head), applied to all layers

DEFAULT_NORM: Final = "auto"  # power + z-scores for all layers together, z-scores for one layer: chosen on real
# soundtracks (docs/quality.md; mess.search.vectors.resolved_norm)

PROBE_KINDS = ("ridge", "mlp")  # `mess probe --probe`: each writes its own report (see mess.store.reports)

ENCODED_R2: Final = 0.3  # aspects the probe predicts worse than this are neither evidence nor a search space

LABEL_FIELDS = ("artist", "album", "genre", "composer", "title")  # track tags that can define relevance

# An artist's profile: the mean of at most this many of its tracks, artists with fewer than the least left out
# (mess.artists.profiles; here, as the hybrid weights' file name, so that `mess --help` shows them without numpy).
DEFAULT_MAX_TRACKS = 5
DEFAULT_MIN_TRACKS = 3
ARTIST_WEIGHTS_FILE = "artists_hybrid.json"  # learned hybrid weights, in the store's reports folder

# The default window policy (mess.audio.windows.WindowPolicy, `mess extract --window --max-windows`): here so that
# the store, which may not import mess.audio, can say which options extract files into a run again.
DEFAULT_WINDOW_SECONDS, DEFAULT_MAX_WINDOWS = 30.0, 4

# What np.load raises on a cut short or damaged .npz file (found by truncating and flipping bytes of real ones):
# a cache or index file that raises one of these is treated as missing, never as a traceback.
NPZ_ERRORS: Final = (OSError, KeyError, ValueError, EOFError, NotImplementedError, zipfile.BadZipFile, zlib.error)

# What extraction decodes (mess.audio.decode), by file name: here so that layers which may not import mess.audio
# (the store's display names) read names as the extractor does.
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aiff", ".aif", ".aifc",
    ".wma", ".wv", ".ape", ".mpc", ".tta", ".mka",  # FFmpeg's: WMA, WavPack, Monkey's Audio, Musepack, TTA, Matroska
})  # not .mp4, .mkv, .webm: a music folder may hold videos


def audio_suffix(name: str) -> str:
    """The lower-case audio extension ``name`` ends with, else ''.

    Trailing spaces and dots are not part of it ('song.wav ' and 'song.flac.' are audio files; Path.suffix
    says '.wav ' and ''), and a name that is only an extension ('.wav') has it.
    """
    base = name.rstrip(" .")
    suffix = "." + base.rsplit(".", 1)[1].lower() if "." in base else ""
    return suffix if suffix in AUDIO_EXTENSIONS else ""


def file_title(path: str) -> str:
    """The file name of ``path`` without its audio extension as :func:`audio_suffix` reads it: a track's title
    when its tags have none. 'b.flac.' and 'song.flac ' give 'b' and 'song' (Path.stem: 'b.flac.' and 'song');
    a name that is only an extension ('.wav') stays whole, and one with no audio extension is its Path.stem."""
    name = PurePath(path).name
    suffix = audio_suffix(name)
    if not suffix:
        return PurePath(name).stem
    return name.rstrip(" .")[: -len(suffix)] or name


def legacy_stamp(size: int, mtime: float) -> str:
    """The change stamp of a catalog row written before stamps existed (size and mtime only): here so that the
    decoder processes compare stamps without importing the store."""
    return f"legacy:{size}:{mtime!r}"


def file_stamp(stat: os.stat_result) -> str:
    """Size, mtime, inode and ctime (ns): any write, replace or rename-over changes it (here, not beside the
    decoders, so that an unchanged file is told without importing PyAV)."""
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}:{stat.st_ctime_ns}"


def stamp_matches(stat: os.stat_result, known: str) -> bool:
    """Whether a file with ``stat`` is the one the catalog stamped ``known`` (also a stamp from before inodes and
    ctimes were part of it: size and mtime)."""
    return known in (file_stamp(stat), legacy_stamp(stat.st_size, stat.st_mtime))


def counted(n: int, one: str, many: str | None = None) -> str:
    """``n`` with the words for one or for many: counted(1, "file has", "files have") is '1 file has'; ``many``
    defaults to ``one`` + 's'."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


MAX_PORT: Final = 65535


def port_problem(port: int, any_port: bool = False) -> str | None:
    """Why ``port`` is not a TCP port to dial (None when it is): outside 1-65535 the system takes it modulo 65536
    (70000 dialled 4464). ``any_port``: a port to listen on, where 0 is one the system picks."""
    low = 0 if any_port else 1
    return None if low <= port <= MAX_PORT else f"the port is out of range ({low}-{MAX_PORT})"
