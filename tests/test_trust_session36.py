"""Trust leftovers (session 36), with real processes on real audio: a file still being written is left for the next
run; a store that cannot be written (a read-only mount, a folder this user may not write in) still answers what
only reads it, each refusal one line (notes/trust_session36.md)."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from test_store_faults import read_only  # noqa: F401 -- fixture: a read-only bind mount of a folder
from test_store_redteam import _frozen, _killed

from conftest import as_ordinary_user, mess_here
from mess.audio.decode import probe
from mess.audio.discover import content_hash
from mess.store import FeatureStore

MESS = [sys.executable, "-m", "mess.cli"]
DSP = ["--model", "dsp", "--window", "4", "--max-windows", "2", "--batch-size", "2"]

# A download: SOURCE copied to TARGET in pieces of 1/20, a pause after each; past half, it waits (the file still open,
# as a client's stalled connection keeps it) until GO exists, then writes the rest. READY is made at that pause.
_DOWNLOAD = """
import os, sys, time
source, target, ready, go = sys.argv[1:]
data = open(source, "rb").read()
piece = len(data) // 20 + 1
with open(target, "wb") as out:
    for start in range(0, len(data), piece):
        if start >= len(data) // 2 and not os.path.exists(ready):
            open(ready, "w").close()
            while not os.path.exists(go):
                time.sleep(0.05)
        out.write(data[start:start + piece])
        out.flush()
        time.sleep(0.05)
"""


@pytest.fixture(scope="module")
def reported(extracted_store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy of the extracted store (16 rendered tracks, 4 composers) with a fusion network trained on its dsp run,
    and a reference list of those composers (each lists the other three)."""
    root = tmp_path_factory.mktemp("reported")
    store = root / "store"
    shutil.copytree(extracted_store, store)
    trained = mess_here("fuse", "train", "--model", "dsp", "--store", str(store))
    assert trained.returncode == 0, trained.stderr
    with closing(sqlite3.connect(store / "catalog.sqlite")) as db:
        artists = sorted({a for (a,) in db.execute("SELECT artist FROM tracks")})
    reference = root / "reference.json"
    reference.write_text(json.dumps({a: [b for b in artists if b != a] for a in artists}))
    return store, reference


