"""Small defects session 33 found and left (notes/fixes_session33.md): each test failed on the code before its fix.
Expected answers come from the files, processes and clocks the tests make, or numpy on the definition."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_serve_api import ARTISTS, serve_collection  # noqa: F401 -- its fixture: 3 tagged artists x 4
from tones import write_tones

from conftest import mess_here
from mess.audio.decode import AudioError, load_audio, load_segments, probe

DSP = ["--model", "dsp", "--window", "4", "--max-windows", "2"]


def _tones(folder: Path, n: int, first: int = 0) -> list[Path]:
    """``n`` 3 s tones at 16 kHz, each at its own pitch."""
    return write_tones(folder, n, seconds=3.0, sr=16000, first=first,
                       wave=lambda i, t: 0.3 * np.sin(2 * np.pi * (220 + 40 * i) * t))


# A writer of the store in a process of its own, as `mess extract` is while it runs: it takes the store's lock
# (naming itself as the extract does), catalogues a file it has not embedded yet when one is given, says "held" and
# keeps the lock until its stdin says "release" (then prints the time it let go) or it is killed.
_WRITER = """
import json, sys, time
from pathlib import Path
from mess.store import FeatureStore
a = json.loads(sys.argv[1])
fs = FeatureStore(Path(a["store"]))
with fs.writing("mess extract"):
    if a.get("catalogue"):
        c = a["catalogue"]
        fs.upsert_track(Path(c["path"]), c["hash"], c["size"], c["mtime"], {"duration": 3.0, "sample_rate": 16000},
                        {})
    print("held", flush=True)
    sys.stdin.readline()
    released = time.time()
