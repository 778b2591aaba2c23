"""Similar tracks: resolve a query, search the index, exclude, flag duplicates, explain.

Public API (used by the CLI, the web server and the artist module):

* :func:`collection_query` - a track id, a collection path or file name -> :class:`TrackQuery`
  (:func:`mess.query.resolve_query` takes any audio file too, embedded with the run's model and window policy).
* :func:`similar_tracks` - the k most similar collection tracks as :class:`Neighbour` s.

"Why similar": each result carries its cosine similarity to the query in every
aspect's layer (``mess probe`` writes the aspect -> layer map) and the percentile of
that similarity among the other collection tracks, so "timbre 0.97" reads "at least
as similar in timbre as 97% of the collection". Without an aspect map, layers stand in for
aspects: each layer for models with at most 6 layers (the dsp model's mfcc, chroma,
spectral, rhythm), otherwise three contiguous groups named early, middle and late (for an ensemble such as
``musicnn``, the same thirds of each member model together).
"""

from __future__ import annotations

import shlex
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mess.audio.names import credit_key
from mess.audio.recording import FirstSpans, RecordingMatch, compared
from mess.constants import DEFAULT_NORM, ENCODED_R2, FUSED, LEARNED
from mess.search.augment import augmented_query, expanded_rows
from mess.search.counts import whole_count
from mess.search.expansion import expand as expand_queries
from mess.search.expansion import expanded_scores, expansion
from mess.search.hubness import HubnessReducer
from mess.search.index import CollectionIndex, open_index
from mess.search.rerank import copy_first
from mess.search.rerank_store import Ranking, load_augmentation, load_reranker, ranking_choice
from mess.search.segments import SEGMENT_QUERY, chamfer_scores, check_match, check_segment_options, read_segments
from mess.search.vectors import (
    Norm,
    VectorSet,
    VectorSpec,
    from_tracks,
    in_space,
    load_vectors,
    query_vector,
    track_by_id,
)
from mess.store import FeatureStore, Run, StoreError, Track, TrackFailed
from mess.store.consistent import one_state
from mess.store.paths import printable
from mess.store.reports import newer_probe

DUPLICATE_COSINE = 0.9999
# results (and playlist picks) this close have their audio compared when their durations match: lossy copies scored
# 0.80-0.9997 (dsp) and 0.74-0.99 (musicnn) to their originals on the soundtracks (notes/same_recording_session33.md)
VERIFY_COSINE = 0.7
LISTENER_WORDS = {
    "timbre": "tone colour",
    "brightness": "brightness",
    "dynamics": "loudness",
    "rhythm": "rhythm",
    "harmony": "harmony",
    "texture": "texture",
}
PERCENTILE_SAMPLE = 20_000
TIE_TOLERANCE = 1e-5  # cosines closer than this are ties in the "why" percentiles
HUBNESS_POOL = 100


@dataclass(frozen=True)
class TrackQuery:
    """A search seed: a collection track, or an external file with its raw per-layer vectors."""

    label: str
    track: Track | None = None
    layers: tuple[np.ndarray, ...] | None = None  # external file: raw vector per run layer
    segments: tuple[np.ndarray, ...] | None = None  # external file: raw window vectors [n, dim] per run layer
    content_hash: str | None = None
    artist: str | None = None
    fused: np.ndarray | None = None  # external file: its fused vector, when the run has fused vectors
    replaces: Track | None = None  # the collection track of a file changed since extraction: left out of answers
    path: str | None = None  # external file on disk: its audio is compared with close results' (same recording)
    duration: float | None = None  # external file: its length in seconds, by its header
    spans: FirstSpans | None = None  # external file decoded elsewhere (an upload): compared by these, not its file

    def file(self) -> tuple[str, float | None] | None:
        """(path, duration) of the query's audio on disk: its track's, or the external file's; None for neither."""
        if self.track is not None:
            return self.track.path, self.track.duration
        return (self.path, self.duration) if self.path else None


