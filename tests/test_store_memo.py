"""The one memo: keyed on the store's version token, locked, bounded, and invalidated by any writer."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mess.search.index import open_index
from mess.search.vectors import VectorSpec, load_vectors, track_by_id
from mess.store import FeatureStore, Run, RunKey, TrackVectors
from mess.store.memo import Memo

KEY = RunKey("toy", "r1", '{"window_seconds": 30.0}', 16000, ("a", "b"), (8, 4))
SRC = Path(__file__).resolve().parents[1] / "src"

# a second process (a `mess extract` elsewhere) adding track number N with vectors
ADD_TRACK = """
import sys
from pathlib import Path
import numpy as np
from mess.store import FeatureStore, RunKey, TrackVectors
key = RunKey("toy", "r1", '{{"window_seconds": 30.0}}', 16000, ("a", "b"), (8, 4))
store = FeatureStore(Path({root!r}))
i = {i}
store.upsert_track(Path(f"/music/{{i}}.wav"), f"h{{i}}", 1, 0.0, {{"duration": 1.0}},
                   {{"artist": "x", "album": None, "title": None, "genre": None, "composer": None}})
layers = [np.full(d, float(i), dtype=np.float32) + np.arange(d, dtype=np.float32) for d in key.layer_dims]
store.write_vectors(store.ensure_run(key), [TrackVectors(f"h{{i}}", layers, [v[None] for v in layers], [0.0])])
store.close()
"""


def _add_elsewhere(root: Path, i: int) -> None:
    """Add a track from another process, as a concurrent `mess extract` would."""
    code = ADD_TRACK.format(root=str(root), i=i)
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=120)


@pytest.fixture
def toy(tmp_path: Path) -> tuple[FeatureStore, Run]:
    store = FeatureStore(tmp_path / "store")
    run = store.ensure_run(KEY)
    rng = np.random.default_rng(0)
    for i in range(6):
        store.upsert_track(Path(f"/music/{i}.wav"), f"h{i}", 1, 0.0, {"duration": 1.0},
                           {"artist": "x", "album": None, "title": None, "genre": None, "composer": None})
        layers = [rng.standard_normal(d).astype(np.float32) for d in KEY.layer_dims]
        store.write_vectors(run, [TrackVectors(f"h{i}", layers, [v[None] for v in layers], [0.0])])
    return store, run


def test_threads_asking_for_one_key_get_one_value_computed_once() -> None:
    memo, calls, start = Memo(4), [], threading.Barrier(8)
    results: list[object] = [None] * 8

    def make() -> list[int]:
        calls.append(1)
        time.sleep(0.2)  # long enough for every thread to ask while it runs
        return [42]

    def ask(n: int) -> None:
        start.wait()
        results[n] = memo.get("store", 1, "key", make)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and all(r is results[0] for r in results) and results[0] == [42]


def test_a_failed_computation_reaches_its_waiters_and_is_not_kept() -> None:
    memo, start = Memo(4), threading.Barrier(3)
    seen: list[BaseException] = []

    def fail() -> None:
        time.sleep(0.2)
        raise ValueError("broken file")

    def ask() -> None:
        start.wait()
        try:
            memo.get("store", 1, "key", fail)
        except ValueError as exc:
            seen.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [str(e) for e in seen] == ["broken file"] * 3
    assert memo.get("store", 1, "key", lambda: "fixed") == "fixed" and len(memo) == 1


def test_a_value_needing_itself_raises_instead_of_waiting_forever() -> None:
    memo = Memo(4)
    with pytest.raises(RuntimeError, match="needed to compute itself"):
        memo.get("s", 1, "loop", lambda: memo.get("s", 1, "loop", lambda: 0))
    assert memo.get("s", 1, "loop", lambda: 1) == 1  # nothing left pending


def test_a_store_finalised_inside_the_memo_is_forgotten_without_a_deadlock() -> None:
    """A store's finaliser forgets its scope, and it can fire wherever an object is freed: here, inside the memo's
    locked code, when a new version drops the old value that held the last reference. The forget used to wait for
    the lock its own thread held: the process hung (seen once in a test run, as a garbage collection inside it)."""
    code = (
        "import weakref\n"
        "from mess.store.memo import Memo\n"
        "memo = Memo(8)\n"
        "class Store: pass\n"
        "def opened():\n"
        "    store = Store()\n"
        "    weakref.finalize(store, memo.forget, 'closed')\n"
        "    return store\n"
        "memo.get('closed', 1, 'x', lambda: 'value of the store being finalised')\n"
        "memo.get('a', 1, 'store', opened)\n"  # the memo holds the only reference
        "memo.get('a', 2, 'y', lambda: 2)\n"  # drops version 1 inside the lock: the finaliser runs there
        "print(sorted(k[0] for k in memo._entries), len(memo))\n"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the memo deadlocked")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['a']", "1"]  # 'closed' was forgotten in the same call


def test_the_memo_is_bounded_least_recently_used_out_first() -> None:
    memo = Memo(3)
    for key in "abc":
        memo.get("s", 1, key, lambda k=key: k)
    memo.get("s", 1, "a", lambda: "recomputed")  # a hit: 'a' is now the most recently used
    memo.get("s", 1, "d", lambda: "d")
    assert len(memo) == 3
    assert memo.get("s", 1, "a", lambda: "recomputed") == "a"
    assert memo.get("s", 1, "b", lambda: "recomputed") == "recomputed"  # 'b' was the one dropped


def test_a_memo_of_one_value_keeps_the_latest_and_none_smaller_is_made() -> None:
    memo = Memo(1)
    memo.get("s", 1, "a", lambda: "a")
    memo.get("s", 1, "b", lambda: "b")
    assert len(memo) == 1 and memo.get("s", 1, "b", lambda: "recomputed") == "b"
    for size in (0, -1):
        with pytest.raises(ValueError, match=f"a memo holds at least 1 value, not {size}"):
            Memo(size)


def test_a_forgotten_store_loses_its_values_at_once_and_others_keep_theirs() -> None:
    memo = Memo(10)
    memo.get("closed", 1, "x", lambda: "old")
    memo.get("open", 1, "x", lambda: "kept")
    memo.forget("closed")
    assert len(memo) == 1
    assert memo.get("closed", 1, "x", lambda: "recomputed") == "recomputed"
    assert memo.get("open", 1, "x", lambda: "recomputed") == "kept"


def test_a_new_version_drops_the_older_versions_of_its_store_only() -> None:
    memo = Memo(10)
    memo.get("s", 1, "x", lambda: "old")
    memo.get("t", 1, "x", lambda: "other store")
    assert memo.get("s", 2, "x", lambda: "new") == "new" and len(memo) == 2
    assert memo.get("t", 1, "x", lambda: "recomputed") == "other store"
    assert memo.get("s", 1, "x", lambda: "recomputed") == "recomputed"


def test_a_write_by_another_process_invalidates_vectors_and_index(toy: tuple[FeatureStore, Run]) -> None:
    store, run = toy
    spec = VectorSpec("all")
    vs = load_vectors(store, run, spec)
    index = open_index(store, vs)
    assert load_vectors(store, run, spec) is vs and open_index(store, vs) is index  # unchanged: reused
    _add_elsewhere(store.root, 6)
    fresh = load_vectors(store, run, spec)
    assert fresh is not vs and 7 in fresh.ids and 7 not in vs.ids
    fresh_index = open_index(store, fresh)
    assert 7 in fresh_index.ids
    sims, ids = fresh_index.ann.search(fresh.unit()[fresh.rows(np.array([7]))], 1)
    assert ids[0, 0] == 7 and sims[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert 7 in track_by_id(store.tracks(run))


def test_stores_opened_before_and_after_a_write_never_share_values(toy: tuple[FeatureStore, Run]) -> None:
    """Version tokens (SQLite's data_version) are per connection: a fresh connection can repeat an old one's."""
    store, run = toy
    before = FeatureStore(store.root, readonly=True)
    assert len(before.tracks(run)) == 6 and len(load_vectors(before, run, VectorSpec("all")).ids) == 6
    _add_elsewhere(store.root, 6)
    after = FeatureStore(store.root, readonly=True)
    assert len(after.tracks(run)) == 7 and len(load_vectors(after, run, VectorSpec("all")).ids) == 7
    assert len(before.tracks(run)) == 7  # and the older connection sees the write too
    before.close()
    after.close()


def test_threads_loading_one_vector_set_get_the_same_correct_one(toy: tuple[FeatureStore, Run]) -> None:
    store, run = toy
    _add_elsewhere(store.root, 6)  # a version no thread has seen yet
    start, results = threading.Barrier(6), []

    def ask() -> None:
        start.wait()
        results.append(load_vectors(store, run, VectorSpec("layer", "b")))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids, mat = store.layer_matrix(run, "b")
    assert len(results) == 6 and all(r is results[0] for r in results)
    np.testing.assert_array_equal(results[0].ids, ids)
    np.testing.assert_array_equal(results[0].raw, mat)


def test_values_of_different_track_lists_at_one_version_are_kept_apart(toy: tuple[FeatureStore, Run]) -> None:
    store, run = toy
    other = store.ensure_run(RunKey("toy", "r1", '{"window_seconds": 5.0}', 16000, ("a", "b"), (8, 4)))
    layers = [np.ones(d, dtype=np.float32) for d in KEY.layer_dims]
    store.write_vectors(other, [TrackVectors("h0", layers, [v[None] for v in layers], [0.0])])
    assert set(track_by_id(store.tracks(run))) == {1, 2, 3, 4, 5, 6}
    assert set(track_by_id(store.tracks(other))) == {1}  # same catalog version, another list
    assert load_vectors(store, other, VectorSpec("all")).ids.tolist() == [1]
    assert len(load_vectors(store, run, VectorSpec("all")).ids) == 6


def test_a_value_computed_for_a_store_forgotten_meanwhile_is_not_kept() -> None:
    """A value whose computation outlived its store (the server builds re-ranking data without its lock; the store is
    reopened and the old one closed meanwhile) was kept under the forgotten store, which no one asks again: up to
    the memo's size of dead values (gigabytes of re-ranking data) until newer ones pushed it out."""
    memo = Memo(10)

    def outlived() -> str:
        memo.forget("closed")  # closed while this was computed
        return "orphan"

    assert memo.get("closed", 1, "x", outlived) == "orphan"  # the caller still gets it
    assert len(memo) == 0
    memo.get("open", 1, "x", lambda: "kept")
    assert len(memo) == 1
