"""The CLI as a whole on real processes: Ctrl-C (SIGINT) and SIGTERM during long commands, and commands run where
no store exists. Each case checks what a user sees (one line, the exit code) and what is left on disk."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import mutagen.flac
import numpy as np
import pytest
import soundfile as sf

from conftest import cache_lock, mess_here, render_cache
from mess.store import FeatureStore

MESS = [sys.executable, "-m", "mess.cli"]


@pytest.mark.parametrize("command", [["index"], ["check", "--repair"]])
def test_a_writer_given_a_missing_store_makes_none(tmp_path: Path, command: list[str]) -> None:
    """`mess index --store TYPO` made an empty store there and said "no vectors for model None"; `mess check --repair
    --store TYPO` made one and said "ok"."""
    store = tmp_path / "typo"
    done = mess_here(*command, "--store", str(store))
    assert done.returncode == 1 and done.stdout == "", done
    assert f"no feature store at {store} (run `mess extract` first)" in " ".join(done.stderr.split()), done.stderr
    assert not store.exists()


def _tones(folder: Path, n: int, seconds: float = 6.0, sr: int = 22050) -> Path:
    """``n`` distinct harmonic tones, one WAV each."""
    folder.mkdir(parents=True)
    t = np.arange(int(seconds * sr)) / sr
    for i in range(n):
        f0 = 110 * 2 ** (i / 7)
        y = sum(0.2 / h * np.sin(2 * np.pi * h * f0 * t) for h in (1, 2, 3))
        sf.write(folder / f"tone{i:03d}.wav", y.astype(np.float32), sr)
    return folder


def _embedded(store: Path) -> int:
    """How many files have committed vectors (0 before the catalog has its tables)."""
    try:
        with closing(sqlite3.connect(f"file:{store / 'catalog.sqlite'}?mode=ro", uri=True)) as db:
            return db.execute("SELECT COUNT(DISTINCT content_hash) FROM vectors").fetchone()[0]
    except sqlite3.Error:
        return 0


def _stopped(args: list[str], started: Callable[[], bool], sig: signal.Signals) -> subprocess.CompletedProcess:
    """Run `mess ARGS`, send ``sig`` once ``started()`` says it is under way, and return how it ended."""
    proc = subprocess.Popen([*MESS, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "300"})
    deadline = time.monotonic() + 120
    while not started() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_extract_says_what_it_kept_and_a_rerun_goes_on(tmp_path: Path, sig: signal.Signals,
                                                                      code: int) -> None:
    """Ctrl-C ended `mess extract` with its progress bar and no word of what was kept; SIGTERM killed it outright
    (status -15), losing the vectors its writer had not committed yet. Both now commit what was embedded, say so in
    one line and exit 130 / 143; the lock is free at once and a rerun embeds only the rest."""
    music, store = _tones(tmp_path / "music", 16, seconds=4.5), tmp_path / "store"  # one 4 s window each
    dsp = ["--model", "dsp", "--window", "4", "--max-windows", "1", "--batch-size", "1", "--store", str(store)]
    stopped = _stopped(["extract", str(music), *dsp], lambda: _embedded(store) >= 2, sig)
    said = " ".join(stopped.stderr.split())
    kept = _embedded(store)
    assert stopped.returncode == code and stopped.stdout == "" and "Traceback" not in said, stopped
    assert re.search(rf"interrupted: {kept} embedded and kept, 0 unchanged \(skipped\), 0 failed -> {store} \[dsp\]; "
                     rf"\d+ of 16 files not done: `mess extract` again embeds them", said), said
    assert 2 <= kept < 16 and "stopped before the command finished" not in said  # said once, by extract
    rerun = mess_here("extract", str(music), *dsp, "--no-wait")
    assert rerun.returncode == 0, rerun.stderr
    assert f"{16 - kept} embedded, {kept} unchanged (skipped), 0 failed" in " ".join(rerun.stderr.split())


# The end of each script below: run the mess CLI with the script's own arguments, in this process.
_RUN_MESS = """
sys.argv = ["mess", *sys.argv[1:]]
from mess.cli.main import main
main()
"""

_CTRL_C_IN_CSV = """
import csv, os, signal, sys
real = csv.writer
class Writer:  # Ctrl-C as the artist matrix's first CSV row is written
    def __init__(self, *args, **kwargs):
        self.writer = real(*args, **kwargs)
    def writerow(self, row):
        self.writer.writerow(row)
        os.kill(os.getpid(), signal.SIGINT)
