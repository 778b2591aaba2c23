"""The store's catalog of audio files (tracks): written by path, found by id, path or name."""

from __future__ import annotations

import functools
import os
import sqlite3
import time
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ParamSpec

import numpy as np

from mess.constants import legacy_stamp
from mess.store.errors import StoreError, TrackFailed
from mess.store.failures import FailureRecords, unread_key
from mess.store.memo import MEMO
from mess.store.moves import NEW_TRACK_ID, follow, settle
from mess.store.paths import expanded, from_db_path, printable, resolved, to_db_path, unprinted
from mess.store.records import Run, Track, TrackList, is_track_id

_TRACK_COLS = "id, path, content_hash, duration, artist, album, title, genre, composer"
_KNOWN_DURATION = ("COALESCE((SELECT d.duration FROM tracks d WHERE d.content_hash=:content_hash "
                   "AND d.duration IS NOT NULL LIMIT 1), :duration)")
P = ParamSpec("P")


def _id_alone(catalogue: Callable[P, tuple[int, int]]) -> Callable[P, int]:
    """``catalogue`` answering the id alone: :meth:`TrackCatalog.upsert_track` is :meth:`TrackCatalog.catalogue_file`
    with its signature, not a copy of it that could drift."""

    @functools.wraps(catalogue)
    def upsert_track(*args: P.args, **kwargs: P.kwargs) -> int:
        return catalogue(*args, **kwargs)[0]

    upsert_track.__doc__ = "Insert or update a track by path; returns its id (:meth:`catalogue_file`'s first value)."
    return upsert_track


