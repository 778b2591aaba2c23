"""Is the store whole? Row files against the catalog, values, references; and repairs.

:func:`quick_check` runs whenever a store opens (two queries and a few ``stat`` calls per
run). :func:`full_check` reads every referenced row too, once, against its checksum
(:mod:`mess.store.checksums`), and every row of each derived set against its own.
:func:`check_and_repair` never hides damage: vectors that cannot be trusted lose their catalog rows
(so the next ``mess extract`` embeds those files again), damaged derived sets are dropped
(``mess fuse apply`` writes them again), bytes nothing references are cut, rows from an
older mess that passed get their checksums, and it returns one line per action.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mess.constants import counted
from mess.store import wal
from mess.store.arrays import RowFile, ShortFile, non_finite, set_aside
from mess.store.catalog import has_column
from mess.store.checksums import BlockSums, expected, pack, row_expected
from mess.store.config import ConfigError
from mess.store.connection import shared_files
from mess.store.feature_store import FeatureStore
from mess.store.paths import from_db_path, leftover_temps, look, printable
from mess.store.records import Run

_SCANS = 3  # scans of a check whose catalog changed meanwhile (see full_check)
_ROWS_LOST = ("short-file", "not-a-file")  # problems whose files lost the rows the catalog references


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a store. ``damage`` problems make answers wrong; others only waste space."""

    # catalog | short-file | not-a-file | short-derived | stale-derived | non-finite | checksum | checksum-derived |
    # shared-rows | orphan-rows | not-embedded | no-checksum | no-checksum-derived | temp-files | lost-commits |
    # config | unread-now | hard-links | stale-aspect-map (added by mess.search.health)
    kind: str
    run_id: int | None
    message: str
    damage: bool = True
    derived: str = ""  # the derived vector set (fused, ...) a *-derived problem is about
    hashes: frozenset[str] = field(default=frozenset(), repr=False)  # the files a non-finite or checksum one names
    # a no-checksum one: content hash -> the ``vectors.checksums`` value of its rows as the check read them
    checksums: Mapping[str, bytes] = field(default_factory=dict, repr=False, compare=False)
    gone: bool = False  # a not-embedded one: every file it names is no longer on disk (nothing to embed)
    extract: str = ""  # a not-embedded one: the options `mess extract FOLDER` takes to embed them (--model M)


def quick_check(store: FeatureStore) -> list[Problem]:
    """Damage that can be seen without reading vectors: an unreadable catalog, row files shorter than it says,
    two files' track vectors at one row (an indexed query)."""
    try:
        return [p for run in store.runs() for p in [*_file_sizes(store, run), *_shared_rows(store, run, quick=True)]
                if p.damage]
    except sqlite3.DatabaseError as exc:
        return [Problem("catalog", None, f"the catalog cannot be read ({exc})")]


def full_check(store: FeatureStore) -> list[Problem]:
    """Every problem: catalog integrity, file sizes, non-finite values, rows (stored or derived) that differ from
    their checksums, rows claimed twice, orphaned rows, files the run each model answers from has not embedded, rows
    with no checksum yet.

    It reads one catalog version, and of the row files only the rows that version references (writers
    meanwhile cut only bytes past them), each file once, in chunks. Damage found while another process committed
    (a reclaim or repair moving rows the version read references) is looked for again, on the newest version.
    """
    for _ in range(_SCANS):
        before = store.version()
        problems = _scan_version(store)
        if not any(p.damage for p in problems) or store.version() == before:
            break
    return problems


def _scan_version(store: FeatureStore) -> list[Problem]:
    """:func:`full_check`'s scan of one catalog version."""
    try:
        with store.snapshot():
            result = store.db.execute("PRAGMA integrity_check").fetchone()[0]
            if result != "ok":
                return [Problem("catalog", None, f"the catalog is corrupt ({result})")]
            problems: list[Problem] = []
            in_use = {store.run(model).id for model in {run.model for run in store.runs()}}
            for run in store.runs():
                sizes = _file_sizes(store, run)
                problems += sizes
                problems += _shared_rows(store, run)
                if not any(p.kind in _ROWS_LOST for p in sizes):
                    problems += _values(store, run)
                problems += _derived_values(store, run)
                if run.id in in_use:
                    problems += _not_embedded(store, run) + _unread_now(store, run)
            return problems + _temp_files(store) + _store_files(store) + _settings(store)
    except sqlite3.DatabaseError as exc:
        return [Problem("catalog", None, f"the catalog cannot be read ({exc})"), *_store_files(store)]


