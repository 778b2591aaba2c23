"""Session-wide test data.

Real audio (music21 corpus rendered with fluidsynth; Wesnoth's soundtrack) is cached
across runs under ``$MESS_TEST_CACHE`` (default ``~/.cache/mess-test``) in folders keyed
by the render parameters, the soundfont and the renderer's source, so a change to any
of them renders afresh. Fixtures needing fluidsynth or apt-get skip when it is missing.
Each cache is filled under a file lock, so parallel workers (``pytest -n 2``) render it once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from filelock import FileLock

if TYPE_CHECKING:
    from mess.datasets.render import RenderedVariant
    from mess.search.vectors import VectorSet
    from mess.store import FeatureStore, Run

CACHE_ROOT = Path(os.environ.get("MESS_TEST_CACHE", Path.home() / ".cache" / "mess-test"))

# A background job of a shell without job control (`pytest ... &` in a script) starts with Ctrl-C ignored, and its
# children inherit that: the interrupt tests' `mess` processes would then rightly ignore the SIGINT they are sent.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# ---------------------------------------------------------------- rendered corpus audio

COLLECTION = {"composers": ["bach", "haydn", "mozart", "palestrina"], "per_composer": 4, "max_seconds": 20.0,
              "sample_rate": 22050}
FACTOR_PIECES = 2
FACTOR_LEVELS = {"instrument": [0, 40, 73], "tempo": [0.6, 1.0, 1.6], "transpose": [-3, 0, 4],
                 "velocity": [30, 80, 127]}


def render_cache(kind: str, params: dict) -> Path:
    """The cache folder for renders of ``kind`` with ``params``; skips the test without fluidsynth or music21."""
    pytest.importorskip("music21", reason="music21 renders the corpus: pip install music21")
    from mess.datasets import render

    try:
        soundfont = render.require_synth()
    except render.RenderError as exc:
        pytest.skip(str(exc))
    key = json.dumps({**params, "soundfont": soundfont.name}, sort_keys=True).encode()
    digest = hashlib.sha1(key + Path(render.__file__).read_bytes()).hexdigest()[:12]
    return CACHE_ROOT / f"{kind}-{digest}"


def cache_lock(cache: Path) -> FileLock:
    """The lock held while one test process fills ``cache`` (others wait, then reuse it)."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(f"{cache}.lock")


@pytest.fixture(scope="session")
def rendered_collection() -> list[Path]:
    """Tagged FLACs: 4 composers x 4 pieces, 20 s each at 22.05 kHz (artist = composer)."""
    from mess.datasets.render import RenderSettings, render_collection

    out = render_cache("collection", COLLECTION)
    settings = RenderSettings(max_seconds=COLLECTION["max_seconds"], sample_rate=COLLECTION["sample_rate"])
    with cache_lock(out):
        return render_collection(out, COLLECTION["composers"], COLLECTION["per_composer"], settings=settings)


@pytest.fixture(scope="session")
def factor_sets() -> Callable[[str], list[RenderedVariant]]:
    """``factor_sets("tempo")``: 2 Bach chorales x 3 levels of one factor, rendered on first use."""
    from mess.datasets.render import render_factor_set

    out = render_cache("factors", {"pieces": FACTOR_PIECES, "levels": FACTOR_LEVELS})
    rendered: dict[str, list[RenderedVariant]] = {}

    def get(factor: str) -> list[RenderedVariant]:
        if factor not in rendered:
            with cache_lock(out):
                rendered[factor] = render_factor_set(out, factor, FACTOR_PIECES, FACTOR_LEVELS[factor])
        return rendered[factor]

    return get


# ---------------------------------------------------------------- downloaded real audio


@pytest.fixture(scope="session")
def wesnoth_tracks() -> list[Path]:
    """Wesnoth's 41 OGG tracks (40 tagged, 10 composers); skips where apt-get cannot fetch them."""
    from mess.datasets.wesnoth import FetchError, fetch_wesnoth

    try:
        with cache_lock(CACHE_ROOT / "wesnoth"):
            return fetch_wesnoth(CACHE_ROOT / "wesnoth")
    except FetchError as exc:
        pytest.skip(str(exc))


