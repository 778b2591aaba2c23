"""The feature store: one folder holding the SQLite catalog and float16 vector files.

Layout::

    STORE/catalog.sqlite
    STORE/runs/<run_id>/track/<layer>.f16     one row per (run, content hash)
    STORE/runs/<run_id>/segment/<layer>.f16   one row per window
    STORE/runs/<run_id>/derived/<name>.f16    e.g. fused vectors, aligned to track rows
    STORE/indexes/, STORE/reports/            written by search and probing
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import re
import shlex
import sqlite3
import sys
import threading
import time
import unicodedata
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from mess.constants import DEFAULT_MAX_WINDOWS, DEFAULT_STORE, DEFAULT_WINDOW_SECONDS, file_title, legacy_stamp
from mess.store.arrays import DTYPE, RowFile, ShortFile, set_aside
from mess.store.catalog import closed_on_error, connect, has_column
from mess.store.checksums import block_sum, changed, expected, pack, row_expected, row_sums
from mess.store.lock import LockUnusable, StoreLock
from mess.store.memo import MEMO
from mess.store.paths import expanded, from_db_path, printable, replace_file, resolved, to_db_path, unprinted
from mess.store.wal import lost_commits, note

CATALOG_ADVICE = (
    "restore catalog.sqlite from a backup, or move the store aside and extract again "
    "(`mess check --repair` cannot rebuild a catalog)"
)
T = TypeVar("T")
_CONNECTIONS = itertools.count()


class StoreError(Exception):
    """A request the store cannot answer (unknown run, track or layer)."""


class StoreDamaged(StoreError):
    """The store's files disagree with its catalog; the message names what and how to repair it."""


class DerivedRewritten(StoreError):
    """The file of a derived set (fused, ...) that the catalog version being read names is gone: ``fuse apply``
    rewrote the set twice since (or it was deleted). Read again on a newer version (see :meth:`FeatureStore.reading`).
    """


class TrackFailed(StoreError):
    """The track asked for failed to extract, so it has no vectors; the message names it and the recorded reason."""

    def __init__(self, message: str, path: str) -> None:
        """``message`` names the file at ``path`` (kept, so a server can show the file name alone)."""
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class Track:
    """One audio file in the collection, with its tags."""

    id: int
    path: str
    content_hash: str
    duration: float | None
    artist: str | None
    album: str | None
    title: str | None
    genre: str | None
    composer: str | None

    @property
    def name(self) -> str:
        """A human label: 'artist - title', falling back to the file name (printable: caf\\xe9 for a non-UTF-8 one)."""
        title = self.title or printable(file_title(self.path))  # 'b' for 'b.flac.', as extraction reads names
        return f"{self.artist} - {title}" if self.artist else title

    @property
    def content_key(self) -> tuple[str, str]:
        """(content hash, path): the order of a collection's tracks whatever ids the store gave them. `mess extract`
        numbers new tracks in its input order, so a store that grew in steps (files added, or an extraction of a
        subset first) numbers one collection otherwise than one extraction of it all; a seeded step that picks rows
        by position (a sample, a permutation, k-means starts, batches) sorts by this first."""
        return self.content_hash, self.path

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Track:
        """A track from a catalog row holding the columns of ``_TRACK_COLS``."""
        return cls(**{**dict(row), "path": from_db_path(row["path"])})

    def label(self, field: str) -> str | None:
        """A metadata field by name (artist, album, genre, composer, title)."""
        return getattr(self, field)


@dataclass(frozen=True)
class RunKey:
    """What a run's vectors come from, as plain data (the store knows no model or audio types).

    ``model``, ``revision`` and ``policy`` (the window policy's canonical JSON, see
    ``mess.audio.windows.WindowPolicy.to_json``) identify the run; the rest describes its
    vectors. The extract layer builds it from a model and a policy (``mess.extract.runs.run_key``).
    """

    model: str
    revision: str
    policy: str
    sample_rate: int
    layer_names: tuple[str, ...]
    layer_dims: tuple[int, ...]


@dataclass(frozen=True)
class Run(RunKey):
    """A (model, revision, window policy) combination whose vectors live in the store: its key and its id.

    ``policy`` is the window policy's canonical JSON, as stored (``WindowPolicy.from_json`` reads it).
    """

    id: int = field(kw_only=True)

    def layer_index(self, layer: str | int) -> int:
        """Resolve a layer name, index or negative index ('-1' = last) to an index. An index in text is 1 to 18
        ASCII digits: not ' 1', '1_0' or '١', which int() reads as numbers, nor 5000 digits, which it refuses."""
        if isinstance(layer, str) and layer in self.layer_names:
            return self.layer_names.index(layer)
        if isinstance(layer, str) and not re.fullmatch(r"-?[0-9]{1,18}", layer):
            raise StoreError(f"unknown layer {layer!r}; {self.model} has {', '.join(self.layer_names)}")
        idx = int(layer)
        if not -len(self.layer_names) <= idx < len(self.layer_names):
            raise StoreError(f"layer {idx} out of range; {self.model} has {len(self.layer_names)} layers")
        return idx % len(self.layer_names)


class TrackList(tuple[Track, ...]):
    """Tracks read from one catalog version of one open store (see :meth:`FeatureStore.cached`)."""

    scope: tuple[str, int]
    version: tuple[int, int]
    query: Hashable

    def __new__(cls, tracks: Iterable[Track], scope: tuple[str, int], version: tuple[int, int],
                query: Hashable) -> TrackList:
        """The tracks, with the store connection (``scope``) and catalog version they were read at, and
        which tracks they are (``query``: the run and artist asked for)."""
        self = super().__new__(cls, tracks)
        self.scope, self.version, self.query = scope, version, query
        return self

    def __reduce__(self) -> tuple[type, tuple[tuple[Track, ...]]]:
        """Pickled as a plain tuple: another process has its own store connections."""
        return tuple, (tuple(self),)


@dataclass(frozen=True)
class TrackVectors:
    """What extraction hands the store for one file."""

    content_hash: str
    layers: Sequence[np.ndarray]  # per layer: [dim] track vector
    segments: Sequence[np.ndarray]  # per layer: [n_segments, dim]
    seg_starts: Sequence[float]


def is_track_id(text: str) -> bool:
    """Whether ``text`` is a track id: ASCII digits only (``str.isdigit`` also passes '²', which int() refuses,
    and '١', which int() reads as 1)."""
    return text.isascii() and text.isdigit()


def _schema_missing(db: sqlite3.Connection) -> bool:
    try:
        return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='vectors'").fetchone() is None
    except sqlite3.DatabaseError:
        return False  # an unreadable catalog: the check below names it


def _lost_catalog(db: Path) -> str | None:
    """'missing' or 'empty' (zero bytes, no write-ahead log holding a first writer's tables) for a catalog file
    that holds nothing; None for one that may."""
    if not db.exists():
        return "missing"
    wal = db.with_name(db.name + "-wal")
    if db.stat().st_size == 0 and not (wal.exists() and wal.stat().st_size):
        return "empty"
    return None