def check_and_repair(store: FeatureStore) -> tuple[list[Problem], list[str]]:
    """Fix what :func:`full_check` finds under the write lock, then check again: (the problems left, what was done,
    one line each). ValueError when the catalog itself is damaged.

    The scan runs after the lock is taken, so another writer's changes since an earlier check (rows added or
    rewritten, damage already mended) are what it acts on, never that check's stale findings. When it finds
    nothing to fix (no problems, or only files not embedded, which `mess extract` embeds), it is not run again.
    """
    unblocked = unblock_lock(store)
    with store.writing("mess check --repair"):
        problems = full_check(store)
        if any(p.kind == "catalog" for p in problems):
            raise ValueError("the catalog itself is damaged; it cannot be repaired from the row files")
        if all(p.kind == "not-embedded" for p in problems):
            return problems, unblocked
        done = _fix(store, problems)
        return full_check(store), unblocked + done


def _fix(store: FeatureStore, problems: list[Problem]) -> list[str]:
    """Fix ``problems``, found by a scan under the write lock the caller still holds; what was done."""
    done: list[str] = []
    for run in store.runs():
        mine = [p for p in problems if p.run_id == run.id and p.kind != "not-embedded"]  # for `mess extract`
        if not mine:
            continue
        done += _repair_derived(store, run, mine)
        done += _move_aside(store, run)
        hashes = _untrusted(store, run, mine)
        rows = store.track_rows(run)
        freed = [row for h, row in rows.items() if h in hashes]
        kept = max((row for h, row in rows.items() if h not in hashes), default=-1) + 1
        # derived vectors are stored by row: blank those of the freed rows before the rows are freed, so a
        # repair killed in between never leaves a vector for the next file written there to inherit
        blanked = store.forget_derived_rows(run, freed, kept)
        with store.db:
            store.db.executemany("DELETE FROM vectors WHERE run_id=? AND content_hash=?",
                                 [(run.id, h) for h in hashes])
        if hashes:
            done.append(f"{run.model} (run {run.id}): dropped the vectors of {counted(len(hashes), 'file')}; "
                        f"`mess extract FOLDER {store.extract_options(run)}` embeds them again")
        store.cut_past_catalog([run])
        if any(p.kind in ("orphan-rows", *_ROWS_LOST) for p in mine):
            done.append(f"{run.model} (run {run.id}): row files cut back to the {store.catalog_rows(run)[0]} "
                        "track rows the catalog references")
        if any(p.kind == "no-checksum" for p in mine):
            added = _add_checksums(store, run, {h: s for p in mine for h, s in p.checksums.items()})
            whose = counted(added, "file's", "files'")
            done.append(f"{run.model} (run {run.id}): recorded the checksums of {whose} vectors "
                        "(written by an older mess)")
        if blanked:
            done.append(f"{run.model} (run {run.id}): forgot the fused vectors of {counted(blanked, 'file')}, "
                        "whose rows a new file may take; `mess fuse apply` writes them again")
    if any(p.kind == "lost-commits" for p in problems):
        wal.clear(store.root)
        done.append(f"cleared the note of the commits catalog.sqlite-wal lost ({wal.NOTE})")
    if any(p.kind == "temp-files" for p in problems):
        temps = leftover_temps(store.root)
        size = _total_size(temps)
        for path in temps:
            path.unlink(missing_ok=True)
        done.append(f"deleted {counted(len(temps), 'temp file')} of interrupted writes ({size / 1e6:.1f} MB)")
    return done


def _repair_derived(store: FeatureStore, run: Run, mine: list[Problem]) -> list[str]:
    """Drop the run's damaged derived sets; what was done, one line each.

    Called before ``forget_derived_rows`` rewrites every set left, with its rows' checksums (so a damaged set is
    never summed, and a set an older mess wrote gets its sums)."""
    damaged = _derived_named(mine, "short-derived", "checksum-derived")
    for name in damaged:
        store.drop_derived(run, name)
    return [*(f"{run.model} (run {run.id}): dropped the damaged {name} vectors; `mess fuse apply` writes them again"
              for name in damaged),
            *(f"{run.model} (run {run.id}): recorded the checksums of the {name} vectors (written by an older mess)"
              for name in _derived_named(mine, "no-checksum-derived") if name not in damaged)]


