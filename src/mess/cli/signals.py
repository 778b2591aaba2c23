"""How the CLI ends on SIGTERM; imports nothing heavy, so the entry point sets it up before loading the commands."""

from __future__ import annotations

from types import FrameType


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