csv.writer = Writer
""" + _RUN_MESS


@pytest.fixture(scope="module")
def eight_tagged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of eight tagged tones (four artists) extracted with dsp."""
    root = tmp_path_factory.mktemp("tagged")
    music = root / "music"
    music.mkdir()
    sr = 22050
    t = np.arange(2 * sr) / sr
    for i in range(8):
        sf.write(music / f"tone{i}.flac", (0.3 * np.sin(2 * np.pi * 110.0 * (i + 1) * t)).astype(np.float32), sr)
        tags = mutagen.flac.FLAC(music / f"tone{i}.flac")
        tags.update({"artist": f"Artist {i % 4}", "title": f"tone {i}"})
        tags.save()
    done = mess_here("extract", str(music), "--model", "dsp", "--store", str(root / "store"))
    assert done.returncode == 0, done.stderr
    return root / "store"


def test_an_artist_matrix_interrupted_while_written_leaves_the_one_before(eight_tagged: Path, tmp_path: Path) -> None:
    """`mess artists matrix` wrote its CSV (and PNG) in place: Ctrl-C while writing left a truncated CSV where the
    whole one of the run before had been. Each is now replaced whole."""
    store, out = eight_tagged, tmp_path / "out"
    out.mkdir()
    matrix = ["artists", "matrix", "--min-tracks", "1", "-o", str(out / "m"), "--store", str(store)]
    first = mess_here(*matrix)
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["m.csv", "m.png"] and before["m.csv"].count(b"\n") == 5
    stopped = subprocess.run([sys.executable, "-c", _CTRL_C_IN_CSV, *matrix, "--no-center"], capture_output=True,
                             text=True, timeout=120)
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr, stopped.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temp file beside them either


_CTRL_C_ONCE_OPEN = """
import os, signal, sys
from mess.store import FeatureStore
real = FeatureStore.__init__
def opened(self, *args, **kwargs):  # Ctrl-C once the command has its store open
    real(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGINT)
FeatureStore.__init__ = opened
""" + _RUN_MESS


@pytest.fixture(scope="module")
def six_tones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of six tones extracted with dsp."""
    root = tmp_path_factory.mktemp("six")
    done = mess_here("extract", str(_tones(root / "music", 6)), "--model", "dsp", "--window", "4", "--store",
                     str(root / "store"))
    assert done.returncode == 0, done.stderr
    return root / "store"


@pytest.mark.parametrize("command", [["probe", "--control", "none"], ["index"], ["export", "OUT.npz"],
                                     ["playlist", "clusters", "-k", "2", "-o", "OUT"], ["evaluate"]])
def test_ctrl_c_in_any_command_is_said_in_one_line(six_tones: Path, tmp_path: Path, command: list[str]) -> None:
    """Ctrl-C in a command without its own word for it (all but extract and fuse train) ended it with exit status 130
    and nothing said at all, not even that it was interrupted."""
    store, out = Path(shutil.copytree(six_tones, tmp_path / "store")), tmp_path / "out"
    args = [a.replace("OUT", str(out)) for a in command]
    stopped = subprocess.run([sys.executable, "-c", _CTRL_C_ONCE_OPEN, *args, "--json", "--store", str(store)],
                             capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 130 and stopped.stdout == "", stopped
    assert stopped.stderr.strip() == ("interrupted: stopped before the command finished; each file and store change "
                                      "it made is whole (the one before, or the new), and running it again finishes "
                                      "it"), stopped.stderr
    assert not list(tmp_path.glob("out*")) and not list(store.rglob("*.tmp"))
    assert mess_here("check", "--store", str(store)).returncode == 0


_SIGNAL_AS_MODULE_LOADS = """
import importlib.abc, os, sys
module, signum = sys.argv[1], int(sys.argv[2])
del sys.argv[1:3]
class Signal(importlib.abc.MetaPathFinder):  # the signal arrives as the CLI's commands load, when MODULE is imported
    def find_spec(self, name, path=None, target=None):
        if name == module:
            os.kill(os.getpid(), signum)
        return None
