"""Processes that have a store's catalog open while its ``-wal`` or ``-shm`` file is deleted (Linux).

SQLite keeps using the files it opened: a process that had the store open goes on with the deleted log and index,
and a process opening the store now starts new ones. The two then disagree without a word: commits only the
deleted log holds (what a reader kept from being folded into the catalog) are lost when that process ends, the
new writers' commits never reach it, and a writer restarting the new log can overwrite frames its index still
names. So while such a process lives the store is refused, naming it (found through ``/proc/locks``, where SQLite's
connections hold a read lock on the catalog, and ``/proc/PID/fd``).
"""

from __future__ import annotations

import os
from pathlib import Path

_FILES = ("catalog.sqlite-wal", "catalog.sqlite-shm")


def deleted_while_open(db: Path) -> tuple[int, list[str]] | None:
    """(a process that has the catalog ``db`` open, the names of those of its -wal/-shm files it holds deleted),
    the first such process; None when there is none or it cannot be told (no /proc, another user's process)."""
    try:
        st = db.stat()
        locks = Path("/proc/locks").read_text()
    except OSError:
        return None
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = sorted({int(f[4]) for line in locks.splitlines() if len(f := line.split()) > 5 and f[5] == device
                   and f[4].isdigit()})
    for pid in pids:
        if gone := held_deleted(db, pid):
            return pid, gone
    return None


def held_deleted(db: Path, pid: int) -> list[str]:
    """The names of the catalog ``db``'s -wal/-shm files process ``pid`` holds deleted, sorted ([] when none or its
    descriptors cannot be read)."""
    folder = os.path.realpath(db.parent)
    links = {_link(f"/proc/{pid}/fd/{fd}") for fd in _descriptors(pid)}
    # a file it holds deleted, and none by that name: one that also holds the files there now (a server that
    # opened a store made anew where the one it had was deleted) agrees with this command about this store
    return sorted(name for name in _FILES if f"{folder}/{name} (deleted)" in links and f"{folder}/{name}" not in links)


def refusal(root: Path, pid: int, gone: list[str]) -> str:
    """What to do about process ``pid`` having the store at ``root`` open with its files ``gone`` deleted."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = ""
    copy = open_log(root, pid)
    keep = (f"; its latest commits are only in that process's open copy of catalog.sqlite-wal: `cp {copy} "
            f"{root / 'catalog.sqlite-wal'}` keeps them (before it ends), then end it" if copy else
            "; end it")
    return (f"{root}: {' and '.join(gone)} {'was' if len(gone) == 1 else 'were'} deleted while process {pid}"
            f"{f' ({command})' if command else ''} had the store open, so it and this command would no longer "
            f"agree on what the catalog holds{keep} (a server: restart it) and run the command again")


def open_log(root: Path, pid: int) -> str | None:
    """``/proc/PID/fd/N``: process ``pid``'s descriptor of the store's deleted ``catalog.sqlite-wal`` (what a copy
    of it back into the store keeps), None when it holds none."""
    wal = Path(os.path.realpath(root)) / "catalog.sqlite-wal"
    return next((f"/proc/{pid}/fd/{fd}" for fd in _descriptors(pid)
                 if _link(f"/proc/{pid}/fd/{fd}") == f"{wal} (deleted)"), None)


def _descriptors(pid: int) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def deleted_catalog(root: Path) -> tuple[int, str] | None:
    """(a process, its ``/proc/PID/fd/N``) that holds the store's ``catalog.sqlite`` open though it was deleted (a
    server, say: its copy is whole, with its log), the first found; None when none is, or /proc cannot tell. Reads
    every process's descriptors: called only once the catalog is found missing."""
    gone = f"{os.path.realpath(root)}/catalog.sqlite (deleted)"
    try:
        pids = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
    except OSError:
        return None
    for pid in pids:
        for fd in _descriptors(pid):
            if _link(f"/proc/{pid}/fd/{fd}") == gone:
                return pid, f"/proc/{pid}/fd/{fd}"
    return None
