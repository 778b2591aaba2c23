"""The first ``ranking=reranked`` request of a collection without data saved by `mess index --rerank` builds the
re-ranking data (seconds on thousands of tracks): that build must not hold the server's request lock, so that a cheap
request sent meanwhile (a track's plain neighbours, the track listing) is answered before it ends; concurrent first
requests build it once; and vectors written meanwhile are never answered from the build of the old ones.

A real server (uvicorn in a thread, on a free loopback port) and real concurrent HTTP requests (httpx, one thread
each); a real store in ``tmp_path``. The build is held at its start until the cheap requests have been answered (at
most 20 s): the ordering is forced by events, not by timing. Expected answers are the re-ranked rows of a re-ranker
built in the test from the vector set's unit vectors (:func:`build_reranker`, nothing the server computed)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from clustered_store import FixedEmbedding, clustered_store

from mess.search import rerank, rerank_store
from mess.search.augment import build_augmentation, expanded_rows
from mess.search.rerank import build_reranker
from mess.search.vectors import VectorSpec, load_vectors
from mess.serve.app import create_app
from mess.store import FeatureStore, Run, TrackVectors

N, DIM, K = 300, 24, 8
SPEC = VectorSpec.from_options(None, None, False, "auto")


UPLOADED = np.linspace(-1, 1, DIM, dtype=np.float32)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """N tracks in 12 clusters (:func:`clustered_store`), made once: each test serves a copy."""
    root = tmp_path_factory.mktemp("template") / "store"
    clustered_store(root, N, DIM, 12, seed=11)[0].close()
    return root


@pytest.fixture
def served(template: Path, tmp_path: Path) -> Iterator[tuple[str, FeatureStore, Run]]:
    """A copy of the template store, and the base URL of a real server over it (no lifespan: the embedding process
    is replaced by :class:`FixedEmbedding`, whose answer is :data:`UPLOADED`)."""
    shutil.copytree(template, tmp_path / "store")
    store = FeatureStore(tmp_path / "store")
    run = store.run("synthetic")
    app = create_app(tmp_path / "store")
    app.state.mess.worker = FixedEmbedding(UPLOADED)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started, "the server did not start"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", store, run
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        app.state.mess.store.close()
        store.close()


def _get(base: str, path: str, **params: object) -> httpx.Response:
    return httpx.get(f"{base}{path}", params=params, timeout=120)


def _in_thread(call: Callable[[], httpx.Response]) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def go() -> None:
        box["r"] = call()
        box["at"] = time.monotonic()

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread, box


def _held_builds(monkeypatch: pytest.MonkeyPatch, module: object = rerank, name: str = "build_reranker",
                 ) -> tuple[list[int], threading.Event, threading.Event]:
    """Every re-ranking build (or another builder: ``module.name``) counted (its number of tracks), each held at its
    start until ``release`` is set (at most 20 s); ``started`` is set when the first begins."""
    real, builds = getattr(module, name), []
    started, release = threading.Event(), threading.Event()

    def held(unit: np.ndarray, *args: object, **kwargs: object) -> rerank.Reranker:
        builds.append(len(unit))
        started.set()
        release.wait(20)
        return real(unit, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(module, name, held)
    return builds, started, release


def _cheap_during_build(started: threading.Event, release: threading.Event, what: str,
                        slow: Callable[[], httpx.Response],
                        cheap: Callable[[], httpx.Response]) -> tuple[dict, dict, bool]:
    """Send ``slow`` (its build held by :func:`_held_builds`), then ``cheap`` once the build ``what`` has started;
    release the build when ``cheap`` is answered or after 15 s. The two responses' boxes, and whether ``cheap`` was
    answered before the release."""
    first, first_box = _in_thread(slow)
    try:
        assert started.wait(60), f"the {what} build never started"
        thread, box = _in_thread(cheap)
        thread.join(15)
        answered = "r" in box
    finally:
        release.set()
        first.join(60)
    return first_box, box, answered


def _expected(store: FeatureStore, run: Run, track: int) -> list[int]:
    """The ids of ``track``'s K best re-ranked neighbours, from a re-ranker built here on the vectors now."""
    vs = load_vectors(store, run, SPEC)
    unit = vs.unit().copy()
    row = int(vs.rows(np.array([track]))[0])
    scores = build_reranker(unit).rows(np.array([row]))[0]
    scores[row] = -np.inf
    return vs.ids[np.argsort(-scores, kind="stable")[:K]].tolist()


def _ids(r: httpx.Response) -> list[int]:
    assert r.status_code == 200, r.text
    assert r.json()["ranking"] == "reranked"
    return [x["id"] for x in r.json()["results"]]