sys.meta_path.insert(0, Signal())
""" + _RUN_MESS

_SIGNAL_AS_TYPER_BUILDS = """
import os, sys, typer.main
signum = int(sys.argv[2])
del sys.argv[1:3]
real = typer.main.get_command
def get_command(app):  # the signal arrives as typer turns the loaded commands into click's (before click runs them)
    os.kill(os.getpid(), signum)
    return real(app)
typer.main.get_command = get_command
""" + _RUN_MESS


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_the_commands_load_is_said_in_one_line(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    """Ctrl-C in the first few tenths of a second, while the entry point imported the CLI's modules or typer built
    its commands, printed Python's traceback (SIGTERM too: its handler was set only after the imports). Both now end
    as they do later, in one line, exit 130 / 143. The signal is sent at a few points of that phase: the first
    third-party import, typer's build, and (inside click, which loads a command's module as it resolves it) the
    command's module and the store's."""
    for script, point in [(_SIGNAL_AS_MODULE_LOADS, m) for m in ("typer", "mess.store", "mess.cli.check")] \
            + [(_SIGNAL_AS_TYPER_BUILDS, "get_command")]:
        stopped = subprocess.run([sys.executable, "-c", script, point, str(int(sig)), "check", "--store",
                                  str(tmp_path / "none")], capture_output=True, text=True, timeout=120)
        assert stopped.returncode == code and stopped.stdout == "", (point, stopped)
        assert stopped.stderr.strip() == ("interrupted: stopped before the command finished; each file and store "
                                          "change it made is whole (the one before, or the new), and running it again "
                                          "finishes it"), (point, stopped.stderr)


_CTRL_C_AT_REPORT_JSON = """
import builtins, io, os, signal, sys
real = io.open
def interrupting_open(file, mode="r", *args, **kwargs):
    handle = real(file, mode, *args, **kwargs)
    if ("w" in mode or "x" in mode) and os.path.basename(os.path.dirname(str(file))) == "reports" \\
            and ".json" in os.path.basename(str(file)):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C as the report JSON is opened for writing
    return handle
builtins.open = io.open = interrupting_open  # pathlib opens through io.open
""" + _RUN_MESS


def test_a_fusion_report_interrupted_while_written_leaves_the_one_before(eight_tagged: Path, tmp_path: Path) -> None:
    """`mess fuse report` wrote its JSON, Markdown and PNG in place: Ctrl-C as it wrote the JSON left an empty file
    where the report before had been. Each is now replaced whole."""
    store = Path(shutil.copytree(eight_tagged, tmp_path / "store"))
    trained = mess_here("fuse", "train", "--label", "artist", "--weight-epochs", "1", "--max-epochs", "1", "--store",
                        str(store))
    assert trained.returncode == 0, trained.stderr
    first = mess_here("fuse", "report", "--json", "--store", str(store))
    assert first.returncode == 0, first.stderr
    report = Path(json.loads(first.stdout)["files"]["json"])
    before = report.read_bytes()
    stopped = subprocess.run([sys.executable, "-c", _CTRL_C_AT_REPORT_JSON, "fuse", "report", "-k", "2", "--store",
                              str(store)], capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr, stopped.stderr
    assert report.read_bytes() == before and not list(report.parent.glob("*.tmp"))


def test_hybrid_weights_interrupted_while_written_are_the_ones_before(eight_tagged: Path, tmp_path: Path) -> None:
    """`mess artists hybrid` wrote its learned weights in place: Ctrl-C as it wrote them left an empty file, so
    `mess artists similar --hybrid` had no weights ("malformed weights file"). The file is now replaced whole."""
    store, ref = Path(shutil.copytree(eight_tagged, tmp_path / "store")), tmp_path / "ref.json"
    ref.write_text(json.dumps({f"Artist {a}": [f"Artist {a ^ 1}"] for a in range(4)}))
    hybrid = ["artists", "hybrid", "--reference", str(ref), "-k", "1", "--min-tracks", "1", "--store", str(store)]
    first = mess_here(*hybrid, "--json")
    assert first.returncode == 0, first.stderr
    saved = Path(json.loads(first.stdout)["saved"])
    before = saved.read_bytes()
    stopped = subprocess.run([sys.executable, "-c", _CTRL_C_AT_REPORT_JSON, *hybrid, "--seed", "1"],
                             capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr, stopped.stderr
    assert saved.read_bytes() == before and not list(saved.parent.glob("*.tmp"))


@pytest.mark.parametrize("command", [["similar", "1"], ["index"], ["evaluate"], ["playlist", "clusters"]])
def test_a_store_without_vectors_says_so_not_model_none(tmp_path: Path, command: list[str]) -> None:
    """A store an interrupted first `mess extract` made before it embedded anything answered "no vectors for model
    None in STORE; extracted models: none"."""
    store = tmp_path / "store"
    FeatureStore(store).close()  # what such an extract leaves: a catalog without runs
    done = mess_here(*command, "--store", str(store))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert " ".join(done.stderr.split()) == f"error: no vectors in {store} yet; run `mess extract` first"


