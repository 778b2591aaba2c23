"""`mess extract` and `mess info`: fill the feature store and show what it holds."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NamedTuple, NoReturn

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from mess.audio.names import name_key
from mess.audio.windows import WindowPolicy
from mess.cli.common import console, device_missing, emit_json, fail, failing, open_store, plain, stdout, warn
from mess.cli.options import DEFAULT_STORE_PATH, JsonOpt, StoreOpt, given_path, given_text, number_in
from mess.constants import AUDIO_EXTENSIONS, DEFAULT_MAX_WINDOWS, DEFAULT_WINDOW_SECONDS, audio_suffix
from mess.models.registry import DEVICES, MODEL_NAMES, ModelError, check_device, load_model

_CUE_TRACK = re.compile(rb"^\s*TRACK\s+\d+\s+AUDIO\b", re.MULTILINE | re.IGNORECASE)  # a cue sheet's track
EXTENSIONS = ", ".join(sorted(e.lstrip(".") for e in AUDIO_EXTENSIONS))  # what find_audio finds, in words

if TYPE_CHECKING:  # the pipeline imports the decoders (PyAV): only `mess extract` needs them, not every command
    from mess.extract.pipeline import ExtractSummary
    from mess.models.base import EmbeddingModel
    from mess.store import FeatureStore, Run  # the store (numpy): imported where used, so `mess --help` needs neither

ModelNameOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help=f"{', '.join(MODEL_NAMES)}, a local model folder, an Essentia .onnx file (JSON beside it), "
        "or a name a plugin registers (entry point group mess.models).",
        parser=given_text,
    ),
]
PresetOpt = Annotated[
    str | None,
    typer.Option(
        help="Front end of a .onnx model: discogs-effnet, discogs-effnet-artist, vggish, "
        "essentia-musicnn-msd (default: from its metadata)."
    ),
]
MaxWindowsOpt = Annotated[int, typer.Option(min=1, help="Most windows per track (long files are sampled evenly).")]
PrecisionOpt = Annotated[
    str, typer.Option(help="fp32, or bf16 / fp16 for MERT, and for musicnn on --device cuda (autocast; on the CPU "
                           "musicnn runs on ONNX Runtime and refuses it); stored as its own run.")
]
WaitOpt = Annotated[
    bool, typer.Option("--wait/--no-wait", help="Wait for another writer's store lock, or exit 1 at once.")
]


def extract_command(
    folders: Annotated[list[Path], typer.Argument(help=f"Audio files or folders ({EXTENSIONS}).",
                                                    parser=given_path)],
    model: ModelNameOpt = "musicnn",
    preset: PresetOpt = None,
    store: StoreOpt = DEFAULT_STORE_PATH,
    device: Annotated[str, typer.Option(help=f"{DEVICES}.")] = "cpu",
    batch_size: Annotated[int, typer.Option(min=1, help="Windows per forward pass.")] = 4,
    workers: Annotated[int, typer.Option(min=1, help="Decoding threads feeding the model.")] = 2,
    window: Annotated[float, typer.Option(min=WindowPolicy.min_seconds,  # no window shorter than the shortest track
                                          max=WindowPolicy.max_decode_seconds,  # nor longer than what is decoded
                                          parser=number_in(WindowPolicy.min_seconds, WindowPolicy.max_decode_seconds),
                                          help="Full-context window length in seconds.")] = DEFAULT_WINDOW_SECONDS,
    max_windows: MaxWindowsOpt = DEFAULT_MAX_WINDOWS,
    prune: Annotated[bool, typer.Option(help="Forget catalogued files under FOLDERS that no longer exist (a FOLDER "
                                             "may be gone: one moved).")] = False,
    engine: Annotated[str, typer.Option(help="local, or ray for a Ray cluster.")] = "local",
    address: Annotated[str | None, typer.Option(
        help="Ray cluster address (with --engine ray), e.g. auto; default: RAY_ADDRESS, else a local cluster.")] = None,
    precision: PrecisionOpt = "fp32",
    wait: WaitOpt = True,
    json_out: Annotated[bool, typer.Option("--json", help="Also print the run's outcome as JSON on stdout (counts, "
                                                          "failures, warnings, skipped files).")] = False,
) -> None:
    """Embed every new or changed audio file; unchanged files are skipped by content hash.

    Exit status: 0 when every file was embedded or unchanged, 3 when the run finished but some files failed (each \
named with its reason; `mess info --failures`), 1 when the run could not start or go on (no files, unknown model, \
store busy or damaged).
    """
    from mess.extract.pipeline import ExtractInterrupted
    from mess.models.hub import quiet

    skips: list[str] = []
    paths, hidden, linked = _audio_files(folders, prune, skips.append)
    walk = _Walk(skips, hidden, _cued_albums(paths))
    if engine not in ("local", "ray"):
        fail(f"unknown engine {engine!r}; use local or ray")
    with failing(ModelError, ValueError, ImportError):
        policy = WindowPolicy(window_seconds=window, max_windows=max_windows)
        embedder = _embedder(model, preset, device, engine, precision)
    # Per-file problems are named in the run's summary, not as log lines over the progress bar; quiet() restores
    # the level after, so a caller running the command in-process (CliRunner, a notebook) keeps its warnings.
    with quiet("mess"), open_store(store, readonly=False) as fs, ExitStack() as held:
        waited = _lock(fs, held, "mess extract --engine ray" if engine == "ray" else "mess extract", wait)
        fs.record_roots(folders)  # where playlists may name tracks by relative paths (either engine)
        prune_under = [*folders, *linked] if prune else []
        if engine == "ray":
            summary = _run_ray(fs, paths, model, embedder, policy, batch_size, device, address, precision, prune_under)
        else:
            try:
                summary = _run_local(fs, paths, embedder, policy, batch_size, workers, prune_under)
            except ExtractInterrupted as stop:
                if json_out:
                    emit_json(_outcome(fs, embedder, policy, stop.summary, walk, [], 130))
                _stop_interrupted(stop.summary, len(paths), embedder.info.name, store)
        _print_summary(summary, embedder.info.name, store, waited)
        _report(fs, embedder, policy, summary, walk, json_out)
    if summary.failed:
        raise typer.Exit(3)


class _Walk(NamedTuple):
    """What the walk of the folders found beside the files to extract: the files and folders it skipped (said), the
    hidden audio files left out and the files a cue sheet splits into tracks (file, sheet, tracks)."""

    skips: list[str]
    hidden: list[Path]
    albums: list[tuple[Path, Path, int]]


def _report(fs: FeatureStore, embedder: EmbeddingModel, policy: WindowPolicy, summary: ExtractSummary, walk: _Walk,
            json_out: bool) -> None:
    """After the summary: the notes on hidden files, cue sheets, catalogued files no longer on disk and a run no
    answer uses, then the JSON outcome when asked for."""
    from mess.extract.pipeline import missing_files

    if walk.hidden:
        warn(_hidden_note(walk.hidden))
    if walk.albums:
        warn(_cued_note(walk.albums))
    gone = missing_files(fs)
    _note_missing(gone)
    _unused_run_warning(fs, embedder, policy)
    if json_out:
        emit_json(_outcome(fs, embedder, policy, summary, walk, gone, 3 if summary.failed else 0))


def _audio_files(folders: list[Path], prune: bool = False,
                 on_skip: Callable[[str], None] | None = None) -> tuple[list[Path], list[Path], list[Path]]:
    """The audio files under ``folders``, the audio files skipped there as hidden and the folders the walk reached
    through symbolic links (resolved: their files are catalogued under them, so --prune prunes there too); a clean
    error when a folder is missing (unless it is only there to be pruned: one moved, with others left) or when they
    hold none. Each file or folder the walk skips (a link to nothing, an unreadable folder) is warned of and told to
    ``on_skip``."""
    from mess.audio.discover import find_audio

    missing = [str(f) for f in folders if not f.exists()]
    if missing and not (prune and len(missing) < len(folders)):
        links = [f"{f}: a link to {os.readlink(f)}, which is missing" for f in missing if os.path.islink(f)]
        others = [f for f in missing if not os.path.islink(f)]  # `ls` lists a dangling link: say it is one
        fail("; ".join([f"no such file or folder: {', '.join(others)}"] * bool(others) + links))
    hidden: list[Path] = []
    linked: list[Path] = []

    def skipped(message: str) -> None:
        warn(message)
        if on_skip is not None:
            on_skip(message)

    paths = find_audio([f for f in folders if f.exists()],
                       on_skip=skipped, on_hidden=hidden.append, on_linked=linked.append)
    found = set(paths)
    # one named on the command line is in (realpath: a hidden link to itself is no RuntimeError, as resolve() raises)
    hidden = [p for p in dict.fromkeys(hidden) if Path(os.path.realpath(p)) not in found]
    if not paths:
        fail(f"no audio files ({EXTENSIONS}) under {', '.join(map(str, folders))}"
             + (f"; {_hidden_note(hidden)}" if hidden else ""))
    return paths, hidden, linked


def _hidden_note(hidden: list[Path], shown: int = 3) -> str:
    """One line counting the audio files skipped as hidden, naming the first ``shown``."""
    from mess.store.paths import printable

    names = ", ".join(printable(str(p)) for p in hidden[:shown]) + (", ..." if len(hidden) > shown else "")
    return (f"{len(hidden)} hidden audio file{'s' * (len(hidden) > 1)} (dot-files or in dot-folders) skipped: "
            f"{names}; name such a file or dot-folder itself to extract it")


def _outcome(fs: FeatureStore, embedder: EmbeddingModel, policy: WindowPolicy, summary: ExtractSummary,
             walk: _Walk, gone: list[str], status: int) -> dict:
    """What `mess extract --json` prints: the run's counts and failures as the text summary gives them, the run the
    files went to (None when every file failed), the walk's skipped and hidden files, the files a cue sheet splits
    into tracks, the catalogued files no longer on disk and the exit status."""
    from mess.extract.runs import run_policy

    info = embedder.info
    run = next((r for r in fs.runs() if r.model == info.name and (r.revision, run_policy(r)) == (info.revision,
                                                                                                  policy)), None)
    return {
        "store": str(fs.root),
        "model": info.name,
        "run_id": None if run is None else run.id,
        "embedded": summary.done,
        "copies": summary.copies,
        "unchanged": summary.skipped,
        "failed": [{"path": path, "reason": reason} for path, reason in summary.failed],
        "moved": summary.moved,
        "removed": summary.removed,
        "warnings": summary.warnings,
        "skipped": walk.skips,
        "hidden": [str(p) for p in walk.hidden],
        "cue_sheets": [{"path": str(path), "cue": str(cue), "tracks": n} for path, cue, n in walk.albums],
        "not_on_disk": gone,
        "audio_seconds": round(summary.audio_seconds, 3),
        "seconds": round(summary.wall_seconds, 3),
        "exit_status": status,
    }


def _cued_albums(paths: list[Path]) -> list[tuple[Path, Path, int]]:
    """Each audio file with a cue sheet beside it that marks several tracks in it ('Album.cue' or 'Album.flac.cue'
    by 'Album.flac', in any case, as Windows players find it: a whole album in one file), with the sheet and its count
    of tracks. Each folder is listed once."""
    sheets: dict[Path, dict[str, str]] = {}
    found = []
    for path in paths:
        if path.parent not in sheets:
            try:
                names = os.listdir(path.parent)
                sheets[path.parent] = {n[:-4].casefold(): n for n in names if n[-4:].lower() == ".cue"}
            except OSError:
                sheets[path.parent] = {}
        for stem in (path.stem, path.name):
            name = sheets[path.parent].get(stem.casefold())
            if name is None or name == path.name:  # none, or the sheet itself named on the command line
                continue
            try:
                tracks = len(_CUE_TRACK.findall((path.parent / name).read_bytes()))
            except OSError:  # unreadable: not a sheet mess can go by
                continue
            if tracks > 1:
                found.append((path, path.parent / name, tracks))
                break
    return found


def _cued_note(albums: list[tuple[Path, Path, int]], shown: int = 3) -> str:
    """One line saying that files a cue sheet splits into tracks are each embedded whole, naming the first few."""
    from mess.store.paths import printable

    names = ", ".join(f"{printable(str(path))} ({n} tracks in {cue.name})" for path, cue, n in albums[:shown])
    many = len(albums) > 1
    return (f"{len(albums)} file{'s' * many} with a cue sheet beside {'them' if many else 'it'}: {names}"
            f"{', ...' if len(albums) > shown else ''}; mess embeds {'each' if many else 'it'} whole, as one track "
            "(it does not split by cue sheets: split the file, e.g. with shnsplit, for a track each)")


def _lock(fs: FeatureStore, held: ExitStack, command: str, wait: bool) -> float:
    """Take the store's write lock for the run, held until ``held`` closes (waiting for another writer, saying so,
    unless not ``wait``); the seconds waited for that writer, 0.0 when there was none. The run's clock and rate start
    after it."""
    told: list[str] = []

    def waiting(message: str) -> None:
        told.append(message)
        console.print(f"[yellow]{plain(message)}[/]")

    began = time.monotonic()
    held.enter_context(fs.writing(command, wait=wait, on_wait=waiting))
    return time.monotonic() - began if told else 0.0


def _embedder(model: str, preset: str | None, device: str, engine: str, precision: str) -> EmbeddingModel:
    """The model at the asked precision (where Ray workers do the embedding, what the driver needs of it:
    :class:`mess.scale.gpu.DriverModel`), its licence said."""
    check_device(device)  # also the one Ray workers are given
    onnx = model.lower().endswith(".onnx")  # ONNX Runtime, not torch: its loader names what its providers lack
    if engine == "local" and not onnx and (problem := device_missing(device)):  # torch's was a traceback (cuda:0)
        fail(problem)
    from mess.scale.gpu import DriverModel, with_precision

    if preset and engine != "local":
        raise ValueError("--preset is not passed on to Ray workers; name the .onnx file after its preset")
    embedder: EmbeddingModel
    if engine == "local":
        embedder = with_precision(load_model(model, device=device, preset=preset), precision, device=device)
    else:  # the Ray workers load it: here its info, read without loading it where the registry can, for their device
        embedder = DriverModel(model, precision, device)
    if embedder.info.licence:
        console.print(f"[yellow]licence:[/] {plain(embedder.info.name)}: {embedder.info.licence}")
    return embedder


def _run_ray(fs: FeatureStore, paths: list[Path], model: str, embedder: EmbeddingModel, policy: WindowPolicy,
             batch_size: int, device: str, address: str | None, precision: str,
             prune_under: list[Path]) -> ExtractSummary:
    """Extract on a Ray cluster (the store's write lock held; pruning under ``prune_under`` once every file is
    catalogued)."""
    from mess.scale.ray_extract import ScaleError, extract_ray

    with failing(ScaleError):
        return extract_ray(fs, paths, model, policy, batch_size=batch_size, device=device, address=address,
                           precision=precision, info=embedder.info, source=embedder.source(), prune_under=prune_under)


def _run_local(
    fs: FeatureStore,
    paths: list[Path],
    embedder: EmbeddingModel,
    policy: WindowPolicy,
    batch_size: int,
    workers: int,
    prune_under: list[Path],
) -> ExtractSummary:
    """Run the local pipeline (the store's write lock held) under a progress bar counting audio seconds, with an ETA.
    The total (the seconds the files to embed hold, by their headers) is read by the run's decoders, beside the first
    files."""
    from mess.extract.pipeline import extract

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.fields[planned]} audio-s, {task.fields[files]} files"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[rate]}"),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(plain(f"extract {embedder.info.name}"), total=None, files=f"0/{len(paths)}", rate="",
                            planned="?")
        start = bar.get_time()

        def hook(done: int, audio_seconds: float) -> None:
            elapsed = max(bar.get_time() - start, 1e-6)
            bar.update(
                task,
                completed=audio_seconds,
                files=f"{done}/{len(paths)}",
                rate=f"{audio_seconds / elapsed:.1f} audio-s/s",
            )

        summary = extract(
            fs,
            paths,
            embedder,
            policy,
            batch_size=batch_size,
            workers=workers,
            prune_under=prune_under,
            on_progress=hook,
            on_total=lambda seconds: bar.update(task, total=seconds, planned=f"{seconds:.0f}"),
        )
        done = bar.tasks[0].completed  # skipped and failed files are done too: the bar ends full
        bar.update(task, total=done, planned=f"{done:.0f}")
        return summary


def _print_summary(summary: ExtractSummary, model: str, store: Path, waited: float) -> None:
    """The run's counts and rate (its time after the lock was taken), the wait for another writer's lock, then its
    warnings and failures."""
    console.print(
        f"[green]{summary.done} embedded[/], "
        + (f"{summary.copies} {'copy of a file' if summary.copies == 1 else 'copies of files'} embedded in "
           "this run (skipped), " if summary.copies else "")
        + f"{summary.skipped} unchanged (skipped), "
        f"[red]{len(summary.failed)} failed[/]"
        + (f", {summary.moved} moved" if summary.moved else "")
        + (f", {summary.removed} removed" if summary.removed else "")
        + f" in {summary.wall_seconds:.1f} s ({summary.realtime_factor:.1f} audio-s/s)"
        + (f" after waiting {waited:.1f} s for another writer" if waited else "")
        + f" -> {plain(store)} {plain(f'[{model}]')}"
    )
    for warning in _grouped(summary.warnings):
        warn(warning)
    for _path, reason in summary.failed:
        console.print(f"[red]failed:[/] {plain(reason)}")


def _stop_interrupted(summary: ExtractSummary, files: int, model: str, store: Path) -> NoReturn:
    """Say what an interrupted run kept and that a rerun goes on from there, and exit with 130 (as a shell does on
    SIGINT)."""
    rest = files - summary.handled
    left = (f"{rest} of {files} files not done: `mess extract` again embeds them (the kept ones are skipped)" if rest
            else f"all {files} files were done")  # stopped after the last file (`--prune`'s step, the summary)
    console.print(f"[yellow]interrupted[/]: {summary.done} embedded and kept, {summary.skipped + summary.copies} "
                  f"unchanged (skipped), {len(summary.failed)} failed -> {plain(store)} {plain(f'[{model}]')}; "
                  f"{left}")
    raise typer.Exit(130)


def _grouped(warnings: list[str], named: int = 3) -> list[str]:
    """Per-file warnings ('PATH: reason'), those of more than ``named`` files with the same reason as one line that
    counts them and names the first few (a library of 22.05 kHz files would otherwise print a line per file)."""
    by_reason: dict[str, list[str]] = {}
    for warning in warnings:
        name, reason = _file_and_reason(warning)
        by_reason.setdefault(reason, []).append(name)
    out = []
    for reason, names in by_reason.items():
        if len(names) <= named or not all(names):
            out += [f"{name}: {reason}" if name else reason for name in names]
        else:
            out.append(f"{len(names)} files ({', '.join(names[:named])} and {len(names) - named} more): {reason}")
    return out


def _file_and_reason(warning: str) -> tuple[str, str]:
    """A per-file warning's file and reason, split at the last ': ' that follows an audio file's name (a path may
    hold ': ', and so may a reason: 'cut short: ...'); at the first ': ' when none does; ('', warning) without one."""
    cut = len(warning)
    while (cut := warning.rfind(": ", 0, cut)) > 0:
        if audio_suffix(warning[:cut]):
            return warning[:cut], warning[cut + 2:]
    name, sep, reason = warning.partition(": ")
    return (name, reason) if sep else ("", warning)


def _note_missing(gone: list[str]) -> None:
    """Warn that catalogued files are gone from disk: they still answer searches (and fill playlists)."""
    from mess.store.paths import printable

    if gone:
        many = len(gone) > 1
        console.print(f"[yellow]warning:[/] {len(gone)} catalogued file{'s are' if many else ' is'} no longer on disk "
                      f"(moved, renamed, deleted or replaced by a link; {plain(printable(gone[0]))}"
                      f"{', ...' if many else ''}) but still "
                      f"answer{'' if many else 's'} searches: `mess extract FOLDER --prune` forgets those under "
                      "FOLDER (name a folder that was moved too)")


def _unused_run_warning(fs: FeatureStore, embedder: EmbeddingModel, policy: WindowPolicy) -> None:
    """Warn when the model answers from another of its runs (another window policy or revision, covering more
    tracks): the files embedded now are in no answer, and `mess extract` run again only says they are unchanged."""
    from mess.extract.runs import run_policy
    from mess.store import StoreError

    info = embedder.info
    try:
        used = fs.run(info.name)
    except StoreError:  # nothing extracted (every file failed)
        return
    if (used.revision, run_policy(used)) == (info.revision, policy):
        return
    this = next((r for r in fs.runs() if r.model == used.model and (r.revision, run_policy(r)) == (info.revision,
                                                                                                    policy)), None)
    if this is None:
        return

    def shape(run: Run) -> str:
        windows, n = run_policy(run), len(fs.tracks(run))
        return f"{windows.max_windows} x {windows.window_seconds:g} s windows, {n} track{'s' * (n != 1)}"

    old = run_policy(used)
    fix = (f"extract with --window {old.window_seconds:g} --max-windows {old.max_windows} to add files to it, or "
           if used.revision == info.revision else "")
    console.print(f"[yellow]warning:[/] {plain(info.name)} answers from its run {used.id} ({shape(used)}), not this "
                  f"one ({shape(this)}): the files embedded in this run are in no answer until it covers more tracks; "
                  f"{fix}extract the whole collection again to move to this run")


def info_command(
    store: StoreOpt = DEFAULT_STORE_PATH,
    failures: Annotated[bool, typer.Option("--failures", help="List every failed file with its reason.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Show the tracks, runs and failures in the feature store."""
    with open_store(store) as fs:
        summary = store_summary(fs)
    if json_out:
        emit_json(summary)
        return
    table = Table(title=f"{plain(summary['store'])}: {summary['tracks']} tracks, {summary['artists']} artists")
    for col in ("run", "model", "revision", "windows", "layers", "tracks", "failed"):
        table.add_column(col)
    for run in summary["runs"]:
        table.add_row(
            f"{run['id']}{'' if run['in_use'] else ' (not default)'}",
            plain(run["model"]),
            _short_revision(run["revision"]),
            f"{run['max_windows']} x {run['window_seconds']:g} s",
            str(run["layers"]),
            str(run["tracks"]),
            str(len(run["failures"])),
        )
    stdout.print(table)
    if not all(run["in_use"] for run in summary["runs"]):
        example = next(run["select"] for run in summary["runs"] if not run["in_use"])
        console.print("[dim]a model with two runs (another window policy or revision) answers from the one "
                      "covering the most tracks: extract the collection again to move to the newer one, or pick "
                      f"a run with --model NAME@RUN (here {plain(example)}; run:RUN also does)[/]")
    for run in summary["runs"]:
        for failure in run["failures"] if failures else []:
            stdout.print(f"[red]{run['model']}:[/] {plain(failure['reason'])}")
    if not failures and any(r["failures"] for r in summary["runs"]):
        console.print("[dim]`mess info --failures` lists why each failed file failed[/]")


def store_summary(fs: FeatureStore) -> dict:
    """What ``mess info`` shows, as plain data (``in_use``: the run commands answer from for its model; ``select``:
    the --model value that picks the run)."""
    from mess.artists.profiles import artist_of
    from mess.extract.runs import run_policy

    tracks = fs.tracks()
    in_use = {fs.run(model).id for model in {run.model for run in fs.runs()}}
    return {
        "store": str(fs.root),
        "tracks": len(tracks),
        "artists": len({name_key(name) for t in tracks if (name := artist_of(t)[0])}),  # as `mess artists` groups
        "runs": [
            {
                "id": run.id,
                "model": run.model,
                "revision": run.revision,
                "window_seconds": run_policy(run).window_seconds,
                "max_windows": run_policy(run).max_windows,
                "in_use": run.id in in_use,
                "select": f"{run.model}@{run.id}",  # what --model picks this run with
                "layers": len(run.layer_names),
                "tracks": len(fs.tracks(run)),
                "failures": [{"path": p, "reason": r} for p, r in fs.failures(run)],
            }
            for run in fs.runs()
        ],
    }


def _short_revision(revision: str) -> str:
    """A 40-hex commit shortened to 12, keeping suffixes such as ``+bf16``."""
    commit, plus, rest = revision.partition("+")
    return (commit[:12] if len(commit) == 40 else commit) + plus + rest


def register(app: typer.Typer) -> None:
    """Add `extract` and `info` to the main CLI."""
    app.command("extract")(extract_command)
    app.command("info")(info_command)
