"""Ids follow recordings: when extraction reads a file, which catalogued track (id) it is.

A track's id names a recording (its content hash): index entries, fused vectors, aspect maps, playlists of ids and the
server's pages name it. A file moved or renamed keeps its id; so does one renamed while a new file takes its old name
(``mv a.ogg b.ogg; cp other.ogg a.ogg``: b.ogg keeps a.ogg's id, a.ogg gets a new one), and two files that swap names
swap ids, in whichever order the run reads them. A file changed in place keeps its id unless another file read in the
same run holds its old content.

The catalog keeps, in ``tracks.former_hash``, the recording a row's id names while its file holds other content (a
file changed in place, read before the file its old content went to): the run that reads that file hands the id on.
Markers of a run's files are cleared when it has read them all (:func:`settle`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from mess.store.paths import from_db_path, look

# A new track's id: above every id in the catalog and every id it ever held (``track_ids``, kept by a trigger on
# delete), so an id never comes to name another file after a prune.
NEW_TRACK_ID = "(SELECT MAX(COALESCE(MAX(id), 0), COALESCE((SELECT MAX(high) FROM track_ids), 0)) + 1 FROM tracks)"


def follow(db: sqlite3.Connection, path: str | bytes, content_hash: str, since: float) -> int:
    """Before the file at ``path`` (a catalog path) is upserted with ``content_hash``, by a run started at ``since``:
    give its row the id of the recording it holds, where another row has it (in the caller's transaction). Returns
    how many files this recognised as moved."""
    here = db.execute("SELECT id, content_hash, former_hash FROM tracks WHERE path=?", (path,)).fetchone()
    if here is not None and here[1] == content_hash:
        return 0
    claim = _claim(db, content_hash, None if here is None else int(here[0]))
    if here is None:
        if claim is None:
            return 0
        claimed, claimed_path = claim
        if look(from_db_path(claimed_path)) is not None:  # its file holds other content now: it keeps a new id
            _copy_row(db, claimed, claimed_path)
        db.execute("UPDATE tracks SET path=?, former_hash=NULL WHERE id=?", (path, claimed))
        return 1
    own, was = int(here[0]), here[2] or here[1]  # the recording this row's id names
    if was == content_hash:  # changed back
        db.execute("UPDATE tracks SET former_hash=NULL WHERE id=?", (own,))
        return 0
    if claim is not None:
        claimed = claim[0]
        _swap(db, own, claimed)  # this file takes the id of its recording; the other row this row's
        held = db.execute("SELECT content_hash FROM tracks WHERE id=?", (own,)).fetchone()[0]
        db.execute("UPDATE tracks SET former_hash=? WHERE id=?", (None if held == was else was, own))
        db.execute("UPDATE tracks SET former_hash=NULL WHERE id=?", (claimed,))
        return 1 + (held == was)
    taker = db.execute("SELECT id FROM tracks WHERE content_hash=? AND former_hash IS NULL AND id<>? AND added_at>=? "
                       "ORDER BY id LIMIT 1", (was, own, since)).fetchone()
    if taker is not None:  # read earlier in this run under a new id, and holding this row's recording: it takes it
        _swap(db, own, int(taker[0]))
        db.execute("UPDATE tracks SET former_hash=NULL WHERE id=?", (int(taker[0]),))
        return 1
    db.execute("UPDATE tracks SET former_hash=? WHERE id=?", (was, own))
    return 0


def _claim(db: sqlite3.Connection, content_hash: str, own: int | None) -> tuple[int, str | bytes] | None:
    """(id, path) of the first row by id whose id names ``content_hash`` and whose file no longer holds it: one whose
    file is gone (a copy beside its original, or in a folder that cannot be looked into now, is not a move), or one
    whose file changed (``former_hash``); None when there is none."""
    rows = [*db.execute("SELECT id, path, 1 FROM tracks WHERE former_hash=? AND id<>?", (content_hash, own or 0)),
            *db.execute("SELECT id, path, 0 FROM tracks WHERE content_hash=? AND former_hash IS NULL AND id<>?",
                        (content_hash, own or 0))]  # each by an index (a new file's look-up, 100,000 tracks)
    rows.sort(key=lambda row: row[0])  # by id (sqlite3.Row has no order of its own)
    return next(((int(i), p) for i, p, marked in rows if marked or look(from_db_path(p)) is None), None)


def _swap(db: sqlite3.Connection, one: int, other: int) -> None:
    """Swap two rows' ids."""
    db.execute("UPDATE tracks SET id=? WHERE id=?", (-one, one))
    db.execute("UPDATE tracks SET id=? WHERE id=?", (one, other))
    db.execute("UPDATE tracks SET id=? WHERE id=?", (other, -one))


def _copy_row(db: sqlite3.Connection, track_id: int, path: str | bytes) -> None:
    """A copy of row ``track_id`` under a new id, for ``path`` (the row itself then leaves that path)."""
    db.execute("UPDATE tracks SET path=? WHERE id=?", (b"\0moving", track_id))
    cols = [r[1] for r in db.execute("PRAGMA table_info(tracks)") if r[1] not in ("id", "path", "former_hash")]
    listed = ", ".join(cols)
    db.execute(f"INSERT INTO tracks (id, path, {listed}) SELECT {NEW_TRACK_ID}, ?, {listed} FROM tracks WHERE id=?",
               (path, track_id))


def settle(db: sqlite3.Connection, paths: Iterable[str | bytes]) -> None:
    """Clear the markers of ``paths`` (catalog paths), all read by a run: a file changed in place keeps its id."""
    present = set(paths)
    marked = [(i,) for i, p in db.execute("SELECT id, path FROM tracks WHERE former_hash IS NOT NULL") if p in present]
    db.executemany("UPDATE tracks SET former_hash=NULL WHERE id=?", marked)