_VALIDATE = ["probe-validate", "--pieces", "2", "-f", "tempo", "-f", "velocity", "--workers", "1"]


@pytest.fixture(scope="module")
def validated() -> Path:
    """STORE/validation as `mess probe-validate --pieces 2 -f tempo -f velocity` leaves it (its renders, the targets
    it computed of them), made by the command once and cached across runs like conftest's renders, keyed by the
    sources that make them; copy it into a store."""
    from mess.probing import target_cache, targets, validation

    sources = hashlib.sha1(b"".join(Path(m.__file__).read_bytes() for m in (validation, targets, target_cache)))
    out = render_cache("validated", {"args": _VALIDATE, "sources": sources.hexdigest()})
    with cache_lock(out):
        if not (out / "complete").exists():
            shutil.rmtree(out, ignore_errors=True)
            made = mess_here(*_VALIDATE, "--store", str(out / "store"))
            assert made.returncode == 0, made.stderr
            (out / "complete").touch()
    return out / "store" / "validation"


def test_a_probe_validation_interrupted_while_written_leaves_the_one_before(validated: Path, tmp_path: Path) -> None:
    """`mess probe-validate` wrote its JSON in place: Ctrl-C as it wrote it left an empty file where the results
    before had been. It is now replaced whole."""
    store = tmp_path / "store"
    shutil.copytree(validated, store / "validation")  # its renders and targets: the command reuses them
    validate = [*_VALIDATE, "--store", str(store)]
    first = mess_here(*validate, "--json")
    assert first.returncode == 0, first.stderr
    saved = Path(json.loads(first.stdout)["file"])
    before = saved.read_bytes()
    stopped = subprocess.run([sys.executable, "-c", _CTRL_C_AT_REPORT_JSON, *validate], capture_output=True,
                             text=True, timeout=120)
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr, stopped.stderr
    assert saved.read_bytes() == before and not list(saved.parent.glob("*.tmp"))


_CTRL_C_AT_THIRD_PLAYLIST = """
import builtins, io, os, signal, sys
real = io.open
opened = []
def interrupting_open(file, mode="r", *args, **kwargs):
    handle = real(file, mode, *args, **kwargs)
    if ("w" in mode or "x" in mode) and ".m3u8" in os.path.basename(str(file)):
        opened.append(file)
        if len(opened) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C as the third cluster playlist is written
    return handle
builtins.open = io.open = interrupting_open
""" + _RUN_MESS


def test_cluster_playlists_interrupted_while_written_leave_the_folder_as_it_was(six_tones: Path,
                                                                               tmp_path: Path) -> None:
    """`mess playlist clusters -o DIR` replaced its playlists one by one: Ctrl-C at the third left the first two of
    the new clustering beside the old ones (tracks in two playlists). All are now written before any is replaced."""
    out = tmp_path / "out"
    clusters = ["playlist", "clusters", "-o", str(out), "--store", str(six_tones)]
    first = mess_here(*clusters, "-k", "2")
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(before) == 3  # two playlists and their list
    stopped = subprocess.run([sys.executable, "-c", _CTRL_C_AT_THIRD_PLAYLIST, *clusters, "-k", "4"],
                             capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr, stopped.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    again = mess_here(*clusters, "-k", "4")
    assert again.returncode == 0 and len(list(out.glob("*.m3u8"))) == 4, again.stderr
