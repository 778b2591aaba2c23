"""librosa's numba cache, safe under any number of concurrent mess processes.

librosa compiles with numba and caches the machine code (``cache=True``). numba writes
each function's code files and an index naming them into one folder; two processes
compiling the same function at once can leave an index that names the other's code,
and every later process that loads it crashes (SIGSEGV). So no two processes ever
write to the same folder here:

* :func:`use_private_cache` (run when numba is first imported, see :func:`before_numba`)
  points numba at a fresh folder of this process's own, seeded with hard links to (or, across
  file systems, copies of) the shared, complete cache in ``~/.cache/mess/numba/current``
  (``MESS_NUMBA_CACHE``): numba replaces its files, never writes into them, so the shared
  ones stay as they are; a process that never imports numba (a decoder) makes no folder;
* :func:`ensure_warm` runs a caller's warm-up (its librosa calls on a short clip) and,
  under one lock, publishes the process's folder as the new shared cache, atomically,
  so later processes start warm instead of compiling for seconds.

A user who sets ``NUMBA_CACHE_DIR`` keeps it (and its concurrency) as chosen; a folder
inherited from a parent mess process is not kept (child processes make their own).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

_PREFIX = "mess-numba-"  # + pid + "-" + random: a private cache folder in the temp folder
_OLD_FOLDER_SECONDS = 86400.0  # a folder named without its pid (before pids were part of names) is left this long
_done: set[str] = set()
_guard = threading.Lock()
_private: Path | None = None


def shared_dir() -> Path:
    """Where the shared, complete cache and its markers live."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mess" / "numba"
    return Path(os.environ.get("MESS_NUMBA_CACHE", default))


class _BeforeNumba:
    """An import hook (on ``sys.meta_path``) that calls :func:`use_private_cache` when numba is about to be imported;
    it finds no module itself (importlib.abc, its base class, costs 18 ms of imports)."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> None:
        """None for every module, having made the private cache first when ``fullname`` is numba."""
        if fullname == "numba" and _private is None:
            use_private_cache()


def before_numba() -> None:
    """Make this process's private cache when numba is first imported (at once if it is already): processes that
    never compile (decoders, most commands) skip the folder and its clean-up."""
    if "numba" in sys.modules:
        use_private_cache()
    else:
        sys.meta_path.insert(0, _BeforeNumba())


def use_private_cache() -> None:
    """Give this process its own numba cache folder, seeded from the shared one (no-op if NUMBA_CACHE_DIR is set)."""
    global _private
    inherited = os.environ.get("NUMBA_CACHE_DIR")
    if inherited is not None and inherited != os.environ.get("MESS_NUMBA_PRIVATE"):
        return  # the user's choice
    _sweep(Path(tempfile.gettempdir()))
    _private = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
    try:
        shutil.copytree(shared_dir() / "current", _private, dirs_exist_ok=True, copy_function=_link_or_copy)
    except (OSError, shutil.Error):
        pass  # nothing shared yet, or it was being replaced: this process compiles for itself
    os.environ["NUMBA_CACHE_DIR"] = os.environ["MESS_NUMBA_PRIVATE"] = str(_private)  # children make their own
    atexit.register(shutil.rmtree, _private, ignore_errors=True)


def _link_or_copy(source: str, target: str) -> None:
    """A hard link to ``source`` at ``target`` (a copy across file systems, or where links are refused)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _sweep(temp: Path) -> None:
    """Remove the private cache folders of processes that are gone: a process killed (SIGKILL, the OOM killer, a
    decoder stopped after a timeout) never runs its atexit clean-up, and each left 3 MB behind, for ever."""
    try:
        entries = [e for e in os.scandir(temp) if e.name.startswith(_PREFIX)]
    except OSError:
        return
    for entry in entries:
        pid = entry.name[len(_PREFIX):].split("-", 1)[0]
        try:
            if pid.isdigit():
                gone = not _running(int(pid))
            else:
                gone = time.time() - entry.stat().st_mtime > _OLD_FOLDER_SECONDS
        except OSError:
            continue
        if gone:
            shutil.rmtree(entry.path, ignore_errors=True)


def _running(pid: int) -> bool:
    """Whether a process ``pid`` exists (owned by anyone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: it exists
        pass
    return True


def ensure_warm(key: str, warm: Callable[[], object]) -> None:
    """Run ``warm()`` once per process unless the shared cache already holds ``key``; then share the result.

    The marker names the source file that defines ``warm`` by its hash, so a changed caller warms (and
    publishes) again instead of compiling its new paths privately in every process.
    """
    if key in _done:
        return
    with _guard:
        if key in _done:
            return
        from filelock import FileLock

        shared = shared_dir()
        shared.mkdir(parents=True, exist_ok=True)
        source = hashlib.sha1(Path(warm.__code__.co_filename).read_bytes()).hexdigest()[:12]  # its code, as of now
        marker = shared / f"{key}-{source}-{_install_key()}.done"
        if not marker.exists():
            warm()
            if _private is not None:
                with FileLock(shared / "publish.lock", thread_local=False, preserve_lock_file=True):
                    _publish(_private, shared)
                    marker.touch()
        _done.add(key)


def _install_key() -> str:
    """Name the librosa install the cached code belongs to: versions, Python, and where librosa lies.

    numba files a function's cache under the absolute folder of its source, so each virtual
    environment (a second one, a moved one, a clean CI clone) has entries of its own and must warm
    and publish them: a marker naming only the versions kept every later environment compiling in
    every process (4 s -> 19 s for one `mess extract --model dsp` of one file).
    """
    import librosa
    import numba
    from librosa.version import version as librosa_version

    where = hashlib.sha1(str(Path(librosa.__file__).resolve().parent).encode()).hexdigest()[:12]
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    return f"librosa{librosa_version}-numba{numba.__version__}-{python}-{where}"


def _publish(private: Path, shared: Path) -> None:
    """Replace ``shared/current`` with its union with ``private`` (the caller holds the lock)."""
    fresh = Path(tempfile.mkdtemp(prefix="new-", dir=shared))
    current = shared / "current"
    if current.is_dir():
        shutil.copytree(current, fresh, dirs_exist_ok=True)
    shutil.copytree(private, fresh, dirs_exist_ok=True)
    old = shared / f"old-{os.getpid()}"
    if current.is_dir():
        os.replace(current, old)
    os.replace(fresh, current)
    shutil.rmtree(old, ignore_errors=True)
