"""File names in the catalog and in messages, and whole-file writes, in process on real files, links and devices."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mess.store.paths import (
    TEMP_GRACE_SECONDS,
    displayable,
    from_db_path,
    inside_store,
    is_device_or_pipe,
    leftover_temps,
    one_line,
    printable,
    replace_file,
    replace_files,
    replacing,
    resolved,
    temp_path,
    to_db_path,
)

SRC = Path(__file__).resolve().parents[1] / "src"


def test_a_name_that_is_not_utf8_is_stored_as_its_bytes_and_printed_with_escapes() -> None:
    name = os.fsdecode(b"/music/caf\xe9.flac")  # a Latin-1 name, as the system hands it over
    assert to_db_path(name) == b"/music/caf\xe9.flac"
    assert to_db_path(Path(name)) == b"/music/caf\xe9.flac"
    assert from_db_path(to_db_path(name)) == name
    assert to_db_path("/music/café.flac") == "/music/café.flac"  # valid UTF-8 stays text
    assert from_db_path("/music/café.flac") == "/music/café.flac"
    assert printable(name) == "/music/caf\\xe9.flac"
    assert printable("café") == "café"
    # a lone surrogate that escapes no byte (only JSON text can carry one, '"\\ud800"') raised UnicodeEncodeError
    lone = json.loads('"a\\ud800b\\udfff"')
    assert printable(lone) == "a\\ud800b\\udfff" and printable(lone + name) == "a\\ud800b\\udfff/music/caf\\xe9.flac"
    json.dumps(printable(lone), ensure_ascii=False).encode()  # safe to store and print as text


def test_control_characters_and_direction_overrides_are_dropped_and_breaks_become_one_space() -> None:
    tag = "a\x1b[31mred\x07\x85\u202eevil\u2066\ufffe\x7f \tb"
    assert displayable(tag) == "a[31mredevil \tb"
    assert one_line("title \t by\n  x\r\n\u2028y\u2029 z") == "title by x y z"
    assert one_line(os.fsdecode(b"caf\xe9\n")) == "caf\\xe9 "


def test_a_link_loop_is_an_os_error_naming_the_path_and_a_store_is_found_through_links(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(OSError) as caught:
        resolved(tmp_path / "a" / "x")
    assert caught.value.errno == errno.ELOOP and caught.value.filename == str(tmp_path / "a" / "x")
    store = tmp_path / "store"
    store.mkdir()
    (tmp_path / "link").symlink_to(store)
    assert inside_store(tmp_path / "link" / "catalog.sqlite", store)
    assert inside_store(store / "sub" / ".." / "x", tmp_path / "link")
    assert not inside_store(tmp_path / "x", store)
    assert not inside_store(tmp_path / "store-2" / "x", store)  # a name that starts like the store is not in it


def test_a_temp_name_keeps_as_much_of_a_long_name_as_a_file_name_may_hold(tmp_path: Path) -> None:
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    long = tmp_path / ("x" * ((limit - 5) % 2) + "é" * ((limit - 5) // 2) + ".json")  # a two-byte letter cut in half
    assert len(os.fsencode(long.name)) == limit
    tmp = temp_path(long)
    assert tmp.parent == tmp_path and len(os.fsencode(tmp.name)) == limit
    replace_file(long, b"whole")  # a name at the limit is written
    assert long.read_bytes() == b"whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == [long.name]
    short = temp_path(tmp_path / "x.json")
    assert re.fullmatch(r"\.x\.json\.[0-9a-f]{8}\.tmp", short.name)
    assert temp_path(tmp_path / "x") != temp_path(tmp_path / "x")  # two writes of one file never share a temp


def test_only_temps_older_than_the_grace_are_left_over(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    now = time.time()
    made = {
        "old": temp_path(tmp_path / "sub" / "rows.f16"),
        "young": temp_path(tmp_path / "catalog.json"),
        "mid": temp_path(tmp_path / "mid.json"),
        "other": tmp_path / ".notes.tmp",
    }
    for path in made.values():
        path.write_bytes(b"")
    folder = temp_path(tmp_path / "folder")
    folder.mkdir()
    for path, age in ((made["old"], 3600), (made["young"], 1), (made["mid"], 1.5 * TEMP_GRACE_SECONDS),
                      (made["other"], 3600), (folder, 3600)):
        os.utime(path, (now - age, now - age))
    assert leftover_temps(tmp_path) == sorted([made["old"], made["mid"]])
    assert leftover_temps(tmp_path, grace=2 * TEMP_GRACE_SECONDS) == [made["old"]]


def test_devices_and_pipes_are_told_from_files_and_folders(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "file").write_bytes(b"")
    assert is_device_or_pipe(Path("/dev/null")) and is_device_or_pipe(fifo)
    assert not is_device_or_pipe(tmp_path / "file") and not is_device_or_pipe(tmp_path)
    assert not is_device_or_pipe(tmp_path / "missing")
    # written into, not replaced: a pipe of the test's own (never /dev/null: a mutant that renamed over it, as root,
    # turned the machine's /dev/null into a file)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    replace_file(fifo, b"through the pipe")
    reader.join(timeout=30)
    assert got == [b"through the pipe"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "file"]


def test_a_replaced_file_keeps_its_mode_a_link_is_written_through_and_a_failed_block_leaves_all_as_it_was(
        tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_bytes(b"old")
    target.chmod(0o640)
    replace_file(target, b"new")
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o640
    link = tmp_path / "link.json"
    link.symlink_to(target)
    replace_file(link, b"through")
    assert link.is_symlink() and target.read_bytes() == b"through"
    replace_file(tmp_path / "new" / "deeper" / "deep.json", b"made")  # missing folders are made
    assert (tmp_path / "new" / "deeper" / "deep.json").read_bytes() == b"made"
    for error in (ValueError, KeyboardInterrupt):
        with pytest.raises(error), replacing(target) as f:
            f.write(b"half")
            raise error()
        assert target.read_bytes() == b"through"
    other = tmp_path / "other.json"
    with pytest.raises(IsADirectoryError):
        replace_files({target: b"A", other: b"B", tmp_path / "new": b"C"})  # the last is a folder
    assert target.read_bytes() == b"through" and not other.exists()
    replace_files({target: b"A", other: b"B"})
    assert target.read_bytes() == b"A" and other.read_bytes() == b"B"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "new", "other.json", "report.json"]


def test_a_write_the_disk_refuses_names_the_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"  # a pipe whose reader goes away: the write fails (EPIPE) naming no file of its own
    os.mkfifo(fifo)
    reader = threading.Thread(target=lambda: os.close(os.open(fifo, os.O_RDONLY)))
    reader.start()
    with pytest.raises(OSError) as caught:
        replace_file(fifo, b"x" * 2**20)
    reader.join(timeout=30)
    assert caught.value.errno == errno.EPIPE and caught.value.filename == str(fifo)
    # a file-size limit: the write itself fails (EFBIG) with no file name of its own
    code = ("import resource, signal, sys; from pathlib import Path; from mess.store.paths import replace_file\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
            "try:\n    replace_file(Path(sys.argv[1]), b'x' * 5000)\n"
            "except OSError as exc:\n    print(exc.errno, exc.filename)\n")
    target = tmp_path / "big.json"
    out = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(SRC)})
    assert out.stdout.split() == [str(errno.EFBIG), str(target)]
    assert [p.name for p in tmp_path.iterdir()] == ["fifo"]  # no temp file left


def test_a_tilde_naming_no_user_is_a_name_as_written_not_a_crash(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The shell leaves '~someone/x' as written when there is no user 'someone'; pathlib's expanduser raised
    RuntimeError ('Could not determine home directory'): `mess export '~bob/v.npz'` ended in a traceback."""
    import pwd

    from test_store_export import INFO

    from mess.audio.windows import WindowPolicy
    from mess.extract.runs import run_key
    from mess.store import FeatureStore, StoreError, TrackVectors
    from mess.store.config import model_key
    from mess.store.export import export_vectors

    user = "mess-no-such-user"
    with pytest.raises(KeyError):
        pwd.getpwnam(user)
    monkeypatch.chdir(tmp_path)
    written = f"~{user}/x"
    assert not inside_store(written, tmp_path / "store") and inside_store(written, tmp_path)
    assert model_key(written, {"dsp"}) == written  # no model folder
    store = FeatureStore(tmp_path / "store")
    try:
        run = store.ensure_run(run_key(INFO, WindowPolicy()))
        store.upsert_track(Path("/music/one.flac"), "h1", 1, 0.0, {}, {})
        layers = [np.ones(d, np.float32) for d in INFO.layer_dims]
        store.write_vectors(run, [TrackVectors("h1", layers, [v[None] for v in layers], [0.0])])
        with pytest.raises(StoreError, match="unknown track"):
            store.track(f"{written}.flac")
        export_vectors(store, run, Path(f"{written}.npz"))
    finally:
        store.close()
    assert np.load(tmp_path / f"~{user}" / "x.npz")["content_hash"].tolist() == ["h1"]


