"""The SQLite catalog in process: files named with URI characters, a catalog of an older mess, read-only opening."""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import pytest

from mess.store.catalog import connect, has_column, uri

# the catalog of an older mess: the columns and table added since are missing
OLD_SCHEMA = """
CREATE TABLE tracks (id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, content_hash TEXT NOT NULL,
    size INTEGER NOT NULL, mtime REAL NOT NULL, duration REAL, sample_rate INTEGER, channels INTEGER,
    artist TEXT, album TEXT, title TEXT, genre TEXT, composer TEXT, added_at REAL NOT NULL);
CREATE TABLE aspect_map (run_id INTEGER NOT NULL, aspect TEXT NOT NULL, layer TEXT NOT NULL, score REAL NOT NULL,
    margin REAL NOT NULL, PRIMARY KEY (run_id, aspect));
CREATE TABLE vectors (run_id INTEGER NOT NULL, content_hash TEXT NOT NULL, track_row INTEGER NOT NULL,
    seg_row INTEGER NOT NULL, n_segments INTEGER NOT NULL, seg_starts TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (run_id, content_hash));
INSERT INTO tracks (path, content_hash, size, mtime, added_at) VALUES ('/music/a.flac', 'h1', 10, 1.0, 2.0);
"""


def _columns(db: Path, table: str) -> list[str]:
    with closing(sqlite3.connect(db)) as conn:
        return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


@pytest.mark.parametrize("name", ["%41 #1?x=y&mode=rwc.sqlite", os.fsdecode(b"caf\xe9 catalog.sqlite")])
def test_a_catalog_named_with_uri_characters_is_the_file_opened(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "a%2Fb #?"
    folder.mkdir()
    (folder / "A #1").mkdir()  # where '%41 #1?...' would lead if it were decoded or cut
    db = folder / name
    with closing(sqlite3.connect(os.fsencode(db))) as conn:  # made without URIs
        conn.execute("CREATE TABLE marker (x)")
        conn.execute("INSERT INTO marker VALUES (42)")
        conn.commit()
    with closing(connect(db, readonly=True)) as conn:
        assert conn.execute("SELECT x FROM marker").fetchone()["x"] == 42  # rows read as mappings
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("INSERT INTO marker VALUES (1)")
    assert sorted(os.listdir(folder)) == sorted(["A #1", name])  # no other file was made
    with closing(sqlite3.connect(uri(db, "rw"), uri=True)) as conn:
        conn.execute("INSERT INTO marker VALUES (7)")
        conn.commit()
    with closing(sqlite3.connect(os.fsencode(db))) as conn:
        assert sorted(r[0] for r in conn.execute("SELECT x FROM marker")) == [7, 42]


def test_a_missing_catalog_is_not_made_by_a_reader(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.OperationalError):
        connect(tmp_path / "catalog.sqlite", readonly=True).execute("SELECT 1 FROM sqlite_master")
    assert not (tmp_path / "catalog.sqlite").exists()


def test_a_writer_makes_the_schema_in_wal_mode_and_brings_an_older_catalog_up_to_it(tmp_path: Path) -> None:
    new = tmp_path / "new" / "store" / "catalog.sqlite"  # folders made as needed
    with closing(connect(new)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 60000
    tables = {t: _columns(new, t) for t in ("tracks", "runs", "vectors", "failures", "aspect_map", "derived")}
    old = tmp_path / "old.sqlite"
    with closing(sqlite3.connect(old)) as conn:
        conn.executescript(OLD_SCHEMA)
    with closing(connect(old)) as conn:
        assert dict(conn.execute("SELECT path, stamp FROM tracks").fetchone()) == {"path": "/music/a.flac", "stamp": ""}
        for table, columns in tables.items():
            assert sorted(_columns(old, table)) == sorted(columns), table
            assert all(has_column(conn, table, c) for c in columns)
        assert not has_column(conn, "tracks", "colour") and not has_column(conn, "missing", "id")
    with closing(connect(old)) as conn:  # opened again: nothing left to add
        assert sorted(_columns(old, "aspect_map")) == sorted(tables["aspect_map"])
    with closing(connect(old, readonly=True)) as conn:  # a reader reads what is there
        assert conn.execute("SELECT count(*) FROM tracks").fetchone()[0] == 1


def test_removed_track_ids_are_remembered_so_none_is_given_again(tmp_path: Path) -> None:
    with closing(connect(tmp_path / "catalog.sqlite")) as conn:
        for k in range(3):
            conn.execute("INSERT INTO tracks (path, content_hash, size, mtime, added_at) VALUES (?, 'h', 1, 1, 1)",
                         (f"/m/{k}",))
        conn.execute("DELETE FROM tracks WHERE id = 3")
        conn.execute("DELETE FROM tracks WHERE id = 2")
        assert [r[0] for r in conn.execute("SELECT high FROM track_ids")] == [3]


@pytest.mark.parametrize("readonly", [False, True])
def test_a_connection_is_used_from_any_thread(tmp_path: Path, readonly: bool) -> None:
    """A store is shared by threads (the server's, the extract's decoders and writer): its connection is not tied to
    the thread that opened it."""
    connect(tmp_path / "catalog.sqlite").close()
    with closing(connect(tmp_path / "catalog.sqlite", readonly=readonly)) as conn:
        got: list[object] = []
        reader = threading.Thread(target=lambda: got.append(conn.execute("SELECT count(*) FROM runs").fetchone()[0]))
        reader.start()
        reader.join()
        assert got == [0]


def _descriptors_of(path: Path) -> list[str]:
    """This process's open file descriptors on ``path`` (from /proc, not from the code under test)."""
    fds = Path("/proc/self/fd")
    return [fd.name for fd in fds.iterdir() if os.path.realpath(fd) == os.path.realpath(path)]


@pytest.mark.parametrize("readonly", [False, True])
def test_a_catalog_that_cannot_be_opened_leaves_no_file_open(tmp_path: Path, readonly: bool) -> None:
    """A connection that failed its first statements stayed open while the error was kept (a server logging it, a
    test's excinfo): its traceback held the connection, and the catalog's file could not be unmounted."""
    db = tmp_path / "catalog.sqlite"
    db.write_bytes(b"this is not a database, " * 100)
    with pytest.raises(sqlite3.DatabaseError) as kept:
        connect(db, readonly=readonly)
    assert kept.value is not None and _descriptors_of(db) == []
