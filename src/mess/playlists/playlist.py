"""The playlist value and the checks every builder shares: artist keys and near-duplicates."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mess.audio.names import credit_key
from mess.audio.recording import compared
from mess.constants import file_title
from mess.search.query import DUPLICATE_COSINE, VERIFY_COSINE
from mess.store import Track


class PlaylistError(ValueError):
    """A playlist that cannot be made (too few tracks, same start and end, bad option); one-line message."""


@dataclass(frozen=True)
class Playlist:
    """An ordered list of collection tracks with a title and, per track, why it is there (a score)."""

    title: str
    tracks: tuple[Track, ...]
    scores: tuple[float, ...]
    note: str = ""

    def __len__(self) -> int:
        return len(self.tracks)

    def to_dict(self) -> dict:
        """JSON-ready form (paths included: playlists are for local players)."""
        return {"title": self.title, "note": self.note, "tracks": [
            {"id": t.id, "path": t.path, "name": t.name, "artist": t.artist, "title": t.title or file_title(t.path),
             "album": t.album, "duration": t.duration, "score": round(float(s), 6)}
            for t, s in zip(self.tracks, self.scores, strict=False)]}


def gone_tracks(playlist: Playlist) -> tuple[Track, ...]:
    """The playlist's tracks whose files are no longer on disk (deleted or moved since extraction)."""
    return tuple(t for t in playlist.tracks if not Path(t.path).is_file())


def vanished_copies(rows: Iterable[int], ids: np.ndarray, by_id: Mapping[int, Track]) -> set[int]:
    """Of ``rows`` (of a vector set with track ``ids``), those whose file is gone while a row of the same content is
    on disk: a file renamed and extracted again is catalogued under both names, and a playlist should take the copy
    a player can open, not the vanished name (of which it is a duplicate)."""
    by_content: dict[str, list[int]] = {}
    for r in rows:
        by_content.setdefault(by_id[int(ids[r])].content_hash, []).append(r)
    gone: set[int] = set()
    for copies in (c for c in by_content.values() if len(c) > 1):
        missing = {r for r in copies if not Path(by_id[int(ids[r])].path).is_file()}
        if len(missing) < len(copies):
            gone |= missing
    return gone


def with_gone_note(playlist: Playlist, names: Sequence[str]) -> Playlist:
    """The playlist, its note naming the tracks whose files are gone (``names``, from :func:`gone_tracks`): players
    skip or stop on them."""
    if not names:
        return playlist
    many = len(names) > 1
    listed = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return with_note(playlist, f"{len(names)} track{'s are' if many else ' is'} no longer on disk ({listed}); "
                     "`mess extract --prune FOLDER` forgets vanished files")


def with_note(playlist: Playlist, line: str) -> Playlist:
    """The playlist, ``line`` added to its note."""
    return replace(playlist, note="; ".join(x for x in (playlist.note, line) if x))


def artist_key(track: Track) -> str:
    """The artists module's identity of the artist (else composer) tag; empty when neither (never conflicts)."""
    return credit_key(track.artist) or credit_key(track.composer)


def title_key(track: Track) -> tuple[str, str] | None:
    """(artist key, casefolded title) when both exist: two tracks sharing it are versions of one song."""
    title = (track.title or "").strip().casefold()
    return (artist_key(track), title) if title and artist_key(track) else None


class DuplicateGuard:
    """Remembers kept tracks and tells whether another is a near-duplicate of one of them.

    Near-duplicate: the same content, the same (artist, title) tags, cosine >= DUPLICATE_COSINE in the playlist's
    vector space, or, for a track at cosine >= :data:`VERIFY_COSINE` whose duration matches, the same recording by
    its audio (:func:`mess.audio.recording.same_recording`: an MP3 or AAC copy of a kept FLAC); files not on disk
    are not compared.
    """

    def __init__(self, dim: int) -> None:
        self._first: dict[str | tuple[str, str], int] = {}  # content hash or (artist, title) -> its first kept row
        self._units = np.zeros((16, dim), dtype=np.float32)  # the first _kept rows; doubled when full
        self._files: list[tuple[str, float | None] | None] = []  # the kept rows' (path, duration), None where unknown
        self._kept = 0
        self._compared: dict[tuple[str, str], bool] = {}  # (kept path, candidate path): same recording

    def add(self, unit: np.ndarray, track: Track | None = None, content_hash: str | None = None,
            file: tuple[str, float | None] | None = None) -> None:
        """Keep a track (or an external seed given by its vector, content hash and ``file``: its (path, duration)
        on disk, when it is a file there)."""
        if self._kept == len(self._units):
            self._units = np.concatenate([self._units, np.zeros_like(self._units)])
        self._units[self._kept] = unit
        keys = (track.content_hash, title_key(track)) if track is not None else ()
        for key in (*keys, content_hash):
            if key:
                self._first.setdefault(key, self._kept)
        self._kept += 1
        self._files.append((track.path, track.duration) if track is not None else file)

    def duplicate(self, unit: np.ndarray, track: Track) -> bool:
        """Whether ``track`` (with unit vector ``unit``) repeats a kept one."""
        return self.original(unit, track) is not None

    def original(self, unit: np.ndarray, track: Track, sims: np.ndarray | None = None) -> int | None:
        """The kept row (by order of :meth:`add`) that ``track`` (unit vector ``unit``) repeats: the first holding its
        content or tags, else the first at DUPLICATE_COSINE or more, else the closest verified by its audio; None
        when it repeats none. ``sims``: its cosines to the kept rows, where the caller has them (by blocks of one
        matrix product, for many tracks at once)."""
        for key in (track.content_hash, title_key(track)):
            if key and key in self._first:
                return self._first[key]
        if not self._kept:
            return None
        sims = self._units[:self._kept] @ unit if sims is None else sims
        same = np.flatnonzero(sims >= DUPLICATE_COSINE)
        if len(same):
            return int(same[0])
        close = np.flatnonzero(sims >= VERIFY_COSINE)
        return next((int(i) for i in close[np.argsort(-sims[close], kind="stable")]
                     if self._same_recording(self._files[i], track)), None)

    def _same_recording(self, kept: tuple[str, float | None] | None, track: Track) -> bool:
        """Whether the file ``kept`` (path, duration) and ``track``'s hold one recording (False when either is not on
        disk, or their durations differ); each pair is compared once."""
        if kept is None:
            return False
        key = (kept[0], track.path)
        if key not in self._compared:
            match = compared(*kept, track.path, track.duration)
            self._compared[key] = match is not None and match.same
        return self._compared[key]
