"""The collection cut into K playlists (k-means on unit vectors), each named from its members' tags."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans

from mess.audio.names import label_key
from mess.constants import DEFAULT_NORM
from mess.playlists.playlist import DuplicateGuard, Playlist, PlaylistError, vanished_copies
from mess.search.vectors import Norm, VectorSpec, load_vectors, track_by_id
from mess.store import FeatureStore, Run, Track
from mess.store.consistent import one_state

TIE_DECIMALS = 5  # cosines to a centre that agree to this many decimals are ties
COPY_BLOCK = 1024  # rows of one block of cosines when looking for copies (4 MiB of float32 per 1,000 tracks)


def default_k(n_tracks: int) -> int:
    """sqrt(n / 2), at least 2 and at most 50: a playlist of a few dozen tracks in a collection of thousands
    (:func:`clusters` takes at most one per distinct track)."""
    return int(min(50, max(2, round((n_tracks / 2) ** 0.5))))


@one_state
def clusters(store: FeatureStore, run: Run, k: int | None = None, *, aspect: str | None = None,
             norm: Norm = DEFAULT_NORM, seed: int = 0) -> list[Playlist]:
    """At most K playlists covering every track once, largest first, each ordered from its centre outwards. A renamed
    file is played once, by its name on disk; a copy of a recording one of them plays is left out, also where k-means
    put it in another cluster, and named in the note of the playlist that plays its recording (:func:`_copies`); a
    cluster holding nothing but such copies is no playlist.

    Scores are cosines to the cluster centre. Names come from the most common genre, then artists
    (artist, else composer tag), e.g. "Baroque: Bach & Haydn"; clusters without tags are "cluster N".
    """
    tracks = store.tracks(run)
    vs = load_vectors(store, run, VectorSpec.from_options(aspect=aspect, norm=norm), tracks)
    unit, by_id = vs.unit(), track_by_id(tracks)
    distinct = len(np.unique(unit, axis=0))  # copies of one recording share a vector: one cluster at most
    k = min(default_k(len(vs.ids)), distinct) if k is None else k
    if not 1 <= k <= distinct:
        some = f" ({len(vs.ids)} tracks, some copies of others)" if distinct < len(vs.ids) else ""
        raise PlaylistError(f"-k must be between 1 and the number of distinct tracks ({distinct}){some}")
    # rows in content order (hash, then path), not in ids (which differ in a store grown in steps): k-means' seeded
    # starts pick rows by position, so one collection extracted twice was cut otherwise; a renamed file's vanished
    # name is left out where its copy on disk stands for it
    gone = vanished_copies(range(len(vs.ids)), vs.ids, by_id)
    content = sorted((r for r in range(len(vs.ids)) if r not in gone),
                     key=lambda r: by_id[int(vs.ids[r])].content_key)
    ids, unit = vs.ids[content], unit[content]
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(unit)
    out: list[Playlist] = []
    members_of = [by_id[int(i)] for i in ids]  # by row
    copies = _copies(list(range(len(ids))), unit, members_of)  # across the call: one recording plays once in all
    cut: list[tuple[list[int], dict[int, float]]] = []  # each cluster's kept rows from its centre out, their scores
    for c in sorted(range(k), key=lambda c: -int((km.labels_ == c).sum())):
        rows = np.flatnonzero(km.labels_ == c)
        centre = km.cluster_centers_[c] / max(float(np.linalg.norm(km.cluster_centers_[c])), 1e-12)
        sims = unit[rows] @ centre
        # cosines equal to 5 decimals are ties (a 2-track cluster's two): kept in content order, not rounding's noise
        ranked = rows[np.argsort(-np.round(sims, TIE_DECIMALS), kind="stable")].tolist()
        cut.append(([r for r in ranked if r not in copies], dict(zip(rows.tolist(), sims.tolist(), strict=True))))
    for kept, score in cut:
        if not kept:  # its tracks were all copies of recordings other clusters play
            continue
        plays = set(kept)
        members = tuple(members_of[r] for r in kept)
        out.append(Playlist(cluster_name(members), members, tuple(score[r] for r in kept),
                            _copies_note([members_of[r] for r, of in sorted(copies.items()) if of in plays])))
    return _unique_titles(out)


def _copies(rows: list[int], unit: np.ndarray, tracks: list[Track]) -> dict[int, int]:
    """The rows (of ``unit`` and ``tracks``) that are copies of a recording another of ``rows`` holds, as radios and
    paths skip them (:meth:`~mess.playlists.playlist.DuplicateGuard.original`: a byte-identical copy, an MP3 of a
    FLAC), each with the row it repeats. Of a recording's files the first catalogued stays (the original, as a rule,
    whichever copy is closer to a centre or in a larger cluster): a copy added later never takes its place; one on disk
    goes before those gone (deleted since extraction: a player cannot open them).

    The guard is handed each track's cosines to the kept ones from blocks of one matrix product (the guard's own
    product, track by track, took 67 s over 10,000 tracks, see notes/moves_session37.md)."""
    order = sorted(rows, key=lambda r: (not Path(tracks[r].path).is_file(), tracks[r].id))
    vecs = unit[order]
    guard = DuplicateGuard(unit.shape[1])
    kept = np.zeros(len(order), dtype=bool)
    kept_at: list[int] = []  # the positions (in ``order``) of the guard's kept rows, in its order
    copies: dict[int, int] = {}
    for start in range(0, len(order), COPY_BLOCK):
        sims = vecs[start:start + COPY_BLOCK] @ vecs[:start + COPY_BLOCK].T
        for i in range(start, min(start + COPY_BLOCK, len(order))):
            original = guard.original(vecs[i], tracks[order[i]], sims[i - start, :i][kept[:i]])
            if original is not None:
                copies[order[i]] = order[kept_at[original]]
                continue
            guard.add(vecs[i], tracks[order[i]])
            kept[i] = True
            kept_at.append(i)
    return copies


def _copies_note(copies: list[Track]) -> str:
    """The note naming (by path, the first 3) the copies left out of the recordings a cluster plays; empty when
    none."""
    if not copies:
        return ""
    listed = ", ".join(t.path for t in copies[:3]) + (f" and {len(copies) - 3} more" if len(copies) > 3 else "")
    many = len(copies) > 1
    what = f"{len(copies)} copies of recordings it plays are" if many else "1 copy of a recording it plays is"
    return f"{what} left out: {listed}"


def cluster_name(tracks: tuple[Track, ...]) -> str:
    """A name from tags: the genre (a multi-valued tag's first) shared by at least half the tracks, then the two
    most common artists, 'and others' when they are not the artists of every track (untagged tracks count)."""
    genres = Counter(g for t in tracks if (g := label_key("genre", t.genre)))
    artists = Counter((t.artist or t.composer or "").strip() for t in tracks if (t.artist or t.composer or "").strip())
    top = artists.most_common(2)
    who = " & ".join(a for a, _ in top) + (" and others" if top and sum(n for _, n in top) < len(tracks) else "")
    genre = genres.most_common(1)[0][0] if genres and genres.most_common(1)[0][1] * 2 >= len(tracks) else ""
    return ": ".join(p for p in (genre, who) if p) or "cluster"


def _unique_titles(playlists: list[Playlist]) -> list[Playlist]:
    seen: Counter[str] = Counter()
    out = []
    for p in playlists:
        seen[p.title] += 1
        title = p.title if seen[p.title] == 1 else f"{p.title} ({seen[p.title]})"
        out.append(Playlist(title, p.tracks, p.scores, p.note))
    return out