@dataclass(frozen=True)
class Neighbour:
    """One result: the track, its cosine similarity, duplicate flag and per-aspect evidence."""

    track: Track
    score: float
    duplicate: bool = False
    why: dict[str, float] = field(default_factory=dict)
    why_percentile: dict[str, float] = field(default_factory=dict)
    adjusted: float | None = None
    recording: RecordingMatch | None = None  # the query's file compared with this one's (close results only)

    def reasons(self, n: int = 2) -> list[str]:
        """The ``n`` aspects in which this result is most unusually close to the query."""
        return sorted(self.why_percentile, key=lambda a: -self.why_percentile[a])[:n]

    def reasons_text(self, n: int = 2) -> list[str]:
        """The top reasons in words a listener reads, e.g. 'tone colour and loudness: closer than 97% of tracks'."""
        return [
            f"{listener_words(a)}: closer than {100 * self.why_percentile[a]:.0f}% of tracks" for a in self.reasons(n)
        ]

    def to_dict(self) -> dict:
        """JSON-ready form."""
        t = self.track
        return {
            "id": t.id,
            "path": t.path,
            "name": t.name,
            "artist": t.artist,
            "title": t.title,
            "album": t.album,
            "score": round(self.score, 6),
            "duplicate": self.duplicate,
            "same_recording": None if self.recording is None else self.recording.to_dict(),
            "adjusted": None if self.adjusted is None else round(self.adjusted, 6),
            "why": {a: round(v, 4) for a, v in self.why.items()},
            "why_percentile": {a: round(v, 4) for a, v in self.why_percentile.items()},
            "reasons": self.reasons(),
            "reasons_text": self.reasons_text(),
        }


def collection_query(store: FeatureStore, ref: str | Path | int) -> TrackQuery:
    """A seed from a collection track: by id, path or file name (StoreError when unknown).

    Files outside the collection are embedded by :func:`mess.query.resolve_query`.
    """
    track = store.track(ref)
    return TrackQuery(track.name, track=track, content_hash=track.content_hash, artist=track.artist)


