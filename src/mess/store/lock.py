"""One writer at a time: an inter-process lock on a store folder.

The lock is an OS file lock (``flock``) on ``STORE/write.lock``, so it is released
when its holder exits, however it exits (``kill -9`` included). Its holder writes
who it is (pid, command, since when) to ``STORE/write.lock.json``, so a process that
has to wait can say for whom. Within one process the lock is shared by every
thread and every :class:`StoreLock` on the same folder (it is re-entrant).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from mess.store.paths import replace_file

_POLL_SECONDS = 0.5
_GLANCE_SECONDS = 1.0  # a writer waits this long for a store being opened (its WAL read) before it says busy/waits
_READER_GLANCE_SECONDS = 0.2  # what a reader asking whether a writer runs waits for one opening the store


class StoreBusy(Exception):
    """Another process holds the store's write lock (and the caller chose not to wait)."""


class LockUnusable(Exception):
    """``STORE/write.lock`` is not a file (a folder, a link loop, ...): no writer can take the lock."""


class StoreLock:
    """The write lock of one store folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.holder_file = self.root / "write.lock.json"
        self.path = self.root / "write.lock"
        self._lock = FileLock(self.path, thread_local=False, is_singleton=True,
                              preserve_lock_file=True)

    @property
    def held(self) -> bool:
        """Whether this process holds the lock."""
        return self._lock.is_locked

    def not_a_file(self) -> str | None:
        """What stands where the lock file belongs instead of one ('a folder', 'a symbolic link loop', ...); None for
        a file, a link to one, or nothing (the first writer makes it, where a link points too)."""
        try:
            mode = self.path.stat().st_mode
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            return "a symbolic link loop" if exc.errno == errno.ELOOP else f"unreadable ({exc.strerror})"
        if stat.S_ISREG(mode):
            return None
        return "a folder" if stat.S_ISDIR(mode) else "not a regular file"

    def unusable(self) -> str | None:
        """Why no writer can take the lock, in one line naming the path and what to do; None when it can."""
        odd = self.not_a_file()
        if odd is None:
            return None
        return (f"{self.path} is {odd}, not the store's lock file, so nothing can write to the store: move it aside "
                "(`mess check --repair` does) and run the command again")

    def holder(self) -> str:
        """Who holds the lock, in words ('pid 123, mess extract, for 12 s'), as far as it said."""
        try:
            info = json.loads(self.holder_file.read_text())
            return f"pid {info['pid']}, {info['command']}, for {time.time() - info['since']:.0f} s"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def writer(self) -> str | None:
        """Who is writing to the store now, in words (:meth:`holder`), or None when no other process holds the lock:
        tried, not read from the holder file, which a writer that exited leaves behind. A process opening the store
        holds the lock for a few ms (:meth:`trying`) and is no writer; this process's own lock is none either."""
        if self._lock.is_locked or not self.path.is_file() or not os.access(self.path, os.W_OK):
            return None  # a lock file this process may not open (a read-only store) tells no writer apart
        try:
            if self._acquired_within(_READER_GLANCE_SECONDS):
                self._lock.release()
                return None
        except OSError:
            return None
        return self.holder()

    @contextmanager
    def hold(self, command: str, *, wait: bool = True,
             on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold the lock for a block; waits for the holder (telling ``on_wait`` once) or raises StoreBusy."""
        self.root.mkdir(parents=True, exist_ok=True)
        first = not self._lock.is_locked
        if first and (why := self.unusable()):
            raise LockUnusable(why)
        try:
            self._lock.acquire(timeout=0 if first else -1)
        except Timeout:
            if not self._acquired_within(_GLANCE_SECONDS):
                message = f"waiting for the store lock on {self.root} held by {self.holder()}"
                if not wait:
                    raise StoreBusy(message.replace("waiting for", "the store is busy:", 1)) from None
                if on_wait is not None:
                    on_wait(message)
                self._lock.acquire(poll_interval=_POLL_SECONDS)
        try:
            if first:
                _note_holder(self.holder_file, command)
            yield
        finally:
            self._lock.release()

    def _acquired_within(self, seconds: float) -> bool:
        """Whether the lock could be taken within ``seconds``: a process opening the store holds it for a few ms (see
        :meth:`trying`), and should neither make a `--no-wait` writer give up nor be named as a writer to wait for."""
        try:
            self._lock.acquire(timeout=seconds, poll_interval=0.02)
        except Timeout:
            return False
        return True

    @contextmanager
    def trying(self) -> Iterator[bool]:
        """Hold the lock for a block if no one, this process included, holds it now (whether it is held): nothing
        waits, nothing is recorded. For reading the WAL file when a store opens (:mod:`mess.store.wal`), a few ms."""
        if self._lock.is_locked:  # by another thread of this process, maybe writing now
            yield False
            return
        if self.not_a_file() is not None or not self.path.exists():  # a reader makes no lock file
            yield False
            return
        try:
            self._lock.acquire(timeout=0)
        except (Timeout, OSError):
            yield False
            return
        try:
            yield self._lock.lock_counter == 1  # not when another thread took it meanwhile (it is re-entrant)
        finally:
            self._lock.release()


def _note_holder(path: Path, command: str) -> None:
    """Write who holds the lock (this process, ``command``, since now) to ``path``, for writers that wait. Only a
    courtesy: where it cannot be written (a folder there, a full disk) the note before it is removed, so no writer
    names a holder that has gone (they say 'another process'), and the write goes on; the lock itself is the flock."""
    try:
        replace_file(path, json.dumps({"pid": os.getpid(), "command": command, "since": time.time()}).encode())
    except OSError:
        with contextlib.suppress(OSError):
            path.unlink()
