"""Trust leftovers (session 37), with real processes on real audio: a reader on an older catalog version across a
reclaim or repair reads again instead of calling the store damaged; a reclaim packs the rows kept, so row files are
as long as what they hold (notes/trust_session37.md)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from test_store_redteam import _frozen

from conftest import mess_here
from mess.store import FeatureStore

GC = ["--model", "dsp", "--window", "1", "--max-windows", "64"]  # dsp: 80-byte rows, a row per second of audio


def _clip(source: Path, target: Path, seconds: float, gain: float = 1.0) -> None:
    """``target``: the first ``seconds`` of ``source`` at ``gain``, as WAV."""
    import soundfile as sf

    audio, rate = sf.read(source, frames=int(seconds * 44100), dtype="float32")
    sf.write(target, audio * gain, rate)


@pytest.fixture(scope="module")
def clips(wesnoth_tracks: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Five 3-second WAVs cut from five Wesnoth tracks, by name (a..e), and their sources."""
    by_name = {p.name: p for p in wesnoth_tracks}
    folder = tmp_path_factory.mktemp("clips")
    out = {}
    for letter, name in zip("abcde", ("battle.ogg", "defeat.ogg", "elf-land.ogg", "frantic.ogg", "sad.ogg"),
                            strict=True):
        out[letter] = folder / f"{letter}.wav"
        _clip(by_name[name], out[letter], 3.0)
        out[f"{letter}-source"] = by_name[name]
    return out


# A reader outside any snapshot (as `mess artists` and `mess probe` read a layer): stopped once after its catalog
# query, before it reads the row file; then it prints the layer's track ids and vectors as JSON.
_DIRECT = """
import json, signal, sys, threading
from mess.store import FeatureStore
from mess.store.vectors import VectorRows
real, stopped = VectorRows._read, []
def stopping(*args):
    if not stopped:
        stopped.append(signal.pthread_kill(threading.get_ident(), signal.SIGSTOP))
    return real(*args)
VectorRows._read = stopping
store = FeatureStore(sys.argv[1], readonly=True)
ids, mat = store.layer_matrix(store.run("dsp"), 0)
print(json.dumps([ids.tolist(), mat.tolist()]))
"""


def _direct_reader(store: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _DIRECT, str(store)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), proc.communicate()
    return proc


def _extract(music: Path, store: Path, *more: str) -> None:
    run = mess_here("extract", str(music), *GC, *more, "--store", str(store))
    assert run.returncode == 0, run.stdout + run.stderr


def _similar(store: Path, track: int) -> list[object]:
    run = mess_here("similar", str(track), "--json", "--store", str(store))
    assert run.returncode == 0, run.stdout + run.stderr
    return list(json.loads(run.stdout)["results"])


def _resumed_answer(reader: subprocess.Popen) -> list[object]:
    """The results a frozen `mess similar --json` gives once let go."""
    reader.send_signal(signal.SIGCONT)
    out, err = reader.communicate(timeout=120)
    said = " ".join((out + err).split())
    assert reader.returncode == 0 and "damaged" not in said, said
    return list(json.loads(out)["results"])


def _contents(store: Path) -> dict[str, tuple[int, int]]:
    with closing(sqlite3.connect(store / "catalog.sqlite")) as db:
        return {h: (t, s) for h, t, s in db.execute("SELECT content_hash, track_row, seg_row FROM vectors")}


def _packed(store: Path) -> None:
    """Every row file of the dsp run is as long as the rows the catalog references (tracks, their windows) and holds
    no hole: a copy by a tool that fills holes is no larger."""
    with closing(sqlite3.connect(store / "catalog.sqlite")) as db:
        tracks, windows = db.execute("SELECT COUNT(*), SUM(n_segments) FROM vectors").fetchone()
    with closing(FeatureStore(store, readonly=True)) as fs:
        run = fs.run("dsp")
    for level, rows in (("track", tracks), ("segment", windows)):
        for layer, dim in enumerate(run.layer_dims):
            path = store / "runs" / str(run.id) / level / f"{layer:03d}.f16"
            assert path.stat().st_size == rows * dim * 2, (path, path.stat().st_size, rows)


def _derive(store: Path) -> None:
    """A derived set 'twice' (stored by track row, as fused vectors are): each track's first layer doubled."""
    with closing(FeatureStore(store)) as fs:
        run = fs.run("dsp")
        ids, mat = fs.layer_matrix(run, 0)
        hash_of = {t.id: t.content_hash for t in fs.tracks(run)}
        fs.write_derived(run, "twice", [hash_of[int(i)] for i in ids], mat * 2, {})


