"""What mutation testing of sessions 35-39's new code found untested (notes/mutation_session40.md). Expected answers
come from outside the code under test: the processes the tests start (their pids and command lines), the bytes of
the files they delete, SQLite itself, and numpy."""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import os
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from mess.store.holders import deleted_while_open, refusal

# ---------------------------------------------------------------- holders: a process holding a deleted -wal/-shm

# a process that has a store open, as `mess serve` has: it reads the catalog, says how many rows, and at each line
# of its stdin opens the store once more (as a server opens a store made anew) and says the count again
_HOLDER = ("import sqlite3, sys; c = [sqlite3.connect(sys.argv[1] + '/catalog.sqlite')]; "
           "print(c[0].execute('SELECT COUNT(*) FROM t').fetchone()[0], flush=True); "
           "[(c.append(sqlite3.connect(sys.argv[1] + '/catalog.sqlite')), "
           "print(c[-1].execute('SELECT COUNT(*) FROM t').fetchone()[0], flush=True)) for _ in sys.stdin]")

_READER = ("import fcntl, sys; log = open(sys.argv[1], 'rb'); lock = open(sys.argv[2], 'w'); "
           "fcntl.lockf(lock, fcntl.LOCK_EX); print('ready', flush=True); sys.stdin.readline()")


def _catalog(folder: Path, rows: int) -> None:
    folder.mkdir()
    with closing(sqlite3.connect(folder / "catalog.sqlite")) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t(x)")
        db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(rows)])
        db.commit()


