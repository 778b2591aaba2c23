"""`mess check` in process on a small store damaged by hand: each kind of damage found, named, counted and repaired.

What is damaged is chosen here (which row, which file), so what the check must say follows from the damage, and the
sums a repair records are the CRC-32s zlib gives of the rows' bytes.
"""

from __future__ import annotations

import os
import sqlite3
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from test_store import INFO, _add_track, _flip_low_bit, _vectors

from mess.audio.windows import WindowPolicy
from mess.extract.runs import run_key
from mess.store import FeatureStore
from mess.store.check import check_and_repair, full_check, quick_check
from mess.store.paths import temp_path

N = 6  # tracks h0..h5, each of 2 windows


def _store(root: Path) -> tuple[FeatureStore, object]:
    store = FeatureStore(root)
    run = store.ensure_run(run_key(INFO, WindowPolicy()))
    for i in range(N):
        _add_track(store, i)
    store.write_vectors(run, [_vectors(f"h{i}", 2, i) for i in range(N)])
    return store, run


def _kinds(problems: list) -> list[tuple[str, bool]]:
    return sorted((p.kind, p.damage) for p in problems)


def _row(store: FeatureStore, content: str) -> tuple[int, int]:
    return store.db.execute("SELECT track_row, seg_row FROM vectors WHERE content_hash=?", (content,)).fetchone()


def _embedded(store: FeatureStore) -> list[str]:
    return sorted(r[0] for r in store.db.execute("SELECT content_hash FROM vectors"))


def test_a_whole_store_has_no_problem(tmp_path: Path) -> None:
    store, _ = _store(tmp_path)
    assert full_check(store) == [] and quick_check(store) == []
    assert check_and_repair(store) == ([], [])
    store.close()


def test_changed_and_non_finite_rows_are_named_apart_and_their_files_dropped(tmp_path: Path) -> None:
    store, run = _store(tmp_path)
    nan_file = store.row_file(run, "segment", 1)
    row = _row(store, "h1")[1] + 1  # h1's second window
    with nan_file.path.open("r+b") as f:
        f.seek(row * INFO.layer_dims[1] * 2)
        f.write(np.full(INFO.layer_dims[1], np.inf, "<f2").tobytes())
    _flip_low_bit(store.row_file(run, "track", 0).path, _row(store, "h4")[0], INFO.layer_dims[0])
    problems = full_check(store)
    assert _kinds(problems) == [("checksum", True), ("non-finite", True)]
    by_kind = {p.kind: p for p in problems}
    assert by_kind["non-finite"].hashes == {"h1"} and by_kind["checksum"].hashes == {"h4"}  # h1 named once
    assert by_kind["non-finite"].message == "toy: 1 file has NaN or infinite vectors"
    assert by_kind["checksum"].message == "toy: 1 file has vectors that differ from their checksums (changed on disk)"
    assert quick_check(store) == []  # values are not read when a store opens
    left, done = check_and_repair(store)
    assert done == ["toy (run 1): dropped the vectors of 2 files; `mess extract FOLDER --model toy` embeds them again"]
    assert _kinds(left) == [("not-embedded", False)] and "2 files have neither vectors" in left[0].message
    assert "(/music/1.wav, /music/4.wav)" in left[0].message
    assert _embedded(store) == ["h0", "h2", "h3", "h5"]
    store.close()


def test_rows_past_the_catalog_are_cut_and_a_short_file_drops_the_files_it_lost(tmp_path: Path) -> None:
    store, run = _store(tmp_path)
    extra = store.row_file(run, "track", 1)
    with extra.path.open("ab") as f:
        f.write(np.zeros((3, INFO.layer_dims[1]), "<f2").tobytes())  # an interrupted write's rows
    problems = full_check(store)
    assert _kinds(problems) == [("orphan-rows", False)]
    assert problems[0].message == "toy track vectors of layer b: 3 rows past the catalog's last (an interrupted write)"
    assert quick_check(store) == []
    left, done = check_and_repair(store)
    assert left == [] and done == ["toy (run 1): row files cut back to the 6 track rows the catalog references"]
    assert extra.rows == N
    seg = store.row_file(run, "segment", 0)
    keep = _row(store, "h4")[1] + 2  # the file ends with h4's windows (and a byte of h5's): h5's are lost
    with seg.path.open("r+b") as f:
        f.truncate(keep * INFO.layer_dims[0] * 2 + 1)
    problems = full_check(store)
    assert _kinds(problems) == [("short-file", True)]
    assert problems[0].message == f"toy segment vectors of layer a hold {keep} rows, the catalog references {2 * N}"
    assert _kinds(quick_check(store)) == [("short-file", True)]
    left, done = check_and_repair(store)
    assert done == ["toy (run 1): dropped the vectors of 1 file; `mess extract FOLDER --model toy` embeds them again",
                    "toy (run 1): row files cut back to the 5 track rows the catalog references"]
    assert _kinds(left) == [("not-embedded", False)] and _embedded(store) == [f"h{i}" for i in range(5)]
    assert all(store.row_file(run, level, i).rows == (5 if level == "track" else 10)
               for level in ("track", "segment") for i in range(2))
    store.close()


