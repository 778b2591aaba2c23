"""click's own refusals of what was typed (an empty value, a number out of range, a bad choice, an unknown option or
command, a missing or extra argument) are said as mess's own are: one ``error:`` line naming the option and what it
takes, exit code 1, not typer's usage box with exit code 2. Help pages are as they were."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command

from conftest import mess_here
from mess.cli.main import app
from mess.playlists.formats import FORMATS


def _param(command: list[str], opt: str) -> object:
    """The click parameter ``opt`` of the `mess` command ``command`` (its range read from there, not from the
    message)."""
    found = get_command(app)
    for name in command:
        found = found.get_command(None, name) if hasattr(found, "get_command") else found.commands[name]
    return next(p for p in found.params if opt in p.opts)


def _range(command: list[str], opt: str) -> list[str]:
    """The bounds of a number option as the message writes them (1, not 1.0)."""
    p = _param(command, opt)
    return [f"{b:g}" for b in (getattr(p, "min", None), getattr(p, "max", None)) if b is not None]


CASES = [  # (what is typed, the words the line must hold)
    (["similar", "1", "--store", ""], ["'--store'", "is empty"]),
    (["playlist", "radio", "1", "-n", "0"], ["'-n'", *_range(["playlist", "radio"], "-n")]),
    (["playlist", "radio", "1", "--window", "0"], ["'--window'", *_range(["playlist", "radio"], "--window")]),
    (["extract", "x", "--window", "0"], ["'--window'", *_range(["extract"], "--window")]),
    (["playlist", "radio", "1", "-n", "x"],  # the bounds, which typer's words leave out
     ["'-n'", "integer", "; it takes at least {}".format(*_range(["playlist", "radio"], "-n"))]),
    (["extract", "x", "--window", "abc"],
     ["'--window'", "'abc'", "; it takes {} to {}".format(*_range(["extract"], "--window"))]),
    (["playlist", "radio", "1", "--format", "pls"], ["'--format'", "'pls'", *sorted(set(FORMATS.values()))]),
    (["playlist", "radio", "1", "--bogus"], ["--bogus", "`mess playlist radio --help`"]),
    (["playlist", "radio", "1", "--formt", "m3u8"], ["--formt", "--format"]),
    (["playlist", "radio"], ["SEEDS", "`mess playlist radio --help`"]),
    (["mpd", "play"], ["PLAYLIST", "`mess mpd play --help`"]),
    (["similar", "1", "2"], ["extra argument", "2", "`mess similar --help`"]),
    (["nosuch"], ["'nosuch'", "`mess --help`"]),
    (["playlist", "nosuch"], ["'nosuch'", "`mess playlist --help`"]),
    (["--bogus"], ["--bogus", "`mess --help`"]),
]


@pytest.mark.parametrize(("typed", "words"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_refusal_of_what_was_typed_is_one_line_with_exit_code_1(tmp_path: Path, typed: list[str],
                                                                   words: list[str]) -> None:
    store = [] if "--store" in typed or typed in (["nosuch"], ["--bogus"]) else ["--store", str(tmp_path / "s")]
    done = mess_here(*typed, *store, cwd=tmp_path, env={"COLUMNS": "80"})  # a narrow terminal: no wrapped box
    assert done.returncode == 1 and done.stdout == "", (done.returncode, done.stdout)
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Usage" not in done.stderr and "╭" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert all(w in done.stderr for w in words), (words, done.stderr)
    assert list(tmp_path.iterdir()) == []  # no store made, nothing written


def test_a_refusal_in_a_real_process_and_mess_s_own_share_the_exit_code(tmp_path: Path) -> None:
    """In a process (typer's own exit path, not the test runner's): `-n 0` ends as a store that is not there (mess's
    own refusal, after the options are read) does. Help pages are as they were: --help prints the page with exit code
    0, a group typed alone shows its page (click's exit code 2)."""
    def mess(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mess.cli", "playlist", "radio", "1", *args, "--store",
                               str(tmp_path / "s")], capture_output=True, text=True, timeout=120)

    click_s, own = mess("-n", "0"), mess("-n", "3")
    assert click_s.returncode == own.returncode == 1, (click_s.stderr, own.stderr)
    for done in (click_s, own):
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1 and not done.stdout, done.stderr
    assert "'-n'" in click_s.stderr and "no feature store" in own.stderr
    page = mess_here("playlist", "radio", "--help", env={"COLUMNS": "120"})
    assert page.returncode == 0 and "playlist radio [OPTIONS] SEEDS..." in page.stdout, page.stdout
    assert "-n" in page.stdout and "[x>=1]" in page.stdout
    alone = mess_here("playlist", env={"COLUMNS": "120"})
    assert alone.returncode == 2 and "playlist [OPTIONS] COMMAND" in alone.stdout + alone.stderr
    assert "error:" not in alone.stdout + alone.stderr
