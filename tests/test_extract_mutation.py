"""In-process tests of the extraction core (prepare, child, decode_worker, pipeline), each fast enough to mutate
against. Audio is written in the test (float WAV/FLAC at the model's rate, so the decoded samples are the written
ones); expected answers come from the fixture's geometry and numpy."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from processes import decoders

from mess.audio.decode import AudioError
from mess.audio.windows import WindowPolicy
from mess.extract.prepare import FileRecord, decode_windows, describe, inspect_file, planned_seconds

SR = 16000


def _tone(seconds: float, hz: float = 440.0, amp: float = 0.3, sr: int = SR) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _wav(path: Path, audio: np.ndarray, sr: int = SR) -> Path:
    sf.write(path, audio, sr, subtype="FLOAT")
    return path


def _record(path: Path, **info: object) -> FileRecord:
    """A record of ``path`` as inspect_file makes it, with the header's fields replaced by ``info``."""
    record = inspect_file(path)
    record.info = {**record.info, **info}
    return record


# ---------------------------------------------------------------- inspect_file


def test_inspect_file_stats_probes_and_reuses_a_known_hash_only_for_an_unchanged_stamp(tmp_path: Path) -> None:
    path = _wav(tmp_path / "a.wav", _tone(2.5))
    stat = path.stat()
    record = inspect_file(path)
    assert (record.path, record.size, record.mtime) == (path, stat.st_size, stat.st_mtime)
    assert record.info == {"duration": pytest.approx(2.5), "sample_rate": SR, "channels": 1}
    assert record.stamp == f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}:{stat.st_ctime_ns}"
    assert len(record.content_hash) == 32 and record.content_hash != "f" * 32
    assert inspect_file(path, ("f" * 32, record.stamp)).content_hash == "f" * 32  # the stamp matches: reused
    assert inspect_file(path, ("f" * 32, "1:2:3:4")).content_hash == record.content_hash  # it does not: hashed


def test_a_file_written_while_it_is_hashed_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hash must be of the file the stamp describes: a writer that changes the file while it is hashed (here
    right after the real hash is taken) makes the record a lie."""
    from mess.audio.discover import content_hash
    from mess.extract import prepare

    path = _wav(tmp_path / "a.wav", _tone(2.0))

    def hash_then_write(p: Path) -> str:
        digest = content_hash(p)
        _wav(p, _tone(3.0))
        return digest

    monkeypatch.setattr(prepare, "content_hash", hash_then_write)
    with pytest.raises(AudioError, match=r"a\.wav: the file changed while it was being read"):
        inspect_file(path)


def test_inspect_file_of_what_no_decoder_reads_has_no_header_fields(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_bytes(b"not audio at all\n" * 10)
    record = inspect_file(path)
    assert record.info == {} and record.size == 170


# ---------------------------------------------------------------- decode_windows: samples and windows


def test_a_file_of_one_window_is_one_window_of_its_samples(tmp_path: Path) -> None:
    audio = _tone(2.0)
    windows = decode_windows(inspect_file(_wav(tmp_path / "a.wav", audio)), SR, WindowPolicy(5.0, 4))
    assert windows.audio.shape == (1, audio.size) and windows.starts.tolist() == [0.0]
    np.testing.assert_allclose(windows.audio[0], audio, atol=1e-6)
    assert windows.warnings == [] and windows.duration is None


def test_a_long_file_is_read_window_by_window_at_evenly_spaced_starts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    audio = (0.2 * rng.standard_normal(SR * 7)).astype(np.float32)
    windows = decode_windows(inspect_file(_wav(tmp_path / "a.wav", audio)), SR, WindowPolicy(2.0, 3))
    assert windows.starts.tolist() == pytest.approx([0.0, 2.5, 5.0])  # linspace(0, 7 - 2, 3)
    for start, got in zip(windows.starts, windows.audio, strict=True):
        i = int(round(start * SR))
        np.testing.assert_allclose(got, audio[i : i + 2 * SR], atol=1e-5)
    assert windows.warnings == [] and windows.duration is None


def test_a_header_claiming_more_than_the_file_holds_falls_back_to_the_whole_decode(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Seeks past the end fail: the file is decoded whole, its decoded length reported."""
    audio = _tone(3.0)
    record = _record(_wav(tmp_path / "a.wav", audio), duration=60.0)
    with caplog.at_level("INFO", logger="mess.extract.prepare"):
        windows = decode_windows(record, SR, WindowPolicy(2.0, 2))
    assert [r.getMessage().endswith("; decoding the whole file") for r in caplog.records] == [True]
    assert windows.starts.tolist() == [0.0, 1.0]  # the policy's windows over 3 s
    np.testing.assert_allclose(windows.audio[1], audio[SR:], atol=1e-6)
    assert windows.duration == pytest.approx(3.0)


def test_windows_are_sought_over_the_headers_length(tmp_path: Path) -> None:
    """Within the tolerance a header's length is trusted: the windows spread over it, read by seeking (a whole
    decode would spread them over the 3 s decoded)."""
    audio = _tone(3.0, hz=3.0)  # its samples tell where each window starts
    record = _record(_wav(tmp_path / "a.wav", audio), duration=2.8)
    windows = decode_windows(record, SR, WindowPolicy(2.0, 2))
    assert windows.starts.tolist() == pytest.approx([0.0, 0.8])
    np.testing.assert_allclose(windows.audio[1], audio[int(0.8 * SR) : int(2.8 * SR)], atol=1e-5)
    assert windows.duration is None


