"""`mess check`: is the store whole, and `--repair` what is not."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mess.cli.common import console, emit_json, failing, open_store, plain, stdout
from mess.cli.options import DEFAULT_STORE_PATH, JsonOpt, StoreOpt

if TYPE_CHECKING:
    from mess.search.health import StoreHealth
    from mess.store.reclaim import Reclaimed


def check_command(
    store: StoreOpt = DEFAULT_STORE_PATH,
    fix: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Drop untrusted vectors (re-embedded by the "
            "next extract), cut unreferenced rows, record missing checksums, delete stale indexes.",
        ),
    ] = False,
    reclaim: Annotated[
        bool,
        typer.Option(
            "--reclaim",
            help="Also free the vectors of old contents no catalogued file holds (files re-encoded or edited since "
            "they were embedded: a file reverted later is embedded again) and say how many bytes that gave back "
            "(before the check; with --repair, after a repair that leaves the store whole).",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Check the store: row files against the catalog, NaN/inf vectors, checksums, rows claimed twice, stale indexes
    and indexes lacking tracks added since they were built.

    Exit status: 0 when the store is whole (or was repaired), 1 when damage remains.
    """
    from mess.search.health import behind_message, check_store  # here: it loads faiss, which others may not need
    from mess.store import StoreError

    reclaimed = _reclaim(store) if reclaim and not fix else None  # with --repair: once the store is whole
    with failing(StoreError):
        health = check_store(store, fix=fix, on_wait=lambda m: console.print(f"[yellow]{plain(m)}[/]"))
    if reclaim and fix and not health.damaged:
        reclaimed = _reclaim(store)
    if json_out:
        extra = {"reclaimed": {"actions": reclaimed.lines, "freed_bytes": reclaimed.freed}} if reclaimed else {}
        emit_json({"store": str(store), **health.to_dict(), **extra})
    else:
        for line in health.repaired:
            stdout.print(f"[green]repaired:[/] {plain(line)}")
        if reclaimed is not None:
            for line in reclaimed.lines:
                stdout.print(f"[green]reclaimed:[/] {plain(line)}")
            stdout.print(f"[green]reclaimed:[/] {_freed(reclaimed)}")
        for p in health.problems:
            stdout.print(f"[{'red' if p.damage else 'yellow'}]{p.kind}:[/] {plain(p.message)}")
        for path in health.stale:
            stdout.print(f"[yellow]stale-index:[/] {plain(path.name)} is out of date")
        for index in health.behind:
            stdout.print(f"[yellow]behind-index:[/] {plain(behind_message(index))}")
        stdout.print(f"{plain(store)}: {_verdict(health)}")
    if health.damaged:
        raise typer.Exit(1)


def _reclaim(store: Path) -> Reclaimed:
    """Free the old contents' vectors of the store at ``store`` (:mod:`mess.store.reclaim`), waiting for a writer."""
    from mess.store.reclaim import reclaim

    with open_store(store, readonly=False, create=False) as fs:
        return reclaim(fs)


def _freed(reclaimed: Reclaimed) -> str:
    """The bytes a reclaim gave back."""
    size = f"{reclaimed.freed / 1e6:.1f} MB" if reclaimed.freed >= 1e6 else f"{reclaimed.freed / 1e3:.1f} kB"
    return f"{size} ({reclaimed.freed} bytes) given back to the file system"


def _verdict(health: StoreHealth) -> str:
    """The last line of `mess check`: whole or damaged, and the one thing to run next."""
    from mess.store.errors import CATALOG_ADVICE

    advice = CATALOG_ADVICE if any(p.kind == "catalog" for p in health.damaged) else "run `mess check --repair`"
    if health.damaged:
        return f"[red]damaged[/]: {plain(advice)}"
    if any(p.kind == "hard-links" for p in health.problems):  # every write refuses
        return ("[green]whole[/], [yellow]its files are shared with another folder (above)[/]: nothing can write to "
                "it until one of the two is a real copy (`cp -a`)")
    if any(p.kind == "config" for p in health.problems):  # every command that names no model refuses
        return "[green]whole[/], [yellow]its settings cannot be used (above)[/]: `mess config` sets or unsets them"
    if any(p.kind == "lost-commits" for p in health.problems):
        return ("[green]whole[/], [yellow]catalog.sqlite-wal lost commits (above)[/]: `mess extract` embeds "
                "their files again, `mess check --repair` clears the note")
    unembedded = [p for p in health.problems if p.kind == "not-embedded"]
    if unembedded and all(p.gone for p in unembedded):  # nothing to embed: the files are no longer on disk
        return ("[green]whole[/], [yellow]answers leave out the files named above, no longer on disk[/]: "
                "`mess extract FOLDER --prune` forgets them")
    if unembedded:  # answers leave these out until `mess extract FOLDER --model M` (the default model is another's)
        models = dict.fromkeys(p.extract for p in unembedded if not p.gone)
        commands = " and ".join(f"`mess extract FOLDER {plain(m)}`" for m in models)
        return (f"[green]whole[/], [yellow]answers leave out the files named above[/]: {commands} "
                f"{'embeds' if len(models) == 1 else 'embed'} them")
    if any(p.kind == "unread-now" for p in health.problems):
        return ("[green]whole[/], [yellow]answers hold the vectors of what the files named above held before[/]: "
                "the next `mess extract` reads them again")
    if any(p.kind == "orphan-rows" for p in health.problems):
        return ("[green]whole[/], [yellow]rows past the catalog's last (above)[/]: the next `mess extract` or "
                "`mess check --repair` cuts them")
    if any(p.kind == "temp-files" for p in health.problems):
        return "[green]whole[/], [yellow]temp files of interrupted writes left[/]: `mess check --repair` deletes them"
    if any(p.kind == "not-a-folder" for p in health.problems):
        return "[green]whole[/], [yellow]no index can be saved[/]: `mess check --repair` moves the file aside"
    if health.stale:  # whole, but searches skip these indexes (exact search) until rebuilt
        return (f"[green]whole[/], [yellow]{len(health.stale)} index(es) out of date[/]: `mess index` "
                "rebuilds them and .augment.npz files, `mess index --rerank` .rerank.npz files "
                "(`mess check --repair` deletes them)")
    if health.behind:  # whole, but searches pass these indexes by (exact search in memory) until updated
        return (f"[green]whole[/], [yellow]{len(health.behind)} index(es) lack tracks added since they were "
                "built[/]: `mess index` (as named above) adds them")
    if any(p.kind == "stale-aspect-map" for p in health.problems):
        return "[green]whole[/], [yellow]aspect maps out of date (above)[/]: `mess probe` maps them again"
    return "[green]ok[/]"


def register(app: typer.Typer) -> None:
    """Add `check` to the main CLI."""
    app.command("check")(check_command)
