"""Append-only float16 row files, read with plain file reads.

Never memory-mapped: a writer may cut a file while another process reads it (bytes past
the catalog's rows, see :meth:`RowFile.write_at`), and touching a mapped page past the new
end kills the reader (SIGBUS); a plain read only comes back short.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from mess.store.paths import replace_file

DTYPE = np.dtype("<f2")
_CHUNK_ROWS = 4096


def non_finite(block: np.ndarray) -> np.ndarray:
    """Which rows of a float16 block as stored hold a NaN or an infinity (every exponent bit set: an integer test,
    several times faster than ``np.isfinite`` on float16)."""
    return np.bitwise_and(block.view(np.uint16), 0x7C00).max(axis=1, initial=0) == 0x7C00


UNSTORABLE = "as stored: NaN, infinite or past float16's largest value, 65504"  # what :func:`unstorable` finds


def unstorable(values: np.ndarray) -> np.ndarray:
    """Which rows of ``values`` (which values, of one vector) a row file cannot hold as finite numbers: NaN,
    infinity, or past float16's largest value, which storing turns into infinity (:data:`UNSTORABLE`)."""
    with np.errstate(over="ignore"):
        stored = np.asarray(values, dtype=DTYPE)
    return np.asarray(~np.isfinite(stored).all(axis=tuple(range(1, stored.ndim))))


def set_aside(path: Path, root: Path) -> tuple[Path, Path]:
    """Rename what stands where a row file belongs (a directory, a link loop; or a file where one of its folders
    below ``root`` belongs) to ``NAME.<ns>.not-a-row-file`` beside it, deleting nothing: (what was moved, where)."""
    blocker = next((p for p in reversed(path.parents) if p.is_relative_to(root) and p != root
                    and (p.is_symlink() or p.exists()) and not p.is_dir()), path)
    aside = blocker.with_name(f"{blocker.name}.{time.time_ns()}.not-a-row-file")
    blocker.rename(aside)
    return blocker, aside


class ShortFile(Exception):
    """A row file ends before the rows asked for; ``rows``: the complete rows it held."""

    def __init__(self, path: Path, rows: int) -> None:
        super().__init__(f"{path} ends at row {rows}")
        self.rows = rows


class RowFile:
    """A raw little-endian float16 matrix [rows, dim] stored in one file.

    Rows are written after the last row the catalog references; readers read only the
    rows their catalog version references (a write cuts only bytes past the catalog's
    rows, a repair only rows whose vectors it dropped; a reclaim moves rows, and a reader
    on an older version reads again). The catalog, not the file, says which rows are
    valid, so a crash mid-write leaves only unreferenced bytes, which the next write
    overwrites.
    """

    def __init__(self, path: Path, dim: int) -> None:
        self.path = path
        self.dim = dim

    @property
    def rows(self) -> int:
        """Number of complete rows on disk (none where no regular file is: see :meth:`not_a_file`)."""
        st = self._stat()
        return st.st_size // (self.dim * DTYPE.itemsize) if st is not None and stat.S_ISREG(st.st_mode) else 0

    def not_a_file(self) -> str | None:
        """What stands at the path instead of a row file ('a directory, not a row file', ...); None for a regular
        file (or a link to one) and for nothing at all (a file not written yet)."""
        try:
            mode = self.path.stat().st_mode
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "a symbolic link loop, not a row file"
            if exc.errno == errno.ENOTDIR:
                return "out of reach: a folder on its path is a file"
            if exc.errno == errno.ENOENT:
                return "a link to nothing, not a row file" if self.path.is_symlink() else None
            raise
        if stat.S_ISREG(mode):
            return None
        return "a directory, not a row file" if stat.S_ISDIR(mode) else "not a regular file"

    def _stat(self) -> os.stat_result | None:
        """The file's status, following links; None when nothing can be found there (a link loop, a file where a
        folder of the path belongs: see :meth:`not_a_file`)."""
        try:
            return self.path.stat()
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                return None
            raise

    def write_at(self, row: int, matrix: np.ndarray) -> None:
        """Write rows from index ``row`` on and cut the file there (durable before returning).

        The caller (the store, under its write lock) takes ``row`` from the catalog,
        so bytes an interrupted writer left past it are overwritten or cut.
        """
        matrix = np.asarray(matrix, dtype=DTYPE).reshape(-1, self.dim)
        if row > self.rows:
            raise ValueError(f"{self.path}: row {row} is past the end ({self.rows} rows)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("r+b" if self.path.exists() else "wb") as f:
            f.seek(row * self.dim * DTYPE.itemsize)
            f.write(matrix.tobytes())
            f.truncate()
            f.flush()
            os.fsync(f.fileno())

    def copy_rows(self, spans: Sequence[tuple[int, int, int]]) -> None:
        """Copy rows (from, to, count) within the file, durable before returning, cutting nothing: the caller (a
        reclaim, under the write lock) copies only to rows the catalog does not reference. ShortFile where the file
        lacks a row copied."""
        if not spans:
            return
        size = self.dim * DTYPE.itemsize
        with self.path.open("r+b") as f:
            for src, dst, n in spans:
                data = os.pread(f.fileno(), n * size, src * size)
                if len(data) < n * size:
                    raise ShortFile(self.path, src + len(data) // size)
                os.pwrite(f.fileno(), data, dst * size)
            os.fsync(f.fileno())

    def truncate(self, rows: int) -> None:
        """Drop rows at index >= ``rows`` (left behind by an interrupted write)."""
        if self.path.exists() and self.rows > rows:
            with self.path.open("r+b") as f:
                f.truncate(rows * self.dim * DTYPE.itemsize)

    def read(self) -> np.ndarray:
        """A read-only copy of all complete rows (for small files: derived vectors)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        rows = len(data) // (self.dim * DTYPE.itemsize)
        return np.frombuffer(data, dtype=DTYPE, count=rows * self.dim).reshape(rows, self.dim)

    def chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 block) of rows [0, ``rows``) in turn; ShortFile when the file ends before."""
        for start, block in self.stored_chunks(rows):
            yield start, block.astype(np.float32)

    def stored_chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """:meth:`chunks` as stored: read-only float16 blocks (their bytes are what checksums sum)."""
        if rows <= 0:
            return
        size = self.dim * DTYPE.itemsize
        try:
            f = self.path.open("rb")
        except FileNotFoundError:
            raise ShortFile(self.path, 0) from None
        with f:
            for start in range(0, rows, _CHUNK_ROWS):
                n = min(_CHUNK_ROWS, rows - start)
                data = f.read(n * size)
                if len(data) < n * size:
                    raise ShortFile(self.path, start + len(data) // size)
                yield start, np.frombuffer(data, dtype=DTYPE).reshape(n, self.dim)

    def take(self, rows: Sequence[int]) -> np.ndarray:
        """float32 rows ``rows``, in that order; ShortFile when the file lacks one."""
        want = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(want), self.dim), dtype=np.float32)
        order = np.argsort(want, kind="stable")
        ordered = want[order]
        for start, block in self.chunks(int(ordered[-1]) + 1 if len(ordered) else 0):
            lo, hi = np.searchsorted(ordered, [start, start + len(block)])
            out[order[lo:hi]] = block[ordered[lo:hi] - start]
        return out

    def replace(self, matrix: np.ndarray) -> None:
        """Atomically replace the whole file with ``matrix``."""
        replace_file(self.path, np.asarray(matrix, dtype=DTYPE).reshape(-1, self.dim).tobytes())
