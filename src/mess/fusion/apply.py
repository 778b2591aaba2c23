"""Use a trained fusion network: fused vectors for the whole store, or for one external query."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mess.constants import FUSED
from mess.fusion.data import FusionError, load_layers
from mess.fusion.train import FusionResult, embed, load_checkpoint
from mess.search.evaluate import label_grouping
from mess.store import FeatureStore, Run
from mess.store.fused import trained_run_mismatch


def check_compatible(result: FusionResult, run: Run) -> str | None:
    """Raise FusionError unless the checkpoint was trained on this run's layers, weights revision and window policy
    (another run of the model holds vectors the network never saw). Returns a one-line note for a checkpoint saved
    before the policy was recorded: its revision is checked, its policy cannot be."""
    which = f"run {result.run_id}" if result.run_id is not None else "another run"
    that_run = f"pick run {result.run_id} (--model {result.model}@{result.run_id}) or " \
        if result.run_id not in (None, run.id) else ""  # the same id: a checkpoint of another store
    if result.model != run.model:
        raise FusionError(f"checkpoint was trained on {result.model} layers {list(result.layer_names)}; "
                          f"run {run.id} is {run.model} with {list(run.layer_names)}")
    if (result.layer_names, result.layer_dims) != (run.layer_names, run.layer_dims):  # a run of another revision
        raise FusionError(f"checkpoint was trained on {result.model} {which} ({_layers_of(result.layer_names)}); "
                          f"run {run.id} has {_layers_of(run.layer_names, result.layer_names)}; {that_run}train "
                          "again with `mess fuse train`")
    if (mismatch := trained_run_mismatch(result.revision, result.policy, run)) is not None:
        raise FusionError(f"checkpoint was trained on {result.model} {which} ({mismatch[0]}); "
                          f"run {run.id} has {mismatch[1]}; {that_run}train again with `mess fuse train`")
    if result.policy is None:
        return (f"the checkpoint was saved before mess recorded the window policy of its run: cannot check that it "
                f"was trained on run {run.id}'s vectors (train again with `mess fuse train` to record it)")
    return None


def _layers_of(names: tuple[str, ...], other: tuple[str, ...] | None = None) -> str:
    """'18 layers', or against ``other``: '19 layers (adds timbre)', '3 layers (lacks mfcc)', '4 layers of other
    sizes or order'."""
    said = f"{len(names)} layers"
    if other is None:
        return said
    adds, lacks = [n for n in names if n not in other], [n for n in other if n not in names]
    parts = [f"{verb} {', '.join(found)}" for verb, found in (("adds", adds), ("lacks", lacks)) if found]
    return f"{said} ({'; '.join(parts)})" if parts else f"{said} of other sizes or order"


def apply_fusion(store: FeatureStore, checkpoint: Path, model: str | None = None) -> dict:
    """Write fused vectors of every track of the model's run in use; returns the metadata stored with them, and
    ``missing``: how many of the run's tracks have none (re-embedded or added while it ran). A checkpoint inside the
    store is also recorded relative to it, so :func:`fuse_query` finds it in a moved or copied store; the run the
    checkpoint was trained on (``trained_on``), so readers refuse vectors of another run
    (:func:`mess.store.fused.fused_run_problem`)."""
    result = load_checkpoint(checkpoint)
    run = store.run(model or result.model)
    check_compatible(result, run)
    data = load_layers(store, run)
    fused = embed(result.network, data.x)
    path, root = checkpoint.resolve(), store.root.resolve()
    meta = {"checkpoint": str(path), "checkpoint_sha256": result.sha256,  # the network used, though retrained since
            "checkpoint_in_store": path.relative_to(root).as_posix() if path.is_relative_to(root) else None,
            "trained_on": {"run_id": result.run_id, "revision": result.revision, "policy": result.policy},
            "label": result.config.label, "labels_file": result.config.labels_file,
            "label_grouping": label_grouping(zip([t.content_hash for t in data.tracks], result.labels(data),
                                                 strict=True)),
            "fusion_dim": int(fused.shape[1]), "tracks": len(fused), "data_hash": result.data_hash,
            "data_hash_matches": data.data_hash(result.config.label, result.given_labels) == result.data_hash,
            "layer_weights": result.layer_weights(data.x)}
    store.write_derived(run, FUSED, [t.content_hash for t in data.tracks], fused, meta)
    return {**meta, "missing": store.derived_missing(run, FUSED)}


def fuse_query(store: FeatureStore, run: Run, layer_vectors: Sequence[np.ndarray]) -> np.ndarray:
    """Fused unit vector of one external track's per-layer vectors, with the network `fuse apply` used."""
    meta = store.derived_meta(run, FUSED)
    if meta is None:
        raise FusionError(f"no fused vectors for {run.model}; run `mess fuse train` and `mess fuse apply` first")
    inside = meta.get("checkpoint_in_store")  # found there after the store is moved or copied
    checkpoint = store.root / inside if inside else Path(meta["checkpoint"])
    result = load_checkpoint(checkpoint)
    check_compatible(result, run)
    # retrained since (None: an older apply)
    if meta.get("checkpoint_sha256") not in (None, result.sha256):
        raise FusionError(f"{checkpoint} has changed since `mess fuse apply` wrote the collection's fused vectors "
                          "(a new `mess fuse train`?); run `mess fuse apply` again so that both come from one network")
    x = np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in layer_vectors])[None]
    return embed(result.network, x)[0]
