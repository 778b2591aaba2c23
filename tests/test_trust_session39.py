"""Trust red team (session 39): the store's write-ahead log deleted while another process has the store open
(notes/trust_session39.md)."""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import typer
from clustered_store import clustered_store

from conftest import as_ordinary_user, mess_here
from mess.cli.extract import _stop_interrupted
from mess.extract.pipeline import ExtractSummary

GC = ["--model", "dsp", "--window", "1", "--max-windows", "64"]  # dsp: 80-byte rows, a row per second of audio

# a process that has the store open, as `mess serve` has (any SQLite connection): it reads the catalog, says how
# many tracks it holds, and waits for its stdin
_HOLDER = ("import sqlite3, sys; db = sqlite3.connect(f'file:{sys.argv[1]}/catalog.sqlite?mode=ro', uri=True); "
           "print(db.execute('SELECT COUNT(*) FROM tracks').fetchone()[0], flush=True); sys.stdin.readline()")


def _clips(wesnoth_tracks: list[Path], music: Path) -> None:
    """3 s of three Wesnoth tracks, in music/a, music/b and music/c."""
    by_name = {p.name: p for p in wesnoth_tracks}
    for folder, name in (("a", "battle.ogg"), ("b", "sad.ogg"), ("c", "battle.ogg")):
        (music / folder).mkdir(parents=True)
        audio, rate = sf.read(by_name[name], start=(20 if folder != "c" else 40) * 44100, frames=3 * 44100,
                              dtype="float32")
        sf.write(music / folder / f"{folder}.wav", audio, rate)


def _check(store: Path) -> dict[str, object]:
    done = mess_here("check", "--json", "--store", str(store))
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_a_wal_deleted_while_a_reader_has_the_store_open_says_how_to_keep_its_commits_and_notes_their_loss(
        wesnoth_tracks: list[Path], tmp_path: Path) -> None:
    """catalog.sqlite-wal deleted (a clean-up, a sync tool) while a reader (a server) has the store open: SQLite
    answered 'disk I/O error' to every command, which mess called a damaged catalog ("restore catalog.sqlite from a
    backup, or move the store aside and extract again": all work lost), though the catalog is whole and the commits
    live on in the reader's open copy. Once the reader ended, they were lost without a word (`mess check`: rows past
    the catalog's last, "an interrupted write"). With -shm deleted too, commands went on in a new log beside the
    reader's: b's commits lost silently, the next extract wrote over rows the reader still read. Now every command
    refuses while that process lives, naming it and the copy to put back, which keeps the commits; and a loss the
    -shm index still shows is noted as lost commits."""
    music, store = tmp_path / "music", tmp_path / "store"
    _clips(wesnoth_tracks, music)
    wal = store / "catalog.sqlite-wal"
    assert mess_here("extract", str(music / "a"), *GC, "--store", str(store)).returncode == 0
    for folder, keep in (("b", True), ("c", False)):
        holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(store)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == ("1" if keep else "2")
            assert mess_here("extract", str(music / folder), *GC, "--store", str(store)).returncode == 0
            assert wal.stat().st_size > 0  # its commits, not folded into the catalog while the holder reads
            gone = ["catalog.sqlite-shm", "catalog.sqlite-wal"] if keep else ["catalog.sqlite-wal"]
            for name in gone:  # a clean-up of "stray" files; the second time the index stays, naming the commits
                (store / name).unlink()
            said = mess_here("similar", "1", "--store", str(store))
            told = " ".join(said.stderr.split())
            assert said.returncode == 1 and "Traceback" not in said.stderr, said.stderr
            assert f"{' and '.join(gone)} {'were' if keep else 'was'} deleted while process {holder.pid} " in told, told
            assert "backup" not in told and "damaged" not in told, told
            copy = re.search(r"`cp (\S+) (\S+)`", told)
            assert copy is not None and Path(copy[2]) == wal, told
            if keep:
                shutil.copyfile(copy[1], copy[2])  # as the message says
        finally:
            holder.communicate("\n", timeout=30)
        report = _check(store)
        if keep:  # b's commits kept: the catalog holds a and b, whole (the second holder counts them)
            assert report["problems"] == [], report
    kinds = {p["kind"] for p in report["problems"]}  # type: ignore[union-attr]
    lost = [p["message"] for p in report["problems"] if p["kind"] == "lost-commits"]  # type: ignore[union-attr,index]
    assert kinds <= {"lost-commits", "orphan-rows"} and len(lost) == 1, report
    assert lost[0].startswith("catalog.sqlite-wal was deleted or emptied on disk"), lost
    again = mess_here("extract", str(music), *GC, "--store", str(store))  # what the lost commits held, again
    assert again.returncode == 0 and "embedded, 0 unchanged" not in again.stderr, again.stderr
    assert {p["kind"] for p in _check(store)["problems"]} == {"lost-commits"}  # type: ignore[union-attr,index]


