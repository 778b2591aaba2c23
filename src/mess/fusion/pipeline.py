"""`mess fuse train` as one call: read a run's layers, train, save the checkpoint, log the run."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from mess.fusion.data import FusionError, load_layers
from mess.fusion.tracking import TrainingLog, training_log_path
from mess.fusion.train import (
    CheckpointRefused,
    EpochLog,
    FusionConfig,
    FusionResult,
    save_checkpoint,
    train_fusion,
)
from mess.store import FeatureStore, Run


def _names_held(checkpoint: Path, names: tuple[Path, ...]) -> None:
    """FusionError, before any training, where the file system cannot hold one of the names training writes (a name
    over its 255 bytes: every save, and its fallbacks, which keep the name, failed once the network was trained)."""
    for name in names:
        try:
            name.exists()
        except OSError as exc:
            raise FusionError(f"cannot save a checkpoint at {checkpoint}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class Trained:
    """A trained, saved network and the summary written to its training log."""

    result: FusionResult
    summary: dict


def train_and_save(store: FeatureStore, run: Run, config: FusionConfig, path: Path,
                   on_epoch: Callable[[EpochLog], None] | None = None,
                   stop: Callable[[], bool] | None = None, labels: dict[int, str] | None = None) -> Trained:
    """Train the fusion network on ``run``'s layer vectors (and ``config.label``'s tags, or ``labels``: track id ->
    label, from ``config.labels_file``), save it at ``path`` (.pt and .json), and log the
    run to :func:`mess.fusion.tracking.training_log_path` (and MLflow under STORE/mlruns when installed). Epochs
    are logged beside it (.partial.json) until the checkpoint is saved; the log then records the checkpoint's
    SHA-256, so a run killed between the two is told apart (:func:`mess.fusion.tracking.log_mismatch`).

    ``stop`` (:func:`mess.fusion.train.train_fusion`; Ctrl-C in `mess fuse train`) after the first epoch saves and
    logs the best epoch so far, marked ``interrupted_at`` (the last epoch done) in the checkpoint and the summary;
    :class:`mess.fusion.train.StoppedBeforeFirstEpoch`, with nothing written, before it ends. Raises FusionError or
    ValueError (before anything is written) when the data cannot be trained on.

    Where ``path`` cannot be taken once training ends (a file of the user's came at its name meanwhile), the
    network is saved under the next free name beside it (:func:`free_checkpoint`), said in the summary's
    ``checkpoint_note``, with that name's training log: a trained network is never lost to a refused save. Where
    the save fails (an OSError: a full disk, a folder that cannot be written), it is saved likewise in STORE/fusion/,
    or failing that in the system's temp folder (mess-fusion/); the first error is raised where all fail. A log
    that cannot be written once the checkpoint is saved is said in ``log_note`` (``log`` None).
    """
    data = load_layers(store, run)
    _names_held(path, (path, path.with_suffix(".json"), training_log_path(store, path).with_suffix(".partial.json")))
    log = TrainingLog(training_log_path(store, path),
                      {"model": run.model, "run_id": run.id, **asdict(config)}, store.root / "mlruns")

    def epoch(entry: EpochLog) -> None:
        log.epoch(entry)
        if on_epoch is not None:
            on_epoch(entry)

    result = train_fusion(data, config, epoch, stop, labels)
    per_row = result.labels(data)
    wanted, why, moved = path, None, None
    failed: dict[str, Exception] = {}  # the folders a save failed in, with its error
    tried: set[Path] = set()
    while True:
        tried.add(path)
        try:
            digest = save_checkpoint(result, path)
            break
        except CheckpointRefused as exc:  # a file of the user's there, or one that came at the instant of the save
            why = why or exc.problem
            path = free_checkpoint(path.with_name(wanted.name), store)
            if path not in tried:
                continue
            # a folder that refuses every name (STORE/fusion a link to nothing): saved elsewhere, as below
            failed.setdefault(os.path.abspath(path.parent), exc)
        except OSError as exc:  # a full disk, a folder that cannot be written: saved elsewhere, not lost
            why = why or exc.strerror or str(exc)
            failed.setdefault(os.path.abspath(path.parent), exc)
        places = [store.root / "fusion", Path(tempfile.gettempdir()) / "mess-fusion"]
        folder = next((f for f in places if os.path.abspath(f) not in failed), None)
        if folder is None:
            raise next(iter(failed.values())) from None
        path = free_checkpoint(folder / wanted.name, store)
    if path != wanted:
        moved = f"not saved at {wanted}: {why}; saved at {path} instead"
        log.path = training_log_path(store, path)  # the epochs went to the wanted name's .partial.json, removed
    summary = {"model": run.model, "label": config.label, "labels_file": config.labels_file,
               "checkpoint": str(path), "checkpoint_sha256": digest,
               "checkpoint_note": moved,
               "log": str(log.path), "log_note": None,
               "tracks": len(data.tracks), "split": {k: len(v) for k, v in result.split.to_json().items()},
               "labelled_tracks": sum(len(result.split.rows(per_row, part)) for part in ("train", "val", "test")),
               "epochs": result.history[-1].epoch, "best_epoch": result.best_epoch,
               "interrupted_at": result.interrupted_at,
               "phase2": bool(result.split.val), "stopped_early": result.stopped_early,
               "val_ndcg_untrained": result.history[0].val_ndcg,
               "val_ndcg_best": result.history[result.best_epoch].val_ndcg,
               "data_hash": result.data_hash, "layer_weights": result.layer_weights(data.x)}
    try:
        log.finish(summary, [path, path.with_suffix(".json")])
    except OSError as exc:  # the network is saved: its log's failure is said, not taken for the save's
        summary["log"] = None
        summary["log_note"] = (f"the training log {log.path} could not be written ({exc.strerror or exc}); "
                               f"the checkpoint {path} is saved")
    return Trained(result, summary)


def free_checkpoint(path: Path, store: FeatureStore) -> Path:
    """The first of NAME-1.pt, NAME-2.pt, ... beside ``path`` (in STORE/fusion/ where its folder cannot take it: it,
    or the folder above it it would be made in, is a file, a link to nothing or cannot be written) at which nothing
    is, neither the checkpoint nor its description: where a checkpoint refused at ``path`` is saved."""
    above = next(p for p in path.parents if p.exists() or p.is_symlink())  # as checkpoint_problem looks: no retry
    takes = above.is_dir() and os.access(above, os.W_OK | os.X_OK)  # of a name refused for its folder, forever
    folder = path.parent if takes else store.root / "fusion"
    n = 1
    while True:
        candidate = folder / f"{path.stem}-{n}.pt"
        if not any(p.exists() or p.is_symlink() for p in (candidate, candidate.with_suffix(".json"))):
            return candidate
        n += 1
