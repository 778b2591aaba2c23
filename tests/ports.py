"""Loopback ports for tests, without the race of a port found free, closed, then handed to a server or dialled: any
process (the other xdist worker, another run on the machine) could take it in between."""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

import pytest

_SERVING = re.compile(r" at (http://\S+):(\d+)/ \(OpenAPI")  # `mess serve`'s line naming the address it listens at


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as the block runs: bound, never listening, so no other
    process can listen there meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def served_at(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    """The base URL (``http://HOST:PORT``) that ``proc``, a `mess serve --port 0` whose stderr is a text pipe, says it
    serves at (the system picked the port as the server bound it); the lines before it are read and dropped, and
    ``proc.stderr`` becomes a pipe relaying what it says after (see :func:`_relayed`: the server never blocks on a
    full pipe that no one reads). The test fails, with what the server said, when it ends first or says nothing of it
    within ``timeout`` seconds (it is killed then)."""
    assert proc.stderr is not None, "serve's stderr must be a pipe"
    said: list[str] = []
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        for line in proc.stderr:
            said.append(line)
            if match := _SERVING.search(line):
                proc.stderr = _relayed(proc.stderr)
                return f"{match[1]}:{match[2]}"
    finally:
        watchdog.cancel()
    proc.wait()
    pytest.fail(f"mess serve said no address (exit {proc.returncode}): {''.join(said)[-2000:]}")


def _relayed(stream: TextIO) -> TextIO:
    """A text pipe that gives what ``stream`` says from here on: a daemon thread reads ``stream`` as it comes and keeps
    it in memory until the test reads the pipe (``communicate()``, ``read()``) or drops it, so the writer never waits
    on 64 KB unread."""
    said: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    read_end, write_end = os.pipe()

    def drain() -> None:
        with stream:  # closed at the server's end
            for line in stream:
                said.put(line)
        said.put(None)

    def relay() -> None:
        with open(write_end, "w", encoding=stream.encoding, errors=stream.errors) as out:
            try:
                while (line := said.get()) is not None:
                    out.write(line)
                    out.flush()
            except BrokenPipeError:  # the test dropped the pipe unread
                pass

    threading.Thread(target=drain, daemon=True).start()
    threading.Thread(target=relay, daemon=True).start()
    return open(read_end, encoding=stream.encoding, errors=stream.errors)
