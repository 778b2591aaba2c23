"""Similarity endpoints: similar tracks (by id or uploaded audio) with per-aspect evidence, similar artists."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, cast

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from mess.artists.analysis import (
    ArtistOptions,
    Hybrid,
    all_hidden,
    blended_row,
    centring_note,
    enough_artists,
    row_in_space,
    saved_comparison,
    saved_selection,
)
from mess.artists.discrimination import most_discriminative
from mess.artists.profiles import ArtistError, ArtistSet, Space, artist_of, in_space, load_artists, load_space
from mess.artists.similarity import ArtistVectors, artist_vectors, similarity_row, top_k
from mess.constants import DEFAULT_MAX_TRACKS, DEFAULT_MIN_TRACKS, DEFAULT_NORM, file_title
from mess.query import credit_of, external_query
from mess.search.expansion import expansion
from mess.search.hubness import METHODS as HUBNESS_METHODS
from mess.search.query import (
    ENCODED_R2,
    Neighbour,
    TrackQuery,
    aspect_layers,
    collection_query,
    listener_words,
    query_unit,
    similar_tracks,
    stale_aspect_map,
    weak_aspects,
)
from mess.search.rerank import Reranker
from mess.search.rerank_store import Ranking, check_ranking, load_augmentation, load_reranker, ranking_choice
from mess.search.segments import check_match
from mess.search.vectors import Norm, VectorSet, VectorSpec, from_tracks, load_vectors, vectors_label
from mess.serve.errors import query_parameters, without_paths
from mess.serve.mapping import collection_map
from mess.serve.routes_tracks import Aspect, Blank, Fused, Layer, Learned, Model, changed_note
from mess.serve.state import ServeState, TrackId, get_state, neighbour_dict, track_dict, unfused_note, vector_spec
from mess.serve.uploads import FIELD, receive_upload
from mess.store import FeatureStore, Run, StoreError, Track

router = APIRouter(prefix="/api")
State = Annotated[ServeState, Depends(get_state)]
CAP = {"x-cap": "the server's cap, to bound each request's work; the command line has none"}
K = Annotated[int, Query(ge=1, le=200, description="How many results (at most 200: the server's cap).",
                         json_schema_extra=CAP)]
ExcludeArtist = Annotated[bool, Query(description="Leave out tracks by the query's artist.")]
Hubness = Annotated[str | None, Blank, Query(description="Re-rank against hub tracks: csls or mp.")]
Expand = Annotated[int | None, Query(ge=0, le=50, description="Query expansion over this many nearest tracks "
                                                             "(0 = off; default 3; at most 50: the server's cap).",
                                     json_schema_extra=CAP)]
RankingParam = Annotated[str, Query(
    description="auto (default: augmented for all layers, plain otherwise or when a large collection has no data "
                "saved by `mess index`), plain, augmented (database-side augmentation, then expansion) or reranked "
                "(then k-reciprocal re-ranking); the last two exact, not with hubness or another expand. The "
                "answer's ranking says which was used.")]
MatchParam = Annotated[str, Query(description="mean (default): cosine of track vectors; segments: Chamfer similarity "
                                             "of the tracks' window vectors (exact, no index; not with hubness, "
                                             "another expand or a ranking but plain or auto).")]
NormParam = Annotated[str, Query(description="Per-dimension preprocessing: auto (default: power for all layers, zscore "
                                             "for one layer or aspect), power, zscore, center or none.")]
UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": [FIELD],
    "properties": {FIELD: {"type": "string", "format": "binary", "description": "An audio file."}}}}}}}


def _answer(state: ServeState, run: Run, query: dict, results: list[Neighbour], layer: str | None,
            aspect: str | None, fused: bool, learned: bool, norm: str, ranking: Chosen, tq: TrackQuery,
            hubness: str | None = None, expand: int | None = None, match: str = "mean") -> dict:
    """The answer's JSON, with the fields of `mess similar --json` (``norm`` as applied, ``expand`` as used); the
    query's file (``tq``'s, compared with close results) is named by ``query["file"]``."""
    source, specs = aspect_layers(state.store, run)
    named = {file[0]: query["file"]} if (file := tq.file()) else {}
    unfused, note = unfused_note(state.store, run, fused)
    vs = load_vectors(state.store, run, vector_spec(state.store, run, layer, aspect, fused, learned, norm))
    return {"query": query, "model": run.model, "vectors": vectors_label(layer, aspect, fused, learned),
            "norm": vs.spec.norm, "match": match, "hubness": hubness, "expand": expansion(match, expand),
            "ranking": ranking.ranking, "notes": [*ranking.notes, *([note] if note else [])],
            "tracks_without_fused_vectors": unfused, "files_not_embedded": len(state.store.unembedded(run)),
            "why_source": source, "why_words": {g: listener_words(g) for g in specs},
            "weak_aspects": weak_aspects(state.store, run), "encoded_threshold": ENCODED_R2,
            "stale_aspect_map": stale_aspect_map(state.store, run) if aspect or source == "aspects" else None,
            "norm_note": vs.norm_note, "results": [neighbour_dict(n, named) for n in results]}


@router.get("/tracks/{track_id}/similar", summary="Tracks most similar to a collection track, with why")
def similar(track_id: TrackId, state: State, model: Model = None, layer: Layer = None, aspect: Aspect = None,
            fused: Fused = False, k: K = 10, exclude_same_artist: ExcludeArtist = False,
            hubness: Hubness = None, learned: Learned = False, expand: Expand = None, norm: NormParam = DEFAULT_NORM,
            ranking: RankingParam = "auto", match: MatchParam = "mean") -> dict:
    """Cosine neighbours (``match=segments``: Chamfer similarity of window vectors); ``why`` holds the similarity in
    each aspect's layer and ``why_percentile`` how unusual that closeness is within the collection. When augmented or
    re-ranked (``ranking`` in the answer) each result's ``adjusted`` is that score (what the order follows)."""
    _check(hubness, match, expand)
    if ranking != "plain":  # the ranking's data read or built first, without the lock
        try:
            with state.lock:
                run = state.run(model)
                spec = vector_spec(state.store, run, layer, aspect, fused, learned, norm)
                store, vs = state.store, load_vectors(state.store, run, spec)
                chosen = _ranking(state, run, spec, ranking, hubness, expand, match)
        except (HTTPException, StoreError, ValueError):  # the search below says why
            pass
        else:
            ranking_data(state, store, vs, chosen.ranking)
    with state.lock:
        run = state.run(model)
        track = state.track(track_id)
        spec = vector_spec(state.store, run, layer, aspect, fused, learned, norm)
        tq = collection_query(state.store, track_id)
        try:
            chosen = _ranking(state, run, spec, ranking, hubness, expand, match)
            results = similar_tracks(state.store, run, tq, k, layer=layer, aspect=aspect, fused=fused,
                                     exclude_same_artist=exclude_same_artist, hubness=hubness, learned=learned,
                                     expand=expand, norm=cast("Norm", norm), ranking=chosen.ranking, match=match)
        except ValueError as exc:  # options that do not combine (a ranking with hubness or another expand)
            raise HTTPException(400, str(exc).replace("--", "")) from None
        answer = _answer(state, run, {"label": tq.label, "external": False, **track_dict(track)},
                         results, layer, aspect, fused, learned, norm, chosen, tq, hubness, expand, match)
        known = state.store.known_file(Path(track.path))
    changed = changed_note(Path(track.path), known)  # outside the lock: it may hash the file
    return {**answer, "notes": [*answer["notes"], changed]} if changed else answer


