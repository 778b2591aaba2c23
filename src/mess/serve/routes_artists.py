"""Artist endpoints: the collection's artists and artists that sound like one, as `mess artists similar` answers."""

from __future__ import annotations

import re
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query

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
from mess.artists.profiles import (
    ArtistError,
    ArtistProfile,
    ArtistSet,
    Space,
    artist_of,
    in_space,
    load_artists,
    load_space,
)
from mess.artists.similarity import ArtistVectors, artist_vectors, similarity_row, top_k
from mess.constants import DEFAULT_MAX_TRACKS, DEFAULT_MIN_TRACKS
from mess.search.query import stale_aspect_map
from mess.search.vectors import from_tracks
from mess.serve.artist_inputs import BODY, HybridInputs, hybrid_inputs
from mess.serve.errors import without_paths
from mess.serve.routes_search import K
from mess.serve.routes_tracks import Aspect, Blank, Fused, Layer, Model
from mess.serve.state import ServeState, TrackId, get_state, vector_spec
from mess.store import Run, Track

router = APIRouter(prefix="/api")
State = Annotated[ServeState, Depends(get_state)]


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

    Both are computed once per track list and options: ``tracks`` is the tuple :meth:`mess.store.FeatureStore.tracks`
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
                                                                            "collab=0.1 (implies hybrid).")] = None,
                    inputs: Annotated[HybridInputs, Depends(hybrid_inputs)] = HybridInputs()
                    ) -> dict:
    """Artist-to-artist similarity over each artist's representative tracks (default: the layer that separates
    artists best), as `mess artists similar` with the same options; ``notes`` holds what it would say on stderr of the
    hybrid blend. POST sends what its --reference and --tags files hold as a JSON body
    (:mod:`mess.serve.artist_inputs`)."""
    if (name is None) == (track is None):
        raise HTTPException(400, "give one of name (an artist's name) and track (a track id)")
    if not hybrid and weights is None and (inputs.reference is not None or inputs.tags is not None):
        given = "reference" if inputs.reference is not None else "tags"
        raise HTTPException(400, f"{given} feeds the hybrid score: add hybrid=true (or weights)")
    try:
        options = ArtistOptions(model, "mean" if method is None else method, center is not False, max_tracks,
                                min_tracks)
    except ArtistError as exc:
        raise HTTPException(400, _query_words(str(exc))) from None
    blend = (Hybrid(weights, inputs.reference, inputs.tags, method is not None, center is not None)
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

        def read() -> tuple[ArtistProfile, Space, ArtistSet, int, ArtistVectors]:
            tracks = state.store.tracks(run)  # the artists and their space from one catalog version, so both match
            aset = load_artists(state.store, run, tracks=tracks, max_tracks=max_tracks, min_tracks=min_tracks)
            try:
                me = aset.profiles[aset.index(_credited(state, track) if track is not None else name or "")]
            except ArtistError as exc:
                raise HTTPException(404, str(exc)) from None
            return me, *_artist_space(state, run, tracks, aset, layer, aspect, fused, options)

        me, space, aset, missing, vectors = state.store.reading(read)
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


router.add_api_route("/artists/similar", similar_artists, methods=["POST"], openapi_extra=BODY,
                     summary="Artists that sound like an artist, with reference lists or genre tags sent as JSON")

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
