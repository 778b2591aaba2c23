"""Warm children (``Child(..., warm=True)``): forked by a zygote that has the module's imports done, they behave as
children started cold at that moment would: the caller's working folder, environment and standard error, their own
exit codes, Ctrl-C, and no process left behind when the caller dies."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import cast

import psutil
import pytest

from mess.extract import zygote as zygote_module
from mess.extract.child import Child, ChildDied

WORKER = """
import os, sys, time
from mess.extract.child import serve_requests

def handle(request):
    op, arg = request
    if op == "env":
        return os.environ.get(arg)
    if op == "cwd":
        return os.getcwd()
    if op == "say":
        os.write(2, arg.encode())  # the descriptor: what a C library prints
        return "said"
    if op == "exit":
        sys.exit(arg)
    if op == "signal":
        os.kill(os.getpid(), arg)
        time.sleep(60)
    if op == "sleep":
        time.sleep(arg)
    if op == "limit":
        import resource
        return resource.getrlimit(arg)
    if op == "mark":
        return getattr(sys.modules.get("sitecustomize"), "MARK", None)
    return arg

def main():
    serve_requests(handle)

if __name__ == "__main__":
    main()
"""


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A worker module of this test's own name (each test gets a zygote of its own)."""
    name = "zygote_worker_" + request.node.name.removeprefix("test_")[:40]
    folder = tmp_path / "modules"
    folder.mkdir()
    (folder / f"{name}.py").write_text(WORKER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))
    return name


def _zygote_of(pid: int) -> psutil.Process:
    parent = psutil.Process(pid).parent()
    assert parent is not None
    return parent


