"""BackgroundWriter on a real FeatureStore: what it commits, how commits batch, how a failed write surfaces.

A commit is made slow by a real means: another process holds the store's write lock, so the writer's commit
waits for it (and says so through the store's ``on_wait``) until the test lets that process go.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from test_store_concurrency import INFO, _upsert, _vectors

from mess.audio.windows import WindowPolicy
from mess.extract.runs import run_key
from mess.extract.writer import BackgroundWriter
from mess.store import FeatureStore, TrackVectors

HOLDER = ("import sys; from pathlib import Path; from mess.store.lock import StoreLock\n"
          "with StoreLock(Path(sys.argv[1])).hold('a slow writer'):\n"
          "    print('held', flush=True); sys.stdin.readline()\n")

# A child process whose disk fills up (a file-size limit, so no mount is needed) after the writer's first commit.
FULL_DISK = """
import json, resource, signal, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from test_extract_writer import INFO, _catalogue, _group, _refusals
from mess.audio.windows import WindowPolicy
from mess.extract.runs import run_key
from mess.extract.writer import BackgroundWriter
from mess.store import FeatureStore, StoreError

root = Path(sys.argv[1])
store = FeatureStore(root)
run = store.ensure_run(run_key(INFO, WindowPolicy()))
first, small = _group("first", 2, 3), _group("small", 1, 3)
_catalogue(store, [first, small, _group("big", 1, 1)])
commits = []
writer = BackgroundWriter(store, run, lambda n, s: commits.append([n, s]))
writer.submit(first, 1.0)
while not commits:
    time.sleep(0.01)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of a signal
largest = max(p.stat().st_size for p in root.rglob("*") if p.is_file())
resource.setrlimit(resource.RLIMIT_FSIZE, (largest + 1024, largest + 1024))
segments = (largest + 1024) // (2 * INFO.layer_dims[0]) + 1  # its first segment file grows past the limit
big = _group("big", 1, segments)
writer.submit(big, 1.0)
said = _refusals(writer, small, StoreError)
last = BackgroundWriter(store, run, lambda n, s: commits.append([n, s]))
last.submit(big, 1.0)
try:
    last.close()  # the failed commit is the last one: only close can tell
except StoreError as exc:
    said["last close"] = str(exc)
print(json.dumps({"said": said, "commits": commits, "segments": segments}))
"""


def _group(name: str, size: int, n_segments: int) -> list[TrackVectors]:
    """``size`` tracks' vectors, the same for the same arguments (the content hash is the track's name)."""
    return [_vectors(f"{name}{k}", n_segments, seed=sum(map(ord, name)) * 100 + k) for k in range(size)]


def _refusals(writer: BackgroundWriter, group: list[TrackVectors], error: type[Exception]) -> dict[str, str]:
    """Submit ``group`` until the writer refuses with ``error`` (30 s at most), then close it: the messages said,
    under "submit" and "close" (a key is missing where that call did not raise)."""
    said = {}
    deadline = time.monotonic() + 30
    while "submit" not in said and time.monotonic() < deadline:
        try:
            writer.submit(group, 1.0)
        except error as exc:
            said["submit"] = str(exc)
        time.sleep(0.01)
    try:
        writer.close()
    except error as exc:
        said["close"] = str(exc)
    return said


def _catalogue(store: FeatureStore, groups: list[list[TrackVectors]]) -> None:
    """Add the tracks of ``groups`` to the catalog, as inspecting their files does before they are embedded."""
    for group in groups:
        for item in group:
            _upsert(store, item.content_hash, item.content_hash)


def _as_stored(item: TrackVectors) -> list[np.ndarray]:
    """Per layer: the track vector, then the segment vectors, at the store's float16 precision."""
    out = []
    for layer, segments in zip(item.layers, item.segments, strict=True):
        out += [np.asarray(layer, np.float16).astype(np.float32), np.asarray(segments, np.float16).astype(np.float32)]
    return out


def _stored(root: Path) -> dict[str, list[np.ndarray]]:
    """content hash -> :func:`_as_stored` arrays, read back from the store at ``root`` by a fresh reader."""
    store = FeatureStore(root, readonly=True)
    try:
        run = store.run(INFO.name)
        hashes = {t.id: t.content_hash for t in store.tracks(run)}
        out: dict[str, list[np.ndarray]] = {h: [] for h in hashes.values()}
        for layer in range(len(run.layer_names)):
            ids, mat = store.layer_matrix(run, layer)
            seg_ids, _, segs = store.segment_matrix(run, layer)
            for track_id, row in zip(ids, mat, strict=True):
                out[hashes[int(track_id)]] += [row, segs[seg_ids == track_id]]
        return out
    finally:
        store.close()