def _file_system_note(root: Path) -> str:
    """Why the file system holding ``root`` may refuse SQLite (which says only 'disk I/O error' or 'unable to open
    database file'): '; it is on a read-only file system: ...', '; its disk is full (0 kB free): ...' (under 1 MB
    left); '' otherwise."""
    folder = next((p for p in (root, *root.absolute().parents) if p.exists()), root)
    try:
        st = os.statvfs(folder)
    except OSError:
        return ""
    if st.f_flag & os.ST_RDONLY:
        return "; it is on a read-only file system: open it read-only (search, export) or mount it writable"
    free = st.f_bavail * st.f_frsize
    return f"; its disk is full ({free // 1000} kB free): free space and run the command again" if free < 1e6 else ""


def _command_name() -> str:
    """What this process is, for the lock holder note: 'mess extract', 'python bench.py', ..."""
    argv = [a for a in sys.argv[:2] if a] or ["python"]
    return " ".join([argv[0].rsplit("/", 1)[-1], *argv[1:]])


_TRACK_COLS = "id, path, content_hash, duration, artist, album, title, genre, composer"
# A new track's id: above every id in the catalog and every id it ever held (``track_ids``, kept by a trigger on
# delete), so an id never comes to name another file after a prune.
_KNOWN_DURATION = ("COALESCE((SELECT d.duration FROM tracks d WHERE d.content_hash=:content_hash "
                   "AND d.duration IS NOT NULL LIMIT 1), :duration)")
_READ_TRIES = 3  # reads of a derived set that fuse apply rewrites twice while it is read, each time (see reading)
_NEW_TRACK_ID = "(SELECT MAX(COALESCE(MAX(id), 0), COALESCE((SELECT MAX(high) FROM track_ids), 0)) + 1 FROM tracks)"