def test_a_file_without_a_header_length_is_decoded_whole_and_its_length_reported(tmp_path: Path) -> None:
    """(as a FLAC written to a pipe)"""
    record = _record(_wav(tmp_path / "a.wav", _tone(2.0)))
    record.info = {}
    windows = decode_windows(record, SR, WindowPolicy(0.5, 4, 0.1))
    assert windows.starts.tolist() == pytest.approx([0.0, 0.5, 1.0, 1.5])
    assert windows.duration == pytest.approx(2.0)


@pytest.mark.parametrize(("claimed", "reported"), [(3.4, None), (3.5, None), (3.6, 3.0), (2.4, 3.0), (2.5, None),
                                                   (2.6, None)])
def test_the_decoded_length_replaces_the_headers_only_beyond_the_tolerance(tmp_path: Path, claimed: float,
                                                                          reported: float | None) -> None:
    record = _record(_wav(tmp_path / "a.wav", _tone(3.0)), duration=claimed)
    windows = decode_windows(record, SR, WindowPolicy(10.0, 2))
    assert windows.duration == (pytest.approx(reported) if reported is not None else None)


def test_a_file_past_the_decoding_limit_warns_and_keeps_its_header_length(tmp_path: Path) -> None:
    record = _record(_wav(tmp_path / "long.wav", _tone(3.0)), duration=9.0)  # decoded whole: 3 s <= window
    windows = decode_windows(record, SR, WindowPolicy(10.0, 2, max_decode_seconds=2.0))
    assert windows.warnings == [f"{tmp_path / 'long.wav'}: longer than 2 s, only the start is used"]
    assert windows.audio.shape == (1, 2 * SR) and windows.duration is None


def test_a_file_exactly_at_the_decoding_limit_is_warned_about_seeked_or_whole(tmp_path: Path) -> None:
    path = _wav(tmp_path / "at.wav", _tone(4.0))
    whole = decode_windows(inspect_file(path), SR, WindowPolicy(10.0, 2, max_decode_seconds=4.0))
    seeked = decode_windows(inspect_file(path), SR, WindowPolicy(1.0, 2, max_decode_seconds=4.0))
    below = decode_windows(inspect_file(path), SR, WindowPolicy(1.0, 2, max_decode_seconds=4.5))
    assert whole.warnings == seeked.warnings == [f"{path}: longer than 4 s, only the start is used"]
    assert below.warnings == []
    assert seeked.starts.tolist() == [0.0, 3.0]


