"""`mess fuse train` as one call: read a run's layers, train, save the checkpoint, log the run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from mess.fusion.data import load_layers
from mess.fusion.tracking import TrainingLog, training_log_path
from mess.fusion.train import EpochLog, FusionConfig, FusionResult, save_checkpoint, train_fusion
from mess.store import FeatureStore, Run


@dataclass(frozen=True)
class Trained:
    """A trained, saved network and the summary written to its training log."""

    result: FusionResult
    summary: dict


def train_and_save(store: FeatureStore, run: Run, config: FusionConfig, path: Path,
                   on_epoch: Callable[[EpochLog], None] | None = None,
                   stop: Callable[[], bool] | None = None) -> Trained:
    """Train the fusion network on ``run``'s layer vectors, save it at ``path`` (.pt and .json), and log the
    run to :func:`mess.fusion.tracking.training_log_path` (and MLflow under STORE/mlruns when installed). Epochs
    are logged beside it (.partial.json) until the checkpoint is saved; the log then records the checkpoint's
    SHA-256, so a run killed between the two is told apart (:func:`mess.fusion.tracking.log_mismatch`).

    ``stop`` (:func:`mess.fusion.train.train_fusion`; Ctrl-C in `mess fuse train`) after the first epoch saves and
    logs the best epoch so far, marked ``interrupted_at`` (the last epoch done) in the checkpoint and the summary;
    :class:`mess.fusion.train.StoppedBeforeFirstEpoch`, with nothing written, before it ends. Raises FusionError or
    ValueError (before anything is written) when the data cannot be trained on.
    """
    data = load_layers(store, run)
    log = TrainingLog(training_log_path(store, path),
                      {"model": run.model, "run_id": run.id, **asdict(config)}, store.root / "mlruns")

    def epoch(entry: EpochLog) -> None:
        log.epoch(entry)
        if on_epoch is not None:
            on_epoch(entry)

    result = train_fusion(data, config, epoch, stop)
    labels = data.labels(config.label)
    digest = save_checkpoint(result, path)
    summary = {"model": run.model, "label": config.label, "checkpoint": str(path), "checkpoint_sha256": digest,
               "log": str(log.path),
               "tracks": len(data.tracks), "split": {k: len(v) for k, v in result.split.to_json().items()},
               "labelled_tracks": sum(len(result.split.rows(labels, part)) for part in ("train", "val", "test")),
               "epochs": result.history[-1].epoch, "best_epoch": result.best_epoch,
               "interrupted_at": result.interrupted_at,
               "phase2": bool(result.split.val), "stopped_early": result.stopped_early,
               "val_ndcg_untrained": result.history[0].val_ndcg,
               "val_ndcg_best": result.history[result.best_epoch].val_ndcg,
               "data_hash": result.data_hash, "layer_weights": result.layer_weights(data.x)}
    log.finish(summary, [path, path.with_suffix(".json")])
    return Trained(result, summary)
