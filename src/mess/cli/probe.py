"""`mess probe`: which layer of a model encodes which musical aspect (and the controls that say how much is learned)."""

from __future__ import annotations

import errno
import resource
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from mess.cli.common import console, device_missing, emit_json, fail, failing, open_store, plain, stdout
from mess.cli.options import DEFAULT_STORE_PATH, SEED_MAX, JsonOpt, ModelOpt, StoreOpt, given_text
from mess.constants import counted

if TYPE_CHECKING:  # the probing stack (scikit-learn, librosa) loads only when a probe command runs
    from mess.probing.report import ProbeReport
    from mess.probing.study import ProbeOptions
    from mess.probing.user_probe import TargetReport
    from mess.probing.validation import FactorResult
    from mess.store import FeatureStore, Run


def probe_command(
    model: ModelOpt = None,
    store: StoreOpt = DEFAULT_STORE_PATH,
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds (grouped by album, else artist).")] = 5,
    group_by: Annotated[str, typer.Option(
        "--group-by", help="What folds keep together: auto (album, else artist), album, artist or none.")] = "auto",
    layers: Annotated[list[str] | None, typer.Option(
        "--layers", "-l", help="Layer names or indices, repeatable or comma-separated (default: all).")] = None,
    control: Annotated[list[str] | None, typer.Option(
        "--control", "-c", help="shuffled, random-init or none; repeatable (default: shuffled).")] = None,
    probe: Annotated[str, typer.Option(help="ridge (linear) or mlp (one hidden layer, slower).")] = "ridge",
    source: Annotated[str | None, typer.Option(
        help="Model folder to build the random-init twin from, when the run came from a local folder.")] = None,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX,
                                     help="Seed for shuffling, fold assignment and random init.")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="Processes for audio targets; layers probed at once.")] = 2,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or mps (random-init extraction only).")] = "cpu",
    targets: Annotated[Path | None, typer.Option(
        "--targets", "-t", help="CSV of your own per-track targets (an id, path or file column; numbers or labels) "
        "to probe instead of the proxy targets.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Probe every layer for every proxy target (or your own, --targets); store the best layer per aspect for
    `mess similar --aspect`."""
    from mess.models.registry import ModelError, check_device
    from mess.probing.probes import ProbeError
    from mess.probing.report import write_report
    from mess.probing.study import ProbeOptions, probed_every_layer, save_aspect_map, unmapped_reason

    with failing(ModelError):
        check_device(device)  # before the targets: the random-init control would find it only after them
    controls = _controls(control, device)
    if not (store / "catalog.sqlite").exists():
        fail(f"no feature store at {store} (run `mess extract` first)")
    wanted = _split(layers or []) or None
    if layers and not wanted:  # `--layers ,` would otherwise probe every layer
        fail("--layers names no layer: give layer names or indices, or leave it out for all layers")
    options = ProbeOptions(folds=folds, layers=wanted, source=source, controls=controls,
                           probe=probe, seed=seed, workers=workers, device=device, group_by=group_by)
    if targets is not None:
        _probe_own_targets(store, model, targets, options, json_out)
        return
    with open_store(store, readonly=False) as fs:
        run = fs.run(model)
        for layer in wanted or []:
            run.layer_index(layer)
        with failing(ProbeError), _open_files_named():
            report = _run_with_progress(fs, run, options)
        reason = unmapped_reason(run, report)
        # reports first, each file replaced whole, then the map: a kill between them leaves the old map beside the
        # new reports (readers say so: the map records the report's probed_at), never a map whose probe has no report
        paths = write_report(report, fs.reports_dir, partial=not probed_every_layer(run, report))
        stored = save_aspect_map(fs, run, report)
    if json_out:
        _warn_stale(report)
        emit_json({**report.to_dict(), "aspect_map_stored": stored, "aspect_map_note": reason,
                   "weak_aspects": _weak(report) if stored else {},
                   "files": {k: str(v) for k, v in paths.items()}})
        return
    _print_report(report, paths, reason)


def _controls(control: list[str] | None, device: str) -> tuple[str, ...]:
    """The controls asked for (shuffled by default; none: no control), refused in one line where they contradict
    each other or name a device this machine lacks."""
    controls = _split(control or ["shuffled"])
    if "none" in controls and len(controls) > 1:  # 'none' silently dropped the others, unknown names included
        from mess.probing.study import CONTROLS

        others = [c for c in controls if c != "none"]
        if unknown := [c for c in others if c not in CONTROLS]:
            fail(f"unknown control {unknown[0]!r}; use {', '.join(CONTROLS)} or none")
        fail(f"--control none runs no control, and {', '.join(others)} asks for one: give none alone, or leave it out")
    if "random-init" in controls and (problem := device_missing(device)):
        fail(problem)  # before the targets: the random-init extraction met it only after them, as a traceback
    return () if "none" in controls else controls


def _probe_own_targets(store: Path, model: str | None, targets: Path, options: ProbeOptions, json_out: bool) -> None:
    """`mess probe --targets FILE`: every layer for the file's targets; a report of its own, no aspect map."""
    from mess.probing.probes import ProbeError
    from mess.probing.user_probe import probe_targets, write_target_report
    from mess.probing.user_targets import read_targets, unknown_note

    if not targets.is_file():
        what = "a folder" if targets.is_dir() else "no such file"
        fail(f"{targets}: {what} (--targets takes a CSV with an id, path or file column and target columns)")
    with open_store(store, readonly=True) as fs:
        run = fs.run(model)
        for layer in options.layers or []:
            run.layer_index(layer)
        with failing(ProbeError):
            found = read_targets(fs, targets)
            with _progress() as hook:
                report = probe_targets(fs, run, found, options, on_progress=hook)
        paths = write_target_report(report, fs.reports_dir)
    if json_out:
        emit_json({**report.to_dict(), "files": {k: str(v) for k, v in paths.items()}})
        return
    _print_targets(report)
    if note := unknown_note(found):
        console.print(f"[yellow]{plain(note)}[/]")
    console.print("report: " + ", ".join(plain(str(p)) for p in paths.values()))


def _print_targets(report: TargetReport) -> None:
    import numpy as np

    from mess.probing.report import SHUFFLED, TRAINED

    trained, best = report.conditions[TRAINED], report.best()
    table = Table(title=f"{report.model} ({report.revision[:20]}): your targets ({plain(Path(report.source).name)}), "
                        f"out of fold (numbers R^2, labels accuracy), {report.probe} probe, seed {report.seed}")
    table.add_column("layer")
    for info in report.targets:
        table.add_column(f"{info.name} ({'R^2' if info.kind == 'number' else 'acc'})", justify="right")
    for i, layer in enumerate(trained.layers):
        cells = []
        for j, name in enumerate(trained.targets):
            value = trained.r2[i, j]
            text = "-" if np.isnan(value) else f"{value:.2f}"
            cells.append(f"[bold green]{text}[/]" if best.get(name, ("",))[0] == layer else text)
        table.add_row(layer, *cells)
    stdout.print(table)
    shuffled = report.best(SHUFFLED) if SHUFFLED in report.conditions else {}
    summary = Table(title="best layer per target (chance: the better of always the training folds' most frequent label "
                          "and guessing at their frequencies; ceiling: the most any probe can reach on these folds)")
    for col in ("target", "kind", "tracks", "best layer", "score", "shuffled best", "chance", "ceiling", "folds"):
        summary.add_column(col, justify="right" if col in ("tracks", "score", "shuffled best", "chance",
                                                           "ceiling") else "left")
    for info in report.targets:
        layer, score = best.get(info.name, ("-", float("nan")))
        control = shuffled.get(info.name)
        summary.add_row(plain(info.name), info.kind, str(info.n_tracks), plain(layer),
                        "-" if np.isnan(score) else f"{score:.2f}", "-" if control is None else f"{control[1]:.2f}",
                        "-" if info.chance is None else f"{info.chance:.2f}",
                        "-" if info.ceiling is None else f"{info.ceiling:.2f}", plain(info.folds))
    stdout.print(summary)
    for info in report.targets:
        if info.ceiling is not None and info.ceiling < 0.5:
            console.print(f"[yellow]warning:[/] {plain(info.name)}: only {info.ceiling:.0%} of its tracks have a label "
                          f"that a training track of their fold has ({plain(info.folds)}): the label follows the "
                          "groups the folds keep apart, so no probe can learn it here (--group-by artist or none "
                          "splits otherwise)")


@contextmanager
def _progress() -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar per stage, and the hook that moves it."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def hook(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                label = stage if stage in ("targets", "random-init extraction") else f"probe {stage}"
                tasks[stage] = bar.add_task(label, total=total)
            bar.update(tasks[stage], completed=done)

        yield hook


@contextmanager
def _open_files_named() -> Iterator[None]:
    """Too many open files (the audio targets' worker processes past `ulimit -n`) as one line naming the limit and
    the ways round it, as `mess extract` says it; other errors as they are."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.EMFILE:
            raise
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        fail(f"{exc.strerror} while probing: this process may open {limit} files (`ulimit -n`), too few for the "
             "processes that compute the audio targets: raise the limit (or pass --workers 1) and run `mess probe` "
             "again")


def _split(values: list[str]) -> tuple[str, ...]:
    """Repeatable, comma-separated option values, de-duplicated in order."""
    return tuple(dict.fromkeys(x.strip() for v in values for x in v.split(",") if x.strip()))


def _warn_stale(report: ProbeReport) -> None:
    """Name each track left out because its file changed or went since extraction, and count them."""
    from mess.probing.target_cache import STALE

    stale = [(path, reason) for path, reason in report.missing if reason in STALE]
    for path, reason in stale:
        console.print(f"[yellow]warning:[/] {plain(path)} {reason}: probed without it "
                      "(`mess extract` updates the collection)")
    if stale:
        console.print(f"[yellow]{len(stale)} of {counted(report.n_tracks + len(report.missing), 'track')} skipped[/] "
                      "(changed or removed since extraction)")


def _run_with_progress(fs: FeatureStore, run: Run, options: ProbeOptions) -> ProbeReport:
    from mess.probing.study import probe_run

    with _progress() as hook:
        return probe_run(fs, run, options, on_progress=hook)


def _print_report(report: ProbeReport, paths: dict[str, Path], unmapped: str | None) -> None:
    import numpy as np

    from mess.probing.report import TRAINED, aspect_matrix
    from mess.probing.target_cache import STALE
    from mess.probing.targets import ASPECTS

    trained = report.conditions[TRAINED]
    matrix = aspect_matrix(trained)
    best = {c.aspect: c for c in report.aspects}
    table = Table(title=f"{report.model} ({report.revision[:20]}): aspect score = mean max(R^2, 0) out of fold, "
                        f"{report.n_tracks} tracks, {report.folds}, {report.probe} probe")
    table.add_column("layer")
    for aspect in ASPECTS:
        table.add_column(aspect, justify="right")
    for i, layer in enumerate(trained.layers):
        cells = []
        for k, aspect in enumerate(ASPECTS):
            value = matrix[i, k]
            text = "-" if np.isnan(value) else f"{value:.2f}"
            won = aspect in best and best[aspect].layer == layer and best[aspect].score > 0  # a tie of zeros: none
            cells.append(f"[bold green]{text}[/]" if won else text)
        table.add_row(layer, *cells)
    stdout.print(table)
    stdout.print(_controls_table(report))
    for name, note in report.notes.items():
        console.print(f"[dim]{plain(name)}:[/] {plain(note)}")
    _warn_stale(report)
    failed = [reason for _, reason in report.missing if reason not in STALE]
    if failed:
        console.print(f"[yellow]{counted(len(failed), 'track')} without targets[/] (first: {plain(failed[0])})")
    if unmapped is not None:
        console.print(f"[yellow]aspect map not stored: {plain(unmapped)}; the aspect map stored before is kept[/]")
    else:
        _warn_chance(report)
        console.print(_map_line(report))
    console.print("report: " + ", ".join(plain(str(p)) for p in paths.values()))


def _weak(report: ProbeReport) -> dict[str, float]:
    """aspect -> the stored map's score, for the aspects it scores below ENCODED_R2: `mess similar` neither searches
    them (`--aspect`) nor gives them as 'why'."""
    from mess.constants import ENCODED_R2

    return {a: round(s, 4) for a, s in report.map_scores().items() if s < ENCODED_R2}


def _map_line(report: ProbeReport) -> str:
    """Which aspects the stored map offers to `mess similar --aspect` and 'why', and which it cannot, with the
    score it stores for them (the best layer's, less the shuffled control's best when that ran)."""
    from mess.constants import ENCODED_R2
    from mess.probing.report import SHUFFLED

    weak = _weak(report)
    usable = [f"{c.aspect} ({plain(c.layer)})" for c in report.aspects if c.aspect not in weak]
    line = ("aspect map stored for `mess similar --aspect` and 'why': "
            + (", ".join(usable) if usable else "no aspect"))
    if weak:
        score = "best score less the shuffled control's" if SHUFFLED in report.conditions else "best score"
        line += (f"; not encoded ({score} below {ENCODED_R2}), so not used: "
                 + ", ".join(f"{a} {s:.2f}" for a, s in sorted(weak.items(), key=lambda x: -x[1])))
    return line


def _warn_chance(report: ProbeReport) -> None:
    """Name each aspect whose best score clears ENCODED_R2 only because shuffled targets score nearly as well."""
    from mess.constants import ENCODED_R2

    beyond = report.map_scores()
    for c in report.aspects:
        if c.score >= ENCODED_R2 > beyond[c.aspect]:
            console.print(f"[yellow]warning:[/] {c.aspect}: {plain(c.layer)}'s {c.score:.2f} is only "
                          f"{beyond[c.aspect]:.2f} above shuffled targets on {report.n_tracks} tracks: mapped as not "
                          f"encoded (below {ENCODED_R2}); probe more tracks")


def _controls_table(report: ProbeReport) -> Table:
    """Per aspect: best trained layer and margin, next to the best score under each control."""
    from mess.probing.report import TRAINED, choose_layers

    table = Table(title="best layer per aspect vs. controls (a learned aspect scores well above both)")
    for col in ("aspect", "best layer", "score", "margin"):
        table.add_column(col, justify="left" if col in ("aspect", "best layer") else "right")
    others = [n for n in report.conditions if n != TRAINED]
    for name in others:
        table.add_column(f"{name} best", justify="right")
    control_best = {n: {c.aspect: c for c in choose_layers(report.conditions[n])} for n in others}
    for choice in report.aspects:
        if choice.score > 0:
            row = [choice.aspect, choice.layer, f"{choice.score:.2f}", f"+{choice.margin:.2f}"]
        else:  # every layer scores 0: the first layer won a tie, it does not encode the aspect
            row = [choice.aspect, "none (every layer 0)", "0.00", "-"]
        for name in others:
            c = control_best[name].get(choice.aspect)
            row.append("-" if c is None else f"{c.score:.2f} ({c.layer})" if c.score > 0 else "0.00")
        table.add_row(*row)
    return table


def validate_command(
    model: Annotated[str, typer.Option("--model", "-m", parser=given_text,
                                                 help="Model to validate (dsp is the fastest).")] = "dsp",
    store: StoreOpt = DEFAULT_STORE_PATH,
    pieces: Annotated[int, typer.Option(min=2, help="Bach chorales per factor set.")] = 4,
    factor: Annotated[list[str] | None, typer.Option(
        "--factor", "-f", help="instrument, tempo, transpose, velocity; repeatable (default: all).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Processes computing audio targets.")] = 2,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Seed for the within-piece permutations (the null "
                                      "scores).")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """Render pieces with one factor varied and check that probing finds the intended aspect."""
    from mess.datasets.render import RenderError
    from mess.models.registry import ModelError, load_model
    from mess.probing.probes import ProbeError
    from mess.probing.validation import FACTORS, validate, write_validation

    factors = _split(factor) if factor else FACTORS
    with failing(ModelError, ImportError, ValueError):
        embedder = load_model(model)
    with console.status(f"rendering and probing {', '.join(factors)} ..."):
        with failing(RenderError, ProbeError):
            results = validate(store / "validation", embedder, factors=factors, n_pieces=pieces, workers=workers,
                               seed=seed)
    written = write_validation(store / "reports", embedder, pieces, results, seed)
    if json_out:
        emit_json(written)
        return
    _print_validation(embedder.info.name, pieces, results, Path(written["file"]))


def _print_validation(model: str, pieces: int, results: list[FactorResult], path: Path) -> None:
    table = Table(title=f"{model}: does probing find the factor that was varied? ({pieces} pieces)")
    for col in ("factor", "intended", "moved most (effect)", "runner-up", "ok", "best layer", "null p95", "chance",
                "ok "):
        table.add_column(col)
    for r in results:
        ranked = sorted(r.aspect_effect.items(), key=lambda kv: -kv[1])
        best = r.layer_scores[r.best_layer]
        table.add_row(r.factor, "/".join(r.expected), f"{ranked[0][0]} ({ranked[0][1]:.2f})",
                      f"{ranked[1][0]} ({ranked[1][1]:.2f})", _mark(r.aspect_found),
                      f"{r.best_layer} ({r.metric} {best:.2f})", f"{r.null_scores[r.best_layer]:.2f}",
                      f"{r.chance:.2f}", _mark(r.layer_found))
    stdout.print(table)
    for r in results:
        if r.note:
            console.print(f"[yellow]{r.factor}:[/] {r.note}")
    console.print(f"report: {path}")


def _mark(ok: bool) -> str:
    return "[green]yes[/]" if ok else "[red]no[/]"


def register(app: typer.Typer) -> None:
    """Add `probe` and `probe-validate` to the main CLI."""
    app.command("probe")(probe_command)
    app.command("probe-validate")(validate_command)