print(released, flush=True)
"""


def _writer(store: Path, catalogue: Path | None = None) -> subprocess.Popen[str]:
    """A process holding ``store``'s write lock (see ``_WRITER``), once it says so."""
    args: dict[str, object] = {"store": str(store)}
    if catalogue is not None:
        st = catalogue.stat()
        args["catalogue"] = {"path": str(catalogue), "hash": hashlib.sha256(catalogue.read_bytes()).hexdigest(),
                             "size": st.st_size, "mtime": st.st_mtime}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, json.dumps(args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held", proc.stderr and proc.stderr.read()
    return proc


# 1. a read during an extract said "`mess extract --model M` embeds those on disk" to one whose extract was doing it


def test_a_read_during_an_extract_says_the_extract_is_running_and_a_stale_holder_file_is_no_writer(
        tmp_path: Path) -> None:
    music, store = tmp_path / "music", tmp_path / "store"
    _tones(music, 3)
    assert mess_here("extract", str(music), *DSP, "--store", str(store)).returncode == 0
    (late,) = _tones(tmp_path / "later", 1, first=3)
    writer = _writer(store, catalogue=late)  # catalogued, not yet embedded: what a running extract leaves
    try:
        for command in (["similar", "tone00.wav"], ["export", str(tmp_path / "v.npz")]):
            during = mess_here(*command, "--store", str(store))
            said = " ".join(during.stderr.split())
            assert during.returncode == 0, during.stderr
            assert "1 file has no dsp vectors and was left out: a writer is running on this store" in said, said
            assert f"pid {writer.pid}, mess extract, for" in said and "committed so far" in said, said
            assert "embeds those on disk" not in said, said
    finally:
        os.killpg(writer.pid, signal.SIGKILL)
        writer.wait()
    assert json.loads((store / "write.lock.json").read_text())["pid"] == writer.pid  # left behind by the killed one
    after = " ".join(mess_here("similar", "tone00.wav", "--store", str(store)).stderr.split())
    assert "1 file has no dsp vectors and was left out; `mess check` names them; `mess extract FOLDER --model dsp " \
           f"{' '.join(DSP[2:])}` embeds those on disk" in after, after
    assert "a writer is running" not in after, after


# 2. an extract that waited for the store lock said nothing of the wait


def _seen(log: Path, text: str, seconds: float = 60) -> float:
    """The time ``text`` was first seen in the file ``log`` (polled), failing after ``seconds``."""
    deadline = time.time() + seconds
    while text not in log.read_text():
        assert time.time() < deadline, log.read_text()
        time.sleep(0.02)
    return time.time()


def test_an_extract_that_waited_for_the_lock_says_how_long_and_its_rate_leaves_the_wait_out(tmp_path: Path) -> None:
    music, store, log = tmp_path / "music", tmp_path / "store", tmp_path / "extract.log"
    audio = sum(sf.info(p).duration for p in _tones(music, 2))
    writer = _writer(store)
    try:
        launched = time.time()
        with log.open("w") as err:
            extract = subprocess.Popen([sys.executable, "-m", "mess.cli", "extract", str(music), *DSP, "--store",
                                        str(store)], stdout=subprocess.DEVNULL, stderr=err)
        seen = _seen(log, "waiting for the store lock")
        time.sleep(1.5)
        assert writer.stdin is not None and writer.stdout is not None
        writer.stdin.write("release\n")
        writer.stdin.flush()
        released = float(writer.stdout.readline())
        assert extract.wait(timeout=120) == 0, log.read_text()
        ended = time.time()
    finally:
        os.killpg(writer.pid, signal.SIGKILL)
        writer.wait()
    said = " ".join(log.read_text().split())
    got = re.search(r"in ([\d.]+) s \(([\d.]+) audio-s/s\) after waiting ([\d.]+) s for another writer", said)
    assert got, said
    run, rate, waited = (float(x) for x in got.groups())
    # it waited from before it said so (its glance at the lock) until the lock was let go, polled every 0.5 s
    assert released - seen - 0.05 <= waited <= released - launched + 1.0, (waited, released - seen)
    assert run <= ended - released + 0.05  # the run's time is all after the wait
    assert abs(rate * run - audio) <= 0.05 * (rate + run) + 0.01, (rate, run, audio)  # the rate is over that time


# 3. an MP3 holding only an ID3 tag failed as "cannot decode (... damaged, or not audio)"


def _ogg_pages(data: bytes) -> list[bytes]:
    """The pages of an Ogg stream, split by their headers (RFC 3533: 27 bytes, then the segment table)."""
    pages, at = [], 0
    while at < len(data):
        assert data[at:at + 4] == b"OggS"
        table = data[at + 27:at + 27 + data[at + 26]]
        size = 27 + len(table) + sum(table)
        pages.append(data[at:at + size])
        at += size
    return pages


def test_files_with_no_audio_say_so_in_plain_words(tmp_path: Path) -> None:
    from mutagen.id3 import ID3, TIT2

    music, t = tmp_path / "music", np.arange(32000) / 16000
    music.mkdir()
    full = tmp_path / "full.mp3"  # a real MP3 (libsndfile's encoder) with an ID3v2 tag (mutagen)
    sf.write(full, 0.3 * np.sin(2 * np.pi * 440 * t), 16000, format="MP3")
    tag = ID3()
    tag.add(TIT2(encoding=3, text="no frames"))
    tag.save(full)
    assert load_audio(full, 16000).size > 0  # the whole file decodes
    cut = music / "cut.mp3"
    cut.write_bytes(full.read_bytes()[:ID3(full).size])  # its tag, none of its frames
    empty = music / "empty.mp3"
    empty.write_bytes(b"")
    tag.save(empty)  # mutagen's tag on an empty file
    for path in (cut, empty):
        for read in (probe, lambda p: load_audio(p, 16000), lambda p: load_segments(p, 16000, [0.0], 1.0)):
            with pytest.raises(AudioError) as said:
                read(path)
            assert str(said.value) == f"{path}: no audio in it, only tags"
    sf.write(music / "empty.wav", np.zeros(0, np.float32), 16000)  # a header and no frames
    sf.write(tmp_path / "empty.ogg", np.zeros(0, np.float32), 16000, format="OGG")
    pages = _ogg_pages((tmp_path / "empty.ogg").read_bytes())
    (music / "headers.ogg").write_bytes(b"".join(pages[:2]))  # identification and comment headers, no audio page
    hour_ago = time.time() - 3600  # cut short for good: written just now it would wait as a download in progress
    os.utime(music / "headers.ogg", (hour_ago, hour_ago))
    done = mess_here("extract", str(music), *DSP, "--store", str(tmp_path / "store"))
    said = done.stderr
    assert done.returncode == 3 and "Traceback" not in said and "Errno" not in said, said
    for path in (cut, empty):
        assert f"failed: {path}: no audio in it, only tags" in said, said
    assert "damaged, or not audio" not in said, said
    assert f"failed: {music / 'empty.wav'}: contains no audio samples" in said, said
    assert f"failed: {music / 'headers.ogg'}: cannot decode (end of file before any audio: cut short?)" in said, said


# 4. the re-ranker of no vectors raised numpy's "negative dimensions are not allowed"; a NaN query scored NaN


def test_the_reranker_names_what_is_wrong_with_its_vectors_and_queries() -> None:
    from mess.search.rerank import build_reranker

    rng = np.random.default_rng(3)
    unit = rng.normal(size=(12, 6)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    with pytest.raises(ValueError, match=r"^re-ranking needs vectors \[n, dim\] with n >= 1, not an array of shape "
                                         r"\(0, 6\)$"):
        build_reranker(unit[:0])
    for row, value in ((7, np.nan), (3, -np.inf)):
        bad = unit.copy()
        bad[row, 2] = value
        with pytest.raises(ValueError, match=rf"^re-ranking needs finite vectors: row {row} holds NaN or infinity$"):
            build_reranker(bad)
    reranker = build_reranker(unit)
    query = unit[:2] + 0.1 * rng.normal(size=(2, 6)).astype(np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    scores = reranker.outside(query)
    assert scores.shape == (2, 12) and np.isfinite(scores).all()
    nan = query.copy()
    nan[0, 4] = np.nan
    with pytest.raises(ValueError, match=r"^the outside query holds NaN or infinity: it has no re-ranked scores$"):
        reranker.outside(nan[0])
    nan[1, 0] = np.inf
    nan[0, 4] = query[0, 4]
    with pytest.raises(ValueError, match=r"^outside query 1 holds NaN or infinity"):
        reranker.outside(nan)
    with pytest.raises(ValueError, match=r"^outside queries must be \[m, 6\] \(the collection's dimensions\), not "
                                         r"of shape \(1, 5\)$"):
        reranker.outside(query[0, :5])


# 5. the few-artists UserWarning also came from the server's route (whose JSON says it) and from the library calls that
# say it through on_note, so the suite's output held it 130 times


def test_few_centred_artists_are_said_once_by_whoever_answers_and_warned_of_only_by_the_similarity_api(
        serve_collection: Path) -> None:  # noqa: F811
    from fastapi.testclient import TestClient

    from mess.artists.analysis import ArtistOptions, SpaceChoice, similar_artists
    from mess.artists.profiles import load_artists, load_space
    from mess.artists.similarity import artist_vectors, similarity_matrix, similarity_row
    from mess.serve.app import create_app
    from mess.store import FeatureStore

    said = f"only {len(ARTISTS)} artists: centring on the collection's mean"
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with TestClient(base_url="http://127.0.0.1", app=create_app(serve_collection)) as client:
            answer = client.get("/api/artists/similar", params={"name": "Sine Choir", "layer": "spectral"})
        fs = FeatureStore(serve_collection, readonly=True)
        try:
            similar_artists(fs, "Sine Choir", 2, ArtistOptions(), SpaceChoice(layer="spectral"), on_note=notes.append)
            run = fs.run("dsp")
            artists, space = load_artists(fs, run), load_space(fs, run, layer="spectral")
        finally:
            fs.close()
    assert answer.status_code == 200 and answer.json()["note"].startswith(said), answer.text
    assert sum(n.startswith(said) for n in notes) == 1, notes
    assert [str(w.message) for w in caught if "artists: centring" in str(w.message)] == []
    vectors = artist_vectors(artists, space)  # centred: the API warns its caller, pointing at the caller's line
    for call in (lambda: similarity_matrix(vectors), lambda: similarity_row(vectors, 0, "chamfer")):
        with pytest.warns(UserWarning, match=f"^{said}") as warned:
            call()
        assert len(warned) == 1 and warned[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        similarity_matrix(vectors, warn=False)
        similarity_matrix(artist_vectors(artists, space, center=False))
