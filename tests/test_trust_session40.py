"""Trust red team (session 40): a server whose store's files were deleted or replaced under it, backups, catalogs
of other versions (notes/trust_session40.md)."""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
from contextlib import closing
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from clustered_store import clustered_store
from fastapi.testclient import TestClient

from conftest import mess_here
from mess.serve.app import create_app
from mess.store import FeatureStore, StoreError, TrackVectors
from mess.store.catalog import FORMAT


def _closed(client: TestClient) -> None:
    """Close the store of a client's app (built without its lifespan, which would start an embedding process)."""
    client.app.state.mess.store.close()  # type: ignore[attr-defined]


def test_a_server_whose_wal_and_shm_were_deleted_stops_answering_and_says_how_to_keep_its_commits(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """catalog.sqlite-wal and -shm deleted while `mess serve` runs: every other command refuses the store naming the
    server (session 39), but the server answered on from its version, health "ok", not a word; the commits only its
    open copy of the log holds were lost when it was restarted. Now it answers 503 saying why, and its log says
    (once) how to keep them; after that copy and a restart nothing is lost."""
    root = tmp_path / "store"
    clustered_store(root, 3, 4, 1, seed=0)[0].close()
    client = TestClient(create_app(root), base_url="http://127.0.0.1")
    assert client.get("/api/health").json()["tracks"] == 3
    writer = FeatureStore(root)  # a commit the server's open connection keeps in the log (not folded in)
    writer.upsert_track(Path("/m/new.flac"), "f" * 32, 1, 0.0, {"duration": 30.0}, {"title": "new"})
    writer.close()
    assert client.get("/api/health").json()["tracks"] == 4
    for name in ("catalog.sqlite-wal", "catalog.sqlite-shm"):
        (root / name).unlink()  # a clean-up of "stray" files
    with caplog.at_level(logging.ERROR, logger="mess.serve.state"):
        for url in ("/api/health", "/api/tracks", "/api/tracks/1/similar"):
            answer = client.get(url)
            assert answer.status_code == 503, (url, answer.text)
            detail = answer.json()["detail"]
            assert detail.startswith("store: catalog.sqlite-shm and catalog.sqlite-wal were deleted while this "
                                     "server had the store open") and "restart the server" in detail, detail
            assert str(tmp_path) not in detail and "Traceback" not in answer.text  # no server path in an answer
    said = [r.getMessage() for r in caplog.records if r.name == "mess.serve.state"]
    assert len(said) == 1, said  # once, not at every request
    copy = re.search(r"`cp (\S+) (\S+)`", said[0])
    assert copy is not None and Path(copy[2]) == root / "catalog.sqlite-wal", said[0]
    shutil.copyfile(copy[1], copy[2])  # as the log says
    assert client.get("/api/tracks").status_code == 503  # until restarted
    _closed(client)
    restarted = TestClient(create_app(root), base_url="http://127.0.0.1")
    assert restarted.get("/api/health").json()["tracks"] == 4  # the commit kept
    _closed(restarted)


def _untouched(root: Path) -> tuple[bytes, list[str]]:
    """The catalog's bytes, and the store's files but SQLite's (a connection's empty -wal and its -shm index)."""
    return (root / "catalog.sqlite").read_bytes(), sorted(p.name for p in root.iterdir() if not (
        p.name.endswith("-shm") or p.name.endswith("-wal") and not p.stat().st_size))


def test_a_catalog_of_a_newer_format_is_refused_untouched_and_an_older_one_is_brought_up(tmp_path: Path) -> None:
    """A store written by a newer mess (a catalog format it numbers above this mess's, extra tables and columns) was
    read and written as if it were this mess's own: answers from a schema it may use otherwise, and `check
    --repair` or `extract` adding back columns it dropped. Now every command refuses it in one line and leaves its
    files as they were; a catalog from before formats were numbered (0) is read as it is and numbered by a
    writer."""
    root = tmp_path / "store"
    clustered_store(root, 3, 4, 1, seed=0)[0].close()
    with sqlite3.connect(root / "catalog.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == FORMAT
        db.execute("CREATE TABLE playlists (id INTEGER PRIMARY KEY)")  # what a newer mess might add
        db.execute("ALTER TABLE tracks ADD COLUMN loudness REAL")
        db.execute(f"PRAGMA user_version = {FORMAT + 1}")
    db.close()
    before = _untouched(root)
    for command in (["similar", "1"], ["info"], ["check"], ["check", "--repair"], ["config", "default-model", "x"]):
        said = mess_here(*command, "--store", str(root))
        assert said.returncode == 1 and "Traceback" not in said.stderr, (command, said.stderr)
        assert said.stderr.startswith(f"error: {root}: its catalog was written by a newer mess (catalog format "
                                      f"{FORMAT + 1}; this mess knows formats up to {FORMAT})"), (command, said.stderr)
        assert _untouched(root) == before, command
    with sqlite3.connect(root / "catalog.sqlite") as db:  # a catalog from before formats were numbered
        db.execute("DROP TABLE playlists")
        db.execute("PRAGMA user_version = 0")
    db.close()
    assert mess_here("similar", "1", "--store", str(root)).returncode == 0
    FeatureStore(root, readonly=True).close()
    with closing(sqlite3.connect(root / "catalog.sqlite")) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 0  # a reader writes nothing
    FeatureStore(root).close()
    with closing(sqlite3.connect(root / "catalog.sqlite")) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == FORMAT


def _similar(client: TestClient, track: int) -> list[tuple[int, float]]:
    answer = client.get(f"/api/tracks/{track}/similar?k=3")
    assert answer.status_code == 200, answer.text
    return [(r["id"], r["score"]) for r in answer.json()["results"]]


def test_a_backup_copied_over_the_store_a_server_reads_is_answered_from_not_called_damaged(tmp_path: Path) -> None:
    """Yesterday's store copied back over today's (`cp -a BACKUP/. STORE/`: the files rewritten in place, the catalog
    keeps its inode) while `mess serve` runs: the server's SQLite connection kept its page cache of the old file and
    read the new one through it: "S is damaged: the catalog cannot be read (database disk image is malformed);
    restore catalog.sqlite from a backup" (it was one) until restarted, or a mix of both files. Now it sees the
    catalog written in place (its ctime), reopens it and answers as a server started on the backup does."""
    root, backup = tmp_path / "store", tmp_path / "backup"
    store, run, _, rng = clustered_store(root, 6, 4, 2, seed=0)
    store.close()
    shutil.copytree(root, backup)
    store = FeatureStore(root)  # today's work: more tracks
    items = []
    for i in range(6, 40):
        h = f"{i:032x}"
        store.upsert_track(Path(f"/m/{i}.flac"), h, 1, 0.0, {"duration": 30.0}, {"artist": f"B{i}", "title": f"T{i}"})
        v = rng.standard_normal(4).astype(np.float32)
        items.append(TrackVectors(h, [v], [v[None]], [0.0]))
    store.write_vectors(run, items)
    store.close()
    client = TestClient(create_app(root), base_url="http://127.0.0.1")
    assert client.get("/api/health").json()["tracks"] == 40 and _similar(client, 1)
    for path in backup.rglob("*"):  # copied over in place, as cp does (no -wal/-shm in a closed store's backup)
        if path.is_file():
            shutil.copyfile(path, root / path.relative_to(backup))
    health = client.get("/api/health")
    assert health.status_code == 200 and health.json()["tracks"] == 6, health.text
    fresh = TestClient(create_app(root), base_url="http://127.0.0.1")
    for track in (1, 4):
        assert _similar(client, track) == _similar(fresh, track)
    assert client.get("/api/tracks/7").status_code == 404
    _closed(client)
    _closed(fresh)


def _files(root: Path) -> dict[str, bytes]:
    """The bytes of the row files under ``root`` and of its catalog (b"" where there is none)."""
    catalog = root / "catalog.sqlite"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.f16"))} | {
        "catalog": catalog.read_bytes() if catalog.exists() else b""}


def test_a_writer_whose_store_was_moved_and_another_put_in_its_place_writes_nothing_into_either(
        tmp_path: Path) -> None:
    """A store moved (`mv`, a disk unplugged and another mounted there) while a command writes to it: the writer
    committed to the catalog it held open (the moved one) and wrote rows by path, into the store now there, at rows
    that store's catalog references; with nothing there, it made the folder again and said "row 36 is past the end
    (0 rows); the catalog references rows the file lacks: run `mess check --repair`". Now a write checks, under the
    lock, that the folder still holds the catalog it opened, and refuses in one line."""
    root, moved = tmp_path / "store", tmp_path / "moved"
    writer, run, _, rng = clustered_store(root, 4, 4, 2, seed=0)
    root.rename(moved)
    clustered_store(root, 5, 4, 2, seed=1)[0].close()  # another store in its place
    before = _files(root), _files(moved)
    v = rng.standard_normal(4).astype(np.float32)
    with pytest.raises(StoreError, match=re.escape(f"{root}: the store was moved or deleted while this command had "
                                                   "it open")):
        writer.write_vectors(run, [TrackVectors("a" * 32, [v], [v[None]], [0.0])])
    assert (_files(root), _files(moved)) == before
    shutil.rmtree(root)
    with pytest.raises(StoreError, match="moved or deleted"):
        writer.upsert_track(Path("/m/x.flac"), "b" * 32, 1, 0.0, {"duration": 30.0}, {})
    assert not root.exists()  # no folder made again
    writer.close()
    assert _files(moved) == before[1]


def test_a_store_whose_files_a_hard_linked_copy_shares_is_not_written_and_check_says_so(tmp_path: Path) -> None:
    """A "backup" made with `cp -al` (or a snapshot tool that hard-links files) shares the catalog and row files: the
    next extract into the store changed the backup too (rows written in place, the catalog checkpointed in place),
    and `mess check` on the backup said "ok" with today's tracks in it. Now writes to either refuse, naming the
    links, and `mess check` names them (not damage)."""
    root, snap = tmp_path / "store", tmp_path / "snapshot"
    clustered_store(root, 3, 4, 1, seed=0)[0].close()
    shutil.copytree(root, snap, copy_function=os.link)
    before = _files(snap)
    writer = FeatureStore(root)
    with pytest.raises(StoreError, match=re.escape(f"{root}: cannot write: {root / 'catalog.sqlite'} has 2 hard "
                                                   "links: another folder shares this store's files")):
        writer.upsert_track(Path("/m/new.flac"), "f" * 32, 1, 0.0, {"duration": 30.0}, {})
    with pytest.raises(StoreError, match="hard links"), writer.writing("mess check --repair"):  # a whole job's lock
        pass
    writer.close()
    assert _files(snap) == before
    said = mess_here("check", "--store", str(snap))
    told = " ".join(said.stdout.split())
    assert said.returncode == 0 and f"hard-links: {snap / 'catalog.sqlite'} has 2 hard links" in told, told
    assert told.endswith("whole, its files are shared with another folder (above): nothing can write to it until "
                         "one of the two is a real copy (`cp -a`)"), told


def test_a_catalog_deleted_while_a_process_has_it_open_is_named_with_the_copy_that_brings_it_back(
        tmp_path: Path) -> None:
    """catalog.sqlite deleted (a clean-up, a slip) while a server has the store open: every command said "restore
    catalog.sqlite from a backup, or move the store aside and extract again" (all work lost), though the server
    holds the whole catalog open. Now it names that process and the copy that brings the catalog back."""
    root = tmp_path / "store"
    clustered_store(root, 3, 4, 1, seed=0)[0].close()
    holder = FeatureStore(root, readonly=True)  # this process plays the server
    (root / "catalog.sqlite").unlink()
    said = mess_here("info", "--store", str(root))
    told = " ".join(said.stderr.split())
    assert said.returncode == 1 and "backup" not in told, told
    assert f"process {os.getpid()} still has the deleted catalog open, whole: `cp /proc/{os.getpid()}/fd/" in told, told
    copy = re.search(r"`cp (\S+) (\S+)`", told)
    assert copy is not None and Path(copy[2]) == root / "catalog.sqlite", told
    shutil.copyfile(copy[1], copy[2])  # as it says
    holder.close()
    assert mess_here("check", "--store", str(root)).stdout.strip().endswith("ok")
    with closing(FeatureStore(root, readonly=True)) as store:
        assert len(store.tracks()) == 3


def test_a_copy_sharing_the_stores_linked_row_folder_is_not_written_and_a_real_copy_is(tmp_path: Path) -> None:
    """`runs` moved to a bigger disk and linked, then the store copied with `cp -a` (the link copied, not the rows):
    a write into the copy wrote at its catalog's last row and cut the files past its own rows, so the first store's
    later tracks lost their vectors ("damaged: ... hold 25 rows, the catalog references 40"). Now the copy refuses,
    naming the store whose rows it would overwrite; a copy with rows of its own (`cp -a --dereference`) writes."""
    root, big = tmp_path / "store", tmp_path / "big"
    store, run, _, rng = clustered_store(root, 3, 4, 1, seed=0)
    store.close()
    big.mkdir()
    (root / "runs").rename(big / "runs")
    (root / "runs").symlink_to(big / "runs")
    shutil.copytree(root, tmp_path / "copy", symlinks=True)  # as `cp -a` copies
    shutil.copytree(root, tmp_path / "real")  # as `cp -a --dereference` copies
    before = _files(big)
    for name, refused in (("copy", True), ("real", False)):
        writer = FeatureStore(tmp_path / name)
        v = rng.standard_normal(4).astype(np.float32)
        write = partial(writer.write_vectors, writer.run("synthetic"), [TrackVectors("c" * 32, [v], [v[None]], [0.0])])
        if refused:
            with pytest.raises(StoreError, match=re.escape(f"{tmp_path / name}: cannot write: its row folder "
                                                           f"{tmp_path / name / 'runs'} ({big / 'runs'}) is also the "
                                                           f"row folder of the store whose catalog is {root}")):
                write()
        else:
            write()
        writer.close()
        assert {k: v for k, v in _files(big).items() if k != "catalog"} == {
            k: v for k, v in before.items() if k != "catalog"}, name
