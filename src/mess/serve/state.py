"""What every request handler shares: the store, its lock, run and track lookup, JSON shapes."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, cast

import faiss
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BeforeValidator, Field

from mess.constants import DEFAULT_NORM
from mess.search.query import Neighbour
from mess.search.vectors import FUSED, Norm, VectorSpec, learned_head_problem
from mess.serve.errors import short_values, without_paths
from mess.serve.uploads import EmbedWorker
from mess.store import FeatureStore, Run, StoreError, Track, is_track_id
from mess.store.config import ConfigError, model_key, names_a_run
from mess.store.fused import left_out_note
from mess.store.holders import held_deleted, open_log
from mess.store.paths import printable


def _ascii_id(value: object) -> object:
    """A track id from a URL is ASCII digits: pydantic's int() would also take '+1', '1_0' and ' 1'."""
    if isinstance(value, str) and not is_track_id(value):
        raise ValueError(f"unknown track id {value!r}")
    return value


TrackId = Annotated[int, Field(ge=1), BeforeValidator(_ascii_id)]  # ids start at 1: the schema says so
log = logging.getLogger(__name__)


class RequestLock:
    """The lock request handlers hold while they touch the store; it also gives each thread holding it one
    faiss (OpenMP) thread, set once per thread.

    Requests search one query at a time, where OpenMP's threads cost more than they save (3.2x the p50
    latency of one flat search over 100k vectors with 2 threads on a loaded 2-core machine,
    ``benchmarks/search_threads.py``). OpenMP thread counts belong to the calling thread, so the server,
    which owns its request threads, sets it in each; the search library never changes it.
    """

    def __init__(self) -> None:
        """An unlocked re-entrant lock."""
        self._lock = threading.RLock()
        self._local = threading.local()

    def __enter__(self) -> None:
        """Take the lock; the first time in this thread, limit faiss to one OpenMP thread here."""
        self._lock.acquire()
        if not getattr(self._local, "one_thread", False):
            faiss.omp_set_num_threads(1)
            self._local.one_thread = True

    def __exit__(self, *exc: object) -> None:
        """Release the lock."""
        self._lock.release()

    @contextmanager
    def within(self, seconds: float) -> Iterator[bool]:
        """Take the lock if it frees within ``seconds`` (released after the block); yields whether it was taken."""
        if not self._lock.acquire(timeout=seconds):
            yield False
            return
        try:
            yield True
        finally:
            self._lock.release()