def test_an_error_that_names_its_files_is_raised_as_the_system_named_them(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError) as caught:  # the rename over a folder fails, naming both files
        replace_file(tmp_path / "folder", b"x")
    assert caught.value.filename2 == str(tmp_path / "folder")
    assert re.fullmatch(r"\.folder\.[0-9a-f]{8}\.tmp", Path(caught.value.filename).name)
    assert [p.name for p in tmp_path.iterdir()] == ["folder"]  # the temp file removed


def test_create_file_takes_only_a_free_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new file is written whole; a name already taken (a file, a dangling link) is a FileExistsError naming it,
    left as it was, no temp file beside it; on a file system without hard links (os.link refused with EPERM, as on
    FAT) the file is created exclusively at its name instead, with the same refusal."""
    from mess.store.paths import create_file
    new = tmp_path / "new.pt"
    create_file(new, b"ours")
    assert new.read_bytes() == b"ours"
    theirs = tmp_path / "theirs.pt"
    theirs.write_bytes(b"theirs")
    dangling = tmp_path / "link.pt"
    dangling.symlink_to(tmp_path / "nowhere")
    for taken in (theirs, dangling, new):
        with pytest.raises(FileExistsError, match=re.escape(str(taken))):
            create_file(taken, b"other")
    assert theirs.read_bytes() == b"theirs" and new.read_bytes() == b"ours" and not (tmp_path / "nowhere").exists()

    def no_hard_links(src: object, dst: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    create_file(tmp_path / "fat.pt", b"on fat")
    with pytest.raises(FileExistsError):
        create_file(theirs, b"other")
    assert (tmp_path / "fat.pt").read_bytes() == b"on fat" and theirs.read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fat.pt", "link.pt", "new.pt", "theirs.pt"]
    with pytest.raises(NotADirectoryError, match=re.escape(str(theirs))):  # a file as its folder: not the name taken
        create_file(theirs / "x.pt", b"other")
