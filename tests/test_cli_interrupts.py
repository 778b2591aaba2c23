"""The CLI as a whole on real processes: Ctrl-C (SIGINT) and SIGTERM during long commands, and commands run where
no store exists. Each case checks what a user sees (one line, the exit code) and what is left on disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

MESS = [sys.executable, "-m", "mess.cli"]


def _mess(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*MESS, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "300"})


@pytest.mark.parametrize("command", [["index"], ["check", "--repair"]])
def test_a_writer_given_a_missing_store_makes_none(tmp_path: Path, command: list[str]) -> None:
    """`mess index --store TYPO` made an empty store there and said "no vectors for model None"; `mess check --repair
    --store TYPO` made one and said "ok"."""
    store = tmp_path / "typo"
    done = _mess(*command, "--store", str(store))
    assert done.returncode == 1 and done.stdout == "", done
    assert f"no feature store at {store} (run `mess extract` first)" in " ".join(done.stderr.split()), done.stderr
    assert not store.exists()