# ---------------------------------------------------------------- synthetic files


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good, odd and broken files named as in :func:`mess.datasets.synth.write_test_set`."""
    from mess.datasets.synth import write_test_set

    out = tmp_path_factory.mktemp("synth")
    write_test_set(out)
    return out


# ---------------------------------------------------------------- torch threads


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread for a module (small batches run fastest and reproducibly so)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ---------------------------------------------------------------- an extracted feature store


@pytest.fixture(scope="session")
def extracted_store(rendered_collection: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with runs ``dsp`` and ``musicnn-msd`` over :func:`rendered_collection`, built once per run by
    whichever worker asks first; treat it as read-only."""
    from contextlib import closing

    from mess.audio.windows import WindowPolicy
    from mess.extract.pipeline import extract
    from mess.models.registry import load_model
    from mess.store.feature_store import FeatureStore

    shared = run_folder(tmp_path_factory) / "extracted"
    root = shared / "store"
    with cache_lock(shared):
        if not (shared / "complete").exists():
            shutil.rmtree(root, ignore_errors=True)
            with closing(FeatureStore(root)) as store:
                for name in ("dsp", "musicnn-msd"):
                    summary = extract(store, rendered_collection, load_model(name), WindowPolicy())
                    assert not summary.failed, summary.failed
            (shared / "complete").touch()
    return root


def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary folder of this pytest run, shared by its parallel workers (``-n``)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture
def msd(extracted_store: Path) -> Iterator[tuple[FeatureStore, Run, VectorSet]]:
    """:func:`extracted_store` read-only: its musicnn-msd run and the default all-layer vector set (power)."""
    from mess.search.vectors import VectorSpec, load_vectors
    from mess.store import FeatureStore

    fs = FeatureStore(extracted_store, readonly=True)
    try:
        run = fs.run("musicnn-msd")
        yield fs, run, load_vectors(fs, run, VectorSpec.from_options(), fs.tracks(run))
    finally:
        fs.close()


@pytest.fixture
def msd_copy(extracted_store: Path, tmp_path: Path) -> Iterator[tuple[FeatureStore, Run]]:
    """A writable copy of :func:`extracted_store` (16 rendered tracks), with its musicnn-msd run."""
    from mess.store import FeatureStore

    root = tmp_path / "store"
    shutil.copytree(extracted_store, root)
    fs = FeatureStore(root)
    try:
        yield fs, fs.run("musicnn-msd")
    finally:
        fs.close()


def as_ordinary_user(cmd: list[str]) -> list[str]:
    """``cmd`` as an ordinary user runs it: root reads any folder, so under root it runs without that privilege
    (setpriv; the test is skipped without it)."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is needed to test permissions as root")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *cmd]


# ---------------------------------------------------------------- the command line, in this process


def mess_here(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, input: str | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``mess ARGS`` run by :func:`mess.cli.main.main` in this process, answered as ``subprocess.run`` would.

    For tests of what a command says and does, not of the process itself (signals, kills, start-up, concurrency
    between processes: those start a real ``mess``). It saves the half second of imports and the librosa warm-up
    each process pays. As in a process, log records reach stderr as ``LEVEL name: message`` and an exception no
    command handles is printed as Python prints it (a test that forbids a traceback still sees one), exit code 1.
    A command still running after ``timeout`` seconds (a server that should have refused to start) fails the test.
    """
    from mess.cli.main import main

    return run_here(["mess", *args], main, env=env, cwd=cwd, input=input, timeout=timeout, log=True)


def run_here(argv: list[str], call: Callable[[], object], *, env: dict[str, str] | None = None,
             cwd: Path | None = None, input: str | None = None, timeout: float = 300,
             log: bool = False) -> subprocess.CompletedProcess[str]:
    """``call()`` run in this process as a program's main with ``sys.argv`` = ``argv``, answered as
    ``subprocess.run`` would: stdout, stderr (``input`` on stdin, ``env`` set, in ``cwd``), and the exit code: a
    SystemExit's, or 1 with an exception the program does not handle printed on stderr as Python prints it.
    ``log``: log records of WARNING and above reach stderr as ``LEVEL name: message`` (as mess configures them).
    Still running after ``timeout`` seconds, it fails the test. Used by :func:`mess_here` and the benchmarks' tests.
    """
    import traceback

    from click.testing import CliRunner

    root, handler = logging.getLogger(), _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    old_level, old_argv, old_cwd = root.level, sys.argv, Path.cwd()
    old_term, old_alarm, code = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGALRM), 0

    def overran(signum: int, frame: object) -> None:
        raise _Overran(f"`{' '.join(argv)}` still ran after {timeout} s")

    signal.signal(signal.SIGALRM, overran)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    with CliRunner().isolation(input=input, env=env) as (out, err, _):
        if log:
            root.addHandler(handler)
            root.setLevel(logging.WARNING)
        sys.argv = list(argv)
        try:
            if cwd is not None:
                os.chdir(cwd)
            call()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception:  # a process would print it and exit 1
            traceback.print_exc(file=sys.stderr)
            code = 1
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_alarm)
            os.chdir(old_cwd)
            sys.argv = old_argv
            root.removeHandler(handler)
            root.setLevel(old_level)
            signal.signal(signal.SIGTERM, old_term)
            sys.stdout.flush()
            sys.stderr.flush()
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    return subprocess.CompletedProcess(list(argv), code, stdout, stderr)


