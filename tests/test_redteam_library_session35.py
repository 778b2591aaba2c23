"""Red-team of a library that changes under the store (session 35): real `mess` processes on real Wesnoth OGGs while
folders are removed, files renamed or replaced; each test is a defect found there (notes/redteam_library_session35.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from conftest import as_ordinary_user, mess_here
from mess.audio.decode import probe
from mess.store import FeatureStore

MESS = [sys.executable, "-m", "mess.cli"]
DSP = ["--model", "dsp", "--window", "4", "--max-windows", "2", "--batch-size", "2"]

# In the `mess` process: the folder MESS_TEST_GONE_DIR is removed right after os.walk has listed it (as a download
# client or a file manager removes a folder while a walk is under way), and that it was is logged.
_REMOVE_AFTER_LISTING = """
import os, shutil, sys

_gone, _log = os.environ["MESS_TEST_GONE_DIR"], os.environ["MESS_TEST_GONE_LOG"]
_done = []


def _hook(frame, event, arg):
    if (event == "return" and frame.f_code.co_name in ("walk", "_walk") and frame.f_globals.get("__name__") == "os"
            and isinstance(arg, tuple) and arg and arg[0] == _gone and not _done):
        _done.append(True)
        sys.setprofile(None)
        shutil.rmtree(_gone)
        with open(_log, "a") as f:
            f.write(_gone + "\\n")


def _listing(event, args):  # the profile (slow) only from the walk's listing of the folder's parent on
    if (event == "os.scandir" and not _done and args and isinstance(args[0], str)
            and args[0] == os.path.dirname(_gone)):
        sys.setprofile(_hook)


sys.addaudithook(_listing)
"""


@pytest.fixture(scope="module")
def shortest(wesnoth_tracks: list[Path]) -> list[Path]:
    """The three shortest Wesnoth tracks that are not silence."""
    return sorted((p for p in wesnoth_tracks if p.name != "silence.ogg"), key=lambda p: probe(p).duration)[:3]


@pytest.fixture(scope="module")
def extracted(shortest: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(music, store): two of :func:`shortest` extracted with dsp by a real `mess extract`; tests copy both."""
    base = tmp_path_factory.mktemp("extracted")
    music, store = base / "music", base / "store"
    music.mkdir()
    for path in shortest[:2]:
        shutil.copyfile(path, music / path.name)
    run = _mess("extract", str(music), *DSP, "--store", str(store))
    assert run.returncode == 0, run.stderr
    return music, store


def _mess(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MESS, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_a_folder_removed_while_the_walk_lists_it_is_skipped_not_the_end_of_the_run(shortest: list[Path],
                                                                                    tmp_path: Path) -> None:
    """A folder removed between os.walk's listing of it and the walk's look at it (`os.stat`, to follow each real
    folder once) ended `mess extract` before any file was read: 'error: .../b: No such file or directory', exit 1
    (a library where a download client removes its temp folders failed now and then, seen with a folder churn).
    It is now one skipped line, like a folder that cannot be read, and the rest is extracted."""
    music, store, hook = tmp_path / "music", tmp_path / "store", tmp_path / "hook"
    (music / "a").mkdir(parents=True)
    (music / "b" / "sub").mkdir(parents=True)
    shutil.copyfile(shortest[0], music / "a" / shortest[0].name)
    shutil.copyfile(shortest[1], music / "b" / shortest[1].name)
    shutil.copyfile(shortest[2], music / "b" / "sub" / shortest[2].name)
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_REMOVE_AFTER_LISTING)
    gone, log = music / "b", tmp_path / "removed.log"
    path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH", "")) if p)
    run = _mess("extract", str(music), *DSP, "--store", str(store),
                env={"PYTHONPATH": path, "MESS_TEST_GONE_DIR": str(gone.resolve()), "MESS_TEST_GONE_LOG": str(log)})
    assert log.read_text().split() == [str(gone.resolve())]  # the folder went where it should, once
    assert not gone.exists()
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    skipped = [line for line in run.stderr.splitlines() if "skipped" in line and str(gone.resolve()) in line]
    assert len(skipped) == 1 and "No such file or directory" in skipped[0], run.stderr
    assert "1 embedded" in run.stderr, run.stderr
    with closing(FeatureStore(store, readonly=True)) as fs:
        assert [t.path for t in fs.tracks()] == [str((music / "a" / shortest[0].name).resolve())]


