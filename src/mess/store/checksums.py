"""CRC-32 checksums of stored vectors, so bytes changed on disk are refused, not misread.

Each catalog row of ``vectors`` records, for every layer, the CRC-32 of the file's track
row and of its block of segment rows as stored (float16 bytes): ``vectors.checksums``,
little-endian uint32s, the track rows' layers first. Each derived set (fused, ...) records
the CRC-32 of every row of its file with the catalog row that names the file
(``derived.checksums``, little-endian uint32s, one a row). Rows written before checksums
existed hold NULL: they are read unverified until `mess check --repair` records theirs.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from mess.store.arrays import DTYPE

NONE = -1  # no checksum recorded (a row from an older mess)
MALFORMED = -2  # a recorded value of the wrong size: matches no row


def block_sum(rows: np.ndarray) -> int:
    """CRC-32 of a block of rows as a row file stores them (little-endian float16)."""
    return zlib.crc32(np.ascontiguousarray(rows, dtype=DTYPE).data)


def pack(track: Sequence[int], segment: Sequence[int]) -> bytes:
    """The ``vectors.checksums`` value of one file: its track row's sums, then its segment block's, per layer."""
    return np.array([*track, *segment], dtype="<u4").tobytes()


def expected(blobs: Sequence[bytes | None], level: str, layer: int, n_layers: int) -> np.ndarray:
    """The recorded sum of one layer at ``level`` ('track' or 'segment') of each catalog row, as int64
    (:data:`NONE` where none is recorded, :data:`MALFORMED` where the value has the wrong size)."""
    out = np.full(len(blobs), NONE, dtype=np.int64)
    size = 8 * n_layers
    whole = [i for i, b in enumerate(blobs) if b is not None and len(b) == size]
    if whole:
        sums = np.frombuffer(b"".join(blobs[i] or b"" for i in whole), dtype="<u4").reshape(len(whole), 2 * n_layers)
        out[whole] = sums[:, layer + (n_layers if level == "segment" else 0)]
    out[[i for i, b in enumerate(blobs) if b is not None and len(b) != size]] = MALFORMED
    return out


def row_sums(rows: np.ndarray) -> bytes:
    """The ``derived.checksums`` value of a derived set: the CRC-32 of each of its rows as stored."""
    return np.array([block_sum(row) for row in rows], dtype="<u4").tobytes()


def row_expected(blob: bytes | None, rows: int) -> np.ndarray:
    """The recorded sum of each of a derived set's first ``rows`` rows, as int64 (:data:`NONE` throughout when none
    is recorded; :data:`MALFORMED` past the rows recorded, or throughout when the value has the wrong size)."""
    if blob is None:
        return np.full(rows, NONE, dtype=np.int64)
    out = np.full(rows, MALFORMED, dtype=np.int64)
    if len(blob) % 4 == 0:
        sums = np.frombuffer(blob, dtype="<u4")[:rows]
        out[:len(sums)] = sums
    return out


class BlockSums:
    """Blocks of a file's rows (``counts[i]`` rows from row ``starts[i]``) checked against their recorded sums
    ``want[i]`` as the rows are read in order, a chunk at a time (a block may span chunks); blocks with none recorded
    are not summed. Without ``want`` every block is summed (:meth:`sums`)."""

    def __init__(self, starts: np.ndarray, counts: np.ndarray, want: np.ndarray | None = None) -> None:
        self._want = np.zeros(len(starts), dtype=np.int64) if want is None else want
        self._check = np.flatnonzero(self._want != NONE)
        self._begin = np.asarray(starts, dtype=np.int64)[self._check]
        self._end = self._begin + np.asarray(counts, dtype=np.int64)[self._check]
        self._sums = [0] * len(self._check)  # CRC-32 of no bytes: a block's sum before its first row
        self._left = (self._end - self._begin).tolist()

    def add(self, first: int, rows: np.ndarray) -> None:
        """Sum rows ``first`` to ``first + len(rows)`` of the file into the blocks that hold them."""
        rows = np.ascontiguousarray(rows, dtype=DTYPE)
        last = first + len(rows)
        hit = np.flatnonzero((self._begin < last) & (self._end > first))
        begins = np.maximum(self._begin[hit], first) - first
        ends = np.minimum(self._end[hit], last) - first
        for i, a, b in zip(hit.tolist(), begins.tolist(), ends.tolist(), strict=True):
            self._sums[i] = zlib.crc32(rows[a:b].data, self._sums[i])
            self._left[i] -= b - a

    def sums(self) -> list[int]:
        """The sum of each block summed (every block when no ``want`` was given), of the rows read so far."""
        return list(self._sums)

    def changed(self) -> np.ndarray:
        """Which blocks differ from their recorded sums; a block not wholly read (a file cut meanwhile) does not."""
        out = np.zeros(len(self._want), dtype=bool)
        read = np.array(self._left, dtype=np.int64) == 0
        out[self._check] = read & (np.array(self._sums, dtype=np.int64) != self._want[self._check])
        return out


def changed(data: np.ndarray, starts: np.ndarray, counts: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Which blocks (``counts[i]`` rows of ``data`` from row ``starts[i]``) differ from their recorded sum ``want[i]``;
    blocks with none recorded are not read."""
    sums = BlockSums(starts, counts, want)
    sums.add(0, data)
    return sums.changed()
