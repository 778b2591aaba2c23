"""Feature store: SQLite catalog plus memory-mapped float16 vectors."""

from mess.store.feature_store import (
    DEFAULT_STORE,
    FeatureStore,
    Run,
    RunKey,
    StoreDamaged,
    StoreError,
    Track,
    TrackList,
    TrackVectors,
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
    "TrackList",
    "TrackVectors",
]
