"""The `mess` command line: one sub-module per stage registers its commands here."""

from __future__ import annotations

import logging
import os
import warnings

import typer

from mess.cli import artists, check, demo_data, extract, fuse, probe, search, serve

app = typer.Typer(
    name="mess",
    help="Music Embedding Similarity Search: extract multi-layer embeddings, discover what each layer "
    "encodes, and search for similar tracks and artists with evidence.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for module in (extract, check, probe, search, artists, fuse, serve, demo_data):
    module.register(app)


def main() -> None:
    """Entry point with quiet third-party logging."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()
