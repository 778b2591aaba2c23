"""The messages between the server (:class:`mess.serve.uploads.EmbedWorker`) and its embedding child
(:mod:`mess.serve.embed_worker`), pickled over the child's stdin and stdout; numpy alone, so both sides import it
without the model stack.

Server to child: an :class:`EmbedJob`, or ``("spans", path)``. Child to server: ``("ready",)`` once, then per job
``("loaded",)`` and ``("ok", Embedded)`` or ``("error", kind, message)``; ``("spans", FirstSpans)`` per spans job.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class EmbedJob(NamedTuple):
    """Embed one file as a run's tracks were."""

    path: str
    model: str
    revision: str
    policy: str  # the run's window policy, as JSON
    max_seconds: float  # a longer file (by its header) is refused before decoding
    source: dict[str, str] | None  # the run's record of where its model came from, for a model its name cannot load
    segments: bool = False  # and the window vectors (what segment matching compares)


class Embedded(NamedTuple):
    """What the embedding process made of an upload."""

    content_hash: str
    layers: list[np.ndarray]  # per-layer track vectors
    tags: dict[str, str | None]
    warnings: list[str]  # what `mess similar FILE` would warn of (a low sample rate, only its start analysed)
    duration: float | None = None  # seconds, by the file's header (None: it gives none)
    segments: tuple[np.ndarray, ...] = ()  # per-layer window vectors [n, dim], when asked for (match segments)