def _listing(folder: Path) -> list[str]:
    """Every file under ``folder`` (names relative to it), temp files included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_config_on_a_store_it_cannot_write_says_so_in_one_line_naming_the_store(
        reported: tuple[Path, Path], read_only: Callable[[Path], Path], tmp_path: Path) -> None:  # noqa: F811
    """`mess config default-model dsp` on a read-only mount said 'error: STORE/.config.json.89f0610a.tmp: Read-only
    file system': removing the temp file it never made failed too, and that error named the temp file. In a folder
    this user may not write in (a reader holding the catalog open, so SQLite opens it there) it said
    'STORE/.config.json.XXXXXXXX.tmp: Permission denied'. Now one line naming the store and why, exit 1, and
    nothing there changed."""
    store = tmp_path / "store"
    shutil.copytree(reported[0], store)
    view = read_only(store)
    before = _listing(store)
    refused = mess_here("config", "default-model", "dsp", "--store", str(view))
    said = refused.stdout + refused.stderr
    assert refused.returncode == 1 and said.count("\n") == 1, said
    assert f"store at {view}" in said and "read-only file system" in said and ".tmp" not in said, said
    assert _listing(store) == before

    held = sqlite3.connect(store / "catalog.sqlite")  # a reader (a server, say): SQLite's -shm file stays
    try:
        held.execute("SELECT count(*) FROM tracks").fetchone()
        store.chmod(0o555)
        try:
            run = subprocess.run(as_ordinary_user([*MESS, "config", "default-model", "dsp", "--store", str(store)]),
                                 capture_output=True, text=True, timeout=300)
        finally:
            store.chmod(0o755)
    finally:
        held.close()
    said = run.stdout + run.stderr
    assert run.returncode == 1 and said.count("\n") == 1, said
    assert f"store at {store}" in said and "may not write" in said and ".tmp" not in said, said
    assert not (store / "config.json").exists() and not list(store.glob(".*.tmp"))


def test_reports_on_a_read_only_store_are_a_warning_after_the_answer_not_a_failure(
        reported: tuple[Path, Path], read_only: Callable[[Path], Path], tmp_path: Path) -> None:  # noqa: F811
    """`mess evaluate` on a read-only store printed its scores, then 'error: cannot write the plot ...' (exit 1);
    `fuse report` failed naming a temp file ('.fusion-....png.f1d7e89b.tmp: Read-only file system') before showing
    its scores, and `artists hybrid` failed to save its weights before showing what it learned. Each now answers as
    on a writable copy, warns in one line what was not written (and where the plot can go: --plot), exit 0.
    `artists matrix`, whose files are its answer, still fails, saying `--out` writes them elsewhere."""
    store, reference = reported
    view = read_only(store)
    for args in (["evaluate", "--model", "dsp", "--json"], ["fuse", "report", "--model", "dsp", "--json"],
                 ["artists", "hybrid", "-r", str(reference), "-k", "2", "--model", "dsp", "--json"]):
        copy = tmp_path / "copy"
        shutil.copytree(store, copy)
        want = mess_here(*args, "--store", str(copy))
        shutil.rmtree(copy)
        assert want.returncode == 0, want.stderr
        got = mess_here(*args, "--store", str(view))
        assert got.returncode == 0, got.stderr
        warnings = [line for line in got.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and "Read-only file system" in warnings[0] and ".tmp" not in got.stderr, got.stderr
        answer, expected = json.loads(got.stdout), json.loads(want.stdout)
        for key in ("plot", "files", "saved"):  # where the files went: nowhere on the read-only store
            if key in answer:
                assert not answer.pop(key) and expected.pop(key), (key, answer)
        assert answer == expected
        if args[0] == "evaluate":
            assert "--plot PATH" in warnings[0]
    matrix = mess_here("artists", "matrix", "--model", "dsp", "--store", str(view))
    said = matrix.stdout + matrix.stderr
    assert matrix.returncode == 1 and "Read-only file system" in said and "--out PATH" in said, said


def _vectors_by_name(store: Path) -> dict[str, str]:
    """The content hash of each catalogued file that has dsp vectors, by file name."""
    with closing(FeatureStore(store, readonly=True)) as fs:
        run = fs.run("dsp")
        return {Path(t.path).name: t.content_hash for t in fs.tracks(run)}


def test_a_file_still_being_downloaded_is_left_for_the_next_run(wesnoth_tracks: list[Path], tmp_path: Path) -> None:
    """A download paused between chunks (an OGG, and a WAV whose header already gives the whole length) was embedded
    as the part written so far, a shorter track, until a later run saw it change. A file another process holds open
    for writing, written in the last minutes, is now left for the next run, by name; the other files are embedded,
    and once the downloads end the next run embeds them whole (their contents: the sources')."""
    import soundfile as sf

    short = sorted((p for p in wesnoth_tracks if p.name != "silence.ogg"), key=lambda p: probe(p).duration)[:3]
    music, store = tmp_path / "music", tmp_path / "store"
    music.mkdir()
    for path in short[:2]:
        shutil.copyfile(path, music / path.name)
    audio, rate = sf.read(short[2])
    wav = tmp_path / "source.wav"
    sf.write(wav, audio[: rate * 12], rate)  # 12 s: two windows of 4 s, either way
    sources = {"growing.ogg": short[2], "growing.wav": wav}
    go = tmp_path / "go"
    writers = {name: subprocess.Popen([sys.executable, "-c", _DOWNLOAD, str(source), str(music / name),
                                       str(tmp_path / f"{name}.ready"), str(go)])
               for name, source in sources.items()}
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"{name}.ready").exists() for name in sources):
            assert time.monotonic() < deadline and all(w.poll() is None for w in writers.values())
            time.sleep(0.05)
        first = subprocess.run([*MESS, "extract", str(music), *DSP, "--store", str(store)], capture_output=True,
                               text=True, timeout=300)
    finally:
        go.touch()
        for writer in writers.values():
            writer.wait(timeout=60)
    said = " ".join((first.stdout + first.stderr).split())
    assert first.returncode == 3 and "Traceback" not in said, said
    for name in sources:
        assert f"{name}: another program is writing it" in said, said
    assert sorted(_vectors_by_name(store)) == sorted(p.name for p in short[:2]), said
    again = mess_here("extract", str(music), *DSP, "--store", str(store))
    assert again.returncode == 0 and "2 embedded, 2 unchanged" in again.stderr, again.stdout + again.stderr
    embedded = _vectors_by_name(store)
    for name, source in sources.items():
        assert embedded[name] == content_hash(source)


