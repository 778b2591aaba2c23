"""Ids follow recordings: when extraction reads a file, which catalogued track (id) it is.

A track's id names a recording (its content hash): index entries, fused vectors, aspect maps, playlists of ids and the
server's pages name it. A file moved or renamed keeps its id; so does one renamed while a new file takes its old name
(``mv a.ogg b.ogg; cp other.ogg a.ogg``: b.ogg keeps a.ogg's id, a.ogg gets a new one), and two files that swap names
swap ids, in whichever order the run reads them. A file changed in place keeps its id unless another file read in the
same run holds its old content.

The catalog keeps, in ``tracks.former_hash``, the recording a row's id names while its file holds other content (a
file changed in place, read before the file its old content went to): the run that reads that file hands the id on.
When a run has read them all, :func:`settle` hands on the ids the order of its reads left marked (a chain of
renames read front to back), then clears the markers of its files.
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


def settle(db: sqlite3.Connection, paths: Iterable[str | bytes], since: float) -> int:
    """After a run started at ``since`` has read every file of ``paths`` (catalog paths): hand each id still marked
    as naming a recording another file now holds to that file, where the order of the reads could not (a rename
    chain read front to back, ``rm 1; mv 2 1; mv 3 2``: file 1 was read while file 2, which had held its recording,
    still existed), then clear the markers of ``paths``: a file changed in place keeps its id. Returns how many files
    this recognised as moved."""
    present = set(paths)
    handed: set[int] = set()  # ids handed on here: each row takes one at most
    moved = 0
    while (pair := _hand_on(db, present, since, handed)) is not None:
        marked, taker, taker_named = pair
        _swap(db, marked, taker)  # the taker's file holds the recording ``marked`` names
        db.execute("UPDATE tracks SET former_hash=NULL WHERE id=?", (marked,))
        held, path = db.execute("SELECT content_hash, path FROM tracks WHERE id=?", (taker,)).fetchone()
        db.execute("UPDATE tracks SET former_hash=? WHERE id=?",
                   (None if taker_named in (None, held) else taker_named, taker))
        handed.add(marked)
        moved += 1 + (taker_named == held and path in present)  # the marked row's file took its recording's id too
    marked_rows = [(i,) for i, p in db.execute("SELECT id, path FROM tracks WHERE former_hash IS NOT NULL")
                   if p in present]
    db.executemany("UPDATE tracks SET former_hash=NULL WHERE id=?", marked_rows)
    return moved


def _hand_on(db: sqlite3.Connection, present: set[str | bytes], since: float,
             handed: set[int]) -> tuple[int, int, str | None] | None:
    """(marked id, taker id, what the taker's id names) for the first row by id whose id names a recording
    (``former_hash``) that a file of this run holds under an id naming another one (its own marker) or under an id
    new in this run; None when there is none."""
    for marked, named in db.execute("SELECT id, former_hash FROM tracks WHERE former_hash IS NOT NULL ORDER BY id"):
        for taker, path, former, added in db.execute(
                "SELECT id, path, former_hash, added_at FROM tracks WHERE content_hash=? AND id<>? ORDER BY id",
                (named, marked)):
            if path in present and taker not in handed and (former is not None or added >= since):
                return int(marked), int(taker), former
    return None
