"""Playlist endpoints: radio from seed tracks and a sonic path between two, as JSON, M3U8 or XSPF.

Downloaded playlists point at this server's audio URLs (``/api/tracks/{id}/audio``), so any
player on the machine can stream them and no file path leaves the server.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response

from mess.constants import DEFAULT_NORM
from mess.playlists.formats import render
from mess.playlists.path import sonic_path
from mess.playlists.playlist import Playlist, PlaylistError, gone_tracks, with_gone_note
from mess.playlists.radio import BLENDS, DEFAULT_WINDOW, radio
from mess.search.query import collection_query, stale_aspect_map
from mess.search.rerank_store import ranking_choice
from mess.search.vectors import VectorSpec, load_vectors
from mess.serve.routes_search import CAP, ranking_data
from mess.serve.routes_tracks import Aspect, Model
from mess.serve.state import ServeState, TrackId, api_words, get_state, track_dict, vector_spec
from mess.store import Run, StoreError

router = APIRouter(prefix="/api/playlists")
State = Annotated[ServeState, Depends(get_state)]
Format = Annotated[Literal["json", "m3u8", "xspf"], Query(description="json, or m3u8 / xspf to download.")]
SEEDS = 100  # a radio's seeds: each is compared with every track, under the store lock
TRACKS = 500  # a playlist file's tracks: the radio's largest n
TITLE = 1000  # characters of a playlist file's title (a path's names two file names)
MEDIA = {"m3u8": "audio/x-mpegurl; charset=utf-8", "xspf": "application/xspf+xml; charset=utf-8"}
ANSWERS: dict[int | str, dict[str, Any]] = {  # the schema lists the downloads' types beside JSON
    200: {"description": "The playlist as JSON, or with format=m3u8 / xspf as the file to download "
                         "(Content-Disposition names it), its entries this server's audio URLs",
          "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}},
                      **{media.split(";")[0]: {"schema": {"type": "string"}} for media in MEDIA.values()}}}}


def _answer(request: Request, playlist: Playlist, model: str, fmt: str, name: str,
            stale: str | None) -> dict | Response:
    """The playlist as JSON (its note naming, by file name, the tracks no longer on disk; their ids in ``missing``)
    or as an M3U8 / XSPF download."""
    if fmt == "json":
        gone = gone_tracks(playlist)
        playlist = with_gone_note(playlist, [track_dict(t)["file"] for t in gone])
        return {
            "title": playlist.title,
            "model": model,
            "note": playlist.note or None,  # null when nothing is to be said, as every route's note
            "missing": [t.id for t in gone],
            "stale_aspect_map": stale,
            "tracks": [
                {**track_dict(t), "score": round(s, 6)} for t, s in zip(playlist.tracks, playlist.scores, strict=False)
            ],
        }
    return _download(request, playlist, fmt, name)


def _download(request: Request, playlist: Playlist, fmt: str, name: str, left_out: Sequence[int] = ()) -> Response:
    """The playlist as the M3U8 / XSPF file ``name.fmt`` to download, its entries this server's audio URLs; the
    ids ``left_out`` (no longer in the collection) named in the file's note and the ``X-Left-Out`` header."""
    base = str(request.base_url).rstrip("/")
    note = f"left out: {_ids(left_out)}, no longer in the collection (removed since the list was made)" \
        if left_out else None
    text = render(playlist, fmt, locate=lambda t: f"{base}/api/tracks/{t.id}/audio", note=note)
    headers = {"Content-Disposition": f'attachment; filename="{name}.{fmt}"'}
    if left_out:
        headers["X-Left-Out"] = ", ".join(map(str, left_out))
    return Response(text, media_type=MEDIA[fmt], headers=headers)


def _ids(ids: Sequence[int]) -> str:
    """'track 12' or 'tracks 12, 14'."""
    return ("track " if len(ids) == 1 else "tracks ") + ", ".join(map(str, ids))


def _playlist(request: Request, state: ServeState, model: str | None, aspect: str | None, fmt: str, name: str,
              build: Callable[[Run], Playlist]) -> dict | Response:
    """Check the model and aspect, build the playlist under the store lock (a PlaylistError is a 400), answer."""
    with state.lock:
        run = state.run(model)
        vector_spec(state.store, run, None, aspect, False)
        try:
            playlist = build(run)
        except PlaylistError as exc:
            raise HTTPException(400, api_words(str(exc))) from None  # the query's n, not the CLI's -n
        stale = stale_aspect_map(state.store, run) if aspect is not None else None
    return _answer(request, playlist, run.model, fmt, name, stale)


