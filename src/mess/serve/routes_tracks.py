"""Collection endpoints: health, runs, tracks (paged, filtered), audio streaming, the 2-D map."""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BeforeValidator

from mess.audio.discover import content_hash
from mess.audio.tags import JOIN, MULTI_VALUED
from mess.constants import FUSED, audio_suffix, file_stamp, stamp_matches
from mess.search.query import ENCODED_R2
from mess.search.vectors import load_vectors, track_by_id, vectors_label
from mess.serve.audio_file import AudioFile
from mess.serve.mapping import CollectionMap, collection_map
from mess.serve.state import (
    ServeState,
    TrackId,
    catalog_id,
    get_state,
    rebuilding,
    track_dict,
    unfused_note,
    vector_spec,
)
from mess.store import FeatureStore, Run, Track
from mess.store.fused import fused_run_problem
from mess.store.paths import printable

router = APIRouter(prefix="/api")
# The audio route's Content-Type by extension, as extraction reads names (audio_suffix): the host's mimetypes gave
# .mpc 'chemical/x-mopac-input' and .wv 'application/vnd.wv.csp+wbxml' (Debian's /etc/mime.types), nothing for 'a.wav '.
AUDIO_TYPES = {".aac": "audio/aac", ".aif": "audio/aiff", ".aifc": "audio/aiff", ".aiff": "audio/aiff",
               ".ape": "audio/x-ape", ".flac": "audio/flac", ".m4a": "audio/mp4", ".mka": "audio/x-matroska",
               ".mp3": "audio/mpeg", ".mpc": "audio/x-musepack", ".oga": "audio/ogg", ".ogg": "audio/ogg",
               ".opus": "audio/ogg", ".tta": "audio/x-tta", ".wav": "audio/wav", ".wma": "audio/x-ms-wma",
               ".wv": "audio/x-wavpack"}
_FILE = {"schema": {"type": "string", "format": "binary"}}
_AUDIO_CONTENT = {media: _FILE for media in sorted({*AUDIO_TYPES.values(), "application/octet-stream"})}
HEALTH_WAIT = 2.0  # seconds /api/health waits for a request holding the store before it answers 'busy'
State = Annotated[ServeState, Depends(get_state)]


def _blank_is_none(value: object) -> object:
    """An empty (or blank) value, as a form's empty field sends it (``?layer=``), is the parameter left out."""
    return None if isinstance(value, str) and not value.strip() else value


Blank = BeforeValidator(_blank_is_none)
Model = Annotated[str | None, Blank, Query(description="Model whose vectors to use (default: the server's model).")]
Layer = Annotated[str | None, Blank, Query(description="One layer (name or index, -1 = last).")]
Aspect = Annotated[str | None, Blank, Query(description="The layer `mess probe` chose for this aspect.")]
Fused = Annotated[bool, Query(description="The fused vectors of `mess fuse`.")]
Learned = Annotated[bool, Query(description="The learned head shipped for the model.")]


@router.get("/health", summary="Server and store status")
def health(state: State) -> dict:
    """Whether the server is up, what the store holds and which write features are on; ``status`` is 'rebuilding'
    while the store's catalog has been replaced or removed and no new one with vectors has taken its place, and
    ``note`` then says why and that the counts are the old catalog's, which the server still answers from (None
    when ``status`` is 'ok'). While a long request holds the store (an index build can take minutes), ``status`` is
    'busy' after :data:`HEALTH_WAIT` seconds, with ``tracks`` and ``models`` null: the server is up, and a health
    check must not time out behind that request."""
    settings = {"default_model": state.default_model, "read_only": not state.allow_indexing,
                "max_upload_bytes": state.max_upload_bytes}
    with state.lock.within(HEALTH_WAIT) as held:
        if not held:
            return {"status": "busy", "note": "a long request (an index build, say) holds the store: counts not read; "
                    "other requests wait for it", "tracks": None, "models": None, **settings}
        runs = state.store.runs()
        n_tracks = len(state.store.tracks())
        now = catalog_id(state.store.root)
        settings["default_model"] = state.preferred()
    note = None if now == state.catalog else (
        f"{rebuilding(now)}; these counts are the old catalog's, which answers what was already computed from it "
        "until the new one holds vectors (other requests get 503 meanwhile)")
    return {"status": "ok" if note is None else "rebuilding", "note": note, "tracks": n_tracks,
            "models": sorted({r.model for r in runs}), **settings}


