"""Artists from the store: who made which tracks, which tracks represent them, how sure we are."""

from __future__ import annotations

import difflib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from mess.audio.names import credit_key, main_artist, name_key, normalize_name
from mess.constants import DEFAULT_MAX_TRACKS, DEFAULT_MIN_TRACKS, FUSED
from mess.search.vectors import aspect_layer, from_tracks
from mess.store import FeatureStore, Run, StoreError, Track
from mess.store.fused import fused_matrix

SUGGESTIONS = 5  # artists an unknown name suggests at most


class ArtistError(ValueError):
    """A request about artists that cannot be answered (unknown name, aspect, bad file)."""


@dataclass(frozen=True)
class ArtistProfile:
    """One artist: the tracks that represent them and a confidence in that representation.

    ``track_ids`` holds at most ``max_tracks`` tracks, spread over the artist's albums;
    ``confidence`` is ``len(track_ids) / max_tracks`` and ``low_confidence`` is set when
    fewer than ``min_tracks`` tracks were available (fewer than ``max_tracks`` when that is lower).
    """

    name: str
    track_ids: tuple[int, ...]
    total_tracks: int
    confidence: float
    low_confidence: bool
    from_composer: bool


@dataclass(frozen=True)
class ArtistSet:
    """All artists of a collection, in a fixed order (the rows of every artist matrix)."""

    profiles: tuple[ArtistProfile, ...]
    tracks: dict[int, Track]
    composer_fallback: int  # tracks whose artist came from the composer tag
    unattributed: int  # tracks with neither artist nor composer, or one like 'Various Artists' (left out)

    @property
    def names(self) -> list[str]:
        """Artist names in row order."""
        return [p.name for p in self.profiles]

    def row_of(self, track: Track) -> int | None:
        """Row of the artist a track belongs to (None when it has no artist or composer)."""
        name, _ = artist_of(track)
        if name is None:
            return None
        return self._rows.get(name_key(name))

    @cached_property
    def _rows(self) -> dict[str, int]:
        return {name_key(p.name): i for i, p in enumerate(self.profiles)}

    def index(self, name: str) -> int:
        """Row of an artist by exact name, :func:`name_key`, or a track's whole credit ('A feat. B', 'A; B': A's, as
        the web page asks with a track's artist tag); an unknown name suggests the artists whose name has words
        starting with the typed words, then close spellings."""
        names = self.names
        if name in names:
            return names.index(name)
        for known in (name_key(name), credit_key(name)):
            if known in self._rows:
                return self._rows[known]
        key, norm = _words(name), [_words(n) for n in names]
        typed = key.split()  # 'doug' or 'kauf' for 'Doug Kaufman': each typed word starts a word of the name
        by_word = sorted((i for i, n in enumerate(norm) if typed and all(any(w.startswith(t) for w in n.split())
                                                                          for t in typed)),
                         key=lambda i: not set(typed) <= set(norm[i].split()))  # whole words first
        close = [norm.index(c) for c in difflib.get_close_matches(key, norm, n=3, cutoff=0.6)]
        rows = list(dict.fromkeys(by_word + close))
        more = f" ({len(rows)} in all)" if len(rows) > SUGGESTIONS else ""
        hint = f"; did you mean {', '.join(repr(names[i]) for i in rows[:SUGGESTIONS])}{more}?" if rows else ""
        raise ArtistError(f"unknown artist {name!r} ({len(names)} artists in the store){hint}")


def _words(name: str) -> str:
    """A name's words as :func:`name_key` compares them, spaced (what an unknown name's suggestions match)."""
    return normalize_name(name) or name.strip().casefold()


def artist_of(track: Track) -> tuple[str | None, bool]:
    """(main artist, whether it came from the composer tag) of a track; a tag that names no artist ('Various
    Artists': :func:`credit_key`) counts as none."""
    if credit_key(track.artist):
        return main_artist(track.artist or ""), False
    if credit_key(track.composer):
        return main_artist(track.composer or ""), True
    return None, False


def build_artists(tracks: Sequence[Track], *, max_tracks: int = DEFAULT_MAX_TRACKS,
                  min_tracks: int = DEFAULT_MIN_TRACKS) -> ArtistSet:
    """Group tracks by main artist and pick up to ``max_tracks`` per artist.

    Names differing only in case, accents or a leading 'the' are one artist (the most
    frequent spelling wins). Tracks are chosen round-robin over albums, so an artist
    with several albums is not represented by one album only. Copies of one audio content (a hard link, a duplicate)
    are one track of the artist, the first by path: they counted twice, in its track count and confidence.
    """
    if max_tracks < 1 or min_tracks < 1:
        raise ArtistError("max_tracks and min_tracks must be at least 1")
    groups: dict[str, list[Track]] = defaultdict(list)
    spellings: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    fallback: dict[str, int] = defaultdict(int)
    unattributed: set[str] = set()  # contents
    held: set[tuple[str, str]] = set()  # (artist, content) pairs already grouped
    for track in sorted(tracks, key=lambda t: t.path):
        name, from_composer = artist_of(track)
        if name is None:
            unattributed.add(track.content_hash)
            continue
        key = name_key(name)
        if (key, track.content_hash) in held:
            continue
        held.add((key, track.content_hash))
        groups[key].append(track)
        spellings[key][name] += 1
        fallback[key] += from_composer
    names = {key: max(sorted(spellings[key]), key=spellings[key].__getitem__) for key in groups}
    profiles = []
    for key in sorted(groups, key=lambda k: (names[k].casefold(), names[k])):
        chosen = _spread_over_albums(groups[key], max_tracks)
        profiles.append(ArtistProfile(
            name=names[key], track_ids=tuple(t.id for t in chosen), total_tracks=len(groups[key]),
            # below max_tracks the bar is what the caller chose to use (every artist was low at max < min)
            confidence=len(chosen) / max_tracks, low_confidence=len(chosen) < min(min_tracks, max_tracks),
            from_composer=fallback[key] == len(groups[key])))
    return ArtistSet(tuple(profiles), {t.id: t for t in tracks}, sum(fallback.values()), len(unattributed))


