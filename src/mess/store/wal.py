"""Commits a damaged write-ahead log (``catalog.sqlite-wal``) would lose without a word.

SQLite recovers a WAL file by reading its frames (a 24-byte header and one page each) from the first, each
carrying the log header's salts and a checksum that continues the one before it; it stops at the first frame
that fails, and the commits after it count as never written. A byte flipped in the file, or the file cut short,
thus silently drops every later commit (tracks embedded, failures recorded): nothing is misread, but work is lost.

:func:`lost_commits` reads the file before SQLite opens it (recovery rebuilds the ``-shm`` index; the first write
after it overwrites the frames past the damage) and finds commits past the damage two ways: frames of the
current log (the header's salts) past the first failing one whose checksums continue from the frame before them
as stored, with a commit among them (a frame's bytes changed; its successors were written after it); and the
``-shm`` index a process left (``kill -9``, or a reader still open) claiming more committed frames than the file
holds valid ones (the file cut short). A log header that fails (its checksum, or a changed magic number or page
size, found by its first frame's checksum continuing the header's) loses every commit of the log. What a killed
writer leaves is not damage: frames past the last commit (none of them a commit) or one frame half written; and a
log restarted by a later writer holds older frames under other salts.

Format: https://www.sqlite.org/fileformat2.html#walformat (and ``wal.c``'s wal-index header for ``-shm``).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mess.store.paths import replace_file

_MAGIC = (0x377F0682, 0x377F0683)  # checksums of little-endian, big-endian words
_HEADER = 32
_FRAME_HEADER = 24
_MASK = np.uint64(0xFFFFFFFF)
_PAGES = tuple(2**k for k in range(9, 17))  # the page sizes a log can have
_CHUNK = 256  # frames summed at once (1 MB of 4 kB pages, 8 MB as uint64 words)


NOTE = "lost-commits.txt"  # in the store: one line per loss found (key, when, message[, "cleared"])


@dataclass(frozen=True)
class WalDamage:
    """Commits a damaged WAL file lost: ``valid`` frames SQLite recovers (up to its last commit there), the frame
    where the damage begins (1-based), commits found past it (``commits``, 0 when the file was cut and they are
    gone), the frame the ``-shm`` index said was committed last (0 when it said nothing), and ``key``: the same
    for every sighting of one loss (the log's salts and its last lost commit), so it is noted once."""

    valid: int
    damaged_at: int
    commits: int
    claimed: int
    key: str

    def message(self, wal: str = "catalog.sqlite-wal") -> str:
        """One line: what was lost and what happens next."""
        if self.commits:
            what = (f"{wal} was changed on disk: {self.commits} commit{'s' if self.commits > 1 else ''} past frame "
                    f"{self.damaged_at} were lost")
        elif not self.damaged_at:
            what = f"{wal} was deleted or emptied on disk: the commits up to frame {self.claimed} were lost"
        else:
            what = (f"{wal} was cut short on disk at frame {self.damaged_at}: the commits up to frame {self.claimed} "
                    "were lost")
        return (f"{what}, and the catalog is as it was before them; the files they embedded are embedded again by "
                "the next `mess extract`")


def note(root: Path, damage: WalDamage) -> tuple[str | None, bool]:
    """Record ``damage`` in the store's note (``lost-commits.txt``), for `mess check` to name until `mess check
    --repair` clears it: (its message when not noted before, else None: its evidence stays in the log until
    overwritten; whether the note holds it: not where the folder cannot be written, and then the message is said
    each time)."""
    message = damage.message()
    path = root / NOTE
    try:
        known = path.read_text(errors="replace").splitlines() if path.is_file() else []
        if any(line.split("\t", 1)[0] == damage.key for line in known):
            return None, True
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        with path.open("a", encoding="utf-8") as f:
            f.write(f"{damage.key}\t{when}\t{message}\n")
    except OSError:
        return message, False
    return message, True


def noted(root: Path) -> list[str]:
    """The losses the store's note records and `mess check --repair` has not cleared, one line each ('... (found
    2026-12-05 00:40 UTC)')."""
    try:
        lines = (root / NOTE).read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [f"{parts[2]} (found {parts[1]})" for line in lines if len(parts := line.split("\t")) == 3]


def clear(root: Path) -> int:
    """Mark every loss the note records as cleared (kept, so the same loss seen again in the log is not noted
    again); how many were not cleared before."""
    path = root / NOTE
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return 0
    fresh = sum(1 for line in lines if line.count("\t") == 2)
    if fresh:
        replace_file(path, "".join(f"{line}\tcleared\n" if line.count("\t") == 2 else f"{line}\n"
                                   for line in lines).encode())
    return fresh


def lost_commits(wal: Path) -> WalDamage | None:
    """The commits the WAL file ``wal`` (``catalog.sqlite-wal``) holds past damage, as SQLite would drop them on
    opening it; None when it lost none (no file, an empty or restarted log, a killed writer's unfinished tail).

    Read it while no writer can append to the log or restart it (under the store's write lock)."""
    data = _read(wal)
    if len(data) < _HEADER:
        return deleted_log(wal)
    magic = int.from_bytes(data[:4], "big")
    page = int.from_bytes(data[8:12], "big")
    salts = data[16:24]
    stored_header = (int.from_bytes(data[24:28], "big"), int.from_bytes(data[28:32], "big"))
    readable = magic in _MAGIC and page in _PAGES
    big = magic & 1 == 1
    header_ok = readable and _checksum(data[:24], (0, 0), big) == stored_header
    if not header_ok:  # SQLite reads no frame of it: the frames say how they were written (a changed magic, page size)
        found = _changed_header(data, stored_header)
        if found is not None:
            big, page = found
        elif not readable:
            return None  # not a log SQLite would read at all
    size = _FRAME_HEADER + page
    n = (len(data) - _HEADER) // size
    if not n:
        claimed = _claimed(_shm(wal), salts)
        return WalDamage(0, 1, 0, claimed, f"{salts.hex()}:{claimed}") if claimed and header_ok else None
    frames = np.frombuffer(data, dtype=np.uint8, count=n * size, offset=_HEADER).reshape(n, size)
    if not header_ok:  # its salts may be what changed: the log's frames carry them too
        salts = frames[0, 8:16].tobytes()
    heads = frames[:, :_FRAME_HEADER].copy().view(">u4").astype(np.int64)  # page, commit size, salts, checksums
    stored = heads[:, 4:6]
    before = np.vstack([np.array(stored_header, dtype=np.int64).reshape(1, 2), stored[:-1]])
    sums = np.concatenate([_checksums(np.concatenate([part[:, :8], part[:, _FRAME_HEADER:]], axis=1),
                                      before[i:i + _CHUNK], big)
                           for i in range(0, n, _CHUNK) if len(part := frames[i:i + _CHUNK])])
    own_salts = (frames[:, 8:16] == np.frombuffer(salts, dtype=np.uint8)).all(axis=1)
    chained = own_salts & (sums == stored).all(axis=1)  # written in this log, each after the frame before it
    commit = heads[:, 1] != 0
    later = chained.copy()
    if header_ok:
        first_bad = int(np.argmin(chained)) if not chained.all() else n
        later[: first_bad + 1] = False  # the failing frame itself may be a killed writer's half-written one
    else:  # SQLite reads no frame of a log whose header fails: every commit in it is lost
        first_bad = 0
    valid = int(np.flatnonzero(commit[:first_bad])[-1]) + 1 if commit[:first_bad].any() else 0
    commits = int((later & commit).sum())
    claimed = _claimed(_shm(wal), salts)
    if not commits and claimed <= valid:
        return None
    if _read(wal) != data:  # written meanwhile (by a thread of this process, whose lock is shared): look later
        return None
    last = int(np.flatnonzero(later & commit)[-1]) if commits else -1  # rewritten only with the frames before it
    key = f"{salts.hex()}:{stored[last, 0]:08x}{stored[last, 1]:08x}" if commits else f"{salts.hex()}:{claimed}"
    return WalDamage(valid, first_bad + 1, commits, claimed if claimed > valid else 0, key)


def deleted_log(wal: Path) -> WalDamage | None:
    """The commits a log deleted or emptied on disk took with it (``damaged_at`` 0): the ``-shm`` index beside it
    names committed frames not yet folded into the catalog, which SQLite does before it deletes or empties a log
    itself; None otherwise (also for a log that holds a header: :func:`lost_commits`)."""
    try:
        if wal.stat().st_size >= _HEADER:
            return None
    except OSError:
        pass
    head = _index(_shm(wal))
    if head is None:
        return None
    last, folded = int.from_bytes(head[16:20], sys.byteorder), int.from_bytes(head[96:100], sys.byteorder)
    return WalDamage(0, 0, 0, last, f"{head[32:40].hex()}:{last}") if last > folded else None


def _shm(wal: Path) -> Path:
    return wal.with_name(wal.name[: -len("-wal")] + "-shm")


def _changed_header(data: bytes, stored_header: tuple[int, int]) -> tuple[bool, int] | None:
    """(big-endian checksums, page size) of a log whose header's magic number or page size was changed, found by its
    first frame: it carries the header's salts and a checksum that continues the header's as stored; None when no
    frame does (not a log)."""
    for page in _PAGES:
        frame = data[_HEADER:_HEADER + _FRAME_HEADER + page]
        if len(frame) < _FRAME_HEADER + page or frame[8:16] != data[16:24]:
            continue
        stored = (int.from_bytes(frame[16:20], "big"), int.from_bytes(frame[20:24], "big"))
        for big in (False, True):
            if _checksum(frame[:8] + frame[_FRAME_HEADER:], stored_header, big) == stored:
                return big, page
    return None


def _read(wal: Path) -> bytes:
    try:
        return wal.read_bytes()
    except OSError:
        return b""


def _checksum(data: bytes, seed: tuple[int, int], big: bool) -> tuple[int, int]:
    """SQLite's WAL checksum of ``data`` (a multiple of 8 bytes) continuing from ``seed``."""
    words = np.frombuffer(data, dtype=np.uint8).reshape(1, -1)
    out = _checksums(words, np.array([seed], dtype=np.int64), big)[0]
    return int(out[0]), int(out[1])


def _checksums(rows: np.ndarray, seeds: np.ndarray, big: bool) -> np.ndarray:
    """SQLite's WAL checksum of each row of bytes (a multiple of 8 each) from its seed: [n, 2] int64.

    The sum is linear modulo 2**32: per pair of words (x, y), s0 += x + s1 and s1 += y + s0 (the new s0), i.e.
    (s0, s1) <- M (s0, s1) + (x, x + y) with M = [[1, 1], [1, 2]]; so the result is M**k the seed plus the pairs
    weighted by powers of M, computed for every row at once (uint64 arithmetic wraps modulo 2**64, a multiple of
    2**32)."""
    n, width = rows.shape
    words = rows.view(">u4" if big else "<u4").astype(np.uint64).reshape(n, width // 8, 2)
    k = width // 8
    powers = np.empty((k + 1, 2, 2), dtype=np.uint64)  # powers[j] = M**j modulo 2**32
    powers[0] = np.eye(2, dtype=np.uint64)
    step = np.array([[1, 1], [1, 2]], dtype=np.uint64)
    for j in range(1, k + 1):
        powers[j] = (powers[j - 1] @ step) & _MASK
    x, y = words[:, :, 0], words[:, :, 1]
    v0, v1 = x, (x + y) & _MASK
    weights = powers[k - 1::-1]  # the pair j is weighted by M**(k-1-j)
    s0 = (v0 @ weights[:, 0, 0] + v1 @ weights[:, 0, 1]) & _MASK
    s1 = (v0 @ weights[:, 1, 0] + v1 @ weights[:, 1, 1]) & _MASK
    seed = seeds.astype(np.uint64)
    whole = powers[k]
    s0 = (s0 + whole[0, 0] * seed[:, 0] + whole[0, 1] * seed[:, 1]) & _MASK
    s1 = (s1 + whole[1, 0] * seed[:, 0] + whole[1, 1] * seed[:, 1]) & _MASK
    return np.stack([s0, s1], axis=1).astype(np.int64)


def _claimed(shm: Path, salts: bytes) -> int:
    """The last committed frame the ``-shm`` index beside the log names, if it is whole and about this log (its
    salts); 0 otherwise."""
    head = _index(shm)
    if head is None or head[32:40] != salts:
        return 0
    return int.from_bytes(head[16:20], sys.byteorder)


def _index(shm: Path) -> bytes | None:
    """The ``-shm`` file's first 100 bytes when its wal-index header is whole (both copies equal, its checksum,
    SQLite's version 3007000, initialised); None otherwise."""
    head = _shm_header(shm)
    if head is None or len(head) < 100 or head[:48] != head[48:96]:
        return None
    order = sys.byteorder
    if int.from_bytes(head[0:4], order) != 3007000 or not head[12]:
        return None
    if _checksum(head[:40], (0, 0), order == "big") != (int.from_bytes(head[40:44], order),
                                                        int.from_bytes(head[44:48], order)):
        return None
    return head


# (device, inode) -> a descriptor of that -shm file, open for the life of the process: closing any descriptor of a
# file drops every POSIX lock the process holds on it, and SQLite's connections to the store in this process (a
# server opening the store again, say) hold theirs on -shm (that a reader is there, what it reads).
_SHM_FILES: dict[tuple[int, int], int] = {}
_SHM_FILES_SHARE = 16  # at most 1/16 of the process's descriptor limit kept so (at least 64); beyond, the -shm index
# is not read (the frames are): a process that met more stores (a long test run) no longer named lost commits


def _room_for_one() -> bool:
    """Whether one more -shm descriptor may be kept: under the cap, or once those of deleted files (which no
    connection can open again) are closed."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    cap = 1 << 16 if soft == resource.RLIM_INFINITY else max(64, soft // _SHM_FILES_SHARE)
    if len(_SHM_FILES) < cap:
        return True
    for key, fd in list(_SHM_FILES.items()):
        try:
            gone = os.fstat(fd).st_nlink == 0
        except OSError:
            gone = True
        if gone:
            del _SHM_FILES[key]
            os.close(fd)
    return len(_SHM_FILES) < cap


def _shm_header(shm: Path) -> bytes | None:
    """The first 100 bytes of ``shm`` (two copies of the wal-index header, then the count of frames folded into the
    catalog), read through a descriptor never closed."""
    try:
        st = shm.stat()
        fd = _SHM_FILES.get((st.st_dev, st.st_ino))
        if fd is None:
            if not _room_for_one():
                return None
            fd = os.open(shm, os.O_RDONLY | os.O_CLOEXEC)
            st = os.fstat(fd)
            fd = _SHM_FILES.setdefault((st.st_dev, st.st_ino), fd)
        return os.pread(fd, 100, 0)
    except OSError:
        return None
