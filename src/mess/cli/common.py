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

from mess.store import DEFAULT_STORE, FeatureStore

console = Console(stderr=True)

StoreOpt = Annotated[
    Path,
    typer.Option("--store", "-s", help="Feature store folder (env MESS_STORE).", envvar="MESS_STORE"),
]
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
        return str(v) if isinstance(v, Path) else v

    typer.echo(json.dumps(clean(data), indent=2))


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a one-line error (no traceback) and exit."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@contextmanager
def open_store(path: Path, *, readonly: bool = True) -> Iterator[FeatureStore]:
    """Open the store for a command; its errors become clean CLI errors."""
    from mess.store import StoreError

    try:
        store = FeatureStore(path, readonly=readonly)
    except StoreError as exc:
        fail(str(exc))
    try:
        yield store
    except StoreError as exc:
        fail(str(exc))
    finally:
        store.close()
