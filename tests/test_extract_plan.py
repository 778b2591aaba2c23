"""The progress bar's total: the audio a run will analyse in the files it will embed, read in a decode worker;
and what C decoders print about a damaged file, kept off the terminal."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from queue import SimpleQueue

import numpy as np
import pytest
import soundfile as sf

from mess.audio.decode import AudioError, probe
from mess.audio.windows import WindowPolicy
from mess.extract import plan
from mess.extract.child import Child
from mess.extract.pipeline import DECODE_WORKER, extract
from mess.extract.plan import plan_in_background, to_embed
from mess.models.dsp import DspModel
from mess.store import FeatureStore

POLICY = WindowPolicy(4.0, 3)
SR = 22050


def _tone(path: Path, seconds: float, f0: float) -> Path:
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, 0.3 * np.sin(2 * np.pi * f0 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t)), SR)
    return path


def _planned(paths: list[Path]) -> float:
    """The total the bar is given, waiting for the worker."""
    got: list[float] = []
    done = threading.Event()
    decoders: SimpleQueue[Child] = SimpleQueue()
    decoders.put(child := Child(DECODE_WORKER))
    stop = plan_in_background(decoders, paths, POLICY, lambda seconds: (got.append(seconds), done.set()))
    try:
        assert done.wait(120), "the plan never reported"
    finally:
        stop()
        child.stop()
    return got[0]


def test_a_resumed_run_plans_only_the_audio_it_will_embed(tmp_path: Path) -> None:
    """The total counted every file's seconds: resuming a library mostly embedded, the bar ended near its start and
    the ETA was many times too long."""
    music = tmp_path / "music"
    music.mkdir()
    first = [_tone(music / f"t{i}.wav", 3.0 + 4 * i, 220.0 * (i + 1)) for i in range(3)]
    store = FeatureStore(tmp_path / "store")
    model = DspModel()
    assert to_embed(store, first, model.info, POLICY) == first  # no run yet: everything
    extract(store, first, model, POLICY)
    later = _tone(music / "new.wav", 9.0, 330.0)
    time.sleep(0.01)
    changed = _tone(first[1], 20.0, 440.0)  # rewritten: longer, so its stamp changes
    todo = to_embed(store, [*first, later], model.info, POLICY)
    assert todo == [changed, later]
    want = sum(POLICY.analysed_seconds(sf.info(p).duration) for p in todo)  # the headers, read here
    assert _planned(todo) == pytest.approx(want) and want < _planned([*first, later])
    assert to_embed(store, [*first, later], model.info, WindowPolicy(2.0, 3)) == [*first, later]  # another run
    first[0].unlink()  # embedded, then gone: the run will say so, so it is not skipped
    assert to_embed(store, [first[0], first[2]], model.info, POLICY) == [first[0]]
    assert to_embed(store, [first[2], first[0]], model.info, POLICY) == [first[0]]
    store.close()


def test_the_runs_decoders_read_the_total(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The headers were read by a process started for them alone: one more process start per `mess extract`."""
    music = tmp_path / "music"
    music.mkdir()
    paths = [_tone(music / f"t{i}.wav", 3.0 + 2 * i, 220.0 * (i + 1)) for i in range(3)]
    started = []
    connect = Child.connect

    def counted(child: Child) -> tuple:
        connection = connect(child)
        started.append(connection[2])
        return connection

    monkeypatch.setattr(Child, "connect", counted)
    totals: list[float] = []
    store = FeatureStore(tmp_path / "store")
    summary = extract(store, paths, DspModel(), POLICY, workers=1, on_total=totals.append)
    store.close()
    assert summary.done == 3 and started.count(True) == 1  # one decoder: the headers first, then the files
    assert totals == [pytest.approx(sum(POLICY.analysed_seconds(sf.info(p).duration) for p in paths))]


def test_a_file_no_decoder_reads_counts_nothing_and_prints_nothing(tmp_path: Path, capfd: pytest.CaptureFixture
                                                                    ) -> None:
    """Headers were read in the run's own process, where libmpg123 printed 'Note: Illegal Audio-MPEG-Header ...'
    over the progress bar for a damaged MP3 (and a decoder crash would have ended the run)."""
    junk = tmp_path / "junk.mp3"  # libmpg123 finds a few seconds of frames in it, and complains about the rest
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    cut = tmp_path / "cut.ogg"  # no decoder reads a header here
    cut.write_bytes(b"OggS\x00\x02")
    good = _tone(tmp_path / "good.wav", 5.0, 220.0)
    planned = _planned([junk, cut, good])
    assert _planned([]) == 0.0
    assert "Note:" not in capfd.readouterr().err
    want = POLICY.analysed_seconds(sf.info(good).duration)
    with pytest.raises(AudioError):
        probe(cut)
    try:
        want += POLICY.analysed_seconds(probe(junk).duration)  # read here, in this process: chatter and all
    except AudioError:
        pass
    assert planned == pytest.approx(want) and "Note:" in capfd.readouterr().err


