"""One FeatureStore used from several threads at once, as `mess extract` uses it (decoding threads, the writer)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mess.audio.windows import WindowPolicy
from mess.extract.runs import run_key
from mess.models.base import ModelInfo
from mess.store import FeatureStore, TrackVectors

INFO = ModelInfo("toy", "rev1", 16000, ("a", "b"), (4, 3))
SECONDS = 3.0


def _vectors(content_hash: str, n_segments: int, seed: int) -> TrackVectors:
    rng = np.random.default_rng(seed)
    segments = [rng.standard_normal((n_segments, d)).astype(np.float32) for d in INFO.layer_dims]
    return TrackVectors(content_hash, [s.mean(axis=0) for s in segments], segments, list(range(n_segments)))


def _upsert(store: FeatureStore, name: str, content_hash: str) -> int:
    tags: dict[str, str | None] = {"artist": "x", "album": None, "title": name, "genre": None, "composer": None}
    return store.upsert_track(Path(f"/music/{name}.wav"), content_hash, 10, 1.0, {"duration": 3.0}, tags, stamp=name)


def test_decoding_threads_and_the_writer_share_one_store(tmp_path: Path) -> None:
    """Reads and writes from several threads of one process neither fail nor answer wrongly. Unserialised, they did
    on Python 3.12+, whose sqlite3 can hand two threads running the same SQL one cached statement: InterfaceError
    'bad parameter or other API misuse' (files failed at random in a 16-thread extraction) or another read's rows."""
    store = FeatureStore(tmp_path)
    run = store.ensure_run(run_key(INFO, WindowPolicy()))
    stop = threading.Event()
    errors: list[BaseException] = []
    written: list[str] = []  # content hashes whose vectors are committed, in order

    def looped(step: Callable[[int], None]) -> Callable[[], None]:
        def loop() -> None:
            i = 0
            try:
                while not stop.is_set():
                    step(i)
                    i += 1
            except BaseException as exc:  # noqa: BLE001 -- reported by the test thread
                errors.append(exc)
                stop.set()
        return loop

    def write(i: int) -> None:  # the background writer: new tracks' vectors, a few per commit
        hashes = [f"w{i}-{k}" for k in range(3)]
        for h in hashes:
            _upsert(store, h, h)
        store.write_vectors(run, [_vectors(h, 2, n) for n, h in enumerate(hashes)])
        written.extend(hashes)

    def decode(worker: int) -> Callable[[int], None]:  # a decoding thread: what pipeline._prepared's work() calls
        def step(i: int) -> None:
            name = f"d{worker}-{i % 20}"
            store.known_file(Path(f"/music/{name}.wav"))
            _upsert(store, name, name)
            assert not store.has_vectors(run, name)
            store.set_duration(name, 2.5)
        return step

    def read(i: int) -> None:  # lookups alone, checked against what is committed
        seen = written[-30:]
        for h in seen:
            known = store.known_file(Path(f"/music/{h}.wav"))
            assert known is not None and known[0] == h, (h, known)
            assert store.has_vectors(run, h), h
        assert store.known_file(Path(f"/music/none{i}.wav")) is None
        assert not store.has_vectors(run, f"none{i}")
        assert store.catalog_rows(run)[0] >= len(seen)

    threads = [threading.Thread(target=looped(write))]
    threads += [threading.Thread(target=looped(decode(w))) for w in range(2)]
    threads += [threading.Thread(target=looped(read)) for _ in range(2)]
    for t in threads:
        t.start()
    stop.wait(SECONDS)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors, [f"{type(e).__name__}: {e}" for e in errors]
    assert written
    assert store.catalog_rows(run)[0] == len(written)
    assert all(store.has_vectors(run, h) for h in written)
    store.close()



def test_a_thread_does_not_read_inside_another_threads_transaction(tmp_path: Path) -> None:
    """A read waits for the transaction another thread holds open on the shared connection (here a snapshot)
    instead of answering from inside it, where it would miss what was committed before it asked."""
    store, other = FeatureStore(tmp_path), FeatureStore(tmp_path)  # other: another connection, as another process
    run = store.ensure_run(run_key(INFO, WindowPolicy()))
    _upsert(other, "a", "a")
    answers: list[bool] = []
    reader = threading.Thread(target=lambda: answers.append(store.has_vectors(run, "a")))
    with store.snapshot():
        assert not store.has_vectors(run, "a")  # the snapshot's catalog version is taken here
        other.write_vectors(run, [_vectors("a", 2, 0)])
        reader.start()
        reader.join(timeout=0.5)
        waited = not answers
    reader.join(timeout=60)
    assert waited and answers == [True], answers
    store.close()
    other.close()
