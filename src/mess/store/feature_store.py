"""The feature store: one folder holding the SQLite catalog and float16 vector files.

Layout::

    STORE/catalog.sqlite
    STORE/runs/<run_id>/track/<layer>.f16     one row per (run, content hash)
    STORE/runs/<run_id>/segment/<layer>.f16   one row per window
    STORE/runs/<run_id>/derived/<name>.f16    e.g. fused vectors, aligned to track rows
    STORE/indexes/, STORE/reports/            written by search and probing

:class:`FeatureStore` opens (and checks) a store; its methods come from one module per part, each class building
on the one before: connection (the catalog connection, write lock, snapshots), failures, tracks, runs, vectors,
derived (fused, ...), aspects (the probe's aspect map).
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import weakref
from collections.abc import Callable
from pathlib import Path

from mess.constants import DEFAULT_STORE
from mess.store.aspects import AspectMaps
from mess.store.catalog import NewerCatalog, closed_on_error, connect
from mess.store.connection import size_limit_note
from mess.store.errors import CATALOG_ADVICE, StoreDamaged, StoreError
from mess.store.holders import deleted_catalog, deleted_while_open, refusal
from mess.store.lock import StoreLock
from mess.store.memo import MEMO, connection_lock
from mess.store.paths import expanded
from mess.store.wal import deleted_log, lost_commits, note

_CONNECTIONS = itertools.count()


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


def _size(path: Path) -> int:
    """``path``'s size in bytes, 0 when it is not there."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _file_system_note(root: Path) -> str:
    """Why the file system holding ``root`` may refuse SQLite (which says only 'disk I/O error' or 'unable to open
    database file'): '; it is on a read-only file system: ...', '; its disk is full (0 kB free): ...' (under 1 MB
    left), or this process's file-size limit; '' otherwise."""
    folder = next((p for p in (root, *root.absolute().parents) if p.exists()), root)
    try:
        st = os.statvfs(folder)
    except OSError:
        return ""
    if st.f_flag & os.ST_RDONLY:
        return "; it is on a read-only file system: open it read-only (search, export) or mount it writable"
    free = st.f_bavail * st.f_frsize
    if free < 1e6:
        return f"; its disk is full ({free // 1000} kB free): free space and run the command again"
    return size_limit_note()


class FeatureStore(AspectMaps):
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
            held = deleted_catalog(self.root) if lost == "missing" else None
            advice = CATALOG_ADVICE if held is None else (
                f"process {held[0]} still has the deleted catalog open, whole: `cp {held[1]} {db.absolute()}` brings "
                "it back (before that process ends), then restart that process (a server) and run the command again")
            raise StoreDamaged(f"{self.root} is damaged: its catalog (catalog.sqlite) is {lost} but it holds "
                               f"vectors (runs/); {advice}")
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
        except NewerCatalog as exc:
            raise StoreError(f"{self.root}: {exc}") from None
        try:
            st = db.stat()
            self.catalog: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:  # gone already: every write says so
            self.catalog = None
        if readonly and _schema_missing(self.db):  # a first writer created the file, not yet its tables
            self.db.close()
            raise StoreError(f"no feature store at {self.root} yet (run `mess extract` first)")
        self.readonly = readonly
        self.on_wait = on_wait
        self._lock = connection_lock()  # a thread holding it never waits in the memo (see mess.store.memo)
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
        while no writer holds the lock (one appending or restarting the log would make a torn read). A log or index
        deleted while another process has the store open is StoreError naming it (:mod:`mess.store.holders`)."""
        holder = deleted_while_open(db)
        if holder is not None:
            raise StoreError(refusal(self.root, *holder))
        wal = db.with_name(db.name + "-wal")
        damage = deleted_log(wal)  # reads the -shm index alone: no writer's log to tear
        if damage is None and _size(wal):
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