@dataclass
class ServeState:
    """The open store plus server settings; hold ``lock`` while touching the store.

    Derived data (vector sets, indexes, maps) is memoised by the store (:meth:`FeatureStore.cached`).
    ``catalog`` is the identity of the catalog file the store was opened on (:func:`catalog_id`, taken before
    opening); :meth:`refresh` reopens the store when another file has taken its place.
    """

    store: FeatureStore
    default_model: str
    allow_indexing: bool
    max_upload_bytes: int
    worker: EmbedWorker
    lock: RequestLock = field(default_factory=RequestLock)
    model_option: str | None = None  # the model the server was started with (None: the store's preferred one)
    catalog: tuple[int, int] | None = None
    # held, instead of ``lock``, while an upload's re-ranking is computed (one at a time, as under ``lock``)
    ranking_lock: threading.Lock = field(default_factory=threading.Lock)
    cut_off_said: bool = False  # whether the log has said why the server stopped answering (see cut_off)
    written: int | None = None  # the catalog file's ctime (ns) when the store was opened (see refresh)

    def __post_init__(self) -> None:
        """The catalog's ctime, where the caller did not take it before opening."""
        if self.written is None:
            seen = _catalog_file(self.store.root)
            self.written = None if seen is None else seen[1]

    def refresh(self) -> None:
        """Reopen the store when its catalog file was replaced (the store moved aside or deleted and extracted
        again): the open connection would keep reading the old catalog against the new row files. Until the new
        catalog opens and holds vectors, answers keep coming from the old one.

        Also when the file was written in place since it was opened (its ctime moved): a backup copied over it
        leaves SQLite's page cache of the old file, which read it as 'malformed' or, worse, as a mix of both;
        another process's checkpoint moves it too, and the reopen then changes nothing. Since the old connection
        cannot be trusted then, a catalog rewritten in place that does not open whole is 503 until it does.
        """
        root = self.store.root
        seen = _catalog_file(root)  # one stat a request
        if seen is None or seen == (self.catalog, self.written):
            return
        with self.lock:
            seen = _catalog_file(root)  # before opening: a change meanwhile is seen next time
            if seen is None or seen == (self.catalog, self.written):
                return
            now, written = seen
            in_place = now == self.catalog
            try:
                fresh = FeatureStore(root, readonly=not self.allow_indexing)
            except StoreError as exc:  # not a whole store yet: try again at the next request
                if in_place:
                    raise HTTPException(503, _rewritten(root, str(exc))) from None
                return
            chosen: str | None
            try:
                try:
                    chosen = default_model(fresh, self.model_option)
                except StoreError:  # the model the server was started with is not in the new store
                    chosen = default_model(fresh, None)
            except StoreError:  # no run yet
                chosen = None
            if chosen is None or not fresh.embedded_models():  # or a run begun, none of its vectors committed yet
                fresh.close()
                if in_place:
                    raise HTTPException(503, _rewritten(root, "it holds no vectors"))
                return
            old, self.store, self.default_model = self.store, fresh, chosen
            self.catalog, self.written = now, written
            old.close()

    def cut_off(self) -> str | None:
        """Why the server may no longer answer from its store: its catalog's -wal/-shm were deleted (a clean-up of
        "stray" files, a sync tool) while it held them open, so every other command refuses the store and the latest
        commits live only in the server's open copy of the log, lost when it ends (:mod:`mess.store.holders`).
        Said once in the server's log, with the copy that keeps those commits; None while the files are there (or
        the catalog itself was replaced: :meth:`refresh` reopens)."""
        root = self.store.root
        gone = held_deleted(root / "catalog.sqlite", os.getpid())
        if not gone or catalog_id(root) != self.catalog:
            return None
        were = "was" if len(gone) == 1 else "were"
        copy = open_log(root, os.getpid())
        if copy is None:  # the index alone: every commit is in catalog.sqlite-wal
            keep, told = "its commits are all in catalog.sqlite-wal, which is kept", "nothing is lost"
        else:
            keep = (f"its latest commits are only in its open copy of catalog.sqlite-wal, lost when it ends: "
                    f"`cp {copy} {root.absolute() / 'catalog.sqlite-wal'}` keeps them (while the server runs)")
            told = "the server's log says how to keep its latest commits"
        if not self.cut_off_said:
            self.cut_off_said = True
            log.error("%s: %s %s deleted while this server (process %d) had the store open, so every other command "
                      "refuses the store and this server stops answering from it; %s; then restart the server",
                      root, " and ".join(gone), were, os.getpid(), keep)
        return (f"{root.name}: {' and '.join(gone)} {were} deleted while this server had the store open, so it no "
                f"longer answers from it: {told}; then restart the server")

    def preferred(self) -> str:
        """The model of requests that name none (call it holding the lock): the server's --model, else the store's
        choice now (`mess config default-model`, else the best model extracted), so that the server follows a
        setting changed or a better model extracted while it runs, as every command does; the last choice while the
        setting names a model without vectors."""
        if self.model_option is None:
            try:
                chosen = self.store.default_choice()
            except ConfigError:
                chosen = None
            if chosen is not None:
                self.default_model = chosen
        return self.default_model

    def run(self, model: str | None) -> Run:
        """The run of ``model`` that commands use, or the run it picks (``NAME@RUN_ID``, see
        :meth:`FeatureStore.run`; the server's default model when None); 404 when absent or malformed."""
        models = {run.model for run in self.store.runs()}
        name = model_key(model, models) if model else self.preferred()
        if name in models or names_a_run(name):
            try:
                return self.store.run(name)
            except StoreError as exc:
                raise HTTPException(404, str(exc)) from None
        known = ", ".join(sorted(models))  # the model as the request wrote it: '.' was the server's folder, resolved
        raise HTTPException(404, f"unknown model {model or name!r}; this store has vectors for {known}")

    def track(self, track_id: int) -> Track:
        """A collection track by id; 404 when unknown."""
        try:
            return self.store.track(int(track_id))
        except StoreError:
            raise HTTPException(404, f"unknown track id {track_id}") from None


