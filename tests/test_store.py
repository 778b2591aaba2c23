"""Feature store: catalog + float16 row files, crash safety and idempotence."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mess.audio.windows import WindowPolicy
from mess.extract.runs import run_key
from mess.models.base import ModelInfo
from mess.store import FeatureStore, StoreDamaged, StoreError, TrackVectors

INFO = ModelInfo("toy", "rev1", 16000, ("a", "b"), (4, 3))


def _vectors(content_hash: str, n_segments: int, seed: int) -> TrackVectors:
    rng = np.random.default_rng(seed)
    segments = [rng.standard_normal((n_segments, d)).astype(np.float32) for d in INFO.layer_dims]
    return TrackVectors(content_hash, [s.mean(axis=0) for s in segments], segments, list(range(n_segments)))


def two_model_store(root: Path, files: int, in_toy2: int) -> Path:
    """``root/store`` cataloguing ``root/music/0.wav`` .. ``files - 1`` (all on disk): model ``toy`` holds 0.wav's
    vectors, model ``toy2`` those of the first ``in_toy2`` files (a folder extracted with one model, not the other)."""
    from contextlib import closing
    from dataclasses import replace

    (root / "music").mkdir()
    with closing(FeatureStore(root / "store")) as store:
        runs = [store.ensure_run(run_key(info, WindowPolicy())) for info in (INFO, replace(INFO, name="toy2"))]
        for i in range(files):
            (root / "music" / f"{i}.wav").write_bytes(b"RIFF")
            store.upsert_track(root / "music" / f"{i}.wav", f"h{i}", 10, 1.0, {"duration": 3.0},
                               {"artist": "x", "album": None, "title": None, "genre": None, "composer": None})
        store.write_vectors(runs[0], [_vectors("h0", 2, 0)])
        store.write_vectors(runs[1], [_vectors(f"h{i}", 2, i) for i in range(in_toy2)])
    return root / "store"


def _add_track(store: FeatureStore, i: int, artist: str = "x") -> int:
    return store.upsert_track(
        Path(f"/music/{i}.wav"),
        f"h{i}",
        10,
        1.0,
        {"duration": 3.0},
        {"artist": artist, "album": None, "title": f"t{i}", "genre": None, "composer": None},
    )


def test_vectors_round_trip_per_layer_and_segment(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    run = store.ensure_run(run_key(INFO, WindowPolicy()))
    items = [_vectors(f"h{i}", n, i) for i, n in enumerate([1, 3, 2])]
    for i in range(3):
        _add_track(store, i)
    store.write_vectors(run, items)
    ids, mat = store.layer_matrix(run, "b")
    assert mat.shape == (3, 3) and mat.dtype == np.float32
    np.testing.assert_allclose(mat, np.stack([it.layers[1] for it in items]), atol=2e-3)
    seg_ids, starts, segs = store.segment_matrix(run, 0)
    assert list(seg_ids) == [ids[0]] + [ids[1]] * 3 + [ids[2]] * 2
    np.testing.assert_allclose(segs, np.concatenate([it.segments[0] for it in items]), atol=2e-3)
    assert list(starts[:4]) == [0, 0, 1, 2]


def test_a_vector_beyond_what_float16_holds_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """Values past float16's largest were stored as infinity: the write passed, and every later read of the layer
    refused the whole layer as damaged until a repair dropped the file (which the next extract stored again)."""
    store = FeatureStore(tmp_path)
    run = store.ensure_run(run_key(INFO, WindowPolicy()))
    for i in range(3):
        _add_track(store, i)
    store.write_vectors(run, [_vectors("h0", 2, 0)])
    largest = float(np.finfo(np.float16).max)
    for where in ("layers", "segments"):
        item = _vectors("h1", 2, 1)
        getattr(item, where)[1].flat[-1] = 2 * largest  # a finite float32, past float16's range
        with pytest.raises(ValueError, match="non-finite vectors for content h1"):
            store.write_vectors(run, [_vectors("h2", 1, 2), item])
        assert not store.has_vectors(run, "h1") and not store.has_vectors(run, "h2")
    edge = _vectors("h1", 2, 1)
    edge.layers[0][0] = largest  # the largest value float16 holds is stored as it is
    store.write_vectors(run, [edge])
    ids, mat = store.layer_matrix(run, "a")
    assert mat.shape == (2, 4) and mat[list(ids).index(store.track("/music/1.wav").id), 0] == largest
    store.close()


def test_rows_cut_after_the_catalog_was_read_are_damage_not_a_crash(tmp_path: Path) -> None:
    """Row files are read with plain reads, not memory maps: a reader whose catalog version still references rows
    another process cut (a repair dropping them) gets StoreDamaged, never SIGBUS."""
    store = FeatureStore(tmp_path)
    run = store.ensure_run(run_key(INFO, WindowPolicy()))
    items = [_vectors(f"h{i}", 2, i) for i in range(3)]
    store.write_vectors(run, items)
    rows = store.row_file(run, "segment", 1)
    want = np.stack([items[2].segments[1][1], items[0].segments[1][0], items[2].segments[1][1]])
    np.testing.assert_allclose(rows.take([5, 0, 5]), want, atol=2e-3)  # in the order asked, repeats too
    for i in range(3):
        _add_track(store, i)
    with rows.path.open("r+b") as f:
        f.truncate(4 * rows.dim * 2)
    with pytest.raises(StoreDamaged, match="segment vectors of layer b stop at row 4 but the catalog references row 5"):
        store.segment_matrix(run, "b")


def _append_raw(store: FeatureStore, run, level: str, layer: int, rows: int) -> None:
    """What a writer killed between writing rows and committing them leaves: bytes past the catalog's rows."""
    f = store.row_file(run, level, layer)
    with f.path.open("ab") as out:
        out.write(np.ones((rows, f.dim), dtype="<f2").tobytes())


