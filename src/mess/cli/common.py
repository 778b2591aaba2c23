"""Shared CLI pieces: the --store option, the console, and clean error exits."""

from __future__ import annotations

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
