"""`mess export`: a run's vectors with track ids, paths and tags, as npz, parquet or CSV."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mess.cli.common import (
    console,
    emit_json,
    fail,
    is_stdout,
    json_clash,
    not_embedded_note,
    open_store,
    os_reason,
    plain,
)
from mess.cli.options import DEFAULT_STORE_PATH, STDOUT, JsonOpt, ModelOpt, StoreOpt, output_path
from mess.constants import counted

if TYPE_CHECKING:
    from mess.store import FeatureStore, Run
    from mess.store.export import ExportSummary


def export_command(
    output: Annotated[Path, typer.Argument(help="File to write (.npz, .parquet or .csv; - for stdout, with --format).",
                                                   parser=output_path)],
    model: ModelOpt = None,
    layers: Annotated[list[str] | None, typer.Option("--layers", "-l", help="Layer names or indexes (repeat, or "
                                                     "comma-separated); default all.")] = None,
    segments: Annotated[bool, typer.Option("--segments", help="One row per window instead of per "
                                           "track.")] = False,
    fused: Annotated[bool, typer.Option("--fused", help="The fused vectors of `mess fuse apply` instead of "
                                        "layers.")] = False,
    fmt: Annotated[str | None, typer.Option("--format", help="npz, parquet or csv (default: from OUTPUT's "
                                            "extension).")] = None,
    store: StoreOpt = DEFAULT_STORE_PATH,
    as_json: JsonOpt = False,
) -> None:
    """Export vectors for research: per track (or per window), every layer, some, or the fused vectors, with ids,
    paths and tags."""
    json_clash(output, as_json)
    chosen = fmt or output.suffix.lstrip(".").lower()
    if not chosen and is_stdout(output):
        fail("stdout has no extension to tell the format: pass --format npz, parquet or csv")
    if not chosen and not output.is_dir():  # a folder is said so by export_vectors
        fail(f"{output} has no extension to tell the format: name it {output}.npz (or .parquet, .csv), or pass "
             "--format")
    if chosen in ("npz", "parquet") and is_stdout(output) and sys.stdout.isatty():  # as gzip refuses to
        fail(f"stdout is a terminal and the export is binary ({chosen}): redirect it (> vectors.{chosen}, "
             "| program) or name a file")
    names = [x.strip() for item in layers or [] for x in item.split(",") if x.strip()] or None
    with open_store(store) as fs:
        run = fs.run(model)
        runs = [r.id for r in fs.runs() if r.model == run.model]
        in_use, extract_as = fs.run(run.model).id, fs.extract_options(run)
        try:
            summary = _export(fs, run, output, chosen, names, segments, fused)
        except OSError as exc:
            fail(f"cannot write {output}: {os_reason(exc, output)}")
    if as_json:
        emit_json({"model": run.model, "run_id": run.id, "revision": run.revision, "policy": run.policy,
                   **summary.__dict__, "layers": list(summary.layers)})
        return
    unit = "window" if segments else "track"
    which = f" run {run.id} of {len(runs)}" if len(runs) > 1 else ""
    vectors = "fused vectors" if fused else counted(len(summary.layers), "layer")
    console.print(f"{counted(summary.rows, unit)} of {counted(summary.tracks, 'track')} x {vectors} of "
                  f"{plain(run.model)}{which} -> {plain(str(summary.path))}")
    if len(runs) > 1:
        _which_run_note(run, runs, in_use)
    not_embedded_note(summary.files_not_embedded, run.model, store, extract_as)
    if summary.tracks_not_fused:
        n = summary.tracks_not_fused
        console.print(f"[yellow]{counted(n, 'track has', 'tracks have')} no fused vector (extracted since `mess fuse "
                      f"apply`) and {'is' if n == 1 else 'are'} not in the rows; `mess fuse apply --model "
                      f"{plain(run.model)}` adds them[/]")
    if summary.files_failed:
        console.print(f"[yellow]{counted(summary.files_failed, 'file')} failed to extract and "
                      f"{'is' if summary.files_failed == 1 else 'are'} not in the rows; "
                      "`mess info --failures` says why[/]")


def _export(fs: FeatureStore, run: Run, output: Path, fmt: str, names: list[str] | None, segments: bool,
            fused: bool) -> ExportSummary:
    """:func:`mess.store.export.export_vectors` into ``output``; into stdout itself where ``output`` is stdout (``-``,
    or the file stdout goes to: :func:`mess.store.paths.replacing` writes into it where it is)."""
    from mess.store.export import export_vectors

    if not is_stdout(output):
        return export_vectors(fs, run, output, fmt, layers=names, segments=segments, fused=fused)
    summary = export_vectors(fs, run, STDOUT, fmt, layers=names, segments=segments, fused=fused)
    return dataclasses.replace(summary, path=output)


def _which_run_note(run: Run, runs: list[int], in_use: int) -> None:
    """Say which of its model's runs (window policies or revisions) was exported, and why that one (``in_use``: the
    run the model's name alone picks)."""
    from mess.extract.runs import run_policy

    policy, newest = run_policy(run), max(runs)
    why = "the one covering the most tracks"
    if run.id != in_use:
        why = f"as --model {run.model}@{run.id} picked (the name alone picks run {in_use})"
    elif run.id != newest:
        why += f"; extract the collection again with run {newest}'s settings to move to it"
    console.print(f"[dim]{plain(run.model)} has {len(runs)} runs (`mess info` lists them): exported run {run.id}, "
                  f"revision {plain(run.revision)}, up to {policy.max_windows} windows of {policy.window_seconds:g} s, "
                  f"{plain(why)}[/]")


def register(app: typer.Typer) -> None:
    """Add `export` to the main CLI."""
    app.command("export")(export_command)
