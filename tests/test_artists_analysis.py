"""The small decisions of `mess artists` (mess.artists.analysis), in process: options refused, where the matrix
goes, which comparison and space the saved hybrid weights were learned with, the tags file, the centring note."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mess.artists.analysis import ArtistOptions, Hybrid, SpaceChoice
from mess.artists.profiles import ArtistError
from mess.audio.windows import WindowPolicy
from mess.extract.runs import run_key
from mess.models.base import ModelInfo
from mess.store import FeatureStore


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    fs = FeatureStore(tmp_path / "store")
    yield fs
    fs.close()


def _saved(store: FeatureStore, data: object) -> None:
    """A weights file as `mess artists hybrid` writes it (or as a user left it)."""
    store.reports_dir.mkdir(parents=True, exist_ok=True)
    (store.reports_dir / "artists_hybrid.json").write_text(json.dumps(data), encoding="utf-8")


@pytest.mark.parametrize("selection", [{"layer": ["b"]}, {"aspect": ["timbre"]}, {"layer": 1.5}, {"fused": "no"}],
                         ids=["layer-a-list", "aspect-a-list", "layer-a-number", "fused-a-word"])
def test_a_hand_edited_saved_selection_that_is_malformed_is_an_artist_error(store: FeatureStore,
                                                                            selection: dict) -> None:
    """`similar --hybrid` without --layer read the saved selection as it stood: a layer or an aspect written as a
    list ended in a TypeError traceback (int() of a list, an unhashable list), a layer written as 1.5 searched layer
    1 and a fused written as "no" searched the fused vectors."""
    import hashlib

    from mess.artists.analysis import similar_artists
    from mess.store import TrackVectors

    run = store.ensure_run(run_key(ModelInfo("synthetic", "r1", 16000, ("a", "b"), (8, 8)), WindowPolicy()))
    rng = np.random.default_rng(1)
    for a in range(4):
        for t in range(2):
            digest = hashlib.sha1(f"{a}-{t}".encode()).hexdigest()
            store.upsert_track(Path(f"/music/{a}{t}.flac"), digest, 1, 0.0, {"duration": 30.0},
                               {"artist": f"Artist {a}"})
            layers = [rng.normal(size=8).astype(np.float32) for _ in range(2)]
            store.write_vectors(run, [TrackVectors(digest, layers, [v[None] for v in layers], [0.0])])
    _saved(store, {"weights": {"audio": 1.0}, "model": "synthetic", "run_id": run.id, "selection": {"layer": "b"}})
    good = similar_artists(store, "Artist 0", 2, ArtistOptions(min_tracks=1), SpaceChoice(), hybrid=Hybrid())
    assert good.space == "b"
    _saved(store, {"weights": {"audio": 1.0}, "model": "synthetic", "run_id": run.id, "selection": selection})
    with pytest.raises(ArtistError, match="malformed weights file .*artists_hybrid.json"):
        similar_artists(store, "Artist 0", 2, ArtistOptions(min_tracks=1), SpaceChoice(), hybrid=Hybrid())
