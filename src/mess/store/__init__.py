"""Feature store: SQLite catalog plus memory-mapped float16 vectors."""

from mess.store.feature_store import DEFAULT_STORE, FeatureStore, Run, StoreError, Track, TrackVectors

__all__ = ["DEFAULT_STORE", "FeatureStore", "Run", "StoreError", "Track", "TrackVectors"]
