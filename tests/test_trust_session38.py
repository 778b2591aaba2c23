"""Trust leftovers (session 38): a JSON body trickling into a real server is cut off as an upload is; a file's
warnings name its whole path, grouped right also for a path holding ': '; the rows a reclaim killed with SIGKILL
left past the catalog's last are cut by the next extract; `--prune` forgets a recorded extraction folder gone with its
tracks; a track id below 1 is refused saying where ids start (notes/trust_session38.md)."""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import soundfile as sf
from clustered_store import clustered_store
from fastapi.testclient import TestClient
from ports import served_at
from test_store_redteam import _frozen, _killed

from conftest import mess_here
from mess.audio.windows import WindowPolicy
from mess.cli.extract import _grouped
from mess.extract.prepare import decode_windows, inspect_file
from mess.serve.app import create_app
from mess.store import FeatureStore

# `mess serve` with the slow-body grace cut to half a second (30 s in use): a test waits that long, not 30 s
_SERVE = "import sys; import mess.serve.uploads as u; u.BODY_GRACE = 0.5; from mess.cli.main import main; main()"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("slow-body")
    clustered_store(root / "store", 6, 4, 2, seed=0)[0].close()
    proc = subprocess.Popen([sys.executable, "-c", _SERVE, "serve", "--store", str(root / "store"), "--port", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield served_at(proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _trickled(base: str, head: str, body: bytes, within: float = 10.0) -> bytes:
    """What the server answers a request whose ``body`` comes one byte each 0.2 s (b"" if nothing within
    ``within`` seconds, less than the whole body takes): a slow or hostile client."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(f"{head}\r\nHost: {host}:{port}\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        deadline = time.monotonic() + within
        sent = 0
        while time.monotonic() < deadline:
            if select.select([conn], [], [], 0.2)[0]:
                return _answer(conn)
            if sent < len(body):
                conn.sendall(body[sent:sent + 1])
                sent += 1
    return b""


def _answer(conn: socket.socket) -> bytes:
    """The server's response: its head and as many bytes as its Content-Length says (or what came before it closed
    the connection or said nothing for 5 s)."""
    conn.settimeout(5.0)
    got = b""
    while b"\r\n\r\n" not in got or len(got.partition(b"\r\n\r\n")[2]) < _length(got):
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        got += chunk
    return got


def _length(response: bytes) -> int:
    """The Content-Length a response's head declares (0 without one)."""
    for line in response.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_a_json_body_trickling_in_is_cut_off_as_an_upload_is(server: str) -> None:
    """POST /api/artists/similar read its body with a reader of its own, without the uploads' rate rule: a client
    sending a byte now and then held the request as long as it liked (the answer came only once the body was
    whole)."""
    body = b'{"tags": {"A0": ["ambient"]}}' + b" " * 40
    answer = _trickled(server, "POST /api/artists/similar?name=A0&hybrid=true HTTP/1.1\r\nContent-Type: "
                               "application/json", body)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    upload = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n' + b"\0" * 40
    said = _trickled(server, "POST /api/similar/upload HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=b",
                     upload)
    assert said.startswith(b"HTTP/1.1 408 "), said
    assert (b'"detail":"the body came in too slowly (the body must arrive at 16 KiB/s or more after 0.5 s)"' in answer
            and b'"detail":"the upload came in too slowly (the body must arrive at 16 KiB/s or more after 0.5 s)"'
            in said), (answer, said)


def test_a_files_warnings_name_its_whole_path_and_group_by_reason_whatever_the_path_holds(
        wesnoth_tracks: list[Path], tmp_path: Path) -> None:
    """The low-rate warning named a file by its name alone ('01 Intro.wav: sampled at 4000 Hz ...'), where every
    failure names the whole path: in a library of many '01 Intro.wav' it did not say which. Grouped by reason, a path
    holding ': ' (a folder 'Live: Paris', a file 'a.wav: b.wav') still counts as one file of that reason."""
    rate = 4000
    audio = sf.read(wesnoth_tracks[0], start=30 * 44100, frames=2 * rate, dtype="float32")[0]  # written at 4 kHz
    paths = [tmp_path / folder / name for folder, name in (("A", "01 Intro.wav"), ("B", "01 Intro.wav"),
                                                           ("Live: Paris", "01 Intro.wav"), ("C", "a.wav: b.wav"))]
    warnings = []
    for path in paths:
        path.parent.mkdir(exist_ok=True)
        sf.write(path, audio, rate)
        warnings += decode_windows(inspect_file(path), 16000, WindowPolicy(5.0, 2)).warnings
    reason = f"sampled at {rate} Hz, below half the model's 16000 Hz: it hears nothing above {rate / 2:g} Hz, so its " \
             "vectors say little"
    assert warnings == [f"{path}: {reason}" for path in paths]
    assert _grouped(warnings) == [f"4 files ({paths[0]}, {paths[1]}, {paths[2]} and 1 more): {reason}"]
    assert _grouped(warnings[2:]) == warnings[2:]  # two of a reason: a line each, whole


GC = ["--model", "dsp", "--window", "1", "--max-windows", "64"]  # dsp: 80-byte rows, a row per second of audio


def _row_files(store: Path) -> dict[str, tuple[int, int]]:
    """Each row file's bytes, and the bytes of the rows the catalog references there."""
    with closing(FeatureStore(store, readonly=True)) as fs:
        run = fs.run("dsp")
        rows = dict(zip(("track", "segment"), fs.catalog_rows(run), strict=True))
        return {f"{level}/{layer}": (fs.row_file(run, level, layer).path.stat().st_size,
                                     rows[level] * run.layer_dims[layer] * 2)
                for level in rows for layer in range(len(run.layer_names))}


def test_rows_a_killed_reclaim_left_past_the_catalog_are_cut_by_the_next_extract(wesnoth_tracks: list[Path],
                                                                                 tmp_path: Path) -> None:
    """`mess check --reclaim` killed (-9) once it copied one layer's rows past the catalog's last left them there:
    `mess check` warned of orphan-rows after every later command (an extract writes at the catalog's last row and
    cut nothing; only `--repair` or another reclaim did). The next `mess extract`, with nothing new to embed, now
    cuts them, and every row file is as long as the rows the catalog references."""
    music, store = tmp_path / "music", tmp_path / "store"
    music.mkdir()
    by_name = {p.name: p for p in wesnoth_tracks}
    for name, gain in (("a", 1.0), ("b", 1.0), ("a", 0.5)):  # a, b, then a edited: a's first content is old
        audio, rate = sf.read(by_name[f"{'battle' if name == 'a' else 'sad'}.ogg"], start=20 * 44100,
                              frames=3 * 44100, dtype="float32")
        sf.write(music / f"{name}.wav", audio * gain, rate)
        assert mess_here("extract", str(music), *GC, "--store", str(store)).returncode == 0
    _killed(_frozen("mess.store.arrays:RowFile.copy_rows:after", "check", "--reclaim", "--store", str(store)))
    report = json.loads(mess_here("check", "--json", "--store", str(store)).stdout)
    assert report["ok"] and {p["kind"] for p in report["problems"]} == {"orphan-rows"}, report
    assert any(size > want for size, want in _row_files(store).values())
    said = " ".join(mess_here("check", "--store", str(store)).stdout.split())
    assert said.endswith("whole, rows past the catalog's last (above): the next `mess extract` or `mess check "
                         "--repair` cuts them"), said
    again = mess_here("extract", str(music), *GC, "--store", str(store))
    assert again.returncode == 0 and "0 embedded, 2 unchanged" in again.stderr, again.stderr
    report = json.loads(mess_here("check", "--json", "--store", str(store)).stdout)
    assert report["ok"] and report["problems"] == [], report
    assert all(size == want for size, want in _row_files(store).values()), _row_files(store)


def test_prune_forgets_a_recorded_extraction_folder_gone_with_its_tracks(wesnoth_tracks: list[Path],
                                                                         tmp_path: Path) -> None:
    """The folders given to `mess extract` were recorded (table extract_roots) and never forgotten: one deleted, its
    tracks pruned, stayed a root of the collection forever. Now `--prune` forgets it, once no catalogued track is
    under it; while its tracks are still catalogued (not pruned: a disk not mounted now), it is kept."""
    music = tmp_path / "music"
    for folder, source in (("A", "battle.ogg"), ("B", "sad.ogg")):
        (music / folder).mkdir(parents=True)
        audio, rate = sf.read(next(p for p in wesnoth_tracks if p.name == source), start=20 * 44100,
                              frames=3 * 44100, dtype="float32")
        sf.write(music / folder / f"{folder}.wav", audio, rate)
    store = str(tmp_path / "store")
    a, b = (os.path.realpath(music / f) for f in "AB")

    def roots() -> list[str]:
        with closing(FeatureStore(store, readonly=True)) as fs:
            return fs.extract_roots()

    assert mess_here("extract", a, b, *GC, "--store", store).returncode == 0
    assert roots() == [a, b]
    shutil.rmtree(b)
    assert mess_here("extract", a, "--prune", *GC, "--store", store).returncode == 0
    assert roots() == [a, b]  # its track is still catalogued
    pruned = mess_here("extract", a, b, "--prune", *GC, "--store", store)
    assert pruned.returncode == 0 and "1 removed" in " ".join(pruned.stderr.split()), pruned.stderr
    assert roots() == [a]


def test_a_track_id_below_1_is_refused_saying_where_ids_start(tmp_path: Path) -> None:
    """`/api/tracks/-1` answered "use a whole number" (-1 is one) and `/api/tracks/0` "unknown track id 0"; `mess
    similar -- -1` offered tracks whose names hold a 1. Ids are whole numbers from 1, as both now say."""
    clustered_store(tmp_path / "store", 3, 4, 1, seed=0)[0].close()
    client = TestClient(create_app(tmp_path / "store"), base_url="http://127.0.0.1")
    for url, name, value in (("/api/tracks/-1", "track_id", "-1"), ("/api/tracks/0/similar", "track_id", "0"),
                             ("/api/playlists/radio?seed=1&seed=0", "seed", "0"),
                             ("/api/artists/similar?track=-1", "track", "-1")):
        answer = client.get(url)
        assert answer.status_code == 422 and answer.json()["detail"].startswith(
            f"invalid {name} '{value}'; use a whole number of 1 or more"), (url, answer.text)
    assert client.get("/api/tracks/1").status_code == 200
    for ref in ("0", "-1"):
        said = mess_here("similar", "--store", str(tmp_path / "store"), "--", ref)
        assert said.returncode == 1 and said.stderr.startswith(f"error: unknown track '{ref}' (track ids start at 1)")