def get_state(request: Request) -> ServeState:
    """FastAPI dependency: the app's :class:`ServeState`, its store reopened first if it was replaced; 503 once its
    -wal/-shm files were deleted under it (:meth:`ServeState.cut_off`).

    The request remembers the catalog it is answered from (``request.state.catalog``): see :func:`store_error`.
    """
    state: ServeState = request.app.state.mess
    state.refresh()
    if why := state.cut_off():
        raise HTTPException(503, why)
    request.state.catalog = state.catalog
    return state


def store_error(request: Request, exc: Exception) -> JSONResponse:
    """The answer to a StoreError: 400 with its message (the store's folder, and any other, such as the folder of a
    track not yet embedded, named without its parents and with escapes for bytes that are not UTF-8, as a track's file
    is), or 503 (Retry-After) when the catalog the request was
    answered from has been replaced or removed since (the store is being rebuilt in place: its old catalog read
    against new or missing row files is no damage, and `mess check --repair` would be the wrong advice)."""
    state: ServeState = request.app.state.mess
    root = state.store.root
    now = catalog_id(root)
    if now == getattr(request.state, "catalog", state.catalog):  # the store named by its folder's name alone
        detail = without_paths(printable(str(exc).replace(str(root), root.name)))  # and a music folder too
        return JSONResponse({"detail": short_values(detail)}, status_code=400)
    return JSONResponse({"detail": f"{rebuilding(now)}; answers resume once `mess extract` has written vectors "
                                   "there; try again shortly"},
                        status_code=503, headers={"Retry-After": "10"})


def rebuilding(now: tuple[int, int] | None) -> str:
    """Why the store is being rebuilt, given its catalog's :func:`catalog_id` now (None: there is none)."""
    why = ("its catalog is gone (the store was moved aside or deleted since the server opened it)" if now is None
           else "a new catalog has replaced the one the server read, and holds no vectors yet (or is still being "
                "written)")
    return f"the store is being rebuilt: {why}"


def catalog_id(root: Path) -> tuple[int, int] | None:
    """(device, inode) of the store's catalog file, None while there is none."""
    seen = _catalog_file(root)
    return None if seen is None else seen[0]


def _catalog_file(root: Path) -> tuple[tuple[int, int], int] | None:
    """(device, inode) of the store's catalog file and its ctime (ns), which moves with every write to the file,
    from one stat; None while there is none."""
    try:
        st = os.stat(root / "catalog.sqlite")
    except OSError:
        return None
    return (st.st_dev, st.st_ino), st.st_ctime_ns


def _rewritten(root: Path, why: str) -> str:
    """The 503's words for a catalog rewritten in place that does not open whole (``why``)."""
    why = printable(why.replace(str(root), root.name))
    return (f"the store's catalog was rewritten in place since the server read it (a backup copied over it?) and "
            f"cannot be read yet ({without_paths(why)}): answers resume once it opens whole; try again shortly")


def default_model(store: FeatureStore, model: str | None) -> str:
    """``model`` when the store has it (a run it picks as ``NAME@RUN_ID``); else the store's preferred model (see
    :mod:`mess.store.config`)."""
    runs = store.runs()
    if not runs:
        raise StoreError(f"no vectors in {store.root}; run `mess extract` first")
    names = [r.model for r in runs]
    if model is not None and names_a_run(model) and model_key(model, names) not in names:
        run = store.run(model)  # one run (NAME@RUN_ID, run:RUN_ID): named as the page lists it
        return f"{run.model}@{run.id}"
    if model is not None:
        if model_key(model, names) not in names:
            raise StoreError(f"no vectors for model {model!r} in {store.root}; extracted models: "
                             f"{', '.join(sorted(set(names)))}")
        return model_key(model, names)
    return store.run().model


