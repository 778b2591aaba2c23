"""An upload ranked ``ranking=reranked`` re-ranks the collection with the query added (exact up to
``EXACT_TRACKS``): that computation must not hold the server's request lock, so that a cheap request sent meanwhile
(a track's plain neighbours) is answered before it ends, and the upload's answer is unchanged.

In-process app, real threads, a real store in ``tmp_path``. The embedding process is replaced by fixed vectors (what
is tested is the search after it). The re-ranking is held at its start until the cheap request has been answered
(or 20 s have passed): the ordering is forced by events, not by timing. The expected ranking is
``build_reranker(...).outside`` on the same unit vectors, computed in the test."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from clustered_store import FixedEmbedding, clustered_store
from fastapi.testclient import TestClient

from mess.search import rerank
from mess.search.rerank import build_reranker, copy_first
from mess.search.vectors import VectorSpec, load_vectors
from mess.serve.app import create_app
from mess.store import FeatureStore, Run

N, DIM = 60, 16


def _store(root: Path) -> tuple[FeatureStore, Run, np.ndarray]:
    """N tracks in 6 clusters, and a query near the third centre."""
    store, run, centres, rng = clustered_store(root, N, DIM, 6, seed=7)
    return store, run, (centres[2] + 0.8 * rng.standard_normal(DIM)).astype(np.float32)


def test_a_reranked_upload_does_not_hold_the_lock_while_it_reranks(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    store, run, query = _store(tmp_path / "store")
    app = create_app(tmp_path / "store")
    app.state.mess.worker = FixedEmbedding(query, "f" * 32)
    started, answered = threading.Event(), threading.Event()
    real = rerank.Reranker._exact

    calls = []

    def held(self: rerank.Reranker, q: np.ndarray) -> np.ndarray:  # the real computation, once the cheap one is done
        calls.append(q)
        started.set()
        answered.wait(20)
        return real(self, q)

    monkeypatch.setattr(rerank.Reranker, "_exact", held)
    upload: dict = {}

    def send() -> None:
        client = TestClient(app, base_url="http://127.0.0.1")
        upload["r"] = client.post("/api/similar/upload", params={"ranking": "reranked", "k": 8},
                                  files={"file": ("q.wav", b"RIFF", "audio/wav")})

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert started.wait(60), "the upload's re-ranking never started"
        cheap: dict = {}

        def ask() -> None:
            cheap["r"] = TestClient(app, base_url="http://127.0.0.1").get("/api/tracks/1/similar",
                                                                           params={"ranking": "plain"})

        asker = threading.Thread(target=ask)
        asker.start()
        asker.join(15)
        ok = "r" in cheap
    finally:
        answered.set()
        sender.join(60)
    assert ok, "a track's neighbours waited for the upload's re-ranking"
    assert cheap["r"].status_code == 200
    got = upload["r"]
    assert got.status_code == 200, got.text
    assert got.json()["ranking"] == "reranked"
    assert len(calls) == 1  # computed once, outside the lock: the answer under it read that row
    vs = load_vectors(store, run, VectorSpec.from_options(None, None, False, "auto"))
    unit = vs.unit()
    q = vs.prep.apply(query.astype(np.float16).astype(np.float32)[None])  # an upload's layers as the store keeps them
    # a fresh re-ranker (nothing the server computed), its near-copy rule applied as `mess similar FILE` does
    scores = copy_first(build_reranker(unit.copy()).outside(q)[0], unit @ q[0], 0.0)
    order = np.argsort(-scores, kind="stable")[:8]
    assert [r["id"] for r in got.json()["results"]] == vs.ids[order].tolist()
    adjusted = [r["adjusted"] for r in got.json()["results"]]
    np.testing.assert_allclose(adjusted, scores[order], rtol=0, atol=1e-6)  # the answer rounds to 6 places
    store.close()
