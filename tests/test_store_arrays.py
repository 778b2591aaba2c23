"""Row files in process: float16 rows as numpy stores them, read in chunks, cut, taken, and what stands in their way."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from mess.store import arrays
from mess.store.arrays import DTYPE, RowFile, ShortFile, non_finite, set_aside


def _rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float16)


def test_non_finite_rows_are_those_numpy_calls_not_finite() -> None:
    every = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)  # every float16 there is
    block = every.reshape(-1, 8)
    np.testing.assert_array_equal(non_finite(block), ~np.isfinite(block).all(axis=1))
    assert non_finite(np.empty((3, 0), np.float16)).tolist() == [False] * 3
    assert non_finite(np.empty((0, 4), np.float16)).shape == (0,)


def test_rows_are_written_little_endian_at_a_row_cut_after_it_and_read_back(tmp_path: Path) -> None:
    file = RowFile(tmp_path / "runs" / "1" / "000.f16", 3)
    assert file.rows == 0 and file.read().shape == (0, 3)
    first = _rows(5, 3)
    file.write_at(0, first.astype(np.float32))  # any dtype in, float16 stored
    assert file.path.read_bytes() == first.astype("<f2").tobytes()
    assert file.rows == 5 and file.read().dtype == DTYPE
    np.testing.assert_array_equal(file.read(), first)
    more = _rows(2, 3, seed=1)
    file.write_at(3, more)  # rows 3.. rewritten, the file cut after them
    np.testing.assert_array_equal(file.read(), np.concatenate([first[:3], more]))
    with pytest.raises(ValueError, match="row 6 is past the end \\(5 rows\\)"):
        file.write_at(6, more)
    file.write_at(5, more.ravel())  # appended at the end, from a flat array
    assert file.rows == 7
    file.write_at(2, more[:1])  # one row over row 2: the file ends after it
    np.testing.assert_array_equal(file.read(), np.concatenate([first[:2], more[:1]]))
    file.write_at(3, np.concatenate([more[1:], more, more[:1]]))  # 7 rows again
    assert file.rows == 7
    with file.path.open("ab") as f:
        f.write(b"\x01\x02\x03")  # an interrupted write: half a row
    assert file.rows == 7 and file.read().shape == (7, 3)
    file.truncate(7)  # no whole row past 7: left as it is
    assert file.path.stat().st_size == 7 * 3 * 2 + 3
    file.truncate(9)
    assert file.rows == 7
    file.truncate(4)
    assert file.path.stat().st_size == 4 * 3 * 2
    file.write_at(4, np.empty((0, 3)))
    assert file.rows == 4
    RowFile(tmp_path / "none.f16", 3).truncate(0)  # nothing to cut, nothing made
    assert not (tmp_path / "none.f16").exists()
    file.replace(more)
    np.testing.assert_array_equal(file.read(), more)
    assert file.read().flags.writeable is False


def test_chunks_read_every_row_once_across_chunk_bounds_and_say_where_a_file_ends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arrays, "_CHUNK_ROWS", 4)
    file = RowFile(tmp_path / "r.f16", 2)
    data = _rows(10, 2)
    file.write_at(0, data)
    got = list(file.stored_chunks(10))
    assert [(start, len(block)) for start, block in got] == [(0, 4), (4, 4), (8, 2)]
    np.testing.assert_array_equal(np.concatenate([b for _, b in got]), data)
    assert all(b.dtype == DTYPE for _, b in got)
    floats = list(file.chunks(9))
    assert [len(b) for _, b in floats] == [4, 4, 1] and all(b.dtype == np.float32 for _, b in floats)
    np.testing.assert_array_equal(np.concatenate([b for _, b in floats]), data[:9].astype(np.float32))
    assert list(file.chunks(0)) == [] and list(file.chunks(-1)) == []
    with pytest.raises(ShortFile) as caught:
        list(file.chunks(12))
    assert caught.value.rows == 10 and str(caught.value) == f"{file.path} ends at row 10"
    with file.path.open("r+b") as f:
        f.truncate(5 * 2 * 2 + 1)  # five rows and a byte
    with pytest.raises(ShortFile) as caught:
        list(file.chunks(8))
    assert caught.value.rows == 5
    with pytest.raises(ShortFile) as caught:
        list(RowFile(tmp_path / "gone.f16", 2).chunks(1))
    assert caught.value.rows == 0


def test_take_gives_rows_in_the_order_asked_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arrays, "_CHUNK_ROWS", 3)
    file = RowFile(tmp_path / "r.f16", 4)
    data = _rows(11, 4)
    file.write_at(0, data)
    want = [10, 0, 4, 4, 3, 7, 2]
    np.testing.assert_array_equal(file.take(want), data[want].astype(np.float32))
    assert file.take([]).shape == (0, 4)
    unwritten = RowFile(tmp_path / "not-yet.f16", 4)  # a layer no row was written to yet
    assert unwritten.take([]).shape == (0, 4) and list(unwritten.chunks(0)) == []
    with pytest.raises(ShortFile):
        file.take([1, 11])


def test_what_stands_where_a_row_file_belongs_is_named_and_set_aside(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    assert RowFile(root / "missing.f16", 2).not_a_file() is None
    (root / "file.f16").write_bytes(b"")
    assert RowFile(root / "file.f16", 2).not_a_file() is None
    (root / "link.f16").symlink_to(root / "file.f16")
    assert RowFile(root / "link.f16", 2).not_a_file() is None
    (root / "dir.f16").mkdir()
    (root / "dangling.f16").symlink_to(root / "nowhere")
    (root / "loop.f16").symlink_to(root / "loop.f16")
    os.mkfifo(root / "fifo.f16")
    (root / "runs").write_bytes(b"a file where a folder belongs")
    said = {name: RowFile(root / name, 2).not_a_file()
            for name in ("dir.f16", "dangling.f16", "loop.f16", "fifo.f16", "runs/1/000.f16")}
    assert said == {"dir.f16": "a directory, not a row file", "dangling.f16": "a link to nothing, not a row file",
                    "loop.f16": "a symbolic link loop, not a row file", "fifo.f16": "not a regular file",
                    "runs/1/000.f16": "out of reach: a folder on its path is a file"}
    for name in ("dir.f16", "dangling.f16", "loop.f16", "runs/1/000.f16"):
        assert RowFile(root / name, 2).rows == 0
    assert RowFile(root / "fifo.f16", 2).rows == 0
    moved, aside = set_aside(root / "runs" / "1" / "000.f16", root)
    assert moved == root / "runs" and aside.parent == root and aside.name.startswith("runs.")
    assert aside.name.endswith(".not-a-row-file") and aside.read_bytes() == b"a file where a folder belongs"
    moved, aside = set_aside(root / "dir.f16", root)
    assert moved == root / "dir.f16" and aside.is_dir() and not moved.exists()
    moved, aside = set_aside(root / "loop.f16", root)
    assert moved == root / "loop.f16" and aside.is_symlink() and not moved.is_symlink()


def test_a_status_the_file_cannot_give_for_another_reason_is_raised(tmp_path: Path) -> None:
    long = RowFile(tmp_path / ("x" * 300), 2)  # ENAMETOOLONG: no reason of the kinds a row file can be
    with pytest.raises(OSError) as caught:
        long.not_a_file()
    assert caught.value.errno == errno.ENAMETOOLONG
    with pytest.raises(OSError):
        _ = long.rows
