"""The options several commands share, declared once (typer reads them from the ``Annotated`` types)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from mess.store import DEFAULT_STORE

StoreOpt = Annotated[
    Path,
    typer.Option("--store", "-s", help="Feature store folder (env MESS_STORE).", envvar="MESS_STORE"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model (or local model folder) whose vectors to use, or one of its runs as NAME@RUN_ID (ids: `mess "
        "info`) (default: the best extracted; see `mess config`).",
    ),
]
AspectOpt = Annotated[str | None, typer.Option("--aspect", "-a", help="The layer `mess probe` chose for this aspect.")]
FusedOpt = Annotated[bool, typer.Option("--fused", help="The fused vectors of `mess fuse`.")]
SEED_MAX = 2**32 - 1  # seeds numpy and torch both take (numpy refuses negative ones, torch ones beyond 64 bits)
DEFAULT_STORE_PATH = Path(os.environ.get("MESS_STORE", DEFAULT_STORE))