def test_a_process_holding_a_deleted_stores_log_and_the_new_store_made_there_does_not_stop_the_new_one(
        wesnoth_tracks: list[Path], tmp_path: Path) -> None:
    """A server had the store open; the store was deleted and made anew at the same path, and the server opened the
    new one while still holding the old connection (its files deleted). It uses the files there now as every other
    process does: commands on the new store go on (a first version of the refusal above stopped them, matching the
    deleted files by their path)."""
    music, store = tmp_path / "music", tmp_path / "store"
    _clips(wesnoth_tracks, music)
    assert mess_here("extract", str(music / "a"), *GC, "--store", str(store)).returncode == 0
    twice = _HOLDER.replace("sys.stdin.readline()", "sys.stdin.readline(); " + _HOLDER.split("; ", 1)[1])
    holder = subprocess.Popen([sys.executable, "-c", twice, str(store)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdin is not None and holder.stdout is not None and holder.stdout.readline().strip() == "1"
        assert mess_here("extract", str(music / "b"), *GC, "--store", str(store)).returncode == 0  # into its log
        shutil.rmtree(store)
        assert mess_here("extract", str(music / "c"), *GC, "--store", str(store)).returncode == 0
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "1"  # the new store's one track, the old files still held
        assert _check(store)["problems"] == []  # opened, as every command opens it
    finally:
        holder.communicate("\n", timeout=30)


def test_a_file_size_limit_is_named_where_sqlite_says_disk_io_error(tmp_path: Path) -> None:
    """Under a file-size limit (`ulimit -f`: a shell's, a batch system's) SQLite meets EFBIG and says 'disk I/O
    error': `mess extract` said "cannot open a feature store at STORE (disk I/O error)", with disk space to spare
    and nothing to fix in sight. It now names the limit (the write path says it the same way)."""
    store = tmp_path / "store"
    limit = 64 * 1024  # the new catalog's schema alone is more

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    opening = ("import sys; from mess.store import FeatureStore, StoreError\ntry: FeatureStore(sys.argv[1])\n"
               "except StoreError as exc: print(exc)")  # what `mess extract` opens first, without its imports
    done = subprocess.run([sys.executable, "-c", opening, str(store)], capture_output=True, text=True,
                          preexec_fn=limited, timeout=120)
    said = " ".join(done.stdout.split())
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert f"cannot open a feature store at {store} (disk I/O error); this process may write files of at most " \
           f"{limit // 1000} kB (`ulimit -f`)" in said, said


def test_check_names_files_whose_last_reading_failed_while_answers_hold_their_earlier_vectors(
        wesnoth_tracks: list[Path], tmp_path: Path) -> None:
    """A file rewritten since it was embedded whose new bytes cannot be read yet (a download rewriting it, cut
    short: "incomplete ... left as it is") keeps its earlier content's vectors, which every answer holds: `mess
    check` said "ok". It now names the file and why (not damage, exit 0); the next extract that reads it clears it
    (its failure is deleted as the file is catalogued)."""
    music, store = tmp_path / "music", tmp_path / "store"
    _clips(wesnoth_tracks, music)
    assert mess_here("extract", str(music / "a"), str(music / "b"), *GC, "--store", str(store)).returncode == 0
    assert _check(store)["problems"] == []
    b = music / "b" / "b.wav"
    whole = (music / "c" / "c.wav").read_bytes()  # other audio, arriving: its header declares all of it
    b.write_bytes(whole[: len(whole) // 2])
    failed = mess_here("extract", str(music / "a"), str(music / "b"), *GC, "--store", str(store))
    assert failed.returncode == 3 and "incomplete" in failed.stderr, failed.stderr
    report = _check(store)
    assert [p["kind"] for p in report["problems"]] == ["unread-now"], report  # type: ignore[index]
    said = " ".join(mess_here("check", "--store", str(store)).stdout.split())
    assert f"1 file could not be read by the last `mess extract` ({b}: incomplete:" in said, said
    assert said.endswith("whole, answers hold the vectors of what the files named above held before: the next "
                         "`mess extract` reads them again"), said


def test_an_extract_interrupted_after_its_last_file_does_not_send_the_user_to_run_it_again(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C landing after every file was handled (a kill loop's round 8 of 12: 30 unchanged) said "0 of 30 files
    not done: `mess extract` again embeds them". It now says all were done; with files left, as before."""
    rest = "18 of 30 files not done: `mess extract` again embeds them (the kept ones are skipped)"
    for handled, want in ((30, "all 30 files were done"), (12, rest)):
        with pytest.raises(typer.Exit) as stop:
            _stop_interrupted(ExtractSummary(skipped=handled), 30, "dsp", Path("S"))
        said = " ".join(capsys.readouterr().err.split())
        assert stop.value.exit_code == 130 and said.endswith(want), said


def test_a_write_refused_for_want_of_permission_says_so_not_to_free_disk_space(tmp_path: Path) -> None:
    """Row files made read-only under a running extract (a permission change part-way): "cannot write to the store
    at S (S/runs/1/track/000.f16: Permission denied); ... fix the cause (free disk space, say)". The hint now
    follows the error."""
    store = tmp_path / "store"
    clustered_store(store, 2, 4, 1, seed=0)[0].close()
    for row_file in store.glob("runs/*/*/*.f16"):
        row_file.chmod(0o444)
    more = ("import sys\nfrom pathlib import Path\nimport numpy as np\n"
            "from mess.store import FeatureStore, RunKey, StoreError, TrackVectors\nfs = FeatureStore(sys.argv[1])\n"
            "run = fs.ensure_run(RunKey('synthetic', 'r1', '{}', 16000, ('a',), (4,)))\nv = np.ones(4, np.float32)\n"
            "fs.upsert_track(Path('/m/9.flac'), 'f' * 32, 1, 0.0, {'duration': 30.0}, {})\n"
            "try: fs.write_vectors(run, [TrackVectors('f' * 32, [v], [v[None]], [0.0])])\n"
            "except StoreError as exc: print(exc)")  # what an extract writes, as a user who may not write them
    done = subprocess.run(as_ordinary_user([sys.executable, "-c", more, str(store)]), capture_output=True,
                          text=True, timeout=120)
    said = " ".join(done.stdout.split())
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert "000.f16: Permission denied); what was written before is kept: fix the cause (let this user write " \
        "there, say)" in said, said
