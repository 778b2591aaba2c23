"""Child processes forked from a warm zygote instead of started cold.

A decoding process spends 0.22 s of CPU importing numpy, PyAV, soundfile and soxr before its first file; a run
starts one per worker, and every in-process ``extract()`` call (a library user's loop, the tests) starts them again.
The zygote imports ``MODULE`` once, then forks a child for each request, which calls ``MODULE.main()`` (what the
module's ``python -m`` entry calls) on the pipes it was sent: 10 ms instead of 0.22-0.5 s.

The child gets the caller's current working folder, environment, resource limits and standard error with each fork,
so it behaves as a child started at that moment would; what ``MODULE``'s imports read at import time is the
zygote's. The zygote reaps its children and keeps their exit codes until the caller asks (:class:`Forked`). The
caller holds a pidfd of each child: it kills the child and waits for its end by itself, so a zygote that is stopped
(SIGSTOP) or hung delays neither, and a kill never reaches a reused process id. A zygote that does not answer within
``_ANSWER_TIMEOUT`` seconds (it answers in milliseconds) is killed and the next fork starts another. It ignores Ctrl-C
(its children do not), holds ``/`` as its folder, and ends when the caller's end of its socket closes: when the
caller exits or dies. Its children die with it (``PR_SET_PDEATHSIG``), so a killed caller leaves no process behind,
not even one hung in a decoder; the exit code of a child whose zygote ended is lost (``Forked.lost``).
The zygote needs Linux's ``SOCK_SEQPACKET`` Unix sockets, descriptors sent over them and pidfds: where one is
missing (macOS has no ``SOCK_SEQPACKET`` Unix sockets), :func:`available` says so and children start cold.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import importlib
import os
import pickle
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
import weakref

_MAX_MESSAGE = 1 << 20  # bytes of one pickled request (the environment is most of it)
_ANSWER_TIMEOUT = 5.0  # seconds a started zygote may take to answer one request before it is killed (stopped, hung)


@functools.cache
def available() -> bool:
    """Whether this system can run a zygote (see above); asked once per process."""
    if not (hasattr(socket, "SOCK_SEQPACKET") and hasattr(socket, "send_fds") and hasattr(os, "pidfd_open")
            and hasattr(signal, "pidfd_send_signal")):
        return False
    try:
        for end in socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET):
            end.close()
        os.close(os.pidfd_open(os.getpid()))  # Linux 5.3 and later
    except OSError:
        return False
    return True


class ZygoteGone(OSError):
    """The zygote process ended or could not be started."""


class Zygote:
    """The caller's side of one zygote process for ``module``; thread-safe, started on first use."""

    def __init__(self, module: str) -> None:
        self.module = module
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen | None = None
        self._generation = 0  # counts the zygote processes started: a child's exit code is asked of its own

    def fork(self, stdin: int, stdout: int, own_group: bool, start_timeout: float) -> Forked:
        """A new child running the module on ``stdin`` / ``stdout`` (descriptors the caller closes after), in a
        process group of its own if ``own_group``; ZygoteGone when no zygote answers within ``start_timeout`` s."""
        try:
            cwd: str | None = os.getcwd()
        except OSError:  # the working folder was removed: the child works in the zygote's, /
            cwd = None
        fds = [stdin, stdout] + ([2] if _is_open(2) else [])
        request = ("fork", cwd, dict(os.environ), _limits(), own_group, len(fds) == 3)
        with self._lock:
            started = self._sock is None
            if started:
                self._start(start_timeout)
            try:
                reply = self._ask(request, fds, start_timeout if started else _ANSWER_TIMEOUT)
            except ZygoteGone:  # it ended since its last fork, or hung: once more with a fresh one
                self._start(start_timeout)
                reply = self._ask(request, fds, start_timeout)
            if reply[0] != "pid":
                raise ZygoteGone(f"the zygote of {self.module} could not fork: {reply[1]}")
            # the zygote reaps a child only while it answers a request, and every request waits for this lock: the
            # child is not reaped yet, so the pidfd is its own, and stays its own after it ends
            return Forked(self, reply[1], self._generation, os.pidfd_open(reply[1]))

    def status(self, pid: int, generation: int) -> tuple[str, int | None]:
        """``("running", None)``, ``("exited", code)`` (code negative for a signal, as Popen's) or ``("unknown",
        None)`` (not this zygote's, already reported, or its zygote (of ``generation``) is gone)."""
        if generation != self._generation:
            return ("unknown", None)
        return self._tell(("status", pid))

    def busy(self) -> bool:
        """Whether a child of this zygote still runs (or ended and its exit code was not asked for yet)."""
        return self._tell(("busy",))[1] is True

    def close(self) -> None:
        """Close the socket (the zygote then ends by itself) and reap it."""
        with self._lock:
            self._drop()

    def _tell(self, request: tuple) -> tuple:
        with self._lock:
            if self._sock is None:
                return ("unknown", None)
            try:
                return self._ask(request, [], _ANSWER_TIMEOUT)
            except ZygoteGone:
                return ("unknown", None)

    def _start(self, timeout: float) -> None:
        self._drop()
        self._generation += 1
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # -P: the working folder is not put first on the module path (as for every child, see child.py)
            self._proc = subprocess.Popen([sys.executable, "-P", "-c", _ZYGOTE, self.module],
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          pass_fds=[theirs.fileno()], env={**os.environ, _SOCKET: str(theirs.fileno())})
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._sock = ours
        ready = self._receive(timeout)
        if ready != ("ready",):
            self._drop()
            raise ZygoteGone(f"the zygote of {self.module} did not start: {ready[1] if len(ready) > 1 else ready}")

    def _ask(self, request: tuple, fds: list[int], timeout: float) -> tuple:
        assert self._sock is not None
        try:
            socket.send_fds(self._sock, [pickle.dumps(request)], fds)
        except OSError:
            self._drop()
            raise ZygoteGone(f"the zygote of {self.module} has ended") from None
        return self._receive(timeout)

    def _receive(self, timeout: float) -> tuple:
        assert self._sock is not None
        self._sock.settimeout(timeout)
        try:
            data = self._sock.recv(_MAX_MESSAGE)
        except TimeoutError:  # stopped or hung: its children go with it
            self._drop(grace=0.0)
            raise ZygoteGone(f"the zygote of {self.module} did not answer in {timeout:g} s and was killed") from None
        except OSError:
            data = b""
        if not data:
            self._drop()
            raise ZygoteGone(f"the zygote of {self.module} has ended")
        return pickle.loads(data)

    def _drop(self, grace: float = 2.0) -> None:
        """Close the socket; the zygote then ends by itself within ``grace`` s, else it is killed."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


class Forked:
    """A child forked by a zygote, with the part of Popen's interface :class:`~mess.extract.child.Child` uses. It is
    killed and waited for through its pidfd; its exit code comes from its zygote, unless that one is gone (``lost``)."""

    def __init__(self, zygote: Zygote, pid: int, generation: int, pidfd: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.lost = False  # it ended, and its exit code went with its zygote
        self._zygote = zygote
        self._generation = generation
        self._pidfd = pidfd
        self._collecting = threading.Lock()
        weakref.finalize(self, os.close, pidfd)

    def poll(self) -> int | None:
        """Its exit code; None while it runs, and when its exit code is ``lost``."""
        if self.returncode is None and not self.lost and self._ended(0.0):
            self._collect()
        return self.returncode

    def kill(self) -> None:
        """SIGKILL it if it has not ended (its zygote is not asked)."""
        try:
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        except ProcessLookupError:  # ended and reaped
            pass

    def wait(self, timeout: float | None = None) -> int | None:
        """Its exit code once it has ended (None when ``lost``); subprocess.TimeoutExpired after ``timeout`` s."""
        if self.returncode is None and not self.lost:
            if not self._ended(timeout):
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
            self._collect()
        return self.returncode

    def _ended(self, timeout: float | None) -> bool:
        """Whether it has ended, waiting up to ``timeout`` s (None: until it does) for its pidfd to say so (poll, not
        select, which refuses descriptors numbered past 1024)."""
        pidfd = select.poll()
        pidfd.register(self._pidfd, select.POLLIN)
        return bool(pidfd.poll(None if timeout is None else timeout * 1000))

    def _collect(self) -> None:
        """Its exit code, from its zygote (which reaps it when asked, and hands the code over once: one thread asks);
        ``lost`` when the zygote is gone or hung."""
        with self._collecting:
            if self.returncode is not None or self.lost:
                return
            state, code = self._zygote.status(self.pid, self._generation)
            if state == "exited":
                self.returncode = code
            else:
                self.lost = True


_zygotes: dict[tuple[str, tuple[tuple[str, str], ...]], Zygote] = {}
_zygotes_lock = threading.Lock()


def zygote(module: str) -> Zygote:
    """This process's zygote for ``module`` under the current ``PYTHON*`` environment (``PYTHONPATH`` and the rest,
    which the interpreter reads as it starts, so a fork cannot take them on): started on its first fork. A zygote
    started under other such settings is closed once it has no child left, so a process that changes them keeps
    one zygote per module, not one per change."""
    startup = tuple(sorted((key, value) for key, value in os.environ.items() if key.startswith("PYTHON")))
    with _zygotes_lock:
        key = (module, startup)
        if key not in _zygotes:
            for old_key, old in list(_zygotes.items()):
                if old_key[0] == module and not old.busy():
                    old.close()
                    del _zygotes[old_key]
            _zygotes[key] = Zygote(module)
        return _zygotes[key]


def _close_all() -> None:
    for each in list(_zygotes.values()):
        each.close()


def _forget_in_forked_child() -> None:
    """A process forked from this one (a user's multiprocessing fork) must not share the zygotes' sockets."""
    global _zygotes_lock
    for each in _zygotes.values():
        if each._sock is not None:
            each._sock.close()
    _zygotes.clear()
    _zygotes_lock = threading.Lock()


atexit.register(_close_all)
os.register_at_fork(after_in_child=_forget_in_forked_child)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


# ---- the zygote process -------------------------------------------------------------------------------------------

_SOCKET = "MESS_ZYGOTE_SOCKET"  # the environment variable naming the zygote's socket descriptor
# Ctrl-C is for the caller and the children: the zygote ignores it from its first statement, before any import (a
# KeyboardInterrupt there printed a traceback above the caller's one-line summary)
_ZYGOTE = "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); from mess.extract.zygote import main; main()"


def _serve(module: str, sock: socket.socket) -> None:
    """Answer the caller's requests until its end of ``sock`` closes."""
    codes: dict[int, int] = {}  # children reaped, not yet reported
    running: set[int] = set()
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, _MAX_MESSAGE, 3)
        except InterruptedError:
            continue
        if not data:
            return
        _reap(running, codes)
        op, *args = pickle.loads(data)
        if op == "fork":
            try:
                pid = os.fork()
            except OSError as exc:
                reply: tuple = ("error", exc.strerror or str(exc))
            else:
                if pid == 0:
                    _become_child(module, sock, fds, *args)
                if args[3]:  # own_group: set here too, so it is in place when the caller hears the pid
                    try:
                        os.setpgid(pid, pid)
                    except OSError:  # it already ended
                        pass
                running.add(pid)
                reply = ("pid", pid)
            for fd in fds:
                os.close(fd)
        elif op == "status":
            pid = args[0]
            if pid in codes:
                reply = ("exited", codes.pop(pid))
            else:
                reply = ("running" if pid in running else "unknown", None)
        elif op == "busy":
            reply = ("busy", bool(running or codes))
        else:
            reply = ("error", f"unknown request {op!r}")
        try:
            sock.send(pickle.dumps(reply))
        except OSError:  # the caller is gone
            return