def test_a_temp_file_stamped_ahead_of_the_clock_is_named_and_deleted(extracted: tuple[Path, Path],
                                                                     tmp_path: Path) -> None:
    """A write killed while the clock was ahead (set back since: a wrong RTC at boot, then NTP) leaves a temp file
    stamped in the future. `mess check` named only temp files older than a minute, so it said 'ok' of such a file
    and `--repair` kept it until the clock caught up (hours, days). One stamped ahead by more than that minute is no
    live write's: it is named and deleted like an old one."""
    store = tmp_path / "store"
    shutil.copytree(extracted[1], store)
    ahead, now = store / ".catalog.sqlite.0123abcd.tmp", time.time()
    ahead.write_bytes(os.urandom(4096))
    os.utime(ahead, (now + 3 * 3600, now + 3 * 3600))
    young = store / ".config.json.89abcdef.tmp"  # a live write's, a second old: left alone
    young.write_bytes(b"{}")
    check = _mess("check", "--store", str(store))
    assert check.returncode == 0 and ahead.name in check.stdout and young.name not in check.stdout, check.stdout
    repair = _mess("check", "--repair", "--store", str(store))
    assert repair.returncode == 0, repair.stdout + repair.stderr
    assert not ahead.exists() and young.exists()


def test_a_collection_file_made_unreadable_is_answered_from_its_entry_not_said_to_have_changed(
        extracted: tuple[Path, Path], tmp_path: Path) -> None:
    """A collection file made unreadable since extraction (chmod 000: its stamp moves, its audio does not) was said to
    have changed: by id, 'PATH has changed since it was extracted: answering from what it held then'; by path, the
    same warning and then 'error: cannot embed PATH: Permission denied' (exit 1) though its vectors are in the store.
    Each now answers from the catalogued entry with one line saying the file cannot be read now; the answer is the
    one the readable file gets."""
    store = tmp_path / "store"
    shutil.copytree(extracted[1], store)
    with closing(FeatureStore(store, readonly=True)) as fs:  # the copy's catalog names the extracted folder
        first = fs.tracks()[0]
    target = Path(first.path)
    assert target.parent == extracted[0].resolve()
    target = extracted[0] / target.name  # the module's music is read, so it is restored however the test ends
    readable = _mess("similar", str(first.id), "--json", "--store", str(store))
    assert readable.returncode == 0, readable.stderr
    target.chmod(0)
    try:
        for query in (str(first.id), str(target)):
            run = subprocess.run(as_ordinary_user([*MESS, "similar", query, "--json", "--store", str(store)]),
                                 capture_output=True, text=True, timeout=300)
            assert run.returncode == 0, (query, run.stderr)
            assert "has changed" not in run.stderr and "cannot read it now (Permission denied)" in run.stderr, \
                run.stderr
            assert json.loads(run.stdout)["results"] == json.loads(readable.stdout)["results"]
    finally:
        target.chmod(0o644)


def test_an_artist_counts_one_track_per_audio_content_after_its_folder_is_renamed(shortest: list[Path],
                                                                                 tmp_path: Path) -> None:
    """A hard link or a duplicate file counted as another track of its artist in `mess artists similar` (as each
    moved file's vanished entry did before moved files took their tracks' rows): an artist of one track was '2/2
    tracks, confidence 0.40'. An artist's tracks are now its distinct audio contents: the counts are those of the
    folder before the rename and the link (read from `mess artists similar --json` then)."""
    music, store = tmp_path / "music", tmp_path / "store"
    (music / "old").mkdir(parents=True)
    for path in shortest:  # two by one composer, one by another (their tags)
        shutil.copyfile(path, music / "old" / path.name)

    def counts(name: str) -> dict[str, tuple[int, float]]:
        run = mess_here("artists", "similar", name, "--json", "--store", str(store))
        assert run.returncode == 0, run.stderr
        answer = json.loads(run.stdout)
        return {answer["artist"]: (answer["tracks"], answer["confidence"]),
                **{r["artist"]: (r["tracks"], r["confidence"]) for r in answer["results"]}}

    assert mess_here("extract", str(music), *DSP, "--store", str(store)).returncode == 0
    with closing(FeatureStore(store, readonly=True)) as fs:
        name = fs.tracks()[0].artist
    assert name
    before = counts(name)
    assert sorted(n for n, _ in before.values()) == [1, 2], before
    (music / "old").rename(music / "new")
    os.link(music / "new" / shortest[2].name, music / "new" / f"link-{shortest[2].name}")
    again = mess_here("extract", str(music), *DSP, "--store", str(store))
    assert again.returncode == 0, again.stderr
    with closing(FeatureStore(store, readonly=True)) as fs:
        assert len(fs.tracks()) == 4  # three moved, one link
    assert counts(name) == before


