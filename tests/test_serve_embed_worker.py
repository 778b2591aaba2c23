"""The upload embedding child (``mess.serve.embed_worker``): its ``serve`` loop in this process over real pipes, and
``python -m mess.serve.embed_worker`` as a process for what its stdin and stdout do."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path

import mutagen.flac
import numpy as np
import pytest
import soundfile as sf

from mess.audio.windows import WindowPolicy
from mess.extract.pipeline import extract
from mess.models.dsp import DspModel
from mess.serve import embed_worker
from mess.serve.embed_protocol import EmbedJob
from mess.serve.uploads import EmbedWorker
from mess.store import FeatureStore

SR = 22050


def _tone(seconds: float, f0: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(int(f0))
    return (0.3 * np.sin(2 * np.pi * f0 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def _without_length(flac: Path, to: Path) -> None:
    """A copy of a FLAC file whose STREAMINFO gives no sample count (0: unknown, as a FLAC written to a pipe)."""
    data = bytearray(flac.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO first: 4-byte header, then 34 bytes
    packed = int.from_bytes(data[18:26], "big")  # rate (20 bits), channels (3), bits (5), samples (36)
    data[18:26] = (packed & ~((1 << 36) - 1)).to_bytes(8, "big")
    to.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tone.flac (5 s, tagged), long.flac (20 s), minutes.flac (91 s) and nolength.flac (long.flac without its
    length in the header), and two stores: tone.flac extracted by `mess extract`'s pipeline with the dsp model and
    the default policy, long.flac with decoding stopped at 6 s."""
    root = tmp_path_factory.mktemp("embed_worker")
    sf.write(root / "tone.flac", _tone(5.0, 440.0), SR)
    tags = mutagen.flac.FLAC(root / "tone.flac")
    tags.update({"artist": "Ann Example", "title": "A tone"})
    tags.save()
    sf.write(root / "long.flac", _tone(20.0, 330.0), SR)
    sf.write(root / "minutes.flac", _tone(91.0, 220.0), SR)
    _without_length(root / "long.flac", root / "nolength.flac")
    for name, paths, policy in (("store", ["tone.flac"], WindowPolicy()),
                                ("store6", ["long.flac"], WindowPolicy(max_decode_seconds=6.0))):
        with closing(FeatureStore(root / name)) as store:
            assert not extract(store, [root / p for p in paths], DspModel(), policy).failed
    return {p.stem: p for p in root.glob("*.flac")} | {"root": root}


def _stored(root: Path) -> tuple[str, list[np.ndarray]]:
    """The content hash and per-layer track vectors of the one track of a store."""
    with closing(FeatureStore(root, readonly=True)) as store:
        run = store.run("dsp")
        (track,) = store.tracks(run)
        return track.content_hash, [store.layer_matrix(run, i)[1][0] for i in range(len(run.layer_dims))]


def _revision() -> str:
    return DspModel().info.revision


def talk(jobs: list[tuple]) -> list[tuple]:
    """Every message ``serve`` sends for ``jobs``, sent at once over real pipes and the inbox closed after them."""
    inbox, to_inbox = Pipe(duplex=False)
    from_outbox, outbox = Pipe(duplex=False)
    server = threading.Thread(target=embed_worker.serve, args=(inbox, outbox), daemon=True)
    server.start()
    for job in jobs:
        to_inbox.send(job)
    to_inbox.close()
    server.join(120)
    assert not server.is_alive()
    outbox.close()
    inbox.close()
    got = []
    while True:
        try:
            got.append(from_outbox.recv())
        except EOFError:
            return got


def _job(path: Path, policy: WindowPolicy | None = None, max_seconds: float = 600.0, name: str = "dsp",
         revision: str | None = None) -> EmbedJob:
    return EmbedJob(str(path), name, revision or _revision(), (policy or WindowPolicy()).to_json(), max_seconds, None)


def test_a_job_is_answered_with_the_vectors_mess_extract_stores(files: dict[str, Path]) -> None:
    """ready, loaded, then the file's content hash, layer vectors (float32, as the pipeline stored them), tags and
    no warnings; a closed inbox ends the loop."""
    messages = talk([_job(files["tone"])])
    assert messages[:2] == [("ready",), ("loaded",)] and len(messages) == 3
    kind, (content_hash, layers, tags, warnings, duration, segments) = messages[2]
    want_hash, want_layers = _stored(files["root"] / "store")
    assert kind == "ok" and content_hash == want_hash and warnings == [] and segments == ()
    assert duration == pytest.approx(sf.info(files["tone"]).duration, abs=0.01)
    assert len(layers) == len(want_layers) and all(v.dtype == np.float32 for v in layers)
    for got, want in zip(layers, want_layers, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)  # the store keeps float16
    assert tags["artist"] == "Ann Example" and tags["title"] == "A tone"


