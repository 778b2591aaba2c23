"""How much audio a run of `mess extract` will analyse: the progress bar's total, read beside the run.

Only the files the run will embed count: a resumed run over a library whose files are mostly embedded already
counted every file's seconds, so its bar stopped far short of its end and its ETA was many times too long. The headers
are read by the run's own decode workers (:mod:`mess.extract.decode_worker`), a batch at a time between files (a
process started for them alone cost every run one more start): a file that crashes or hangs a decoder cannot end the
run, and what libmpg123 prints about a damaged MP3 does not reach the terminal.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from queue import SimpleQueue

from mess.audio.windows import WindowPolicy
from mess.constants import stamp_matches
from mess.extract.child import Child, ChildDied
from mess.extract.runs import run_key
from mess.models.base import ModelInfo
from mess.store import FeatureStore

PLAN_TIMEOUT = 120.0  # seconds, plus PER_FILE per file, a batch of headers may take before the bar goes without a total
PER_FILE = 0.05
PLAN_BATCH = 256  # headers read per request: a fraction of a second that a decoder spends between two files


def to_embed(store: FeatureStore, paths: Sequence[Path], info: ModelInfo, policy: WindowPolicy) -> list[Path]:
    """``paths`` less the files the run will skip: unchanged (by the catalog's stamp) and embedded in this run."""
    key = run_key(info, policy)
    run = next((r for r in store.runs() if (r.model, r.revision, r.policy) == (key.model, key.revision, key.policy)),
               None)
    if run is None:
        return list(paths)
    todo = []
    for path in paths:
        known = store.known_file(path)
        try:
            done = known is not None and stamp_matches(path.stat(), known[1]) and store.has_vectors(run, known[0])
        except OSError:  # gone or unreadable: the run says so
            done = False
        if not done:
            todo.append(path)
    return todo


def plan_in_background(decoders: SimpleQueue[Child], paths: Sequence[Path], policy: WindowPolicy,
                       on_total: Callable[[float], None]) -> Callable[[], None]:
    """Read the headers of ``paths`` on a thread of its own and call ``on_total`` with the audio seconds ``policy``
    will analyse in them (files it cannot read count 0; no call when a worker died or took too long).

    Each batch of :data:`PLAN_BATCH` headers is read by a decode worker taken from ``decoders`` and put back after;
    the first one is taken at once, so the first batch is read before the workers' first files. Returns the function
    that stops it: no call after it returns, a worker still reading is killed, and every worker is back.
    """
    stopped = threading.Event()
    lock = threading.Lock()
    reading: list[Child] = []
    batches = [list(paths[i:i + PLAN_BATCH]) for i in range(0, len(paths), PLAN_BATCH)]
    taken = [decoders.get()] if batches else []  # the first batch's worker

    def read() -> None:
        seconds = 0.0
        for batch in batches:
            child = taken.pop() if taken else decoders.get()
            with lock:
                if stopped.is_set():
                    decoders.put(child)
                    return
                reading.append(child)
            try:
                reply = child.call(("plan", batch, policy), PLAN_TIMEOUT + PER_FILE * len(batch))
            except (ChildDied, OSError):  # OSError: no decoder could be started; the run itself says why
                return
            finally:
                with lock:
                    reading.remove(child)
                decoders.put(child)
            if not (isinstance(reply, tuple) and reply[0] == "ok"):
                return
            seconds += float(reply[1])
        with lock:
            if not stopped.is_set():
                on_total(seconds)

    thread = threading.Thread(target=read, name="mess-plan", daemon=True)
    thread.start()

    def stop() -> None:
        with lock:
            stopped.set()
            for child in reading:
                child.kill()
        thread.join()

    return stop
