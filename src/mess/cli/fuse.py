"""`mess fuse train|apply|report`: learn one embedding from all layers, store it, and judge it."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, NoReturn, cast

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mess.cli.common import console, emit_json, fail, failing, note, open_store, os_reason, plain, stdout, warn
from mess.cli.options import DEFAULT_STORE_PATH, SEED_MAX, CutoffOpt, JsonOpt, ModelOpt, StoreOpt
from mess.cli.signals import Terminated, record_terminated, terminated
from mess.constants import FUSED, LABEL_FIELDS, counted

if TYPE_CHECKING:
    from mess.fusion.pipeline import Trained
    from mess.fusion.train import EpochLog, FusionConfig, Mining
    from mess.search.evaluate import LabelFile
    from mess.store import FeatureStore, Run

fuse_app = typer.Typer(help="Learn one embedding from all layers of a model (triplet loss on metadata labels).",
                       no_args_is_help=True)

CheckpointOpt = Annotated[Path | None, typer.Option("--checkpoint", help="Checkpoint file (default: "
                                                    "STORE/fusion/<model>-run<id>.pt of the run --model picks; its "
                                                    "model is the default --model).")]
_COLUMNS = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"))


def _checkpoint(fs: FeatureStore, checkpoint: Path | None, model: str | None) -> Path:
    """The --checkpoint path, or the saved one of the run ``model`` picks (see
    :func:`~mess.fusion.train.saved_checkpoint`)."""
    from mess.fusion.train import checkpoint_path, saved_checkpoint

    if checkpoint is not None:
        return checkpoint
    run = fs.run(model)
    path = saved_checkpoint(fs, run)
    others = sorted(p.name for p in path.parent.glob("*.pt")) if not path.exists() and path.parent.is_dir() else []
    if others:  # trained for another model or run: `mess fuse train` (the load's advice) is not what is wanted
        # by the runs whose checkpoints they are: a model named by its folder or file has a slug for a file name
        runs = {checkpoint_path(fs, r).name: f"{r.model}@{r.id}" for r in fs.runs()}
        named = [f"{name} (--model {runs[name]})" if name in runs else name for name in others]
        fail(f"no fusion checkpoint at {path}; this store has {', '.join(named)}: pick one with --model (or the "
             f"file with --checkpoint), or train one with `mess fuse train --model {run.model}`")
    return path


def _before_training(threads: int, labels: Path | None) -> None:
    """Torch's thread count set, and a ``--labels`` path that is no file refused, before the store is opened."""
    from mess.cli.search import not_a_label_file

    if threads:
        import torch

        torch.set_num_threads(threads)
    if labels is not None and not labels.is_file():
        fail(not_a_label_file(labels))


def _label_file(ctx: typer.Context, fs: FeatureStore, labels: Path | None, label: str) -> LabelFile | None:
    """The labels of ``--labels`` read as `mess evaluate --labels` reads them (its note printed); None without it."""
    from mess.search.evaluate import LabelError, read_label_csv

    if labels is None:
        return None
    with failing(LabelError):  # --label given, not its default: a file's own 'label' column is that field
        given = getattr(ctx.get_parameter_source("label"), "name", "DEFAULT") != "DEFAULT"
        label_file = read_label_csv(fs, labels, label, field_given=given)
    note(label_file.note())
    return label_file


