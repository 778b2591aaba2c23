"""Between models, window policies and the store: the plain identity a run is stored under."""

from __future__ import annotations

from mess.audio.windows import WindowPolicy
from mess.models.base import ModelInfo
from mess.store import Run, RunKey


def run_key(info: ModelInfo, policy: WindowPolicy) -> RunKey:
    """The store's identity of the vectors ``info``'s model makes under ``policy``."""
    return RunKey(info.name, info.revision, policy.to_json(), info.sample_rate, info.layer_names, info.layer_dims)


def run_policy(run: Run) -> WindowPolicy:
    """The window policy a run's vectors were made with (to cut a query file the same way)."""
    return WindowPolicy.from_json(run.policy)
