"""A long-lived child process that answers pickled requests over its stdin and stdout.

Code that may crash or hang on one bad input (a decoder on a damaged file) runs in a
child: a crash ends only the child, a hang is cut by a timeout, and the caller learns
which request did it. Messages use ``multiprocessing.connection`` framing; anything a
library prints in the child goes to its stderr.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

from mess.extract.zygote import Forked, available, zygote

READY = ("ready",)  # what :func:`serve_requests` sends once its module is imported, before the first reply
START_TIMEOUT = 600.0  # seconds a child may take to start (imports, on a loaded machine) before it is stopped
ENDING_GRACE = 2.0  # seconds a child that closed its pipes may take to end (its exit handlers) before it is killed


class ChildDied(Exception):
    """The child ended (a crash, or a kill after a timeout) before it answered; the message says how."""


class ZygoteDied(ChildDied):
    """A warm child ended with the helper process that forked it (its zygote was killed, or stopped and replaced),
    its exit code lost: the request is not its fault, and may be sent again."""


class Child:
    """``python -m MODULE`` (or, ``warm``, a fork of its zygote) as a child answering one reply per request;
    restarted after it dies."""

    def __init__(self, module: str, own_group: bool = False, warm: bool = False) -> None:
        """A child running ``module`` (started on first use); the module calls :func:`serve_requests`.

        ``own_group``: start it in a process group of its own, so a Ctrl-C in the terminal reaches only the parent,
        which stops the child itself (the child was interrupted wherever it was, and printed that traceback).
        ``warm``: fork it from this process's zygote of ``module`` (:mod:`mess.extract.zygote`, which has the
        module's imports done) instead of starting a fresh interpreter: for children started often. Where the system
        cannot run a zygote (:func:`~mess.extract.zygote.available`), it starts cold all the same.
        """
        self.module = module
        self.own_group = own_group
        self.warm = warm
        self._proc: subprocess.Popen | Forked | None = None
        self._send: Connection | None = None
        self._recv: Connection | None = None
        self._ready = False

    @property
    def pid(self) -> int | None:
        """Process id of the running child (None before it starts or after it died)."""
        return self._proc.pid if self._proc is not None and _running(self._proc) else None

    def connect(self) -> tuple[Connection, Connection, bool]:
        """(send, receive) connections to the child, starting it if needed; True when it was just started."""
        if self._proc is not None and _running(self._proc) and self._send is not None and self._recv is not None:
            return self._send, self._recv, False
        self.stop()
        theirs_in, ours_in = os.pipe()
        try:
            ours_out, theirs_out = os.pipe()
        except OSError:
            os.close(theirs_in)
            os.close(ours_in)
            raise
        try:
            self._proc = self._launch(theirs_in, theirs_out)
        except BaseException:
            os.close(ours_in)
            os.close(ours_out)
            raise
        finally:
            os.close(theirs_in)
            os.close(theirs_out)
        self._ready = False
        self._send = Connection(ours_in, readable=False)
        self._recv = Connection(ours_out, writable=False)
        return self._send, self._recv, True

    def _launch(self, stdin: int, stdout: int) -> subprocess.Popen | Forked:
        if self.warm and available():
            return zygote(self.module).fork(stdin, stdout, self.own_group, START_TIMEOUT)
        # -P: the working folder is not put first on the module path (a concurrent.py there replaced the library's)
        return subprocess.Popen([sys.executable, "-P", "-m", self.module], stdin=stdin, stdout=stdout,
                                process_group=0 if self.own_group else None)

    def call(self, request: object, timeout: float) -> object:
        """Send ``request`` and return the reply; ChildDied when the child dies or takes over ``timeout`` s. The
        time counts from when the child is ready (its imports done, :data:`READY`), not from its start: a loaded
        machine slow to start one never makes a request time out (a start over :data:`START_TIMEOUT` s does)."""
        send, recv, _ = self.connect()
        try:
            if not self._ready:
                if not recv.poll(START_TIMEOUT):
                    self.stop()
                    raise ChildDied(f"did not start within {START_TIMEOUT:g} s and was stopped")
                if (said := recv.recv()) != READY:
                    self.stop()
                    raise ChildDied(f"answered {said!r} before it was ready and was stopped")
                self._ready = True
            send.send(request)
            if not recv.poll(timeout):
                self.stop()
                raise ChildDied(f"took longer than {timeout:g} s and was stopped")
            return recv.recv()
        except (EOFError, OSError):  # it closed its pipes: it is ending; its exit code, unless it lingers
            proc = self._proc
            code = self.stop(ENDING_GRACE)
            if isinstance(proc, Forked) and proc.lost:
                raise ZygoteDied("died with the helper process that forked it (its zygote ended)") from None
            raise ChildDied(f"died ({describe_exit(code)})") from None

    def hang_up(self) -> None:
        """Close the child's input: an idle child ends by itself (see :func:`serve_requests`)."""
        if self._send is not None:
            self._send.close()
            self._send = None

    def kill(self) -> None:
        """Kill the child if it runs, leaving its pipes to the thread that may be waiting on them (its call then
        raises ChildDied and it stops the child)."""
        proc = self._proc
        if proc is not None and _running(proc):
            proc.kill()

    def stop(self, grace: float = 0.0) -> int | None:
        """Stop the child if it runs: its input closed, it may end by itself within ``grace`` seconds (and clean up
        after itself, as its private numba cache), else it is killed. Its exit code (None when there was none)."""
        for conn in (self._send, self._recv):
            if conn is not None:
                conn.close()
        self._send = self._recv = None
        if self._proc is None:
            return None
        if grace > 0:
            try:
                self._proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        if _running(self._proc):
            self._proc.kill()
        code = self._proc.wait()
        self._proc = None
        return code


def _running(proc: subprocess.Popen | Forked) -> bool:
    """Whether ``proc`` has not ended (a forked child whose zygote ended has, its exit code lost)."""
    return proc.poll() is None and not (isinstance(proc, Forked) and proc.lost)


def stop_all(children: list[Child], grace: float) -> None:
    """Stop ``children`` together: every input closed at once, then ``grace`` seconds in all for them to end by
    themselves (an idle one ends at once), the rest killed."""
    for child in children:
        child.hang_up()
    deadline = time.monotonic() + grace
    for child in children:
        child.stop(max(0.0, deadline - time.monotonic()))


def describe_exit(code: int | None) -> str:
    """``exit code 3``, or ``killed by SIGSEGV`` for a signal."""
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def serve_requests(handle: Callable[[object], object]) -> None:
    """The child's side: answer each request on stdin with ``handle(request)`` on stdout until stdin closes.

    Stray prints go to stderr, so they never corrupt the reply stream. :data:`READY` goes first: the parent's
    time-out of a request starts then, not while the child imports.
    """
    out_fd = os.dup(1)
    os.dup2(2, 1)
    inbox, outbox = Connection(os.dup(0), writable=False), Connection(out_fd, readable=False)
    outbox.send(READY)
    while True:
        try:
            request = inbox.recv()
        except EOFError:
            return
        outbox.send(handle(request))