class FeatureStore:
    """Read and write tracks, runs and vectors under one folder.

    One instance may be shared by a process's threads (`mess extract` decodes in several): every use of its SQLite
    connection, fetching the rows included, holds one re-entrant lock, so threads take turns and never read
    inside another thread's transaction.
    """

    def __init__(
        self,
        root: str | Path = DEFAULT_STORE,
        *,
        readonly: bool = False,
        verify: bool = True,
        on_wait: Callable[[str], None] | None = None,
        create: bool = True,
    ) -> None:
        """Open (or, unless ``readonly`` or ``create`` is False, create) the store at ``root``.

        With ``verify`` the catalog's integrity and every row file's size are checked
        (a few stat calls per run): a damaged store raises :class:`StoreDamaged`
        naming what is wrong and `mess check --repair`. ``on_wait`` hears when a
        write has to wait for another process's write lock.
        """
        if not str(root):  # an unset variable: not the working folder, which Path('') is
            raise StoreError("the store path is empty: give the store's folder (`mess extract` wrote ./.mess)")
        self.root = expanded(root)  # '~' is the home folder, not a folder named '~' in the working one
        db = self.root / "catalog.sqlite"
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root} is a file, not a feature store folder")
        if self.root.is_symlink() and not self.root.exists():  # a folder cannot be made there
            raise StoreError(f"{self.root} is a link to {self.root.readlink()}, which does not exist (or links "
                             "back); create that folder or give another --store")
        if db.exists() and not db.is_file():  # SQLite says only 'disk I/O error' or 'unable to open database file'
            raise StoreDamaged(f"{self.root} is damaged: its catalog (catalog.sqlite) is a folder or a device, not a "
                               f"file; {CATALOG_ADVICE}")
        lost = _lost_catalog(db)
        if lost and any((self.root / "runs").glob("*/*/*.f16")):  # a new catalog would orphan them
            raise StoreDamaged(f"{self.root} is damaged: its catalog (catalog.sqlite) is {lost} but it holds "
                               f"vectors (runs/); {CATALOG_ADVICE}")
        if (readonly or not create) and not db.exists():
            raise StoreError(f"no feature store at {self.root} (run `mess extract` first)")
        self.lock = StoreLock(self.root)
        self.lost_commits_unnoted: str | None = None  # what lost_commits says when the store's note cannot keep it
        self.lost_commits = self._lost_commits(db)
        try:
            self.db = connect(db, readonly=readonly)
        except (OSError, sqlite3.OperationalError) as exc:
            note = _file_system_note(self.root)
            raise StoreError(f"cannot open a feature store at {self.root} ({exc}){note}") from None
        except sqlite3.DatabaseError as exc:
            raise StoreDamaged(
                f"{self.root} is damaged: the catalog cannot be read ({exc}); {CATALOG_ADVICE}"
            ) from None
        if readonly and _schema_missing(self.db):  # a first writer created the file, not yet its tables
            self.db.close()
            raise StoreError(f"no feature store at {self.root} yet (run `mess extract` first)")
        self.readonly = readonly
        self.on_wait = on_wait
        self._lock = threading.RLock()
        self._scope = (str(self.root), next(_CONNECTIONS))  # version tokens only compare within one connection
        weakref.finalize(self, MEMO.forget, self._scope)
        if verify:
            from mess.store.check import quick_check

            with closed_on_error(self.db):
                problems = quick_check(self)
            if problems:
                self.db.close()
                advice = (
                    CATALOG_ADVICE
                    if problems[0].kind == "catalog"
                    else "run `mess check` for details and `mess check --repair` to fix it"
                )
                raise StoreDamaged(
                    f"{self.root} is damaged: {problems[0].message}"
                    + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else "")
                    + f"; {advice}"
                )

    def _lost_commits(self, db: Path) -> str | None:
        """Commits a damaged WAL file (``catalog.sqlite-wal``) holds past the damage, which SQLite is about to drop
        silently: noted in the store for `mess check` (see :mod:`mess.store.wal`) and said here, one line; None when
        none. Read before SQLite opens the file (its recovery and the next write erase the evidence), and only
        while no writer holds the lock (one appending or restarting the log would make a torn read)."""
        wal = db.with_name(db.name + "-wal")
        try:
            if not wal.stat().st_size:
                return None
        except OSError:
            return None
        with self.lock.trying() as held:
            damage = lost_commits(wal) if held else None
        if damage is None:
            return None
        message, kept = note(self.root, damage)
        self.lost_commits_unnoted = None if kept else message
        return message

    def close(self) -> None:
        """Close the catalog connection (and drop what the memo holds for it)."""
        MEMO.forget(self._scope)
        with self._lock:
            self.db.close()

    # ---- the write lock ---------------------------------------------------------------
    def writing(
        self, command: str, *, wait: bool = True, on_wait: Callable[[str], None] | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """Hold the store's inter-process write lock for a whole job (see :class:`StoreLock`)."""
        if self.readonly:
            raise StoreError(f"{self.root} was opened read-only")
        return self._holding(command, wait=wait, on_wait=on_wait or self.on_wait)

    @contextmanager
    def _holding(self, command: str, *, wait: bool = True,
                 on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """The write lock held for a block; a lock file that is not a file (a folder) is StoreDamaged naming it."""
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self.lock.hold(command, wait=wait, on_wait=on_wait))
            except LockUnusable as exc:
                raise StoreDamaged(str(exc)) from None
            yield

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside the block all see one catalog version, whatever other processes commit meanwhile (other
        threads' calls wait for the block to end)."""
        with self._lock:
            if self.db.in_transaction:
                yield
                return
            self.db.execute("BEGIN")
            try:
                yield
            finally:
                self.db.rollback()

    def reading(self, read: Callable[[], T]) -> T:
        """``read()`` inside one snapshot; where a derived set it reads was rewritten twice meanwhile (`fuse apply`
        deletes the file of the version before the last: :class:`DerivedRewritten`), read again on the newest
        version, up to ``_READ_TRIES`` times in all. Inside an outer snapshot it reads once: that one's reader, the
        outermost, reads again."""
        with self._lock:
            outer = self.db.in_transaction
        attempt = 1
        while True:
            try:
                with self.snapshot():
                    return read()
            except DerivedRewritten:
                if outer or attempt >= _READ_TRIES:
                    raise
                attempt += 1

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write: this process's threads in turn, under the inter-process lock, in one transaction.

        A write the system refuses (a full disk, a read-only or failing file system) is a StoreError
        naming the cause: the transaction is rolled back and everything committed before is kept.
        """
        try:
            with self._lock, self._holding(_command_name(), on_wait=self.on_wait), self.db:
                yield
        except sqlite3.DatabaseError as exc:
            if type(exc) is sqlite3.DatabaseError:  # SQLite found a damaged page: the catalog is damaged, not the disk
                raise self._catalog_damaged(exc) from None
            if not isinstance(exc, sqlite3.OperationalError):
                raise
            raise self._write_refused(exc) from None
        except OSError as exc:
            raise self._write_refused(exc) from None

    def _write_refused(self, exc: OSError | sqlite3.OperationalError) -> StoreError:
        """The StoreError of a write the system refused."""
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if isinstance(exc, OSError) and exc.filename:
            reason = f"{printable(str(exc.filename))}: {reason}"
        return StoreError(f"cannot write to the store at {self.root} ({reason}); what was written before is "
                          "kept: fix the cause (free disk space, say) and run the command again")

    def _catalog_damaged(self, exc: sqlite3.DatabaseError) -> StoreDamaged:
        """What a read or write says when SQLite finds a damaged page of the catalog ('database disk image is
        malformed'): opening the store reads only some of its pages, so a query may be the first to meet it."""
        return StoreDamaged(f"{self.root} is damaged: the catalog cannot be read ({exc}); {CATALOG_ADVICE}")

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[sqlite3.Row]:
        """All rows of one read, executed and fetched while this thread holds the connection (StoreDamaged when
        SQLite finds the catalog damaged)."""
        with self._lock:
            try:
                return self.db.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as exc:
                if type(exc) is not sqlite3.DatabaseError:
                    raise
                raise self._catalog_damaged(exc) from None

    def _one(self, sql: str, args: Sequence[object] = ()) -> sqlite3.Row | None:
        """The first row of one read (:meth:`_query`), or None."""
        rows = self._query(sql, args)
        return rows[0] if rows else None

    def _has_column(self, table: str, column: str) -> bool:
        """Whether the catalog's ``table`` has ``column`` (see :func:`has_column`)."""
        with self._lock:
            return has_column(self.db, table, column)

    # ---- change token and memo ------------------------------------------------------
    def version(self) -> tuple[int, int]:
        """A token that changes whenever the catalog may have changed.

        ``PRAGMA data_version`` changes when another connection (another FeatureStore,
        another process such as a running ``mess extract``) commits; ``total_changes``
        counts this connection's own inserts, updates and deletes. Vector files are
        written before the catalog rows that reference them, so every change a reader
        can see moves this token. It costs one tiny SQLite statement.
        Tokens compare only within one FeatureStore: a connection opened later can
        repeat the token an older one had at another catalog version.
        """
        with self._lock:
            return int(self.db.execute("PRAGMA data_version").fetchone()[0]), self.db.total_changes

    def cached(self, key: Hashable, make: Callable[[], T], *, tracks: Sequence[Track] | None = None) -> T:
        """``make()``, kept in the process's memo (:mod:`mess.store.memo`) until :meth:`version` changes.

        ``make`` must read what it needs from this store (not from data fetched before the
        call): the token is read first, so a value is never older than its token. With
        ``tracks`` (what :meth:`tracks` returned), ``make`` reads them instead and the value is
        kept for the catalog version they were read at; any other sequence is not memoised.
        Cached values are shared between callers; return immutable data.
        """
        if tracks is None:
            return MEMO.get(self._scope, self.version(), key, make)
        if isinstance(tracks, TrackList) and tracks.scope == self._scope:
            return MEMO.get(self._scope, tracks.version, (tracks.query, key), make)
        return make()

    @property
    def reports_dir(self) -> Path:
        """Where probe, evaluation and fusion reports are written."""
        return self.root / "reports"

    @property
    def indexes_dir(self) -> Path:
        """Where FAISS indexes are written."""
        return self.root / "indexes"

    # ---- tracks -------------------------------------------------------------------
    def upsert_track(
        self,
        path: Path,
        content_hash: str,
        size: int,
        mtime: float,
        info: dict[str, object],
        tags: dict[str, str | None],
        *,
        stamp: str = "",
    ) -> int:
        """Insert or update a track by path; returns its id. ``stamp`` is the file's change stamp.

        The duration is the one already catalogued for the same content when there is one (a header's claim that
        decoding corrected, see :meth:`set_duration`, stays corrected when the file is inspected again).
        """
        row = {
            "path": to_db_path(path),
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
            self.db.execute(
                f"INSERT INTO tracks (id, {cols}) VALUES ({_NEW_TRACK_ID}, {marks}) "
                f"ON CONFLICT(path) DO UPDATE SET {updates}", row
            )
            self.db.execute("DELETE FROM failures WHERE content_hash=?", (_unread_key(str(path)),))  # readable now
            return int(self.db.execute("SELECT id FROM tracks WHERE path=?", (row["path"],)).fetchone()[0])

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
        :meth:`cached`).
        """
        version, query = self.version(), ("tracks", None if run is None else run.id, artist)
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
            raise StoreError(f"unknown track {ref!r}")
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
        """Forget tracks by path (their vectors stay cached by content hash)."""
        with self._write():
            return sum(self.db.execute("DELETE FROM tracks WHERE path=?", (to_db_path(p),)).rowcount for p in paths)

    def all_paths(self) -> list[str]:
        """Every path in the catalog."""
        return [from_db_path(r[0]) for r in self._query("SELECT path FROM tracks ORDER BY id")]

    # ---- runs ---------------------------------------------------------------------
    def ensure_run(self, key: RunKey) -> Run:
        """Get or create the run of this model, revision and window policy."""
        if not key.layer_dims or min(key.layer_dims) < 1:  # rows of no values read back as damage ("run check")
            raise StoreError(f"{key.model} gives layers of sizes {list(key.layer_dims)}; every layer needs values")
        with self._write():
            self.db.execute(
                "INSERT OR IGNORE INTO runs (model, revision, policy, sample_rate, layer_names, layer_dims, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key.model,
                    key.revision,
                    key.policy,
                    key.sample_rate,
                    json.dumps(list(key.layer_names)),
                    json.dumps(list(key.layer_dims)),
                    time.time(),
                ),
            )
            row = self.db.execute(
                "SELECT * FROM runs WHERE model=? AND revision=? AND policy=?", (key.model, key.revision, key.policy)
            ).fetchone()
        run = self._run(row)
        if (run.sample_rate, run.layer_dims) != (key.sample_rate, tuple(key.layer_dims)):  # rows of other sizes: damage
            raise StoreError(f"{key.model} revision {key.revision} now makes layers of sizes {list(key.layer_dims)} at "
                             f"{key.sample_rate} Hz, but its run {run.id} here holds {list(run.layer_dims)} at "
                             f"{run.sample_rate} Hz: a model whose layers change needs a new revision "
                             "(ModelInfo.revision)")
        return run

    def runs(self) -> list[Run]:
        """All runs, oldest first."""
        return [self._run(r) for r in self._query("SELECT * FROM runs ORDER BY id")]

    def run(self, model: str | None = None) -> Run:
        """The run of ``model`` (a name or local model folder) that covers the most tracks, the newest of equals.

        A model extracted again with another window policy or revision has a second run; until that run holds as
        many of the collection's tracks, commands keep answering from the first (the newest run alone would hide
        every track it lacks). ``NAME@RUN_ID`` or ``run:RUN_ID`` picks one run (the ids `mess info` lists). With
        ``model`` None: the store's ``default-model`` setting (a StoreError when that model has no run here), else the
        best model extracted (see :mod:`mess.store.config`), not the latest run.
        """
        from mess.store.config import ConfigError, model_key, preferred_model, read_config, run_choice

        runs = self.runs()
        names = [r.model for r in runs]
        if model:
            try:
                choice = run_choice(model, names)
            except ConfigError as exc:
                raise StoreError(str(exc)) from None
            if choice is not None:
                return _chosen_run(runs, *choice)
            model = model_key(model, names)
        else:
            try:
                model = preferred_model(names, read_config(self.root).get("default-model"))
            except ConfigError as exc:
                raise StoreError(str(exc)) from None
        sql = ("SELECT r.*, (SELECT COUNT(*) FROM tracks t JOIN vectors v ON v.content_hash = t.content_hash"
               " AND v.run_id = r.id) AS covered FROM runs r")
        args: tuple[str, ...] = ()
        if model:
            sql, args = sql + " WHERE r.model=?", (model,)
        row = self._one(sql + " ORDER BY covered DESC, r.id DESC LIMIT 1", args)
        if row is None:
            known = sorted({r.model for r in self.runs()})
            if not model:  # no run at all: an extract stopped before it embedded, or made none
                raise StoreError(f"no vectors in {self.root} yet; run `mess extract` first")
            raise StoreError(f"no vectors for model {model!r} in {self.root}; extracted models: {known or 'none'}")
        return self._run(row)

    def _run(self, row: sqlite3.Row) -> Run:
        """A run from its catalog row; a row whose layers cannot be read (damaged bytes) is :class:`StoreDamaged`."""
        try:
            names, dims = json.loads(row["layer_names"]), json.loads(row["layer_dims"])
        except (ValueError, TypeError):  # not JSON, or not text (UnicodeDecodeError is a ValueError)
            names = dims = None
        if not (isinstance(names, list) and isinstance(dims, list) and len(names) == len(dims)
                and all(isinstance(n, str) for n in names)
                and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims)):
            raise StoreDamaged(f"{self.root} is damaged: the catalog's record of run {row['id']} "
                               f"({printable(str(row['model']))}) does not list its layers; {CATALOG_ADVICE}")
        return Run(
            model=row["model"],
            revision=row["revision"],
            policy=row["policy"],
            sample_rate=row["sample_rate"],
            layer_names=tuple(names),
            layer_dims=tuple(dims),
            id=row["id"],
        )

    # ---- where a run's model came from ---------------------------------------------------
    def model_source_path(self, run: Run) -> Path:
        """``runs/ID/source.json``: the record :meth:`set_model_source` writes."""
        return self.root / "runs" / str(run.id) / "source.json"

    def set_model_source(self, run: Run, source: dict[str, str]) -> None:
        """Record, as plain data, how to load the run's model again where its name cannot (an ``.onnx`` file's
        path, preset and revision), replacing the record whole (atomically), under the write lock.

        A hint for embedding new files, never trusted as is: the loader checks the file against the run's revision.
        """
        with self._write():
            replace_file(self.model_source_path(run), (json.dumps(source, indent=1, sort_keys=True) + "\n").encode())

    def extract_options(self, run: Run) -> str:
        """The options `mess extract FOLDER` takes to embed files into ``run`` (not a new run): ``--model`` and the
        model file (with its ``--preset``) an ``.onnx`` run records (its name, the file's stem, loads no model), else
        ``--model`` and the run's model name; then ``--window`` and ``--max-windows`` where not the defaults."""
        try:
            source = self.model_source(run)
        except StoreError:  # a damaged record: the run's name is all there is to say
            source = None
        if source and "path" in source:
            preset = f" --preset {shlex.quote(source['preset'])}" if source.get("preset") else ""
            options = f"--model {shlex.quote(source['path'])}{preset}"
        else:
            options = f"--model {run.model}"
        policy = json.loads(run.policy)
        if (window := policy.get("window_seconds", DEFAULT_WINDOW_SECONDS)) != DEFAULT_WINDOW_SECONDS:
            options += f" --window {float(window)!r}".removesuffix(".0")  # exact (:g gave 12.3457)
        if (count := policy.get("max_windows", DEFAULT_MAX_WINDOWS)) != DEFAULT_MAX_WINDOWS:
            options += f" --max-windows {count}"
        return options

    def model_source(self, run: Run) -> dict[str, str] | None:
        """The run's record of where its model came from (see :meth:`set_model_source`); None when it has none.

        Raises StoreError (one line) when the record cannot be read or is not a JSON object of strings.
        """
        path = self.model_source_path(run)
        where = f"runs/{run.id}/source.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {where} in the store at {self.root} ({exc.strerror or exc}), the record "
                             f"of where {run.model}'s model file came from") from None
        try:
            record = json.loads(data)
        except ValueError:
            record = None
        if not (isinstance(record, dict) and record and all(isinstance(v, str) for v in record.values())):
            raise StoreError(f"{where} in the store at {self.root}, the record of where {run.model}'s model file came "
                             "from, is damaged; run `mess extract` with the model file again to record it anew")
        return record

    # ---- vectors ------------------------------------------------------------------
    def row_file(self, run: Run, level: str, layer: int) -> RowFile:
        """The float16 row file of one layer at one level ('track' or 'segment')."""
        return RowFile(self.root / "runs" / str(run.id) / level / f"{layer:03d}.f16", run.layer_dims[layer])

    def catalog_rows(self, run: Run) -> tuple[int, int]:
        """(track rows, segment rows) that the catalog references: row files hold at least these."""
        track_rows, seg_rows = self._query(
            "SELECT COALESCE(MAX(track_row)+1, 0), COALESCE(MAX(seg_row+n_segments), 0) FROM vectors WHERE run_id=?",
            (run.id,),
        )[0]
        return int(track_rows), int(seg_rows)

    def has_vectors(self, run: Run, content_hash: str) -> bool:
        """Whether this content was already embedded in this run."""
        return self._one("SELECT 1 FROM vectors WHERE run_id=? AND content_hash=?", (run.id, content_hash)) is not None

    def write_vectors(self, run: Run, items: Sequence[TrackVectors]) -> None:
        """Write vectors at the rows after the catalog's last, then commit their catalog rows with the
        rows' checksums (:mod:`mess.store.checksums`).

        Under the write lock, so positions come from the catalog alone: bytes a killed
        writer left past them are overwritten, never referenced. Vectors not finite as stored
        (NaN, infinity, or past float16's largest value, 65504) are refused (ValueError) before
        anything is written, and so are vectors whose shapes are not the run's layers (one vector each, a row per
        start time of its windows).
        """
        for it in items:
            shapes = [np.shape(v) for v in it.layers], [np.shape(v) for v in it.segments]
            if shapes != ([(d,) for d in run.layer_dims], [(len(it.seg_starts), d) for d in run.layer_dims]):
                raise ValueError(f"vectors for content {it.content_hash} do not fit {run.model}'s layers of sizes "
                                 f"{list(run.layer_dims)} (track vectors of shapes {shapes[0]}, windows of shapes "
                                 f"{shapes[1]} for {len(it.seg_starts)} start times)")
        with np.errstate(over="ignore"):  # a value past float16's range becomes infinity: refused below
            for it in items:
                if not all(np.isfinite(np.asarray(v, dtype=DTYPE)).all() for v in (*it.layers, *it.segments)):
                    raise ValueError(f"non-finite vectors for content {it.content_hash} (as stored: NaN, infinite "
                                     "or past float16's largest value, 65504)")
        with self._write():
            unique = {it.content_hash: it for it in items if not self.has_vectors(run, it.content_hash)}
            items = list(unique.values())
            if not items:
                return
            track_row, seg_row = self.catalog_rows(run)
            layers = range(len(run.layer_names))
            tracks = [[np.asarray(it.layers[i], dtype=DTYPE) for i in layers] for it in items]  # as stored
            segments = [[np.asarray(it.segments[i], dtype=DTYPE) for i in layers] for it in items]
            try:
                for i in layers:
                    self.row_file(run, "track", i).write_at(track_row, np.stack([t[i] for t in tracks]))
                    self.row_file(run, "segment", i).write_at(seg_row, np.concatenate([s[i] for s in segments]))
            except ValueError as exc:
                raise StoreDamaged(
                    f"{exc}; the catalog references rows the file lacks: run `mess check --repair`"
                ) from None
            now = time.time()
            rows = []
            for n, it in enumerate(items):
                sums = pack([block_sum(v) for v in tracks[n]], [block_sum(v) for v in segments[n]])
                starts = json.dumps([round(float(s), 3) for s in it.seg_starts])
                rows.append((run.id, it.content_hash, track_row + n, seg_row, len(it.seg_starts), starts, now, sums))
                seg_row += len(it.seg_starts)
            self.db.executemany(
                "INSERT INTO vectors (run_id, content_hash, track_row, seg_row, n_segments, seg_starts, created_at, "
                "checksums) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self.db.executemany(
                "DELETE FROM failures WHERE run_id=? AND content_hash=?", [(run.id, it.content_hash) for it in items]
            )

    def record_failure(self, run: Run, content_hash: str, path: str, reason: str) -> None:
        """Remember why a file could not be embedded (files never hashed are keyed by their path)."""
        with self._write():
            self.db.execute(
                "INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?)",
                (run.id, content_hash or _unread_key(path), to_db_path(path), printable(reason), time.time()),
            )

    def failures(self, run: Run) -> list[tuple[str, str]]:
        """(path, reason) of each file that failed in this run, as the files are now.

        A failure is kept per content, so every catalogued file with that content is listed (the reason
        naming each); a file whose content has changed since is not. Files never hashed are listed by path.
        """
        shared = self._query(
            "SELECT t.path, f.path, f.reason FROM failures f JOIN tracks t ON t.content_hash = f.content_hash "
            "WHERE f.run_id=? ORDER BY f.at, t.path",
            (run.id,),
        )
        unread = self._query(
            "SELECT path, path, reason FROM failures WHERE run_id=? AND content_hash LIKE 'path:%' ORDER BY at",
            (run.id,),
        )
        out = []
        for now, then, reason in [*shared, *unread]:
            path = from_db_path(now)
            out.append((path, reason.replace(printable(from_db_path(then)), printable(path))))
        return out

    def failure(self, run: Run, track: Track) -> str | None:
        """Why ``track``'s content failed to extract in ``run`` (the recorded reason, naming the file as it is now,
        less the 'PATH: ' it starts with: the caller names the track), or None when no failure is recorded."""
        row = self._one("SELECT path, reason FROM failures WHERE run_id=? AND content_hash=?",
                        (run.id, track.content_hash))
        if row is None:
            return None
        return _reason_alone(str(row[1]).replace(printable(from_db_path(row[0])), printable(track.path)), track.path)

    def unread_failure(self, ref: str | Path) -> tuple[str, str] | None:
        """(path, reason) of the latest failure, in any run, of a file never read (so not catalogued) at ``ref``:
        a path, or a file name when one such file has it; None when there is none. The reason is without the
        'PATH: ' it was recorded with (the caller names the file)."""
        rows = self._query("SELECT path, reason FROM failures WHERE content_hash LIKE 'path:%' ORDER BY at DESC")
        latest: dict[str, str] = {}
        for path, reason in rows:
            latest.setdefault(from_db_path(path), _reason_alone(str(reason), from_db_path(path)))
        exact = str(resolved(expanded(ref)))
        if exact in latest:
            return exact, latest[exact]
        named = [(path, reason) for path, reason in latest.items() if Path(path).name == Path(ref).name]
        return named[0] if len(named) == 1 else None

    def unembedded(self, run: Run) -> list[str]:
        """Paths of catalogued files with neither vectors nor a recorded failure in ``run``, by id: no answer from
        the run includes them. An interrupted or running `mess extract` leaves such files, and so does a damaged
        content hash (tracks meet their vectors by it); `mess extract` embeds them."""
        if self._query("SELECT COUNT(*) FROM tracks")[0][0] == len(self.tracks(run)):
            return []  # the common case, at the cost of one count
        rows = self._query(
            "SELECT path FROM tracks t WHERE NOT EXISTS (SELECT 1 FROM vectors v WHERE v.run_id=? AND "
            "v.content_hash=t.content_hash) AND NOT EXISTS (SELECT 1 FROM failures f WHERE f.run_id=? AND "
            "f.content_hash=t.content_hash) ORDER BY t.id", (run.id, run.id))
        return [from_db_path(r[0]) for r in rows]

    def unread_paths(self) -> list[str]:
        """Paths of the failures of files that could not be read at all (never hashed), in every run."""
        rows = self._query("SELECT DISTINCT path FROM failures WHERE content_hash LIKE 'path:%'")
        return [from_db_path(r[0]) for r in rows]

    def forget_unread(self, paths: Iterable[str]) -> None:
        """Drop the failures of these never-read files (gone from disk, say), in every run."""
        with self._write():
            self.db.executemany("DELETE FROM failures WHERE content_hash=?", [(_unread_key(p),) for p in paths])

    def _rows(self, run: Run) -> list[sqlite3.Row]:
        sums = "v.checksums" if self._has_column("vectors", "checksums") else "NULL AS checksums"  # older, read-only
        return self._query(
            f"SELECT t.id AS track_id, v.content_hash, v.track_row, v.seg_row, v.n_segments, v.seg_starts, {sums} "
            "FROM tracks t JOIN vectors v ON v.content_hash=t.content_hash AND v.run_id=? ORDER BY t.id",
            (run.id,),
        )

    def _read(self, run: Run, level: str, layer: int, rows: list[sqlite3.Row]) -> tuple[np.ndarray, np.ndarray]:
        """(track id per vector, float32 vectors) of one layer at ``level`` for catalog ``rows``: a track row each,
        or its block of segment rows. A short file, a non-finite value or bytes that differ from their checksum
        raise StoreDamaged."""
        if level == "track":
            starts, counts = np.array([r["track_row"] for r in rows], dtype=np.int64), np.ones(len(rows), np.int64)
        else:
            starts = np.array([r["seg_row"] for r in rows], dtype=np.int64)
            counts = np.array([r["n_segments"] for r in rows], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        take = np.repeat(starts - offsets[:-1], counts) + np.arange(offsets[-1])
        ids = np.repeat(np.array([r["track_id"] for r in rows], dtype=np.int64), counts)
        name = run.layer_names[layer]
        try:
            mat = self.row_file(run, level, layer).take(take.tolist())  # float16 on disk: exact in float32
        except ShortFile as exc:
            raise StoreDamaged(
                f"{self.root}: {run.model} {level} vectors of layer {name} stop at "
                f"row {exc.rows} but the catalog references row {take.max()}; "
                "run `mess check --repair`"
            ) from None
        bad = ~np.isfinite(mat).all(axis=1)
        if bad.any():
            raise StoreDamaged(
                f"{self.root}: non-finite {run.model} vectors (layer {name}) for "
                f"track ids {sorted(set(ids[bad].tolist()))[:5]}; run `mess check --repair`"
            )
        want = expected([r["checksums"] for r in rows], level, layer, len(run.layer_names))
        wrong = changed(mat, offsets[:-1], counts, want)
        if wrong.any():
            raise StoreDamaged(
                f"{self.root}: {run.model} {level} vectors (layer {name}) of track ids "
                f"{sorted(r['track_id'] for r, w in zip(rows, wrong, strict=True) if w)[:5]} differ from their "
                "checksums (changed on disk); run `mess check --repair`"
            )
        return ids, mat

    def layer_matrix(self, run: Run, layer: str | int) -> tuple[np.ndarray, np.ndarray]:
        """(track ids, float32 [n_tracks, dim]) of one layer's track vectors."""
        return self._read(run, "track", run.layer_index(layer), self._rows(run))

    def all_layers(self, run: Run) -> tuple[np.ndarray, np.ndarray]:
        """(track ids, float32 [n_tracks, n_layers, dim]) for models whose layers share one dim."""
        if len(set(run.layer_dims)) != 1:
            raise StoreError(f"{run.model} layers have different sizes {run.layer_dims}; read them one by one")
        mats = [self.layer_matrix(run, i) for i in range(len(run.layer_names))]
        return mats[0][0], np.stack([m for _, m in mats], axis=1)

    def segment_matrix(self, run: Run, layer: str | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(track id per segment, start seconds, float32 [n_segments, dim]) of one layer; StoreDamaged when two
        files' windows overlap (the open-time check sees shared track rows only)."""
        rows = self._rows(run)
        spans = sorted({r["content_hash"]: (r["seg_row"], r["n_segments"]) for r in rows}.values())
        if any(a[0] + a[1] > b[0] for a, b in zip(spans, spans[1:], strict=False)):
            raise StoreDamaged(f"{self.root}: two files' {run.model} window vectors point at the same rows; "
                               "run `mess check` for details and `mess check --repair` to fix it")
        seg_ids, mat = self._read(run, "segment", run.layer_index(layer), rows)
        starts = [s for r in rows for s in json.loads(r["seg_starts"])]
        return seg_ids, np.array(starts), mat

    def track_rows(self, run: Run) -> dict[str, int]:
        """content hash -> track row, for writing derived vectors aligned to rows."""
        return {
            r[0]: r[1] for r in self._query("SELECT content_hash, track_row FROM vectors WHERE run_id=?", (run.id,))
        }

    # ---- derived vectors (fused, ...) --------------------------------------------
    def write_derived(self, run: Run, name: str, content_hashes: Sequence[str], matrix: np.ndarray,
                      meta: dict) -> None:
        """Store per-track vectors computed from a run (e.g. fused), replacing older ones.

        Each vector goes to the row of the content it was computed from (``content_hashes``, as read), looked
        up under the write lock: a file re-embedded since it was read keeps no vector for its new content (it
        counts in :meth:`derived_missing`), and content the run no longer holds is skipped. Vectors not finite as
        stored (NaN, infinity, or past float16's largest value, 65504) are refused (ValueError) before anything is
        written, as :meth:`write_vectors` refuses them.
        """
        with np.errstate(over="ignore"):  # a value past float16's range becomes infinity: refused here
            bad = ~np.isfinite(np.asarray(matrix, dtype=DTYPE)).all(axis=tuple(range(1, np.ndim(matrix))))
        if bad.any():
            first = int(np.argmax(bad))
            content = content_hashes[first] if first < len(content_hashes) else f"of row {first}"
            raise ValueError(f"non-finite {name} vectors for content {content} (as stored: NaN, infinite or past "
                             "float16's largest value, 65504)")
        with self._write():
            rows = self.track_rows(run)
            dim = matrix.shape[1]
            full = np.full((max(rows.values(), default=-1) + 1, dim), np.nan, dtype=np.float32)
            for content_hash, vec in zip(content_hashes, matrix, strict=True):
                if content_hash in rows:
                    full[rows[content_hash]] = vec
            self._store_derived(run, name, full, meta)

    def _store_derived(self, run: Run, name: str, matrix: np.ndarray, meta: dict) -> None:
        """Write a derived set to a file of its own and point the catalog at it (in the caller's transaction).

        The catalog names the file (``meta["file"]``) and records its rows' checksums, so a reader, or a writer
        killed between the two steps, sees the old file with the old metadata and sums or the new with the new,
        never one with the other. The file replaced stays for readers still on the old catalog version; older
        ones go.
        """
        previous = self.derived_meta(run, name)
        folder = self.derived_path(run, name).parent
        file = f"{name}.{time.time_ns()}.f16"
        stored = np.asarray(matrix, dtype=DTYPE)
        RowFile(folder / file, matrix.shape[1]).replace(stored)
        now = time.time()  # in the metadata too, so caches keyed on it see every rewrite
        self.db.execute(
            "INSERT OR REPLACE INTO derived (run_id, name, dim, meta, created_at, checksums) VALUES (?, ?, ?, ?, ?, ?)",
            (run.id, name, matrix.shape[1],
             json.dumps({**meta, "written_at": now, "rows": len(matrix), "file": file}), now, row_sums(stored)),
        )
        keep = {file, _derived_file(name, previous)} if previous is not None else {file}
        for old in _derived_files(folder, name):
            if old.name not in keep:
                old.unlink(missing_ok=True)

    def derived_matrix(self, run: Run, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(track ids, float32 matrix) of derived vectors; tracks added since are left out. Rows that differ from
        their checksums raise StoreDamaged. A set rewritten twice while read is read again (:meth:`reading`)."""
        return self.reading(lambda: self._derived_matrix(run, name))

    def derived_elsewhere(self, run: Run, name: str, option: str) -> str:
        """Advice naming the other runs that hold derived vectors ``name`` ("dsp@1 has them: pick one with --model
        dsp@1, or "; ``option`` is what precedes the choice: "--model " or "model="), or "" when none does: naming
        them helps more than training another network for ``run``."""
        others = [r for r in self.runs() if r.id != run.id
                  and self._query("SELECT 1 FROM derived WHERE run_id=? AND name=?", (r.id, name))]
        if not others:
            return ""
        verb = "has" if len(others) == 1 else "have"
        return (f"{', '.join(f'{r.model}@{r.id}' for r in others)} {verb} them: pick one with {option}"
                f"{others[0].model}@{others[0].id}, or ")

    def _derived_matrix(self, run: Run, name: str) -> tuple[np.ndarray, np.ndarray]:
        found = [s for s in self.derived_sets(run) if s[0] == name]
        if not found:
            raise StoreError(f"no {name!r} vectors for {run.model}; {self.derived_elsewhere(run, name, '--model ')}"
                             "run `mess fuse train` and `mess fuse apply` first")
        _, file, sums = found[0]
        data = file.read()
        if not len(data) and not file.path.exists():  # looked at after the read: it may go while read
            raise DerivedRewritten(f"the {name} vectors of {run.model} are not where the catalog says "
                                   f"({file.path.name}): rewritten twice while read, each time it was read (try "
                                   "again), or deleted (`mess check --repair`)")
        pairs = [(r["track_id"], r["track_row"]) for r in self._rows(run) if r["track_row"] < len(data)]
        ids, rows = np.array([p[0] for p in pairs], dtype=np.int64), np.array([p[1] for p in pairs], dtype=np.int64)
        wrong = changed(data, rows, np.ones(len(rows), dtype=np.int64), row_expected(sums, len(data))[rows])
        if wrong.any():
            raise StoreDamaged(f"{self.root}: {run.model} {name} vectors of track ids {sorted(ids[wrong].tolist())[:5]}"
                               " differ from their checksums (changed on disk); run `mess check --repair`")
        mat = np.asarray(data[rows], dtype=np.float32)
        keep = np.isfinite(mat).all(axis=1)
        return ids[keep], mat[keep]

    def derived_missing(self, run: Run, name: str) -> int:
        """How many of the run's tracks have no derived ``name`` vector (added or re-embedded since it was written)."""
        return len(self.tracks(run)) - len(self.derived_matrix(run, name)[0])

    def forget_derived_rows(self, run: Run, rows: Iterable[int], keep: int) -> int:
        """Blank the derived vectors (fused, ...) of track ``rows`` and of every row from ``keep`` on (the catalog
        no longer holds them: a later file may be written there). Returns how many derived vectors were blanked.

        Call it under the write lock when vectors are dropped: derived vectors are stored by row, so a new file
        written to a freed row would otherwise be searched with the vector of the file that held it before.
        """
        rows, blanked = list(rows), 0
        derived_sets = self._query("SELECT name, dim, meta FROM derived WHERE run_id=?", (run.id,))
        for name, dim, meta in derived_sets:
            data = np.array(RowFile(self.derived_path(run, name), dim).read(), dtype=np.float32)
            drop = [r for r in rows if r < min(keep, len(data))]
            before = int(np.isfinite(data).all(axis=1).sum())
            data[drop] = np.nan
            data = data[:keep]
            blanked += before - int(np.isfinite(data).all(axis=1).sum())
            with self._lock, self.db:
                self._store_derived(run, name, data, json.loads(meta))
        return blanked

    def derived_sets(self, run: Run) -> list[tuple[str, RowFile, bytes | None]]:
        """(name, row file as the catalog names it, the checksums recorded with its rows: None when an older mess
        wrote it) of each derived vector set, by name."""
        sums = "checksums" if self._has_column("derived", "checksums") else "NULL AS checksums"  # older, read-only
        sets = self._query(f"SELECT name, dim, meta, {sums} FROM derived WHERE run_id=? ORDER BY name", (run.id,))
        folder = self.root / "runs" / str(run.id) / "derived"
        return [(name, RowFile(folder / _derived_file(name, json.loads(meta)), dim), blob)
                for name, dim, meta, blob in sets]

    def derived_sizes(self, run: Run) -> list[tuple[str, int, int | None]]:
        """(name, rows in its file, rows written) of each derived vector set (written: None for older stores)."""
        sets = self._query("SELECT name, dim, meta FROM derived WHERE run_id=? ORDER BY name", (run.id,))
        return [(name, RowFile(self.derived_path(run, name), dim).rows, json.loads(meta).get("rows"))
                for name, dim, meta in sets]

    def drop_derived(self, run: Run, name: str) -> None:
        """Forget a derived vector set: its catalog row and its file."""
        with self._write():
            folder = self.derived_path(run, name).parent
            self.db.execute("DELETE FROM derived WHERE run_id=? AND name=?", (run.id, name))
            for path in _derived_files(folder, name):
                set_aside(path, self.root) if path.is_dir() else path.unlink(missing_ok=True)

    def derived_meta(self, run: Run, name: str) -> dict | None:
        """Metadata stored with derived vectors, or None."""
        row = self._one("SELECT meta FROM derived WHERE run_id=? AND name=?", (run.id, name))
        return None if row is None else json.loads(row[0])

    def derived_path(self, run: Run, name: str) -> Path:
        """The row file of a derived vector set, as the catalog names it."""
        return self.root / "runs" / str(run.id) / "derived" / _derived_file(name, self.derived_meta(run, name))

    # ---- aspect map -----------------------------------------------------------------
    def set_aspect_map(self, run: Run, entries: Iterable[tuple[str, str, float, float]], *,
                       n_tracks: int | None = None, probed_at: float | None = None,
                       tracks_digest: str | None = None) -> None:
        """Replace the aspect -> (layer, score, margin) map of a run; ``n_tracks``: the run's tracks when probed;
        ``probed_at``: the stamp of the probe report it comes from; ``tracks_digest``: :meth:`tracks_digest` of the
        run when probed. A score or margin that is not a finite number is refused (ValueError), the stored map kept."""
        entries = list(entries)
        for aspect, _, score, margin in entries:
            if not (math.isfinite(score) and math.isfinite(margin)):
                raise ValueError(f"the aspect map's score ({score}) or margin ({margin}) of aspect {aspect!r} is not a "
                                 "finite number")
        with self._write():
            self.db.execute("DELETE FROM aspect_map WHERE run_id=?", (run.id,))
            self.db.executemany(
                "INSERT INTO aspect_map (run_id, aspect, layer, score, margin, n_tracks, probed_at, tracks_digest) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run.id, a, layer, s, m, n_tracks, probed_at, tracks_digest) for a, layer, s, m in entries],
            )

    def model_option(self, run: Run) -> str:
        """What ``--model`` picks ``run`` with: its model's name, or ``NAME@RUN_ID`` when the name picks another run
        (:meth:`run`)."""
        return run.model if self.run(run.model).id == run.id else f"{run.model}@{run.id}"

    def tracks_digest(self, run: Run) -> str:
        """A digest of the audio of the run's tracks (their content hashes, copies counted): two sets of as many
        tracks differ in it."""
        tracks = self.tracks(run)
        return self.cached(("tracks-digest", run.id), lambda: track_set_digest(tracks), tracks=tracks)

    def aspect_map_digest(self, run: Run) -> str | None:
        """:meth:`tracks_digest` of the run when the stored aspect map was probed; None when never probed or not
        recorded (a map from an older mess)."""
        value = self._aspect_map_field(run, "tracks_digest")
        return None if value is None else str(value)

    def aspect_map_probed_at(self, run: Run) -> float | None:
        """The stamp (``probed_at``) of the probe report the stored aspect map comes from; None when never probed or
        not recorded (a map from an older mess)."""
        value = self._aspect_map_field(run, "probed_at")
        return None if value is None else float(value)

    def aspect_map_tracks(self, run: Run) -> int | None:
        """How many tracks the run had when the stored aspect map was probed; None when never probed or not
        recorded (a map from an older mess)."""
        value = self._aspect_map_field(run, "n_tracks")
        return None if value is None else int(value)

    def _aspect_map_field(self, run: Run, column: str) -> str | int | float | None:
        """The stored aspect map's ``column`` (one of this class's own names) for the run; None when never probed or
        the column is not there (a catalog from an older mess)."""
        if not self._has_column("aspect_map", column):
            return None
        return self._query(f"SELECT MAX({column}) FROM aspect_map WHERE run_id=?", (run.id,))[0][0]

    def aspect_scores(self, run: Run) -> dict[str, float]:
        """aspect -> the probe's cross-validated score (R^2) of the chosen layer, less the shuffled control's when
        that ran (empty when never probed)."""
        return {
            r[0]: float(r[1])
            for r in self._query("SELECT aspect, score FROM aspect_map WHERE run_id=? ORDER BY aspect", (run.id,))
        }

    def aspect_map(self, run: Run) -> dict[str, str]:
        """aspect -> layer name, as chosen by the last probe of this run (empty when never probed)."""
        return {
            r[0]: r[1]
            for r in self._query("SELECT aspect, layer FROM aspect_map WHERE run_id=? ORDER BY aspect", (run.id,))
        }


def track_set_digest(tracks: Iterable[Track]) -> str:
    """SHA-256 (hex, 16 characters) of the sorted content hashes of ``tracks``: which audio a probe saw."""
    return hashlib.sha256("\n".join(sorted(t.content_hash for t in tracks)).encode()).hexdigest()[:16]


def _chosen_run(runs: Sequence[Run], model: str | None, run_id: int) -> Run:
    """The run ``run_id`` of ``runs``, which must be of ``model`` when given; a StoreError naming the runs when not."""
    found = next((r for r in runs if r.id == run_id), None)
    if found is not None and model in (None, found.model):
        return found
    if found is not None:
        theirs = ", ".join(f"{r.model}@{r.id}" for r in runs if r.model == model)
        raise StoreError(f"run {run_id} is a {found.model} run, not {model}'s; "
                         + (f"{model}'s runs: {theirs}" if theirs else f"{model} has no run in this store"))
    listed = ", ".join(f"{r.model}@{r.id}" for r in runs) or "none (run `mess extract` first)"
    raise StoreError(f"no run {run_id} in this store; its runs: {listed} (see `mess info`)")


def _derived_file(name: str, meta: dict | None) -> str:
    """The file name of a derived set: its metadata names it (stores before that used ``NAME.f16``)."""
    return str((meta or {}).get("file") or f"{name}.f16")


def _derived_files(folder: Path, name: str) -> list[Path]:
    """The files of derived set ``name`` in ``folder``: ``NAME.NS.f16`` (as written) or ``NAME.f16`` (older stores),
    not those of a set whose name starts as this one's ('fused.v2' for 'fused')."""
    pattern = re.compile(re.escape(name) + r"(\.[0-9]+)?\.f16")
    return [p for p in folder.iterdir() if pattern.fullmatch(p.name)] if folder.is_dir() else []


def _reason_alone(reason: str, path: str) -> str:
    """A recorded failure ``reason`` without the 'PATH: ' that extraction starts it with ('x.wav: cannot decode
    (...)' -> 'cannot decode (...)'), for a message that names the file itself; any other reason as it is."""
    return reason.removeprefix(f"{printable(path)}: ")


def _unread_key(path: str) -> str:
    """The failures table's key for a file that failed before it could be hashed."""
    return "path:" + printable(path)