@one_state
def similar_tracks(
    store: FeatureStore,
    run: Run,
    query: TrackQuery | np.ndarray,
    k: int = 10,
    *,
    layer: str | None = None,
    aspect: str | None = None,
    fused: bool = False,
    exclude_same_artist: bool = False,
    hubness: str | None = None,
    norm: Norm = DEFAULT_NORM,
    learned: bool = False,
    match: str = "mean",
    expand: int | None = None,
    ranking: str = "auto",
    on_note: Callable[[str], None] | None = None,
) -> list[Neighbour]:
    """The ``k`` collection tracks most similar to ``query`` (cosine, best first).

    Args:
        query: a :class:`TrackQuery`, or a raw vector in the space of the chosen vector set.
        layer / aspect / fused / learned: which vectors to compare (default: all layers, equally weighted;
            learned = the head shipped for the model, see :mod:`mess.models.head`).
        exclude_same_artist: leave out tracks of the query's artist (main artist of the artist tag, else composer).
        hubness: None, "csls" or "mp" to re-rank a candidate pool against hub tracks.
        norm: "auto" (default: "power", signed fourth roots then z-scores, for all layers; "zscore" for one layer
            or aspect; "center" for the learned head), "power", "zscore", "center" or "none" preprocessing before L2
            normalisation.
        match: "mean" (cosine of track vectors, through the index) or "segments" (Chamfer similarity of
            window vectors, exact; needs a TrackQuery and layer vectors, no hubness).
        expand: rank by the query expanded with its ``expand`` nearest tracks (:mod:`mess.search.expansion`;
            None = 3 for mean matching, 0 for segments); ``score`` stays the cosine to the query itself,
            ``adjusted`` holds the ranking score (the better of that and the cosine to the expanded query).
        ranking: "plain" (cosine, expanded as ``expand`` says), "augmented" (database-side augmentation, then
            expansion: :mod:`mess.search.augment`), "reranked" (then k-reciprocal re-ranking:
            :mod:`mess.search.rerank`); the last two are exact, mean matching only, no hubness, and ``adjusted``
            holds their score. "auto" (the default): augmented for all layers unless another ranking was asked for
            or a large collection has no saved data (:func:`mess.search.rerank_store.ranking_choice`, which says
            which ranking a call uses). Data saved by ``mess index`` is used when current.
        on_note: hears a one-line note (a large collection's data built in memory, or not saved).

    The query's own track never appears; tracks with the same content or cosine >= 0.9999
    are flagged as duplicates, and so is a result at cosine >= VERIFY_COSINE whose audio is the query track's
    recording (a lossy copy; ``recording`` holds the comparison of each result compared). ``why`` /
    ``why_percentile`` are filled for TrackQuery inputs.
    """
    k = whole_count(k, "k", "tracks", 0)
    spec = VectorSpec.from_options(layer, aspect, fused, norm, learned)
    tracks = store.tracks(run)  # one object until the catalog changes: derived maps below are memoised on it
    by_id = track_by_id(tracks)
    vs = load_vectors(store, run, spec, tracks)
    tq = query if isinstance(query, TrackQuery) else None
    if tq is None:
        query = raw_query(query, vs)
    elif tq.track is not None and tq.track.id in by_id and by_id[tq.track.id].content_hash != tq.track.content_hash:
        raise StoreError(f"the query {tq.label!r} is not track {tq.track.id} of {store.root} (a query of another "
                         "store, or of a file extracted again since): resolve it in this store")
    exclude = _excluded(tracks, tq, exclude_same_artist)
    chosen = ranking_choice(store, vs, ranking, match, hubness, expand, on_note)
    expand = expansion(check_match(match), expand)
    if chosen != "plain":
        sims, ids, adjusted = _exact_neighbours(store, vs, query, exclude, k, chosen, on_note)
    elif match == "segments":
        check_segment_options(match, hubness, expand)
        if tq is None:  # a raw vector has no windows
            raise ValueError(SEGMENT_QUERY)
        sims, ids, adjusted = *_segment_neighbours(store, vs, tq, exclude, k), None
    else:
        sims, ids, adjusted = _index_neighbours(store, vs, query, exclude, k, hubness, expand)
    sims, ids = sims[:k], _copies_by_path(vs, ids[:k], by_id, exclude)
    why, pct = _explain(store, run, tracks, tq, ids, norm) if tq is not None else ({}, {})
    qhash = tq.content_hash if tq is not None else None
    recordings = _recordings(tq, sims, [by_id[int(i)] for i in ids])
    return [
        Neighbour(
            by_id[int(i)],
            float(s),
            duplicate=bool(by_id[int(i)].content_hash == qhash or s >= DUPLICATE_COSINE
                           or int(i) in recordings and recordings[int(i)].same),
            recording=recordings.get(int(i)),
            why=why.get(int(i), {}),
            why_percentile=pct.get(int(i), {}),
            adjusted=None if adjusted is None else float(adjusted[n]),
        )
        for n, (s, i) in enumerate(zip(sims, ids, strict=False))
    ]


def _recordings(query: TrackQuery | None, sims: np.ndarray, results: list[Track]) -> dict[int, RecordingMatch]:
    """The audio of the ``query``'s file (its track's, or an outside file's) compared with each result's (by id) at
    cosine >= VERIFY_COSINE, another content and a matching duration, both files on disk: whether a lossy copy is
    the same recording."""
    if query is None or (file := query.file()) is None:
        return {}
    first = file[0] if query.spans is None else query.spans
    matches = {t.id: compared(first, file[1], t.path, t.duration) for s, t in zip(sims, results, strict=False)
               if s >= VERIFY_COSINE and t.content_hash != query.content_hash}
    return {i: m for i, m in matches.items() if m is not None}


def _copies_by_path(vs: VectorSet, ids: np.ndarray, by_id: dict[int, Track], exclude: set[int]) -> np.ndarray:
    """``ids`` with the places of one file's copies (one content hash) given to its first copies in path order: they
    score alike, and which ranked first, or made the cut, followed the ids (other in a store grown in steps)."""
    hashes = vs.hashes[vs.rows(ids)]
    rows = np.flatnonzero(np.isin(vs.hashes, hashes))
    if len(rows) == len(set(hashes.tolist())):  # no file of the answer has copies
        return ids
    out = ids.copy()
    for h in dict.fromkeys(hashes.tolist()):
        copies = sorted((int(i) for i in vs.ids[rows[vs.hashes[rows] == h]] if int(i) not in exclude),
                        key=lambda i: by_id[i].path)
        at = np.flatnonzero(hashes == h)
        out[at] = copies[:len(at)]
    return out


