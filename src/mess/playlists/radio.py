"""Radio: an ordered playlist of the tracks closest to one or more seeds, artists spread out."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from mess.audio.names import credit_key
from mess.constants import DEFAULT_NORM
from mess.playlists.playlist import DuplicateGuard, Playlist, PlaylistError, artist_key, vanished_copies
from mess.search.query import TrackQuery, query_unit, ranked_scores
from mess.search.rerank_store import ranking_choice
from mess.search.vectors import Norm, VectorSpec, load_vectors, track_by_id
from mess.store import FeatureStore, Run
from mess.store.consistent import one_state

DEFAULT_WINDOW = 3
POOL_PER_TRACK = 50
BLENDS = ("nearest", "turns")  # how several seeds share a radio: see radio()


@one_state
def radio(store: FeatureStore, run: Run, seeds: Sequence[TrackQuery], n: int = 30, *, aspect: str | None = None,
          window: int = DEFAULT_WINDOW, norm: Norm = DEFAULT_NORM, exclude: frozenset[int] = frozenset(),
          blend: str = "nearest", ranking: str = "auto", heard: frozenset[int] = frozenset(),
          played: Sequence[str] = (), following: Sequence[str] = ()) -> Playlist:
    """Up to ``n`` tracks ordered by closeness to the nearest seed, seeds left out.

    Closeness is the score ``ranking`` orders by (:func:`mess.search.query.ranked_scores`); "auto", as `mess
    similar` ranks: augmented for all layers, cosine for an aspect or a large collection without the data `mess
    index` saves (the playlist's note then says why). On the development soundtracks the augmented radio's first
    10 tracks came from the seed's game x1.017 [0.983, 1.051] as often as by cosine (a one-off script; README).

    No artist plays twice in a row, and none within ``window`` tracks (the seeds count as what
    played before) while the collection allows it: when no candidate fits, the window shrinks for
    that slot; when only the last artist's tracks are left (a library of one artist), that artist
    plays again and the note says how often. Near-duplicates of seeds or earlier picks are skipped.
    The playlist is shorter than ``n`` only when the collection runs out of tracks.

    Args:
        seeds: resolved queries (collection tracks or external files), see :func:`mess.query.resolve_query`.
        aspect: compare in the layer ``mess probe`` chose for this aspect instead of all layers.
        window: tracks within which an artist may not repeat (1 = only not twice in a row).
        exclude: ids of tracks never to pick (files gone from disk, say).
        heard: ids of tracks a player has queued already: never picked, nor any near-duplicate of them (a copy of
            a queued song under another name would be heard twice).
        played: the artist keys (:func:`artist_key`) of the songs a player played before the seeds, the latest
            last: the window counts them too, as it counts the seeds.
        following: the artist keys of the songs a player plays after the radio, the first first: the radio's last
            tracks keep them a window apart too, unless the radio would run short for it.
        blend: with several seeds, 'nearest' orders the tracks by closeness to the nearest seed (a seed in a dense
            part of the collection may take every slot); 'turns' lets the seeds take turns, each adding its
            next closest track (by rank, so each seed's neighbours get an even share). Scores stay the
            closeness to the nearest seed.
    """
    if not seeds:
        raise PlaylistError("give at least one seed track")
    if n < 1 or window < 1:
        raise PlaylistError("-n and --window must be at least 1")
    if blend not in BLENDS:
        raise PlaylistError(f"unknown --blend {blend!r}; use {' or '.join(BLENDS)}")
    tracks = store.tracks(run)
    vs = load_vectors(store, run, VectorSpec.from_options(aspect=aspect, norm=norm), tracks)
    unit, by_id = vs.unit(), track_by_id(tracks)
    notes = [vs.norm_note] if vs.norm_note else []
    try:
        chosen = ranking_choice(store, vs, ranking, on_note=notes.append)
    except ValueError as exc:
        raise PlaylistError(str(exc)) from None
    sims = np.stack([ranked_scores(store, vs, s, chosen)[1] for s in seeds], axis=1)
    seed_units = np.stack([query_unit(store, vs, s) for s in seeds])
    closeness = sims.max(axis=1)
    guard = DuplicateGuard(unit.shape[1])
    for s, u in zip(seeds, seed_units, strict=False):
        guard.add(u, s.track, s.content_hash, s.file())
        if s.replaces is not None:  # a seed file changed since extraction: its stale entry is no pick
            guard.add(u, s.replaces)
    for r in np.flatnonzero(np.isin(vs.ids, np.fromiter(heard, dtype=np.int64))):
        guard.add(unit[r], by_id[int(vs.ids[r])])
    exclude = exclude | heard
    order = np.argsort(-closeness, kind="stable") if blend == "nearest" else _in_turns(sims)
    if exclude:
        order = order[~np.isin(vs.ids[order], np.fromiter(exclude, dtype=np.int64))]
    pool = [int(r) for r in order[:max(POOL_PER_TRACK * n, 1000)]]
    gone = vanished_copies(pool, vs.ids, by_id)  # the guard keeps the first of a content: the copy on disk
    pool = [r for r in pool if r not in gone] if gone else pool
    artists = {r: artist_key(by_id[int(vs.ids[r])]) for r in pool}
    history = [*played, *(credit_key(s.artist) if s.track is None else artist_key(s.track) for s in seeds)]
    picked: list[int] = []
    repeats = 0
    while len(picked) < n:
        row = _next(pool, artists, history, window, lambda r: guard.duplicate(unit[r], by_id[int(vs.ids[r])]),
                    following, n - len(picked) - 1)
        if row is None:
            break
        pool.remove(row)
        track = by_id[int(vs.ids[row])]
        guard.add(unit[row], track)
        artist = artist_key(track)
        if artist and history and artist == history[-1]:
            repeats += 1
        history.append(artist)
        picked.append(row)
    label = ", ".join({s.label if s.track is None else s.track.id: s.label for s in seeds}.values())  # a seed once
    short = ""
    seed_ids = np.array([s.track.id for s in seeds if s.track is not None], dtype=np.int64)
    if np.isin(vs.ids, seed_ids).all():  # was "no track fits": there was none
        short = f"no track to pick: the collection holds no track but the seed{'s' if len(seeds) > 1 else ''}"
    elif not len(order):
        short = "no track to pick: every track of the collection is left out or queued already"
    elif len(picked) < n:
        fit = {0: "no track fits", 1: "only 1 track fits"}.get(len(picked), f"only {len(picked)} tracks fit")
        queued = f", none of the {len(heard)} queued already" if heard else ""  # what else kept tracks out
        short = f"{fit} (no duplicates{queued})"
    again = (f"an artist played twice in a row {repeats} time{'s' if repeats > 1 else ''}: no track by another "
             "artist was left") if repeats else ""
    note = "; ".join(x for x in (short, again, *notes) if x)
    return Playlist(f"radio: {label}", tuple(by_id[int(vs.ids[r])] for r in picked),
                    tuple(float(closeness[r]) for r in picked), note)


def _next(pool: list[int], artists: dict[int, str], history: list[str], window: int,
          duplicate: Callable[[int], bool], following: Sequence[str] = (), after: int = 0) -> int | None:
    """The first (closest) row of ``pool`` that is no ``duplicate`` and whose artist is not among the last ``w``
    played, w = window .. 1, nor among the ``following`` songs within ``w`` of it (``after`` radio tracks come
    between); failing that, the following songs give way (w = 1), and last the artist may repeat (w = 0). Rows
    found to be duplicates leave the pool: the guard only grows, so they stay duplicates, and only the rows
    reached are checked (checking the whole pool for every pick made a 200-track radio take minutes)."""
    levels = [(w, following[:max(w - after, 0)]) for w in range(window, 0, -1)]
    for w, next_up in [*levels, *([(1, ())] if following else []), (0, ())]:
        recent = {a for a in (*(history[-w:] if w else ()), *next_up) if a}
        for row in [r for r in pool if artists[r] not in recent]:
            if not duplicate(row):
                return row
            pool.remove(row)
    return None


def _in_turns(sims: np.ndarray) -> np.ndarray:
    """Rows (of ``sims``: rows x seeds closeness) in turns: each seed's closest, then each seed's second closest,
    and so on; a row comes at its best rank for any seed."""
    ranks = np.argsort(np.argsort(-sims, axis=0, kind="stable"), axis=0, kind="stable")
    return np.argsort(ranks.min(axis=1) * sims.shape[1] + ranks.argmin(axis=1), kind="stable")