@fuse_app.command("train")
def train_command(
    ctx: typer.Context,
    model: ModelOpt = None,
    label: Annotated[str, typer.Option("--label", help="Metadata that defines 'similar': "
                                       f"{', '.join(LABEL_FIELDS)} (with --labels: the file's column, else "
                                       "its 'label' column).")] = "artist",
    labels: Annotated[Path | None, typer.Option(
        "--labels", help="CSV with an id/path/file column and a LABEL (or 'label') column, instead of tags (as "
        "`mess evaluate --labels` reads it).")] = None,
    fusion_dim: Annotated[int, typer.Option(min=2, help="Size of the fused vector.")] = 256,
    gated: Annotated[bool, typer.Option("--gated/--static", help="Condition layer weights on each track "
                                        "(small gating MLP) or learn one weight per layer.")] = False,
    mining: Annotated[str, typer.Option(help="Negative mining: semi-hard or batch-hard.")] = "semi-hard",
    margin: Annotated[float, typer.Option(min=0.0, help="Triplet margin (squared distance on the unit sphere).")] = 0.5,
    weight_epochs: Annotated[int, typer.Option(min=1, help="Phase 1: epochs that train only the layer weights.")] = 10,
    max_epochs: Annotated[int, typer.Option(min=0, help="Phase 2: most epochs that train everything "
                                            "(needs validation labels).")] = 100,
    patience: Annotated[int, typer.Option(min=1, help="Stop phase 2 after this many epochs without a gain.")] = 10,
    lr: Annotated[float, typer.Option(min=0.0, help="Learning rate of the network.")] = 3e-4,
    weights_lr: Annotated[float, typer.Option(min=0.0, help="Learning rate of the layer-weight logits.")] = 0.05,
    labels_per_batch: Annotated[int, typer.Option(min=2, help="P: labels per batch.")] = 16,
    tracks_per_label: Annotated[int, typer.Option(min=2, help="K: tracks per label in a batch.")] = 4,
    val_frac: Annotated[float, typer.Option(min=0.0, max=0.5,
                                            help="Share of labels held out for early stopping.")] = 0.15,
    test_frac: Annotated[float, typer.Option(min=0.05, max=0.5,
                                             help="Share of labels held out for the report.")] = 0.15,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Seed of the split, initialisation and batches.")] = 0,
    threads: Annotated[int, typer.Option(min=0, help="CPU threads for torch (0 = torch's default; 1 is "
                                         "fastest on a busy machine).")] = 0,
    checkpoint: CheckpointOpt = None,
    store: StoreOpt = DEFAULT_STORE_PATH,
    as_json: JsonOpt = False,
) -> None:
    """Train the fusion network on the store's vectors; saves a checkpoint and a JSON training log."""
    from mess.fusion.train import FusionConfig, checkpoint_path, checkpoint_problem

    _before_training(threads, labels)
    with failing(ValueError):
        config = FusionConfig(label=label, labels_file=labels.name if labels is not None else None,
                              fusion_dim=fusion_dim, gated=gated, mining=cast("Mining", mining),
                              margin=margin, weight_epochs=weight_epochs, max_epochs=max_epochs, patience=patience,
                              lr=lr, weights_lr=weights_lr, labels_per_batch=labels_per_batch,
                              tracks_per_label=tracks_per_label, val_frac=val_frac, test_frac=test_frac, seed=seed)
    with open_store(store) as fs:
        run = fs.run(model)
        path = checkpoint if checkpoint is not None else checkpoint_path(fs, run)
        if (problem := checkpoint_problem(path, fs.root)) is not None:  # found before, not after, training
            fail(f"cannot save a checkpoint at {path}: {problem}")
        label_file = _label_file(ctx, fs, labels, label)
        trained = _train(fs, run, config, path, quiet=as_json, labels=label_file.labels if label_file else None)
    if as_json:
        emit_json(trained.summary)
    else:
        _print_trained(trained.summary, config)
    if trained.result.interrupted_at is not None:
        _stop_interrupted(trained.summary, config)


def _train(fs: FeatureStore, run: Run, config: FusionConfig, path: Path, quiet: bool,
           labels: dict[int, str] | None) -> Trained:
    """Train and save under a progress bar of epochs, loss and validation nDCG (on ``labels`` in place of tags when
    given)."""
    from mess.fusion.data import FusionError
    from mess.fusion.pipeline import train_and_save
    from mess.fusion.train import StoppedBeforeFirstEpoch

    try:  # the bar ends before a word is said, so that the word is the last line
        with Progress(*_COLUMNS, console=console, disable=quiet) as bar, _signals_stop() as stop:
            task = bar.add_task(f"fuse {run.model} by {config.labels_name}",
                                total=config.weight_epochs + config.max_epochs, status="")

            def on_epoch(e: EpochLog) -> None:
                val = "-" if e.val_ndcg is None else f"{e.val_ndcg:.3f}"
                bar.update(task, completed=e.epoch, status=f"loss {e.loss:.4f}  val nDCG@{config.k} {val}")

            try:
                trained = train_and_save(fs, run, config, path, on_epoch, stop.is_set, labels)
            except (FusionError, ValueError):
                bar.update(task, visible=False)  # no empty bar above the error: '0/110' read as training begun
                raise
            bar.update(task, total=trained.summary["epochs"])
    except (FusionError, ValueError) as exc:
        fail(str(exc))
    except StoppedBeforeFirstEpoch:
        how = "stopped by SIGTERM" if terminated() else "interrupted"
        console.print(f"[yellow]{how}[/] before the first epoch ended: nothing saved")
        raise typer.Exit(130) from None
    except KeyboardInterrupt as exc:  # a second Ctrl-C or SIGTERM, wherever training or saving was
        how = "stopped by SIGTERM" if isinstance(exc, Terminated) else "interrupted a second time"
        console.print(f"[yellow]{how}[/]: stopped at once, the best epoch not saved (a save under way leaves "
                      "each of its files whole, the old or the new)")
        raise typer.Exit(130) from None
    except OSError as exc:  # a full disk, say: the system's words alone did not name the file
        fail(f"cannot save the checkpoint {path} ({os_reason(exc, path)})")
    return trained


