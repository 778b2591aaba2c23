"""Reclaim the rows of old contents: vectors no catalogued file holds any more (`mess check --reclaim`).

A file re-encoded or edited is embedded again under its new content hash, and its track takes the new vectors; the
old content's rows stay, since they are a cache (the file reverted finds them again), until reclaimed here, under
the write lock, in steps each of which a ``kill -9`` may end without harm:

1. the fused (derived) vectors of the rows to free are blanked, as ``check --repair`` does before it frees rows: a
   later file written at a freed row must not inherit one (no file answers with those rows, so no answer changes);
2. the old contents' catalog rows are deleted, in one transaction;
3. the rows kept are packed to the front of each row file, in their order, and the files cut after them, so a
   file's size is what it holds (a backup copies no freed rows). Rows are only ever copied to rows the committed
   catalog does not reference: the rows after the first gap are copied past the catalog's last row, the catalog
   (with the fused sets' rows) points at the copies in one transaction, they are copied back to the front, the
   catalog points there, and the files are cut. A kill leaves the catalog pointing at whole rows, and at most
   rows past its last (an interrupted write's, overwritten or cut next).

A reader still on an older catalog version meets moved rows as vectors that differ from their checksums, or a short
file, and reads again on the newest (:class:`~mess.store.errors.RowsMoved`). A rerun finishes what a killed one
left: what it frees and moves depends on the catalog alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mess.constants import counted
from mess.store.feature_store import FeatureStore
from mess.store.records import Run


@dataclass(frozen=True)
class Reclaimed:
    """What a reclaim did: one line per run that had old contents, and the bytes the store's files gave back."""

    lines: list[str]
    freed: int


def reclaim(store: FeatureStore) -> Reclaimed:
    """Free the vectors of contents no catalogued file holds, in every run, and pack the rows kept (see the module's
    steps)."""
    with store.writing("mess check --reclaim"):
        before = _allocated(store.root / "runs")
        lines = []
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
            for level in ("track", "segment"):
                _pack(store, run, level)
        return Reclaimed(lines, max(0, before - _allocated(store.root / "runs")))


def _old_contents(store: FeatureStore, run: Run) -> set[str]:
    """Content hashes with vectors in ``run`` that no catalogued file holds."""
    return {h for (h,) in store.db.execute(
        "SELECT content_hash FROM vectors v WHERE run_id=? AND NOT EXISTS "
        "(SELECT 1 FROM tracks t WHERE t.content_hash=v.content_hash)", (run.id,))}


def _pack(store: FeatureStore, run: Run, level: str) -> None:
    """Move the rows the catalog references at ``level`` to the front of its row files, in their order, by way of
    the rows past the catalog's last (step 3), and cut the files after them. Overlapping spans (damage, which
    `--repair` mends) are left where they are."""
    column, count = _COLUMNS[level]
    spans = [(h, int(start), int(n)) for h, start, n in store.db.execute(
        f"SELECT content_hash, {column}, {count} FROM vectors WHERE run_id=? ORDER BY {column}", (run.id,))]
    packed, at = {}, 0
    for h, start, n in spans:
        if start < at and n:  # rows another content claims
            return
        packed[h] = at
        at += n
    moving = [(h, start, n) for h, start, n in spans if packed[h] != start]
    if moving:
        end = max(start + n for _, start, n in spans)
        first = packed[moving[0][0]]
        staged = {h: end + packed[h] - first for h, _, _ in moving}
        _move(store, run, level, [(h, start, staged[h], n) for h, start, n in moving])
        _move(store, run, level, [(h, staged[h], packed[h], n) for h, _, n in moving])
    for layer in range(len(run.layer_names)):
        store.row_file(run, level, layer).truncate(at)


_COLUMNS = {"track": ("track_row", "1"), "segment": ("seg_row", "n_segments")}  # where a content's rows start, how many


def _move(store: FeatureStore, run: Run, level: str, moves: Sequence[tuple[str, int, int, int]]) -> None:
    """Copy each content's rows (content hash, from, to, count) in every layer's row file at ``level`` (durable),
    then point the catalog at the copies, with the fused sets' rows at the track level, in one transaction."""
    spans = [(src, dst, n) for _, src, dst, n in moves]
    for layer in range(len(run.layer_names)):
        store.row_file(run, level, layer).copy_rows(spans)
    with store.db:
        store.db.executemany(f"UPDATE vectors SET {_COLUMNS[level][0]}=? WHERE run_id=? AND content_hash=?",
                             [(dst, run.id, h) for h, _, dst, _ in moves])
        if level == "track":
            store.move_derived_rows(run, {src: dst for _, src, dst, _ in moves})


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