# ------------------------------------------------------------------ reclaiming old contents' vectors

GC = ["--model", "dsp", "--window", "1", "--max-windows", "64"]  # dsp: 80-byte rows, a row per second of audio


def _edit(source: Path, target: Path, gain: float) -> None:
    """``target``: ``source`` at ``gain``, encoded again as Ogg Vorbis (a file edited and saved)."""
    import soundfile as sf

    audio, rate = sf.read(source)
    sf.write(target, audio * gain, rate, format="OGG", subtype="VORBIS")


@pytest.fixture(scope="module")
def edited(wesnoth_tracks: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(music, a dsp store of two Wesnoth tracks whose second, 44 s, was edited twice and embedded after each edit:
    no file holds its two earlier contents, whose rows follow the first's, its source)."""
    by_name = {p.name: p for p in wesnoth_tracks}
    root = tmp_path_factory.mktemp("edited")
    music, store = root / "music", root / "store"
    music.mkdir()
    shutil.copyfile(by_name["sad.ogg"], music / "b-sad.ogg")
    shutil.copyfile(by_name["defeat2.ogg"], music / "a-defeat2.ogg")
    for gain in (None, 0.8, 0.6):
        if gain is not None:
            _edit(by_name["sad.ogg"], music / "b-sad.ogg", gain)
        run = mess_here("extract", str(music), *GC, "--store", str(store))
        assert run.returncode == 0, run.stderr
    return music, store, by_name["sad.ogg"]


def _allocated(store: Path) -> int:
    """Bytes the file system holds for the store's row files (st_blocks)."""
    return sum(p.stat().st_blocks * 512 for p in (store / "runs").rglob("*.f16"))


def _answers(store: Path) -> list[object]:
    """`mess similar` of every track, as JSON results."""
    with closing(FeatureStore(store, readonly=True)) as fs:
        ids = [t.id for t in fs.tracks()]
    out = []
    for track in ids:
        run = mess_here("similar", str(track), "--json", "--store", str(store))
        assert run.returncode == 0, run.stderr
        out.append(json.loads(run.stdout)["results"])
    return out


def _old_contents(store: Path) -> int:
    """Vectors rows whose content no catalogued file holds."""
    with closing(sqlite3.connect(store / "catalog.sqlite")) as db:
        return db.execute("SELECT COUNT(*) FROM vectors v WHERE NOT EXISTS "
                          "(SELECT 1 FROM tracks t WHERE t.content_hash=v.content_hash)").fetchone()[0]


def _healthy(store: Path) -> None:
    """`mess check` finds nothing but rows past the catalog's last (an interrupted write's, cut by the next)."""
    checked = mess_here("check", "--store", str(store), "--json")
    report = json.loads(checked.stdout)
    assert checked.returncode == 0 and report["ok"], checked.stdout
    assert all(p["kind"] == "orphan-rows" for p in report["problems"]), checked.stdout


def test_reclaim_killed_at_each_step_leaves_a_whole_store_and_a_rerun_frees_the_old_contents(
        edited: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Old contents' vectors stayed in the store forever (an edited file's every earlier version). `mess check
    --reclaim` drops them and packs the rows kept (session 37: it punched holes before); killed (-9) after each of
    its steps, the store is whole and answers as before, and a rerun finishes: no old content left, the bytes it
    reports are those the row files' blocks lost (st_blocks), and answers are unchanged."""
    store = tmp_path / "store"
    shutil.copytree(edited[1], store)
    want, start = _answers(store), _allocated(store)
    assert _old_contents(store) == 2
    for at in ("mess.store.feature_store:FeatureStore.forget_derived_rows:after",  # before the catalog changes
               "mess.store.reclaim:_move:before",  # the catalog changed, no row moved yet
               "mess.store.arrays:RowFile.copy_rows:after",  # one layer's rows copied past the catalog's last
               "mess.store.reclaim:_move:after",  # the catalog points at the copies
               "mess.store.arrays:RowFile.truncate:before"):  # rows packed at the front, the files not cut yet
        _killed(_frozen(at, "check", "--reclaim", "--store", str(store)))
        _healthy(store)
        assert _answers(store) == want, at
    assert _old_contents(store) == 0
    before = _allocated(store)
    done = subprocess.run([*MESS, "check", "--reclaim", "--json", "--store", str(store)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["problems"] == [] and report["reclaimed"]["freed_bytes"] == before - _allocated(store)
    assert _allocated(store) < start
    assert _answers(store) == want


def test_reclaim_waits_for_a_writer_and_keeps_what_it_wrote(edited: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Beside a `mess extract` holding the store's lock (frozen before it embeds a file edited once more), `mess check
    --reclaim` waits, saying for whom; once the extract goes on and ends, it frees the two old contents, the store is
    whole, and the vectors the extract wrote are those a store that embedded the file alone holds."""
    music, store = tmp_path / "music", tmp_path / "store"
    shutil.copytree(edited[0], music)  # a copy: the store's files are the fixture's, these are new ones
    shutil.copytree(edited[1], store)
    _edit(edited[2], music / "b-sad.ogg", 0.4)
    writer = _frozen("mess.extract.pipeline:_embed:before", "extract", str(music), *GC, "--store", str(store),
                     match="b-sad")
    waiting = subprocess.Popen([*MESS, "check", "--reclaim", "--store", str(store)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        note = waiting.stderr.readline() if waiting.stderr else ""  # its first words: that it waits, and for whom
        assert "mess extract" in note and waiting.poll() is None and _old_contents(store) == 2, note
    finally:
        writer.send_signal(signal.SIGCONT)
        writer.communicate(timeout=300)
        out, err = waiting.communicate(timeout=300)
    assert writer.returncode == 0
    said = " ".join((out + err).split())
    assert waiting.returncode == 0 and "2 old contents" in said and _old_contents(store) == 0, said
    _healthy(store)
    alone = tmp_path / "alone"
    assert mess_here("extract", str(music / "b-sad.ogg"), *GC, "--store", str(alone)).returncode == 0
    edited_now = content_hash(music / "b-sad.ogg")
    assert _layers(store, edited_now) == _layers(alone, edited_now)


def _layers(store: Path, content: str) -> list[list[float]]:
    """The track vectors of every layer of one content, as stored (read through their checksums)."""
    with closing(FeatureStore(store, readonly=True)) as fs:
        run = fs.run("dsp")
        track = next(t.id for t in fs.tracks(run) if t.content_hash == content)
        out = []
        for layer in range(len(run.layer_names)):
            ids, mat = fs.layer_matrix(run, layer)
            out.append(mat[list(ids).index(track)].tolist())
        return out


def test_reclaim_with_repair_frees_old_contents_of_a_store_the_repair_makes_whole(edited: tuple[Path, Path, Path],
                                                                                 tmp_path: Path) -> None:
    """`mess check --repair --reclaim` on a damaged store (a track row file a row short) repairs it first, then frees
    the old contents; the reclaim alone refuses a damaged store, sending it to `--repair`."""
    import os

    store = tmp_path / "store"
    shutil.copytree(edited[1], store)
    short = store / "runs" / "1" / "track" / "000.f16"
    os.truncate(short, short.stat().st_size - 80)  # dsp's first layer: 40 float16 values a row
    refused = mess_here("check", "--reclaim", "--store", str(store))
    assert refused.returncode == 1 and "check --repair" in refused.stderr and _old_contents(store) == 2
    both = mess_here("check", "--repair", "--reclaim", "--store", str(store))
    said = " ".join((both.stdout + both.stderr).split())
    assert both.returncode == 0 and "repaired:" in said and "2 old contents" in said, said
    assert _old_contents(store) == 0