def raw_query(vector: object, vs: VectorSet) -> np.ndarray:
    """A caller's raw query vector as float32 [dim] of ``vs``'s space: ValueError saying what is wrong with it
    (not numbers, another size or shape, NaN or infinite values)."""
    dim = vs.raw.shape[1]
    which = "all layers" if vs.spec.kind == "all" else f"{vs.spec.kind} {vs.spec.name}".rstrip()
    space = f"{vs.run.model}, {which}"
    try:
        q = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"the query vector must be {dim} numbers ({space}); got {type(vector).__name__}") from None
    if q.shape not in ((dim,), (1, dim)):
        raise ValueError(f"the query vector has shape {q.shape}; vectors of {space} are {dim} numbers "
                         f"(shape ({dim},) or (1, {dim}))")
    if not np.isfinite(q).all():
        raise ValueError("the query vector holds NaN or infinite values (or values beyond float32's range)")
    return q.reshape(dim)


def _index_neighbours(
    store: FeatureStore,
    vs: VectorSet,
    query: TrackQuery | np.ndarray,
    exclude: set[int],
    k: int,
    hubness: str | None,
    expand: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Cosine neighbours of the query's vector through the collection index, expanded or hubness-reduced
    when asked.

    With expansion a track ranks by the better of its cosine to the query and to the expanded query
    (:func:`mess.search.expansion.expanded_scores`), so expansion promotes tracks but never pushes a
    near-copy of the query down.
    """
    index = open_index(store, vs)
    tq = query if isinstance(query, TrackQuery) else None
    raw = _raw_vector(store, vs, tq) if tq is not None else np.asarray(query, dtype=np.float32)
    q = index.prep.apply(raw)
    skip = np.array(sorted(exclude), dtype=np.int64)
    pool = max(k, HUBNESS_POOL) if hubness else k
    sims, ids = index.ann.search(q, max(pool, expand), exclude=skip)
    sims, ids = sims[0][ids[0] >= 0], ids[0][ids[0] >= 0]
    adjusted = None
    if expand > 0:
        neighbours = index.prep.apply(vs.raw[vs.rows(ids[:expand])])
        plain, q = q, expand_queries(q, neighbours[None], sims[None, :expand])
        more = index.ann.search(q, pool, exclude=skip)[1][0]
        ids = np.union1d(ids, more[more >= 0])
        unit = index.prep.apply(vs.raw[vs.rows(ids)])
        sims = unit @ plain[0]
        adjusted = expanded_scores(sims, unit @ q[0])
        order = np.argsort(-adjusted, kind="stable")[:pool]
        sims, ids, adjusted = sims[order], ids[order], adjusted[order]
    if hubness and len(ids):
        adjusted = _rescore(hubness, vs, index, q, sims if adjusted is None else adjusted, ids, tq)
        order = np.argsort(-adjusted, kind="stable")[:k]
        sims, ids, adjusted = sims[order], ids[order], adjusted[order]
    return sims, ids, adjusted


def _exact_neighbours(
    store: FeatureStore, vs: VectorSet, query: TrackQuery | np.ndarray, exclude: set[int], k: int,
    ranking: Ranking, on_note: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` best tracks by augmented or re-ranked score, best first: cosines to the query, ids, scores.
    Excluded tracks are left out of the answer, not out of the collection's neighbour data."""
    plain, scores = ranked_scores(store, vs, query, ranking, on_note)
    scores[np.isin(vs.ids, np.fromiter(exclude, dtype=np.int64, count=len(exclude)))] = -np.inf
    order = np.argsort(-scores, kind="stable")[:k]
    order = order[np.isfinite(scores[order])]
    return plain[order], vs.ids[order], scores[order]


def ranked_scores(store: FeatureStore, vs: VectorSet, query: TrackQuery | np.ndarray, ranking: Ranking,
                  on_note: Callable[[str], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every track of ``vs`` against the query: cosines [n], and the scores [n] ``ranking`` orders by (the cosines
    themselves for "plain"; augmented or re-ranked scores, an outside query's near-copy first, else)."""
    tq = query if isinstance(query, TrackQuery) else None
    if tq is not None and tq.track is not None:
        if tq.track.id not in vs:
            raise no_vectors(store, vs.run, tq.track, fused=vs.spec.kind == FUSED)
        row = vs.rows(np.array([tq.track.id]))
        plain = vs.unit() @ vs.unit()[row[0]]
        if ranking == "plain":
            return plain, plain.copy()
        if ranking == "reranked":
            return plain, load_reranker(store, vs, on_note).rows(row)[0]
        return plain, expanded_rows(vs.unit(), load_augmentation(store, vs), row)[0]
    q = vs.prep.apply(_raw_vector(store, vs, tq) if tq is not None else np.asarray(query, dtype=np.float32))
    plain = vs.unit() @ q[0]
    if ranking == "plain":
        return plain, plain.copy()
    if ranking == "reranked":
        return plain, copy_first(load_reranker(store, vs, on_note).outside(q)[0], plain, 0.0)
    return plain, copy_first(augmented_query(vs.unit(), load_augmentation(store, vs), q[0])[2], plain, 1.0)


def _segment_neighbours(
    store: FeatureStore, vs: VectorSet, query: TrackQuery, exclude: set[int], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best tracks by Chamfer similarity of window vectors, best first."""
    seg = store.cached(("segments", vs.fingerprint), lambda: read_segments(store, vs))
    if query.track is not None:
        if query.track.id not in vs:
            raise no_vectors(store, vs.run, query.track)
        windows = seg.windows(int(vs.rows(np.array([query.track.id]))[0]))
    elif query.segments is None:
        raise StoreError(f"{query.label} carries no window vectors; pass a track or an audio file")
    else:
        raw = np.concatenate([query.segments[vs.run.layer_index(n)] for n in vs.layers], axis=1)
        windows = vs.prep.apply(in_space(vs.spec, vs.run, raw))
    scores = chamfer_scores(seg, windows)
    scores[np.isin(seg.ids, np.fromiter(exclude, dtype=np.int64, count=len(exclude)))] = -np.inf
    order = np.argsort(-scores, kind="stable")[:k]
    order = order[np.isfinite(scores[order])]
    return scores[order], seg.ids[order]


def listener_words(group: str) -> str:
    """'brightness/dynamics/timbre' -> 'tone colour, brightness and loudness'; layer groups as 'early layers'."""
    parts = [LISTENER_WORDS.get(p, p) for p in group.split("/")]
    if not all(p in LISTENER_WORDS for p in group.split("/")):
        return group.split(" (")[0] + (" layers" if group.startswith(("early", "middle", "late")) else "")
    parts = sorted(parts, key=lambda w: w != "tone colour")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def weak_aspects(store: FeatureStore, run: Run, threshold: float = ENCODED_R2) -> dict[str, float]:
    """Probed aspects whose best layer predicts them with R^2 below ``threshold``: not used as "why" evidence."""
    return {a: r2 for a, r2 in store.aspect_scores(run).items() if r2 < threshold}


def stale_aspect_map(store: FeatureStore, run: Run) -> str | None:
    """A note when the stored aspect map is older than the run's latest probe report (a probe stopped between the
    two writes) or comes from a probe of other tracks than the run has now (added, removed or replaced: their
    digest, :meth:`FeatureStore.tracks_digest`, differs), or from an older mess that recorded no digest (unknown);
    else None."""
    rerun = f"rerun `mess probe --model {store.model_option(run)}`"
    newer = newer_probe(store.reports_dir, run.model, run.id, store.aspect_map_probed_at(run))
    if newer is not None:
        return (f"the aspect map is from an older probe than the report {newer.name} (a probe stopped before "
                f"storing its map): {rerun}")
    if not store.aspect_map(run):
        return None
    probed, now = store.aspect_map_tracks(run), len(store.tracks(run))
    if probed is not None and probed != now:
        return f"aspect map from a probe of {probed} tracks; {now} now: {rerun}"
    digest = store.aspect_map_digest(run)
    if digest is None:
        return (f"aspect map from an older mess, which recorded no digest of its tracks: whether it was probed on "
                f"the {now} tracks there are now is unknown: {rerun}")
    if digest != store.tracks_digest(run):
        return f"aspect map from a probe of other tracks than the {now} there are now (some were replaced): {rerun}"
    return None


def aspect_layers(store: FeatureStore, run: Run) -> tuple[str, dict[str, VectorSpec]]:
    """The vector sets used for "why": ('aspects', aspect -> layer) or ('layers', group -> layers).

    Aspects the probe found weakly encoded (see :func:`weak_aspects`) are left out.
    """
    weak = weak_aspects(store, run)
    amap = {a: layer for a, layer in store.aspect_map(run).items() if a not in weak}
    if amap:  # aspects served by one layer share one entry ("dynamics/rhythm"): they would agree anyway
        by_layer: dict[str, list[str]] = {}
        for aspect, layer in amap.items():
            by_layer.setdefault(layer, []).append(aspect)
        return "aspects", {"/".join(aspects): VectorSpec("layer", layer) for layer, aspects in by_layer.items()}
    names = run.layer_names
    if len(names) <= 6:
        return "layers", {n: VectorSpec("layer", n) for n in names}
    members: dict[str, list[int]] = defaultdict(list)  # an ensemble's layers ("msd.cnn1") grouped by member
    alone = [i for i, name in enumerate(names) if "." not in name]  # beside the members: its own evidence (timbre)
    for i, name in enumerate(names):
        if "." in name:
            members[name.split(".", 1)[0]].append(i)
    if len(members) < 2 or len({len(idx) for idx in members.values()}) > 1 or len(next(iter(members.values()))) < 3:
        members, alone = {"": list(range(len(names)))}, []  # not an ensemble of equal members: one contiguous split
    thirds = [np.array_split(np.array(idx), 3) for idx in members.values()]
    short = [n.split(".", 1)[-1] for n in names]
    out = {}
    for label, parts in zip(("early", "middle", "late"), zip(*thirds, strict=True), strict=False):
        layers = "+".join(names[i] for i in np.concatenate(parts))
        out[f"{label} ({short[parts[0][0]]}-{short[parts[0][-1]]})"] = VectorSpec("group", layers)
    return "layers", {**out, **{names[i]: VectorSpec("layer", names[i]) for i in alone}}


def query_unit(store: FeatureStore, vs: VectorSet, query: TrackQuery) -> np.ndarray:
    """The query as a unit vector [dim] in the space of ``vs`` (its preprocessor applied)."""
    return vs.prep.apply(_raw_vector(store, vs, query))[0]


def _raw_vector(store: FeatureStore, vs: VectorSet, query: TrackQuery) -> np.ndarray:
    """The query's raw vector in the space of ``vs``."""
    if query.track is not None:
        if query.track.id not in vs:
            raise no_vectors(store, vs.run, query.track, fused=vs.spec.kind == FUSED)
        return vs.raw[vs.rows(np.array([query.track.id]))[0]]
    if vs.spec.kind == FUSED:  # an external file's fused vector comes with it (see mess.query)
        if query.fused is None:
            raise StoreError(f"no fused vector for {query.label}; embed it with mess.query.resolve_query")
        return query.fused
    if query.layers is None:
        raise StoreError(f"{query.label} has neither a collection track nor layer vectors")
    return query_vector(vs.layers, vs.run, query.layers, learned=vs.spec.kind == LEARNED)


def no_vectors(store: FeatureStore, run: Run, track: Track, *, fused: bool = False) -> StoreError:
    """The error for a track that has no vectors to search with: :class:`TrackFailed` with the recorded reason
    when its file failed to extract, else what to run to make them."""
    failed = store.failure(run, track)
    if failed is not None:
        return TrackFailed(f"track {track.id} ({track.name}) failed to extract with {run.model}, so it has no "
                           f"vectors: {failed}", printable(track.path))
    if fused:
        return StoreError(f"track {track.id} ({track.name}) has no fused vector for {run.model}; "
                          "run `mess fuse apply` first")
    folder = shlex.quote(printable(str(Path(track.path).parent)))
    return StoreError(f"track {track.id} ({track.name}) has no vectors of {run.model} yet; "
                      f"run `mess extract {folder} {store.extract_options(run)}` first")


def _excluded(tracks: Sequence[Track], query: TrackQuery | None, same_artist: bool) -> set[int]:
    """Track ids never to return: the query's own track (and the stale entry of its file), and its artist's tracks
    when asked."""
    out = {t.id for t in (query.track, query.replaces) if t is not None} if query is not None else set()
    artist = "" if query is None else _artist_key(query.track) if query.track is not None else credit_key(query.artist)
    if same_artist and artist:
        out.update(from_tracks(tracks, "ids_by_artist", _ids_by_artist).get(artist, ()))
    return out


def _artist_key(track: Track) -> str:
    """A track's artist as `mess artists` groups it: the artist tag's main artist, else the composer's."""
    return credit_key(track.artist) or credit_key(track.composer)


def _ids_by_artist(tracks: Sequence[Track]) -> dict[str, tuple[int, ...]]:
    """Main artist (:func:`_artist_key`: 'A; B' and 'A feat. C' are A's; no artist tag: the composer) -> track ids."""
    groups: dict[str, list[int]] = defaultdict(list)
    for t in tracks:
        groups[_artist_key(t)].append(t.id)
    return {a: tuple(ids) for a, ids in groups.items()}


def _rescore(
    method: str,
    vs: VectorSet,
    index: CollectionIndex,
    q: np.ndarray,
    sims: np.ndarray,
    ids: np.ndarray,
    query: TrackQuery | None,
) -> np.ndarray:
    """Hubness-reduced scores of the candidates (neighbourhoods measured with the same index)."""
    same = all(
        np.array_equal(a, b) for a, b in zip(index.prep.arrays().values(), vs.prep.arrays().values(), strict=False)
    )
    unit = vs.unit() if same else index.prep.apply(vs.raw)

    def knn(vectors: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        return index.ann.search(vectors, kk)

    reducer = HubnessReducer(method, unit, knn, base_ids=vs.ids, keys=vs.hashes)
    own = query.track.id if query is not None and query.track is not None else -1
    q_stats = reducer.stats(q, np.array([own]))
    item_stats = reducer.stats(unit[vs.rows(ids)], ids)
    return reducer.rescore(sims[None, :], q_stats, item_stats)[0]


def _explain(
    store: FeatureStore, run: Run, tracks: Sequence[Track], query: TrackQuery, ids: np.ndarray, norm: Norm
) -> tuple[dict[int, dict[str, float]], dict[int, dict[str, float]]]:
    """Per result id: cosine to the query in each aspect's vectors, and its collection percentile."""
    why: dict[int, dict[str, float]] = {int(i): {} for i in ids}
    pct: dict[int, dict[str, float]] = {int(i): {} for i in ids}
    if not len(ids):
        return why, pct
    _, specs = aspect_layers(store, run)
    for name, spec in specs.items():
        vs = load_vectors(store, run, VectorSpec(spec.kind, spec.name, norm), tracks)
        unit = vs.unit()
        q = vs.prep.apply(_raw_vector(store, vs, query))[0]
        others = np.flatnonzero(vs.ids != (query.track.id if query.track is not None else -1))
        if len(others) > PERCENTILE_SAMPLE:  # drawn in content order: rows follow ids, other in a store grown in steps
            others = others[np.argsort(vs.hashes[others], kind="stable")]
            others = np.random.default_rng(0).choice(others, PERCENTILE_SAMPLE, replace=False)
        sims = unit @ q
        ref_sims = np.sort(sims[others])
        res_sims = sims[vs.rows(ids)]
        # "at least as close as": ties within float32 rounding count (BLAS gives two copies of one recording
        # cosines that differ in the last bits, by their rows, so one copy counted below the other)
        ranks = np.searchsorted(ref_sims, res_sims + TIE_TOLERANCE, side="right") / len(ref_sims)
        for i, s, r in zip(ids, res_sims, ranks, strict=False):
            why[int(i)][name] = float(s)
            pct[int(i)][name] = float(r)
    return why, pct
