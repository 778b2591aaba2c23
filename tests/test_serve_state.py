"""The server's shared state in-process (src/mess/serve/state.py) on real stores in ``tmp_path``: the model a request
gets, runs and tracks refused in words, a store replaced while the server runs, the answer to a StoreError, the
request lock, and the messages in the API's words.

Expected answers come from the fixture (which models and runs each store holds, which file each track is),
``os.stat`` (a catalog's identity), ``mess.store.config.MODEL_PREFERENCE`` (the best model) and ``os.fsdecode``."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import faiss
import numpy as np
import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.testclient import TestClient

from mess.search.query import Neighbour
from mess.serve.state import (
    RequestLock,
    ServeState,
    TrackId,
    _ascii_id,
    api_words,
    catalog_id,
    default_model,
    get_state,
    neighbour_dict,
    rebuilding,
    store_error,
    track_dict,
    unfused_note,
    vector_spec,
)
from mess.serve.uploads import EmbedWorker
from mess.store import FeatureStore, Run, RunKey, StoreError, TrackVectors
from mess.store.config import MODEL_PREFERENCE, write_setting


def _run(store: FeatureStore, model: str, revision: str = "r1") -> Run:
    run = store.ensure_run(RunKey(model, revision, "{}", 16000, ("a", "b"), (2, 3)))
    rng = np.random.default_rng(len(model))
    items = []
    for h in ("h1", "h2"):
        segments = [rng.standard_normal((2, d)).astype(np.float32) for d in run.layer_dims]
        items.append(TrackVectors(h, [s.mean(axis=0) for s in segments], segments, [0.0, 1.5]))
    store.write_vectors(run, items)
    return run


def _store(root: Path, *models: str) -> FeatureStore:
    store = FeatureStore(root)
    store.upsert_track(Path("/m/one.flac"), "h1", 10, 1.0, {}, {"artist": "Ann", "title": "One"})
    store.upsert_track(Path(os.fsdecode(b"/m/caf\xe9.wav")), "h2", 10, 2.0, {}, {})
    store.set_duration("h1", 61.5)
    for model in models:
        _run(store, model)
    return store


def _state(store: FeatureStore, model_option: str | None = None) -> ServeState:
    return ServeState(store, default_model(store, model_option), True, 1000, EmbedWorker(),
                      model_option=model_option, catalog=catalog_id(store.root))


def _best(*models: str) -> str:
    return min(models, key=MODEL_PREFERENCE.index)


# --- default_model ----------------------------------------------------------------------------------------------

def test_the_default_model_is_the_one_named_else_the_best_extracted(tmp_path: Path) -> None:
    store = _store(tmp_path, "dsp", "musicnn")
    assert default_model(store, None) == _best("dsp", "musicnn")
    assert default_model(store, "dsp") == "dsp" and default_model(store, "DSP") == "dsp"
    run = store.run("dsp")
    assert default_model(store, f"dsp@{run.id}") == f"dsp@{run.id}"
    assert default_model(store, f"run:{run.id}") == f"dsp@{run.id}"  # named as the page lists it
    with pytest.raises(StoreError) as unknown:
        default_model(store, "nope")
    assert str(unknown.value) == f"no vectors for model 'nope' in {tmp_path}; extracted models: dsp, musicnn"
    store.close()


def test_a_store_without_vectors_has_no_default_model(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(StoreError) as empty:
        default_model(store, None)
    assert str(empty.value) == f"no vectors in {tmp_path}; run `mess extract` first"
    with pytest.raises(StoreError, match="no vectors in"):
        default_model(store, "dsp")
    store.close()


# --- ServeState.run, preferred, track ---------------------------------------------------------------------------

def test_a_request_naming_no_model_follows_the_store_s_setting_unless_the_server_named_one(tmp_path: Path) -> None:
    store = _store(tmp_path, "dsp", "musicnn")
    free, fixed = _state(store), _state(store, "musicnn")
    best = _best("dsp", "musicnn")
    assert free.run(None).model == best and free.default_model == best
    write_setting(tmp_path, "default-model", "dsp")
    assert free.preferred() == "dsp" and free.run(None).model == "dsp" and free.default_model == "dsp"
    assert fixed.preferred() == "musicnn" and fixed.run(None).model == "musicnn"
    (tmp_path / "config.json").write_text("[1, 2")  # unreadable: the last choice stands
    assert free.preferred() == "dsp" and free.run(None).model == "dsp"
    store.close()


def test_a_request_naming_a_model_or_run_gets_it_and_unknown_ones_are_404(tmp_path: Path) -> None:
    store = _store(tmp_path, "dsp", "musicnn")
    state = _state(store)
    dsp = store.run("dsp")
    assert state.run("DSP") == dsp and state.run(f"dsp@{dsp.id}") == dsp and state.run(f"run:{dsp.id}") == dsp
    with pytest.raises(HTTPException) as unknown:
        state.run("nope")
    assert unknown.value.status_code == 404
    assert unknown.value.detail == "unknown model 'nope'; this store has vectors for dsp, musicnn"
    with pytest.raises(HTTPException) as folder:  # a folder (a local model's) is named as the request wrote it
        state.run(".")
    assert folder.value.detail == "unknown model '.'; this store has vectors for dsp, musicnn"
    with pytest.raises(HTTPException) as gone:
        state.run("dsp@999")
    assert gone.value.status_code == 404 and "999" in gone.value.detail
    with pytest.raises(HTTPException) as malformed:
        state.run("dsp@x")
    assert malformed.value.status_code == 404 and "'dsp@x' names no model of this store" in malformed.value.detail
    store.close()


def test_a_track_is_found_by_id_and_an_unknown_id_is_404(tmp_path: Path) -> None:
    store = _store(tmp_path, "dsp")
    state = _state(store)
    first = store.tracks()[0]
    assert state.track(first.id) == first
    with pytest.raises(HTTPException) as unknown:
        state.track(first.id + 100)
    assert unknown.value.status_code == 404 and unknown.value.detail == f"unknown track id {first.id + 100}"
    store.close()


# --- a store replaced while the server runs ---------------------------------------------------------------------

def test_the_catalog_s_identity_is_its_device_and_inode_and_none_while_absent(tmp_path: Path) -> None:
    assert catalog_id(tmp_path) is None
    _store(tmp_path).close()
    st = os.stat(tmp_path / "catalog.sqlite")
    assert catalog_id(tmp_path) == (st.st_dev, st.st_ino)


def _opened(path: Path) -> int:
    """How many of this process's file descriptors are open on ``path``."""
    return sum(os.path.realpath(f"/proc/self/fd/{fd}") == str(path) for fd in os.listdir("/proc/self/fd"))