@router.get(
    "/radio", summary="A radio from seed tracks: closest first, artists spread, no near-duplicates",
    response_model=None, responses=ANSWERS,
)
def radio_route(
    request: Request,
    state: State,
    seed: Annotated[list[TrackId], Query(max_length=SEEDS, description="Seed track ids (repeat for several).",
                                         json_schema_extra=CAP)],  # at most SEEDS: maxItems and x-cap say so
    n: Annotated[int, Query(ge=1, le=500, description="How many tracks (at most 500: the server's cap).",
                            json_schema_extra=CAP)] = 30,  # as `mess playlist radio`
    window: Annotated[
        int, Query(ge=1, le=50, description="Tracks within which an artist does not come back (at most 50: the "
                                            "server's cap).", json_schema_extra=CAP)
    ] = DEFAULT_WINDOW,
    blend: Annotated[str, Query(description=f"Several seeds: {' or '.join(BLENDS)}; nearest orders by closeness to "
                                "the nearest seed (one may take every slot), turns lets the seeds take turns, each "
                                "adding its next closest track.")] = "nearest",
    model: Model = None,
    aspect: Aspect = None,
    format: Format = "json",
) -> dict | Response:
    """Tracks ordered by closeness to the nearest seed (seeds left out), or with ``blend=turns`` by each seed in
    turn; closeness is the score `mess similar` ranks by, and scores stay the closeness to the nearest seed. An
    unknown ``blend`` is a 400.

    JSON: ``missing`` lists the ids of tracks whose files are no longer on disk (deleted since extraction), and
    ``note`` names them by file name, as `mess playlist radio` does."""
    if aspect is None:  # the default ranking's data read or built first, without the lock, as a track's neighbours do
        try:
            with state.lock:
                run = state.run(model)
                store, vs = state.store, load_vectors(state.store, run, VectorSpec.from_options(norm=DEFAULT_NORM))
                chosen = ranking_choice(store, vs)
        except (HTTPException, StoreError, ValueError):  # said by the radio below
            pass
        else:
            ranking_data(state, store, vs, chosen)

    def build(run: Run) -> Playlist:
        seeds = [collection_query(state.store, state.track(i).id) for i in seed]
        return radio(state.store, run, seeds, n, aspect=aspect, window=window, blend=blend)

    return _playlist(request, state, model, aspect, format, "radio", build)


@router.get("/file", summary="The M3U8 or XSPF file of a list of tracks, exactly those, in that order",
            response_model=None, responses={200: {
                "description": "The file to download (Content-Disposition names it), its entries this server's audio "
                               "URLs", "content": {media.split(";")[0]: {"schema": {"type": "string"}}
                                                   for media in MEDIA.values()}}})
def file_route(
    request: Request,
    state: State,
    track: Annotated[list[TrackId], Query(min_length=1, max_length=TRACKS, description="The tracks' ids in the "
                                          "playlist's order (repeat the parameter).", json_schema_extra=CAP)],
    format: Annotated[Literal["m3u8", "xspf"], Query(description="m3u8 or xspf.")],
    title: Annotated[str, Query(max_length=TITLE, description="The playlist's title in the file.")] = "playlist",
    name: Annotated[Literal["radio", "path", "playlist"], Query(description="The downloaded file's name "
                                                                             "(NAME.m3u8).")] = "playlist",
) -> Response:
    """The playlist the page shows, as the file to download: a radio or a path asked for again may differ from the
    list shown (tracks extracted or removed since), so the page's download links name the tracks it lists.

    A track removed from the collection since the list was shown (``mess extract --prune``) is left out, and the
    file says so (a comment line in M3U8, the annotation in XSPF; the ids in the ``X-Left-Out`` header): the others
    still play. A 404 when none of the tracks is left."""
    with state.lock:
        found = [(i, state.store.find(int(i))) for i in track]
    tracks = tuple(t for _, t in found if t is not None)
    left_out = list(dict.fromkeys(int(i) for i, t in found if t is None))
    if not tracks:
        raise HTTPException(404, f"{_ids(left_out)} no longer in the collection (removed since the list was made, or "
                                 "never in it): nothing to download; make the playlist again")
    return _download(request, Playlist(title, tracks, (0.0,) * len(tracks)), format, name, left_out)


@router.get("/path", summary="A sonic path from one track to another in even steps", response_model=None,
            responses=ANSWERS)
def path_route(
    request: Request,
    state: State,
    start: Annotated[TrackId, Query(description="First track id.")],
    end: Annotated[TrackId, Query(description="Last track id.")],
    n: Annotated[int, Query(ge=2, le=200, description="How many tracks, both ends included (at most 200: the "
                                                      "server's cap).", json_schema_extra=CAP)] = 12,
    model: Model = None,
    aspect: Aspect = None,
    format: Format = "json",
) -> dict | Response:
    """``n`` tracks from ``start`` to ``end``, each step aiming at an even point between them.

    JSON: ``missing`` lists the ids of tracks whose files are no longer on disk (deleted since extraction), and
    ``note`` names them by file name, as `mess playlist path` does."""
    def build(run: Run) -> Playlist:
        return sonic_path(state.store, run, state.track(start), state.track(end), n, aspect=aspect)

    return _playlist(request, state, model, aspect, format, "path", build)
