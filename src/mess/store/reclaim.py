"""Reclaim the rows of old contents: vectors no catalogued file holds any more (`mess check --reclaim`).

A file re-encoded or edited is embedded again under its new content hash, and its track takes the new vectors; the
old content's rows stay, since they are a cache (the file reverted finds them again), until reclaimed here. Rows
never move (a reader on an older catalog version reads rows by position), so space is given back in three steps,
under the write lock, each of which a ``kill -9`` may end without harm:

1. the fused (derived) vectors of the rows to free are blanked, as ``check --repair`` does before it frees rows: a
   later file written at a freed row must not inherit one (no file answers with those rows, so no answer changes);
2. the old contents' catalog rows are deleted, in one transaction;
3. the row files are cut after the last row the catalog references, and the blocks of rows it references nowhere
   in between are given back to the file system (``fallocate`` punching a hole: the file keeps its size, those
   rows read as zeros, and no row the catalog references is touched). Where the file system cannot punch holes,
   only the cut frees space.

A rerun finishes what a killed one left: what it frees depends on the catalog alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mess.constants import counted
from mess.store.arrays import DTYPE, RowFile
from mess.store.feature_store import FeatureStore
from mess.store.records import Run

_PUNCH_HOLE = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE (linux/falloc.h)


@dataclass(frozen=True)
class Reclaimed:
    """What a reclaim did: one line per run that had old contents, and the bytes the store's files gave back."""

    lines: list[str]
    freed: int
    holes: bool  # whether the file system gave back blocks inside the files (else: only their ends)


def reclaim(store: FeatureStore) -> Reclaimed:
    """Free the vectors of contents no catalogued file holds, in every run (see the module's steps)."""
    with store.writing("mess check --reclaim"):
        before = _allocated(store.root / "runs")
        lines, holes = [], True
        for run in store.runs():
            stale = _old_contents(store, run)
            if stale:
                rows = store.track_rows(run)
                kept = max((row for h, row in rows.items() if h not in stale), default=-1) + 1
                store.forget_derived_rows(run, [rows[h] for h in stale], kept)
                with store.db:
                    store.db.executemany("DELETE FROM vectors WHERE run_id=? AND content_hash=?",
                                         [(run.id, h) for h in sorted(stale)])
                lines.append(f"{run.model} (run {run.id}): dropped the vectors of {counted(len(stale), 'old content')} "
                             "no catalogued file holds (files re-encoded or edited since)")
            holes = _give_back(store, run) and holes
        return Reclaimed(lines, max(0, before - _allocated(store.root / "runs")), holes)


def _old_contents(store: FeatureStore, run: Run) -> set[str]:
    """Content hashes with vectors in ``run`` that no catalogued file holds."""
    return {h for (h,) in store.db.execute(
        "SELECT content_hash FROM vectors v WHERE run_id=? AND NOT EXISTS "
        "(SELECT 1 FROM tracks t WHERE t.content_hash=v.content_hash)", (run.id,))}


def _give_back(store: FeatureStore, run: Run) -> bool:
    """Cut the run's row files after the catalog's last row and punch out the rows it references nowhere; False
    where the file system cannot punch holes."""
    track_rows, seg_rows = store.catalog_rows(run)
    spans = {"track": [(int(r), 1) for (r,) in store.db.execute(
                 "SELECT track_row FROM vectors WHERE run_id=?", (run.id,))],
             "segment": [(int(r), int(n)) for r, n in store.db.execute(
                 "SELECT seg_row, n_segments FROM vectors WHERE run_id=?", (run.id,))]}
    punched = True
    for level, end in (("track", track_rows), ("segment", seg_rows)):
        free = list(_gaps(spans[level], end))
        for layer in range(len(run.layer_names)):
            file = store.row_file(run, level, layer)
            file.truncate(end)
            punched = _punch(file, free) and punched
    return punched


def _gaps(spans: Sequence[tuple[int, int]], end: int) -> Iterator[tuple[int, int]]:
    """The (first row, row count) of each run of rows in [0, ``end``) that no (first row, count) span covers."""
    at = 0
    for start, n in sorted(spans):
        if start > at:
            yield at, start - at
        at = max(at, start + n)
    if end > at:
        yield at, end - at


def _punch(file: RowFile, free: Sequence[tuple[int, int]]) -> bool:
    """Give back the whole blocks of ``file`` inside the ``free`` rows; False where the file system cannot."""
    if not free or not file.path.is_file():
        return True
    row = file.dim * DTYPE.itemsize
    with open(file.path, "r+b") as f:
        block = os.fstat(f.fileno()).st_blksize or 4096
        for start, n in free:
            first = -(-start * row // block) * block  # whole blocks only: the rows beside them are left as they are
            last = (start + n) * row // block * block
            if last > first and not _fallocate(f.fileno(), first, last - first):
                return False
    return True


def _fallocate(fd: int, offset: int, length: int) -> bool:
    """Punch a hole of ``length`` bytes at ``offset`` into the file open as ``fd``; False where it is not supported
    (not Linux, or a file system without holes)."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name, use_errno=True)
    call = getattr(libc, "fallocate", None)
    if call is None:
        return False
    call.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if call(fd, _PUNCH_HOLE, offset, length) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EOPNOTSUPP, errno.ENOSYS):  # this file system keeps every block
        return False
    raise OSError(code, os.strerror(code))


def _allocated(folder: Path) -> int:
    """Bytes the file system holds for the files under ``folder`` (their blocks, not their sizes: holes are free)."""
    total = 0
    for path in folder.rglob("*"):
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if path.is_file() and not path.is_symlink():
            total += st.st_blocks * 512
    return total
