"""Feature store: SQLite catalog plus float16 row files."""

from mess.store.feature_store import (
    DEFAULT_STORE,
    FeatureStore,
    Run,
    RunKey,
    StoreDamaged,
    StoreError,
    Track,
    TrackFailed,
    TrackList,
    TrackVectors,
    is_track_id,
)
from mess.store.lock import StoreBusy

__all__ = [
    "DEFAULT_STORE",
    "FeatureStore",
    "Run",
    "RunKey",
    "StoreBusy",
    "StoreDamaged",
    "StoreError",
    "Track",
    "TrackFailed",
    "TrackList",
    "TrackVectors",
    "is_track_id",
]
