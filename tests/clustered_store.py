"""A synthetic store of clustered one-layer vectors, and an upload embedder with a fixed answer: what the server's
ranking-lock tests serve (the search after the embedding is what they test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mess.serve.uploads import Embedded, EmbedWorker
from mess.store import FeatureStore, Run, RunKey, TrackVectors


def clustered_store(root: Path, n: int, dim: int, clusters: int,
                    seed: int) -> tuple[FeatureStore, Run, np.ndarray, np.random.Generator]:
    """``n`` tracks of model 'synthetic', one layer 'a' of ``dim`` values, track i around centre i % ``clusters``
    (file /m/I.flac, artist A{i % clusters}, content hash I as 32 hex digits); also the centres and the generator,
    for a query drawn the same way."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    store = FeatureStore(root)
    run = store.ensure_run(RunKey("synthetic", "r1", "{}", 16000, ("a",), (dim,)))
    items = []
    for i in range(n):
        h = f"{i:032x}"
        store.upsert_track(Path(f"/m/{i}.flac"), h, 1, 0.0, {"duration": 30.0},
                           {"artist": f"A{i % clusters}", "title": f"T{i}"})
        v = (centres[i % clusters] + 0.8 * rng.standard_normal(dim)).astype(np.float32)
        items.append(TrackVectors(h, [v], [v[None]], [0.0]))
    store.write_vectors(run, items)
    return store, run, centres, rng


class FixedEmbedding(EmbedWorker):
    """The embedding process's answer for any upload: one fixed vector, of content not in the collection."""

    def __init__(self, vector: np.ndarray, content_hash: str = "e" * 32) -> None:
        super().__init__()
        self.vector, self.content_hash = vector, content_hash

    def embed(self, path: Path, run: Run, name: str, source: dict[str, str] | None = None,
              segments: bool = False) -> Embedded:
        return Embedded(self.content_hash, [self.vector], {"artist": None, "title": None}, [])