@router.post("/similar/upload", summary="Upload an audio file and get the most similar tracks",
             openapi_extra=UPLOAD_BODY,
             responses={400: {"description": "Malformed or undecodable file"},
                        408: {"description": "Body sent too slowly"}, 413: {"description": "File too large"},
                        415: {"description": "Not an audio file"}})
async def similar_upload(request: Request, state: State, model: Model = None, layer: Layer = None,
                         aspect: Aspect = None, fused: Fused = False, k: K = 10,
                         exclude_same_artist: ExcludeArtist = False, hubness: Hubness = None,
                         learned: Learned = False, expand: Expand = None, norm: NormParam = DEFAULT_NORM,
                         ranking: RankingParam = "auto", match: MatchParam = "mean") -> dict:
    """Embed the file (in a separate process, with the run's model and window policy) and search.

    An upload whose content is already in the collection is answered as that track.
    ``query.x`` / ``query.y`` place the file on the map of the same vectors. ``warnings`` lists what
    `mess similar FILE` would warn of (a file sampled below half the model's rate, one too long to
    analyse whole); empty when none.
    """
    _check(hubness, match, expand)
    try:
        check_ranking(ranking, match, hubness, expand)  # before the upload is received and embedded
    except ValueError as exc:
        raise HTTPException(400, str(exc).replace("--", "")) from None

    def prepare() -> tuple[FeatureStore, Run, VectorSpec, dict[str, str] | None]:
        with state.lock:
            run = state.run(model)
            spec = vector_spec(state.store, run, layer, aspect, fused, learned, norm)
            try:
                source = state.store.model_source(run)
            except StoreError as exc:  # the model cannot be had, as when its file is gone: 503, not the upload's 400
                raise HTTPException(503, without_paths(str(exc))) from None
            return state.store, run, spec, source

    opened, embedded_as, embedded_spec, source = await run_in_threadpool(prepare)
    with state.worker.receipt():
        saved = await receive_upload(request, state.max_upload_bytes, query_parameters(request))

    def resolved() -> tuple[Run, VectorSpec, TrackQuery, Chosen]:  # call it holding the lock
        run, spec = embedded_as, embedded_spec
        if state.store is not opened:  # reopened while the file was embedded: the run ids were the old store's
            run = _run_again(state, embedded_as)
            spec = vector_spec(state.store, run, layer, aspect, fused, learned, norm)
        artist = embedded.tags.get("artist")
        label = f"{artist} - {embedded.tags['title'] or file_title(saved.filename)}" if artist else saved.filename
        tq = external_query(state.store, run, label, embedded.content_hash, embedded.layers, embedded.segments,
                            credit_of(embedded.tags))
        if tq.track is None:  # compared with close results of its length, as `mess similar FILE` compares a file
            tq = replace(tq, path=str(saved.path), duration=embedded.duration, spans=spans)
        return run, spec, tq, _ranking(state, run, spec, ranking, hubness, expand, match)

    def prepare_ranking() -> None:
        """The ranking's data (:func:`ranking_data`) and an outside query's re-ranking (the collection re-ranked with
        it added: seconds on thousands of tracks) computed without the lock, so that other requests go on meanwhile:
        the vectors and the query are taken under it (immutable: a store changed meanwhile gives other data, and the
        search recomputes), and the re-ranker remembers the row that the search below reads."""
        with state.lock:
            run, spec, tq, chosen = resolved()
            store, vs = state.store, load_vectors(state.store, run, spec)
            q = query_unit(store, vs, tq)[None] if tq.track is None else None
        reranker = ranking_data(state, store, vs, chosen.ranking)
        if reranker is not None and q is not None:
            with state.ranking_lock:
                reranker.outside(q)

    def search() -> dict:
        with state.lock:
            run, spec, tq, chosen = resolved()
            same = tq.track
            results = similar_tracks(state.store, run, tq, k, layer=layer, aspect=aspect, fused=fused,
                                     exclude_same_artist=exclude_same_artist, hubness=hubness, learned=learned,
                                     expand=expand, norm=cast("Norm", norm), ranking=chosen.ranking,
                                     match=match)
            vs = load_vectors(state.store, run, spec)
            cmap = state.store.cached(("map", run.id, spec, vs.fingerprint), lambda: collection_map(vs))
            if same is not None and same.id in vs:  # cmap was made from this vector set (same fingerprint)
                x, y = cmap.xy[vs.rows(np.array([same.id]))[0]]
            else:
                x, y = cmap.place(query_unit(state.store, vs, tq)[None])[0]
            query = {"label": tq.label, "external": same is None, "id": same.id if same else None,
                     "artist": tq.artist,
                     "file": saved.filename, "bytes": saved.size, "x": round(float(x), 5), "y": round(float(y), 5)}
            return {**_answer(state, run, query, results, layer, aspect, fused, learned, norm, chosen, tq, hubness,
                              expand, match),
                    "warnings": embedded.warnings}

    try:
        # 503 at once when the upload queue is full (reads never wait on uploads); held until the file is removed, so
        # that no more files than that wait on disk: it is compared with close results, as `mess similar FILE` is
        with state.worker.slot():
            embedded = await run_in_threadpool(state.worker.embed, saved.path, embedded_as, saved.filename, source,
                                               match == "segments")
            spans = await run_in_threadpool(state.worker.spans, saved.path)  # decoded there, never in this process
            await run_in_threadpool(prepare_ranking)
            return await run_in_threadpool(search)
    finally:
        saved.path.unlink(missing_ok=True)