def test_a_process_holding_the_stores_deleted_log_is_named_with_the_copy_that_keeps_its_commits(
        tmp_path: Path) -> None:
    """The holder found through its lock on the catalog (not this process, which holds none), the deleted files it
    holds named in order, its command line, and the descriptor whose bytes are the deleted log's (read before it was
    deleted); with the -shm index alone deleted, no copy to keep. A holder that has also opened the store made anew
    there agrees with this command; a catalog no one holds, or none at all, names nobody, nor does a process holding
    the deleted log without a connection to the catalog. The store reached through a link to its folder is the same
    store; a command line not UTF-8 is shown with its bytes replaced."""
    real = tmp_path / "real"
    _catalog(real, 3)
    store = tmp_path / "store"
    store.symlink_to(real)
    args = [sys.executable, "-c", _HOLDER, str(real), "caf\udcff"]  # an argument not UTF-8 (os.fsencode: b"\xff")
    assert deleted_while_open(store / "catalog.sqlite") is None  # no process has it open
    holder = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    reader = None
    try:
        assert holder.stdin is not None and holder.stdout is not None and holder.stdout.readline().strip() == "3"
        with closing(sqlite3.connect(real / "catalog.sqlite")) as db:  # a commit the holder's log keeps
            db.execute("INSERT INTO t VALUES (99)")
            db.commit()
        # a process that reads the log (a backup, say) and holds a lock elsewhere, with no connection to the catalog
        reader = subprocess.Popen([sys.executable, "-c", _READER, str(real / "catalog.sqlite-wal"),
                                   str(tmp_path / "lk")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
        assert deleted_while_open(store / "catalog.sqlite") is None  # held, nothing deleted
        (real / "catalog.sqlite-shm").unlink()
        assert deleted_while_open(store / "catalog.sqlite") == (holder.pid, ["catalog.sqlite-shm"])
        told = refusal(store, holder.pid, ["catalog.sqlite-shm"])
        command = " ".join([*args[:-1], "caf\ufffd"])  # as /proc shows it, undecodable bytes replaced
        assert told == (f"{store}: catalog.sqlite-shm was deleted while process {holder.pid} ({command}) had the "
                        "store open, so it and this command would no longer agree on what the catalog holds; end it "
                        "(a server: restart it) and run the command again"), told
        log = (real / "catalog.sqlite-wal").read_bytes()
        (real / "catalog.sqlite-wal").unlink()
        found = deleted_while_open(store / "catalog.sqlite")
        assert found == (holder.pid, ["catalog.sqlite-shm", "catalog.sqlite-wal"])
        told = refusal(store, *found)
        head, _, tail = told.partition("; its latest commits are only in that process's open copy of "
                                       "catalog.sqlite-wal: `cp ")
        assert head == (f"{store}: catalog.sqlite-shm and catalog.sqlite-wal were deleted while process "
                        f"{holder.pid} ({command}) had the store open, so it and this command would no longer agree "
                        "on what the catalog holds"), told
        copy, _, rest = tail.partition(" ")
        assert Path(copy).read_bytes() == log and log, told  # the holder's descriptor of the deleted log
        assert rest == (f"{store / 'catalog.sqlite-wal'}` keeps them (before it ends), then end it (a server: "
                        "restart it) and run the command again"), told
        shutil.rmtree(real)  # the store made anew there; the holder opens it too, still holding the old one
        _catalog(real, 1)
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "1"
        assert {"catalog.sqlite-wal", "catalog.sqlite-shm"} <= set(os.listdir(real))
        assert deleted_while_open(store / "catalog.sqlite") is None
    finally:
        holder.communicate(timeout=30)
        if reader is not None:
            reader.communicate(timeout=30)
    assert deleted_while_open(tmp_path / "none" / "catalog.sqlite") is None
    told = refusal(store, holder.pid, ["catalog.sqlite-wal"])  # ended: no command line, no copy
    assert told == (f"{store}: catalog.sqlite-wal was deleted while process {holder.pid} had the store open, so it "
                    "and this command would no longer agree on what the catalog holds; end it (a server: restart it) "
                    "and run the command again"), told


# ---------------------------------------------------------------- wal: a deleted log, the -shm descriptors' cap


def _live_log(root: Path) -> tuple[Path, int, bytes]:
    """A copy of a real WAL-mode catalog taken while its connection is open, every commit still in its log: (the
    -wal copy, the log's last commit frame, the log's salts), the last two read from the log's bytes as the file
    format defines them (frame headers of 24 bytes after the 32-byte header; a commit frame's second word is not 0)."""
    live, store = root / "live", root / "store"
    live.mkdir(parents=True)
    store.mkdir()
    with closing(sqlite3.connect(live / "catalog.sqlite", isolation_level=None)) as db:
        db.execute("PRAGMA page_size=1024")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute("CREATE TABLE t (x BLOB)")
        for i in range(4):
            db.execute("INSERT INTO t VALUES (?)", (bytes([i]) * 1500,))
        for name in ("catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm"):
            shutil.copyfile(live / name, store / name)
    data = (store / "catalog.sqlite-wal").read_bytes()
    size = 24 + int.from_bytes(data[8:12], "big")
    ends = [i + 1 for i in range((len(data) - 32) // size) if int.from_bytes(data[32 + i * size + 4:][:4], "big")]
    return store / "catalog.sqlite-wal", ends[-1], data[16:24]


def test_a_log_deleted_or_emptied_loses_the_commits_its_index_names_not_yet_folded_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A log deleted, emptied or cut inside its header: the commits the -shm index names past the frames it says were
    folded into the catalog are lost (damaged_at 0, keyed by the log's salts and the last frame); none when the
    index says all were folded, or there is no index; a log that holds a header is lost_commits' to read."""
    from mess.store import wal as walmod

    monkeypatch.setattr(walmod, "_SHM_FILES", {})
    log, last, salts = _live_log(tmp_path)
    shm = log.with_name("catalog.sqlite-shm")
    data, index = log.read_bytes(), shm.read_bytes()
    assert walmod.deleted_log(log) is None  # whole
    want = walmod.WalDamage(0, 0, 0, last, f"{salts.hex()}:{last}")
    for cut in (b"", data[:31], None):
        if cut is None:
            log.unlink()
        else:
            log.write_bytes(cut)
        assert walmod.deleted_log(log) == want
        assert walmod.lost_commits(log) == want
    assert want.message() == (f"catalog.sqlite-wal was deleted or emptied on disk: the commits up to frame {last} "
                              "were lost, and the catalog is as it was before them; the files they embedded are "
                              "embedded again by the next `mess extract`")
    log.write_bytes(data[:32])
    assert walmod.deleted_log(log) is None  # a header: not deleted (lost_commits reads it as cut short)
    log.unlink()
    for folded, lost in ((last - 1, True), (last, False)):  # frames folded into the catalog (nBackfill, at 96)
        shm.unlink()  # a new file (a new inode): not the descriptor kept of the one before
        shm.write_bytes(index[:96] + folded.to_bytes(4, sys.byteorder) + index[100:])
        assert walmod.deleted_log(log) == (want if lost else None)
    for cut in (index[:99], b""):  # an index too short to say what was folded, none at all
        shm.unlink()
        shm.write_bytes(cut)
        assert walmod.deleted_log(log) is None
    shm.unlink()
    assert walmod.deleted_log(log) is None
    for fd in walmod._SHM_FILES.values():
        os.close(fd)


@pytest.mark.parametrize(("limit", "cap"), [(512, 64), (4100, 256), (None, 1 << 16)])
def test_the_wal_index_is_read_while_the_kept_descriptors_are_under_a_sixteenth_of_the_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int | None, cap: int) -> None:
    """The -shm descriptors kept for the process's life (closed in the processes it starts): at most 1/16 of its soft
    descriptor limit (whole), at least 64, 65536 with no limit. Under the cap a new store's index is read; at the
    cap it is not (its frames are), unless some of those files were deleted: their descriptors are closed."""
    import fcntl
    import resource

    from mess.store import wal as walmod

    log, last, _ = _live_log(tmp_path)
    log.unlink()
    soft = resource.RLIM_INFINITY if limit is None else limit
    monkeypatch.setattr(resource, "getrlimit", lambda _: (soft, resource.RLIM_INFINITY))  # the hard limit: none
    others = []
    for i in range(cap if limit else 2):  # with no limit: 1 kept, not 65535
        path = tmp_path / f"other{i}-shm"
        path.write_bytes(b"\0" * 100)
        others.append(os.open(path, os.O_RDONLY))
    keys = [(os.fstat(fd).st_dev, os.fstat(fd).st_ino) for fd in others]
    try:
        for held, read in ((len(others) - 1, True), (cap, False), (cap, True)):
            if held > len(others):
                continue
            kept = dict(zip(keys[:held], others[:held], strict=True))
            if held == cap and read:  # one of them deleted meanwhile: its descriptor closed to make room
                deleted = others.pop(0)
                (tmp_path / "other0-shm").unlink()
            monkeypatch.setattr(walmod, "_SHM_FILES", kept)
            damage = walmod.deleted_log(log)
            assert (damage is not None and damage.claimed == last) if read else damage is None, (held, damage)
            new = set(walmod._SHM_FILES) - set(keys)
            assert len(new) == read
            for key in new:
                assert fcntl.fcntl(walmod._SHM_FILES[key], fcntl.F_GETFD) & fcntl.FD_CLOEXEC
                os.close(walmod._SHM_FILES[key])
            if held == cap and read:
                assert keys[0] not in walmod._SHM_FILES
                with pytest.raises(OSError):
                    os.fstat(deleted)
    finally:
        for fd in others:
            os.close(fd)


# ---------------------------------------------------------------- runs: the models that have caught up


def test_a_model_is_caught_up_from_nine_tenths_of_the_fullest_runs_files_handled_and_the_answer_is_kept(
        tmp_path: Path) -> None:
    """A store with no vectors has no model caught up and no default. A run that handled (embedded, or failed) 18 of
    the fullest run's 20 files is caught up, 17 is not (the share computed here in whole numbers); the answer is
    computed once per catalog version (SQLite's own trace counts the queries). The `default-model` setting wins, and
    must name a model with vectors here, not a run begun that holds none."""
    from mess.store import FeatureStore, RunKey, TrackVectors
    from mess.store.config import ConfigError, write_setting

    with closing(FeatureStore(tmp_path / "store")) as store:
        assert store.caught_up_models() == [] and store.default_choice() is None
        hashes = [f"{i:032x}" for i in range(20)]
        for i, h in enumerate(hashes):
            store.upsert_track(Path(f"/m/{i}.flac"), h, 1, 0.0, {"duration": 30.0}, {})
        vector = np.ones(4, dtype=np.float32)
        dsp = store.ensure_run(RunKey("dsp", "r", "{}", 16000, ("a",), (4,)))
        store.write_vectors(dsp, [TrackVectors(h, [vector], [vector[None]], [0.0]) for h in hashes])
        musicnn = store.ensure_run(RunKey("musicnn", "r", "{}", 16000, ("a",), (4,)))
        store.write_vectors(musicnn, [TrackVectors(h, [vector], [vector[None]], [0.0]) for h in hashes[:16]])
        store.record_failure(musicnn, hashes[16], "/m/16.flac", "unreadable")
        handled = 17
        assert (handled * 10 >= 20 * 9) is False and store.caught_up_models() == ["dsp"]
        assert store.default_choice() == "dsp"
        store.record_failure(musicnn, hashes[17], "/m/17.flac", "unreadable")
        handled = 18
        asked: list[str] = []
        store.db.set_trace_callback(asked.append)
        try:
            for _ in range(3):
                assert handled * 10 >= 20 * 9 and store.caught_up_models() == ["dsp", "musicnn"]
        finally:
            store.db.set_trace_callback(None)
        assert sum("AS handled" in sql for sql in asked) == 1, asked
        assert store.default_choice() == "musicnn"  # caught up, and ranked above dsp
        write_setting(store.root, "default-model", "dsp")  # the user's choice, though musicnn is caught up
        assert store.default_choice() == "dsp"
        store.ensure_run(RunKey("mert", "r", "{}", 24000, ("a",), (4,)))  # begun, no vectors yet
        write_setting(store.root, "default-model", "mert")
        with pytest.raises(ConfigError, match="'mert'"):
            store.default_choice()


# ---------------------------------------------------------------- records: a run's layers, a track's name, ids


def test_a_layer_is_named_or_indexed_as_a_python_list_is_and_anything_else_is_named_in_the_refusal() -> None:
    """Every index a list of the run's layers takes (negative ones too) gives that layer; every other is refused
    naming the count, and text that is not 1-18 ASCII digits (after a sign) is an unknown layer naming the layers."""
    from mess.store import Run
    from mess.store.errors import StoreError

    names = ("embed", "mid", "last")
    run = Run("m", "r", "{}", 16000, names, (2, 2, 2), id=1)
    for i in range(-5, 5):
        try:
            want: str | None = names[i]
        except IndexError:
            want = None
        for given in (i, str(i)):
            if want is None:
                with pytest.raises(StoreError, match=rf"^layer {i} out of range; m has 3 layers$"):
                    run.layer_index(given)
            else:
                assert names[run.layer_index(given)] == want and 0 <= run.layer_index(given) < 3
    for name in names:
        assert run.layer_index(name) == names.index(name)
    for text in (" 1", "1_0", "\u0661", "1.0", "", "9" * 19, "-" + "9" * 19, "Mid"):
        with pytest.raises(StoreError, match=r"^unknown layer .*; m has embed, mid, last$"):
            run.layer_index(text)
    with pytest.raises(StoreError, match="out of range"):
        run.layer_index("9" * 18)


def test_a_tracks_name_is_artist_and_title_else_the_file_name_and_a_track_id_is_ascii_digits() -> None:
    """The name falls back to the file name less its extension (its undecodable bytes as escapes); tracks pickle
    as a plain tuple; a track id is what int() reads from ASCII digits alone. A catalog row (a path not UTF-8 stored
    as bytes) is read back as the track; records are frozen and hashable by value; a run's id is given by name."""
    import pickle

    from mess.store import Run, Track, TrackVectors
    from mess.store.records import TrackList, is_track_id

    odd = b"/m/caf\xe9.flac".decode("utf-8", "surrogateescape")
    cases = [(("A", "T", "/m/x.flac"), "A - T"), (("A", None, "/m/song.flac"), "A - song"),
             ((None, "T", "/m/x.flac"), "T"), ((None, None, odd), "caf\\xe9"), ((None, "", "/m/b.wav"), "b")]
    for (artist, title, path), want in cases:
        track = Track(7, path, "h" * 32, 1.0, artist, "Al", title, "G", "C")
        assert track.name == want, (artist, title, path)
        assert track.content_key == ("h" * 32, path) and track.label("genre") == "G" and track.label("album") == "Al"
    tracks = TrackList([track], ("s", 1), (2, 3), "q")
    assert (tracks.scope, tracks.version, tracks.query) == (("s", 1), (2, 3), "q")
    again = pickle.loads(pickle.dumps(tracks))
    assert type(again) is tuple and again == (track,)
    for text in ("0", "42", "007", "", "\u00b2", "\u0661", "1a", " 1", "-1", "+1"):
        assert is_track_id(text) == (text != "" and set(text) <= set("0123456789")), text
    with closing(sqlite3.connect(":memory:")) as db:  # a catalog row; a path not UTF-8 is stored as its bytes
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT 3 AS id, ? AS path, 'h' AS content_hash, 2.5 AS duration, 'A' AS artist, "
                         "NULL AS album, 'T' AS title, NULL AS genre, NULL AS composer", (os.fsencode(odd),)).fetchone()
    assert Track.from_row(row) == Track(3, odd, "h", 2.5, "A", None, "T", None, None)
    for frozen in (track, TrackVectors("h", [], [], [])):
        with pytest.raises(dataclasses.FrozenInstanceError):
            frozen.content_hash = "other"  # type: ignore[misc]
    assert len({track, Track(7, "/m/b.wav", "h" * 32, 1.0, None, "Al", "", "G", "C")}) == 1  # hashable, by value
    with pytest.raises(TypeError):
        Run("m", "r", "{}", 16000, ("a",), (2,), 1)  # type: ignore[misc]  # the id is given by name


# ---------------------------------------------------------------- mert_config: a checkpoint's info without its network


def _checkpoint(folder: Path, config: object, features: object | None) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    if features is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(features))
    return folder


def test_a_checkpoints_info_is_what_transformers_reads_from_its_files(tmp_path: Path) -> None:
    """Layers (every hidden state: the embeddings' and each layer's), width and rate as transformers' own HubertConfig
    and Wav2Vec2FeatureExtractor read the same files (their defaults where a file omits them; MERT's 24 kHz where
    there is no preprocessor_config.json); a revision given is kept; files that are not JSON objects, or a front end
    HuBERT cannot run, are ValueErrors naming the file or the reason."""
    from transformers import HubertConfig, Wav2Vec2FeatureExtractor

    from mess.models.mert_config import read_mert_info

    for n, (config, features) in enumerate([({"num_hidden_layers": 3, "hidden_size": 8}, {"sampling_rate": 22050}),
                                            ({}, {}), ({"num_hidden_layers": 2}, None)]):
        folder = _checkpoint(tmp_path / f"c{n}", config, features)
        info = read_mert_info(str(folder), None, "mine")
        hubert = HubertConfig.from_pretrained(folder)
        rate = 24000 if features is None else Wav2Vec2FeatureExtractor.from_pretrained(folder).sampling_rate
        layers = hubert.num_hidden_layers + 1
        assert (info.name, info.sample_rate, info.layer_dims) == ("mine", rate, (hubert.hidden_size,) * layers)
        assert info.layer_names == tuple(f"layer_{i}" for i in range(layers)) and info.revision.startswith("local-")
        assert read_mert_info(str(folder), "v2", "mine").revision == "v2"
    for config, features, match in [("[1]", None, "config.json is not a JSON object"),
                                     ("{", None, "config.json is not JSON"),
                                     ("{}", "{", "preprocessor_config.json is not JSON"),
                                     ('{"feature_extractor_cqt": true}', None, "CQT"),
                                     ('{"deepnorm": true}', "{}", "DeepNorm")]:
        folder = tmp_path / f"bad{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        (folder / "config.json").write_text(config)
        if features is not None:
            (folder / "preprocessor_config.json").write_text(features)
        with pytest.raises(ValueError, match=match):
            read_mert_info(str(folder), None, "mine")


# ---------------------------------------------------------------- user_targets: your own targets file


def _write_csv(path: Path, rows: list[list[str]], delimiter: str = ",", bom: bool = False,
               quoting: int = csv.QUOTE_MINIMAL) -> None:
    with path.open("w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
        csv.writer(f, delimiter=delimiter, quoting=quoting).writerows(rows)


def test_a_targets_file_gives_each_columns_numbers_or_labels_per_track_and_names_its_unknown_rows(
        tmp_path: Path) -> None:
    """Rows written by Python's csv module (comma, semicolon with decimal commas, tab; a BOM; a quoted header
    cell holding the delimiter, a cell holding a line break; a blank line): each column's filled cells as numbers
    when all are, else as labels, keyed by the id of the track the row names (by id, track_id, path or file name);
    empty and 'nan' cells left out; rows naming no track listed with their line (the first 3, '...' past them)."""
    from mess.probing.user_targets import LABEL, NUMBER, read_targets, unknown_note
    from mess.store import FeatureStore

    music = tmp_path / "music"
    paths = [music / f"t{i}.flac" for i in range(4)]
    with closing(FeatureStore(tmp_path / "store")) as store:
        ids = [store.upsert_track(p, f"{i:032x}", 1, 0.0, {"duration": 30.0}, {}) for i, p in enumerate(paths)]
        plain = tmp_path / "plain.csv"
        _write_csv(plain, [["ID", "tempo", "mood, felt"], [str(ids[0]), "120", "calm"], [str(ids[1]), "nan", ""],
                           [], ["999", "90", "sad"], [str(ids[2]), "-1.5e1", "sad"], [str(ids[3]), "", "calm\r\nish"]],
                   bom=True)
        got = read_targets(store, plain)
        assert (got.path, got.column, got.unknown) == (plain, "id", ((5, "999"),))
        tempo, mood = got.targets
        assert (tempo.name, tempo.kind, tempo.values) == ("tempo", NUMBER, {ids[0]: 120.0, ids[2]: -15.0})
        assert (mood.name, mood.kind, mood.values) == ("mood, felt", LABEL,
                                                       {ids[0]: "calm", ids[2]: "sad", ids[3]: "calm\r\nish"})
        assert unknown_note(got) == "1 row names no track of the store and was left out: line 5 '999'"
        assert (NUMBER, LABEL) == ("number", "label")  # as reports name the kinds
        with pytest.raises(dataclasses.FrozenInstanceError):
            got.column = "path"  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            tempo.kind = LABEL  # type: ignore[misc]
        spread = tmp_path / "spread.csv"
        _write_csv(spread, [["path", "energy", "code, v"], [str(paths[0]), "0,3", "1,5"], [str(paths[1]), "1,5e2", "x"],
                            [str(music / "gone.flac"), "1", "2"], ["", "1", "1"]], delimiter=";",
                   quoting=csv.QUOTE_ALL)  # '"path";"energy";"code, v"': its comma is in a quoted cell
        got = read_targets(store, spread)
        energy, code = got.targets
        assert got.column == "path" and energy.values == {ids[0]: 0.3, ids[1]: 150.0} and energy.kind == NUMBER
        assert code.kind == LABEL and code.values == {ids[0]: "1,5", ids[1]: "x"}
        assert got.unknown == ((4, str(music / "gone.flac")), (5, ""))
        tabbed = tmp_path / "tabbed.csv"
        _write_csv(tabbed, [["file", "x"], ["t1.flac", "0,5"], ["t2.flac", "2"]], delimiter="\t")
        got = read_targets(store, tabbed)
        assert got.column == "file" and got.targets[0].values == {ids[1]: 0.5, ids[2]: 2.0}
        assert got.unknown == () and unknown_note(got) == ""
        exported = tmp_path / "exported.csv"
        _write_csv(exported, [["track_id", "x"], [str(ids[3]), "1,5"]])  # a comma file: "1,5" is quoted, a label
        got = read_targets(store, exported)
        assert got.column == "id" and got.targets[0].kind == LABEL and got.targets[0].values == {ids[3]: "1,5"}
        many = tmp_path / "many.csv"
        _write_csv(many, [["id", "x"], *([str(900 + i), "1"] for i in range(4)), [str(ids[0]), "1"]])
        note = unknown_note(read_targets(store, many))
        assert note == ("4 rows name no track of the store and were left out: line 2 '900', line 3 '901', "
                        "line 4 '902', ...")
        _write_csv(many, [["id", "x"], *([str(900 + i), "1"] for i in range(3)), [str(ids[0]), "1"]])
        assert unknown_note(read_targets(store, many)).endswith("line 4 '902'")  # all 3 shown: no '...'


def test_a_targets_file_that_cannot_be_read_as_targets_is_refused_naming_the_file_and_the_line(
        tmp_path: Path) -> None:
    """Each refusal names the file and, for a row, its line (counted here from the rows written)."""
    from mess.probing.probes import ProbeError
    from mess.probing.user_targets import read_targets
    from mess.store import FeatureStore

    music = tmp_path / "music"
    with closing(FeatureStore(tmp_path / "store")) as store:
        a = store.upsert_track(music / "a" / "x.flac", "a" * 32, 1, 0.0, {"duration": 30.0}, {"title": "A"})
        store.upsert_track(music / "b" / "x.flac", "b" * 32, 1, 0.0, {"duration": 30.0}, {})
        f = tmp_path / "t.csv"
        cases: list[tuple[list[list[str]] | bytes | None, str]] = [
            (None, f"cannot read targets file {f}: "),
            (b"id,x\n\xff\xfe1,2\n", f"cannot read targets file {f}: "),
            ([[], [""]], f"{f} is empty: it needs a header"),
            ([["name", "x"], ["1", "2"]], f"{f} needs an id, path or file column naming tracks and at least one "
                                          "column of targets; its header is ['name', 'x']"),
            ([["id", ""], ["1", "2"]], f"{f} needs an id"),
            ([["id", "x", "y", "x"]], f"{f}: two target columns are named 'x' (columns 2 and 4 of the header): "
                                      "rename one"),
            ([["id", "y", "x", "x"]], f"{f}: two target columns are named 'x' (columns 3 and 4 of the header)"),
            ([["id", "x"], [str(a), "1"], [str(a), "1", "3"]], f"{f}:3: 3 cells where the header has 2"),
            ([["id", "x"], [str(a), "1"], [], [str(a), "2"]], f"{f}:4: track {a} (A) has x '2' here and '1' on line 2"),
            ([["id", "x"], [str(a), "-inf"]], f"{f}:2: x '-inf' is not a finite number (leave the cell empty"),
            ([["id", "x"], ["5", "1"], [str(a), ""]], f"{f}: no row gives a target of a track in this store (rows "
                                                      "naming no track: line 2 '5')"),
            ([["id", "x"], [str(a), "nan"]], f"{f}: no row gives a target of a track in this store"),
            ([["id", "x"], ["5", "1"], ["6", "1"], ["7", "1"]], f"{f}: no row gives a target of a track in this "
                                                                "store (rows naming no track: line 2 '5', line 3 '6', "
                                                                "line 4 '7')"),
            ([["id", "x"], *([str(5 + i), "1"] for i in range(4))], f"{f}: no row gives a target of a track in this "
                                                                   "store (rows naming no track: line 2 '5', line 3 "
                                                                   "'6', line 4 '7', ...)"),
            ([["file", "x"], ["x.flac", "1"]], f"{f}:2: 2 tracks are named 'x.flac'"),
        ]
        for text, bad in (('id,x\n1,"2"3\n', '1,"2"3'), ('id,x\n1,2\n\n1,"4"5\n1,7\n', '1,"4"5'),
                          ('"id",x\n1,"2\n1,3\n', '1,"2'), ('"i"d,x\n1,2\n', '"i"d,x')):
            cases.append((text.encode(), f"{f}:{text.splitlines().index(bad) + 1}: not valid CSV ("))
        for content, said in cases:
            f.unlink(missing_ok=True)
            if isinstance(content, bytes):
                f.write_bytes(content)
            elif content is not None:
                _write_csv(f, content)
            with pytest.raises(ProbeError) as refused:
                read_targets(store, f)
            assert str(refused.value).startswith(said), (said, str(refused.value))
            assert not said.endswith("store") or str(refused.value) == said  # no rows to name: nothing after it
        _write_csv(f, [["id", "x"], [str(a), "1"]])
        assert read_targets(store, str(f)).targets[0].values == {a: 1.0}  # a str path too


# ---------------------------------------------------------------- artist_inputs: the hybrid's body


def _inputs_client():  # a TestClient of an app whose one route answers what the dependency read
    from dataclasses import asdict

    from fastapi import Depends, FastAPI
    from fastapi.testclient import TestClient

    from mess.serve.artist_inputs import HybridInputs, hybrid_inputs

    app = FastAPI()

    @app.api_route("/inputs", methods=["GET", "POST"])
    def read(inputs: HybridInputs = Depends(hybrid_inputs)) -> dict:
        return asdict(inputs)

    return TestClient(app)


def test_the_hybrids_body_is_read_as_the_cli_reads_its_files_and_anything_else_is_a_400_naming_it() -> None:
    """An object of reference lists and tags (a BOM allowed) is read; an empty body and a GET are none; a GET with
    a body, a body that is not JSON, not an object (named in JSON's words), or holds another key is a 400; a body
    past 2 MiB is a 413 whether its length is declared or not."""
    from mess.serve.artist_inputs import MAX_BODY

    none = {"reference": None, "tags": None}
    with _inputs_client() as client:
        sent = {"reference": {"A": ["B", "C"]}, "tags": {"A": ["rock", "folk"]}}
        assert client.post("/inputs", content=b"\xef\xbb\xbf" + json.dumps(sent).encode()).json() == sent
        assert client.post("/inputs", json={"tags": sent["tags"]}).json() == {"reference": None, "tags": sent["tags"]}
        assert client.post("/inputs", json={"reference": sent["reference"]}).json() == {
            "reference": sent["reference"], "tags": None}
        for body in (b"", b" \n\t"):
            assert client.post("/inputs", content=body).json() == none
        assert client.get("/inputs").json() == none
        assert client.request("GET", "/inputs", headers={"content-length": "0"}).json() == none
        got = client.request("GET", "/inputs", content=b"{}")
        assert got.status_code == 400 and got.json()["detail"].startswith("a GET's body is not read"), got.text
        chunked = client.request("GET", "/inputs", content=iter([b"{}"]))  # no length: transfer-encoding chunked
        assert chunked.status_code == 400, chunked.text
        for body, said in ((b"{", "the body is not valid JSON ("), (b"\xff{}", "the body is not valid JSON ("),
                           (b"[" * 100000 + b"]" * 100000, "the body is not valid JSON (nested too deeply)"),
                           (b"[]", "; got an array"), (b'"x"', "; got a string"), (b"1.5", "; got a number"),
                           (b"null", "; got null"), (b"true", "; got true"),
                           (b'{"reference": {}, "refs": 1, "zz": 2}', "; 'refs' is neither"),
                           (b'{"tags": {"A": "rock"}}', "tags must map each artist to a list of tags")):
            got = client.post("/inputs", content=body)
            assert got.status_code == 400 and said in got.json()["detail"], (body[:20], got.text)
            assert not said.startswith(";") or got.json()["detail"].startswith(
                'the body must be a JSON object {"reference": ..., "tags": ...}; '), got.text
        big = b" " * (MAX_BODY + 1)
        for body in (big, iter([big[:MAX_BODY], b" "])):  # declared, then streamed without a length
            got = client.post("/inputs", content=body)
            assert got.status_code == 413 and got.json()["detail"].startswith(
                f"the body is larger than {MAX_BODY // 2**20} MiB ("), got.text
        assert client.post("/inputs", content=b" " * MAX_BODY).json() == none  # the cap itself is allowed
        for declared in ("9" * 13, str(MAX_BODY + 1)):  # refused on the declared length alone (the body is short)
            huge = client.post("/inputs", content=b"{}", headers={"content-length": declared})
            assert huge.status_code == 413, huge.text


# ---------------------------------------------------------------- moves: ids follow recordings



def _one_run(store, music: Path, order: int, files: dict[str, str]) -> int:  # noqa: ANN001 -- a FeatureStore
    """Write ``files`` (name -> text) in ``music``, then catalogue them as one run reads them, in the order given
    (``order`` 1) or the reverse (-1); a file's content hash is its text x 32. Returns the moves counted."""
    since = time.time()
    for name, text in files.items():
        (music / name).write_text(text)
    moved = sum(store.catalogue_file(music / name, text * 32, 1, 0.0, {"duration": 1.0}, {}, since=since)[1]
                for name, text in list(files.items())[::order])
    return moved + store.settle_moves(list(music.iterdir()), since)


def test_ids_follow_recordings_through_moves_swaps_copies_and_changes_in_either_order(tmp_path: Path) -> None:
    """The ids a catalog of files a-c (contents A-C) ends with, after each change on disk, in both orders a run may
    read the files in, are the ids of the recordings before (as the module says: an id names a recording); the
    moves counted are the files that took another path's id (a file read again unchanged is none), and three files
    rotating names keep their recordings' ids. A file's content hash is its text x 32."""
    from mess.store import FeatureStore

    for order in (1, -1):
        music = tmp_path / f"music{order}"
        music.mkdir()
        with closing(FeatureStore(tmp_path / f"store{order}")) as store:
            run = functools.partial(_one_run, store, music, order)

            def ids(store: FeatureStore = store) -> dict[str, tuple[int, str]]:
                return {Path(t.path).name: (t.id, t.content_hash[0]) for t in store.tracks()}

            assert run({"a": "A", "b": "B", "c": "C"}) == 0
            first = {name: i for name, (i, _) in ids().items()}
            # a moved to e, a new recording D at a's path: e keeps a's id, a gets a new one
            assert run({"e": "A", "a": "D"}) == 1
            now = ids()
            assert now["e"] == (first["a"], "A") and now["a"][1] == "D" and now["a"][0] not in first.values()
            # b and c swap names: each keeps its recording's id (e, read again unchanged, is no move)
            assert run({"b": "C", "e": "A", "c": "B"}) == 2
            now = ids()
            assert (now["b"], now["c"]) == ((first["c"], "C"), (first["b"], "B"))
            # e copied to f beside it: a copy is no move
            assert run({"f": "A"}) == 0
            assert ids()["e"] == (first["a"], "A") and ids()["f"][0] not in first.values()
            # b changed in place (no other file holds C now): it keeps its id; changed back, still
            assert run({"b": "X"}) == 0 and ids()["b"] == (first["c"], "X")
            assert run({"h": "C"}) == 0  # its old content in a new file a run later: no move, a new id
            assert ids()["b"] == (first["c"], "X") and ids()["h"][0] not in first.values()
            assert run({"b": "C"}) == 0 and ids()["b"] == (first["c"], "C")  # a copy of h's content now
            assert run({"x": "X", "y": "Y", "z": "Z"}) == 0
            before = ids()
            assert run({"x": "Z", "y": "X", "z": "Y"}) == 3  # x -> y -> z -> x
            now = ids()
            assert (now["x"], now["y"], now["z"]) == ((before["z"][0], "Z"), (before["x"][0], "X"),
                                                      (before["y"][0], "Y"))


@pytest.mark.parametrize("order", [1, -1], ids=["name-order", "reverse"])
def test_ids_follow_a_rename_chain_read_front_to_back(tmp_path: Path, order: int) -> None:
    """`rm 1; mv 2 1; mv 3 2` (a folder renumbered after its first track went) read 1 then 2: file 1 kept the id of
    the recording deleted (a playlist of ids that held A played B) and B's id was left on the gone path 3, pruned
    next; `mv b g; mv c b` read g first: g got a new id. Each id now follows its recording in either order; the
    deleted recording's id goes with it. A file's content hash is its text x 32."""
    from mess.store import FeatureStore

    music = tmp_path / "music"
    music.mkdir()
    with closing(FeatureStore(tmp_path / "store")) as store:
        def ids() -> dict[str, tuple[int, str]]:
            return {Path(t.path).name: (t.id, t.content_hash[0]) for t in store.tracks() if Path(t.path).exists()}

        assert _one_run(store, music, order, {"1": "A", "2": "B", "3": "C"}) == 0
        first = {name: i for name, (i, _) in ids().items()}
        (music / "3").unlink()
        assert _one_run(store, music, order, {"1": "B", "2": "C"}) == 2
        assert ids() == {"1": (first["2"], "B"), "2": (first["3"], "C")}
        assert first["1"] not in {t.id for t in store.tracks() if Path(t.path).exists()}
        (music / "1").rename(music / "g")  # mv 1 g; mv 2 1: g read last in name order, first in the reverse
        (music / "2").rename(music / "1")
        assert _one_run(store, music, order, {"g": "B", "1": "C"}) == 2
        assert ids() == {"g": (first["2"], "B"), "1": (first["3"], "C")}


# ---------------------------------------------------------------- reclaim: the rows of old contents


def _vectors_of(h: str, dims: tuple[int, ...], n_segments: int, rng: np.random.Generator):
    from mess.store import TrackVectors

    segments = [rng.standard_normal((n_segments, d)).astype(np.float32) for d in dims]
    return TrackVectors(h, [s.mean(axis=0) for s in segments], segments, [1.5 * i for i in range(n_segments)])


def _half(vectors: np.ndarray) -> np.ndarray:
    """What the store keeps of float32 vectors: numpy's float16 of them."""
    return vectors.astype(np.float16).astype(np.float32)


def _blocks(folder: Path) -> int:
    return sum(p.lstat().st_blocks * 512 for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def test_reclaim_drops_old_contents_packs_the_rows_kept_in_order_and_keeps_every_answer(tmp_path: Path) -> None:
    """Six files, two re-encoded since (new contents embedded in one run, not in the other; one of them re-encoded
    again, not embedded): reclaim drops the old contents of each run, each run's row files then hold exactly the
    current contents' rows (track and window level, in the order they had), every vector read back is the one
    written (numpy's float16 of it), the bytes freed are those the file system gave back, a fused set's rows move
    with their contents' (files written later at the freed rows inherit none), and a second reclaim changes nothing.
    Rows of two contents that overlap (damage) are left where they are."""
    from mess.store import FeatureStore, RunKey
    from mess.store.reclaim import reclaim

    rng = np.random.default_rng(5)
    with closing(FeatureStore(tmp_path / "store")) as store:
        runs = [store.ensure_run(RunKey("synthetic", "r", "{}", 16000, ("a", "b"), (2048, 3072))),  # rows of 4 kB+:
                store.ensure_run(RunKey("other", "r", "{}", 16000, ("a",), (2560,)))]  # freed rows free blocks
        paths = [Path(f"/m/t{i}.flac") for i in range(6)]
        written = {}
        for i, p in enumerate(paths):
            store.upsert_track(p, f"{i:032x}", 1, 0.0, {"duration": 30.0}, {})
        for run in runs:
            items = [_vectors_of(f"{i:032x}", run.layer_dims, 1 + i % 3, rng) for i in range(6)]
            store.write_vectors(run, items)
            written.update({(run.id, v.content_hash): v for v in items})
        for i in (1, 3):  # re-encoded: a new content, embedded again in the first run only
            store.upsert_track(paths[i], f"{i + 10:032x}", 1, 0.0, {"duration": 30.0}, {})
            item = _vectors_of(f"{i + 10:032x}", runs[0].layer_dims, 2, rng)
            store.write_vectors(runs[0], [item])
            written[(runs[0].id, item.content_hash)] = item
        store.upsert_track(paths[3], f"{23:032x}", 1, 0.0, {"duration": 30.0}, {})  # again, not embedded: the
        # first run's last row (its content before) is old now too
        order = {run.id: sorted(store.track_rows(run), key=store.track_rows(run).get) for run in runs}
        fused = {h: rng.standard_normal(8).astype(np.float32) for h in order[runs[0].id]}  # a fused set, every row
        store.write_derived(runs[0], "fused", list(fused), np.stack(list(fused.values())), {})
        before = _blocks(store.root / "runs")
        done = reclaim(store)
        with pytest.raises(dataclasses.FrozenInstanceError):
            done.freed = 0  # type: ignore[misc]
        said = "old contents no catalogued file holds (files re-encoded or edited since)"
        assert done.lines == [f"{run.model} (run {run.id}): dropped the vectors of {n} {said}"
                              for run, n in zip(runs, (3, 2), strict=True)]
        assert done.freed == before - _blocks(store.root / "runs") > 0
        current = {t.content_hash: t.id for t in store.tracks()}
        for run in runs:
            rows = store.track_rows(run)
            kept = [h for h in order[run.id] if h in current]
            assert sorted(rows, key=rows.get) == kept and sorted(rows.values()) == list(range(len(kept)))
            segments = sum(len(written[(run.id, h)].seg_starts) for h in kept)
            for layer in range(len(run.layer_dims)):
                assert store.row_file(run, "track", layer).rows == len(kept)
                assert store.row_file(run, "segment", layer).rows == segments
                ids, matrix = store.layer_matrix(run, layer)
                by_id = {current[h]: written[(run.id, h)] for h in kept}
                assert sorted(ids.tolist()) == sorted(by_id)
                for tid, vector in zip(ids.tolist(), matrix, strict=True):
                    np.testing.assert_array_equal(vector, _half(by_id[tid].layers[layer]))
                seg_ids, _, seg_matrix = store.segment_matrix(run, layer)
                for tid in by_id:
                    np.testing.assert_array_equal(seg_matrix[seg_ids == tid], _half(by_id[tid].segments[layer]))
        ids, matrix = store.derived_matrix(runs[0], "fused")  # the fused rows moved with their contents' rows
        by_id = {current[h]: fused[h] for h in current if h in fused}
        assert sorted(ids.tolist()) == sorted(by_id)
        for tid, vector in zip(ids.tolist(), matrix, strict=True):
            np.testing.assert_array_equal(vector, _half(by_id[tid]))
        again = reclaim(store)
        assert (again.lines, again.freed) == ([], 0)
        for n in range(3):  # written at the freed rows, the last old content's among them: none inherits a fused row
            store.upsert_track(Path(f"/m/new{n}.flac"), f"e{n}" * 16, 1, 0.0, {"duration": 30.0}, {})
            store.write_vectors(runs[0], [_vectors_of(f"e{n}" * 16, runs[0].layer_dims, 1, rng)])
        assert store.derived_missing(runs[0], "fused") == 3
        assert sorted(store.derived_matrix(runs[0], "fused")[0].tolist()) == sorted(by_id)
        other = runs[1]  # damage: two contents' rows overlap; their rows are left where they are, for --repair
        rows = store.track_rows(other)
        first, second = sorted(rows, key=rows.get)[:2]
        with store.db:
            store.db.execute("UPDATE vectors SET track_row=? WHERE run_id=? AND content_hash=?",
                             (rows[first], other.id, second))
        rows = store.track_rows(other)
        sizes = [p.stat().st_size for p in sorted((store.root / "runs").rglob("*")) if p.is_file()]
        reclaim(store)
        assert store.track_rows(other) == rows
        assert [p.stat().st_size for p in sorted((store.root / "runs").rglob("*")) if p.is_file()] == sizes
    with closing(FeatureStore(tmp_path / "tail")) as store:  # the old content is the last row: nothing moves
        run = store.ensure_run(RunKey("synthetic", "r", "{}", 16000, ("a",), (8,)))
        for i in range(3):
            store.upsert_track(Path(f"/m/t{i}.flac"), f"{i:032x}", 1, 0.0, {"duration": 30.0}, {})
        store.write_vectors(run, [_vectors_of(f"{i:032x}", (8,), 1, rng) for i in range(3)])
        store.write_derived(run, "fused", [f"{i:032x}" for i in range(3)], np.ones((3, 4), np.float32), {})
        alone = store.ensure_run(RunKey("other", "r", "{}", 16000, ("a",), (8,)))  # a run of that content alone
        store.write_vectors(alone, [_vectors_of(f"{2:032x}", (8,), 1, rng)])
        store.upsert_track(Path("/m/t2.flac"), "f" * 32, 1, 0.0, {"duration": 30.0}, {})  # re-encoded, not embedded
        assert len(reclaim(store).lines) == 2 and store.row_file(run, "track", 0).rows == 2
        assert store.row_file(alone, "track", 0).rows == 0
        store.upsert_track(Path("/m/new.flac"), "e" * 32, 1, 0.0, {"duration": 30.0}, {})
        store.write_vectors(run, [_vectors_of("e" * 32, (8,), 1, rng)])  # at the freed row 2: no fused row of t2's
        assert store.derived_missing(run, "fused") == 1


# ---------------------------------------------------------------- incomplete: a container declaring more than it holds


def _wav(frames: int, rate: int = 8000, extra: bytes = b"", declared: int | None = None) -> bytes:
    """A 16-bit mono PCM WAV written from the RIFF definition, with ``extra`` chunks before its data chunk (each
    padded to an even length) and a data size field of ``declared`` (default: the data's)."""
    data = (np.arange(frames) % 200 * 100).astype("<i2").tobytes()
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + fmt + extra + b"data" + struct.pack("<I", len(data) if declared is None else declared) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_a_wav_cut_short_is_told_by_its_data_size_past_odd_chunks_and_one_percent_short_is_whole(
        tmp_path: Path) -> None:
    """A WAV built from the RIFF definition (soundfile reads it back whole): its data size against the bytes
    after it, past a chunk of odd length and its pad byte; under 1% short (in whole numbers here) is rounding, not
    a cut; a streamed WAV (its size 0 or 0xFFFFFFFF) and a file of no known container say nothing."""
    import soundfile as sf

    from mess.audio.incomplete import cut_short

    odd = b"LIST" + struct.pack("<I", 3) + b"abc" + b"\0"
    whole = _wav(32000, extra=odd)  # 4 s at 8000 Hz, 16000 bytes a second
    path = tmp_path / "a.wav"
    path.write_bytes(whole)
    assert sf.info(path).frames == 32000 and cut_short(path) is None
    start = whole.index(b"data") + 8
    for kept, said in ((0, "its header declares 4.0 s of audio, the file holds 0.0 s"),
                       (16000, "its header declares 4.0 s of audio, the file holds 1.0 s"),
                       (36000, "its header declares 4.0 s of audio, the file holds 2.2 s"),
                       (63360, None), (63359, "its header declares 4.0 s of audio, the file holds 4.0 s")):
        assert (said is None) == (kept * 100 >= 99 * 64000)
        path.write_bytes(whole[:start + kept])
        assert cut_short(path) == said, kept
    for declared in (0, 0xFFFFFFFF):
        path.write_bytes(_wav(32000, declared=declared)[:start])
        assert cut_short(path) is None
    no_format = whole.replace(whole[12:12 + 24], b"")  # its fmt chunk (24 bytes) gone: no byte rate to tell by
    for junk in (b"", b"RIFF", b"RIFF\0\0\0\0WAVEfmt ", b"\0" * 100, no_format[:len(no_format) // 2]):
        path.write_bytes(junk)
        assert cut_short(path) is None
    assert cut_short(tmp_path / "none.wav") is None


def test_ogg_and_flac_cut_short_are_told_by_their_last_page_and_frame_also_after_an_id3_tag(tmp_path: Path) -> None:
    """Real OGG Vorbis and FLAC files (soundfile's): whole, nothing is said; cut, the OGG's last page lacks the
    end of its stream (also when it is the first page, or continues a packet; a last header cut before its flags
    tells nothing), and the FLAC's last frame starts where its samples run out (within a frame of what the cut
    left: the bytes kept times the seconds per byte); an OGG whose first page fails its CRC is no OGG. A FLAC behind an
    ID3v2 tag (its size syncsafe) is read past it."""
    import soundfile as sf

    from mess.audio.incomplete import cut_short

    rate = 8000
    audio = (0.3 * np.sin(2 * np.pi * 440 * np.arange(6 * rate) / rate)).astype(np.float32)
    ogg, flac = tmp_path / "a.ogg", tmp_path / "a.flac"
    noise = 0.3 * np.random.default_rng(0).standard_normal(6 * 22050)  # Vorbis pages of noise: 11 pages, not 3
    sf.write(ogg, noise.astype(np.float32), 22050, format="OGG", subtype="VORBIS")
    sf.write(flac, audio + 0.01 * np.random.default_rng(0).standard_normal(len(audio)).astype(np.float32), rate,
             format="FLAC", subtype="PCM_16")
    whole_ogg, whole_flac = ogg.read_bytes(), flac.read_bytes()
    assert cut_short(ogg) is None and cut_short(flac) is None
    ogg.write_bytes(whole_ogg[: len(whole_ogg) // 2])
    assert cut_short(ogg) == "its Ogg stream stops before the page that ends it: the rest of the file is missing"
    pages = [i for i in range(len(whole_ogg)) if whole_ogg.startswith(b"OggS\0", i)]
    missing = "its Ogg stream stops before the page that ends it: the rest of the file is missing"
    for kept, said in ((pages[1] + 2, missing),  # the first page whole, the second's capture pattern cut
                       (pages[2] + 5, None),  # the third's header cut before its flags: nothing to tell by
                       (pages[2] + 6, missing)):  # cut right after its flags (not the stream's end)
        ogg.write_bytes(whole_ogg[:kept])
        assert cut_short(ogg) == said, kept
    flagged = bytearray(whole_ogg[:pages[3] + 27])
    flagged[pages[3] + 5] = 0x01  # the last page found continues a packet: still not the stream's end
    ogg.write_bytes(bytes(flagged))
    assert cut_short(ogg) == missing
    broken = bytearray(whole_ogg)
    broken[30] ^= 0xFF  # inside the first page: its CRC fails
    ogg.write_bytes(bytes(broken[: len(broken) // 2]))
    assert cut_short(ogg) is None
    seconds_per_byte = 6 / len(whole_flac)
    tag = b"ID3\x04\x00\x00" + bytes([0, 0, 1, 0x7F]) + bytes(255)  # syncsafe 0x00 0x00 0x01 0x7F: 255 bytes
    for head in (b"", tag):
        for share in (0.3, 0.6):
            kept = int(len(whole_flac) * share)
            flac.write_bytes(head + whole_flac[:kept])
            said = cut_short(flac)
            found = re.fullmatch(r"its header declares (\d+\.\d) s of audio, the file holds (\d+\.\d) s", said or "")
            assert found is not None and found[1] == "6.0", said
            assert abs(float(found[2]) - kept * seconds_per_byte) <= 4608 / rate + 0.1, (said, share)
        flac.write_bytes(head + whole_flac)
        assert cut_short(flac) is None


def test_an_mp3_cut_short_is_told_by_its_info_header_in_each_mpeg_version_and_channel_mode(tmp_path: Path) -> None:
    """LAME MP3s (PyAV's, behind FFmpeg's ID3v2 tag) of MPEG-1 (44.1 kHz, 1152 samples a frame) and MPEG-2 (22.05
    kHz, 576), stereo and mono (the Info tag sits after side information of 32/17 and 17/9 bytes): the seconds
    declared are the tag's frame count times the samples a frame over the rate; held, that times the share of the
    tag's byte count left after the ID3 tag (its size syncsafe, by the ID3v2 definition); 1% short is whole."""
    import av

    from mess.audio.incomplete import cut_short

    path = tmp_path / "a.mp3"
    for rate, layout in ((44100, "stereo"), (44100, "mono"), (22050, "stereo"), (22050, "mono")):
        channels = 2 if layout == "stereo" else 1
        audio = (0.3 * np.random.default_rng(rate).standard_normal((channels, 3 * rate))).astype(np.float32)
        with av.open(str(path), "w", format="mp3") as container:
            stream = container.add_stream("libmp3lame", rate=rate, layout=layout)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio), format="fltp", layout=layout)
            frame.sample_rate = rate
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                container.mux(packet)
        whole = path.read_bytes()
        assert whole[:3] == b"ID3" and cut_short(path) is None
        start = 10 + sum(b << (7 * (3 - i)) for i, b in enumerate(whole[6:10]))
        tag = max(whole.find(b"Info"), whole.find(b"Xing"))
        frames, length = struct.unpack(">II", whole[tag + 8:tag + 16])  # after the tag's name and its flags
        declared = frames * (1152 if rate == 44100 else 576) / rate
        for share in (0.3, 0.7, 0.98, 0.99):
            kept = start + math.ceil(share * length)
            path.write_bytes(whole[:kept])
            said = cut_short(path)
            if share == 0.99:
                assert said is None, (rate, layout)
                continue
            found = re.fullmatch(r"its header declares (\d+\.\d) s of audio, the file holds (\d+\.\d) s", said or "")
            assert found is not None and found[1] == f"{declared:.1f}", (rate, layout, said)
            assert abs(float(found[2]) - declared * (kept - start) / length) <= 0.05, (rate, layout, said)
