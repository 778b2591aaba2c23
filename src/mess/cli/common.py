"""Shared CLI pieces: the --store option, the console, and clean error exits."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from mess.store import DEFAULT_STORE, FeatureStore
from mess.store.paths import printable

console = Console(stderr=True, soft_wrap=True)  # one message, one line (logs and greps stay whole)

StoreOpt = Annotated[
    Path,
    typer.Option("--store", "-s", help="Feature store folder (env MESS_STORE).", envvar="MESS_STORE"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
DEFAULT_STORE_PATH = Path(os.environ.get("MESS_STORE", DEFAULT_STORE))


def emit_json(data: object) -> None:
    """Print ``data`` as JSON on stdout; NaN and infinities become null, paths strings."""
    def clean(v: object) -> object:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(a): clean(b) for a, b in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, (str, Path)):
            return printable(str(v))
        return v

    typer.echo(json.dumps(clean(data), indent=2))


def plain(text: object) -> str:
    """User data (a path, a tag) made safe for rich markup and the terminal: '[/x]' and caf\xe9 print as such."""
    return escape(printable(str(text)))


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a one-line error (no traceback) and exit."""
    console.print(f"[bold red]error:[/] {plain(message)}")
    raise typer.Exit(code)


@contextmanager
def open_store(path: Path, *, readonly: bool = True) -> Iterator[FeatureStore]:
    """Open the store for a command; its errors become clean CLI errors, lock waits a note."""
    from mess.store import StoreBusy, StoreError

    try:
        store = FeatureStore(path, readonly=readonly, on_wait=lambda m: console.print(f"[yellow]{plain(m)}[/]"))
    except StoreError as exc:
        fail(str(exc))
    try:
        yield store
    except (StoreError, StoreBusy) as exc:
        fail(str(exc))
    finally:
        store.close()