def test_a_store_extracted_again_in_place_is_reopened_once_it_holds_vectors(tmp_path: Path) -> None:
    root = tmp_path / "store"
    state = _state(_store(root, "dsp"), "dsp")
    first = state.store
    state.refresh()
    assert state.store is first  # the same catalog: nothing to do
    shutil.move(root, tmp_path / "aside")
    state.refresh()
    assert state.store is first  # no catalog at all: answers keep coming from the old one
    root.mkdir()
    (root / "catalog.sqlite").write_bytes(b"not a database" * 100)
    state.refresh()
    assert state.store is first  # not a whole store yet
    (root / "catalog.sqlite").unlink()
    empty = FeatureStore(root)
    empty.upsert_track(Path("/m/new.flac"), "h9", 10, 1.0, {}, {})
    empty.close()
    state.refresh()
    assert state.store is first  # a new catalog without vectors yet
    assert _opened(root / "catalog.sqlite") == 0  # the store opened to look at it was closed
    empty = FeatureStore(root)
    _run(empty, "musicnn")
    empty.close()
    state.refresh()  # the server's --model dsp is not in the new store: its best model answers
    assert state.store is not first and state.default_model == "musicnn"
    assert state.catalog == catalog_id(root) and [t.path for t in state.store.tracks()] == ["/m/new.flac"]
    assert state.store.readonly is False  # the server allows indexing
    with pytest.raises(Exception, match="closed"):
        first.tracks()  # the old store was closed
    state.store.close()


def test_a_store_not_replaced_is_checked_without_waiting_for_the_lock(tmp_path: Path) -> None:
    """Every request checks the catalog first: while a long request holds the lock, the others (a health check)
    must not wait for it to learn that nothing changed."""
    state = _state(_store(tmp_path, "dsp"))
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with state.lock:
            held.set()
            done.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    checker = threading.Thread(target=state.refresh)
    checker.start()
    checker.join(2)
    waited = checker.is_alive()
    done.set()
    holder.join()
    checker.join()
    assert not waited
    state.store.close()


def test_two_requests_that_find_the_store_replaced_reopen_it_once(tmp_path: Path) -> None:
    """The second request to see the new catalog waits for the lock while the first reopens the store; it then
    finds the store reopened and keeps it (it opened a third connection and closed the one just opened)."""
    root = tmp_path / "store"
    state = _state(_store(root, "dsp"))
    shutil.move(root, tmp_path / "aside")
    _store(root, "dsp").close()
    with state.lock:
        second = threading.Thread(target=state.refresh)
        second.start()
        second.join(0.5)  # it saw the new catalog and waits for the lock
        state.refresh()  # the first request, holding it
        reopened = state.store
    second.join()
    assert state.store is reopened and state.catalog == catalog_id(root)
    assert [t.path for t in reopened.tracks()] == ["/m/one.flac", os.fsdecode(b"/m/caf\xe9.wav")]  # still open
    reopened.close()


