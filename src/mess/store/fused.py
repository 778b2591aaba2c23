"""Fused vectors (`mess fuse apply`) are read only as the run they were made for.

`fuse apply` records the run its checkpoint was trained on (``trained_on``: run id, weights revision, window
policy JSON) with the fused vectors. Sets written before it did are checked through the checkpoint's ``.json``
description, when it still describes the checkpoint that made them (its ``checkpoint_sha256``) and names that run;
otherwise they are refused until `mess fuse apply` writes them again. A set whose metadata names no checkpoint
was not written by `fuse apply` (:meth:`FeatureStore.write_derived` from the caller's code): no network to check.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mess.constants import FUSED, counted
from mess.store.errors import StoreError
from mess.store.feature_store import FeatureStore
from mess.store.records import Run


def left_out_note(count: int, label: str = FUSED) -> str:
    """The one line an answer in derived vectors (``label``) says of the ``count`` tracks it left out for having none:
    those extracted since `mess fuse apply` ran."""
    were = "was" if count == 1 else "were"
    return (f"{counted(count, 'track has', 'tracks have')} no {label} vectors yet and {were} left out; "
            "`mess fuse apply` adds them")


def trained_run_mismatch(revision: str, policy: str | None, run: Run) -> tuple[str, str] | None:
    """None when a network trained on a run of ``revision`` and window ``policy`` (None: not recorded; only the
    revision is checked) was trained on ``run``'s kind of vectors; else what it was trained on and what ``run``
    has, each as ``field value, ...`` of the fields that differ."""
    if revision == run.revision and policy in (None, run.policy):
        return None
    trained = _identity(revision, policy)
    here = _identity(run.revision, run.policy if policy is not None else None)
    differ = [k for k in sorted(trained.keys() | here.keys()) if trained.get(k) != here.get(k)]
    return _fields(trained, differ), _fields(here, differ)


def _identity(revision: str, policy: str | None) -> dict[str, object]:
    """A run's revision and window policy fields (none when unknown), to name what differs."""
    return {"revision": revision, **(json.loads(policy) if policy is not None else {})}


def _fields(identity: dict[str, object], keys: list[str]) -> str:
    """``key value, ...`` for ``keys`` of ``identity``."""
    return ", ".join(f"{k} {identity.get(k, '?')}" for k in keys)


def fused_run_problem(store: FeatureStore, run: Run, meta: dict | None) -> str | None:
    """Why the fused vectors stored for ``run`` with ``meta`` (its :meth:`FeatureStore.derived_meta`) may not be read
    as its vectors (their network was trained on another run of the model, or which run cannot be told); None when
    they may, or when there are none (``meta`` None)."""
    if meta is None or ("trained_on" not in meta and not (meta.get("checkpoint") or meta.get("checkpoint_in_store"))):
        return None
    trained = meta.get("trained_on") or _described_run(store, meta)
    again = f"run `mess fuse apply --model {run.model}` again"
    if trained is None:
        return (f"cannot tell which run of {run.model} the stored fused vectors were made for (an older `mess fuse "
                f"apply` wrote them without it, and their checkpoint's description does not say it); {again}")
    mismatch = trained_run_mismatch(str(trained.get("revision")), trained.get("policy"), run)
    if mismatch is None:
        return None
    which = f"run {trained['run_id']}" if trained.get("run_id") is not None else "another run"
    return (f"the stored fused vectors of {run.model} run {run.id} were made by a network trained on {which} "
            f"({mismatch[0]}; run {run.id} has {mismatch[1]}); {again}")


def _described_run(store: FeatureStore, meta: dict) -> dict | None:
    """The run recorded in the ``.json`` description of the checkpoint that made fused vectors, when it still
    describes that checkpoint (same SHA-256) and records its run's window policy; None otherwise."""
    inside, outside = meta.get("checkpoint_in_store"), meta.get("checkpoint")
    if not (inside or outside):
        return None
    checkpoint = store.root / inside if inside else Path(str(outside))
    try:
        described = json.loads(checkpoint.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    digest = meta.get("checkpoint_sha256")
    if not isinstance(described, dict) or digest is None or described.get("checkpoint_sha256") != digest:
        return None
    return described if described.get("policy") is not None else None


def fused_matrix(store: FeatureStore, run: Run) -> tuple[np.ndarray, np.ndarray]:
    """(track ids, float32 matrix) of the run's fused vectors (:meth:`FeatureStore.derived_matrix`); StoreError
    when there are none or :func:`fused_run_problem` finds them made for another run."""
    if (problem := fused_run_problem(store, run, store.derived_meta(run, FUSED))) is not None:
        raise StoreError(problem)
    return store.derived_matrix(run, FUSED)
