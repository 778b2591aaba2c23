"""`mess probe` under a low limit on open files (`ulimit -n`): its audio targets' worker processes cannot start; it
says so in one line naming the limit, as `mess extract` does, and `--workers 1` gets round it. Real processes: ten
5 s FLAC excerpts of the soundtracks, extracted with dsp, probed by `python -m mess.cli` with the limit set."""

from __future__ import annotations

import csv
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mess.datasets.copies import read_channels, write_copy
from mess.probing.target_cache import PARALLEL_MIN_TRACKS

SOUNDTRACKS = Path(os.environ.get("MESS_SOUNDTRACKS", "/work/data/soundtracks"))
MESS = [sys.executable, "-m", "mess.cli"]


def _mess(*args: str, limit: int | None = None) -> subprocess.CompletedProcess[str]:
    def low() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return subprocess.run([*MESS, *args], capture_output=True, text=True, timeout=300, preexec_fn=low,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def test_a_limit_on_open_files_is_named_by_probe(tmp_path: Path) -> None:
    """At the lowest limit (from 12 up) at which `mess probe` gets past opening its store and stops, it says in one
    line, no traceback, that the limit of that many files is too low; it said 'error: Too many open files' alone.
    With --workers 1 (the targets computed in its own process) it probes at that limit."""
    manifest = SOUNDTRACKS / "manifest.csv"
    if not manifest.is_file():
        pytest.skip(f"no soundtracks at {SOUNDTRACKS}")
    rows = list(csv.DictReader(manifest.open()))
    music = tmp_path / "music"
    music.mkdir()
    for row in rows[::10][:PARALLEL_MIN_TRACKS + 2]:  # enough tracks for the targets' worker processes
        audio, rate = read_channels(Path(row["path"]), 5.0)
        write_copy(audio, rate, music / f"{Path(row['path']).stem}.flac", "flac")
    store = tmp_path / "store"
    assert _mess("extract", str(music), "--model", "dsp", "--store", str(store)).returncode == 0
    for limit in range(12, 40, 2):
        probed = _mess("probe", "--control", "none", "--store", str(store), limit=limit)
        assert "Traceback" not in probed.stderr, (limit, probed.stderr)
        if probed.returncode == 0 or f"may open {limit} files" in probed.stderr:
            break
    assert probed.returncode == 1, f"no limit stopped probe: {probed.stderr}"
    said = probed.stderr.strip().splitlines()
    assert len(said) == 1 and "Too many open files" in said[0] and "`ulimit -n`" in said[0], said
    shutil.rmtree(store / "reports", ignore_errors=True)
    alone = _mess("probe", "--control", "none", "--workers", "1", "--store", str(store), limit=limit)
    assert alone.returncode == 0, alone.stderr