@contextmanager
def _signals_stop() -> Iterator[threading.Event]:
    """While inside, the first Ctrl-C (SIGINT) or SIGTERM only sets the event (training stops at its next step and
    saves the best epoch so far; a SIGTERM is recorded, so the exit status is 143); a second one interrupts at once
    (KeyboardInterrupt, :class:`Terminated` for SIGTERM)."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGTERM:
            record_terminated(signum)
        if stop.is_set():
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _print_trained(summary: dict, config: FusionConfig) -> None:
    split = summary["split"]
    left = summary["tracks"] - summary["labelled_tracks"]
    stdout.print(f"trained on {split['train']} {plain(config.labels_name)} labels ({split['val']} validation, "
                  f"{split['test']} held out) of {summary['tracks']} tracks: {summary['epochs']} epochs, "
                  f"best epoch {summary['best_epoch']}")
    if left:
        none = f"no {summary['label']} tag" if config.labels_file is None else f"no label in {config.labels_file}"
        note(f"{left} of the {summary['tracks']} tracks {'is' if left == 1 else 'are'} in none of these labels "
             f"({none}, or the only track of theirs): not trained on or scored")
    if summary["phase2"]:
        stdout.print(f"validation nDCG@{config.k}: {summary['val_ndcg_untrained']:.3f} untrained -> "
                      f"{summary['val_ndcg_best']:.3f}" + (" (stopped early)" if summary["stopped_early"] else ""))
    else:
        why = "no validation labels (--val-frac 0)" if config.val_frac == 0 else "too few labels for a validation split"
        console.print(f"[yellow]{why}:[/] only the layer weights were trained "
                      f"({summary['epochs']} epochs), the projection stays the PCA it started from")
    top = sorted(summary["layer_weights"].items(), key=lambda kv: -kv[1])[:5]
    stdout.print("top layer weights: " + ", ".join(f"{plain(n)} {w:.2f}" for n, w in top))
    note(summary["checkpoint_note"])  # a file of the user's came at the checkpoint's name while it trained
    note(summary["log_note"])  # the checkpoint saved, its training log not (a full disk)
    console.print(f"[dim]{plain(summary['checkpoint'])}[/]  next: mess fuse apply, mess fuse report")


def _stop_interrupted(summary: dict, config: FusionConfig) -> NoReturn:
    """Say where Ctrl-C (or SIGTERM) stopped training and what was saved, and exit with 130 (as a shell does on
    SIGINT; `main` makes it 143 after SIGTERM)."""
    planned = config.weight_epochs + (config.max_epochs if summary["phase2"] else 0)
    how = "stopped by SIGTERM" if terminated() else "interrupted"
    console.print(f"[yellow]{how}[/] at epoch {summary['interrupted_at']} of {planned}: saved the best weights "
                  f"so far (epoch {summary['best_epoch']}) to {plain(summary['checkpoint'])}, marked interrupted_at "
                  f"{summary['interrupted_at']} in it and its log; `mess fuse train` again trains to the end")
    raise typer.Exit(130)


@fuse_app.command("apply")
def apply_command(
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    store: StoreOpt = DEFAULT_STORE_PATH,
    as_json: JsonOpt = False,
) -> None:
    """Write fused vectors of every track to the store (used by `mess index --fused`, `mess similar --fused`)."""
    from mess.fusion.apply import apply_fusion, check_compatible
    from mess.fusion.data import FusionError
    from mess.fusion.report import interrupted_note
    from mess.fusion.tracking import log_mismatch
    from mess.fusion.train import load_checkpoint

    with open_store(store) as fs:  # check everything read-only first: a bad call writes nothing
        path = _checkpoint(fs, checkpoint, model)
        with failing(FusionError):
            result = load_checkpoint(path)
            run_note = check_compatible(result, fs.run(model or result.model))
        log_note, stop_note = log_mismatch(fs, path), interrupted_note(result)
    with open_store(store, readonly=False) as fs:
        with failing(FusionError):
            meta = apply_fusion(fs, path, model)
    if as_json:
        emit_json({**meta, "training_log_note": log_note, "run_note": run_note, "interrupted_note": stop_note})
        return
    note(log_note)
    note(run_note)
    note(stop_note)
    trained_on = plain(meta["labels_file"] or meta["label"])
    console.print(f"wrote {meta['tracks']} fused vectors ({meta['fusion_dim']}-d, trained on {trained_on} labels) "
                  f"-> next: mess index --fused")
    if meta["missing"]:
        console.print(f"[yellow]note:[/] {counted(meta['missing'], 'track')} changed or came while it ran and "
                      f"{'has' if meta['missing'] == 1 else 'have'} no fused vector yet; run `mess fuse apply` again "
                      "to add them")
    if not meta["data_hash_matches"]:
        console.print("[yellow]note:[/] the store changed since training; tracks added since are fused by the "
                      "same network (retrain with `mess fuse train` to learn from them)")


@fuse_app.command("report")
def report_command(
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    k: CutoffOpt = 10,
    store: StoreOpt = DEFAULT_STORE_PATH,
    as_json: JsonOpt = False,
) -> None:
    """Compare fused vectors with the best single layer and all layers on the held-out labels; PNG of weights."""
    from mess.fusion.apply import check_compatible
    from mess.fusion.data import FusionError, load_layers
    from mess.fusion.report import attach_probe, compare, default_search, write_report
    from mess.fusion.tracking import log_mismatch
    from mess.fusion.train import load_checkpoint
    from mess.store.reports import fusion_stem

    with open_store(store) as fs:
        path = _checkpoint(fs, checkpoint, model)
        with failing(FusionError, ValueError):
            result = load_checkpoint(path)
            run = fs.run(model or result.model)
            run_note = check_compatible(result, run)
            data = load_layers(fs, run)
            report = compare(result, data, k, default_search(fs, run, data))
        attach_probe(report, fs, run)
        report.training_log_note = log_mismatch(fs, path)  # in the files too, not only on the console
        try:
            write_report(report, fs.reports_dir, fusion_stem(fs.root, path))
            unwritten = None
        except OSError as exc:  # a read-only store, say: the scores below are the answer
            report.files, unwritten = {}, (f"the report's files were not written ({os_reason(exc)}); the scores "
                                           "are shown here (`--json` for all of them)")
    if unwritten:
        warn(unwritten)
    if as_json:
        emit_json(report.to_dict())
        return
    note(report.training_log_note)
    note(run_note)
    note(report.interrupted_note)
    note(report.probe_tracks_note)
    table = Table(title=f"held-out {report.label} labels: {report.n_test_labels} labels, {report.n_test_tracks} tracks")
    for col in ("method", "what", f"P@{k}", "mAP", f"nDCG@{k}"):
        table.add_column(col, justify="left" if col in ("method", "what") else "right")
    for m in report.methods:
        style = "bold" if m.method == FUSED else None
        table.add_row(m.method, plain(m.detail), f"{m.precision:.3f}", f"{m.map:.3f}", f"{m.ndcg:.3f}", style=style)
    stdout.print(table)
    stdout.print(report.verdict)
    if report.caveat:
        console.print(f"[yellow]caveat:[/] {report.caveat}")
    console.print(f"[dim]{plain(report.probe_note)}[/]")
    if report.files:
        console.print(f"[dim]{plain(report.files['md'])}  {plain(report.files['png'])}[/]")


def register(app: typer.Typer) -> None:
    """Add the `fuse` command group (train, apply, report) to the main CLI."""
    app.add_typer(fuse_app, name="fuse")

