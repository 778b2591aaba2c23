"""Feature store: SQLite catalog plus memory-mapped float16 vectors."""

from mess.store.feature_store import DEFAULT_STORE, FeatureStore, Run, StoreDamaged, StoreError, Track, TrackVectors
from mess.store.lock import StoreBusy

__all__ = ["DEFAULT_STORE", "FeatureStore", "Run", "StoreBusy", "StoreDamaged", "StoreError", "Track", "TrackVectors"]