def _check(hubness: str | None, match: str, expand: int | None) -> None:
    """400 for an unknown hubness reduction or match, naming the choices, or segment matching with either of hubness
    and expansion (before an upload is received: the search would refuse them)."""
    if hubness is not None and hubness not in HUBNESS_METHODS:
        raise HTTPException(400, f"unknown hubness reduction {hubness!r}; choose {' or '.join(HUBNESS_METHODS)}")
    try:
        check_match(match)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    if match == "segments" and (hubness is not None or expand):
        raise HTTPException(400, "match segments needs a track or audio file as query, and no hubness or expand")


def ranking_data(state: ServeState, store: FeatureStore, vs: VectorSet, ranking: Ranking) -> Reranker | None:
    """Read or build what ``ranking`` reads of ``vs`` (taken from ``store`` under the lock): its augmentation, or its
    re-ranker (returned), without the lock, so that other requests go on meanwhile: without data saved by `mess
    index`, the first augmented or re-ranked request of a vector set builds it (seconds on thousands of tracks).
    Re-rankers one at a time (``state.ranking_lock``: up to gigabytes each). Memoised by the store under
    :func:`load_augmentation`'s and :func:`load_reranker`'s keys (the vector set's fingerprint, at the store's
    version): concurrent first requests build it once, the search under the lock then reads it, and vectors written
    meanwhile are another key. None for the other rankings, or when the store was replaced and closed meanwhile (the
    search under the lock then builds from the new one)."""
    try:
        if ranking == "augmented":
            load_augmentation(store, vs)
        elif ranking == "reranked":
            with state.ranking_lock:
                return load_reranker(store, vs)
    except sqlite3.ProgrammingError:  # closed by ServeState.refresh
        pass
    return None