def vector_spec(store: FeatureStore, run: Run, layer: str | None, aspect: str | None, fused: bool,
                learned: bool = False, norm: str = DEFAULT_NORM) -> VectorSpec:
    """The vectors a request asks for, validated against the run; 400 naming the choices when invalid."""
    try:
        spec = VectorSpec.from_options(layer, aspect, fused, cast("Norm", norm), learned=learned)
        spec.layers(store, run)
    except (ValueError, StoreError) as exc:
        raise HTTPException(400, api_words(str(exc))) from None
    if fused and store.derived_meta(run, FUSED) is None:
        raise HTTPException(400, f"no fused vectors for {run.model}; {store.derived_elsewhere(run, FUSED, 'model=')}"
                                 "run `mess fuse train` and `mess fuse apply`")
    if learned and (problem := learned_head_problem(run)):
        raise HTTPException(400, api_words(problem))
    return spec


def unfused_note(store: FeatureStore, run: Run, fused: bool) -> tuple[int, str | None]:
    """How many of the run's tracks an answer in the fused vectors left out for having none (extracted since
    `mess fuse apply`; 0 for other vectors), and the note saying so (None when none were), as `mess similar` says it."""
    unfused = store.derived_missing(run, FUSED) if fused else 0
    return unfused, (left_out_note(unfused) if unfused else None)


def track_dict(track: Track) -> dict:
    """JSON form of a track: tags and the file name (never the full path)."""
    return {"id": track.id, "name": track.name, "title": track.title, "artist": track.artist,
            "album": track.album, "genre": track.genre, "composer": track.composer,
            "duration": track.duration, "file": printable(Path(track.path).name)}  # a non-UTF-8 name as caf\xe9


def neighbour_dict(result: Neighbour, named: Mapping[str, str] | None = None) -> dict:
    """JSON form of a search result: the track plus score, duplicate flag, the audio comparison with the query's file
    (``same_recording``: null where none was made) and per-aspect evidence. The comparison's reason names files by
    their names, never by a server path ('not compared: song.mp3: not a readable audio file'): the result's by its
    file name, the query's as ``named`` maps its path (an upload's temporary file by the name it was sent with)."""
    scored = result.to_dict()
    keys = ("score", "duplicate", "same_recording", "adjusted", "why", "why_percentile", "reasons", "reasons_text")
    answer = {**track_dict(result.track), **{k: scored[k] for k in keys}}
    if (compared := answer["same_recording"]) is not None:
        reason, names = compared["reason"], {result.track.path: answer["file"], **(named or {})}
        for path in sorted(names, key=len, reverse=True):  # a path that begins another is replaced after it
            reason = reason.replace(path, names[path])
        answer["same_recording"] = {**compared, "reason": without_paths(reason)}
    return answer


def api_words(message: str) -> str:
    """A CLI message in the API's words: '--layer' becomes 'layer' and '-n 12' 'n=12' for the API's parameters,
    except inside a `quoted command` or a 'quoted value' (a track name or what the request sent, as written)."""
    return "".join(part if i % 2 else _LONG_OPTION.sub(_api_name, _SHORT_OPTION.sub(_api_parameter, part))
                   for i, part in enumerate(_KEPT.split(message)))


_KEPT = re.compile(r"(`[^`]*`|(?<!\w)'[^'\n]*'(?!\w))")  # backticks; quotes that no letter touches outside
_API_PARAMETERS = frozenset({"model", "layer", "aspect", "fused", "learned", "k", "n", "exclude-same-artist", "hubness",
                             "expand", "method", "center", "window", "blend", "seed", "start", "end", "format"})
_LONG_OPTION = re.compile(r"(?<![\w-])--([a-z][a-z-]*)")
_SHORT_OPTION = re.compile(r"(?<![\w-])-([a-z])\b(?: (\d+)\b)?")


def _api_name(match: re.Match[str]) -> str:
    return match[1] if match[1] in _API_PARAMETERS else match[0]


def _api_parameter(match: re.Match[str]) -> str:
    if match[1] not in _API_PARAMETERS:
        return match[0]
    return match[1] if match[2] is None else f"{match[1]}={match[2]}"