def _reap(running: set[int], codes: dict[int, int]) -> None:
    for pid in list(running):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            running.discard(pid)
            codes[pid] = os.waitstatus_to_exitcode(status)


def _limits() -> dict[int, tuple[int, int]]:
    """This process's resource limits (``ulimit``), by resource."""
    return {getattr(resource, name): resource.getrlimit(getattr(resource, name))
            for name in dir(resource) if name.startswith("RLIMIT_")}


def _become_child(module: str, sock: socket.socket, fds: list[int], cwd: str | None, env: dict[str, str],
                  limits: dict[int, tuple[int, int]], own_group: bool, has_stderr: bool) -> None:
    """In the forked child: take the caller's pipes, folder, environment and stderr, run ``module.main()``, exit."""
    code = 1
    interrupted = False
    try:
        sock.close()
        _die_with_zygote(os.getppid())
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if own_group:
            os.setpgid(0, 0)
        for target, fd in zip((0, 1, 2), fds[:3] if has_stderr else fds[:2], strict=False):
            os.dup2(fd, target)
        for fd in fds:
            os.close(fd)
        if cwd is not None:
            os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        for limit, values in limits.items():
            try:
                resource.setrlimit(limit, values)
            except (OSError, ValueError):  # a hard limit the caller raised since the zygote started (root only)
                pass
        tempfile.tempdir = None  # chosen again from the caller's environment
        importlib.import_module(module).main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:  # Ctrl-C reached the caller too, which says so: no traceback here
        interrupted = True
    except BaseException:  # noqa: BLE001 -- the child's own failure: printed as python -m would, then its exit code
        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
            if interrupted:  # ended by SIGINT, as Python does on an uncaught Ctrl-C
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGINT)
        finally:
            os._exit(code)


def _die_with_zygote(zygote_pid: int) -> None:
    """Have the kernel kill this child when the zygote ends (Linux; elsewhere it ends when its input closes)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != zygote_pid:  # the zygote ended before the request was in place
        os._exit(1)


def main() -> None:
    """The zygote (``python -c _ZYGOTE MODULE``): import the module, say ready, then fork on request."""
    module = sys.argv[1]
    sock = socket.socket(fileno=int(os.environ.pop(_SOCKET)))
    try:
        __import__(module)
    except BaseException as exc:  # noqa: BLE001 -- said to the caller, which names the module
        sock.send(pickle.dumps(("error", f"{type(exc).__name__}: {exc}")))
        return
    os.chdir("/")  # it holds no folder (one on a mount would keep it busy); each child takes the caller's
    sock.send(pickle.dumps(("ready",)))
    _serve(module, sock)

