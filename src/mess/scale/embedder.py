"""The inference step of a Ray extraction, batches of decoded tracks in, vectors out: an actor per GPU
(:class:`Embedder`), or on CPUs a task function (:func:`embed_batch`) whose Ray worker process keeps its model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mess.extract.embed import embed_prepared
from mess.extract.prepare import FileRecord, Windows, describe
from mess.models.registry import load_model
from mess.scale.gpu import with_precision
from mess.store import TrackVectors


class ModelMismatch(Exception):
    """A worker resolved the model name to other weights than the driver."""


class Embedder:
    """Ray Data actor class (``map_batches``): loads the model once, embeds decoded tracks.

    Each output row carries the track's vectors of all layers concatenated
    (``track`` [sum(dims)], ``segments`` [n_windows, sum(dims)]) so they travel as
    Arrow tensors; :func:`split_row` undoes it. Failed tracks keep their error.
    """

    def __init__(self, model_name: str, device: str, precision: str, revision: str, batch_size: int) -> None:
        self.model = with_precision(load_model(model_name, device=device), precision)
        if self.model.info.revision != revision:
            raise ModelMismatch(f"a worker loaded {model_name} revision {self.model.info.revision}, the run is "
                                f"{revision}: every node needs the same model weights")
        self.batch_size = batch_size
        self.width = sum(self.model.info.layer_dims)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        rows = [{k: batch[k][i] for k in batch} for i in range(len(batch["path"]))]
        prepared = [Windows(FileRecord(Path(r["path"]), r["hash"], 0, 0.0, {}, {}),
                            np.asarray(r["starts"]), np.asarray(r["audio"], np.float32))
                    for r in rows if not r["error"]]
        results = dict(self._embed(prepared))
        out: dict[str, list[Any]] = {k: [] for k in ("path", "hash", "error", "warnings", "samples", "track",
                                                      "segments", "starts", "duration")}
        for r in rows:
            got = results.get(r["hash"], r["error"])
            failed = isinstance(got, str)
            out["path"].append(r["path"])
            out["hash"].append(r["hash"])
            out["error"].append(got if failed else "")
            out["warnings"].append(r["warnings"])
            out["samples"].append(0 if failed else int(np.asarray(r["audio"]).size))
            out["track"].append(np.zeros(self.width, np.float32) if failed else np.concatenate(got.layers))
            out["segments"].append(np.zeros((0, self.width), np.float32) if failed
                                   else np.concatenate(got.segments, axis=1))
            out["starts"].append(np.zeros(0) if failed else np.asarray(got.seg_starts))
            out["duration"].append(float(r["duration"]))
        return out

    def _embed(self, prepared: list[Windows]) -> list[tuple[str, TrackVectors | str]]:
        """(hash, vectors) per track; a failing group is retried track by track, failures as messages (any error: as
        the local pipeline, the file that makes the model fail is that file's failure, never the job's)."""
        if not prepared:
            return []
        try:
            return [(tv.content_hash, tv) for tv in embed_prepared(self.model, prepared, self.batch_size)]
        except Exception as exc:  # noqa: BLE001 -- isolate the file that makes the model fail
            if len(prepared) == 1:
                return [(prepared[0].record.content_hash,
                         f"{prepared[0].record.path}: model failed ({describe(exc)})")]
            return [item for p in prepared for item in self._embed([p])]


_LOADED: dict[tuple[str, str, str, str, int], Embedder] = {}  # this Ray worker process's model: one at a time


def embed_batch(batch: dict[str, np.ndarray], model_name: str, device: str, precision: str, revision: str,
                batch_size: int) -> dict[str, list[Any]]:
    """Ray Data task function (``map_batches`` on CPU workers): :class:`Embedder`'s call, with the model this Ray
    worker process loaded first kept for its later batches, of this run or a later one of the same driver (a
    Ray Data actor pool starts new actor processes, with their imports and decoding process, for every run)."""
    key = (model_name, device, precision, revision, batch_size)
    embedder = _LOADED.get(key)
    if embedder is None:
        _LOADED.clear()  # another run's model is let go before this one loads
        embedder = _LOADED[key] = Embedder(model_name, device, precision, revision, batch_size)
    return embedder(batch)


def split_row(row: dict[str, Any], dims: tuple[int, ...]) -> TrackVectors:
    """Split an :class:`Embedder` row's concatenated layers back into per-layer vectors."""
    cuts = np.cumsum(dims)[:-1]
    return TrackVectors(row["hash"], np.split(np.asarray(row["track"]), cuts),
                        np.split(np.asarray(row["segments"]), cuts, axis=1), list(map(float, row["starts"])))
