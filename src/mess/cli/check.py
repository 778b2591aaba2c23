"""`mess check`: is the store whole, and `--repair` what is not."""

from __future__ import annotations

from typing import Annotated

import typer

from mess.cli.common import DEFAULT_STORE_PATH, JsonOpt, StoreOpt, console, emit_json, fail, plain
from mess.search.index import delete_index, stale_indexes
from mess.store import FeatureStore, StoreError
from mess.store.check import full_check, repair
from mess.store.feature_store import CATALOG_ADVICE


def check_command(
    store: StoreOpt = DEFAULT_STORE_PATH,
    fix: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Drop untrusted vectors (re-embedded by the "
            "next extract), cut unreferenced rows, delete stale indexes.",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Check the store: row files against the catalog, NaN/inf vectors, rows claimed twice, stale indexes.

    Exit status: 0 when the store is whole (or was repaired), 1 when damage remains.
    """
    try:
        fs = FeatureStore(store, readonly=not fix, verify=False)
    except StoreError as exc:
        fail(str(exc))
    try:
        problems = full_check(fs)
        stale = [] if any(p.kind == "catalog" for p in problems) else stale_indexes(fs)
        actions: list[str] = []
        if fix and not any(p.kind == "catalog" for p in problems) and (problems or stale):
            actions = repair(fs, problems)
            for path in stale:
                delete_index(path)
                actions.append(f"deleted stale index {path.name}")
            problems = full_check(fs)
            stale = stale_indexes(fs)
    finally:
        fs.close()
    damaged = [p for p in problems if p.damage]
    if json_out:
        emit_json(
            {
                "store": str(store),
                "ok": not damaged,
                "repaired": actions,
                "problems": [
                    {"kind": p.kind, "run": p.run_id, "damage": p.damage, "message": p.message} for p in problems
                ]
                + [
                    {"kind": "stale-index", "run": None, "damage": False, "message": f"{p.name} is out of date"}
                    for p in stale
                ],
            }
        )
    else:
        for line in actions:
            console.print(f"[green]repaired:[/] {plain(line)}")
        for p in problems:
            console.print(f"[{'red' if p.damage else 'yellow'}]{p.kind}:[/] {plain(p.message)}")
        for path in stale:
            console.print(f"[yellow]stale-index:[/] {plain(path.name)} is out of date")
        advice = CATALOG_ADVICE if any(p.kind == "catalog" for p in damaged) else "run `mess check --repair`"
        verdict = "[green]ok[/]" if not damaged else f"[red]damaged[/]: {plain(advice)}"
        console.print(f"{plain(store)}: {verdict}")
    if damaged:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add `check` to the main CLI."""
    app.command("check")(check_command)