def test_check_does_not_call_files_in_an_unreadable_folder_gone(wesnoth_tracks: list[Path], tmp_path: Path) -> None:
    """A folder made unreadable before the answering run was extracted: its files have no vectors of that run, and
    `mess check` said they 'are no longer on disk ... `mess extract FOLDER --prune` forgets them' (os.path.lexists is
    False where a folder above cannot be searched), with that verdict; `--prune` keeps what it cannot look at, so the
    advice did nothing and was given again. They are now said to be unreadable, with the extract that embeds them
    once they are readable (a file really gone is still sent to `--prune`: tests/test_redteam_session30.py)."""
    five = sorted((p for p in wesnoth_tracks if p.name != "silence.ogg"), key=lambda p: probe(p).duration)[:5]
    music, store = tmp_path / "music", tmp_path / "store"
    for folder, tracks in (("a", five[:2]), ("b", five[2:3]), ("c", five[3:5])):
        (music / folder).mkdir(parents=True)
        for path in tracks:
            shutil.copyfile(path, music / folder / path.name)
    first = ["--model", "dsp", "--window", "4", "--max-windows", "2", "--store", str(store)]
    second = ["--model", "dsp", "--window", "5", "--max-windows", "2", "--store", str(store)]
    assert mess_here("extract", str(music / "a"), str(music / "b"), *first).returncode == 0  # run 1: three tracks
    # run 2 (the answering one: four tracks) without b, as an extract of the whole folder does once b is unreadable
    assert mess_here("extract", str(music / "a"), str(music / "c"), *second).returncode == 0
    hidden = music / "b"
    hidden.chmod(0)
    try:
        check = subprocess.run(as_ordinary_user([*MESS, "check", "--store", str(store)]), capture_output=True,
                               text=True, timeout=300)
    finally:
        hidden.chmod(0o755)
    said = " ".join(check.stdout.split())
    assert check.returncode == 0, said
    assert "cannot be looked at now" in said and five[2].name in said and "Permission denied" in said, said
    assert "no longer on disk" not in said and "--prune" not in said, said


def test_a_folder_renamed_between_runs_keeps_its_tracks_ids_and_index(shortest: list[Path], tmp_path: Path) -> None:
    """A file moved or renamed between runs was catalogued as a new track beside its vanished entry until `--prune`:
    every search listed it twice, the saved index fell behind, and ids held by a page or a playlist of the server
    pointed at nothing after the prune. A new path holding the content of a track whose file is gone takes that
    track's row: ids kept, `check` ok (the saved index still current), no vanished entry; a copy made beside its
    original is a new track."""
    music, store = tmp_path / "music", tmp_path / "store"
    (music / "old").mkdir(parents=True)
    for path in shortest:
        shutil.copyfile(path, music / "old" / path.name)
    assert mess_here("extract", str(music), *DSP, "--store", str(store)).returncode == 0
    assert mess_here("index", "--model", "dsp", "--store", str(store)).returncode == 0
    with closing(FeatureStore(store, readonly=True)) as fs:
        before = {Path(t.path).name: t.id for t in fs.tracks()}
    (music / "old").rename(music / "new")
    again = mess_here("extract", str(music), *DSP, "--store", str(store))
    assert again.returncode == 0 and "no longer on disk" not in again.stderr, again.stderr
    check = mess_here("check", "--store", str(store))
    assert check.stdout.rstrip().endswith(": ok"), check.stdout
    copy = music / f"zz-copy-{shortest[0].name}"
    shutil.copyfile(music / "new" / shortest[0].name, copy)
    assert mess_here("extract", str(music), *DSP, "--store", str(store)).returncode == 0
    with closing(FeatureStore(store, readonly=True)) as fs:
        after = {t.path: t.id for t in fs.tracks()}
    moved = {str((music / "new" / name).resolve()): i for name, i in before.items()}
    assert after == {**moved, str(copy.resolve()): max(before.values()) + 1}


def test_a_copy_beside_a_file_in_a_folder_that_cannot_be_looked_into_is_not_a_move(shortest: list[Path],
                                                                                   tmp_path: Path) -> None:
    """A moved file takes the row of a track whose file is gone; a file in a folder that cannot be searched now is
    not gone (os.path.lexists says False there): a copy of it extracted meanwhile is a track of its own, and the
    original keeps its id and path."""
    music, store = tmp_path / "music", tmp_path / "store"
    (music / "locked").mkdir(parents=True)
    original = music / "locked" / shortest[0].name
    shutil.copyfile(shortest[0], original)
    assert mess_here("extract", str(music), *DSP, "--store", str(store)).returncode == 0
    with closing(FeatureStore(store, readonly=True)) as fs:
        (first,) = fs.tracks()
    (music / "copy").mkdir()
    shutil.copyfile(original, music / "copy" / original.name)
    (music / "locked").chmod(0)
    try:
        run = subprocess.run(as_ordinary_user([*MESS, "extract", str(music / "copy"), *DSP, "--store", str(store)]),
                             capture_output=True, text=True, timeout=300)
    finally:
        (music / "locked").chmod(0o755)
    assert run.returncode == 0, run.stderr
    with closing(FeatureStore(store, readonly=True)) as fs:
        assert {t.path: t.id for t in fs.tracks()} == {
            first.path: first.id, str((music / "copy" / original.name).resolve()): first.id + 1}