@router.get("/runs", summary="Models in the store, their layers and aspects")
def runs(state: State) -> dict:
    """Every run: model, layers, probed aspect -> layer map, whether usable fused vectors exist (``fused_note``: why
    stored ones are not), and whether it is the run that answers for its model (``current``: the one covering the
    most tracks, see :meth:`FeatureStore.run`)."""
    with state.lock:
        store = state.store
        runs = store.runs()
        current = {store.run(m).id for m in {r.model for r in runs}}
        out = [{"id": r.id, "model": r.model, "revision": r.revision, "layers": list(r.layer_names),
                "dims": list(r.layer_dims), "aspects": store.aspect_map(r), "aspect_scores": store.aspect_scores(r),
                **_fused(store, r), "tracks": len(store.tracks(r)), "current": r.id in current}
               for r in runs]
        chosen = state.preferred()
    return {"default_model": chosen, "encoded_threshold": ENCODED_R2, "runs": out}


def _fused(store: FeatureStore, run: Run) -> dict[str, object]:
    """``fused``: whether the run has fused vectors that may be read as its own; ``fused_note``: why stored ones may
    not (made for another run of the model, :func:`mess.store.fused.fused_run_problem`), else None."""
    meta = store.derived_meta(run, FUSED)
    problem = fused_run_problem(store, run, meta)
    return {"fused": meta is not None and problem is None, "fused_note": problem}


def _fold(text: str) -> str:
    """``text`` for matching as a person types it, as artist names are compared everywhere
    (:func:`mess.audio.names.normalize_name`): compatibility forms as their plain letters (fullwidth
    'ＢＥＥＴＨＯＶＥＮ', the ligature 'ﬁ'), case folded, accents dropped ('Dvorak' finds 'Dvořák'); a name written on
    macOS (NFD, 'e' and a combining accent) matches the same name typed as one letter."""
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    return "".join(c for c in text if not unicodedata.combining(c))


def _matches(track: Track, filters: dict[str, str | None], text: str | None) -> bool:
    for name, wanted in filters.items():
        if wanted is not None and _fold(wanted.strip()) not in _tag_values(track.label(name), name):
            return False
    if text:
        hay = _fold(" ".join(str(v) for v in (track.name, track.album, track.genre, track.composer,
                                              Path(track.path).name) if v))
        return all(word in hay for word in _fold(text).split())
    return True


def _tag_values(value: str | None, field: str) -> set[str]:
    """A tag as the filters match it, case-folded: the whole value and, for a multi-valued field's tag ('Rock; Pop',
    two ARTIST comments), each of its values."""
    whole = _fold((value or "").strip())
    return {whole, *(v.strip() for v in whole.split(JOIN))} if field in MULTI_VALUED else {whole}