@pytest.mark.parametrize(("shared", "other", "at"), [("track", "h2", 0), ("segment", "h2", 1), ("segment", "h0", 0)])
def test_two_files_claiming_one_row_are_both_dropped(tmp_path: Path, shared: str, other: str, at: int) -> None:
    store, _ = _store(tmp_path)
    with store.db:
        if shared == "track":
            store.db.execute("UPDATE vectors SET track_row=? WHERE content_hash='h3'", (_row(store, other)[0],))
        else:  # h3's windows begin at the other's first or second (files far apart in the catalog's order)
            store.db.execute("UPDATE vectors SET seg_row=? WHERE content_hash='h3'", (_row(store, other)[1] + at,))
    problems = [p for p in full_check(store) if p.kind != "checksum"]  # a moved row differs from its sums too
    assert _kinds(problems) == [("shared-rows", True)]
    assert problems[0].message == ("toy: 1 file's vectors point at rows another file also claims (two writers "
                                   "without a lock)")
    assert _kinds(quick_check(store)) == ([("shared-rows", True)] if shared == "track" else [])
    left, done = check_and_repair(store)
    assert done[0] == "toy (run 1): dropped the vectors of 2 files; `mess extract FOLDER --model toy` embeds them again"
    assert _embedded(store) == sorted({f"h{i}" for i in range(N)} - {other, "h3"})
    assert _kinds(left) == [("not-embedded", False)]
    store.close()


def test_what_stands_where_a_row_file_or_the_lock_belongs_is_moved_aside(tmp_path: Path) -> None:
    store, run = _store(tmp_path)
    track = store.row_file(run, "track", 0).path
    track.unlink()
    track.mkdir()
    store.lock.path.unlink(missing_ok=True)
    store.lock.path.mkdir()
    problems = full_check(store)
    assert _kinds(problems) == [("not-a-file", True), ("not-a-file", True)]
    said = sorted(p.message for p in problems)
    assert said[0] == ("toy track vectors of layer a: runs/1/track/000.f16 is a directory, not a row file (the catalog "
                       "references 6 rows there)")
    assert said[1].startswith("write.lock is a folder, not the store's lock file, so nothing can write to the store")
    assert [p.run_id for p in sorted(problems, key=lambda p: p.message)] == [run.id, None]
    left, done = check_and_repair(store)
    assert done[0].startswith("moved write.lock (a folder) aside to write.lock.")
    assert done[1].startswith("toy (run 1): moved runs/1/track/000.f16 (a directory, not a row file) aside to 000.f16.")
    assert done[2:] == ["toy (run 1): dropped the vectors of 6 files; `mess extract FOLDER --model toy` embeds them "
                        "again",
                        "toy (run 1): row files cut back to the 0 track rows the catalog references"]
    assert _embedded(store) == [] and not track.exists() and store.lock.not_a_file() is None
    assert _kinds(left) == [("not-embedded", False)]
    store.close()


def test_rows_from_an_older_mess_get_the_sums_of_their_bytes(tmp_path: Path) -> None:
    store, run = _store(tmp_path)
    with store.db:
        store.db.execute("UPDATE vectors SET checksums=NULL WHERE content_hash IN ('h2', 'h5')")
    problems = full_check(store)
    assert _kinds(problems) == [("no-checksum", False)]
    assert problems[0].message.startswith("toy: 2 files' vectors have no checksum yet")
    assert sorted(problems[0].checksums) == ["h2", "h5"]
    files = {(level, i): store.row_file(run, level, i).path.read_bytes() for level in ("track", "segment")
             for i in range(2)}
    assert check_and_repair(store) == ([], [
        "toy (run 1): recorded the checksums of 2 files' vectors (written by an older mess)"])
    for content in ("h2", "h5"):
        track_row, seg_row = _row(store, content)
        want = [zlib.crc32(files["track", i][track_row * d * 2:(track_row + 1) * d * 2])
                for i, d in enumerate(INFO.layer_dims)]
        want += [zlib.crc32(files["segment", i][seg_row * d * 2:(seg_row + 2) * d * 2])
                 for i, d in enumerate(INFO.layer_dims)]
        blob = store.db.execute("SELECT checksums FROM vectors WHERE content_hash=?", (content,)).fetchone()[0]
        assert np.frombuffer(blob, "<u4").tolist() == want, content
    store.close()