@dataclass(frozen=True)
class Chosen:
    """Which ranking an answer used, and the note on why it is plain (a large collection without saved data)."""

    ranking: Ranking
    notes: list[str]


def _ranking(state: ServeState, run: Run, spec: VectorSpec, ranking: str, hubness: str | None = None,
             expand: int | None = None, match: str = "mean") -> Chosen:
    """The ranking a request gets (:func:`mess.search.rerank_store.ranking_choice`); ValueError for options that
    do not combine."""
    notes: list[str] = []
    chosen = ranking_choice(state.store, load_vectors(state.store, run, spec), ranking, match, hubness, expand,
                            notes.append)
    return Chosen(chosen, notes)


def _run_again(state: ServeState, embedded_as: Run) -> Run:
    """The run of ``embedded_as``'s model in the store reopened while an upload was embedded as that run; 409 when that
    store has no vectors of the model made as the upload's were (same revision, window policy and layers)."""
    if embedded_as.model in {r.model for r in state.store.runs()}:
        now = state.store.run(embedded_as.model)
        if (now.revision, now.policy, now.layer_dims) == (embedded_as.revision, embedded_as.policy,
                                                          embedded_as.layer_dims):
            return now
    raise HTTPException(409, f"the store was replaced while the upload was embedded, and it has no {embedded_as.model} "
                             "vectors made as the upload's were (same revision and window policy); upload it again")


@router.get("/artists", summary="Artists of the collection")
def artists(state: State, model: Model = None) -> dict:
    """Artists (artist tag, else composer) with how many tracks represent each."""
    with state.lock:
        run = state.run(model)
        aset = load_artists(state.store, run, at_least=0)  # a listing, not similarity: one artist, or none, is listed
    return {"model": run.model, "artists": [
        {"name": p.name, "tracks": len(p.track_ids), "total_tracks": p.total_tracks,
         "confidence": p.confidence, "low_confidence": p.low_confidence} for p in aset.profiles]}


