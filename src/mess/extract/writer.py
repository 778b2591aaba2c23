"""Commits embedded tracks on a background thread, so the model never waits on the store.

Each commit takes every track embedded since the previous one began: while the store
fsyncs one group, the next group is being embedded, and commits grow by themselves when
the model outpaces the disk (a GPU) and stay small when it does not (a CPU), so an
interrupted run loses at most the tracks in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from mess.store import FeatureStore, Run, TrackVectors

Committed = Callable[[int, float], None]  # (tracks, audio seconds) just committed


class BackgroundWriter:
    """A thread writing ``store.write_vectors(run, ...)`` for what :meth:`submit` hands it.

    At most ``max_pending`` tracks wait in the queue, besides those being committed
    (``submit`` blocks beyond that). A write that fails (a full disk, a damaged store), or an
    ``on_commit`` that raises, ends the writer: the next ``submit`` or :meth:`close` raises
    its error; what was committed before stays.
    """

    def __init__(self, store: FeatureStore, run: Run, on_commit: Committed, max_pending: int = 1024) -> None:
        self.store, self.run, self.on_commit, self.max_pending = store, run, on_commit, max_pending
        self._queue: list[tuple[Sequence[TrackVectors], float]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="mess-store-writer", daemon=True)
        self._thread.start()

    def submit(self, vectors: Sequence[TrackVectors], audio_seconds: float) -> None:
        """Queue one group of tracks for the next commit."""
        with self._cond:
            while self._error is None and sum(len(v) for v, _ in self._queue) >= self.max_pending:
                self._cond.wait()
            self._raise()
            self._queue.append((vectors, audio_seconds))
            self._cond.notify_all()

    def close(self) -> None:
        """Commit everything queued, stop the thread, and raise a write's error if one failed."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                groups, self._queue = self._queue, []
            try:
                self.store.write_vectors(self.run, [t for vectors, _ in groups for t in vectors])
                self.on_commit(sum(len(v) for v, _ in groups), sum(s for _, s in groups))
            except BaseException as exc:  # noqa: BLE001 -- handed to the submitting thread
                with self._cond:
                    self._error = exc
                    self._queue.clear()
                    self._cond.notify_all()
                return
            with self._cond:
                self._cond.notify_all()