def test_damaged_derived_sets_are_dropped_and_one_without_sums_gets_them(tmp_path: Path) -> None:
    store, run = _store(tmp_path)
    hashes = [f"h{i}" for i in range(N)]
    for name in ("cut", "flipped", "old", "stale"):
        store.write_derived(run, name, hashes, np.eye(N, 4, dtype=np.float32), {})
    cut = store.derived_path(run, "cut")
    with cut.open("r+b") as f:
        f.truncate(4 * 4 * 2)
    _flip_low_bit(store.derived_path(run, "flipped"), 2, 4)
    with store.db:
        store.db.execute("UPDATE derived SET checksums=NULL WHERE name='old'")
        store.db.execute("DELETE FROM vectors WHERE content_hash='h5'")  # the last row freed, its vector kept
    problems = full_check(store)
    got = sorted((p.kind, p.derived, p.damage) for p in problems if p.kind != "orphan-rows")
    assert _kinds(p for p in problems if p.kind == "orphan-rows") == [("orphan-rows", False)] * 4
    assert got == [("checksum-derived", "flipped", True), ("no-checksum-derived", "old", False),
                   ("not-embedded", "", False), ("short-derived", "cut", True),
                   ("stale-derived", "flipped", True), ("stale-derived", "old", True), ("stale-derived", "stale", True)]
    said = {(p.kind, p.derived): p.message for p in problems}
    assert said["short-derived", "cut"] == "toy cut vectors hold 4 rows, `mess fuse apply` wrote 6"
    assert said["checksum-derived", "flipped"] == ("toy flipped vectors: 1 row differs from its checksum "
                                                   "(changed on disk)")
    assert said["stale-derived", "stale"] == ("toy stale vectors: 1 row past the catalog's last, which the next new "
                                              "file would inherit")
    left, done = check_and_repair(store)
    assert done == ["toy (run 1): dropped the damaged cut vectors; `mess fuse apply` writes them again",
                    "toy (run 1): dropped the damaged flipped vectors; `mess fuse apply` writes them again",
                    "toy (run 1): recorded the checksums of the old vectors (written by an older mess)",
                    "toy (run 1): row files cut back to the 5 track rows the catalog references",
                    "toy (run 1): forgot the fused vectors of 2 files, whose rows a new file may take; "
                    "`mess fuse apply` writes them again"]
    assert _kinds(left) == [("not-embedded", False)]
    assert store.derived_meta(run, "cut") is None and store.derived_meta(run, "flipped") is None
    for name in ("old", "stale"):
        ids, matrix = store.derived_matrix(run, name)
        assert len(ids) == N - 1
    store.close()


def test_leftover_temps_are_space_not_damage_and_are_deleted(tmp_path: Path) -> None:
    store, run = _store(tmp_path)
    old = [temp_path(store.root / f"index-{k}.faiss") for k in range(4)]
    for k, path in enumerate(old):
        path.write_bytes(b"x" * 250_000 * (k + 1))
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    live = temp_path(store.root / "catalog.json")
    live.write_bytes(b"a write going on")
    problems = full_check(store)
    assert _kinds(problems) == [("temp-files", False)]
    names = ", ".join(p.name for p in sorted(old)[:3])
    assert problems[0].message == (f"4 temp files of interrupted writes hold 2.5 MB ({names}, ...); "
                                   "`mess check --repair` deletes them")
    assert quick_check(store) == []
    left, done = check_and_repair(store)
    assert left == [] and done == ["deleted 4 temp files of interrupted writes (2.5 MB)"]
    assert not any(p.exists() for p in old) and live.exists()
    store.close()


def test_a_corrupt_catalog_is_the_one_problem_and_is_not_repaired(tmp_path: Path) -> None:
    store, _ = _store(tmp_path)
    store.close()
    db = tmp_path / "catalog.sqlite"
    with sqlite3.connect(db) as conn:  # an index that no longer matches its table
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute("UPDATE sqlite_master SET sql=replace(sql, 'content_hash)', 'size)') WHERE name='tracks_hash'")
    store = FeatureStore(tmp_path)
    problems = full_check(store)
    assert [p.kind for p in problems] == ["catalog"] and "the catalog is corrupt" in problems[0].message
    with pytest.raises(ValueError, match="the catalog itself is damaged"):
        check_and_repair(store)
    store.close()


@pytest.mark.parametrize("names", ['["a", "b', '"ab"', '["a"]', '["a", 2]', b'["a", "\xff"]'])
def test_a_run_record_whose_layers_cannot_be_read_is_damage_said_in_one_line(tmp_path: Path,
                                                                            names: str | bytes) -> None:
    """Damaged bytes in a run's layer list ended every command, `mess check` too, in a JSONDecodeError traceback
    (or made a run of other layers than its row files hold); the store is named damaged with what to do, and the
    catalog file it failed to open is left closed."""
    from test_store_catalog import _descriptors_of

    from conftest import mess_here
    from mess.store import StoreDamaged

    store, run = _store(tmp_path / "store")
    store.close()
    with sqlite3.connect(tmp_path / "store" / "catalog.sqlite") as db:
        db.execute("UPDATE runs SET layer_names=? WHERE id=?", (names, run.id))
    db.close()
    with pytest.raises(StoreDamaged, match=f"run {run.id} \\(toy\\) does not list its layers") as kept:
        FeatureStore(tmp_path / "store")
    assert kept.value is not None and _descriptors_of(tmp_path / "store" / "catalog.sqlite") == []
    for command in (["check"], ["similar", "1"]):
        out = mess_here(*command, "--store", str(tmp_path / "store"))
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        assert out.stderr.startswith(f"error: {tmp_path / 'store'} is damaged: the catalog's record of run"), out.stderr