def test_an_empty_file_and_a_short_one_are_refused_naming_them(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.touch()
    with pytest.raises(AudioError, match=r"^.*empty\.wav: empty file \(0 bytes\)$"):
        decode_windows(inspect_file(empty), SR, WindowPolicy(2.0, 2))
    short = _wav(tmp_path / "short.wav", _tone(1.0)[:-1])
    with pytest.raises(AudioError, match=r"short\.wav: too short \(0\.99 s; the minimum is 1\.00 s\)$"):
        decode_windows(inspect_file(short), SR, WindowPolicy(2.0, 2))
    exact = _wav(tmp_path / "exact.wav", _tone(1.0))
    assert decode_windows(inspect_file(exact), SR, WindowPolicy(2.0, 2)).audio.shape == (1, SR)


# ---------------------------------------------------------------- decode_windows: the file's band


@pytest.mark.parametrize(("rate", "band", "said"), [
    (7999, 0.0, "sampled at 7999 Hz, below half the model's 16000 Hz: it hears nothing above 3999.5 Hz, so its "
                "vectors say little"),
    (8000, 0.0, None),
    (1, 0.0, "sampled at 1 Hz, below half the model's 16000 Hz: it hears nothing above 0.5 Hz, so its vectors say "
             "little"),
    (12000, 16000.0, "sampled at 12000 Hz, it holds nothing above 6000 Hz of the 16000 Hz the model reads, so its "
                     "vectors say little"),
    (16000, 16000.0, "sampled at 16000 Hz, it holds nothing above 8000 Hz of the 16000 Hz the model reads: its "
                     "timbre compares poorly with full-band files"),
    (32000, 16000.0, None),
    (0, 16000.0, None),
])
def test_a_file_whose_band_the_model_misses_is_warned_about(tmp_path: Path, rate: int, band: float,
                                                            said: str | None) -> None:
    record = _record(_wav(tmp_path / "a.wav", _tone(2.0)), sample_rate=rate)
    windows = decode_windows(record, SR, WindowPolicy(5.0, 2), band)
    assert windows.warnings == ([f"{tmp_path / 'a.wav'}: {said}"] if said else [])


def test_a_model_that_names_no_band_is_warned_about_a_rate_below_half_its_own(tmp_path: Path) -> None:
    record = _record(_wav(tmp_path / "a.wav", _tone(2.0)), sample_rate=6000)
    assert decode_windows(record, SR, WindowPolicy(5.0, 2)).warnings == [
        f"{tmp_path / 'a.wav'}: sampled at 6000 Hz, below half the model's 16000 Hz: it hears nothing above 3000 Hz, "
        "so its vectors say little"]


def test_a_record_without_a_header_rate_gets_no_band_warning(tmp_path: Path) -> None:
    record = _wav(tmp_path / "a.wav", _tone(2.0))
    bare = inspect_file(record)
    bare.info = {}
    assert decode_windows(bare, SR, WindowPolicy(5.0, 2), 16000.0).warnings == []


# ---------------------------------------------------------------- decode_windows: a file changed meanwhile


def test_a_file_changed_or_removed_after_inspection_is_refused(tmp_path: Path) -> None:
    path = _wav(tmp_path / "a.wav", _tone(2.0))
    record = inspect_file(path)
    _wav(path, _tone(2.0, hz=880.0))
    with pytest.raises(AudioError, match=r"a\.wav: the file changed while it was being read; run `mess extract`"):
        decode_windows(record, SR, WindowPolicy(5.0, 2))
    record = inspect_file(path)
    path.unlink()
    with pytest.raises(AudioError, match="changed while it was being read"):
        decode_windows(record, SR, WindowPolicy(5.0, 2))


def test_a_record_without_a_stamp_is_not_checked(tmp_path: Path) -> None:
    path = _wav(tmp_path / "a.wav", _tone(2.0))
    record = inspect_file(path)
    record.stamp = ""
    assert decode_windows(record, SR, WindowPolicy(5.0, 2)).audio.shape == (1, 2 * SR)


# ---------------------------------------------------------------- decode_windows: levels


@pytest.mark.parametrize(("audio", "said"), [
    (np.zeros(2 * SR, np.float32), r"silent \(peak -240 dBFS\)"),
    (np.full(2 * SR, 0.5, np.float32), r"silent \(a constant offset of 0\.5, varying by -240 dBFS\)"),
    (_tone(2.0, amp=2e3), r"sample values out of range \(peak 2e\+03; float audio lies within \+-1\)"),
    (_tone(2.0, amp=5e-5), r"silent \(peak -86 dBFS\)"),
])
def test_unusable_levels_are_refused_with_the_reason(tmp_path: Path, audio: np.ndarray, said: str) -> None:
    path = _wav(tmp_path / "bad.wav", audio)
    with pytest.raises(AudioError, match=rf"bad\.wav: {said}"):
        decode_windows(inspect_file(path), SR, WindowPolicy(5.0, 2))


@pytest.mark.parametrize("amp", [1e3, 2e-4])
def test_levels_at_the_bounds_are_accepted(tmp_path: Path, amp: float) -> None:
    audio = np.zeros(2 * SR, np.float32)
    audio[SR] = amp
    audio[SR + 1] = -amp
    windows = decode_windows(inspect_file(_wav(tmp_path / "a.wav", audio)), SR, WindowPolicy(5.0, 2))
    assert float(np.abs(windows.audio).max()) == pytest.approx(amp, rel=1e-6)


def test_a_peak_in_a_windows_ringing_ends_counts_for_range_but_not_for_swing(tmp_path: Path) -> None:
    """A window's first and last 256 samples count for its peak (a huge click is out of range) but not for its
    swing (a window still, but for a click at its start, is a constant offset)."""
    for at, said in ((5, "out of range"), (2 * SR - 5, "out of range")):
        audio = _tone(2.0, amp=0.1)
        audio[at] = 5e3
        with pytest.raises(AudioError, match=said):
            decode_windows(inspect_file(_wav(tmp_path / "a.wav", audio)), SR, WindowPolicy(5.0, 2))
    for at in (5, 2 * SR - 5):
        audio = np.zeros(2 * SR, np.float32)
        audio[at] = 0.5
        with pytest.raises(AudioError, match="constant offset of 0,"):
            decode_windows(inspect_file(_wav(tmp_path / "a.wav", audio)), SR, WindowPolicy(5.0, 2))
    for at in (5, 2 * SR - 5):  # min of the ends too: a negative click
        audio = _tone(2.0, amp=0.1)
        audio[at] = -5e3
        with pytest.raises(AudioError, match="out of range"):
            decode_windows(inspect_file(_wav(tmp_path / "a.wav", audio)), SR, WindowPolicy(5.0, 2))


def test_a_clip_of_at_most_four_ringing_lengths_is_judged_whole(tmp_path: Path) -> None:
    audio = np.zeros(1024, np.float32)
    audio[3] = 0.5  # in what would be the ringing end of a longer window
    windows = decode_windows(inspect_file(_wav(tmp_path / "a.wav", audio)), SR, WindowPolicy(5.0, 2, 0.05))
    assert windows.audio.shape == (1, 1024)
    audio = np.zeros(1025, np.float32)
    audio[3] = 0.5
    with pytest.raises(AudioError, match="constant offset"):
        decode_windows(inspect_file(_wav(tmp_path / "b.wav", audio)), SR, WindowPolicy(5.0, 2, 0.05))


def test_a_quiet_file_is_judged_below_8_khz_by_a_model_reading_above_it(tmp_path: Path) -> None:
    """At 44.1 kHz: a -66 dBFS tone at 12 kHz alone (faded in and out: no click below 8 kHz) is silent below 8 kHz;
    one at 1 kHz is not, nor one at 12 kHz of -56 dBFS (above -60 dBFS the band is not looked at); at 16 kHz a
    -66 dBFS tone at 7 kHz is heard."""
    rate = 44100

    def faded(hz: float, amp: float, sr: int = rate) -> np.ndarray:
        return (_tone(2.0, hz=hz, amp=amp, sr=sr) * np.hanning(2 * sr)).astype(np.float32)

    hiss = _wav(tmp_path / "hiss.wav", faded(12000.0, 5e-4), rate)
    with pytest.raises(AudioError, match=r"hiss\.wav: silent \(peak -\d+ dBFS below 8 kHz; above it only noise, "
                                         r"peak -66 dBFS\)"):
        decode_windows(inspect_file(hiss), rate, WindowPolicy(5.0, 2))
    hum = _wav(tmp_path / "hum.wav", faded(1000.0, 5e-4), rate)
    assert decode_windows(inspect_file(hum), rate, WindowPolicy(5.0, 2)).audio.shape == (1, 2 * rate)
    low = _wav(tmp_path / "low.wav", faded(7000.0, 5e-4, SR))
    assert decode_windows(inspect_file(low), SR, WindowPolicy(5.0, 2)).audio.shape == (1, 2 * SR)
    loud = _wav(tmp_path / "loud.wav", faded(12000.0, 1.5e-3), rate)
    assert decode_windows(inspect_file(loud), rate, WindowPolicy(5.0, 2)).audio.shape == (1, 2 * rate)


def test_a_long_file_of_silence_is_refused_window_by_window(tmp_path: Path) -> None:
    path = _wav(tmp_path / "quiet.wav", np.zeros(SR * 5, np.float32))
    with pytest.raises(AudioError, match=r"quiet\.wav: silent"):
        decode_windows(inspect_file(path), SR, WindowPolicy(2.0, 2))


# ---------------------------------------------------------------- describe, _span, planned_seconds


def test_describe_gives_the_type_and_first_line() -> None:
    assert describe(ValueError("  first\nsecond  ")) == "ValueError: first"
    assert describe(KeyError()) == "KeyError"
    assert describe(RuntimeError("   \n  ")) == "RuntimeError"


@pytest.mark.parametrize(("limit", "said"), [(3600.0, "1 h"), (5400.0, "1.5 h"), (3599.0, "60 min"),
                                             (60.0, "1 min"), (1200.0, "20 min"), (59.0, "59 s"), (6.0, "6 s")])
def test_a_decoding_limit_is_said_in_the_unit_that_reads_best(tmp_path: Path, limit: float, said: str) -> None:
    from mess.extract.prepare import _span

    assert _span(limit) == said


def test_planned_seconds_adds_what_the_policy_analyses_and_counts_unreadable_files_nothing(tmp_path: Path) -> None:
    short = _wav(tmp_path / "short.wav", _tone(1.5))
    long = _wav(tmp_path / "long.wav", _tone(7.0))
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"junk" * 100)
    policy = WindowPolicy(2.0, 3)
    # 1.5 s is one window of its own length; 7 s: min(3, ceil(7 / 2)) windows of 2 s
    total = planned_seconds([short, junk, tmp_path / "gone.wav", long, tmp_path], policy)
    assert total == pytest.approx(1.5 + 3 * 2.0)
    assert planned_seconds([], policy) == 0.0


