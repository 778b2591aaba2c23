"""What the store reads and writes, as plain data: tracks, runs, the vectors of one file."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mess.constants import file_title
from mess.store.errors import StoreError
from mess.store.paths import from_db_path, printable


@dataclass(frozen=True)
class Track:
    """One audio file in the collection, with its tags."""

    id: int
    path: str
    content_hash: str
    duration: float | None
    artist: str | None
    album: str | None
    title: str | None
    genre: str | None
    composer: str | None

    @property
    def name(self) -> str:
        """A human label: 'artist - title', falling back to the file name (printable: caf\\xe9 for a non-UTF-8 one)."""
        title = self.title or printable(file_title(self.path))  # 'b' for 'b.flac.', as extraction reads names
        return f"{self.artist} - {title}" if self.artist else title

    @property
    def content_key(self) -> tuple[str, str]:
        """(content hash, path): the order of a collection's tracks whatever ids the store gave them. `mess extract`
        numbers new tracks in its input order, so a store that grew in steps (files added, or an extraction of a
        subset first) numbers one collection otherwise than one extraction of it all; a seeded step that picks rows
        by position (a sample, a permutation, k-means starts, batches) sorts by this first."""
        return self.content_hash, self.path

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Track:
        """A track from a catalog row holding the columns of ``_TRACK_COLS`` (:mod:`mess.store.tracks`)."""
        return cls(**{**dict(row), "path": from_db_path(row["path"])})

    def label(self, field: str) -> str | None:
        """A metadata field by name (artist, album, genre, composer, title)."""
        return getattr(self, field)


@dataclass(frozen=True)
class RunKey:
    """What a run's vectors come from, as plain data (the store knows no model or audio types).

    ``model``, ``revision`` and ``policy`` (the window policy's canonical JSON, see
    ``mess.audio.windows.WindowPolicy.to_json``) identify the run; the rest describes its
    vectors. The extract layer builds it from a model and a policy (``mess.extract.runs.run_key``).
    """

    model: str
    revision: str
    policy: str
    sample_rate: int
    layer_names: tuple[str, ...]
    layer_dims: tuple[int, ...]


@dataclass(frozen=True)
class Run(RunKey):
    """A (model, revision, window policy) combination whose vectors live in the store: its key and its id.

    ``policy`` is the window policy's canonical JSON, as stored (``WindowPolicy.from_json`` reads it).
    """

    id: int = field(kw_only=True)

    def layer_index(self, layer: str | int) -> int:
        """Resolve a layer name, index or negative index ('-1' = last) to an index. An index in text is 1 to 18
        ASCII digits: not ' 1', '1_0' or '١', which int() reads as numbers, nor 5000 digits, which it refuses."""
        if isinstance(layer, str) and layer in self.layer_names:
            return self.layer_names.index(layer)
        if isinstance(layer, str) and not re.fullmatch(r"-?[0-9]{1,18}", layer):
            raise StoreError(f"unknown layer {layer!r}; {self.model} has {', '.join(self.layer_names)}")
        idx = int(layer)
        if not -len(self.layer_names) <= idx < len(self.layer_names):
            raise StoreError(f"layer {idx} out of range; {self.model} has {len(self.layer_names)} layers")
        return idx % len(self.layer_names)


class TrackList(tuple[Track, ...]):
    """Tracks read from one catalog version of one open store
    (see :meth:`~mess.store.connection.StoreConnection.cached`)."""

    scope: tuple[str, int]
    version: tuple[int, int]
    query: Hashable

    def __new__(cls, tracks: Iterable[Track], scope: tuple[str, int], version: tuple[int, int],
                query: Hashable) -> TrackList:
        """The tracks, with the store connection (``scope``) and catalog version they were read at, and
        which tracks they are (``query``: the run and artist asked for)."""
        self = super().__new__(cls, tracks)
        self.scope, self.version, self.query = scope, version, query
        return self

    def __reduce__(self) -> tuple[type, tuple[tuple[Track, ...]]]:
        """Pickled as a plain tuple: another process has its own store connections."""
        return tuple, (tuple(self),)


@dataclass(frozen=True)
class TrackVectors:
    """What extraction hands the store for one file."""

    content_hash: str
    layers: Sequence[np.ndarray]  # per layer: [dim] track vector
    segments: Sequence[np.ndarray]  # per layer: [n_segments, dim]
    seg_starts: Sequence[float]


def is_track_id(text: str) -> bool:
    """Whether ``text`` is a track id: ASCII digits only (``str.isdigit`` also passes '²', which int() refuses,
    and '١', which int() reads as 1)."""
    return text.isascii() and text.isdigit()