def _assert_stored(root: Path, groups: list[list[TrackVectors]]) -> None:
    want = {item.content_hash: _as_stored(item) for group in groups for item in group}
    got = _stored(root)
    assert sorted(got) == sorted(want)
    for content_hash, arrays in want.items():
        for a, b in zip(got[content_hash], arrays, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=content_hash)


@contextmanager
def _lock_held(root: Path) -> Iterator[threading.Event]:
    """Another process holds the store's write lock until the yielded event is set."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdin is not None and holder.stdout is not None
    release = threading.Event()

    def let_go() -> None:
        release.wait()
        holder.stdin.close()  # its readline returns: it exits, and the OS drops its lock

    waiter = threading.Thread(target=let_go)
    waiter.start()
    try:
        assert holder.stdout.readline().strip() == "held"
        yield release
    finally:
        release.set()
        waiter.join(timeout=60)
        assert holder.wait(timeout=60) == 0


def _writer(root: Path, groups: list[list[TrackVectors]], **kwargs: int
            ) -> tuple[FeatureStore, BackgroundWriter, threading.Event, list[tuple[int, float]]]:
    """A store at ``root`` holding the tracks of ``groups`` (not yet their vectors), a writer on it, an event set
    when one of its commits has to wait for the write lock, and the (tracks, seconds) of each commit."""
    waiting = threading.Event()
    store = FeatureStore(root, on_wait=lambda _: waiting.set())
    run = store.ensure_run(run_key(INFO, WindowPolicy()))
    _catalogue(store, groups)
    commits: list[tuple[int, float]] = []
    return store, BackgroundWriter(store, run, lambda n, s: commits.append((n, s)), **kwargs), waiting, commits


def test_close_commits_what_came_while_a_commit_waited_all_in_one_more_commit(tmp_path: Path) -> None:
    """The store slower than the producer: the first commit waits for the lock while four more groups come; close
    waits for that commit and commits the four together, so every track is stored, as submitted, in two commits."""
    groups = [_group(f"g{i}", 2 + i % 2, 3 + i) for i in range(5)]
    store, writer, waiting, commits = _writer(tmp_path, groups)
    seconds = [1.5 * (i + 1) for i in range(len(groups))]
    with _lock_held(tmp_path) as release:
        writer.submit(groups[0], seconds[0])
        assert waiting.wait(timeout=60)  # the writer holds the first group, waiting for the other process
        for group, s in zip(groups[1:], seconds[1:], strict=True):
            writer.submit(group, s)
        assert commits == []
        threading.Timer(0.3, release.set).start()
        writer.close()  # returns once all is committed, after the other process let go
    assert commits == [(len(groups[0]), seconds[0]), (sum(map(len, groups[1:])), sum(seconds[1:]))]
    _assert_stored(tmp_path, groups)
    store.close()


def test_submit_waits_while_max_pending_tracks_wait_and_later_groups_batch(tmp_path: Path) -> None:
    """With ``max_pending`` tracks queued behind a slow commit, a further submit waits until the writer takes them;
    the queued groups are committed together and the late one after them."""
    groups = [_group(f"p{i}", 2, 2) for i in range(4)]
    store, writer, waiting, commits = _writer(tmp_path, groups, max_pending=4)
    with _lock_held(tmp_path) as release:
        writer.submit(groups[0], 1.0)
        assert waiting.wait(timeout=60)
        writer.submit(groups[1], 1.0)
        writer.submit(groups[2], 1.0)  # 4 tracks queued
        late = threading.Thread(target=writer.submit, args=(groups[3], 1.0))
        late.start()
        late.join(timeout=1.0)
        assert late.is_alive() and commits == []  # held back while the lock is held
        release.set()
        late.join(timeout=60)
        assert not late.is_alive()
    writer.close()
    assert commits == [(2, 1.0), (4, 2.0), (2, 1.0)]
    _assert_stored(tmp_path, groups)
    store.close()


def test_a_write_the_disk_refuses_surfaces_at_the_next_submit_and_at_close_and_keeps_what_was_committed(
        tmp_path: Path) -> None:
    """A full disk (a file-size limit in a child process) fails the second commit: the next submit and close raise
    the store's one-line error naming the cause, a writer whose last commit fails raises it at close, and the
    first commit's vectors stay whole: `mess check` finds nothing wrong and a later writer adds the rest."""
    root = tmp_path / "store"
    child = subprocess.run([sys.executable, "-c", FULL_DISK, str(root), str(Path(__file__).parent)],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    out = json.loads(child.stdout)
    assert sorted(out["said"]) == ["close", "last close", "submit"], out
    for message in out["said"].values():
        assert message.startswith(f"cannot write to the store at {root} ({os.strerror(errno.EFBIG)}; this process "
                                  "may write files of at most "), message  # the limit named (ulimit -f)
        assert "what was written before is kept" in message and "\n" not in message, message
    assert out["commits"] == [[2, 1.0]]
    first, big = _group("first", 2, 3), _group("big", 1, out["segments"])
    _assert_stored(root, [first])
    checked = subprocess.run([sys.executable, "-m", "mess.cli", "check", "--store", str(root)], capture_output=True,
                             text=True, timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    store, writer, _, commits = _writer(root, [])
    writer.submit(big, 1.0)
    writer.close()
    assert commits == [(1, 1.0)]
    _assert_stored(root, [first, big])
    store.close()


def test_an_on_commit_that_raises_surfaces_at_the_next_submit_and_at_close(tmp_path: Path) -> None:
    """The callback runs on the writer's thread: its error is handed to the submitting thread, as a failed write's
    is, instead of ending the thread without a word (later groups would then be dropped by a quiet close)."""
    first, later = _group("c", 1, 2), _group("d", 1, 2)
    store = FeatureStore(tmp_path)
    run = store.ensure_run(run_key(INFO, WindowPolicy()))
    _catalogue(store, [first, later])

    entered = threading.Event()

    def on_commit(tracks: int, seconds: float) -> None:
        entered.set()
        raise RuntimeError(f"progress display failed after {tracks} track(s)")

    writer = BackgroundWriter(store, run, on_commit, max_pending=10**6)  # a dead writer must not block submit here
    writer.submit(first, 1.0)
    assert entered.wait(timeout=60)  # the first group is committed alone
    assert _refusals(writer, later, RuntimeError) == {"submit": "progress display failed after 1 track(s)",
                    "close": "progress display failed after 1 track(s)"}
    _assert_stored(tmp_path, [first])  # the commit before the callback stays
    store.close()


def test_close_returns_for_a_writer_idle_since_its_last_commit_or_never_given_a_track(tmp_path: Path) -> None:
    """The end of every run: the last commit is done and the thread waits for more; close wakes it and returns."""
    groups = [_group("idle", 2, 2)]
    store, writer, _, commits = _writer(tmp_path, groups)
    writer.submit(groups[0], 2.0)
    deadline = time.monotonic() + 60
    while not commits and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # the thread is back waiting for a group
    never = BackgroundWriter(store, store.run(INFO.name), lambda n, s: commits.append((n, s)))
    for each in (writer, never):
        closing = threading.Thread(target=each.close)
        closing.start()
        closing.join(timeout=30)
        assert not closing.is_alive()
    assert commits == [(2, 2.0)]
    _assert_stored(tmp_path, groups)
    store.close()


def test_a_process_that_ends_without_closing_its_writer_still_exits(tmp_path: Path) -> None:
    """An error between a run's start and its close (the pipeline closes in a finally, a caller's code may not)
    must not leave the process waiting at exit for the writer's thread."""
    code = ("import sys; sys.path.insert(0, sys.argv[2])\n"
            "from pathlib import Path\n"
            "from test_extract_writer import INFO\n"
            "from mess.audio.windows import WindowPolicy\n"
            "from mess.extract.runs import run_key\n"
            "from mess.extract.writer import BackgroundWriter\n"
            "from mess.store import FeatureStore\n"
            "store = FeatureStore(Path(sys.argv[1]))\n"
            "writer = BackgroundWriter(store, store.ensure_run(run_key(INFO, WindowPolicy())), lambda n, s: None)\n"
            "print('started', flush=True)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "store"), str(Path(__file__).parent)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["started"], out.stderr


def test_a_submit_waiting_for_room_is_woken_by_a_failed_commit_and_raises_its_error(tmp_path: Path) -> None:
    """max_pending tracks queued, a further submit waits for the writer to take them; the commit before fails
    instead: the waiting submit must raise that error, not wait for room that never comes."""
    groups = [_group(f"w{i}", 2, 1) for i in range(3)]
    store = FeatureStore(tmp_path)
    run = store.ensure_run(run_key(INFO, WindowPolicy()))
    _catalogue(store, groups)
    entered, fail = threading.Event(), threading.Event()

    def on_commit(tracks: int, seconds: float) -> None:
        entered.set()
        assert fail.wait(timeout=60)
        raise RuntimeError("progress display failed")

    writer = BackgroundWriter(store, run, on_commit, max_pending=2)
    writer.submit(groups[0], 1.0)
    assert entered.wait(timeout=60)  # the first commit is in its callback
    writer.submit(groups[1], 1.0)  # 2 tracks queued: the next submit waits
    said: list[str] = []

    def third() -> None:
        try:
            writer.submit(groups[2], 1.0)
        except RuntimeError as exc:
            said.append(str(exc))

    waiting = threading.Thread(target=third)
    waiting.start()
    waiting.join(timeout=0.5)
    assert waiting.is_alive()  # waiting for room
    fail.set()
    waiting.join(timeout=30)
    assert not waiting.is_alive() and said == ["progress display failed"]
    _assert_stored(tmp_path, [groups[0]])
    store.close()