# ---------------------------------------------------------------- child processes


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, code: str) -> str:
    """A module ``name`` the child processes started from now on can run (``python -m name``)."""
    folder = tmp_path / "modules"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(code)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))
    return name


ECHO = """
import sys, time
from mess.extract.child import serve_requests

def handle(request):
    print("stray output", flush=True)  # must not reach the reply stream
    if request == "sleep":
        time.sleep(60)
    return request

serve_requests(handle)
if len(sys.argv) > 1 or {linger}:
    time.sleep(60)  # an idle child that does not end when its input closes
"""


def test_describe_exit_names_a_signal_or_the_code() -> None:
    from mess.extract.child import describe_exit

    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(-11) == "killed by SIGSEGV"
    assert describe_exit(-200) == "killed by signal 200"
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(None) == "exit code None"


def test_a_child_answers_each_request_in_turn_and_ends_when_its_input_closes(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from mess.extract.child import Child

    child = Child(_module(tmp_path, monkeypatch, "echo_child", ECHO.format(linger=False)))
    assert child.pid is None and child.stop() is None  # not started: nothing to stop
    assert child.connect()[2] is True  # just started
    assert child.call(("ok", 21), 30) == ("ok", 21)
    pid = child.pid
    assert isinstance(pid, int) and pid != os.getpid()
    assert child.call([1, "two"], 30) == [1, "two"]  # the same process, ready already
    assert child.pid == pid and child.connect()[2] is False
    assert child.stop(grace=30) == 0  # its input closed: it ended by itself
    assert child.pid is None and child.stop() is None  # stopped once
    assert child.call("again", 30) == "again" and child.pid not in (None, pid)  # a fresh one
    assert child.stop() == -signal.SIGKILL  # no grace: killed


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_child_holds_two_descriptors_of_its_parent_and_is_reaped_when_replaced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its two pipes, each once; a child killed while idle (by the OOM killer, say) is reaped, its pipes closed,
    when the next call starts another; kill() kills it where it runs."""
    from mess.extract.child import Child

    child = Child(_module(tmp_path, monkeypatch, "echo_child", ECHO.format(linger=False)))
    before = _open_fds()
    assert child.call("first", 30) == "first"
    assert _open_fds() == before + 2
    old = child.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    os.waitid(os.P_PID, old, os.WEXITED | os.WNOWAIT)  # dead, not yet reaped
    assert child.call("second", 30) == "second" and child.pid != old
    with pytest.raises(ChildProcessError):  # waited for: no zombie left
        os.waitpid(old, os.WNOHANG)
    assert _open_fds() == before + 2
    proc = child._proc
    assert proc is not None
    child.kill()
    assert proc.wait(30) == -signal.SIGKILL
    child.kill()  # nothing to kill: no error
    child.stop()
    assert _open_fds() == before
    Child("no_such_module_started").kill()  # never started: nothing to kill


def test_a_child_runs_in_its_parents_process_group_unless_asked_for_its_own(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from mess.extract.child import Child

    name = _module(tmp_path, monkeypatch, "echo_child", ECHO.format(linger=False))
    shared, own = Child(name), Child(name, own_group=True)
    try:
        assert (shared.call(1, 30), own.call(2, 30)) == (1, 2)
        assert shared.pid is not None and own.pid is not None
        assert os.getpgid(shared.pid) == os.getpgrp()
        assert os.getpgid(own.pid) == own.pid
    finally:
        shared.stop()
        own.stop()


def test_a_child_hung_up_on_is_replaced_on_the_next_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """hang_up closes its input (here a child that lingers after it: still running); the next call starts another."""
    from mess.extract.child import Child

    child = Child(_module(tmp_path, monkeypatch, "lingering_child", ECHO.format(linger=True)))
    try:
        assert child.call("first", 30) == "first"
        old = child.pid
        child.hang_up()
        child.hang_up()  # once is enough: no error
        assert child.pid == old  # it lingers
        assert child.call("second", 30) == "second" and child.pid not in (None, old)
    finally:
        child.stop()


def test_a_child_past_its_time_is_stopped_and_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mess.extract.child import Child, ChildDied

    child = Child(_module(tmp_path, monkeypatch, "echo_child", ECHO.format(linger=False)))
    assert child.call("first", 30) == "first"
    with pytest.raises(ChildDied, match=r"^took longer than 0\.5 s and was stopped$"):
        child.call("sleep", 0.5)
    assert child.pid is None
    assert child.call("next", 30) == "next"
    child.stop()


def test_a_child_that_dies_mid_request_says_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from mess.extract.child import Child, ChildDied

    child = Child(_module(tmp_path, monkeypatch, "echo_child", ECHO.format(linger=False)))
    assert child.call("first", 30) == "first"
    pid = child.pid
    assert pid is not None
    caught: list[BaseException] = []

    def ask_it() -> None:
        try:
            child.call("sleep", 60)
        except ChildDied as exc:
            caught.append(exc)

    thread = threading.Thread(target=ask_it)
    thread.start()
    import time

    time.sleep(0.5)  # the request is sent and the child sleeps on it
    os.kill(pid, signal.SIGSEGV)
    thread.join(30)
    assert [str(e) for e in caught] == ["died (killed by SIGSEGV)"]
    assert child.pid is None


@pytest.mark.parametrize(("code", "said"), [
    ("import sys; sys.exit(3)", r"^died \(exit code 3\)$"),
    ("import os\nfrom multiprocessing.connection import Connection\nConnection(os.dup(1), readable=False)"
     ".send('hello')\nimport time; time.sleep(60)", r"^answered 'hello' before it was ready and was stopped$"),
    ("import time; time.sleep(60)", r"^did not start within 1 s and was stopped$"),
])
def test_a_child_that_never_gets_ready_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: str,
                                                   said: str) -> None:
    from mess.extract import child as child_module

    monkeypatch.setattr(child_module, "START_TIMEOUT", 1.0)
    child = child_module.Child(_module(tmp_path, monkeypatch, "bad_child", code))
    with pytest.raises(child_module.ChildDied, match=said):
        child.call("anything", 30)
    assert child.pid is None


def test_stop_all_gives_the_children_one_grace_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle children end by themselves at once (exit code 0); children that linger are killed when one grace in all
    is over, not one grace each."""
    import time

    from mess.extract.child import Child, stop_all

    for linger, grace, code in ((False, 30.0, 0), (True, 1.5, -signal.SIGKILL), ("1.2", 3.0, 0)):
        name = f"child_{linger}".replace(".", "_")
        code_of = ECHO.format(linger=linger is True)
        if isinstance(linger, str):  # each takes 1.2 s to end: together within the grace, one after another not
            code_of = code_of.replace("serve_requests(handle)\n", f"serve_requests(handle)\ntime.sleep({linger})\n")
        children = [Child(_module(tmp_path, monkeypatch, name, code_of)) for _ in range(3)]
        procs = []
        for child in children:
            assert child.call("hi", 30) == "hi"
            procs.append(child._proc)
        began = time.monotonic()
        stop_all(children, grace)
        took = time.monotonic() - began
        assert [p.returncode for p in procs] == [code] * 3, linger
        assert all(c.pid is None for c in children)
        assert took < (5.0 if not linger else 2 * grace), (linger, took)
        if linger is True:
            assert took >= grace - 0.1


# ---------------------------------------------------------------- the decode worker


def test_ask_turns_each_reply_into_the_value_or_the_files_failure(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The echo child answers each request with itself: ask reads every kind of reply."""
    from mess.extract.child import Child
    from mess.extract.decode_worker import FileFailed, ask

    child = Child(_module(tmp_path, monkeypatch, "echo_child", ECHO.format(linger=False)))
    path = Path("/music/a.flac")
    try:
        assert ask(child, path, ("ok", [1, 2]), 30) == [1, 2]
        for reply, said in ((("os", "Permission denied"), "/music/a.flac: cannot read (Permission denied)"),
                            (("audio", "/music/a.flac: silent"), "/music/a.flac: silent"),
                            (("other", "ValueError: x"), "/music/a.flac: ValueError: x"),
                            (("ok", 1, 2), "/music/a.flac: the decoder answered ('ok', 1, 2)"),
                            ("ok", "/music/a.flac: the decoder answered 'ok'"),
                            (("sleep", 1), "/music/a.flac: 1")):
            with pytest.raises(FileFailed) as caught:
                ask(child, path, reply, 30)
            assert str(caught.value) == said
        with pytest.raises(FileFailed) as caught:
            ask(child, path, "sleep", 0.5)
        assert str(caught.value) == "/music/a.flac: the decoder took longer than 0.5 s and was stopped; file skipped"
    finally:
        child.stop()


def test_the_decode_worker_handles_each_request_and_names_what_it_cannot(tmp_path: Path) -> None:
    from mess.extract.decode_worker import handle

    path = _wav(tmp_path / "a.wav", _tone(3.0))
    policy = WindowPolicy(2.0, 2)
    kind, record = handle(("inspect", path, None))
    assert kind == "ok" and record.size == path.stat().st_size
    kind, windows = handle(("decode", record, SR, policy, 0.0))
    assert kind == "ok" and windows.audio.shape == (2, 2 * SR)
    assert handle(("plan", [path], policy)) == ("ok", pytest.approx(4.0))
    assert handle(("inspect", tmp_path / "gone.wav", None)) == ("os", "No such file or directory")
    empty = tmp_path / "empty.wav"
    empty.touch()
    assert handle(("decode", inspect_file(empty), SR, policy, 0.0)) == ("audio", f"{empty}: empty file (0 bytes)")
    assert handle(("inspect",)) == ("other", "TypeError: inspect_file() missing 1 required positional argument: "
                                             "'path'")
    assert handle(("fly", path)) == ("other", "unknown request 'fly'")
    assert handle(()) == ("other", "malformed request ()")
    assert handle("inspect") == ("other", "malformed request 'inspect'")


def test_the_decode_worker_sends_what_c_libraries_print_to_dev_null(tmp_path: Path) -> None:
    """libmpg123's notes on a damaged MP3 broke the progress bar: the worker's stderr (and its stdout, where stray
    prints go) is /dev/null, and no other descriptor is left open on it."""
    from mess.extract.child import Child
    from mess.extract.pipeline import DECODE_WORKER

    child = Child(DECODE_WORKER)
    try:
        assert child.call(("plan", [], WindowPolicy()), 60) == ("ok", 0.0)
        fds = Path(f"/proc/{child.pid}/fd")
        on_null = sorted(int(fd.name) for fd in fds.iterdir() if os.readlink(fd) == os.devnull)
        assert on_null == [1, 2]
    finally:
        child.stop()


def test_the_real_decode_worker_answers_in_its_own_process(tmp_path: Path) -> None:
    """`python -m mess.extract.decode_worker`: a file's windows, a file's failure, and a hang stopped."""
    from mess.extract.child import Child
    from mess.extract.decode_worker import FileFailed, ask
    from mess.extract.pipeline import DECODE_WORKER

    path = _wav(tmp_path / "a.wav", _tone(3.0))
    fifo = tmp_path / "stuck.wav"
    os.mkfifo(fifo)
    child = Child(DECODE_WORKER)
    try:
        record = ask(child, path, ("inspect", path, None), 60)
        assert isinstance(record, FileRecord) and record.path == path
        windows = ask(child, path, ("decode", record, SR, WindowPolicy(5.0, 2), 0.0), 60)
        np.testing.assert_allclose(windows.audio[0], _tone(3.0), atol=1e-6)
        with pytest.raises(FileFailed, match=r"gone\.wav: cannot read \(No such file or directory\)$"):
            ask(child, tmp_path / "gone.wav", ("inspect", tmp_path / "gone.wav", None), 60)
        with pytest.raises(FileFailed, match=r"stuck\.wav: the decoder took longer than 1 s and was stopped; file "):
            ask(child, fifo, ("inspect", fifo, None), 1.0)
    finally:
        child.stop()


# ---------------------------------------------------------------- the pipeline: prune, missing files


def _catalogued(store: object, *paths: Path) -> None:
    for i, path in enumerate(paths):
        store.upsert_track(path, f"{i:032x}", 1, 0.0, {}, {})  # type: ignore[attr-defined]


def test_prune_forgets_only_what_is_gone_under_its_roots(tmp_path: Path) -> None:
    from mess.extract.pipeline import missing_files, prune
    from mess.store import FeatureStore

    music, sibling, elsewhere = tmp_path / "music", tmp_path / "music2", tmp_path / "elsewhere"
    for folder in (music, music / "sub", sibling, elsewhere):
        folder.mkdir()
    kept = _wav(music / "kept.wav", _tone(1.0))
    passed_over = _wav(music / "sub" / "hidden.wav", _tone(1.0))  # on disk, not in the walk's list
    gone = music / "sub" / "gone.wav"
    linked = music / "linked.wav"  # replaced by a link to a file elsewhere
    target = _wav(elsewhere / "target.wav", _tone(1.0))
    linked.symlink_to(target)
    sibling_gone = sibling / "gone.wav"  # a folder whose name starts with the root's
    elsewhere_gone = elsewhere / "gone.wav"
    store = FeatureStore(tmp_path / "store")
    _catalogued(store, kept, passed_over, gone, linked, sibling_gone, elsewhere_gone)
    assert sorted(missing_files(store)) == sorted(str(p) for p in (gone, linked, sibling_gone, elsewhere_gone))
    assert prune(store, [kept, target], [music]) == 2
    assert sorted(store.all_paths()) == sorted(str(p) for p in (kept, passed_over, sibling_gone, elsewhere_gone))
    assert prune(store, [], [tmp_path / "nothing"]) == 0


def test_prune_of_a_root_that_names_a_gone_file_and_of_unread_failures(tmp_path: Path) -> None:
    from mess.extract.pipeline import _unread, prune
    from mess.extract.runs import run_key
    from mess.models.dsp import DspModel
    from mess.store import FeatureStore

    music = tmp_path / "music"
    music.mkdir()
    gone = music / "gone.wav"
    there = _wav(music / "there.wav", _tone(1.0))
    store = FeatureStore(tmp_path / "store")
    run = store.ensure_run(run_key(DspModel().info, WindowPolicy()))
    _catalogued(store, gone, there)
    for path in (music / "unread_gone.wav", there, tmp_path / "outside.wav"):
        record = _unread(path)
        assert (record.path, record.content_hash, record.size, record.info) == (path, "", 0, {})
        store.record_failure(run, record.content_hash, str(path), f"{path}: cannot read")
    assert prune(store, [], [gone]) == 1  # a root that is a file (a link's target), gone
    assert store.all_paths() == [str(there)]
    assert sorted(store.unread_paths()) == sorted(str(p) for p in (music / "unread_gone.wav", there,
                                                                    tmp_path / "outside.wav"))
    prune(store, [there], [music])
    assert sorted(store.unread_paths()) == sorted(str(p) for p in (there, tmp_path / "outside.wav"))


def test_a_file_in_a_folder_replaced_by_a_link_is_missing(tmp_path: Path) -> None:
    from mess.extract.pipeline import missing_files
    from mess.store import FeatureStore

    real = tmp_path / "real"
    real.mkdir()
    _wav(real / "a.wav", _tone(1.0))
    (tmp_path / "album").symlink_to(real)
    (tmp_path / "plain").mkdir()
    plain = _wav(tmp_path / "plain" / "b.wav", _tone(1.0))
    plain2 = _wav(tmp_path / "plain" / "c.wav", _tone(1.0))
    store = FeatureStore(tmp_path / "store")
    _catalogued(store, tmp_path / "album" / "a.wav", plain, plain2)
    assert missing_files(store) == [str(tmp_path / "album" / "a.wav")]


def test_a_catalogued_file_that_cannot_be_looked_at_is_kept(tmp_path: Path) -> None:
    """A name the file system refuses (ENAMETOOLONG here; a folder made unreadable for a non-root user) says nothing
    of whether the file is there: not missing, not pruned."""
    from mess.extract.pipeline import missing_files, prune
    from mess.store import FeatureStore

    odd = tmp_path / ("a" * 300) / "x.wav"
    with pytest.raises(OSError):
        odd.is_file()
    store = FeatureStore(tmp_path / "store")
    _catalogued(store, odd)
    assert missing_files(store) == []
    assert prune(store, [], [tmp_path]) == 0 and store.all_paths() == [str(odd)]


# ---------------------------------------------------------------- the pipeline: a run's counts


class _LoudFails:
    """The DSP model, failing on any batch holding a window louder than 0.8 (as a model fails on one file)."""

    def __init__(self) -> None:
        from mess.models.dsp import DspModel

        self._model = DspModel()
        self.info = self._model.info
        self.batches: list[int] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._model, name)

    def source(self) -> dict[str, str]:
        return {"test": "loud fails"}  # where it came from: recorded with the run

    def embed(self, windows: np.ndarray) -> list[np.ndarray]:
        self.batches.append(len(windows))
        if np.abs(windows).max() > 0.8:
            raise ValueError("too loud\nsecond line")
        return self._model.embed(windows)


def test_a_run_counts_embedded_copies_skipped_and_failed_files_and_isolates_a_model_failure(tmp_path: Path) -> None:
    from mess.extract.pipeline import extract
    from mess.store import FeatureStore

    music = tmp_path / "music"
    music.mkdir()
    a = _wav(music / "a.wav", _tone(3.0, hz=220.0))
    copy = music / "copy.wav"
    copy.write_bytes(a.read_bytes())
    loud = _wav(music / "loud.wav", _tone(2.0, hz=330.0, amp=0.9))
    empty = music / "empty.wav"
    empty.touch()
    c = _wav(music / "c.wav", _tone(1.5, hz=550.0))
    gone = music / "gone.wav"
    store = FeatureStore(tmp_path / "store")
    model = _LoudFails()
    progress: list[tuple[int, float]] = []
    policy = WindowPolicy(2.0, 2)
    paths = [a, copy, loud, empty, gone, c]
    began = time.perf_counter()
    summary = extract(store, paths, model, policy, batch_size=16, workers=1,  # type: ignore[arg-type]
                      on_progress=lambda n, s: progress.append((n, s)))
    assert 0 < summary.wall_seconds <= time.perf_counter() - began
    assert (summary.done, summary.skipped, summary.copies) == (2, 0, 1)
    assert summary.failed == [(str(empty), f"{empty}: empty file (0 bytes)"),
                              (str(gone), f"{gone}: cannot read (No such file or directory)"),
                              (str(loud), f"{loud}: model failed (ValueError: too loud)")]
    assert summary.handled == 6
    assert summary.audio_seconds == pytest.approx(2 * 2.0 + 1.5)  # a: two 2 s windows; c: one of 1.5 s
    # a's and loud's 2 s windows at once (c's of 1.5 s are another batch), then each file alone
    assert model.batches[:4] == [3, 2, 1, 1]
    assert progress[-1] == (6, pytest.approx(5.5)) and [n for n, _ in progress] == sorted(n for n, _ in progress)
    # after each file, at the end, and at each commit (a's and c's vectors: one commit, or two when c's group came
    # after the first commit had begun)
    assert len(progress) - (len(paths) + 1) in (1, 2), progress
    run = store.run("dsp")
    assert sorted(store.failures(run)) == sorted(summary.failed)
    assert {Path(t.path).name for t in store.tracks(run)} == {"a.wav", "copy.wav", "c.wav"}
    second = extract(store, [a, copy, c, loud], model, policy, batch_size=16, workers=2)  # type: ignore[arg-type]
    assert (second.done, second.skipped, second.copies, len(second.failed)) == (0, 3, 0, 1)
    assert second.audio_seconds == 0.0 and second.wall_seconds > 0


def test_a_batch_is_embedded_once_it_holds_batch_size_windows(tmp_path: Path) -> None:
    from mess.extract.pipeline import extract
    from mess.store import FeatureStore

    music = tmp_path / "music"
    music.mkdir()
    paths = [_wav(music / f"{i}.wav", _tone(0.8, hz=200.0 + 100 * i)) for i in range(4)]  # a window each
    before = {p.pid for p in decoders()}  # another test's (a Ray worker's decoder): not this run's
    seen: list[int] = []
    model = _LoudFails()

    def count(n: int, seconds: float) -> None:
        seen.append(sum(p.pid not in before for p in decoders()))

    summary = extract(FeatureStore(tmp_path / "store"), paths, model, WindowPolicy(1.0, 2, 0.5), batch_size=2,
                      workers=1, on_progress=count)  # type: ignore[arg-type]
    assert summary.done == 4 and summary.failed == []
    assert model.batches == [2, 2]
    assert max(seen) == 1  # one worker: one decoder process
    assert [p for p in decoders(zombies=True) if p.pid not in before] == []  # stopped and reaped when the run ends


def test_the_copies_of_a_file_the_model_fails_on_are_failed_too_not_said_to_be_embedded(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A byte-identical copy of a file counted as 'a copy of a file embedded in this run (skipped)' even when the
    model then failed on that file: nothing was embedded, and the copy was named nowhere in the summary. A copy met
    after the failure is decoded and tried again itself. (Also: a failure names an undecodable file name in escapes,
    is logged as a warning, and a run records its model's source and prunes what is gone when asked.)"""
    from mess.extract.pipeline import extract
    from mess.store import FeatureStore

    music = tmp_path / "music"
    music.mkdir()
    loud = _wav(music / "loud.wav", _tone(2.0, hz=330.0, amp=0.9))
    early, late = music / "early.wav", music / "late.wav"
    for copy in (early, late):
        copy.write_bytes(loud.read_bytes())
    fine = _wav(music / "fine.wav", _tone(2.0, hz=220.0))
    odd = Path(os.fsdecode(bytes(music) + b"/caf\xe9.wav"))
    odd.touch()
    shown = os.fsencode(odd).decode("utf-8", "backslashreplace")
    model = _LoudFails()
    store = FeatureStore(tmp_path / "store")
    _catalogued(store, music / "deleted.wav")
    # batch_size 2: loud and early (its copy) wait for fine's window; the batch fails, then loud alone; late is met
    # after that failure
    with caplog.at_level("WARNING", logger="mess.extract.pipeline"):
        summary = extract(store, [loud, early, fine, late, odd], model, WindowPolicy(5.0, 2),  # type: ignore[arg-type]
                          batch_size=2, workers=1, prune_under=[music])
    assert (summary.done, summary.copies, summary.skipped, summary.removed) == (1, 0, 0, 1)
    failed = [(str(p), f"{p}: model failed (ValueError: too loud)") for p in (loud, early, late)]
    assert sorted(summary.failed) == sorted([*failed, (shown, f"{shown}: empty file (0 bytes)")])
    assert summary.handled == 5
    run = store.run("dsp")  # the store keeps the real name: the summary's is printable
    assert sorted((os.fsencode(p).decode("utf-8", "backslashreplace"), r) for p, r in store.failures(run)) == sorted(
        summary.failed)
    assert sorted(r.getMessage() for r in caplog.records if r.levelname == "WARNING") == sorted(
        reason for _, reason in summary.failed)
    assert store.model_source(run) == {"test": "loud fails"}


def test_an_interrupted_run_keeps_and_counts_what_it_embedded(tmp_path: Path) -> None:
    """Ctrl-C while the model embeds the second file: the first file's vectors are committed and counted."""
    from mess.extract.pipeline import ExtractInterrupted, extract
    from mess.store import FeatureStore

    class Interrupted(_LoudFails):
        def embed(self, windows: np.ndarray) -> list[np.ndarray]:
            if self.batches:
                raise KeyboardInterrupt
            return super().embed(windows)

    music = tmp_path / "music"
    music.mkdir()
    paths = [_wav(music / f"{i}.wav", _tone(1.0, hz=200.0 + 100 * i)) for i in range(3)]
    store = FeatureStore(tmp_path / "store")
    began = time.perf_counter()
    with pytest.raises(ExtractInterrupted) as caught:
        extract(store, paths, Interrupted(), WindowPolicy(2.0, 2), batch_size=1, workers=1)  # type: ignore[arg-type]
    summary = caught.value.summary
    assert (summary.done, summary.failed) == (1, [])
    assert 0 < summary.wall_seconds <= time.perf_counter() - began
    assert isinstance(caught.value.__cause__, KeyboardInterrupt)
    assert [Path(t.path) for t in store.tracks(store.run("dsp")) if store.has_vectors(store.run("dsp"), t.content_hash)
            ] == paths[:1]


def test_a_run_catalogues_the_decoded_length_of_a_file_whose_header_has_none(tmp_path: Path) -> None:
    """A FLAC whose STREAMINFO gives no sample count (as one written to a pipe): its catalogued length is what was
    decoded; a whole file's stays its header's."""
    from mess.extract.pipeline import extract
    from mess.store import FeatureStore

    music = tmp_path / "music"
    music.mkdir()
    piped = music / "piped.flac"
    sf.write(piped, _tone(3.0), SR)
    data = bytearray(piped.read_bytes())
    assert data[:4] == b"fLaC"
    at = 8 + 10  # STREAMINFO's 20-bit rate, 3-bit channels, 5-bit depth and 36-bit sample count
    fields = int.from_bytes(data[at : at + 8], "big") & ~((1 << 36) - 1)  # the count zeroed: unknown
    data[at : at + 8] = fields.to_bytes(8, "big")
    piped.write_bytes(bytes(data))
    fine = _wav(music / "fine.wav", _tone(2.5))
    store = FeatureStore(tmp_path / "store")
    summary = extract(store, [piped, fine], _LoudFails(), WindowPolicy(2.0, 2), workers=1)  # type: ignore[arg-type]
    assert summary.done == 2 and summary.failed == []
    assert store.track(piped).duration == pytest.approx(3.0)
    assert store.track(fine).duration == pytest.approx(2.5)
