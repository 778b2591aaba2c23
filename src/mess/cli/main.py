"""The `mess` entry point. It imports nothing heavy: Ctrl-C or SIGTERM while the commands load (a few tenths of a
second) ends as it does later, in one line, instead of with Python's traceback."""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings
from typing import TYPE_CHECKING, NoReturn

from mess.cli.signals import reader_gone, terminate, terminated

if TYPE_CHECKING:
    import typer

# Third-party warnings that tell a user nothing to act on, as (message start, module) regular expressions;
# every other warning is shown.
QUIET_WARNINGS: tuple[tuple[str, str], ...] = (
    # the MLP probe's fits often stop at max_iter: its held-out R^2 already says how well it did
    (r"Stochastic Optimizer: Maximum iterations", r"sklearn\.neural_network"),
)

INTERRUPTED = ("interrupted: stopped before the command finished; each file and store change it made is whole (the "
               "one before, or the new), and running it again finishes it")


def __getattr__(name: str) -> typer.Typer:
    """``mess.cli.main.app``: the typer application, loaded on first use."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from mess.cli.app import app
    return app


def _stopped() -> None:
    """Exit as an interrupted command does: 143 (128 + SIGTERM) after SIGTERM, else 130."""
    sys.exit(128 + signal.SIGTERM if terminated() else 130)


def _reader_left() -> NoReturn:
    """End quietly with status 141 (128 + SIGPIPE, what a shell reports for a tool its reader left: `yes | head`),
    stdout sent to /dev/null first so that the interpreter's last flush does not fail again (Python's recipe)."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # a stdout with no descriptor (a test runner's buffer): nothing to redirect
        pass
    sys.exit(128 + signal.SIGPIPE)


def main() -> None:
    """Entry point with quiet third-party logging and without the warnings of :data:`QUIET_WARNINGS`; SIGTERM ends
    a command as Ctrl-C does, with exit status 143 (128 + SIGTERM) instead of 130; a reader of its output that
    goes away (`mess export /dev/stdout | head`) ends it quietly, with 141 (:func:`_reader_left`)."""
    signal.signal(signal.SIGTERM, terminate)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for message, module in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=UserWarning, module=module)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        from mess.cli.app import app
        app()
    except KeyboardInterrupt:  # while the commands load, or typer builds them: before any command could say a word
        print(INTERRUPTED, file=sys.stderr)
        _stopped()
    except SystemExit as exc:  # typer ends any KeyboardInterrupt in a command with 130
        if reader_gone(exc.__context__):  # click's and rich's exits (1) on a broken pipe
            _reader_left()
        if exc.code != 130:
            raise
        if isinstance(getattr(exc.__context__, "__cause__", None), KeyboardInterrupt):  # no command said a word
            from mess.cli.common import console

            console.print(f"[yellow]interrupted[/]{INTERRUPTED.removeprefix('interrupted')}")
        _stopped()
    except OSError as exc:  # the system refused a file a command reads or writes: say which, in one line
        from mess.cli.common import console, os_reason, plain

        console.print(f"[bold red]error:[/] {plain(os_reason(exc))}")
        sys.exit(1)