def test_a_damaged_mp3_fails_in_words_and_the_terminal_stays_clean(tmp_path: Path) -> None:
    """`mess extract` over a damaged MP3 printed libmpg123's notes and 'cannot decode (InvalidDataError: [Errno
    1094995529] Invalid data found when processing input: '/path/junk.mp3')'."""
    music = tmp_path / "music"
    music.mkdir()
    (music / "junk.mp3").write_bytes(np.random.default_rng(1).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    (music / "cut.ogg").write_bytes(b"OggS\x00\x02")
    _tone(music / "good.wav", 4.0, 220.0)
    done = subprocess.run([sys.executable, "-m", "mess.cli", "extract", str(music), "--model", "dsp", "--store",
                           str(tmp_path / "store")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 3, done.stderr  # 3: files failed
    shown = done.stdout + done.stderr
    assert "Note:" not in shown and "Errno" not in shown and "Error:" not in shown, shown
    assert f"failed: {music / 'junk.mp3'}: cannot decode (invalid data found when processing input: damaged, or " \
           "not audio)" in shown, shown
    assert f"failed: {music / 'cut.ogg'}: cannot decode (end of file before any audio: cut short?)" in shown, shown


def test_the_plan_adds_up_its_batches_and_a_stop_after_it_leaves_the_worker_alive(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch
                                                                                 ) -> None:
    """Headers are read a batch at a time; the worker that read them goes on decoding files for the run, so a stop
    once the total is given must not kill it."""
    monkeypatch.setattr(plan, "PLAN_BATCH", 2)
    paths = [_tone(tmp_path / f"t{i}.wav", 1.0 + 2 * i, 220.0 * (i + 1)) for i in range(5)]  # batches of 2, 2, 1
    decoders: SimpleQueue[Child] = SimpleQueue()
    decoders.put(child := Child(DECODE_WORKER))
    got: list[float] = []
    done = threading.Event()
    stop = plan_in_background(decoders, paths, POLICY, lambda seconds: (got.append(seconds), done.set()))
    try:
        assert done.wait(120), "the plan never reported"
        pid = child.pid
        stop()
        assert got == [pytest.approx(sum(POLICY.analysed_seconds(sf.info(p).duration) for p in paths))]
        assert decoders.get_nowait() is child and decoders.empty()
        assert pid is not None and not child.connect()[2]  # the same process, not started again ...
        first = POLICY.analysed_seconds(sf.info(paths[0]).duration)
        assert child.call(("plan", paths[:1], POLICY), 60) == ("ok", pytest.approx(first))
        assert child.pid == pid  # ... and it still answers
    finally:
        child.stop()


def test_a_stop_kills_the_worker_stuck_on_a_file_and_hands_it_back(tmp_path: Path, capfd: pytest.CaptureFixture
                                                                   ) -> None:
    """A header read that hangs (here a FIFO no one writes) must not hold the run's end for the plan's timeout: the
    stop kills the worker reading it, the plan says nothing, and the worker is back for the next file."""
    fifo = tmp_path / "stuck.wav"
    os.mkfifo(fifo)
    decoders: SimpleQueue[Child] = SimpleQueue()
    decoders.put(child := Child(DECODE_WORKER))
    got: list[float] = []
    stop = plan_in_background(decoders, [fifo, _tone(tmp_path / "good.wav", 2.0, 220.0)], POLICY, got.append)
    try:
        deadline = time.monotonic() + 60
        while child.pid is None and time.monotonic() < deadline:  # started by the plan's first request
            time.sleep(0.05)
        time.sleep(1.0)  # the request is sent and the worker opens the FIFO: it blocks there
        began = time.monotonic()
        stop()
        assert time.monotonic() - began < 30 and got == []
        assert not [t for t in threading.enumerate() if t.name == "mess-plan"]
        assert decoders.get_nowait() is child and decoders.empty()
        assert "Traceback" not in capfd.readouterr().err
    finally:
        child.stop()


def test_a_worker_that_dies_or_fails_gives_no_total_and_no_traceback(tmp_path: Path, capfd: pytest.CaptureFixture,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """No total rather than a wrong one: a worker that died (here one that never starts: no such module) or that
    answers with an error (here a policy it cannot use) ends the plan quietly, its worker handed back."""
    raised: list[type[BaseException]] = []  # what ended the plan's thread, had anything (pytest would only warn)
    monkeypatch.setattr(threading, "excepthook", lambda args: raised.append(args.exc_type))
    good = _tone(tmp_path / "good.wav", 2.0, 220.0)
    for child, policy in ((Child("mess.no_such_worker"), POLICY), (Child(DECODE_WORKER), None)):
        decoders: SimpleQueue[Child] = SimpleQueue()
        decoders.put(child)
        got: list[float] = []
        stop = plan_in_background(decoders, [good], policy, got.append)  # type: ignore[arg-type]
        try:
            deadline = time.monotonic() + 60
            while [t for t in threading.enumerate() if t.name == "mess-plan"] and time.monotonic() < deadline:
                time.sleep(0.05)
            stop()
            assert got == [] and decoders.get_nowait() is child
        finally:
            child.stop()
    err = capfd.readouterr().err
    assert "No module named mess.no_such_worker" in err  # what the worker that never started said
    assert "Exception in thread" not in err and "Traceback" not in err and raised == [], (err, raised)
