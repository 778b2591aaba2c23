"""How much audio a run of `mess extract` will analyse: the progress bar's total, read beside the run.

Only the files the run will embed count: a resumed run over a library whose files are mostly embedded already
counted every file's seconds, so its bar stopped far short of its end and its ETA was many times too long. The headers
are read in a decode worker (:mod:`mess.extract.decode_worker`): a file that crashes or hangs its decoder cannot
end the run, and what libmpg123 prints about a damaged MP3 does not reach the terminal.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from mess.audio.windows import WindowPolicy
from mess.extract.child import Child, ChildDied
from mess.extract.pipeline import DECODE_WORKER, STOP_GRACE
from mess.extract.prepare import stamp_matches
from mess.extract.runs import run_key
from mess.models.base import ModelInfo
from mess.store import FeatureStore

PLAN_TIMEOUT = 120.0  # seconds, plus PER_FILE for each file, the headers may take before the bar goes without a total
PER_FILE = 0.05


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


def plan_in_background(paths: Sequence[Path], policy: WindowPolicy, on_total: Callable[[float], None]
                       ) -> Callable[[], None]:
    """Read the headers of ``paths`` in a decode worker on a thread of its own and call ``on_total`` with the audio
    seconds ``policy`` will analyse in them (files it cannot read count 0; no call when the worker died or took too
    long). Returns the function that stops it: no call after it returns, and a worker still reading is killed."""
    child = Child(DECODE_WORKER)
    stopped = threading.Event()
    lock = threading.Lock()

    def read() -> None:
        seconds = 0.0
        if paths:
            try:
                reply = child.call(("plan", list(paths), policy), PLAN_TIMEOUT + PER_FILE * len(paths))
            except ChildDied:
                return
            finally:
                child.stop(grace=STOP_GRACE)
            if not (isinstance(reply, tuple) and reply[0] == "ok"):
                return
            seconds = float(reply[1])
        with lock:
            if not stopped.is_set():
                on_total(seconds)

    def stop() -> None:
        with lock:
            stopped.set()
        child.kill()

    threading.Thread(target=read, name="mess-plan", daemon=True).start()
    return stop
