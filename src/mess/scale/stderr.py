"""Lines that Ray's C++ core writes to file descriptor 2 itself (past Python's logging and ``sys.stderr``), dropped
by what they say while the rest of stderr passes as it comes."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

_LOG_LINE = b"["  # how Ray's C++ log lines start: '[2026-12-06 18:10:55,255 E 9826 9826] core_worker.cc:...'


@contextlib.contextmanager
def dropping(marker: bytes) -> Iterator[None]:
    """While the block runs, the lines written to file descriptor 2 (by this process's C++ code, Python's
    ``sys.stderr`` and logging alike) that hold ``marker`` are dropped; the others reach stderr in the order written,
    as they come (a part of a line at once, a progress bar redrawn in place included, unless it starts as Ray's log
    lines do). Enter it once the processes this one starts are running: a process started meanwhile would write into
    its pipe. Where descriptor 2 cannot be duplicated (none open), the block runs as it is."""
    sys.stderr.flush()
    try:
        real = os.dup(2)
    except OSError:
        yield
        return
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)
    copier = threading.Thread(target=_copy, args=(read, real, marker), daemon=True, name="mess-stderr")
    copier.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real, 2)  # the pipe's last writer gone: the copier reads to its end and stops
        copier.join(timeout=10)
        os.close(real)


def _copy(read: int, out: int, marker: bytes) -> None:
    """Copy the pipe ``read`` to ``out`` but the lines holding ``marker``; a part of a line is held back only while it
    may be such a line (it starts as Ray's log lines do). Reads to the end whatever happens to ``out`` (a reader of
    stderr that went away): a pipe left full would block every writer of stderr."""
    tail = b""
    with open(read, "rb", buffering=0) as pipe:
        while chunk := pipe.read(1 << 16):
            *lines, tail = (tail + chunk).split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if marker not in line)
            if tail and not tail.startswith(_LOG_LINE):
                kept, tail = kept + tail, b""
            _write(out, kept)
    _write(out, tail)


def _write(out: int, data: bytes) -> None:
    """All of ``data`` to descriptor ``out``; nothing where it cannot be written."""
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(out, data):]