class _Overran(BaseException):
    """A command of :func:`mess_here` ran past its time (a BaseException: no command's handler may take it)."""


class _StderrHandler(logging.StreamHandler):
    """A log handler writing to whatever ``sys.stderr`` is when a record comes (the runner's, inside it)."""

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


# ---------------------------------------------------------------- what a child process waited for on the network

_WAITS_HOOK = """
import atexit, json, os, sys, time

_waits = {"connects": 0, "slept": 0.0}
_sleep = time.sleep


def _count(event, args):
    if event == "socket.connect" and isinstance(args[1], tuple):  # an internet address, not a local socket file
        _waits["connects"] += 1


def _counted_sleep(seconds):  # Python 3.11 has no audit event for it
    _waits["slept"] += seconds
    _sleep(seconds)


sys.addaudithook(_count)
time.sleep = _counted_sleep
atexit.register(lambda: open(os.path.join(os.environ["MESS_TEST_WAITS"], f"{os.getpid()}.json"), "w").write(
    json.dumps(_waits)))
"""


def network_waits(folder: Path) -> tuple[dict[str, str], Callable[[], dict[str, float]]]:
    """The environment of Python processes that count their network connection attempts (an audit hook) and the
    seconds they slept in time.sleep (a client's retries and their backoff), and a reader of their sums over every
    process that has ended: what a wall-time limit meant to show ("no retries, no waiting"), whatever the machine's
    load. ``folder`` is created and holds the hook and the counts."""
    folder.mkdir(parents=True)
    (folder / "sitecustomize.py").write_text(_WAITS_HOOK)
    env = {"PYTHONPATH": os.pathsep.join([str(folder), *sys.path]), "MESS_TEST_WAITS": str(folder)}

    def read() -> dict[str, float]:
        counts = [json.loads(p.read_text()) for p in folder.glob("*.json")]
        assert counts, "no process counted its waits (the hook did not run)"
        return {key: sum(c[key] for c in counts) for key in ("connects", "slept")}

    return env, read


# ---------------------------------------------------------------- parallel runs (pytest -n 2)

SPREAD = {"test_store_faults.py"}  # its tests go to whichever worker is free (its templates: one per session, locked)
# The modules that share one Ray cluster and driver (test_scale_ray's): one unit, so one worker starts them once.
RAY_MODULES = ("test_scale_ray", "test_scale_copies")
# The longest work units, longest first (a quiet two-worker run of session 37: 172 s for the Ray modules' unit down to
# 18 s for test_mert): xdist hands units out in the order they are collected (pyproject.toml turns off its own
# reordering, which puts the units with most tests first and so left the longest single tests for the end, one worker
# busy while the other had nothing left). Longest first, then the other modules, most tests first, then the single
# tests of SPREAD: the last units are the short ones.
LONG_FIRST = ("test_scale_ray", "test_docs_examples", "test_concurrent_first_runs_on_an_empty_numba_cache",
              "test_extract", "test_probing_store", "test_benchmarks", "test_serve_security", "test_serve_api",
              "test_fusion_store", "test_cli_interrupts", "test_mpd", "test_decode_seek",
              "test_serve_playlists_browser", "test_search_store", "test_serve_browser", "test_ids_in_input_order",
              "test_trust_session36", "test_onnx_query", "test_mert")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups (after it, none was seen)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup`` keep each other module on one worker, so its module fixtures are built once, and
    order the units as :data:`LONG_FIRST` says."""
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        if item.path.name not in SPREAD:
            unit = RAY_MODULES[0] if item.path.stem in RAY_MODULES else item.path.stem
            item.add_marker(pytest.mark.xdist_group(unit))
            units.setdefault(unit, []).append(item)
        else:
            units.setdefault(item.nodeid, []).append(item)

    def rank(unit: str) -> tuple[int, int]:
        name = unit.rsplit("::", 1)[-1]
        if name in LONG_FIRST:
            return LONG_FIRST.index(name), 0
        return len(LONG_FIRST) + ("::" in unit), -len(units[unit])  # a module, then a single test of SPREAD

    items[:] = [item for unit in sorted(units, key=rank) for item in units[unit]]


@pytest.hookimpl(trylast=True)  # after the module fixtures' teardown
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the Ray modules' shared cluster once the next test is in none of them (or none is next)."""
    if item.path.stem in RAY_MODULES and (nextitem is None or nextitem.path.stem not in RAY_MODULES):
        sys.modules["test_scale_ray"].stop_shared()


def pytest_sessionfinish() -> None:
    """Stop the Ray modules' shared cluster if a run ended inside them (-x, Ctrl-C): its processes have a session
    of their own, which nothing else would end."""
    if "test_scale_ray" in sys.modules:
        sys.modules["test_scale_ray"].stop_shared()
