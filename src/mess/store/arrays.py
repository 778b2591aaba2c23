"""Append-only float16 row files, memory-mapped for reading."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mess.store.paths import replace_file

DTYPE = np.dtype("<f2")


class RowFile:
    """A raw little-endian float16 matrix [rows, dim] stored in one file.

    Rows are written after the last row the catalog references; readers memory-map
    the file. The catalog, not the file, says which rows are valid, so a crash
    mid-write leaves only unreferenced bytes, which the next write overwrites.
    """

    def __init__(self, path: Path, dim: int) -> None:
        self.path = path
        self.dim = dim

    @property
    def rows(self) -> int:
        """Number of complete rows on disk."""
        return self.path.stat().st_size // (self.dim * DTYPE.itemsize) if self.path.exists() else 0

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

    def truncate(self, rows: int) -> None:
        """Drop rows at index >= ``rows`` (left behind by an interrupted write)."""
        if self.path.exists() and self.rows > rows:
            with self.path.open("r+b") as f:
                f.truncate(rows * self.dim * DTYPE.itemsize)

    def read(self) -> np.ndarray:
        """Memory-mapped read-only view of all complete rows."""
        rows = self.rows
        if rows == 0:
            return np.zeros((0, self.dim), dtype=DTYPE)
        return np.memmap(self.path, dtype=DTYPE, mode="r", shape=(rows, self.dim))

    def replace(self, matrix: np.ndarray) -> None:
        """Atomically replace the whole file with ``matrix``."""
        replace_file(self.path, np.asarray(matrix, dtype=DTYPE).reshape(-1, self.dim).tobytes())