def _artist_space(state: ServeState, run: Run, tracks: tuple[Track, ...], aset: ArtistSet, layer: str | None,
                  aspect: str | None, fused: bool,
                  options: ArtistOptions) -> tuple[Space, ArtistSet, int, ArtistVectors]:
    """The chosen space, else the run's most artist-discriminative layer; the artists as represented by their tracks
    with a vector in it (:func:`mess.artists.profiles.in_space`) and how many tracks have none (the fused vectors miss
    those extracted since `mess fuse apply`); and the artists' vectors in it.

    Both are computed once per track list and options: ``tracks`` is the tuple :meth:`FeatureStore.tracks`
    returned (the same object until the catalog changes, so new vectors, a new aspect map or
    new fused vectors give a new tuple) and ``aset`` was built from that same tuple with ``options``' max_tracks and
    min_tracks.
    """
    choice = repr((layer, aspect, fused, options.max_tracks, options.min_tracks))

    def space() -> tuple[Space, ArtistSet, int]:
        if layer is not None or aspect is not None or fused:
            chosen = load_space(state.store, run, layer=layer, aspect=aspect, fused=fused)
        else:
            chosen = most_discriminative(aset, [load_space(state.store, run, layer=n) for n in run.layer_names])[0]
        return chosen, *in_space(aset, chosen, max_tracks=options.max_tracks, min_tracks=options.min_tracks)

    chosen, artists, missing = from_tracks(tracks, f"artist-space:{choice}", lambda _: space())
    vectors = from_tracks(tracks, f"artist-vectors:{choice}:{options.center}",
                          lambda _: artist_vectors(artists, chosen, center=options.center))
    return chosen, artists, missing, vectors


