"""Append-only float16 row files, memory-mapped for reading."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

DTYPE = np.dtype("<f2")


class RowFile:
    """A raw little-endian float16 matrix [rows, dim] stored in one file.

    Rows are appended; readers memory-map the file. The catalog, not the file,
    says which rows are valid, so a crash mid-append leaves only unreferenced
    bytes, which :meth:`truncate` removes on the next write session.
    """

    def __init__(self, path: Path, dim: int) -> None:
        self.path = path
        self.dim = dim

    @property
    def rows(self) -> int:
        """Number of complete rows on disk."""
        return self.path.stat().st_size // (self.dim * DTYPE.itemsize) if self.path.exists() else 0

    def append(self, matrix: np.ndarray) -> int:
        """Append rows; returns the index of the first appended row."""
        matrix = np.asarray(matrix, dtype=DTYPE).reshape(-1, self.dim)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        first = self.rows
        with self.path.open("ab") as f:
            f.write(matrix.tobytes())
            f.flush()
            os.fsync(f.fileno())
        return first

    def truncate(self, rows: int) -> None:
        """Drop rows at index >= ``rows`` (left behind by an interrupted append)."""
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        np.asarray(matrix, dtype=DTYPE).reshape(-1, self.dim).tofile(tmp)
        os.replace(tmp, self.path)
