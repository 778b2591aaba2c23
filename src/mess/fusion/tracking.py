"""Training logs: a JSON file always, and an MLflow run (local file store) when mlflow is installed."""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import asdict
from pathlib import Path

from mess.fusion.train import EpochLog, checkpoint_digest
from mess.store import FeatureStore
from mess.store.paths import replace_file
from mess.store.reports import fusion_stem


def training_log_path(store: FeatureStore, checkpoint: Path) -> Path:
    """Where `mess fuse train` logs the training of ``checkpoint``: STORE/reports/<fusion_stem>-train.json
    (:func:`mess.store.reports.fusion_stem`: one log per checkpoint, though two share a file name)."""
    return store.reports_dir / f"{fusion_stem(store.root, checkpoint)}-train.json"


def log_mismatch(store: FeatureStore, checkpoint: Path) -> str | None:
    """A note when the training log of ``checkpoint`` describes another checkpoint (its recorded SHA-256 differs):
    a `mess fuse train` stopped after saving the checkpoint, before replacing the log. None when they agree, or
    when either is missing or the log predates the record."""
    log = training_log_path(store, checkpoint)
    try:
        summary = json.loads(log.read_text(encoding="utf-8")).get("summary") or {}
        recorded = summary.get("checkpoint_sha256")
        if recorded is None or recorded == checkpoint_digest(checkpoint):
            return None
    except (OSError, ValueError, AttributeError):
        return None
    return (f"the training log {log} describes another checkpoint than {checkpoint} (a `mess fuse train` stopped "
            "after saving it, before its log): retrain with `mess fuse train` for a log of the checkpoint in use")


class TrainingLog:
    """Record parameters, per-epoch metrics and the final summary of one training run.

    Epochs go to a side file (``<log>.partial.json``); the log itself is replaced whole by :meth:`finish`,
    once the checkpoint is saved, so a run killed or failing part-way leaves the log of the checkpoint in use.
    Nothing is written before the first epoch, so a run refused on its input leaves no trace.
    """

    def __init__(self, path: Path, params: dict, mlflow_dir: Path | None = None) -> None:
        self.path = path
        self.partial = path.with_suffix(".partial.json")
        self.params = params
        self.mlflow_dir = mlflow_dir
        self.record: dict = {"started": time.time(), "params": params, "epochs": [], "summary": None}
        self.mlflow = None

    def _start_mlflow(self) -> None:
        if self.mlflow_dir is None or importlib.util.find_spec("mlflow") is None:
            return
        import mlflow

        mlflow.set_tracking_uri(self.mlflow_dir.resolve().as_uri())
        mlflow.set_experiment("mess-fusion")
        mlflow.start_run(run_name=f"{self.params.get('model')}-{self.params.get('label')}")
        mlflow.log_params(self.params)
        self.mlflow = mlflow

    def epoch(self, log: EpochLog) -> None:
        """Add one epoch (the side file is rewritten, so an interrupted run keeps its history there)."""
        if not self.record["epochs"]:
            self._start_mlflow()
        self.record["epochs"].append(asdict(log))
        if self.mlflow is not None:
            self.mlflow.log_metrics({k: v for k, v in asdict(log).items() if k != "epoch" and v is not None},
                                    step=log.epoch)
        self._write()

    def finish(self, summary: dict, artifacts: list[Path]) -> None:
        """Replace the log with this run's record and summary (call it once the checkpoint is saved), store the
        checkpoint files as MLflow artifacts and close the run."""
        self.record["summary"] = summary
        replace_file(self.path, json.dumps(self.record, indent=2).encode())
        self.partial.unlink(missing_ok=True)
        if self.mlflow is not None:
            self.mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
            for path in artifacts:
                self.mlflow.log_artifact(str(path))
            self.mlflow.end_run()

    def _write(self) -> None:
        # replaced whole: written in place, a kill between truncation and write left the dead run's log empty
        replace_file(self.partial, json.dumps(self.record, indent=2).encode())
