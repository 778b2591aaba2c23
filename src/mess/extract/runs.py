"""Between models, window policies and the store: the plain identity a run is stored under."""

from __future__ import annotations

from mess.audio.windows import WindowPolicy
from mess.models.base import ModelInfo
from mess.store import FeatureStore, Run, RunKey


def run_key(info: ModelInfo, policy: WindowPolicy) -> RunKey:
    """The store's identity of the vectors ``info``'s model makes under ``policy``."""
    return RunKey(info.name, info.revision, policy.to_json(), info.sample_rate, info.layer_names, info.layer_dims)


def run_policy(run: Run) -> WindowPolicy:
    """The window policy a run's vectors were made with (to cut a query file the same way)."""
    return WindowPolicy.from_json(run.policy)


def record_source(store: FeatureStore, run: Run, source: dict[str, str] | None) -> None:
    """Record with ``run`` where its model came from (``EmbeddingModel.source``), for queries by new files, when the
    run's name cannot load it again; a run extracted again (the file moved, say) records its latest place."""
    if source is not None:
        store.set_model_source(run, source)
