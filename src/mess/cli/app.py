"""The `mess` typer application: one sub-module per stage registers its commands here."""

from __future__ import annotations

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
from mess.cli.common import plain_help, version_option

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