def test_no_job_is_only_ready() -> None:
    assert talk([]) == [("ready",)]


def test_a_model_is_loaded_once_per_name_and_revision(files: dict[str, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Three jobs of one model load it once; a second revision of the name is its own load (refused here: it is
    not the dsp model's revision) and does not evict the first."""
    loads: list[tuple[str, str]] = []
    real = embed_worker.load_run_model

    def counted(name: str, revision: str, source: dict[str, str] | None = None) -> object:
        loads.append((name, revision))
        return real(name, revision, source)

    monkeypatch.setattr(embed_worker, "load_run_model", counted)
    tone = files["tone"]
    messages = talk([_job(tone), _job(tone), _job(tone, revision="file:0123"), _job(tone)])
    assert loads == [("dsp", _revision()), ("dsp", "file:0123")]
    assert [m[0] for m in messages] == ["ready", "loaded", "ok", "loaded", "ok", "error", "loaded", "ok"]
    assert messages[5][1] == "model" and "dsp" in messages[5][2]


def test_a_model_that_cannot_be_loaded_is_a_model_error_and_the_loop_goes_on(files: dict[str, Path],
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown name says which model it was; a loader's fault without words is named by its type; a
    ModelError is passed on as it reads. The next job is served."""
    tone = files["tone"]
    messages = talk([_job(tone, name="no-such-model"), _job(tone)])
    assert messages[1][:2] == ("error", "model") and messages[1][2].startswith("cannot load model no-such-model: ")
    assert [m[0] for m in messages[2:]] == ["loaded", "ok"]

    def broken(name: str, revision: str, source: dict[str, str] | None = None) -> object:
        raise RuntimeError

    monkeypatch.setattr(embed_worker, "load_run_model", broken)
    assert talk([_job(tone)])[1] == ("error", "model", "cannot load model dsp: RuntimeError")


def test_a_file_longer_than_the_limit_is_refused_from_its_header(files: dict[str, Path]) -> None:
    """20 s against a limit of 12 s, 91 s against 60 s: refused, in whole minutes (1.52 is 2), without decoding; at
    a limit of 20 s exactly it is embedded."""
    long, minutes = files["long"], files["minutes"]
    assert sf.info(long).duration == 20.0 and sf.info(minutes).duration == 91.0
    messages = talk([_job(long, max_seconds=12.0), _job(minutes, max_seconds=60.0), _job(long, max_seconds=20.0)])
    assert messages[2] == ("error", "decode", f"{long}: 0 min long; uploads may last at most 0.2 min")
    assert messages[4] == ("error", "decode", f"{minutes}: 2 min long; uploads may last at most 1 min")
    assert messages[5] == ("loaded",) and messages[6][0] == "ok"


def test_a_file_whose_header_gives_no_length_is_decoded_only_up_to_the_limit(files: dict[str, Path]) -> None:
    """nolength.flac (20 s, no length in its header) under a limit of 6 s: its first 6 s are embedded, as the
    pipeline embeds long.flac with decoding stopped at 6 s, with the warning that only its start was analysed."""
    assert sf.info(files["long"]).frames == 20 * SR
    messages = talk([_job(files["nolength"], max_seconds=6.0)])
    kind, (_, layers, _, warnings, _, _) = messages[2]
    assert kind == "ok"
    for got, want in zip(layers, _stored(files["root"] / "store6")[1], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    assert len(warnings) == 1 and "only the start is used" in warnings[0], warnings


def test_a_file_that_cannot_be_decoded_is_its_own_error(files: dict[str, Path], tmp_path: Path) -> None:
    """Bytes that are no audio (a RIFF header the probe passes; text no reader knows, so no header to read the
    length from, under a limit below a second: decoding says why, as `mess extract` records it) and a file gone:
    each a decode error naming the file; the next job is served."""
    junk, text = tmp_path / "junk.flac", tmp_path / "text.wav"
    junk.write_bytes(b"RIFF not really audio" * 50)
    text.write_bytes(b"hello world, not audio\n" * 40)
    with closing(FeatureStore(tmp_path / "store")) as store:
        extract(store, [text], DspModel(), WindowPolicy())
        ((_, reason),) = store.failures(store.run("dsp"))
    messages = talk([_job(junk), _job(text, max_seconds=0.5), _job(tmp_path / "gone.flac"), _job(files["tone"])])
    assert [m[:2] for m in messages[2:7:2]] == [("error", "decode")] * 3
    assert str(junk) in messages[2][2] and "gone.flac" in messages[6][2]
    assert messages[4][2] == reason and reason.startswith(f"{text}: ")
    assert messages[-1][0] == "ok"


def test_a_fault_in_one_upload_is_that_uploads_error(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A tag reader that fails, and an embedding fault without words (named by its type): decode errors of those
    uploads, the loop goes on."""
    faults = [ValueError("bad tag block"), None]

    def tags(path: Path) -> dict[str, str | None]:
        fault = faults.pop(0)
        if fault is not None:
            raise fault
        raise RuntimeError

    monkeypatch.setattr(embed_worker, "read_tags", tags)
    messages = talk([_job(files["tone"]), _job(files["tone"])])
    assert messages[2] == ("error", "decode", "bad tag block") and messages[4] == ("error", "decode", "RuntimeError")


# the worker as `python -m mess.serve.embed_worker` runs it, but whose model loading first writes to fd 1, as a native
# library printing on the way would
NOISY = ("import os; from mess.serve import embed_worker as w; real = w.load_run_model; "
         "w.load_run_model = lambda *a: (os.write(1, b'noise from a library\\n'), real(*a))[1]; w.main()")


def _process(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)


@pytest.fixture
def child(request: pytest.FixtureRequest) -> Iterator[subprocess.Popen]:
    proc = _process(*getattr(request, "param", ("-m", "mess.serve.embed_worker")))
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def _message(recv: Connection) -> tuple:
    """The next message, or OSError at once when what came is not a message of up to 1 MiB (print on the pipe)."""
    assert recv.poll(60)
    return pickle.loads(recv.recv_bytes(1 << 20))


@pytest.mark.parametrize("child", [("-c", NOISY)], indirect=True)
def test_the_process_answers_on_its_stdout_and_ends_quietly_when_its_stdin_closes(files: dict[str, Path],
                                                                                   child: subprocess.Popen) -> None:
    """A job over the process's stdin is answered on its stdout, the framing intact though the model's loading
    wrote to fd 1 (that went to stderr); closing stdin ends it with status 0 and nothing else on stderr."""
    assert child.stdin is not None and child.stdout is not None
    send = Connection(os.dup(child.stdin.fileno()), readable=False)
    recv = Connection(os.dup(child.stdout.fileno()), writable=False)
    assert _message(recv) == ("ready",)
    send.send(_job(files["tone"]))
    assert _message(recv) == ("loaded",)
    kind, embedded = _message(recv)
    assert kind == "ok" and embedded.content_hash == _stored(files["root"] / "store")[0]
    send.close()
    child.stdin.close()
    assert child.wait(60) == 0
    recv.close()
    assert child.stderr is not None and child.stderr.read() == b"noise from a library\n"


def test_the_process_ends_quietly_when_the_server_stopped_listening(child: subprocess.Popen) -> None:
    """The server gone before the child said ready (its stdout closed): status 0, no traceback."""
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()
    assert child.wait(60) == 0
    assert child.stderr.read() == b""


def test_a_worker_killed_while_idle_is_replaced_and_serves_two_uploads_at_once(files: dict[str, Path]) -> None:
    """kill -9 of the idle child between uploads: the next two, sent at the same time from two threads, start one
    fresh child and both get the file's vectors (one waits for the other)."""
    with closing(FeatureStore(files["root"] / "store", readonly=True)) as store:
        run = store.run("dsp")
    want = _stored(files["root"] / "store")[0]
    worker = EmbedWorker(timeout=120)
    try:
        assert worker.embed(files["tone"], run, "tone.flac").content_hash == want
        first = worker.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        while worker.pid is not None:
            threading.Event().wait(0.05)
        answers: list[str] = []
        senders = [threading.Thread(target=lambda: answers.append(
            worker.embed(files["tone"], run, "tone.flac").content_hash)) for _ in range(2)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(120)
        assert answers == [want, want] and worker.pid not in (None, first)
    finally:
        worker.close()
    assert worker.pid is None


def test_a_module_in_the_server_s_working_folder_does_not_replace_the_worker_s(
        files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`mess serve` run from a folder holding a concurrent.py (or random.py, email.py: a user's scripts) started its
    worker as `python -m`, which puts that folder first on the module path: the worker imported the folder's file for
    the standard library's and died, and every upload was a 503. The folder is not on the worker's path now."""
    (tmp_path / "concurrent.py").write_text("raise SystemExit('the folder\\'s concurrent.py was imported')\n")
    monkeypatch.chdir(tmp_path)
    worker = EmbedWorker(timeout=120)
    try:
        with closing(FeatureStore(files["root"] / "store", readonly=True)) as store:
            run = store.run("dsp")
        embedded = worker.embed(files["tone"], run, "tone.flac")
    finally:
        worker.close()
    assert embedded.content_hash == _stored(files["root"] / "store")[0]
