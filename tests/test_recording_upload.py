"""An uploaded file's side of the same-recording check is decoded in the server's embedding process, never in the
server's: a real `mess serve` whose own decoder ends the process (as FFmpeg crashing on a file crafted to crash it at
the spans' seeks would) on any file outside its collection still answers a FLAC upload whose MP3 copy is catalogued
with ``same: true``, the evidence `mess similar FILE` gives.

Real audio: 20 s FLAC excerpts of three Wesnoth tracks and an MP3 (128 kb/s) of the first, made with FFmpeg; a dsp
store; the server and its embedding process are real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from ports import served_at

from mess.audio.recording import same_recording
from mess.audio.windows import WindowPolicy
from mess.datasets.copies import read_channels, write_copy
from mess.extract.pipeline import extract
from mess.models.registry import load_model
from mess.store import FeatureStore

SOUNDTRACKS = Path(os.environ.get("MESS_SOUNDTRACKS", "/work/data/soundtracks")) / "wesnoth"
SOURCES = ("transience.ogg", "main_menu.ogg", "revelation.ogg")
EXCERPT = 20.0  # seconds

# `mess serve` with the decoder's entry points ending the process for a file outside the collection's folder
_SERVER = """
import os, sys, typer
from pathlib import Path
from mess.audio import decode
music = Path(os.environ["MESS_TEST_MUSIC"])
def guarded(real):
    def decoder(path, *args, **kwargs):
        if music not in Path(path).parents:
            os.abort()  # as FFmpeg crashing on a file made to crash it
        return real(path, *args, **kwargs)
    return decoder
for name in ("probe", "load_audio", "load_segments", "reduce_audio", "channel_blocks"):
    if hasattr(decode, name):
        setattr(decode, name, guarded(getattr(decode, name)))
from mess.cli.serve import serve_command
app = typer.Typer(); app.command()(serve_command); app(sys.argv[1:])
"""


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(the store, the upload: a FLAC kept out of the collection, its MP3 copy in the collection's folder)."""
    if not SOUNDTRACKS.is_dir():
        pytest.skip(f"{SOUNDTRACKS} is not there")
    root = tmp_path_factory.mktemp("upload")
    music = root / "music"
    music.mkdir()
    made = []
    for i, name in enumerate(SOURCES):
        audio, rate = read_channels(SOUNDTRACKS / name, EXCERPT)
        made.append(write_copy(audio, rate, (root if i == 0 else music) / f"{Path(name).stem}.flac", "flac"))
    audio, rate = read_channels(made[0])
    copy = write_copy(audio, rate, music / "transience copy.mp3", "libmp3lame", bit_rate=128_000)
    with closing(FeatureStore(root / "store")) as store:
        assert not extract(store, sorted(music.iterdir()), load_model("dsp"), WindowPolicy()).failed
    return root / "store", made[0], copy


def test_an_upload_is_compared_without_the_server_decoding_it(library: tuple[Path, Path, Path]) -> None:
    """The upload's answer flags its MP3 copy as the same recording with the score and lag `same_recording` gives for
    the two files, and the server is still running. Before, the server probed and decoded the upload's spans itself:
    its decoder ended it mid-request."""
    store, upload, copy = library
    env = {**os.environ, "MESS_TEST_MUSIC": str(copy.parent), "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, "--store", str(store), "--port", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        base = served_at(proc)
        deadline = time.monotonic() + 120
        while not _answers(base + "/api/health"):
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        try:
            answer = httpx.post(base + "/api/similar/upload", params={"k": 3}, timeout=300,
                                files={"file": (upload.name, upload.read_bytes(), "audio/flac")})
        except httpx.TransportError as exc:
            pytest.fail(f"no answer ({exc}); the server {'ended' if proc.poll() is not None else 'runs'}")
        assert answer.status_code == 200, answer.text
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    got = {r["file"]: r for r in answer.json()["results"]}[copy.name]["same_recording"]
    want = same_recording(upload, copy).to_dict()
    keys = ("same", "score", "lag")
    assert want["same"] and {k: got[k] for k in keys} == {k: want[k] for k in keys}, got


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).is_success
    except httpx.HTTPError:
        return False


def test_an_upload_whose_spans_crash_the_decoder_is_not_compared(library: tuple[Path, Path, Path], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedding process (the real one, its span decoder ending it as a crash of FFmpeg would) dies on the
    upload's spans: the server's side says why, the comparison is "not compared" with that reason, and the next
    upload starts a fresh process."""
    from mess.extract.child import Child
    from mess.serve.uploads import EmbedWorker

    store, upload, copy = library
    (tmp_path / "dying_worker.py").write_text(
        "import os\nfrom mess.serve import embed_worker\n"
        "embed_worker.first_spans = lambda path: os.abort()\nembed_worker.main()\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path]))
    worker = EmbedWorker(timeout=60, start_timeout=120)
    worker._child = Child("dying_worker", own_group=True)
    try:
        spans = worker.spans(upload)
        assert spans.error is not None and "died" in spans.error and str(upload) in spans.error, spans
        assert worker.pid is None and worker.spans(upload) == spans  # a fresh process, dead the same way
    finally:
        worker.close()
    match = same_recording(spans, copy)
    assert not match.same and match.reason == f"not compared: {spans.error}"
