"""A better model part-way through its first extract is not the default until it has caught up with the collection:
before, once its first batch was committed, the server's page and every command naming no model shrank to the few
tracks it held (2, 3, ... of 24 over the minutes of the extract, notes/app_session38.md)."""

from __future__ import annotations

import shutil
from contextlib import closing
from pathlib import Path

import numpy as np
import test_serve_api as api
from fastapi.testclient import TestClient

from mess.audio.windows import WindowPolicy
from mess.serve.app import create_app
from mess.store import FeatureStore, RunKey, TrackVectors
from mess.store.config import write_setting

serve_collection = api.serve_collection  # the session's store (12 tracks, dsp), made once per run


def _vectors(content_hash: str, seed: int) -> TrackVectors:
    layer = np.random.default_rng(seed).standard_normal(4).astype(np.float32)
    return TrackVectors(content_hash, [layer], [layer[None]], [0.0])


def test_a_better_model_becomes_the_default_once_it_has_handled_most_tracks(serve_collection: Path,
                                                                               tmp_path: Path) -> None:
    copy = tmp_path / "store"
    shutil.copytree(serve_collection, copy)
    with closing(FeatureStore(copy)) as store, TestClient(create_app(copy), base_url="http://127.0.0.1:8000") as client:
        tracks = store.tracks(store.run("dsp"))
        assert len(tracks) == 12
        musicnn = store.ensure_run(RunKey("musicnn", "partway", WindowPolicy().to_json(), 16000, ("a",), (4,)))
        store.write_vectors(musicnn, [_vectors(t.content_hash, t.id) for t in tracks[:2]])  # its first batch
        assert store.caught_up_models() == ["dsp"] and store.default_choice() == "dsp"
        assert store.run().model == "dsp"
        assert client.get("/api/health").json()["default_model"] == "dsp"
        assert client.get("/api/tracks").json()["total"] == 12
        write_setting(copy, "default-model", "musicnn")  # a user's own choice is theirs, caught up or not
        assert store.default_choice() == "musicnn" and store.run().model == "musicnn"
        write_setting(copy, "default-model", None)
        store.write_vectors(musicnn, [_vectors(t.content_hash, t.id) for t in tracks[2:-2]])
        assert store.default_choice() == "dsp"  # 10 of 12: under 90%
        store.record_failure(musicnn, tracks[-2].content_hash, tracks[-2].path, "a file it cannot read")
        assert store.caught_up_models() == ["dsp", "musicnn"]  # a failure is a file handled: 11 of 12
        assert store.default_choice() == "musicnn" and store.run().model == "musicnn"
        assert client.get("/api/health").json()["default_model"] == "musicnn"
