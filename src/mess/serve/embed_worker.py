"""The child process that decodes and embeds uploaded files: ``python -m mess.serve.embed_worker``.

It talks to the server over its stdin and stdout with pickled messages
(``multiprocessing.connection`` framing); anything a library prints goes to stderr.
"""

from __future__ import annotations

import os
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from mess.audio.decode import AudioError, probe
from mess.audio.recording import first_spans
from mess.audio.tags import read_tags
from mess.audio.windows import WindowPolicy
from mess.extract.embed import embed_file_warned
from mess.models.base import EmbeddingModel
from mess.models.registry import ModelError, UnknownModel, load_run_model
from mess.serve.embed_protocol import Embedded, EmbedJob


def serve(inbox: Connection, outbox: Connection) -> None:
    """Serve :class:`~mess.serve.embed_protocol.EmbedJob` jobs until the pipe closes.

    ``source`` is the run's record of where its model came from (a dict of strings, or None), for a model its
    name cannot load (see :func:`mess.models.registry.load_run_model`).

    Says ``("ready",)`` once, when its imports are done, and ``("loaded",)`` for each job
    once the model is loaded (the server's timeout starts there). Then replies
    ``("ok", Embedded)`` (:class:`~mess.serve.embed_protocol.Embedded`: content hash, layer vectors, tags, warnings,
    duration, and for a job with ``segments`` the per-layer window vectors) or ``("error", kind, message)`` with kind
    ``decode`` (the file is bad) or ``model`` (the model cannot be used); ``warnings`` are what the CLI would
    warn of for the file (a low sample rate, only its start analysed), as sentences; ``duration`` is its length in
    seconds by its header (None when it gives none), as `mess similar FILE` reads it. Files longer
    than ``max_seconds`` are refused from their header, before decoding. Loaded models
    stay cached for the next job.

    A job ``("spans", path)`` is answered ``("spans", first_spans)``: the file's side of the same-recording check
    (:func:`mess.audio.recording.first_spans`), decoded here rather than in the server.
    """
    models: dict[tuple[str, str], EmbeddingModel] = {}
    outbox.send(("ready",))
    while True:
        try:
            job = inbox.recv()
        except EOFError:
            return
        if not isinstance(job, EmbedJob):  # ("spans", path)
            outbox.send(("spans", first_spans(job[1])))
            continue
        name, revision = job.model, job.revision
        try:
            if (name, revision) not in models:
                models[name, revision] = load_run_model(name, revision, job.source)
            model = models[name, revision]
        except UnknownModel as exc:  # a model folder gone, say: which model it was comes first
            outbox.send(("error", "model", f"cannot load model {name}: {exc}"))
            continue
        except ModelError as exc:  # names the model, what is wrong and what to do (re-extract, the file is gone)
            outbox.send(("error", "model", str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 -- any fault loading the model is the model's error, not a dead
            # decoder's
            outbox.send(("error", "model", f"cannot load model {name}: {str(exc) or type(exc).__name__}"))
            continue
        outbox.send(("loaded",))
        outbox.send(_embed(Path(job.path), model, WindowPolicy.from_json(job.policy), job.max_seconds, job.segments))


def _embed(path: Path, model: EmbeddingModel, policy: WindowPolicy, max_seconds: float, windows: bool) -> tuple:
    try:
        try:
            duration = probe(path).duration
        except AudioError:  # no header to read: decoding says why, in the words of `mess similar FILE`
            duration = 0.0
        if duration > max_seconds:
            return ("error", "decode", f"{path}: {duration / 60:.0f} min long; uploads may last at most "
                                       f"{max_seconds / 60:g} min")
        vectors, warnings = embed_file_warned(path, model, replace(
            policy, max_decode_seconds=min(policy.max_decode_seconds, max_seconds)))
        tags = read_tags(path)  # inside: a tag reader's fault is this upload's error, not the worker's death
    except Exception as exc:  # noqa: BLE001 -- any fault in one upload is that upload's error
        return ("error", "decode", str(exc) or type(exc).__name__)
    return ("ok", Embedded(vectors.content_hash, [np.asarray(v, dtype=np.float32) for v in vectors.layers], tags,
                           warnings, duration or None,
                           tuple(np.asarray(v) for v in vectors.segments) if windows else ()))


def main() -> None:
    """Serve on stdin/stdout, with stray prints redirected to stderr; end without a word once the server has closed
    the pipe (it stopped while this process was starting or embedding)."""
    out_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        serve(Connection(os.dup(0), writable=False), Connection(out_fd, readable=False))
    except BrokenPipeError:
        pass


if __name__ == "__main__":
    main()
