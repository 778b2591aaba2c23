"""Batched inference over windows and per-track aggregation."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mess.audio.decode import native_output_quiet
from mess.audio.windows import WindowPolicy
from mess.extract.prepare import Windows, decode_windows, inspect_file
from mess.models.base import EmbeddingModel
from mess.store import TrackVectors
from mess.store.arrays import DTYPE

log = logging.getLogger(__name__)
STORABLE = float(np.finfo(DTYPE).max)  # the largest magnitude the store's float16 rows hold (65504)


def embed_windows(model: EmbeddingModel, tracks: Sequence[np.ndarray], batch_size: int) -> list[list[np.ndarray]]:
    """Embed every window of several tracks, batching windows of equal length together.

    Args:
        tracks: per track, its windows [n_windows, samples].

    Returns:
        Per track, per layer, its segment vectors [n_windows, dim].

    Raises:
        ValueError: when the model returns NaN or infinity (the pipeline then records the file as failed).
    """
    by_length: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for t, windows in enumerate(tracks):
        for w in range(windows.shape[0]):
            by_length[windows.shape[1]].append((t, w))
    n_layers = len(model.info.layer_names)
    out: list[list[np.ndarray]] = [
        [np.empty((w.shape[0], d), np.float32) for d in model.info.layer_dims] for w in tracks]
    for keys in by_length.values():
        for i in range(0, len(keys), batch_size):
            chunk = keys[i : i + batch_size]
            layers = model.embed(np.stack([tracks[t][w] for t, w in chunk]))
            shapes = [tuple(np.shape(layer)) for layer in layers]
            if shapes != [(len(chunk), d) for d in model.info.layer_dims]:  # was an IndexError, or layers dropped
                raise ValueError(f"the model returned layers of shapes {shapes} for {len(chunk)} windows, not the "
                                 f"{n_layers} of sizes {list(model.info.layer_dims)} its ModelInfo names")
            if not all(np.isfinite(layer).all() for layer in layers):
                raise ValueError("the model's output is not finite (are the samples far outside [-1, 1]?)")
            if any(np.abs(layer).max(initial=0.0) > STORABLE for layer in layers):
                raise ValueError(f"the model's output is past {STORABLE:g}, the largest value the store's float16 "
                                 "vectors hold")
            for layer in range(n_layers):
                for row, (t, w) in enumerate(chunk):
                    out[t][layer][w] = layers[layer][row]
    return out


def embed_prepared(model: EmbeddingModel, prepared: Sequence[Windows], batch_size: int) -> list[TrackVectors]:
    """Embed decoded tracks into TrackVectors: each track's vector per layer pooled from its full-context window
    vectors by the model (:meth:`EmbeddingModel.pool`: their mean, for most layers)."""
    segs = embed_windows(model, [p.audio for p in prepared], batch_size)
    return [TrackVectors(p.record.content_hash, model.pool(s), s, list(map(float, p.starts)))
            for p, s in zip(prepared, segs, strict=False)]


def embed_file(path: Path, model: EmbeddingModel, policy: WindowPolicy, batch_size: int = 4) -> TrackVectors:
    """Embed any audio file with the same model and window policy as a stored run (not stored); what a run's
    summary would warn of (a low sample rate, a file too long to analyse whole) is logged as a warning."""
    vectors, warnings = embed_file_warned(path, model, policy, batch_size)
    for text in warnings:
        log.warning("%s", text)
    return vectors


def embed_file_warned(path: Path, model: EmbeddingModel, policy: WindowPolicy,
                      batch_size: int = 4) -> tuple[TrackVectors, list[str]]:
    """:func:`embed_file`'s vectors and its warnings, returned instead of logged (the server hands them to the
    client that uploaded the file)."""
    with native_output_quiet():  # the file's fault is the error raised, not what a decoder printed on the way
        prepared = decode_windows(inspect_file(path, arriving=False), model.info.sample_rate, policy,
                                  model.info.band_hz)
    return embed_prepared(model, [prepared], batch_size)[0], list(prepared.warnings)
