"""Training data for fusion: all layer vectors of a run, labels, and label-disjoint splits."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from mess.audio.names import label_key
from mess.constants import LABEL_FIELDS
from mess.store import FeatureStore, Run, Track


class FusionError(Exception):
    """Data or checkpoint that fusion cannot work with; the message says why."""


@dataclass(frozen=True)
class LayerData:
    """Every track of a run with its layer vectors concatenated: x is float32 [n, sum(layer_dims)]."""

    run: Run
    tracks: list[Track]
    x: np.ndarray

    @property
    def track_ids(self) -> np.ndarray:
        """Track ids, aligned with the rows of ``x``."""
        return np.array([t.id for t in self.tracks], dtype=np.int64)

    def labels(self, field: str, given: dict[int, str] | None = None) -> np.ndarray:
        """The metadata field per track as an object array (None where untagged; artists by
        :func:`~mess.audio.names.label_key`), or the ``given`` labels by track id (a label file's,
        :func:`mess.search.evaluate.read_label_csv`) in its place."""
        if given is not None:
            return np.array([given.get(t.id) for t in self.tracks], dtype=object)
        if field not in LABEL_FIELDS:
            raise FusionError(f"unknown label {field!r}; use one of {', '.join(LABEL_FIELDS)}")
        return np.array([label_key(field, t.label(field)) for t in self.tracks], dtype=object)

    def recordings(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` less byte-identical copies: of the rows of one content hash only the first of ``rows`` (rows of a
        split part come in content order), as `mess evaluate` scores each recording once (a copy ranks its twin first
        at cosine 1)."""
        first: dict[str, int] = {}
        for r in rows:
            first.setdefault(self.tracks[r].content_hash, int(r))
        return np.array(list(first.values()), dtype=np.intp)

    def data_hash(self, field: str, given: dict[int, str] | None = None) -> str:
        """Hash of what training saw: run identity plus sorted (content hash, label) pairs (tags, or ``given``)."""
        labels = self.labels(field, given) if given is not None else [label_key(field, t.label(field))
                                                                         for t in self.tracks]
        pairs = sorted((t.content_hash, v) for t, v in zip(self.tracks, labels, strict=True) if v)
        head = [self.run.model, self.run.revision, self.run.policy, list(self.run.layer_names), field]
        return hashlib.sha256(json.dumps([head, pairs]).encode()).hexdigest()


def load_layers(store: FeatureStore, run: Run) -> LayerData:
    """Read all layer vectors of a run (layer by layer when their sizes differ), and the tracks (their content
    hashes) they belong to, from one catalog version.

    Rows go in content order (hash, then path), not in track ids: a store that grew in steps numbers a collection
    otherwise than one extraction of it all (:attr:`Track.content_key`), and training's seeded batches,
    starting weights' statistics and PCA go by row."""
    def read() -> tuple[dict[int, Track], np.ndarray, np.ndarray]:
        tracks = {t.id: t for t in store.tracks(run)}
        if len(set(run.layer_dims)) == 1:
            ids, stacked = store.all_layers(run)
            return tracks, ids, stacked.reshape(len(ids), -1)
        mats = [store.layer_matrix(run, i) for i in range(len(run.layer_names))]
        return tracks, mats[0][0], np.hstack([m for _, m in mats])

    # one catalog version, though an extract may be committing (again where a reclaim moved rows meanwhile)
    tracks, ids, x = store.reading(read)
    if len(ids) == 0:
        raise FusionError(f"no track vectors for {run.model}; run `mess extract` first")
    order = sorted(range(len(ids)), key=lambda r: tracks[int(ids[r])].content_key)
    return LayerData(run, [tracks[int(ids[r])] for r in order], np.ascontiguousarray(x[order], dtype=np.float32))


@dataclass(frozen=True)
class LabelSplit:
    """Which labels train, validate (early stopping) and test; no label is in two parts."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def rows(self, labels: np.ndarray, part: str) -> np.ndarray:
        """Row indices whose label belongs to ``part`` (train, val or test)."""
        keep = set(getattr(self, part))
        return np.flatnonzero([lab in keep for lab in labels])

    def to_json(self) -> dict[str, list[str]]:
        """Plain lists, for checkpoints and reports."""
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}


def split_labels(labels: np.ndarray, val_frac: float = 0.15, test_frac: float = 0.15,
                 seed: int = 0) -> LabelSplit:
    """Shuffle the distinct labels (deterministically) and cut them into train/val/test.

    Test and validation get at least 2 labels each so retrieval among them means
    something; validation is dropped (no early stopping) when that would leave
    fewer than 2 training labels. Needs at least 4 labels with 2+ tracks.
    """
    names, counts = np.unique([lab for lab in labels if lab], return_counts=True)
    usable = sorted(str(n) for n, c in zip(names, counts, strict=False) if c >= 2)
    if len(usable) < 4:
        labelled = sum(1 for lab in labels if lab)
        raise FusionError(f"need at least 4 labels with 2+ tracks each to train and hold out; found {len(usable)} "
                          f"({labelled} of {len(labels)} tracks have a label)")
    order = [usable[i] for i in np.random.default_rng(seed).permutation(len(usable))]
    n_test = max(2, round(test_frac * len(order)))
    n_val = max(2, round(val_frac * len(order))) if val_frac > 0 else 0
    if len(order) - n_test - n_val < 2:
        n_val = 0
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    return LabelSplit(tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(test)))