def test_rewrite_is_idempotent_and_interrupted_write_is_overwritten(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    run = store.ensure_run(run_key(INFO, WindowPolicy()))
    _add_track(store, 0)
    _add_track(store, 1)
    store.write_vectors(run, [_vectors("h0", 2, 0)])
    store.write_vectors(run, [_vectors("h0", 2, 0)])  # same content again: nothing written
    assert store.row_file(run, "track", 0).rows == 1
    _append_raw(store, run, "track", 0, 1)
    _append_raw(store, run, "segment", 1, 5)
    store.close()
    reopened = FeatureStore(tmp_path)  # unreferenced rows are not damage: it opens
    reopened.write_vectors(run, [_vectors("h1", 1, 1)])
    ids, mat = reopened.layer_matrix(run, "a")
    assert len(ids) == 2
    np.testing.assert_allclose(mat[1], _vectors("h1", 1, 1).layers[0], atol=2e-3)
    assert reopened.row_file(run, "segment", 1).rows == 3 and reopened.row_file(run, "track", 0).rows == 2


def test_duplicate_content_shares_vectors_and_lookups_fail_clearly(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    run = store.ensure_run(run_key(INFO, WindowPolicy()))
    a = _add_track(store, 0)
    b = store.upsert_track(Path("/music/copy.wav"), "h0", 10, 1.0, {}, {"artist": "y"})
    store.write_vectors(run, [_vectors("h0", 1, 0)])
    ids, mat = store.layer_matrix(run, 0)
    assert sorted(ids) == [a, b] and np.array_equal(mat[0], mat[1])
    assert store.track("copy.wav").id == b
    with pytest.raises(StoreError, match="unknown track"):
        store.track(999)
    with pytest.raises(StoreError, match="unknown layer"):
        run.layer_index("nope")
    with pytest.raises(StoreError, match="no vectors for model"):
        store.run("other")
    with pytest.raises(StoreError, match="no feature store"):
        FeatureStore(tmp_path / "missing", readonly=True)


def test_a_file_name_two_tracks_share_is_refused_with_both_ids(tmp_path: Path) -> None:
    """Before, `mess similar theme.ogg` answered for the lower id without a word (a moved, unpruned file's old path
    won too)."""
    store = FeatureStore(tmp_path)
    x = store.upsert_track(Path("/music/x/theme.ogg"), "hx", 10, 1.0, {}, {})
    y = store.upsert_track(Path("/music/y/theme.ogg"), "hy", 10, 1.0, {}, {})
    with pytest.raises(StoreError, match="give the track's id or its full path") as err:
        store.track("theme.ogg")
    assert f"{x}: /music/x/theme.ogg" in str(err.value) and f"{y}: /music/y/theme.ogg" in str(err.value)
    assert store.track("/music/y/theme.ogg").id == y and store.track(str(x)).id == x
    store.upsert_track(Path("/music/y/other.ogg"), "ho", 10, 1.0, {}, {})
    assert store.track("other.ogg").path == "/music/y/other.ogg"  # a unique name still finds its track


def test_derived_vectors_align_to_tracks(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    run = store.ensure_run(run_key(INFO, WindowPolicy()))
    ids = [_add_track(store, i) for i in range(3)]
    store.write_vectors(run, [_vectors(f"h{i}", 1, i) for i in range(3)])
    fused = np.arange(6, dtype=np.float32).reshape(3, 2)
    store.write_derived(run, "fused", ["h2", "h1", "h0"], fused[::-1], {"note": "test"})
    got_ids, got = store.derived_matrix(run, "fused")
    assert list(got_ids) == ids
    np.testing.assert_array_equal(got, fused)
    first = store.derived_meta(run, "fused")
    assert first is not None and first["note"] == "test"
    store.write_derived(run, "fused", ["h0", "h1", "h2"], fused, {"note": "test"})  # same metadata, rewritten
    assert store.derived_meta(run, "fused") != first  # so caches keyed on the metadata see the rewrite


def test_tracks_are_cached_until_this_or_another_connection_writes(tmp_path: Path) -> None:
    writer = FeatureStore(tmp_path)
    run = writer.ensure_run(run_key(INFO, WindowPolicy()))
    for i in range(2):
        _add_track(writer, i)
    writer.write_vectors(run, [_vectors(f"h{i}", 1, i) for i in range(2)])
    reader = FeatureStore(tmp_path, readonly=True)
    first, token = reader.tracks(run), reader.version()
    assert isinstance(first, tuple) and [t.id for t in first] == [1, 2]
    assert reader.tracks(run) is first and reader.version() == token  # nothing changed: not rebuilt
    assert reader.tracks() is reader.tracks() and reader.tracks(artist="x") is reader.tracks(artist="x")

    # another connection adds a track: seen at once, first without vectors, then with them
    _add_track(writer, 2, artist="y")
    assert reader.version() != token
    assert [t.id for t in reader.tracks()] == [1, 2, 3] and [t.id for t in reader.tracks(run)] == [1, 2]
    assert [t.id for t in reader.tracks(artist="y")] == [3]
    writer.write_vectors(run, [_vectors("h2", 1, 2)])
    assert [t.id for t in reader.tracks(run)] == [1, 2, 3]
    # another process retags and removes tracks
    code = (
        "import sys; from pathlib import Path; from mess.store import FeatureStore; "
        "s = FeatureStore(Path(sys.argv[1])); "
        "s.upsert_track(Path('/music/0.wav'), 'h0', 10, 1.0, {}, {'artist': 'z', 'title': 'new'}); "
        "s.remove_tracks(['/music/1.wav']); s.close()"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    assert [(t.id, t.artist, t.title) for t in reader.tracks(run)] == [(1, "z", "new"), (3, "y", "t2")]

    # this connection's own writes invalidate its cache too
    cached = writer.tracks(run)
    assert writer.tracks(run) is cached
    _add_track(writer, 4)
    writer.write_vectors(run, [_vectors("h4", 1, 4)])
    assert writer.tracks(run) is not cached and [t.id for t in writer.tracks(run)] == [1, 3, 4]
    assert writer.tracks(artist="z")[0].title == "new" and [t.id for t in reader.tracks(run)] == [1, 3, 4]
    reader.close()
    writer.close()


def test_window_policy_covers_long_tracks_with_full_windows() -> None:
    policy = WindowPolicy(window_seconds=2.0, max_windows=4)
    starts, length = policy.starts(5 * 100, 100)
    assert length == 200 and starts[0] == 0 and starts[-1] == 300 and len(starts) == 3
    starts, length = policy.starts(150, 100)
    assert list(starts) == [0] and length == 150
    starts, _ = policy.starts(100 * 3600, 100)
    assert len(starts) == 4
    assert WindowPolicy.from_json(policy.to_json()) == policy
    with pytest.raises(ValueError):
        WindowPolicy(window_seconds=0)


def test_a_model_extracted_again_with_another_policy_answers_from_its_fuller_run(tmp_path: Path) -> None:
    """One file extracted with `--max-windows 2` made a second run that every command then used: the other tracks
    disappeared from similar, index and evaluate. The run covering the most tracks answers, the newest of equals."""
    from mess.cli.extract import store_summary

    store = FeatureStore(tmp_path)
    full = store.ensure_run(run_key(INFO, WindowPolicy()))
    for i in range(3):
        _add_track(store, i)
        store.write_vectors(full, [_vectors(f"h{i}", 2, i)])
    partial = store.ensure_run(run_key(INFO, WindowPolicy(max_windows=2)))
    store.write_vectors(partial, [_vectors("h0", 2, 9)])
    assert (store.run("toy").id, store.run().id) == (full.id, full.id)
    runs = {r["id"]: r for r in store_summary(store)["runs"]}
    assert (runs[full.id]["in_use"], runs[partial.id]["in_use"], runs[partial.id]["max_windows"]) == (True, False, 2)
    store.write_vectors(partial, [_vectors(f"h{i}", 2, 9 + i) for i in (1, 2)])  # the collection again
    assert store.run("toy").id == partial.id


def test_info_counts_artists_as_the_artist_commands_group_them(tmp_path: Path) -> None:
    from mess.artists.profiles import build_artists
    from mess.cli.extract import store_summary

    store = FeatureStore(tmp_path)
    tags = [{"artist": "Beyoncé"}, {"artist": "Beyonce"}, {"artist": "Beyoncé feat. Jay-Z"},
            {"composer": "Erik Satie"}, {"artist": " "}, {}]
    for i, tag in enumerate(tags):
        store.upsert_track(Path(f"/music/{i}.wav"), f"h{i}", 10, 1.0, {}, tag)
    assert store_summary(store)["artists"] == 2  # was 4: three spellings of one artist, the composer left out
    assert len(build_artists(store.tracks(), min_tracks=1).profiles) == 2


def test_a_repair_forgets_the_fused_vectors_of_rows_a_new_file_may_take(tmp_path: Path) -> None:
    """Derived vectors are stored by row. A repair that dropped the last file's vectors freed its row; the next
    file extracted took it and was searched with the dropped file's fused vector (found by a review)."""
    from mess.store.check import check_and_repair

    store = FeatureStore(tmp_path)
    run = store.ensure_run(run_key(INFO, WindowPolicy()))
    ids = [_add_track(store, i) for i in range(4)]
    store.write_vectors(run, [_vectors(f"h{i}", 1, i) for i in range(4)])
    store.write_derived(run, "fused", [f"h{i}" for i in range(4)], np.eye(4, dtype=np.float32), {"note": "test"})
    damaged = np.memmap(store.row_file(run, "track", 0).path, dtype=np.float16, mode="r+", shape=(4, 4))
    damaged[3] = np.nan  # the last file's vector, damaged on disk
    damaged.flush()
    del damaged
    done = check_and_repair(store)[1]
    assert any("forgot the fused vectors of 1 file," in line for line in done), done
    new = store.upsert_track(Path("/music/new.wav"), "h-new", 10, 1.0, {}, {"artist": "y"})
    store.write_vectors(run, [_vectors("h-new", 1, 9)])
    assert store.track_rows(run)["h-new"] == 3  # the freed row
    got_ids, got = store.derived_matrix(run, "fused")
    assert new not in got_ids.tolist() and got_ids.tolist() == ids[:3]
    np.testing.assert_array_equal(got, np.eye(4, dtype=np.float32)[:3])


def _flip_low_bit(path: Path, row: int, dim: int) -> None:
    """Flip the lowest bit of the first value of ``row`` in a float16 row file (the value stays finite)."""
    with path.open("r+b") as f:
        f.seek(row * dim * 2)
        low = f.read(1)[0]
        f.seek(row * dim * 2)
        f.write(bytes([low ^ 1]))


def test_fused_vectors_from_before_checksums_are_read_and_get_them_by_repair(tmp_path: Path) -> None:
    """Fused vectors an older mess wrote (a catalog whose derived sets have no checksums) are read unverified;
    `mess check` names them, not as damage, and `--repair` records their sums, which then refuse a changed row."""
    from mess.search.health import check_store

    store = FeatureStore(tmp_path)
    run = store.ensure_run(run_key(INFO, WindowPolicy()))
    ids = [_add_track(store, i) for i in range(3)]
    store.write_vectors(run, [_vectors(f"h{i}", 1, i) for i in range(3)])
    fused = np.eye(3, 4, dtype=np.float32)
    store.write_derived(run, "fused", [f"h{i}" for i in range(3)], fused, {})
    store.close()
    with sqlite3.connect(tmp_path / "catalog.sqlite") as db:  # what an older mess wrote: no checksums column
        db.execute("ALTER TABLE derived DROP COLUMN checksums")
    old = FeatureStore(tmp_path, readonly=True)  # read-only: not migrated, read unverified
    np.testing.assert_array_equal(old.derived_matrix(old.run("toy"), "fused")[1], fused)
    old.close()
    found = check_store(tmp_path)
    assert [(p.kind, p.damage) for p in found.problems] == [("no-checksum-derived", False)]
    assert "fused vectors have no checksums yet" in found.problems[0].message
    repaired = check_store(tmp_path, fix=True)
    assert repaired.problems == [] and repaired.repaired == [
        "toy (run 1): recorded the checksums of the fused vectors (written by an older mess)"]
    store = FeatureStore(tmp_path, readonly=True)
    run = store.run("toy")
    np.testing.assert_array_equal(store.derived_matrix(run, "fused")[1], fused)
    _flip_low_bit(store.derived_path(run, "fused"), 1, 4)
    with pytest.raises(StoreDamaged, match=f"fused vectors of track ids \\[{ids[1]}\\] differ from their checksums"):
        store.derived_matrix(run, "fused")
    store.close()
    assert [p.kind for p in check_store(tmp_path).problems] == ["checksum-derived"]


def test_check_sums_a_files_windows_across_the_chunks_it_reads(tmp_path: Path) -> None:
    """`mess check` reads each row file once, 4096 rows at a time: a changed window of a file whose windows
    straddle two reads is found (a guard for the chunked scan; the whole-file scan before it found it too)."""
    from mess.search.health import check_store

    store = FeatureStore(tmp_path)
    run = store.ensure_run(run_key(INFO, WindowPolicy()))
    store.write_vectors(run, [_vectors(f"h{i}", 3, i) for i in range(1366)])  # the last file: rows 4095-4097
    assert store.db.execute("SELECT seg_row FROM vectors WHERE content_hash='h1365'").fetchone()[0] == 4095
    _flip_low_bit(store.row_file(run, "segment", 0).path, 4097, 4)
    store.close()
    found = check_store(tmp_path)
    assert [(p.kind, p.message) for p in found.problems] == [
        ("checksum", "toy: 1 file has vectors that differ from their checksums (changed on disk)")]
    assert [p.hashes for p in found.problems] == [frozenset({"h1365"})]


def test_repair_sums_an_older_stores_rows_as_their_bytes_on_disk_reading_in_chunks(tmp_path: Path) -> None:
    """`mess check --repair` records the sums of rows an older mess wrote (no checksums); it read every row file
    whole, all at once, to do it, and now reads each in chunks: each recorded sum is the CRC-32 of the row's bytes as
    the file holds them, for a file whose windows straddle two chunks too."""

    from mess.store.check import check_and_repair

    store = FeatureStore(tmp_path)
    run = store.ensure_run(run_key(INFO, WindowPolicy()))
    store.write_vectors(run, [_vectors(f"h{i}", 3, i) for i in range(1366)])  # the last file: rows 4095-4097
    with store.db:  # as an older mess left them
        store.db.execute("UPDATE vectors SET checksums=NULL WHERE content_hash != 'h7'")
    assert check_and_repair(store)[1] == [
        "toy (run 1): recorded the checksums of 1365 files' vectors (written by an older mess)"]
    files = {(level, i): store.row_file(run, level, i).path.read_bytes() for level in ("track", "segment")
             for i in range(2)}
    _assert_sums_are_the_rows(store, files, INFO.layer_dims)


def _assert_sums_are_the_rows(store: FeatureStore, files: dict[tuple[str, int], bytes],
                              dims: tuple[int, ...]) -> None:
    """Every catalogued track's recorded checksums are the CRC-32s of its float16 rows in ``files`` ((level, layer)
    -> the row file's bytes), track rows first, then segment rows, layer by layer."""
    import zlib

    for content_hash, track_row, seg_row, n, blob in store.db.execute(
            "SELECT content_hash, track_row, seg_row, n_segments, checksums FROM vectors"):
        want = [zlib.crc32(files["track", i][track_row * d * 2:(track_row + 1) * d * 2]) for i, d in enumerate(dims)]
        want += [zlib.crc32(files["segment", i][seg_row * d * 2:(seg_row + n) * d * 2]) for i, d in enumerate(dims)]
        assert np.frombuffer(blob, dtype="<u4").tolist() == want, content_hash


def test_repair_records_an_older_stores_sums_from_the_scan_it_acts_on_without_reading_the_rows_again(
        tmp_path: Path) -> None:
    """`mess check --repair` on an older store read its row files once more to sum them, after the scan it acts on
    had read them: with the check of what it left, each file three times. It records the sums that scan took, so
    each file is read twice (bytes read by this process, from /proc), and the sums are still the files' bytes."""

    from mess.store.check import check_and_repair

    wide = ModelInfo("wide", "rev1", 16000, ("a", "b"), (512, 256))  # wide rows: the catalog is small beside them
    store = FeatureStore(tmp_path)
    run = store.ensure_run(run_key(wide, WindowPolicy()))
    rng = np.random.default_rng(0)
    segments = [[rng.standard_normal((500, d)).astype(np.float32) for d in wide.layer_dims] for _ in range(20)]
    store.write_vectors(run, [TrackVectors(f"h{i}", [s.mean(axis=0) for s in segs], segs, list(range(500)))
                              for i, segs in enumerate(segments)])  # 15 MB of rows
    with store.db:  # as an older mess left them
        store.db.execute("UPDATE vectors SET checksums=NULL")
    files = {(level, i): store.row_file(run, level, i).path.read_bytes() for level in ("track", "segment")
             for i in range(2)}
    size = sum(map(len, files.values()))

    def bytes_read() -> int:
        return int(Path("/proc/self/io").read_text().split("rchar:")[1].split()[0])

    before = bytes_read()
    assert check_and_repair(store) == ([], ["wide (run 1): recorded the checksums of 20 files' vectors (written by "
                                            "an older mess)"])
    read = bytes_read() - before
    assert 2 * size <= read < 2.5 * size, (read, size)
    _assert_sums_are_the_rows(store, files, wide.layer_dims)
    store.close()


def test_a_folder_named_like_an_extracted_model_does_not_hide_its_run(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """With a folder ./toy in the working directory, every command said 'no vectors for model /cwd/toy' (the name
    was read as a local model folder), mess info too."""
    from mess.cli.extract import store_summary

    store = FeatureStore(tmp_path / "store")
    run = store.ensure_run(run_key(INFO, WindowPolicy()))
    _add_track(store, 0)
    store.write_vectors(run, [_vectors("h0", 2, 0)])
    (tmp_path / "toy").mkdir()
    monkeypatch.chdir(tmp_path)
    assert store.run("toy").id == run.id and store_summary(store)["runs"][0]["in_use"]


def test_every_write_waits_for_another_process_holding_the_store_lock(tmp_path: Path) -> None:
    """Not only whole jobs (`mess extract`): a single catalog write of a library caller takes the inter-process
    lock too, so it waits, saying for whom, until the holder lets go, and nothing it wrote is lost."""
    import time

    store = FeatureStore(tmp_path)
    _add_track(store, 0)
    heard: list[str] = []
    store.on_wait = heard.append
    code = ("import sys, time; from pathlib import Path; from mess.store.lock import StoreLock\n"
            "with StoreLock(Path(sys.argv[1])).hold('holder test'):\n"
            "    print('held', flush=True); time.sleep(1.5)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        _add_track(store, 1)
        waited = time.monotonic() - start
    finally:
        assert holder.wait(timeout=30) == 0
    assert waited > 0.5 and len(heard) == 1 and "holder test" in heard[0], (waited, heard)
    assert holder.poll() == 0
    assert sorted(Path(t.path).name for t in store.tracks()) == ["0.wav", "1.wav"]
    store.close()


def test_block_checksums_read_in_chunks_and_a_block_cut_short_is_not_called_changed() -> None:
    """`mess check` reads row files a chunk at a time, beside writers: a block spanning chunks is summed whole
    (CRC-32 of its float16 bytes, computed here with zlib), and a block the file no longer holds in full (cut by a
    repair meanwhile) is not reported as changed on disk."""
    import zlib

    from mess.store.checksums import BlockSums

    rows = np.random.default_rng(0).standard_normal((7, 3)).astype(np.float16)
    starts, counts = np.array([0, 2, 5]), np.array([2, 3, 2])
    crc = [zlib.crc32(rows[s:s + c].astype("<f2").tobytes()) for s, c in zip(starts, counts, strict=True)]
    for want, changed in ((crc, [False, False, False]), ([crc[0] ^ 1, crc[1], crc[2] ^ 1], [True, False, True])):
        sums = BlockSums(starts, counts, np.array(want, dtype=np.int64))
        for first in range(0, 7, 3):  # chunks of 3 rows: the middle block spans two
            sums.add(first, rows[first:first + 3])
        assert sums.changed().tolist() == changed
    cut = BlockSums(starts, counts, np.array([crc[0], crc[1], crc[2] ^ 1], dtype=np.int64))
    cut.add(0, rows[:6])  # the file holds 6 rows now: the last block is not wholly there
    assert cut.changed().tolist() == [False, False, False]


def test_the_store_lock_names_what_stands_in_its_place(tmp_path: Path) -> None:
    """Where write.lock belongs: nothing, a file or a link to one (or to nothing yet: the first writer makes it) is
    usable; a folder, a link loop or a FIFO is named, and a writer refuses it naming the path."""
    import os

    from mess.store.lock import LockUnusable, StoreLock

    lock = StoreLock(tmp_path)
    assert lock.not_a_file() is None and lock.unusable() is None
    (tmp_path / "elsewhere").write_text("")
    lock.path.symlink_to(tmp_path / "elsewhere")
    assert lock.not_a_file() is None
    lock.path.unlink()
    lock.path.symlink_to(tmp_path / "nothing")
    assert lock.not_a_file() is None
    lock.path.unlink()
    lock.path.symlink_to(lock.path)
    assert lock.not_a_file() == "a symbolic link loop"
    lock.path.unlink()
    os.mkfifo(lock.path)
    assert lock.not_a_file() == "not a regular file"
    lock.path.unlink()
    lock.path.mkdir()
    assert lock.not_a_file() == "a folder"
    assert lock.unusable() == (f"{lock.path} is a folder, not the store's lock file, so nothing can write to the "
                               "store: move it aside (`mess check --repair` does) and run the command again")
    with pytest.raises(LockUnusable), lock.hold("test"):
        pass


def test_the_store_lock_is_reentrant_glances_at_a_short_holder_and_is_tried_without_waiting(tmp_path: Path) -> None:
    """Held again inside itself, the lock keeps its first holder's record; a process holding it for a moment (as
    opening a store does) is waited for, not called busy; trying() takes it only when no one holds it and the lock file
    is there; a writer that waits holds it only once its holder is gone."""
    import os
    import time

    from mess.store.lock import StoreBusy, StoreLock

    lock = StoreLock(tmp_path)
    assert lock.holder() == "another process"
    with lock.trying() as took:  # no lock file yet: a reader makes none
        assert took is False and not lock.path.exists()
    with lock.hold("outer"):
        with lock.hold("inner"), lock.trying() as took:
            assert lock.held and took is False
        assert lock.held and lock.holder() == f"pid {os.getpid()}, outer, for 0 s"
    assert not lock.held
    with lock.trying() as took:
        assert took is True and lock.held
    assert not lock.held
    code = ("import sys, time; from pathlib import Path; from mess.store.lock import StoreLock\n"
            "with StoreLock(Path(sys.argv[1])).hold('brief'):\n"
            "    print('held', flush=True); time.sleep(float(sys.argv[2]))\n")
    for seconds in (0.3, 3.0):
        holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(seconds)], stdout=subprocess.PIPE,
                                  text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            held = time.monotonic()
            with lock.trying() as took:
                assert took is False
            heard: list[str] = []
            start = time.monotonic()
            if seconds < 1:
                with lock.hold("after a glance", wait=False, on_wait=heard.append):
                    assert lock.held and heard == []
            else:
                with pytest.raises(StoreBusy, match=r"the store is busy: .* held by pid \d+, brief, for [0-3] s"):
                    with lock.hold("no wait", wait=False):
                        pass
                assert 0.8 < time.monotonic() - start < 2.9
                with lock.hold("waits", on_wait=heard.append):  # until the holder is gone
                    assert time.monotonic() - held >= seconds - 0.1 and len(heard) == 1, heard
                    assert "held by pid" in heard[0]
        finally:
            holder.wait(timeout=30)