def _derived_named(problems: list[Problem], *kinds: str) -> list[str]:
    """The derived sets that problems of these kinds are about, each once."""
    return list(dict.fromkeys(p.derived for p in problems if p.kind in kinds))


def unblock_lock(store: FeatureStore) -> list[str]:
    """Rename what stands where the store's lock file belongs (a folder, ...) aside, so writers can take the lock
    again (nothing can hold a lock on it, so no lock is needed); what was done, one line or none."""
    odd = store.lock.not_a_file()
    if odd is None:
        return []
    aside = store.lock.path.with_name(f"write.lock.{time.time_ns()}.not-the-lock")
    try:
        store.lock.path.rename(aside)
    except FileNotFoundError:  # another repair moved it first
        return []
    return [f"moved write.lock ({odd}) aside to {aside.name}; delete it when you no longer need it"]


def _store_files(store: FeatureStore) -> list[Problem]:
    """The lock file when it is not a file (writers stop), a catalog hard-linked from another folder (writers stop),
    and the commits a damaged WAL file lost (noted when a store opened: see :mod:`mess.store.wal`)."""
    lines = wal.noted(store.root)
    if store.lost_commits_unnoted:  # the store's folder cannot be written
        lines.append(store.lost_commits_unnoted)
    problems = [Problem("lost-commits", None, line, damage=False) for line in lines]
    with contextlib.suppress(OSError):
        if (links := (store.root / "catalog.sqlite").stat().st_nlink) > 1:
            problems.append(Problem("hard-links", None, shared_files(store.root, links), damage=False))
    odd = store.lock.not_a_file()
    if odd is not None:
        problems.append(Problem("not-a-file", None, f"write.lock is {odd}, not the store's lock file, so nothing "
                                "can write to the store; `mess check --repair` moves it aside"))
    return problems


def _settings(store: FeatureStore) -> list[Problem]:
    """The store's settings where commands naming no model cannot use them (`config.json` unreadable, or a
    default-model with no vectors here): each such command refuses, naming the fix; answers are not wrong."""
    try:
        store.default_choice()  # as commands choose (runs.run)
    except ConfigError as exc:
        return [Problem("config", None, str(exc), damage=False)]
    return []


def _temp_files(store: FeatureStore) -> list[Problem]:
    """Temp files interrupted atomic writes left (a killed `mess index` can leave GBs): space, not damage."""
    temps = leftover_temps(store.root)
    if not temps:
        return []
    named = ", ".join(printable(str(p.relative_to(store.root))) for p in temps[:3])
    named += ", ..." if len(temps) > 3 else ""
    return [Problem("temp-files", None, f"{counted(len(temps), 'temp file')} of interrupted writes hold "
                    f"{_total_size(temps) / 1e6:.1f} MB ({named}); `mess check --repair` deletes them", damage=False)]


def _move_aside(store: FeatureStore, run: Run) -> list[str]:
    """Rename what stands where one of the run's row files belongs (a directory, a link loop) out of its way, so
    the next write makes the file again; what was done, one line each."""
    done = []
    for level in ("track", "segment"):
        for layer in range(len(run.layer_names)):
            file = store.row_file(run, level, layer)
            odd = file.not_a_file()
            if odd:
                moved, aside = set_aside(file.path, store.root)
                what = odd if moved == file.path else f"a file where a folder of {_relative(store, file.path)} belongs"
                done.append(f"{run.model} (run {run.id}): moved {_relative(store, moved)} ({what}) aside to "
                            f"{aside.name}; delete it when you no longer need it")
    return done


def _relative(store: FeatureStore, path: Path) -> str:
    """``path`` inside the store, as printed (runs/1/track/000.f16)."""
    return printable(str(path.relative_to(store.root)))