@router.get("/artists/similar", summary="Artists that sound like an artist")
def similar_artists(state: State, name: Annotated[str | None, Blank, Query(description="Artist name (case and "
                                                                                     "accents do not matter).")]
                    = None,
                    track: Annotated[TrackId | None, Blank, Query(description="Instead of a name: the artist a "
                                                                       "collection track is credited to, as `mess "
                                                                       "artists` credits it (its composer where its "
                                                                       "artist tag names no artist).")] = None,
                    model: Model = None, layer: Layer = None, aspect: Aspect = None, fused: Fused = False,
                    k: K = 10,
                    method: Annotated[str | None, Query(description="mean or chamfer (default: mean; with "
                                                                           "hybrid, as the saved weights were "
                                                                           "learned).")] = None,
                    center: Annotated[bool | None, Query(description="Subtract the collection mean first (default: "
                                                                     "true; with hybrid, as the saved weights were "
                                                                     "learned).")] = None,
                    max_tracks: Annotated[int, Query(ge=1, description="Tracks representing each artist.")]
                    = DEFAULT_MAX_TRACKS,
                    min_tracks: Annotated[int, Query(ge=1, description="Artists with fewer tracks are flagged "
                                                                       "low-confidence.")] = DEFAULT_MIN_TRACKS,
                    hide_low: Annotated[bool, Query(description="Leave low-confidence artists out.")] = False,
                    hybrid: Annotated[bool, Query(description="Blend audio with genre tags and collaborations, using "
                                                              "the weights saved by `mess artists hybrid`.")] = False,
                    weights: Annotated[str | None, Blank, Query(description="Hybrid weights, e.g. audio=0.6,genre=0.3,"
                                                                            "collab=0.1 (implies hybrid).")] = None
                    ) -> dict:
    """Artist-to-artist similarity over each artist's representative tracks (default: the layer that separates
    artists best), as `mess artists similar` with the same options; ``notes`` holds what it would say on stderr of the
    hybrid blend."""
    if (name is None) == (track is None):
        raise HTTPException(400, "give one of name (an artist's name) and track (a track id)")
    try:
        options = ArtistOptions(model, "mean" if method is None else method, center is not False, max_tracks,
                                min_tracks)
    except ArtistError as exc:
        raise HTTPException(400, _query_words(str(exc))) from None
    blend = (Hybrid(weights, method_given=method is not None, center_given=center is not None)
             if hybrid or weights is not None else None)
    notes: list[str] = []
    with state.lock:
        run = state.run(model)
        if blend is not None and weights is None:  # the method, centring and space the saved weights were learned on
            options = saved_comparison(state.store, options, blend, notes.append)
            if layer is None and aspect is None and not fused:
                saved = saved_selection(state.store, run, notes.append)
                layer, aspect, fused = saved.get("layer"), saved.get("aspect"), bool(saved.get("fused"))
        if layer is not None or aspect is not None or fused:
            vector_spec(state.store, run, layer, aspect, fused)
        tracks = state.store.tracks(run)  # one tuple for the artists and their space, so both match
        aset = load_artists(state.store, run, tracks=tracks, max_tracks=max_tracks, min_tracks=min_tracks)
        try:
            me = aset.profiles[aset.index(_credited(state, track) if track is not None else name or "")]
        except ArtistError as exc:
            raise HTTPException(404, str(exc)) from None
        space, aset, missing, vectors = _artist_space(state, run, tracks, aset, layer, aspect, fused, options)
        query = _artist_row(aset, me.name, space)
        parts: dict[str, np.ndarray] = {}
        if blend is not None:
            try:
                scores, parts = blended_row(state.store, aset, space, options, blend, query, notes.append)
            except ArtistError as exc:
                raise HTTPException(400, _query_words(without_paths(str(exc)))) from None
        else:
            scores = similarity_row(vectors, query, options.method, warn=False)  # the answer's "note" says it
        stale = stale_aspect_map(state.store, run) if aspect is not None else None
    me = aset.profiles[query]  # as represented in the space
    keep = np.array([not p.low_confidence for p in aset.profiles]) if hide_low else None
    results = [{"rank": r + 1, "artist": aset.profiles[j].name,
                "score": round(float(scores[j]), 6) if np.isfinite(scores[j]) else None,
                "tracks": len(aset.profiles[j].track_ids), "total_tracks": aset.profiles[j].total_tracks,
                "confidence": aset.profiles[j].confidence, "low_confidence": aset.profiles[j].low_confidence,
                **({"components": {c: round(float(m[query, j]), 6) for c, m in parts.items()}} if parts else {})}
               for r, j in enumerate(top_k(np.nan_to_num(scores, nan=-np.inf), query, k, keep))]
    if hide_low and not results:  # every other artist hidden: an empty list said nothing
        notes.append(all_hidden(len(aset.profiles) - 1, options.min_tracks))
    return {"artist": me.name, "tracks": len(me.track_ids), "confidence": me.confidence,
            "low_confidence": me.low_confidence,
            "model": run.model, "space": space.label, "method": options.method, "centered": options.center,
            "hybrid": bool(parts), "notes": [_query_words(n) for n in notes],
            "note": centring_note(len(aset.profiles), "center=false") if options.center else None,
            "stale_aspect_map": stale, "tracks_without_fused_vectors": missing, "results": results}


_OPTION = re.compile(r"--([a-z][a-z-]*)")  # a command-line option named in a message


def _query_words(text: str) -> str:
    """A message of the artist commands in the query's words: '--max-tracks (2)' -> 'max_tracks (2)'; a command in
    backquotes ('`mess artists hybrid --reference FILE`') kept as it is typed."""
    parts = text.split("`")
    parts[::2] = [_OPTION.sub(_parameter, p) for p in parts[::2]]
    return "`".join(parts)


def _parameter(option: re.Match[str]) -> str:
    return option[1].replace("-", "_")


def _credited(state: ServeState, track_id: int) -> str:
    """The artist a track is credited to (:func:`artist_of`); 404 when it has no artist or composer that names one."""
    track = state.track(track_id)
    artist, _ = artist_of(track)
    if artist is None:
        raise HTTPException(404, f"track {track_id} has no artist or composer tag that names an artist"
                                 + (f" ({track.artist!r} names none)" if track.artist else ""))
    return artist


def _artist_row(aset: ArtistSet, name: str, space: Space) -> int:
    """The row of the artist ``name`` among the artists with vectors in ``space``; 400 when it has none, or when fewer
    than two artists have (the fused vectors miss tracks extracted since `mess fuse apply`)."""
    try:
        return row_in_space(enough_artists(aset, space), name, space)
    except ArtistError as exc:
        raise HTTPException(400, str(exc)) from None