def test_the_first_reranked_request_builds_outside_the_lock_and_once(served: tuple[str, FeatureStore, Run],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    base, store, run = served
    builds, started, release = _held_builds(monkeypatch)
    first, first_box = _in_thread(lambda: _get(base, "/api/tracks/5/similar", ranking="reranked", k=K))
    try:
        assert started.wait(60), "the re-ranking build never started"
        second, second_box = _in_thread(lambda: _get(base, "/api/tracks/7/similar", ranking="reranked", k=K))
        plain, plain_box = _in_thread(lambda: _get(base, "/api/tracks/9/similar", ranking="plain", k=K))
        listing, listing_box = _in_thread(lambda: _get(base, "/api/tracks"))
        plain.join(15)
        listing.join(15)
        answered = "r" in plain_box and "r" in listing_box
        time.sleep(0.3)  # the second re-ranked request has had time to reach the build if it were to start one
    finally:
        released_at = time.monotonic()
        release.set()
        first.join(60)
        second.join(60)
    assert answered, "a track's plain neighbours and the track listing waited for the re-ranking build"
    assert plain_box["at"] < released_at and listing_box["at"] < released_at
    assert plain_box["r"].status_code == 200 and listing_box["r"].status_code == 200
    assert builds == [N], "concurrent first re-ranked requests built the re-ranking data more than once"
    monkeypatch.undo()
    assert _ids(first_box["r"]) == _expected(store, run, 5)
    assert _ids(second_box["r"]) == _expected(store, run, 7)


def test_the_first_reranked_upload_builds_outside_the_lock(served: tuple[str, FeatureStore, Run],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    base, store, run = served
    builds, started, release = _held_builds(monkeypatch)
    upload_box, plain_box, answered = _cheap_during_build(
        started, release, "re-ranking",
        lambda: httpx.post(f"{base}/api/similar/upload", params={"ranking": "reranked", "k": K},
                           files={"file": ("q.wav", b"RIFF", "audio/wav")}, timeout=120),
        lambda: _get(base, "/api/tracks/9/similar", ranking="plain", k=K))
    assert answered, "a track's plain neighbours waited for the upload's re-ranking build"
    assert plain_box["r"].status_code == 200
    assert builds[0] == N  # the collection's re-ranking data (then the exact re-ranking with the upload added)
    monkeypatch.undo()
    vs = load_vectors(store, run, SPEC)
    unit, q = vs.unit().copy(), vs.prep.apply(UPLOADED[None])
    scores = rerank.copy_first(build_reranker(unit).outside(q)[0], unit @ q[0], 0.0)
    assert _ids(upload_box["r"]) == vs.ids[np.argsort(-scores, kind="stable")[:K]].tolist()


def test_vectors_written_during_the_build_are_not_answered_from_it(served: tuple[str, FeatureStore, Run],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Track 5's vector is replaced (new content) by another connection while the first build runs: every request sent
    after that write is answered from the new vectors, the first's build of the old ones notwithstanding."""
    base, store, run = served
    builds, started, release = _held_builds(monkeypatch)
    first, first_box = _in_thread(lambda: _get(base, "/api/tracks/5/similar", ranking="reranked", k=K))
    try:
        assert started.wait(60), "the re-ranking build never started"
        vs = load_vectors(store, run, SPEC)
        moved = vs.raw[vs.rows(np.array([200]))[0]].astype(np.float32)  # track 5 now sounds like track 200
        h = "f" * 32
        assert store.upsert_track(Path(store.track(5).path), h, 1, 0.0, {"duration": 30.0},
                                  {"artist": "A", "title": "T"}) == 5
        store.write_vectors(run, [TrackVectors(h, [moved], [moved[None]], [0.0])])
        after, after_box = _in_thread(lambda: _get(base, "/api/tracks/5/similar", ranking="reranked", k=K))
        time.sleep(0.3)
    finally:
        release.set()
        first.join(60)
        after.join(60)
    monkeypatch.undo()
    now = _expected(store, run, 5)
    assert 200 in now  # the write changed the answer: the test can tell the two builds apart
    assert _ids(after_box["r"]) == now
    assert _ids(_get(base, "/api/tracks/5/similar", ranking="reranked", k=K)) == now
    assert len(builds) >= 2  # the old vectors' build, then the new ones'


def test_a_store_replaced_while_a_request_waits_for_the_build_is_answered_from_the_new_one(
        served: tuple[str, FeatureStore, Run], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, template: Path) -> None:
    """The store is moved aside and another extracted in its place while the first build runs and a second re-ranked
    request waits for it (of another vector set: one layer, zscore): the server reopens the new store at the next
    request and closes the old one, which the waiting request had read its vectors from. It is answered from the new
    store, not with a 500 for reading a closed catalog."""
    base, store, run = served
    builds, started, release = _held_builds(monkeypatch)
    first, first_box = _in_thread(lambda: _get(base, "/api/tracks/5/similar", ranking="reranked", k=K))
    try:
        assert started.wait(60), "the re-ranking build never started"
        waiting, waiting_box = _in_thread(lambda: _get(base, "/api/tracks/7/similar", ranking="reranked", k=K,
                                                       layer="a"))
        time.sleep(0.5)  # it has read its vectors and waits for the first build
        root = tmp_path / "store"
        shutil.copytree(template, tmp_path / "new")  # another catalog file of the same tracks
        root.rename(tmp_path / "old")
        (tmp_path / "new").rename(root)
        assert _get(base, "/api/tracks").status_code == 200  # the server reopens the store here
    finally:
        release.set()
        first.join(60)
        waiting.join(60)
    monkeypatch.undo()
    assert first_box["r"].status_code == 200, first_box["r"].text
    assert waiting_box["r"].status_code == 200, waiting_box["r"].text
    reopened = FeatureStore(root)
    try:
        vs = load_vectors(reopened, reopened.run("synthetic"), VectorSpec.from_options("a", None, False, "auto"))
        row = int(vs.rows(np.array([7]))[0])
        scores = build_reranker(vs.unit().copy()).rows(np.array([row]))[0]
        scores[row] = -np.inf
        assert _ids(waiting_box["r"]) == vs.ids[np.argsort(-scores, kind="stable")[:K]].tolist()
    finally:
        reopened.close()


def test_the_first_default_request_builds_the_augmentation_outside_the_lock(served: tuple[str, FeatureStore, Run],
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The default ranking (augmented for all layers up to 10,000 tracks) builds the collection's augmentation at the
    first request without data saved by `mess index` (3.3 s at 10,000 x 5,000 dims): it held the lock meanwhile."""
    base, store, run = served
    builds, started, release = _held_builds(monkeypatch, rerank_store, "build_augmentation")
    first_box, plain_box, answered = _cheap_during_build(
        started, release, "augmentation", lambda: _get(base, "/api/tracks/5/similar", k=K),
        lambda: _get(base, "/api/tracks/9/similar", ranking="plain", k=K))
    assert answered, "a track's plain neighbours waited for the augmentation build"
    assert plain_box["r"].status_code == 200
    assert builds == [N]
    monkeypatch.undo()
    assert first_box["r"].status_code == 200 and first_box["r"].json()["ranking"] == "augmented"
    vs = load_vectors(store, run, SPEC)
    unit = vs.unit().copy()
    row = int(vs.rows(np.array([5]))[0])
    scores = expanded_rows(unit, build_augmentation(unit), np.array([row]))[0]
    scores[row] = -np.inf
    want = vs.ids[np.argsort(-scores, kind="stable")[:K]].tolist()
    assert [x["id"] for x in first_box["r"].json()["results"]] == want


def test_a_default_request_does_not_wait_for_a_reranking_build(served: tuple[str, FeatureStore, Run],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-ranking builds run one at a time; the default (augmented) ranking's data is not one of them."""
    base, _, _ = served
    _, started, release = _held_builds(monkeypatch)
    _, default_box, answered = _cheap_during_build(
        started, release, "re-ranking", lambda: _get(base, "/api/tracks/5/similar", ranking="reranked", k=K),
        lambda: _get(base, "/api/tracks/9/similar", k=K))
    assert answered, "a default request waited for a re-ranking build"
    assert default_box["r"].status_code == 200 and default_box["r"].json()["ranking"] == "augmented"


def test_the_first_radio_builds_the_augmentation_outside_the_lock(served: tuple[str, FeatureStore, Run],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The radio ranks as a track's neighbours do (augmented by default): its first request built the augmentation
    holding the lock."""
    base, store, run = served
    builds, started, release = _held_builds(monkeypatch, rerank_store, "build_augmentation")
    first_box, plain_box, answered = _cheap_during_build(
        started, release, "augmentation", lambda: _get(base, "/api/playlists/radio", seed=5, n=6),
        lambda: _get(base, "/api/tracks/9/similar", ranking="plain", k=K))
    assert answered, "a track's plain neighbours waited for the radio's augmentation build"
    assert plain_box["r"].status_code == 200 and first_box["r"].status_code == 200, first_box["r"].text
    assert builds == [N] and len(first_box["r"].json()["tracks"]) == 6
