"""The child process that decodes and embeds uploaded files: ``python -m mess.serve.embed_worker``.

It talks to the server over its stdin and stdout with pickled messages
(``multiprocessing.connection`` framing); anything a library prints goes to stderr.
"""

from __future__ import annotations

import os
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from mess.audio.decode import AudioError
from mess.audio.tags import read_tags
from mess.audio.windows import WindowPolicy
from mess.extract.embed import embed_file
from mess.models.base import EmbeddingModel
from mess.models.registry import ModelError, load_model


def serve(inbox: Connection, outbox: Connection) -> None:
    """Serve jobs ``(path, model, revision, policy_json)`` until the pipe closes.

    Replies ``("ok", content_hash, layer_vectors, tags)`` or ``("error", kind, message)``
    with kind ``decode`` (the file is bad) or ``model`` (the model cannot be used).
    Loaded models stay cached for the next job.
    """
    models: dict[str, EmbeddingModel] = {}
    while True:
        try:
            path, name, revision, policy = inbox.recv()
        except EOFError:
            return
        try:
            if name not in models:
                models[name] = load_model(name)
            model = models[name]
        except (ModelError, OSError) as exc:
            outbox.send(("error", "model", f"cannot load model {name}: {exc}"))
            continue
        if model.info.revision != revision:
            outbox.send(("error", "model", f"{name} is now revision {model.info.revision} but the store holds "
                                           f"{revision}; re-extract the collection to compare new files"))
            continue
        try:
            vectors = embed_file(Path(path), model, WindowPolicy.from_json(policy))
        except (AudioError, OSError, ValueError, RuntimeError, EOFError) as exc:
            outbox.send(("error", "decode", str(exc) or type(exc).__name__))
            continue
        outbox.send(("ok", vectors.content_hash, [np.asarray(v, dtype=np.float32) for v in vectors.layers],
                     read_tags(Path(path))))


def main() -> None:
    """Serve on stdin/stdout, with stray prints redirected to stderr."""
    out_fd = os.dup(1)
    os.dup2(2, 1)
    serve(Connection(os.dup(0), writable=False), Connection(out_fd, readable=False))


if __name__ == "__main__":
    main()
