"""A feature store's open catalog connection: the write lock, transactions, snapshots, reads."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import sqlite3
import sys
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TypeVar

from mess.store.catalog import has_column
from mess.store.errors import CATALOG_ADVICE, ReadAgain, StoreDamaged, StoreError
from mess.store.lock import LockUnusable, StoreLock
from mess.store.memo import MEMO
from mess.store.paths import printable, replace_file
from mess.store.records import Track, TrackList

T = TypeVar("T")
_WRITER = ".writer"  # in runs/: the catalog that writes there (see StoreConnection._own_rows)
_READ_TRIES = 3  # reads of rows a newer catalog version changed while they were read, each time (see reading)


def _command_name() -> str:
    """What this process is, for the lock holder note: 'mess extract', 'python bench.py', ..."""
    argv = [a for a in sys.argv[:2] if a] or ["python"]
    return " ".join([argv[0].rsplit("/", 1)[-1], *argv[1:]])


def size_limit_note() -> str:
    """'; this process may write files of at most 400 kB (`ulimit -f`)' under a file-size limit (SQLite says only
    'disk I/O error' when it meets one; Python ignores the SIGXFSZ that would end the process), '' without one."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return "" if limit == resource.RLIM_INFINITY else f"; this process may write files of at most {limit // 1000} kB " \
        "(`ulimit -f`)"


def shared_files(root: Path, links: int) -> str:
    """Why a store whose catalog has ``links`` hard links must not be written, and what to do."""
    return (f"{root / 'catalog.sqlite'} has {links} hard links: another folder shares this store's files (a copy made "
            "by `cp -al` or a snapshot tool), so a write to either changes both and neither keeps the state the copy "
            "was made at; copy the one to keep with `cp -a` (which copies the files), delete the linked one, and "
            "write to the copy")


class StoreConnection:
    """A feature store's open catalog: its one connection shared by a process's threads, the write lock and
    transactions, snapshots, the change token and memo. :class:`~mess.store.feature_store.FeatureStore` opens it."""

    root: Path
    db: sqlite3.Connection
    lock: StoreLock
    readonly: bool
    on_wait: Callable[[str], None] | None
    _lock: threading.RLock
    _scope: tuple[str, int]
    catalog: tuple[int, int] | None  # (device, inode) of the catalog file opened (see _still_here)

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
        """The write lock held for a block; a lock file that is not a file (a folder) is StoreDamaged naming it, and a
        store that is no longer where it was opened, or shares its files with a copy, StoreError (see _still_here)."""
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self.lock.hold(command, wait=wait, on_wait=on_wait))
            except LockUnusable as exc:
                raise StoreDamaged(str(exc)) from None
            self._still_here()
            recorded = self._own_rows()
            yield
            if not recorded:  # recorded once the first write made the folder (written: no refusal)
                with contextlib.suppress(StoreError):
                    self._own_rows()

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

    def reading(self, read: Callable[[], T], snapshot: bool = True) -> T:
        """``read()`` inside one snapshot; where a newer catalog version changed what it reads meanwhile
        (:class:`ReadAgain`: `fuse apply` rewrote a derived set twice, `check --reclaim` or `--repair` moved or
        freed rows), read again on the newest version, up to ``_READ_TRIES`` times in all. Inside an outer
        snapshot it reads once: that one's reader, the outermost, reads again. Without ``snapshot``, a ``read``
        of one query (consistent by itself) holds the connection only for it, so threads read files side by side."""
        with self._lock:
            outer = self.db.in_transaction
        attempt = 1
        while True:
            try:
                with self.snapshot() if snapshot else nullcontext():
                    return read()
            except ReadAgain:
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
            with self._lock:
                self._still_here()  # before the lock, whose file would be made in a folder put in the store's place
                with self._holding(_command_name(), on_wait=self.on_wait), self.db:
                    yield
        except sqlite3.DatabaseError as exc:
            if type(exc) is sqlite3.DatabaseError:  # SQLite found a damaged page: the catalog is damaged, not the disk
                raise self._catalog_damaged(exc) from None
            if not isinstance(exc, sqlite3.OperationalError):
                raise
            raise self._write_refused(exc) from None
        except OSError as exc:
            raise self._write_refused(exc) from None

    def _still_here(self) -> None:
        """StoreError unless the store's folder still holds the catalog this connection opened (``catalog``): a store
        moved or deleted while a command wrote to it (a disk unplugged, a folder renamed, another store put in its
        place) would have it commit to the catalog it holds open and write rows by path, into whatever folder is
        there now (another store's row files, at rows that store references)."""
        try:
            st = os.stat(self.root / "catalog.sqlite")
            here = (st.st_dev, st.st_ino) == self.catalog
        except OSError:
            here = False
        if not here:
            raise StoreError(f"{self.root}: the store was moved or deleted while this command had it open ({self.root}"
                             "/catalog.sqlite is no longer the catalog it opened), so it writes nothing more there "
                             "(what it committed before went with that store): run the command again")
        if st.st_nlink > 1:
            raise StoreError(f"{self.root}: cannot write: {shared_files(self.root, st.st_nlink)}")

    def _own_rows(self) -> bool:
        """StoreError when the store's row folder (``runs``) is another live store's too: ``runs`` linked to another
        disk, then the store copied with `cp -a` (which copies the link, not the rows); each catalog writes at its
        own last row and cuts what lies past it, so a write here would overwrite and cut the other store's rows. The
        catalog writing there is recorded in ``runs/.writer`` (path, device, inode); a store whose own ``runs`` is
        another folder (a real copy), or one no longer there, is no other writer, and the record becomes this one.
        Whether the folder was there to check."""
        runs = self.root / "runs"
        if self.catalog is None or not runs.is_dir():
            return False
        mine = f"{os.path.realpath(self.root / 'catalog.sqlite')}\t{self.catalog[0]}\t{self.catalog[1]}"
        try:
            known = os.fsdecode((runs / _WRITER).read_bytes())  # a path in any encoding, as the system names it
        except OSError:
            known = ""
        if known == mine:
            return True
        with contextlib.suppress(OSError, ValueError):
            path, device, inode = known.split("\t")
            st = os.stat(path)
            other = (int(device), int(inode))  # alive at its path, not this catalog, writing into this folder
            if (st.st_dev, st.st_ino) == other != self.catalog and os.path.samefile(Path(path).parent / "runs", runs):
                raise StoreError(f"{printable(str(self.root))}: cannot write: its row folder {printable(str(runs))} "
                                 f"({printable(os.path.realpath(runs))}) is also the row folder of the store whose "
                                 f"catalog is {printable(path)}, so a write here would "
                                 "overwrite that store's rows (a copy made by `cp -a` copies a link, not the files it "
                                 "names); give this store a row folder of its own (`cp -a --dereference`) and run the "
                                 "command again")
        with contextlib.suppress(OSError):
            replace_file(runs / _WRITER, os.fsencode(mine))
        return True

    def _write_refused(self, exc: OSError | sqlite3.OperationalError) -> StoreError:
        """The StoreError of a write the system refused."""
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if isinstance(exc, OSError) and exc.filename:
            reason = f"{printable(str(exc.filename))}: {reason}"
        limit = size_limit_note()
        code = exc.errno if isinstance(exc, OSError) else None
        fix = ("let this user write there" if code in (errno.EACCES, errno.EPERM) else
               "mount it writable" if code == errno.EROFS else "raise the limit" if limit else "free disk space")
        return StoreError(f"cannot write to the store at {self.root} ({reason}{limit}); what was written before is "
                          f"kept: fix the cause ({fix}, say) and run the command again")

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
        ``tracks`` (what :meth:`~mess.store.tracks.TrackCatalog.tracks` returned), ``make`` reads them instead and
        the value is kept for the catalog version they were read at; any other sequence is not memoised.
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
