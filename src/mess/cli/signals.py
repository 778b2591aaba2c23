"""How the CLI ends on SIGTERM; imports nothing heavy, so the entry point sets it up before loading the commands."""

from __future__ import annotations

import errno
from types import FrameType
from typing import TypeGuard


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a service manager stopping mess), raised where the main thread is: a command ends as on
    Ctrl-C, its cleanup run (temp files removed, what extract embedded committed, what it kept said)."""


_TERMINATED: list[int] = []  # the SIGTERMs received


def terminate(signum: int, frame: FrameType | None) -> None:
    """The CLI's SIGTERM handler: raise :class:`Terminated`."""
    record_terminated(signum)
    raise Terminated


def record_terminated(signum: int) -> None:
    """Record a SIGTERM that a command's own handler took (`fuse train` stops at its next step): the process then
    exits with 143, as after :func:`terminate`."""
    _TERMINATED.append(signum)


def terminated() -> bool:
    """Whether this process received SIGTERM."""
    return bool(_TERMINATED)


def reader_gone(exc: BaseException | None) -> TypeGuard[OSError]:
    """Whether ``exc`` is a write refused because the reader of a pipe went away (EPIPE: `mess ... | head`): the
    CLI then ends quietly, as a Unix tool killed by SIGPIPE does (:func:`mess.cli.main.main`)."""
    return isinstance(exc, OSError) and exc.errno == errno.EPIPE
