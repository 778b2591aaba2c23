"""Feature store: SQLite catalog plus float16 row files."""

from mess.constants import DEFAULT_STORE
from mess.store.errors import StoreDamaged, StoreError, TrackFailed
from mess.store.feature_store import FeatureStore
from mess.store.lock import StoreBusy
from mess.store.records import Run, RunKey, Track, TrackList, TrackVectors, is_track_id

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