def test_a_store_replaced_keeps_the_server_s_model_when_the_new_store_has_it(tmp_path: Path) -> None:
    root = tmp_path / "store"
    state = _state(_store(root, "dsp", "musicnn"), "dsp")
    shutil.move(root, tmp_path / "aside")
    _store(root, "dsp", "musicnn").close()
    state.refresh()
    assert state.default_model == "dsp" and state.catalog == catalog_id(root)
    state.store.close()


# --- the answer to a StoreError ---------------------------------------------------------------------------------

def _app(state: ServeState) -> FastAPI:
    app = FastAPI()
    app.state.mess = state
    app.add_exception_handler(StoreError, store_error)

    @app.get("/fail")
    def fail(request: Request) -> dict:
        got = get_state(request)
        if request.query_params.get("replace"):
            shutil.move(got.store.root, got.store.root.parent / "aside")
            if request.query_params["replace"] == "new":
                _store(got.store.root).close()
            if request.query_params["replace"] == "refreshed":  # another request reopened it meanwhile
                _store(got.store.root, "musicnn").close()
                got.refresh()
        raise StoreError(f"rows missing in {got.store.root}/vectors/x.f16 for caf\udce9.wav")

    @app.get("/model")
    def model(request: Request) -> dict:
        return {"model": get_state(request).default_model}

    @app.get("/tracks/{track_id}")
    def track(track_id: TrackId) -> dict:
        return {"id": track_id}

    return app


def test_a_store_error_is_400_naming_the_store_by_its_folder_s_name(tmp_path: Path) -> None:
    root = tmp_path / os.fsdecode(b"st\xf6re")
    state = _state(_store(root, "dsp"))
    with TestClient(_app(state)) as client:
        answer = client.get("/fail")
    assert answer.status_code == 400
    assert answer.json()["detail"] == "rows missing in st\\xf6re/vectors/x.f16 for caf\\xe9.wav"
    state.store.close()


@pytest.mark.parametrize("replace", ["gone", "new", "refreshed"])
def test_a_store_error_after_the_catalog_was_replaced_is_503_to_retry(tmp_path: Path, replace: str) -> None:
    root = tmp_path / "store"
    state = _state(_store(root, "dsp"))
    with TestClient(_app(state)) as client:
        answer = client.get("/fail", params={"replace": replace})
    assert answer.status_code == 503 and answer.headers["retry-after"] == "10"
    now = catalog_id(root)
    assert (now is None) == (replace == "gone") and (state.store.root == root)
    assert answer.json()["detail"] == (f"{rebuilding(now)}; answers resume once `mess extract` has written vectors "
                                       "there; try again shortly")
    state.store.close()


def test_each_request_is_answered_from_the_store_reopened_first_if_it_was_replaced(tmp_path: Path) -> None:
    root = tmp_path / "store"
    state = _state(_store(root, "dsp"))
    with TestClient(_app(state)) as client:
        assert client.get("/model").json() == {"model": "dsp"}
        shutil.move(root, tmp_path / "aside")
        _store(root, "musicnn").close()
        assert client.get("/model").json() == {"model": "musicnn"}
    assert state.catalog == catalog_id(root)
    state.store.close()


def test_a_track_id_in_a_url_is_ascii_digits_or_422(tmp_path: Path) -> None:
    state = _state(_store(tmp_path, "dsp"))
    with TestClient(_app(state)) as client:
        assert client.get("/tracks/12").json() == {"id": 12}
        for odd in ("+1", "1_0", "%201", "%D9%A1"):
            assert client.get(f"/tracks/{odd}").status_code == 422, odd
    state.store.close()


def test_why_a_store_is_rebuilt_says_whether_its_catalog_is_gone_or_new() -> None:
    assert rebuilding(None) == ("the store is being rebuilt: its catalog is gone (the store was moved aside or deleted "
                                "since the server opened it)")
    assert rebuilding((1, 2)) == ("the store is being rebuilt: a new catalog has replaced the one the server read, and "
                                  "holds no vectors yet (or is still being written)")


# --- the request lock -------------------------------------------------------------------------------------------

def test_the_lock_is_taken_within_a_time_only_when_no_other_thread_holds_it() -> None:
    lock = RequestLock()
    with lock.within(0.1) as taken:
        assert taken
        with lock.within(0.1) as again:  # re-entrant in the same thread
            assert again
        seen: list[bool] = []

        def other() -> None:
            with lock.within(0.2) as got:
                seen.append(got)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert seen == [False]
    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == [False, True]  # released after the block
    with lock:
        pass
    thread = threading.Thread(target=other)  # released by a plain `with` too
    thread.start()
    thread.join()
    assert seen == [False, True, True]


