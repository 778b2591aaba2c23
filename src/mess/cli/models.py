"""`mess models fetch NAME DIR`: download an Essentia preset's files or a MERT checkpoint, checked against pins."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mess.cli.common import failing, stdout
from mess.cli.options import given_folder

models_app = typer.Typer(help="Model files for machines with internet (Essentia ONNX presets, MERT).",
                         no_args_is_help=True)


@models_app.command("fetch")
def fetch_command(
    name: Annotated[str, typer.Argument(help="discogs-effnet, discogs-effnet-artist, vggish, essentia-musicnn-msd, "
                                        "mert-v1-95m or mert-v1-330m.")],
    folder: Annotated[Path, typer.Argument(help="Folder to download into (created if missing).",
                                                  parser=given_folder)],
) -> None:
    """Download NAME's files into FOLDER, checked against the pins in mess; a failed fetch leaves nothing behind."""
    from mess.models.essentia.fetch import FetchError, fetch

    with failing(FetchError):
        files = fetch(name, folder)
    for path in files:
        stdout.print(f"[green]ok[/] {path}")
    onnx = [p for p in files if p.suffix == ".onnx"]
    if onnx:
        stdout.print(f"use it with: mess extract DIR --model {onnx[0]}")
    else:
        stdout.print(f"use it with: mess extract DIR --model {folder}")


def register(app: typer.Typer) -> None:
    """Add the `models` command group to the main CLI."""
    app.add_typer(models_app, name="models")