def _derived_follow(store: Path) -> None:
    """The derived set moved with the rows: each track's derived vector is still its first layer doubled."""
    with closing(FeatureStore(store, readonly=True)) as fs:
        run = fs.run("dsp")
        ids, mat = fs.layer_matrix(run, 0)
        got_ids, got = fs.derived_matrix(run, "twice")
    assert sorted(got_ids.tolist()) == sorted(ids.tolist())
    order = np.argsort(got_ids)
    np.testing.assert_array_equal(got[order], (mat * 2)[np.argsort(ids)])


def test_a_reader_on_an_older_catalog_version_across_reclaim_and_repair_reads_again(clips: dict[str, Path],
                                                                                   tmp_path: Path) -> None:
    """A `mess similar` that had read its catalog version (frozen before it reads the row files) while `check
    --reclaim` freed rows that version references answered 'damaged: run `mess check --repair`' about a whole
    store (as did a reader outside any snapshot, `layer_matrix` called directly); so did one across a `check
    --repair` that dropped a damaged file, and a `mess check` across the reclaim
    found damage. Each now sees the newest catalog no longer references those rows there (the check: that another
    process committed while it read), reads again, and answers what a fresh one answers: no problem. The reclaim
    left its row files their length, holes where rows were freed; it now moves the rows kept to the front (the
    reader meets rows moved under it), derived vectors with them, and cuts the files after them."""
    music, store = tmp_path / "music", tmp_path / "store"
    music.mkdir()
    for letter in "abcd":
        shutil.copyfile(clips[letter], music / f"{letter}.wav")
    _extract(music, store)  # rows a0 b1 c2 d3
    checker = _frozen("mess.store.check:_values:before", "check", "--json", "--store", str(store))  # of a0 b1 c2 d3
    procs = [checker]
    try:
        _clip(clips["d-source"], music / "d.wav", 3.0, gain=0.5)
        _extract(music, store)  # d's edit at row 4
        reader = _frozen("mess.store.vectors:VectorRows._read:before", "similar", "1", "--json", "--store",
                         str(store))
        procs.append(reader)
        direct = _direct_reader(store)
        procs.append(direct)
        shutil.copyfile(clips["d"], music / "d.wav")  # d reverted: its edit (row 4) is an old content
        (music / "b.wav").unlink()
        shutil.copyfile(clips["e"], music / "e.wav")
        _extract(music, store, "--prune")  # b forgotten: row 1 an old content, c and d after it; e at row 5
        before = _contents(store)
        _derive(store)
        reclaimed = mess_here("check", "--reclaim", "--store", str(store))
        assert reclaimed.returncode == 0, reclaimed.stdout + reclaimed.stderr
        assert len(before) == 6 and len(_contents(store)) == 4  # a0 c1 d2 e3: the check reads 4 rows, moved
        _packed(store)
        _derived_follow(store)
        got = _resumed_answer(reader)
        direct.send_signal(signal.SIGCONT)
        out, err = direct.communicate(timeout=120)
        assert direct.returncode == 0, err
        with closing(FeatureStore(store, readonly=True)) as fs:
            ids, mat = fs.layer_matrix(fs.run("dsp"), 0)
        assert json.loads(out) == [ids.tolist(), mat.tolist()]
        checker.send_signal(signal.SIGCONT)
        out, err = checker.communicate(timeout=120)
        assert checker.returncode == 0 and json.loads(out)["problems"] == [], out + err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert got == _similar(store, 1)

    # a repair that drops a damaged file's vectors, under a reader of the version that still held them
    track_rows = store / "runs" / "1" / "track" / "000.f16"
    data = np.fromfile(track_rows, dtype="<f2").reshape(-1, 40)
    data[-1] += np.float16(1.0)  # the last file's first layer changed on disk: it differs from its checksums
    data.tofile(track_rows)
    reader = _frozen("mess.store.vectors:VectorRows._read:before", "similar", "1", "--json", "--store", str(store))
    try:
        repaired = mess_here("check", "--repair", "--store", str(store))
        assert repaired.returncode == 0 and "dropped the vectors of 1 file" in " ".join(repaired.stdout.split()), (
            repaired.stdout + repaired.stderr)
        got = _resumed_answer(reader)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.communicate()
    assert got == _similar(store, 1)