def test_a_lock_held_elsewhere_is_not_taken_and_the_block_runs_on() -> None:
    lock, held, done = RequestLock(), threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            done.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    ran = []
    with lock.within(0.05) as taken:
        ran.append(taken)
    done.set()
    holder.join()
    assert ran == [False]
    with lock.within(0.05) as taken:
        assert taken


def test_a_thread_holding_the_lock_searches_with_one_openmp_thread() -> None:
    lock, counts = RequestLock(), []

    def search() -> None:
        faiss.omp_set_num_threads(2)  # a fresh thread's own setting
        with lock:
            counts.append(faiss.omp_get_max_threads())

    thread = threading.Thread(target=search)
    thread.start()
    thread.join()
    assert counts == [1]


# --- JSON shapes, ids and vectors -------------------------------------------------------------------------------

def test_a_track_s_json_holds_its_tags_and_file_name_without_folders(tmp_path: Path) -> None:
    store = _store(tmp_path, "dsp")
    one, cafe = store.tracks()
    assert track_dict(one) == {"id": one.id, "name": "Ann - One", "title": "One", "artist": "Ann", "album": None,
                               "genre": None, "composer": None, "duration": 61.5, "file": "one.flac"}
    assert track_dict(cafe)["file"] == "caf\\xe9.wav" and track_dict(cafe)["name"] == "caf\\xe9"
    store.close()


def test_a_search_result_s_json_is_its_track_s_plus_its_scores_and_reasons(tmp_path: Path) -> None:
    store = _store(tmp_path, "dsp")
    one = store.tracks()[0]
    result = Neighbour(one, 0.1234567, True, {"timbre": 0.5, "harmony": 0.25}, {"timbre": 0.9, "harmony": 0.97}, 0.2)
    assert neighbour_dict(result) == {
        "id": one.id, "name": "Ann - One", "title": "One", "artist": "Ann", "album": None, "genre": None,
        "composer": None, "duration": 61.5, "file": "one.flac", "score": 0.123457, "duplicate": True,
        "same_recording": None, "adjusted": 0.2, "why": {"timbre": 0.5, "harmony": 0.25},
        "why_percentile": {"timbre": 0.9, "harmony": 0.97}, "reasons": ["harmony", "timbre"],
        "reasons_text": result.reasons_text()}
    store.close()


def test_a_track_id_from_a_url_is_ascii_digits() -> None:
    for value in ("12", "0", 7):
        assert _ascii_id(value) == value
    for value in ("+1", "1_0", " 1", "١", "-3"):
        with pytest.raises(ValueError, match="unknown track id"):
            _ascii_id(value)


def test_vectors_a_run_lacks_are_400_naming_them(tmp_path: Path) -> None:
    store = _store(tmp_path, "dsp")
    run = store.run("dsp")
    assert vector_spec(store, run, "b", None, False).layers(store, run) == ("b",)
    with pytest.raises(HTTPException) as two:
        vector_spec(store, run, "a", None, True)
    assert two.value.status_code == 400
    assert two.value.detail == "choose at most one of layer, aspect, fused and learned"
    with pytest.raises(HTTPException) as fused:
        vector_spec(store, run, None, None, True)
    assert fused.value.status_code == 400 and fused.value.detail.startswith("no fused vectors for dsp; ")
    assert fused.value.detail.endswith("run `mess fuse train` and `mess fuse apply`")
    with pytest.raises(HTTPException) as learned:
        vector_spec(store, run, None, None, False, learned=True)
    assert learned.value.status_code == 400
    assert learned.value.detail.startswith("no learned head for dsp; heads ship for ")
    with pytest.raises(HTTPException) as layer:
        vector_spec(store, run, "zz", None, False)
    assert layer.value.status_code == 400 and "'zz'" in layer.value.detail
    assert unfused_note(store, run, False) == (0, None)
    store.close()


def test_cli_words_become_the_api_s_outside_quotes() -> None:
    assert api_words("use --layer or --aspect, -n 12 or -k") == "use layer or aspect, n=12 or k"
    assert api_words("--no-cache and -x 3 stay") == "--no-cache and -x 3 stay"  # no parameters of the API
    assert api_words("run `mess similar --layer mfcc -n 3` or 'a --layer b'") == \
        "run `mess similar --layer mfcc -n 3` or 'a --layer b'"
    assert api_words("it's --model and the model's --layer") == "it's model and the model's layer"
    assert api_words("x--layer and a-k") == "x--layer and a-k"