class TrackCatalog(FailureRecords):
    """The tracks: one catalog row per audio file, with its content hash and tags."""

    def catalogue_file(
        self,
        path: Path,
        content_hash: str,
        size: int,
        mtime: float,
        info: dict[str, object],
        tags: dict[str, str | None],
        *,
        stamp: str = "",
        since: float | None = None,
    ) -> tuple[int, int]:
        """Insert or update a track by path, for a file an extraction that started at ``since`` has just read
        (``since`` None: no moves followed); returns its id and how many catalogued files this made moved (0, 1, or 2
        for a swap). ``stamp`` is the file's change stamp. :meth:`upsert_track` answers the id alone.

        The duration is the one already catalogued for the same content when there is one (a header's claim that
        decoding corrected, see :meth:`set_duration`, stays corrected when the file is inspected again).

        An id names a recording (a content hash), so it follows the recording's file (:mod:`mess.store.moves`): a file
        moved or renamed keeps its id, also where a new file took its old name (that one gets a new id) or two files
        swapped names; a file changed in place with no other file taking its old content keeps its id.
        """
        db_path = to_db_path(path)
        row = {
            "path": db_path,
            "content_hash": content_hash,
            "size": size,
            "mtime": mtime,
            "duration": info.get("duration"),
            "sample_rate": info.get("sample_rate"),
            "channels": info.get("channels"),
            **tags,
            "stamp": stamp,
            "added_at": time.time(),
        }
        cols = ", ".join(row)
        marks = ", ".join(_KNOWN_DURATION if c == "duration" else f":{c}" for c in row)
        updates = ", ".join(f"{c}=excluded.{c}" for c in row if c not in ("path", "added_at"))
        with self._write():
            moved = follow(self.db, db_path, content_hash, since) if since is not None else 0
            self.db.execute(
                f"INSERT INTO tracks (id, {cols}) VALUES ({NEW_TRACK_ID}, {marks}) "
                f"ON CONFLICT(path) DO UPDATE SET {updates}", row
            )
            self.db.execute("DELETE FROM failures WHERE content_hash=?", (unread_key(str(path)),))  # readable now
            return int(self.db.execute("SELECT id FROM tracks WHERE path=?", (row["path"],)).fetchone()[0]), moved

    upsert_track = _id_alone(catalogue_file)

    def settle_moves(self, paths: Iterable[Path], since: float) -> int:
        """After a run started at ``since`` has read every file of ``paths``: ids still naming a recording another of
        them holds go to it; a file of them changed in place keeps its id (:mod:`mess.store.moves`). Returns how many
        files this recognised as moved."""
        with self._write():
            return settle(self.db, (to_db_path(p) for p in paths), since)

    def record_roots(self, folders: Iterable[Path]) -> None:
        """Record the folders an extraction was given (their real paths; files named alone are no folder): where
        playlists may name the tracks by relative paths (:func:`mess.playlists.formats.music_root`)."""
        roots = {to_db_path(os.path.realpath(f)) for f in folders if f.is_dir()}
        with self._write():
            self.db.executemany("INSERT INTO extract_roots (path, at) VALUES (?, ?) ON CONFLICT(path) DO UPDATE "
                                "SET at=excluded.at", [(r, time.time()) for r in sorted(roots, key=str)])

    def extract_roots(self) -> list[str]:
        """The folders extractions were given (:meth:`record_roots`); none in a store written before they were
        recorded (or opened read-only from one)."""
        try:
            return [from_db_path(r[0]) for r in self._query("SELECT path FROM extract_roots ORDER BY path")]
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise

    def forget_gone_roots(self) -> list[str]:
        """Forget the recorded extraction folders (:meth:`record_roots`) that are no folder on disk any more and hold
        no catalogued track (moved or deleted, their tracks forgotten by `mess extract --prune`); the ones forgotten.
        One still holding tracks (a disk not mounted now) is kept."""
        with self._write():
            paths = self.all_paths()
            gone = [root for root in self.extract_roots() if not os.path.isdir(root)
                    and not any(p.startswith(root.rstrip("/") + "/") for p in paths)]
            self.db.executemany("DELETE FROM extract_roots WHERE path=?", [(to_db_path(r),) for r in gone])
        return gone

    def set_duration(self, content_hash: str, seconds: float) -> None:
        """Record the decoded length of a content's tracks (a truncated file's header claims more than it holds)."""
        with self._write():
            self.db.execute("UPDATE tracks SET duration=? WHERE content_hash=?", (seconds, content_hash))

    def known_file(self, path: Path) -> tuple[str, str] | None:
        """(content_hash, change stamp) recorded for a path, to skip re-hashing unchanged files."""
        row = self._one("SELECT content_hash, stamp, size, mtime FROM tracks WHERE path=?", (to_db_path(path),))
        if row is None:
            return None
        return row[0], row[1] or legacy_stamp(row[2], row[3])  # rows from before stamps: size and mtime

    def file_size_mtime(self, path: Path) -> tuple[int, float] | None:
        """(size, mtime) the catalog recorded for a path when it last read the file; None when not catalogued."""
        row = self._one("SELECT size, mtime FROM tracks WHERE path=?", (to_db_path(path),))
        return None if row is None else (int(row[0]), float(row[1]))

    def tracks(self, run: Run | None = None, *, artist: str | None = None) -> TrackList:
        """All tracks (only those with vectors for ``run`` when given), ordered by id.

        The tuple is memoised until the catalog changes (see :meth:`version`), and knows the
        catalog version it was read at, so values derived from it can be memoised (see
        :meth:`cached`). The version and the rows are one read (one snapshot): a writer committing between them
        gave rows labelled with the version before.
        """
        query = ("tracks", None if run is None else run.id, artist)
        with self.snapshot():
            version = self.version()
            return MEMO.get(self._scope, version, query,
                            lambda: TrackList(self._read_tracks(run, artist), self._scope, version, query))

    def _read_tracks(self, run: Run | None, artist: str | None) -> tuple[Track, ...]:
        sql = f"SELECT {', '.join('t.' + c.strip() for c in _TRACK_COLS.split(','))} FROM tracks t"
        args: list[object] = []
        if run is not None:
            sql += " JOIN vectors v ON v.content_hash = t.content_hash AND v.run_id = ?"
            args.append(run.id)
        if artist is not None:
            sql += " WHERE t.artist = ?"
            args.append(artist)
        return tuple(Track.from_row(r) for r in self._query(sql + " ORDER BY t.id", args))

    def track(self, ref: int | str | Path) -> Track:
        """Find a track by id, path, or file name; raises StoreError when unknown, or when a file name is not
        unique (the message lists the candidates' ids and paths)."""
        found = self.find(ref)
        if found is None:
            unread = None if isinstance(ref, int) else self.unread_failure(ref)
            if unread is not None:
                raise TrackFailed(f"{printable(unread[0])} failed to extract, so it is not in the collection: "
                                  f"{unread[1]}", printable(unread[0]))
            key = str(ref).removeprefix("-")
            below = is_track_id(key) and (str(ref).startswith("-") or int(key) == 0)  # '0', '-1': no id's form
            raise StoreError(f"unknown track {ref!r}" + (" (track ids start at 1)" if below else ""))
        return found

    def find(self, ref: int | str | Path) -> Track | None:
        """:meth:`track`, but None when nothing matches (StoreError still when a file name is not unique)."""
        if isinstance(ref, bool) or not isinstance(ref, int | np.integer | str | Path):
            raise TypeError(f"a track is named by its id, path or file name; got {type(ref).__name__} {ref!r}")
        key = str(ref)
        if is_track_id(key):
            if len(key) > 18:  # beyond SQLite's integers: no track's id
                return None
            row = self._one(f"SELECT {_TRACK_COLS} FROM tracks WHERE id=?", (int(key),))
            return None if row is None else Track.from_row(row)
        at = self.track_at(key)
        if at is not None:
            return at
        rows = self._named(Path(key).name) or self._normalised(key)
        if not rows and (raw := unprinted(key)) != key:  # a name that is not UTF-8, pasted as mess prints it
            return self.find(raw)
        if len(rows) > 1:
            found = [Track.from_row(r) for r in rows]
            listed = "; ".join(f"{t.id}: {printable(t.path)}" for t in found[:5]) + ("; ..." if len(found) > 5 else "")
            raise StoreError(f"{len(found)} tracks are named {Path(key).name!r} ({listed}); "
                             "give the track's id or its full path")
        return Track.from_row(rows[0]) if rows else None

    def track_at(self, path: str | Path) -> Track | None:
        """The track at exactly ``path`` (relative to the working directory, links resolved), or None."""
        row = self._one(f"SELECT {_TRACK_COLS} FROM tracks WHERE path=?",
                        (to_db_path(resolved(expanded(path))),))
        return None if row is None else Track.from_row(row)

    def _named(self, name: str) -> list[sqlite3.Row]:
        """Catalog rows of the files called ``name``, by id; those named so in another case (SQLite's LIKE ignores
        ASCII case) only when none has that exact name."""
        sql = f"SELECT {_TRACK_COLS} FROM tracks WHERE "
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:  # not valid UTF-8: such paths are stored as bytes (to_db_path), matched here
            rows = self._query(sql + "typeof(path)='blob' ORDER BY id")
            return [r for r in rows if Path(from_db_path(r["path"])).name == name]
        pattern = "%/" + name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._query(sql + "path LIKE ? ESCAPE '\\' ORDER BY id", (pattern,))
        return [r for r in rows if Path(from_db_path(r["path"])).name == name] or rows

    def _normalised(self, ref: str) -> list[sqlite3.Row]:
        """Catalog rows of the file whose path, else of the files whose name, is ``ref`` in another Unicode form: a
        name typed composed (NFC) for a file saved decomposed (NFD, as macOS saves names), or the other way, or typed
        with a singleton's canonical equivalent (GREEK OMEGA for a file saved with OHM SIGN, 'K' for KELVIN SIGN).
        Stored paths are compared in NFC; for an ASCII ``ref`` only those that are not ASCII (an ASCII one is its own
        NFC, so it matched as it is)."""
        def nfc(text: str) -> str:
            return unicodedata.normalize("NFC", text)

        typed = str(resolved(expanded(ref)))
        path, name = nfc(typed), nfc(Path(ref).name)
        sql = f"SELECT {_TRACK_COLS} FROM tracks"
        if typed.isascii() and Path(ref).name.isascii():
            rows = self._query(sql + " WHERE typeof(path)='blob' OR length(CAST(path AS BLOB)) > length(path) "
                               "ORDER BY id")  # more bytes than characters: not ASCII
        else:
            rows = self._query(sql + " ORDER BY id")
        at = [r for r in rows if nfc(from_db_path(r["path"])) == path]
        return at or [r for r in rows if nfc(os.path.basename(from_db_path(r["path"]))) == name]

    def remove_tracks(self, paths: Iterable[str]) -> int:
        """Forget tracks by path (their vectors stay cached by content hash until `mess check --reclaim`)."""
        with self._write():
            return sum(self.db.execute("DELETE FROM tracks WHERE path=?", (to_db_path(p),)).rowcount for p in paths)

    def all_paths(self) -> list[str]:
        """Every path in the catalog."""
        return [from_db_path(r[0]) for r in self._query("SELECT path FROM tracks ORDER BY id")]