# ------------------------------------------------------------------ files whose container declares more than they hold

DSP = ["--model", "dsp", "--window", "2", "--max-windows", "2"]


def _sources(wesnoth_tracks: list[Path], folder: Path) -> dict[str, Path]:
    """Whole files of each container whose length a header gives: 6 s of a Wesnoth track as WAV, FLAC and MP3
    (LAME, with its Xing/Info header), and the shortest Wesnoth OGG itself."""
    import av
    import soundfile as sf

    from mess.audio.decode import probe

    ogg = min((p for p in wesnoth_tracks if p.name != "silence.ogg"), key=lambda p: probe(p).duration)
    audio, rate = sf.read(ogg, frames=6 * 44100, dtype="float32")
    out = {"ogg": ogg}
    for ext in ("wav", "flac"):
        out[ext] = folder / f"source.{ext}"
        sf.write(out[ext], audio, rate)
    out["mp3"] = folder / "source.mp3"
    with av.open(str(out["mp3"]), "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio.T), format="fltp", layout="stereo")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return out


def test_a_file_holding_less_than_its_header_declares_waits_while_new_and_is_embedded_with_a_warning_when_old(
        wesnoth_tracks: list[Path], tmp_path: Path) -> None:
    """A download whose writer closes the file between chunks is not seen as being written (no process holds it
    open), and a WAV, MP3 or Ogg file cut half-way reads as a whole, shorter file (libsndfile and FFmpeg both):
    `mess extract` embedded the part (a FLAC failed: 'decoding failed part-way (lost sync)'). A file whose container
    declares more audio than its bytes hold (the WAV's data size, the MP3's Xing byte count, the Ogg stream's last
    page lacking its end-of-stream flag, the FLAC's STREAMINFO total samples) and written in the last minutes is now
    left for the next run, by name, not catalogued; once whole, the next run embeds it (its content: the source's).
    One cut short long ago is embedded as far as it goes, with a warning naming it (a FLAC still fails to decode)."""
    import os
    import time

    from mess.audio.discover import content_hash
    sources = _sources(wesnoth_tracks, tmp_path)
    music, store = tmp_path / "music", tmp_path / "store"
    music.mkdir()
    for ext, source in sources.items():
        data = source.read_bytes()
        (music / f"new.{ext}").write_bytes(data[: len(data) // 2])  # a download paused half-way, the file closed
        old = music / f"old.{ext}"
        old.write_bytes(data[: len(data) // 2])
        os.utime(old, (time.time() - 3600, time.time() - 3600))  # cut short an hour ago
    first = mess_here("extract", str(music), *DSP, "--store", str(store))
    said = " ".join((first.stdout + first.stderr).split())
    assert first.returncode == 3 and "Traceback" not in said, said
    for ext in ("wav", "mp3", "ogg", "flac"):
        assert f"new.{ext}: incomplete:" in said and "run the command again once it is whole" in said, said
    for ext in ("wav", "mp3", "ogg"):
        assert f"old.{ext}: cut short: " in said and "embedded as far as it goes" in said, said
    assert "old.flac: decoding failed part-way" in said, said  # as before: its frames carry checksums
    with closing(FeatureStore(store, readonly=True)) as fs:
        run = fs.run("dsp")
        embedded = {Path(t.path).name: t for t in fs.tracks(run)}
    assert sorted(embedded) == ["old.mp3", "old.ogg", "old.wav"]
    import soundfile as sf

    held = sf.info(music / "old.wav").duration  # what libsndfile reads of the cut WAV
    assert embedded["old.wav"].duration is not None and abs(embedded["old.wav"].duration - held) < 0.05

    for ext, source in sources.items():
        data = source.read_bytes()
        with open(music / f"new.{ext}", "ab") as f:  # the download goes on and ends
            f.write(data[len(data) // 2:])
    again = mess_here("extract", str(music), *DSP, "--store", str(store))
    said = " ".join((again.stdout + again.stderr).split())
    assert again.returncode == 3 and "4 embedded, 3 unchanged (skipped), 1 failed" in said, said  # old.flac again
    with closing(FeatureStore(store, readonly=True)) as fs:
        hashes = {Path(t.path).name: t.content_hash for t in fs.tracks(fs.run("dsp"))}
    for ext, source in sources.items():
        assert hashes[f"new.{ext}"] == content_hash(source)