@router.get("/tracks", summary="Tracks, paged and filtered by tags or text")
def tracks(state: State, model: Model = None,
           artist: Annotated[str | None, Blank,
                             Query(description="Artist tag, or one of its values.")] = None,
           album: Annotated[str | None, Blank, Query(description="Exact album tag.")] = None,
           genre: Annotated[str | None, Blank, Query(description="Genre tag, or one of its values ('Pop' finds 'Rock; "
                                                                 "Pop').")] = None,
           composer: Annotated[str | None, Blank, Query(description="Composer tag, or one of its values.")] = None,
           q: Annotated[str | None, Blank, Query(description="Words that must all occur in name, album, genre "
                                                              "or file.")] = None,
           offset: Annotated[int, Query(ge=0)] = 0,
           limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict:
    """Tracks with vectors for the model (all catalogued tracks when ``model`` is 'any'), by id. Tags and words match
    whatever their case, accents and compatibility forms ('dvorak' finds 'Dvořák', 'beethoven' 'ＢＥＥＴＨＯＶＥＮ')."""
    with state.lock:
        listed = state.store.tracks() if model == "any" else state.store.tracks(state.run(model))
    filters = {"artist": artist, "album": album, "genre": genre, "composer": composer}
    hits = [t for t in listed if _matches(t, filters, q)]
    return {"total": len(hits), "offset": offset, "limit": limit,
            "items": [track_dict(t) for t in hits[offset:offset + limit]]}


@router.get("/tracks/{track_id}", summary="One track")
def track(track_id: TrackId, state: State) -> dict:
    """A track's tags and which models have vectors for it."""
    with state.lock:
        t = state.track(track_id)
        models = [r.model for r in state.store.runs() if state.store.has_vectors(r, t.content_hash)]
    return {**track_dict(t), "models": models}


@router.get("/tracks/{track_id}/audio", summary="Stream a track's audio (HTTP range requests)",
            response_class=AudioFile,
            responses={200: {"description": "The file, typed by its extension (application/octet-stream for a name "
                                            "with none mess knows)", "content": _AUDIO_CONTENT},
                       206: {"description": "Partial content: one range in the file's type, several as "
                                            "multipart/byteranges",
                             "content": {**_AUDIO_CONTENT, "multipart/byteranges": _FILE}},
                       304: {"description": "Not modified: the client's copy (If-None-Match, If-Modified-Since) is "
                                            "current"},
                       409: {"description": "The file changed since it was extracted"},
                       412: {"description": "If-Match or If-Unmodified-Since is false"},
                       416: {"description": "Range not satisfiable"}})
def audio(track_id: TrackId, state: State, request: Request) -> Response:
    """The track's file as stored, with ``Accept-Ranges: bytes`` so players can seek; a ``Range`` header that
    cannot be read (unknown unit, invalid range) is ignored: 200 with the whole file (RFC 9110 §14.2). Conditional
    requests as RFC 9110 §13 has them (:meth:`AudioFile.answer`): a player's copy still current is a 304."""
    with state.lock:
        path = Path(state.track(track_id).path)
        recorded, known = state.store.file_size_mtime(path), state.store.known_file(path)
    file = f"the audio file of track {track_id} ({printable(path.name)})"  # a non-UTF-8 name as caf\xe9 (JSON: UTF-8)
    if not path.is_file():
        raise HTTPException(404, f"{file} is no longer on disk")
    if path.resolve() != path:  # catalogued paths are resolved: a link put there since may point anywhere
        raise HTTPException(404, f"{file} has been replaced by a link; run `mess extract` again")
    stat = path.stat()
    if recorded is not None and recorded != (stat.st_size, stat.st_mtime):
        raise HTTPException(409, f"{file} changed since it was extracted "
                                 "(its size or modification time differ): its tags, duration and vectors may be of "
                                 "another file; run `mess extract` again")
    if known is not None and not stamp_matches(stat, known[1]) and _content_hash(path, file_stamp(stat)) != known[0]:
        raise HTTPException(409, f"{file} was replaced since it was "
                                 "extracted by one of the same size and modification time but other audio: its tags, "
                                 "duration and vectors are of another file; run `mess extract` again")
    media = AUDIO_TYPES.get(audio_suffix(path.name), "application/octet-stream")
    return AudioFile(path, media_type=media, stat_result=stat).answer(request)


@lru_cache(maxsize=4096)
def _content_hash(path: Path, stamp: str) -> str:
    """The audio content hash of a file whose size and mtime are as extracted but inode or ctime not (moved away
    and back, ``chmod``, or replaced keeping both), hashed once per change ``stamp``; '' when it cannot be read."""
    try:
        return content_hash(path)
    except OSError:
        return ""


def changed_note(path: Path, known: tuple[str, str] | None) -> str | None:
    """The note of an answer from a track's stored vectors when its file now holds other audio than was extracted
    (``known``: the catalog's content hash and stamp of it), as `mess similar ID` warns; None when the file is
    unchanged, only touched (the same audio), gone or unreadable."""
    try:
        stat = path.stat()
    except OSError:
        return None
    if known is None or stamp_matches(stat, known[1]) or _content_hash(path, file_stamp(stat)) in ("", known[0]):
        return None
    return (f"{printable(path.name)} has changed since it was extracted: answering from what it held then (upload "
            "the file to search with it as it is now; `mess extract` updates the collection)")


@router.get("/map", summary="2-D map (PCA) of the collection in one vector set")
def collection_map_route(state: State, model: Model = None, layer: Layer = None, aspect: Aspect = None,
                         fused: Fused = False, learned: Learned = False) -> dict:
    """Every track's 2-D position: PCA of the vectors search compares (centred, unit length)."""
    def read() -> tuple[Run, CollectionMap, dict[int, Track], int, str | None]:
        run = state.run(model)
        spec = vector_spec(state.store, run, layer, aspect, fused, learned)
        vs = load_vectors(state.store, run, spec)
        cmap: CollectionMap = state.store.cached(("map", run.id, spec, vs.fingerprint), lambda: collection_map(vs))
        return run, cmap, track_by_id(state.store.tracks(run)), *unfused_note(state.store, run, fused)

    with state.lock:  # the points and the tracks they name from one catalog version, though an extract is committing
        run, cmap, by_id, unfused, note = state.store.reading(read)
    points = [{**track_dict(by_id[int(i)]), "x": round(float(x), 5), "y": round(float(y), 5)}
              for i, (x, y) in zip(cmap.ids, cmap.xy, strict=False) if int(i) in by_id]
    return {"model": run.model, "vectors": vectors_label(layer, aspect, fused, learned), "method": "pca",
            "explained_variance": [round(v, 4) for v in cmap.explained], "tracks_without_fused_vectors": unfused,
            "note": note, "points": points}
