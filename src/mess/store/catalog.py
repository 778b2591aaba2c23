"""SQLite catalog: tracks, model runs, which vectors exist, failures, aspect maps."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

SCHEMA = """
CREATE TABLE IF NOT EXISTS tracks (
    id INTEGER PRIMARY KEY,
    path TEXT UNIQUE NOT NULL,
    content_hash TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    stamp TEXT NOT NULL DEFAULT '',
    duration REAL,
    sample_rate INTEGER,
    channels INTEGER,
    artist TEXT, album TEXT, title TEXT, genre TEXT, composer TEXT,
    added_at REAL NOT NULL,
    former_hash TEXT
);
CREATE INDEX IF NOT EXISTS tracks_hash ON tracks(content_hash);
CREATE TABLE IF NOT EXISTS track_ids (high INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS tracks_removed AFTER DELETE ON tracks BEGIN
    DELETE FROM track_ids WHERE high < OLD.id;
    INSERT INTO track_ids SELECT OLD.id WHERE NOT EXISTS (SELECT 1 FROM track_ids);
END;
CREATE INDEX IF NOT EXISTS tracks_artist ON tracks(artist);
CREATE TABLE IF NOT EXISTS extract_roots (path TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    revision TEXT NOT NULL,
    policy TEXT NOT NULL,
    sample_rate INTEGER NOT NULL,
    layer_names TEXT NOT NULL,
    layer_dims TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (model, revision, policy)
);
CREATE TABLE IF NOT EXISTS vectors (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    content_hash TEXT NOT NULL,
    track_row INTEGER NOT NULL,
    seg_row INTEGER NOT NULL,
    n_segments INTEGER NOT NULL,
    seg_starts TEXT NOT NULL,
    created_at REAL NOT NULL,
    checksums BLOB,
    PRIMARY KEY (run_id, content_hash)
);
CREATE INDEX IF NOT EXISTS vectors_track_row ON vectors(run_id, track_row);
CREATE TABLE IF NOT EXISTS failures (
    run_id INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    path TEXT NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (run_id, content_hash)
);
CREATE TABLE IF NOT EXISTS aspect_map (
    run_id INTEGER NOT NULL,
    aspect TEXT NOT NULL,
    layer TEXT NOT NULL,
    score REAL NOT NULL,
    margin REAL NOT NULL,
    n_tracks INTEGER,
    probed_at REAL,
    tracks_digest TEXT,
    PRIMARY KEY (run_id, aspect)
);
CREATE TABLE IF NOT EXISTS derived (
    run_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    dim INTEGER NOT NULL,
    meta TEXT NOT NULL,
    created_at REAL NOT NULL,
    checksums BLOB,
    PRIMARY KEY (run_id, name)
);
"""


FORMAT = 1  # the catalog format this mess reads and writes (``PRAGMA user_version``; 0: a catalog from before it)


class NewerCatalog(Exception):
    """A catalog written by a newer mess, in a format this one does not know: read or written, it could be misread
    or damaged, so it is left untouched."""

    def __init__(self, found: int) -> None:
        """The catalog's format number, ``found``."""
        super().__init__(f"its catalog was written by a newer mess (catalog format {found}; this mess knows formats "
                         f"up to {FORMAT}), which may store what this one would misread: use that mess, or upgrade "
                         "this one (nothing in the store was changed)")
        self.found = found


def uri(path: Path, mode: str = "ro") -> str:
    """A SQLite ``file:`` URI for ``path``: every byte but '/' escaped (a '%41', '#' or '?' is part of the name)."""
    return f"file://{quote(os.fsencode(Path(path).absolute()), safe='/')}?mode={mode}"


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the catalog (WAL mode, rows as mappings), creating the schema if needed; a connection that fails is
    closed before the error leaves (a kept error's traceback would hold the file open)."""
    if readonly:
        conn = _open_readonly(path)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, timeout=60)
        with closed_on_error(conn):
            found = _format(conn)  # before anything is written
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA)
            _migrate(conn)
            if found < FORMAT:
                conn.execute(f"PRAGMA user_version = {FORMAT}")
    conn.row_factory = sqlite3.Row
    return conn


def _format(conn: sqlite3.Connection) -> int:
    """The catalog's format number (``PRAGMA user_version``); :class:`NewerCatalog` past :data:`FORMAT`."""
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > FORMAT:
        raise NewerCatalog(found)
    return found


@contextmanager
def closed_on_error(conn: sqlite3.Connection) -> Iterator[None]:
    """Close ``conn`` if the block raises, then let the error go on."""
    try:
        yield
    except BaseException:
        conn.close()
        raise


def _open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection. Where SQLite cannot create the WAL's shared-memory file beside the catalog: on a
    read-only file system, one that reads the catalog file as it is (``immutable``: nothing can write it there),
    unless its WAL file holds writes, which that would ignore; elsewhere (a folder this user cannot write, which
    another may be writing) an OperationalError saying why (the store is whole)."""
    conn = sqlite3.connect(uri(path), uri=True, check_same_thread=False, timeout=60)
    try:
        with closed_on_error(conn):
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")  # SQLite opens the file at the first statement
    except sqlite3.OperationalError:
        wal = path.with_name(path.name + "-wal")
        if os.access(path.parent, os.W_OK) or not path.is_file():
            raise
        if not os.statvfs(path.parent).f_flag & os.ST_RDONLY:
            raise sqlite3.OperationalError(
                f"SQLite must create {path.name}-shm beside the catalog to read it, and this user cannot write to "
                f"{path.parent}: read it as a user who can, or from a copy") from None
        if wal.exists() and wal.stat().st_size:
            raise sqlite3.OperationalError(
                f"it is on a read-only file system and {wal.name} holds writes not yet in {path.name}: run `mess check "
                "--repair` on it once where it can be written, then read it here") from None
        conn = sqlite3.connect(uri(path) + "&immutable=1", uri=True, check_same_thread=False, timeout=60)
    with closed_on_error(conn):
        _format(conn)
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a catalog written by an older mess up to this schema (columns added since)."""
    added = (("tracks", "stamp", "TEXT NOT NULL DEFAULT ''"), ("aspect_map", "n_tracks", "INTEGER"),
             ("vectors", "checksums", "BLOB"), ("aspect_map", "probed_at", "REAL"), ("derived", "checksums", "BLOB"),
             ("aspect_map", "tracks_digest", "TEXT"), ("tracks", "former_hash", "TEXT"))
    for table, column, decl in added:
        if not has_column(conn, table, column):
            try:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            except sqlite3.OperationalError as exc:  # another process added it first
                if "duplicate column" not in str(exc):
                    raise
    # after the column's migration: the rows whose file changed in place (mess.store.moves), found by a new file
    conn.execute("CREATE INDEX IF NOT EXISTS tracks_former ON tracks(former_hash) WHERE former_hash IS NOT NULL")


def has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    """Whether ``table`` has ``column`` (a catalog opened read-only is not migrated: an older one may lack it)."""
    return any(r[1] == column for r in conn.execute(f"PRAGMA table_info({table})"))
