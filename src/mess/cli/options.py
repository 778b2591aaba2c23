"""The options several commands share, declared once (typer reads them from the ``Annotated`` types)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from mess.constants import DEFAULT_STORE  # not from mess.store: a command's --help loads no numpy


def given_path(raw: str | Path) -> Path:
    """A path that is not the empty string: an unset shell variable (`--store "$STORE"`) would otherwise mean the
    current folder without a word."""
    return Path(_given(raw))


STDOUT = Path("/dev/stdout")  # what -o - stands for


def output_path(raw: str | Path) -> Path:
    """A file to write: a given path in a folder that exists (:func:`in_a_folder`), ``-`` standing for stdout
    (:data:`STDOUT`), as for every Unix tool (it wrote a file named '-')."""
    return STDOUT if str(raw) == "-" else in_a_folder(raw)


def in_a_folder(raw: str | Path, made: bool = False) -> Path:
    """A given path to write (a file, a prefix, or with ``made`` a folder mess makes) whose folder exists: a typo in
    a folder's name was made into a new folder tree without a word. The folder is missing when the nearest folder
    above it that exists can be searched (a file in the way, or an unreadable folder, is left to the writer's own
    message)."""
    path = given_path(raw)
    folder = path.expanduser().parent
    if os.path.lexists(folder):
        return path
    above = next(p for p in folder.parents if os.path.lexists(p))
    if above.is_dir() and os.access(above, os.X_OK):
        raise typer.BadParameter(f"the folder {folder} does not exist; create it first (mess makes "
                      + ("the folder named, not the folders above it)" if made else "no folder for a file it writes)"))
    return path


def folder_to_make(raw: str | Path) -> Path:
    """A folder to write into, made when missing, in a folder that exists (:func:`in_a_folder`)."""
    return in_a_folder(raw, made=True)


def given_folder(raw: str | Path) -> Path:
    """A folder to write into: a given path that is not an existing file."""
    path = given_path(raw)
    if path.is_file():
        raise typer.BadParameter(f"{path} is a file, not a folder")
    return path


def given_text(raw: str) -> str:
    """A name that is not the empty string (`--model ''` would otherwise mean the default model)."""
    return _given(raw)


def number_in(low: float, high: float) -> Callable[[str], float]:
    """A parser of a number in [low, high]: 'nan' is not a number (typer's range check let it through to 'should
    be <= high'). Give the option ``min=low, max=high`` as well: its help shows the range."""
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if math.isnan(value):
            raise typer.BadParameter(f"{raw!r} is not a number")
        if not low <= value <= high:
            raise typer.BadParameter(f"{raw} is not in the range {low:g} to {high:g}")
        return value
    return parse


def _given(raw: str | Path) -> str:
    if str(raw) == "":
        raise typer.BadParameter("is empty (an unset shell variable?)")
    return str(raw)


StoreOpt = Annotated[
    Path,
    typer.Option("--store", "-s", help="Feature store folder (env MESS_STORE).", envvar="MESS_STORE",
                 parser=given_path),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model (or local model folder) whose vectors to use, or one of its runs as NAME@RUN_ID (ids: `mess "
        "info`) (default: the best extracted; see `mess config`).",
        parser=given_text,
    ),
]
AspectOpt = Annotated[str | None, typer.Option("--aspect", "-a", help="The layer `mess probe` chose for this aspect.")]
FusedOpt = Annotated[bool, typer.Option("--fused", help="The fused vectors of `mess fuse`.")]
RadioWindowOpt = Annotated[int, typer.Option("--window", min=1, help="An artist does not come back within this many "
                                           "tracks (1: only never twice in a row) while another "
                                           "artist's track is left.")]
CutoffOpt = Annotated[int, typer.Option("-k", min=1, help="Cut-off of precision@k and nDCG@k.")]
SEED_MAX = 2**32 - 1  # seeds numpy and torch both take (numpy refuses negative ones, torch ones beyond 64 bits)
DEFAULT_STORE_PATH = Path(os.environ.get("MESS_STORE") or DEFAULT_STORE)  # an empty MESS_STORE is unset
