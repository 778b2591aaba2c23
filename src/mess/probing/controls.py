"""Controls that show how much of a probe score is learned rather than given for free.

* shuffled targets: the rows of the target matrix are permuted (fixed seed), so any
  score above ~0 would be overfitting, not information;
* random init: the same architecture with freshly initialised weights (fixed seed)
  is extracted into the store as ``<model>-random-init`` and probed like the trained
  one; what the random network already predicts comes from the architecture and the
  input features, not from training.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mess.extract.pipeline import ExtractSummary, extract
from mess.extract.runs import run_key, run_policy
from mess.models.base import FILE_REVISION, EmbeddingModel
from mess.models.registry import load_model
from mess.probing.target_cache import stale_reason
from mess.store import FeatureStore, Run, Track

RANDOM_SUFFIX = "-random-init"


class ControlError(Exception):
    """A control that cannot be run for this model; the message says why."""


def shuffled_rows(y: np.ndarray, seed: int = 0) -> np.ndarray:
    """The target matrix with its rows permuted (targets stay jointly consistent per row). The permutation goes by
    row: callers hand rows in content order (:func:`mess.probing.study.probe_run`), not in track ids."""
    return y[np.random.default_rng(seed).permutation(len(y))]


def randomized(model: EmbeddingModel, seed: int = 0) -> EmbeddingModel:
    """A copy of ``model`` whose torch network (``model.network``) has fresh random weights.

    Hugging Face networks are rebuilt from their config, so they get the library's own
    initialisation scheme; plain torch networks have every sub-module's
    ``reset_parameters`` called (which also resets batch-norm running statistics).
    """
    import torch
    from transformers import PreTrainedModel

    network = getattr(model, "network", None)
    if not isinstance(network, torch.nn.Module):
        raise ControlError(f"{model.info.name} has no learned weights ({type(model).__name__}), "
                           "so there is no random-init counterpart")
    fresh: torch.nn.Module
    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's random state
        torch.manual_seed(seed)
        if isinstance(network, PreTrainedModel):
            fresh = type(network)(network.config)
        else:
            fresh = copy.deepcopy(network)
            for module in fresh.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
    twin = copy.copy(model)
    # the duck-typed attribute found by getattr above (EmbeddingModel does not declare it)
    setattr(twin, "network", fresh.eval().to(model.device))  # noqa: B010
    twin.info = dataclasses.replace(model.info, name=model.info.name + RANDOM_SUFFIX,
                                    revision=f"{model.info.revision}+random-init-seed{seed}")
    return twin


def random_init_run(store: FeatureStore, run: Run, *, source: str | None = None, seed: int = 0, device: str = "cpu",
                    batch_size: int = 4, workers: int = 2, on_progress: Callable[[int, float], None] | None = None,
                    ) -> tuple[Run, ExtractSummary]:
    """Extract the run's tracks with a randomly initialised twin of its model (reused when present).

    ``source`` is what to load the architecture from (a registry name or a local model
    folder); by default the run's model name.
    """
    if run.model.endswith(RANDOM_SUFFIX):
        raise ControlError(f"{run.model} is already a random-init control")
    if run.revision.startswith(FILE_REVISION):  # by its name, a registry model of the same name would be loaded
        raise ControlError(f"{run.model} was extracted with a model file (.onnx), whose weights mess cannot "
                           "re-initialise, so there is no random-init counterpart")
    model = load_model(source or run.model, device=device)
    if model.info.name != run.model:
        raise ControlError(f"{source} loads model {model.info.name!r}, not the probed {run.model!r}")
    twin = randomized(model, seed)
    # a file changed since extraction is left out: extracting it would re-catalogue it under its new content, and
    # the trained run (probed without it) would lose the track
    paths = [Path(t.path) for t in store.tracks(run) if _as_catalogued(store, t)]
    if not paths:
        raise ControlError(f"none of the {run.model} tracks are on disk any more; cannot extract a random-init twin")
    policy = run_policy(run)
    summary = extract(store, paths, twin, policy, batch_size=batch_size, workers=workers, on_progress=on_progress)
    return store.ensure_run(run_key(twin.info, policy)), summary


def _as_catalogued(store: FeatureStore, track: Track) -> bool:
    """Whether the track's file is on disk as the catalog stamped it (its audio is what its vectors are of)."""
    known = store.known_file(Path(track.path))
    return known is not None and known[0] == track.content_hash and stale_reason(track.path, known[1]) is None