def test_a_warm_child_has_the_callers_folder_environment_limits_and_stderr_of_the_moment_it_starts(
        worker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = Child(worker, warm=True)
    try:
        assert first.call(("cwd", None), 30) == os.getcwd()
        zygote = _zygote_of(first.pid or 0)
        assert zygote.pid != os.getpid() and zygote.ppid() == os.getpid() and worker in zygote.cmdline()
        assert zygote.cwd() == "/"  # it keeps no folder busy (a mount it was started in could not be unmounted)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        monkeypatch.setenv("MESS_ZYGOTE_TEST", "set after the zygote started")
        said = tmp_path / "stderr.txt"
        saved, limits = os.dup(2), resource.getrlimit(resource.RLIMIT_FSIZE)
        limited = (10_000_000, limits[1])
        try:
            with said.open("wb") as into:
                os.dup2(into.fileno(), 2)  # this process's stderr, changed after the zygote started
            resource.setrlimit(resource.RLIMIT_FSIZE, limited)  # and a limit
            second = Child(worker, warm=True)
            try:
                assert second.call(("say", "a line for stderr\n"), 30) == "said"
            finally:
                os.dup2(saved, 2)
                resource.setrlimit(resource.RLIMIT_FSIZE, limits)
            assert second.call(("cwd", None), 30) == str(elsewhere)
            assert second.call(("limit", resource.RLIMIT_FSIZE), 30) == limited  # the limits of the moment
            assert second.call(("env", "MESS_ZYGOTE_TEST"), 30) == "set after the zygote started"
            assert second.call(("env", "MESS_ZYGOTE_SOCKET"), 30) is None  # nothing of the zygote's own
            assert _zygote_of(second.pid or 0).pid == zygote.pid  # forked by the same zygote
            assert said.read_text() == "a line for stderr\n"
            assert os.getpgid(second.pid or 0) == os.getpgrp()  # the caller's process group, as a cold child's
        finally:
            os.close(saved)
            second.stop()
    finally:
        first.stop()


def test_a_warm_child_ends_with_its_own_exit_code_and_is_reaped(worker: str) -> None:
    child = Child(worker, warm=True)
    assert child.call(("echo", 1), 30) == 1
    pid = child.pid
    zygote = _zygote_of(pid or 0)
    assert child.stop(grace=30) == 0  # its input closed: it ended by itself
    assert child.pid is None and not [p for p in zygote.children() if p.pid == pid]  # reaped, no zombie
    with pytest.raises(ChildDied, match=r"^died \(exit code 3\)$"):
        child.call(("exit", 3), 30)
    with pytest.raises(ChildDied, match=r"^died \(killed by SIGSEGV\)$"):
        child.call(("signal", signal.SIGSEGV), 30)
    with pytest.raises(ChildDied, match=r"^took longer than 0\.5 s and was stopped$"):
        child.call(("sleep", 60), 0.5)
    assert child.call(("echo", 2), 30) == 2
    child.kill()
    assert child.stop() == -signal.SIGKILL
    own = Child(worker, own_group=True, warm=True)
    try:
        assert own.call(("echo", 3), 30) == 3 and os.getpgid(own.pid or 0) == own.pid
    finally:
        own.stop()
    assert zygote.is_running() and zygote.children() == []


def test_ctrl_c_stops_a_warm_child_not_its_zygote_and_a_killed_zygote_is_replaced(worker: str, tmp_path: Path) -> None:
    child = Child(worker, warm=True)
    said = tmp_path / "stderr.txt"
    try:
        saved = os.dup(2)
        try:
            with said.open("wb") as into:
                os.dup2(into.fileno(), 2)
            assert child.call(("echo", 1), 30) == 1  # its stderr: the file
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        zygote = _zygote_of(child.pid or 0)
        zygote.send_signal(signal.SIGINT)
        os.kill(child.pid or 0, signal.SIGINT)  # pending before its input closes: it ends by the signal
        assert child.stop(grace=30) == -signal.SIGINT  # as a cold child's
        assert said.read_text() == ""  # no traceback: the caller, interrupted too, says what happened
        assert child.call(("echo", 3), 30) == 3 and _zygote_of(child.pid or 0).pid == zygote.pid
        orphan = psutil.Process(child.pid or 0)
        zygote.kill()
        zygote.wait(30)
        assert psutil.wait_procs([orphan], timeout=30)[1] == []  # its children die with it (a hung one too)
        assert child.call(("echo", 5), 30) == 5  # its child ended with it: another is started
        assert _zygote_of(child.pid or 0).pid != zygote.pid  # a fresh zygote
    finally:
        child.stop()


def test_a_changed_pythonpath_gets_a_zygote_started_under_it_and_the_idle_old_one_ends(
        worker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PYTHONPATH (a sitecustomize here) is read as an interpreter starts: a fork cannot take it on."""
    first = Child(worker, warm=True)
    second = Child(worker, warm=True)
    third = Child(worker, warm=True)
    try:
        assert first.call(("mark", None), 30) is None
        old = _zygote_of(first.pid or 0)
        for mark in ("one", "two"):
            hook = tmp_path / mark
            hook.mkdir()
            (hook / "sitecustomize.py").write_text(f"MARK = {mark!r}\n")
            monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ["PYTHONPATH"]]))
            if mark == "one":
                assert second.call(("mark", None), 30) == "one"
                assert old.is_running()  # its child still runs: kept
                first.stop()
            else:
                assert third.call(("mark", None), 30) == "two"
                assert psutil.wait_procs([old], timeout=30)[1] == []  # idle: closed
        assert second.call(("echo", 1), 30) == 1  # the zygote of "one" is busy with it: kept
        assert len({_zygote_of(c.pid or 0).pid for c in (second, third)}) == 2
    finally:
        for child in (first, second, third):
            child.stop()


def test_a_killed_caller_leaves_no_zygote_and_no_child_and_a_forked_caller_gets_its_own_zygote(
        worker: str, tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, sys, time
        from mess.extract.child import Child
        child = Child({worker!r}, warm=True)
        child.call(("echo", 0), 60)
        zygote = [line.split()[3] for line in [open(f"/proc/{{child.pid}}/stat").read()]][0]
        pid = os.fork()
        if pid == 0:  # a user's fork: it must not talk to its parent's zygote
            forked = Child({worker!r}, warm=True)
            forked.call(("echo", 1), 60)
            mine = open(f"/proc/{{forked.pid}}/stat").read().split()[3]
            print("forked", forked.pid, mine, flush=True)
            forked.stop(5)
            os._exit(0)
        os.waitpid(pid, 0)
        assert child.call(("echo", 2), 60) == 2  # the parent's zygote still answers it
        print("caller", child.pid, zygote, flush=True)
        time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        forked = proc.stdout.readline().split()
        caller = proc.stdout.readline().split()
        assert forked[0] == "forked" and caller[0] == "caller", (forked, caller)
        assert forked[2] != caller[2]  # the fork's child came from a zygote of its own
        child, zygote = psutil.Process(int(caller[1])), psutil.Process(int(caller[2]))
        assert zygote.ppid() == proc.pid and child.ppid() == zygote.pid
        proc.kill()
        proc.wait(30)
        gone, alive = psutil.wait_procs([child, zygote], timeout=30)
        assert alive == []
    finally:
        proc.kill()
        proc.wait()


def test_warm_children_start_in_a_fraction_of_a_cold_start(worker: str) -> None:
    """The point of the zygote: the second and later children skip the interpreter's start and the imports."""
    cold_times, warm_times = [], []
    for warm, times in ((False, cold_times), (True, warm_times)) * 2:
        for _ in range(3):
            child = Child(worker, warm=warm)
            start = time.perf_counter()
            assert child.call(("echo", 0), 60) == 0
            times.append(time.perf_counter() - start)
            child.stop(5)
    assert min(warm_times[1:]) * 3 < min(cold_times), (warm_times, cold_times)


def test_a_stopped_zygote_delays_no_kill_and_the_next_child_comes_from_a_new_zygote(
        worker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGSTOP on the zygote: its children are killed and waited for without it (their pidfds), a zygote that does not
    answer is killed after ``_ANSWER_TIMEOUT`` (5 s; 1 s here), and the children after it come from a fresh one."""
    monkeypatch.setattr(zygote_module, "_ANSWER_TIMEOUT", 1.0)
    hung, idle = Child(worker, warm=True), Child(worker, warm=True)
    try:
        assert hung.call(("echo", 1), 30) == 1 and idle.call(("echo", 2), 30) == 2
        stopped = _zygote_of(hung.pid or 0)
        hung_pid = hung.pid or 0
        stopped.suspend()
        start = time.monotonic()
        with pytest.raises(ChildDied, match=r"^took longer than 0\.5 s and was stopped$"):
            hung.call(("sleep", 60), 0.5)  # killed through its pidfd; its exit code: the zygote does not answer
        assert time.monotonic() - start < 0.5 + 1.0 + 2.0, time.monotonic() - start
        assert psutil.wait_procs([stopped], timeout=10)[1] == []  # the stopped zygote was killed
        assert not psutil.pid_exists(hung_pid) or psutil.Process(hung_pid).status() == psutil.STATUS_ZOMBIE
        assert hung.call(("echo", 3), 30) == 3 and idle.call(("echo", 4), 30) == 4  # their next calls go on
        assert _zygote_of(hung.pid or 0).pid != stopped.pid
    finally:
        for each in (hung, idle):
            each.stop()


def test_a_warm_child_is_killed_at_once_while_its_zygote_is_stopped(worker: str) -> None:
    """The kill goes through the child's pidfd: it does not wait for the stopped zygote, and never reaches another
    process (the zygote cannot reap the child while stopped; its pidfd would not follow a reused id anyway)."""
    child = Child(worker, warm=True)
    try:
        assert child.call(("echo", 1), 30) == 1
        pid = child.pid or 0
        stopped = _zygote_of(pid)
        stopped.suspend()
        try:
            start = time.monotonic()
            child.kill()
            assert time.monotonic() - start < 1.0
            deadline = time.monotonic() + 10
            while psutil.Process(pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
                time.sleep(0.01)
            assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # dead, not reaped: its parent is stopped
        finally:
            stopped.resume()
        assert child.stop() == -signal.SIGKILL  # the zygote, resumed, hands over its exit code
    finally:
        child.stop()


KILLER = """
import os, signal, time
from pathlib import Path
from typing import cast
from mess.extract.child import serve_requests

def handle(request):
    op, marker = request
    if op == "always" or not Path(marker).exists():
        Path(marker).touch()
        os.kill(os.getppid(), signal.SIGKILL)  # kill -9 of its zygote, mid-request: it dies with it
        time.sleep(60)
    return ("ok", os.getppid())

def main():
    serve_requests(handle)
"""


def test_a_file_whose_decoders_zygote_is_killed_is_asked_again_and_named_when_it_dies_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 of the zygote mid-request takes the child along (PDEATHSIG), its exit code lost: not the file's fault,
    so :func:`ask` asks a new child once more, and a second such death is named as such."""
    from mess.extract.decode_worker import FileFailed, ask

    folder = tmp_path / "modules"
    folder.mkdir()
    (folder / "zygote_killer_worker.py").write_text(KILLER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))
    child = Child("zygote_killer_worker", warm=True)
    with pytest.raises(ChildDied, match=r"^died with the helper process that forked it \(its zygote ended\)$"):
        child.call(("once", str(tmp_path / "killed")), 30)
    zygote = ask(child, tmp_path / "a.ogg", ("once", str(tmp_path / "once")), 30)
    try:
        assert zygote != os.getpid() and psutil.Process(int(cast(int, zygote))).ppid() == os.getpid()
        with pytest.raises(FileFailed) as failed:
            ask(child, tmp_path / "b.ogg", ("always", str(tmp_path / "always")), 30)
        assert str(failed.value) == (f"{tmp_path / 'b.ogg'}: the decoder died with the helper process that forked it "
                                     "(its zygote ended), twice; file skipped")
        assert ask(child, tmp_path / "c.ogg", ("once", str(tmp_path / "once")), 30) not in (zygote, os.getpid())
    finally:
        child.stop()


def test_a_warm_child_whose_pidfd_is_numbered_past_1024_is_waited_for(worker: str) -> None:
    """select() refuses descriptors past FD_SETSIZE (1024): a process with many files open (a server, a store's kept
    descriptors) got ValueError from every warm child; its pidfd is polled instead."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))  # a soft limit of 1024 is common
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        child = Child(worker, warm=True)
        assert child.call(("echo", 1), 30) == 1
        assert child.stop(grace=30) == 0
        with pytest.raises(ChildDied, match=r"^died \(exit code 3\)$"):
            child.call(("exit", 3), 30)
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
