"""Warm librosa's numba cache once, under a lock, before any concurrent use.

numba compiles each cached function on first call and writes the code and an index
file into ``NUMBA_CACHE_DIR`` (set by ``mess/__init__``). Two processes compiling
the same function at once can leave files that disagree, and then every process that
loads them crashes. :func:`ensure_warm` runs a caller's warm-up (the librosa calls the
caller makes, on a short clip) in one process at a time and records that it ran, so
later processes only read a complete cache.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

_done: set[str] = set()
_guard = threading.Lock()


def cache_dir() -> Path:
    """The numba cache folder in use."""
    return Path(os.environ["NUMBA_CACHE_DIR"])


def ensure_warm(key: str, warm: Callable[[], None]) -> None:
    """Run ``warm()`` unless a process already did for this ``key`` and these library versions."""
    if key in _done:
        return
    with _guard:
        if key in _done:
            return
        import librosa
        import numba

        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{key}-librosa{librosa.__version__}-numba{numba.__version__}"
        marker = folder / f"{stem}.done"
        if not marker.exists():
            with FileLock(folder / f"{stem}.lock", thread_local=False, preserve_lock_file=True):
                if not marker.exists():
                    warm()
                    marker.touch()
        _done.add(key)