def _total_size(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        with contextlib.suppress(OSError):
            total += p.stat().st_size
    return total


def _file_sizes(store: FeatureStore, run: Run) -> list[Problem]:
    track_rows, seg_rows = store.catalog_rows(run)
    problems = []
    for level, want in (("track", track_rows), ("segment", seg_rows)):
        for layer, name in enumerate(run.layer_names):
            file = store.row_file(run, level, layer)
            odd = file.not_a_file()
            if odd:
                problems.append(Problem("not-a-file", run.id, f"{run.model} {level} vectors of layer {name}: "
                                        f"{_relative(store, file.path)} is {odd} (the catalog references {want} "
                                        "rows there)"))
                continue
            have = file.rows
            if have < want:
                problems.append(Problem("short-file", run.id, f"{run.model} {level} vectors of layer {name} hold "
                                        f"{have} rows, the catalog references {want}"))
            elif have > want:
                problems.append(Problem("orphan-rows", run.id, f"{run.model} {level} vectors of layer {name}: "
                                        f"{counted(have - want, 'row')} past the catalog's last (an interrupted write)",
                                        damage=False))
    for name, have, written in store.derived_sizes(run):
        path = store.derived_path(run, name)
        odd = RowFile(path, 1).not_a_file()
        if odd:  # dropped by repair like a short set (its entry set aside)
            problems.append(Problem("short-derived", run.id, f"{run.model} {name} vectors: "
                                    f"{_relative(store, path)} is {odd}", derived=name))
        elif written is not None and have < written:  # read as tracks added since, they were left out silently
            problems.append(Problem("short-derived", run.id, f"{run.model} {name} vectors hold {have} rows, "
                                    f"`mess fuse apply` wrote {written}", derived=name))
        elif have > track_rows:  # rows a repair freed (and was killed before it blanked): the next file's row
            problems.append(Problem("stale-derived", run.id, f"{run.model} {name} vectors: "
                                    f"{counted(have - track_rows, 'row')} past the catalog's last, which the next "
                                    "new file would inherit", derived=name))
    return problems


def _shared_rows(store: FeatureStore, run: Run, *, quick: bool = False) -> list[Problem]:
    """Files whose vectors point at a row another file claims: track rows (one indexed query), and unless ``quick``
    overlapping segment rows (a scan; segment reads check their own rows, see ``FeatureStore.segment_matrix``)."""
    shared = store.db.execute("SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM vectors WHERE run_id=? "
                              "GROUP BY track_row HAVING n > 1)", (run.id,)).fetchone()[0]
    if not quick:
        rows = store.db.execute("SELECT seg_row, n_segments FROM vectors WHERE run_id=? ORDER BY seg_row",
                                (run.id,)).fetchall()
        shared += sum(1 for a, b in zip(rows, rows[1:], strict=False) if a[0] + a[1] > b[0])
    if not shared:
        return []
    whose = counted(shared, "file's vectors point", "files' vectors point")
    return [Problem("shared-rows", run.id, f"{run.model}: {whose} at rows another file "
                    "also claims (two writers without a lock)")]


def _not_embedded(store: FeatureStore, run: Run) -> list[Problem]:
    """Files with neither vectors nor a failure: `mess extract` embeds those on disk; those no longer there (deleted
    before this run was extracted) it cannot, and `mess extract FOLDER --prune` forgets them."""
    paths = store.unembedded(run)
    if not paths:
        return []
    looks = {p: look(p) for p in paths}  # `--prune` keeps what it cannot look at: no advice to prune those
    gone = [p for p in paths if looks[p] is None]
    hidden = [p for p in paths if isinstance(looks[p], OSError)]
    here = [p for p in paths if looks[p] is True]
    files = counted(len(paths), "file has", "files have")
    message = f"{run.model}: {files} neither vectors nor a recorded failure, so no answer includes them"
    if hidden:  # in a folder that cannot be read now: on disk as far as anyone can tell, and `--prune` keeps them
        error = next(e for e in looks.values() if isinstance(e, OSError))
        message += (f"; {len(hidden)} cannot be looked at now ({_named(hidden)}: {error.strerror}): once readable, "
                    f"`mess extract FOLDER {store.extract_options(run)}` embeds {'it' if len(hidden) == 1 else 'them'}")
    if here:
        causes = "vectors a repair dropped, an interrupted or running `mess extract`, or a damaged content hash"
        elsewhere = _embedded_elsewhere(store, run, here)
        if elsewhere == len(here):  # the common case: a folder extracted with another model only
            causes = "extracted with another model only"
        elif elsewhere:
            causes = f"{elsewhere} extracted with another model only; the others: {causes}"
        message += f" ({_named(here)}): {causes}; `mess extract FOLDER {store.extract_options(run)}` embeds them"
    if gone:
        message += (f"{'; ' if here or hidden else ': '}{counted(len(gone), 'is', 'are')} no longer on disk "
                    f"({_named(gone)}): `mess extract FOLDER --prune` forgets them")
    return [Problem("not-embedded", run.id, message, damage=False, gone=not here and not hidden,
                    extract=store.extract_options(run))]


def _unread_now(store: FeatureStore, run: Run) -> list[Problem]:
    """Files with vectors whose last reading failed before they could be hashed (incomplete, being written,
    unreadable): answers hold the vectors of what they held before, which the file may no longer hold."""
    failed = {from_db_path(r[0]): r[1] for r in store.db.execute(
        "SELECT path, reason FROM failures WHERE run_id=? AND content_hash LIKE 'path:%'", (run.id,))}
    paths = [t.path for t in store.tracks(run) if t.path in failed]
    if not paths:
        return []
    files = counted(len(paths), "file", "files")
    why = failed[paths[0]].removeprefix(f"{printable(paths[0])}: ")
    return [Problem("unread-now", run.id, f"{run.model}: {files} could not be read by the last `mess extract` "
                    f"({_named(paths)}: {why}{'; ...' if len(paths) > 1 else ''}), so answers hold what "
                    f"{'it' if len(paths) == 1 else 'they'} held when last embedded; `mess info --failures` says "
                    "why, and the next `mess extract` reads them again", damage=False)]


def _embedded_elsewhere(store: FeatureStore, run: Run, paths: list[str]) -> int:
    """How many of ``paths`` (files without ``run``'s vectors) have vectors of another run."""
    rows = store.db.execute("SELECT t.path FROM tracks t WHERE EXISTS (SELECT 1 FROM vectors v WHERE v.run_id != ? "
                            "AND v.content_hash = t.content_hash)", (run.id,)).fetchall()
    return len(set(paths) & {from_db_path(r[0]) for r in rows})


def _named(paths: list[str]) -> str:
    return ", ".join(printable(p) for p in paths[:3]) + (", ..." if len(paths) > 3 else "")


def _values(store: FeatureStore, run: Run) -> list[Problem]:
    """Non-finite vectors, vectors that differ from their checksums (each file named once), rows with no checksum."""
    non_finite, differ, unsummed = _scan(store, run)
    problems = []
    if non_finite:
        files = counted(len(non_finite), "file has", "files have")
        problems.append(Problem("non-finite", run.id, f"{run.model}: {files} NaN or infinite vectors",
                                hashes=frozenset(non_finite)))
    if differ - non_finite:
        files = counted(len(differ - non_finite), "file has", "files have")
        problems.append(Problem("checksum", run.id, f"{run.model}: {files} vectors "
                                "that differ from their checksums (changed on disk)",
                                hashes=frozenset(differ - non_finite)))
    if unsummed:
        whose = counted(len(unsummed), "file's vectors have", "files' vectors have")
        problems.append(Problem("no-checksum", run.id, f"{run.model}: {whose} no "
                                "checksum yet (written by an older mess); `mess check --repair` adds them",
                                damage=False, checksums=unsummed))
    return problems


def _scan(store: FeatureStore, run: Run) -> tuple[set[str], set[str], dict[str, bytes]]:
    """(content hashes with a non-finite value, content hashes whose rows differ from their checksums, content
    hash -> the checksums of its rows as read, for those with none recorded), reading each row file once."""
    rows = _catalog_sums(store, run)
    blobs = [r[4] for r in rows]
    n_layers = len(run.layer_names)
    unsummed = np.array([r[4] is None for r in rows], dtype=bool)
    found = np.zeros((int(unsummed.sum()), 2 * n_layers), dtype=np.int64)  # as checksums.pack orders them
    non_finite: set[str] = set()
    differ: set[str] = set()
    for level, referenced in zip(("track", "segment"), store.catalog_rows(run), strict=True):
        starts = np.array([r[1] if level == "track" else r[2] for r in rows], dtype=np.int64)
        counts = np.array([1 if level == "track" else r[3] for r in rows], dtype=np.int64)
        bad_rows = np.zeros(referenced, dtype=bool)
        for layer in range(n_layers):
            sums = BlockSums(starts, counts, expected(blobs, level, layer, n_layers))
            fresh = BlockSums(starts[unsummed], counts[unsummed])  # every block: the sums a repair records
            bad_rows |= _read_rows(store.row_file(run, level, layer), referenced, sums, fresh)
            differ |= {r[0] for r, wrong in zip(rows, sums.changed(), strict=True) if wrong}
            found[:, layer + (n_layers if level == "segment" else 0)] = fresh.sums()
        marks = np.concatenate([[0], np.cumsum(bad_rows)])  # non-finite rows before each row
        non_finite |= {r[0] for r, bad in zip(rows, marks[starts + counts] > marks[starts], strict=True) if bad}
    hashes = [r[0] for r, none in zip(rows, unsummed, strict=True) if none]
    sums_of = {h: pack(s[:n_layers], s[n_layers:]) for h, s in zip(hashes, found.tolist(), strict=True)}
    return non_finite, differ, sums_of


def _read_rows(file: RowFile, rows: int, *sums: BlockSums) -> np.ndarray:
    """Read rows [0, ``rows``) of a row file in chunks, adding them to each of ``sums``; which of them hold a
    non-finite value."""
    bad = np.zeros(rows, dtype=bool)
    with contextlib.suppress(ShortFile):  # cut by a repair since the catalog was read: its rows are gone
        for first, chunk in file.stored_chunks(rows):
            bad[first:first + len(chunk)] = non_finite(chunk)
            for each in sums:
                each.add(first, chunk)
    return bad


def _derived_values(store: FeatureStore, run: Run) -> list[Problem]:
    """Derived sets with rows that differ from their checksums, and sets with none recorded (an older mess's)."""
    problems = []
    for name, file, recorded in store.derived_sets(run):
        if recorded is None:
            problems.append(Problem("no-checksum-derived", run.id, f"{run.model} {name} vectors have no checksums "
                                    "yet (written by an older mess); `mess check --repair` adds them",
                                    damage=False, derived=name))
            continue
        n = file.rows
        sums = BlockSums(np.arange(n, dtype=np.int64), np.ones(n, dtype=np.int64), row_expected(recorded, n))
        _read_rows(file, n, sums)
        wrong = int(sums.changed().sum())
        if wrong:
            differ = counted(wrong, "row differs from its checksum", "rows differ from their checksums")
            problems.append(Problem("checksum-derived", run.id,
                                    f"{run.model} {name} vectors: {differ} (changed on disk)", derived=name))
    return problems


def _untrusted(store: FeatureStore, run: Run, mine: list[Problem]) -> set[str]:
    """Content hashes whose vectors cannot be trusted, given the run's problems (non-finite and checksum problems
    name theirs: what the check read)."""
    rows = store.db.execute("SELECT content_hash, track_row, seg_row, n_segments FROM vectors WHERE run_id=?",
                            (run.id,)).fetchall()
    kinds = {p.kind for p in mine}
    bad: set[str] = set().union(*(p.hashes for p in mine))
    if kinds & set(_ROWS_LOST):
        n_track = min(store.row_file(run, "track", i).rows for i in range(len(run.layer_names)))
        n_seg = min(store.row_file(run, "segment", i).rows for i in range(len(run.layer_names)))
        bad |= {r[0] for r in rows if r[1] >= n_track or r[2] + r[3] > n_seg}
    if "shared-rows" in kinds:
        by_row: dict[int, list[str]] = {}
        for r in rows:
            by_row.setdefault(r[1], []).append(r[0])
        bad |= {h for hs in by_row.values() if len(hs) > 1 for h in hs}
        ordered = sorted(rows, key=lambda r: r[2])
        for a, b in zip(ordered, ordered[1:], strict=False):
            if a[2] + a[3] > b[2]:
                bad |= {a[0], b[0]}
    return bad


def _catalog_sums(store: FeatureStore, run: Run) -> list[sqlite3.Row]:
    """The run's catalog rows (content_hash, track_row, seg_row, n_segments, checksums)."""
    sums = "checksums" if has_column(store.db, "vectors", "checksums") else "NULL AS checksums"  # older, read-only
    return store.db.execute(f"SELECT content_hash, track_row, seg_row, n_segments, {sums} FROM vectors "
                            "WHERE run_id=?", (run.id,)).fetchall()


def _add_checksums(store: FeatureStore, run: Run, found: Mapping[str, bytes]) -> int:
    """Record ``found``, the checksums the scan under the write lock summed, for the run's vectors that have none
    (written by an older mess); how many were added.

    Called by :func:`check_and_repair` after it dropped every vector that scan found damaged (and cut only bytes
    past the rows left), so what is recorded was checked and is what the files hold: nothing is read again."""
    rows = store.db.execute("SELECT content_hash FROM vectors WHERE run_id=? AND checksums IS NULL",
                            (run.id,)).fetchall()
    packed = [(found[h], run.id, h) for (h,) in rows if h in found]
    with store.db:
        store.db.executemany("UPDATE vectors SET checksums=? WHERE run_id=? AND content_hash=?", packed)
    return len(packed)
