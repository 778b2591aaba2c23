"""The one memo of values derived from a feature store, valid while the store's catalog is unchanged.

Entries are keyed by (scope, version, key): the scope names one open store (its folder and
connection), the version is that store's :meth:`~mess.store.FeatureStore.version` token, which
moves with every committed write, by this process or another. So a write invalidates every
entry derived from the store; storing an entry under a new version drops the scope's entries
under older ones. At most ``size`` entries are kept (least recently used out first).

One lock guards the table, never a computation: a value is computed outside it, once per
key. Threads asking for a key another thread is computing wait for that computation and get
its value (or its exception), except a thread holding a store's connection lock (:func:`connection_lock`): that
computation may need the lock, so waiting could deadlock; such a thread computes the value itself. A computation
asking for its own key raises RuntimeError.
:meth:`Memo.forget` never waits for the lock: it runs as a store's garbage-collection finaliser,
which can fire at any allocation, also inside the memo's own locked code.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TypeVar, cast

T = TypeVar("T")
Key = tuple[Hashable, Hashable, Hashable]


_CONNECTIONS: weakref.WeakSet = weakref.WeakSet()  # every store connection's lock (see connection_lock)


def connection_lock() -> threading.RLock:
    """A store connection's lock: a plain re-entrant lock, so that ``with`` takes it in one step (a Python wrapper
    that counted its holds could be interrupted by Ctrl-C or SIGTERM after taking it and before its ``with`` began,
    and never release it: the interrupted command then hung for good), registered so the memo sees a thread holding
    one (:func:`_holds_connection`)."""
    lock = threading.RLock()
    _CONNECTIONS.add(lock)
    return lock


def _holds_connection() -> bool:
    """Whether this thread holds a store connection's lock."""
    return any(lock._is_owned() for lock in list(_CONNECTIONS))


@dataclass
class _Pending:
    """A computation in progress: who computes it and where its outcome arrives."""

    thread: int
    outcome: Future = field(default_factory=Future)


class Memo:
    """A bounded, thread-safe LRU memo keyed by (scope, version, key)."""

    def __init__(self, size: int) -> None:
        """A memo holding at most ``size`` values."""
        if size < 1:
            raise ValueError(f"a memo holds at least 1 value, not {size}")
        self.size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[Key, object] = OrderedDict()
        self._pending: dict[Key, _Pending] = {}
        self._forgotten: deque[Hashable] = deque()  # scopes to drop, queued while the lock was busy
        self._gone: set[Hashable] = set()  # every scope forgotten: a value computed for one after that is not kept

    def __len__(self) -> int:
        """How many values are held."""
        return len(self._entries)

    def get(self, scope: Hashable, version: Hashable, key: Hashable, make: Callable[[], T]) -> T:
        """The value of ``key`` for ``scope`` at ``version``: ``make()``, computed once and kept.

        Values are shared by every caller: return immutable data, or data nobody modifies.
        """
        full = (scope, version, key)
        with self._lock:
            if full in self._entries:
                self._entries.move_to_end(full)
                return cast(T, self._entries[full])
            pending = self._pending.get(full)
            if pending is None:
                pending = self._pending[full] = _Pending(threading.get_ident())
                owner = True
            else:
                owner = False
        if not owner:
            if pending.thread == threading.get_ident():
                raise RuntimeError(f"the memo value {key!r} is needed to compute itself")
            if _holds_connection():  # the other thread's computation may wait for a lock this one holds
                return make()
            return cast(T, pending.outcome.result())
        try:
            value = make()
        except BaseException as exc:
            with self._lock:
                del self._pending[full]
            pending.outcome.set_exception(exc)
            raise
        with self._lock:
            del self._pending[full]
            self._keep(full, value)
        pending.outcome.set_result(value)
        return value

    def forget(self, scope: Hashable) -> None:
        """Drop every value of ``scope`` (a store being closed or collected), at once or, when the lock is busy
        (perhaps held by this very thread, if a finaliser calls this), at the end of the next store of a value; values
        computed for it later are not kept.

        A blocking acquire deadlocked: a store's finaliser ran inside :meth:`_keep` on the thread holding the lock.
        """
        self._gone.add(scope)
        self._forgotten.append(scope)
        if self._lock.acquire(blocking=False):
            try:
                self._drop_forgotten()
            finally:
                self._lock.release()

    def _drop_forgotten(self) -> None:
        """Drop the values of every queued scope (lock held); scopes queued meanwhile are dropped too."""
        while self._forgotten:
            scope = self._forgotten.popleft()
            for full in [k for k in self._entries if k[0] == scope]:
                del self._entries[full]

    def _keep(self, full: Key, value: object) -> None:
        """Store a value (lock held), dropping its scope's older versions, the least recently used, and the
        scopes forgotten meanwhile."""
        scope, version, _ = full
        if scope in self._gone:  # its store was closed while the value was computed: no one asks for it again
            self._drop_forgotten()
            return
        for old in [k for k in self._entries if k[0] == scope and k[1] != version]:
            del self._entries[old]
        self._entries[full] = value
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        self._drop_forgotten()


MEMO = Memo(64)
