"""The `mess` command line: one sub-module per stage registers its commands here."""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings

import typer

from mess.cli import (
    artists,
    check,
    config,
    demo_data,
    export,
    extract,
    fuse,
    models,
    mpd,
    playlist,
    probe,
    search,
    serve,
)
from mess.cli.common import console, os_reason, plain, plain_help, terminate, terminated, version_option

# Third-party warnings that tell a user nothing to act on, as (message start, module) regular expressions;
# every other warning is shown.
QUIET_WARNINGS: tuple[tuple[str, str], ...] = (
    # the MLP probe's fits often stop at max_iter: its held-out R^2 already says how well it did
    (r"Stochastic Optimizer: Maximum iterations", r"sklearn\.neural_network"),
)

app = typer.Typer(
    name="mess",
    help="Music Embedding Similarity Search: extract multi-layer embeddings, discover what each layer "
    "encodes, and search for similar tracks and artists with evidence.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for module in (extract, check, probe, search, artists, fuse, serve, demo_data, models, playlist, mpd, config,
               export):
    module.register(app)
app.callback()(version_option)
plain_help(app)


def main() -> None:
    """Entry point with quiet third-party logging and without the warnings of :data:`QUIET_WARNINGS`; SIGTERM ends
    a command as Ctrl-C does, with exit status 143 (128 + SIGTERM) instead of 130."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for message, module in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=UserWarning, module=module)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, terminate)
    try:
        app()
    except SystemExit as exc:  # typer ends any KeyboardInterrupt with 130
        if exc.code != 130:
            raise
        if isinstance(getattr(exc.__context__, "__cause__", None), KeyboardInterrupt):  # no command said a word
            console.print("[yellow]interrupted[/]: stopped before the command finished; each file and store change "
                          "it made is whole (the one before, or the new), and running it again finishes it")
        sys.exit(128 + signal.SIGTERM if terminated() else 130)
    except OSError as exc:  # the system refused a file a command reads or writes: say which, in one line
        console.print(f"[bold red]error:[/] {plain(os_reason(exc))}")
        sys.exit(1)