def load_artists(store: FeatureStore, run: Run, *, max_tracks: int = DEFAULT_MAX_TRACKS,
                 min_tracks: int = DEFAULT_MIN_TRACKS, tracks: Sequence[Track] | None = None,
                 at_least: int = 2) -> ArtistSet:
    """Artists of every track that has vectors in ``run`` (or of ``tracks``, that run's track list); an ArtistError
    when they are fewer than ``at_least`` (2, what artist similarity needs; 0 for a listing).

    Built once per track list: :meth:`FeatureStore.tracks` returns the same tuple until the
    catalog changes (a new or removed track, a retag, new vectors, also from another
    process), so repeated calls return the same shared :class:`ArtistSet`; do not modify it.
    """
    tracks = store.tracks(run) if tracks is None else tracks
    artists = from_tracks(tracks, f"artists:{max_tracks}:{min_tracks}",
                          lambda ts: build_artists(ts, max_tracks=max_tracks, min_tracks=min_tracks))
    if len(artists.profiles) < at_least:
        raise ArtistError(f"artist similarity needs at least 2 artists; the {run.model} vectors have "
                          f"{len(artists.profiles)} (tag files with artist or composer)")
    return artists


def in_space(artists: ArtistSet, space: Space, *, max_tracks: int = DEFAULT_MAX_TRACKS,
             min_tracks: int = DEFAULT_MIN_TRACKS) -> tuple[ArtistSet, int]:
    """``artists`` chosen again from the tracks that have a vector in ``space`` (the fused vectors miss tracks
    extracted since `mess fuse apply`), so that each artist's tracks and confidence count only those (its
    ``total_tracks`` still counts all its tracks, and an artist with none is left out); and how many tracks were left
    out (0: ``artists`` itself)."""
    have = set(space.track_ids.tolist())
    kept = [t for t in artists.tracks.values() if t.id in have]
    if len(kept) == len(artists.tracks):
        return artists, 0
    chosen = build_artists(kept, max_tracks=max_tracks, min_tracks=min_tracks)
    totals = {name_key(p.name): p.total_tracks for p in artists.profiles}
    profiles = tuple(replace(p, total_tracks=totals[name_key(p.name)]) for p in chosen.profiles)
    missing = len(artists.tracks) - len(kept)
    return ArtistSet(profiles, chosen.tracks, artists.composer_fallback, artists.unattributed), missing


def _spread_over_albums(tracks: list[Track], limit: int) -> list[Track]:
    """Up to ``limit`` tracks taken round-robin over albums (albums and tracks in path order: not in id order, which
    is the order the store committed them in and varies from one extraction of a collection to the next)."""
    albums: dict[str, list[Track]] = defaultdict(list)
    for track in sorted(tracks, key=lambda t: t.path):
        albums[track.album or ""].append(track)
    queues = list(albums.values())
    chosen: list[Track] = []
    depth = 0
    while len(chosen) < limit and any(depth < len(q) for q in queues):
        chosen += [q[depth] for q in queues if depth < len(q)][: limit - len(chosen)]
        depth += 1
    return sorted(chosen, key=lambda t: t.path)


@dataclass(frozen=True)
class Space:
    """Track vectors from one layer, aspect or fused embedding, with a label saying which."""

    label: str
    track_ids: np.ndarray
    matrix: np.ndarray


def load_space(store: FeatureStore, run: Run, *, layer: str | None = None, aspect: str | None = None,
               fused: bool = False) -> Space:
    """Track vectors for one layer (name or index), one probed aspect, or the fused embedding."""
    if (layer is not None) + (aspect is not None) + fused > 1:
        raise ArtistError("choose one of layer, aspect or fused")
    if fused:
        ids, mat = fused_matrix(store, run)
        return Space(FUSED, ids, mat)
    if aspect is not None:
        amap = store.aspect_map(run)
        if aspect not in amap:
            known = ", ".join(amap) or "none (run `mess probe` first)"
            raise ArtistError(f"unknown aspect {aspect!r} for {run.model}; probed aspects: {known}")
        try:  # an aspect no layer encodes is refused, as `mess similar` and the server refuse it
            name = aspect_layer(store, run, aspect)
        except StoreError as exc:
            raise ArtistError(str(exc)) from None
        ids, mat = store.layer_matrix(run, name)
        return Space(f"{aspect} ({name})", ids, mat)
    if layer is None:
        raise ArtistError("choose a layer, an aspect or fused")
    name = run.layer_names[run.layer_index(layer)]
    ids, mat = store.layer_matrix(run, name)
    return Space(name, ids, mat)
