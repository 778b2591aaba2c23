"""The FastAPI application: JSON API under /api, the web page at /, OpenAPI schema at /openapi.json.

FastAPI's /docs and /redoc pages are off: they load their scripts from a CDN, which
a local, offline tool must not depend on (or leak requests to).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount
from starlette.staticfiles import PathLike
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from threadpoolctl import threadpool_limits

from mess.artists.profiles import ArtistError
from mess.serve import mapping, routes_artists, routes_playlists, routes_reports, routes_search, routes_tracks
from mess.serve.audio_file import AudioFile
from mess.serve.errors import error_shapes, http_error, invalid_request, short_values, unused_parameters
from mess.serve.security import AccessPolicy, install
from mess.serve.state import ServeState, catalog_id, default_model, store_error
from mess.serve.uploads import (
    DEFAULT_EMBED_TIMEOUT,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_SECONDS,
    DEFAULT_MAX_UPLOAD,
    EmbedWorker,
)
from mess.store import FeatureStore, StoreError, TrackFailed

STATIC_DIR = Path(__file__).parent / "static"


def create_app(store_path: str | Path, model: str | None = None, allow_indexing: bool = False, *,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD, embed_timeout: float = DEFAULT_EMBED_TIMEOUT,
               access: AccessPolicy | None = None, max_queue: int = DEFAULT_MAX_QUEUE,
               max_upload_seconds: float = DEFAULT_MAX_SECONDS) -> FastAPI:
    """Build the app over an existing feature store.

    Args:
        store_path: the store folder (never created here).
        model: default model for requests that name none (default: newest extracted registry model).
        allow_indexing: open the store writable and enable ``POST /api/index``; read-only otherwise.
        max_upload_bytes: uploads beyond this are refused with 413.
        embed_timeout: seconds an upload may take to decode and embed (once the model is loaded)
            before its worker is killed.
        access: trusted hosts and token (default: loopback names, no token); see :mod:`mess.serve.security`.
        max_queue: uploads waiting for or in the embed worker at once; more get 503.
        max_upload_seconds: uploads longer than this (by their header) are refused before decoding.

    Raises:
        StoreError: no store at ``store_path``, it holds no vectors, or ``model`` is not in it.
    """
    store_path = Path(store_path)
    probe = FeatureStore(store_path, readonly=True)
    try:
        chosen = default_model(probe, model)
    finally:
        probe.close()
    opened = catalog_id(store_path)  # before opening: a catalog replaced in between is noticed at the first request
    store = FeatureStore(store_path, readonly=not allow_indexing)
    worker = EmbedWorker(embed_timeout, max_queue=max_queue, max_seconds=max_upload_seconds)
    state = ServeState(store, chosen, allow_indexing, max_upload_bytes, worker, model_option=model, catalog=opened)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.worker.start()
        preloading = mapping.preload()
        # Requests are small matrix-vector products: BLAS threads only wait on each other (13x slower at
        # 5,000 tracks on 2 busy cores). Uploads are embedded in a worker process, which keeps its threads.
        with threadpool_limits(limits=1, user_api="blas"):
            yield
        preloading.join()  # a process that ends inside that import prints tracebacks ("can't register atexit")
        state.worker.close()
        state.store.close()  # the store it opened last (see ServeState.refresh)

    app = MessAPI(title="mess", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  summary="Music Embedding Similarity Search over a local feature store",
                  description="Similar tracks with per-aspect evidence, similar artists, query by uploaded "
                              "audio, probe reports and audio streaming. Tracks are addressed by id only.")
    app.state.mess = state
    install(app, access or AccessPolicy())
    app.add_exception_handler(StoreError, store_error)
    app.add_exception_handler(TrackFailed, _failed_track)
    app.add_exception_handler(ArtistError, _bad_request)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, _internal_error)
    for module in (routes_tracks, routes_search, routes_artists, routes_reports, routes_playlists):
        app.include_router(module.router, dependencies=[Depends(unused_parameters)])
    app.router.routes.append(PageFiles("/", PageFileResponses(directory=STATIC_DIR, html=True), name="static"))
    app.add_middleware(HeadAsGet)
    return app


class MessAPI(FastAPI):
    """FastAPI with the schema's error answers in the API's one shape (:func:`error_shapes`)."""

    shaped = False

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI schema, made once (FastAPI keeps it; reshaping it again would change nothing)."""
        schema = super().openapi()
        if not self.shaped:
            error_shapes(schema)
            self.shaped = True
        return schema


class PageFiles(Mount):
    """The web page's files at /, leaving /api/ paths to the API: a GET of a POST-only route (``/api/similar/upload``)
    fell through to the files and was 404 'Not Found'; it is 405 with ``Allow: POST``."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """No match for an /api/ path; else as a mount at / matches."""
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            return Match.NONE, {}
        return super().matches(scope)


class PageFileResponses(StaticFiles):
    """The page's files, answering a ``Range`` as the audio route does (:class:`AudioFile`): one that cannot be read is
    ignored and an unsatisfiable one is a JSON 416 (Starlette's were a plain-text 400 and 416)."""

    def file_response(self, full_path: PathLike, stat_result: os.stat_result, scope: Scope,
                      status_code: int = 200) -> Response:
        """The file, a 304 when the client's copy is current, or the JSON 412 or 416 (:meth:`AudioFile.answer`);
        always to be revalidated (``no-cache``):
        without it browsers kept app.js fresh by heuristic (a tenth of its age) and ran a cached one against an
        upgraded server's index.html and API."""
        response = AudioFile(full_path, status_code=status_code, stat_result=stat_result,
                             headers={"Cache-Control": "no-cache"})
        try:
            return response.answer(Request(scope))
        except HTTPException as refusal:
            return JSONResponse({"detail": refusal.detail}, status_code=refusal.status_code, headers=refusal.headers)


class HeadAsGet:
    """HEAD on an /api route answers as GET does, headers only (FastAPI routes GET alone, so HEAD fell
    through to the static files and got 404; link checkers and players probe with HEAD)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send(message)

        await self.app({**scope, "method": "GET", "mess.method": "HEAD"}, receive, headers_only)


async def _bad_request(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": short_values(str(exc))}, status_code=400)


async def _failed_track(_: Request, exc: Exception) -> JSONResponse:
    """422: the track's file failed to extract; the reason names the file alone, never its folder."""
    path = exc.path if isinstance(exc, TrackFailed) else ""
    return JSONResponse({"detail": str(exc).replace(path, Path(path).name) if path else str(exc)}, status_code=422)


async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
    """JSON instead of a plain-text 500 (the server still logs the traceback)."""
    return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)
