"""Similarity endpoints: similar tracks (by id or uploaded audio) with per-aspect evidence."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, cast

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from mess.constants import DEFAULT_NORM, file_title
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
from mess.search.segments import check_match, check_segment_options
from mess.search.vectors import Norm, VectorSet, VectorSpec, load_vectors, vectors_label
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
    def answer_now() -> tuple[dict, Track, tuple[str, str] | None]:
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
        return answer, track, state.store.known_file(Path(track.path))

    with state.lock:  # the query track and its neighbours from one catalog version, though an extract is committing
        answer, track, known = state.store.reading(answer_now)
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
        with state.lock:  # the query, its neighbours and its place on the map from one catalog version
            return state.store.reading(searched)

    def searched() -> dict:
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
        check_segment_options(check_match(match), hubness, expand)  # the search's own rule, in the query's words
    except ValueError as exc:
        raise HTTPException(400, str(exc).replace("--", "")) from None


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
