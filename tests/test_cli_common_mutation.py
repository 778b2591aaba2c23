"""The CLI's shared output pieces (mess.cli.common) in this process: JSON, user data in rich markup, the system's
refusals, the not-embedded note, one-line errors, --json against stdout. Expected text comes from the json module,
the OSError's own fields and what a user is to read."""

from __future__ import annotations

import errno
import io
import json
import math
import sys
from pathlib import Path

import pytest
import typer
from rich.console import Console

from mess.cli import common


@pytest.fixture
def said(monkeypatch: pytest.MonkeyPatch) -> Console:
    """The console, recording what it prints (wide: one message, one line)."""
    console = Console(record=True, width=400, file=io.StringIO(), soft_wrap=True, emoji=False)
    monkeypatch.setattr(common, "console", console)
    return console


def test_json_is_finite_plain_data(capsys: pytest.CaptureFixture[str]) -> None:
    common.emit_json({1: [math.nan, math.inf, -math.inf, 0.5, (Path("/m/caf\udce9.flac"), "x")],
                      "n": {"deep": [float("nan"), 3]}, "ok": True, "none": None})
    out = capsys.readouterr().out
    assert json.loads(out) == {"1": [None, None, None, 0.5, ["/m/caf\\xe9.flac", "x"]], "n": {"deep": [None, 3]},
                               "ok": True, "none": None}
    assert out.startswith('{\n  "1": [\n    null,'), "two spaces per level"


def test_user_data_is_printed_as_written_on_one_line(said: Console) -> None:
    text = "[/x] [red]caf\udce9 \x1b[31mred\x07\nnext"
    said.print("[bold]a[/] " + common.plain(text))
    assert said.export_text() == "a [/x] [red]caf\\xe9 [31mred next\n"


def test_a_refusal_names_the_files_the_message_does_not() -> None:
    both = OSError(errno.EXDEV, "Invalid cross-device link", "/a/x.tmp", None, "/b/x")
    assert common.os_reason(both) == "/a/x.tmp -> /b/x: Invalid cross-device link"
    assert common.os_reason(both, named=Path("/a/x.tmp")) == "/b/x: Invalid cross-device link"
    assert common.os_reason(OSError(errno.ENOSPC, "No space left on device")) == "No space left on device"
    assert common.os_reason(OSError("no strerror here")) == "no strerror here"


@pytest.mark.parametrize(("count", "text"), [
    (0, ""),
    (1, "1 file has no dsp[x] vectors and was left out; `mess check` names them, `mess extract --model dsp[x]` "
        "embeds them\n"),
    (2, "2 files have no dsp[x] vectors and were left out; `mess check` names them, `mess extract --model dsp[x]` "
        "embeds them\n"),
])
def test_files_without_vectors_are_counted(said: Console, count: int, text: str) -> None:
    common.not_embedded_note(count, "dsp[x]")
    assert said.export_text() == text


def test_warnings_notes_and_errors_are_one_line_each(said: Console) -> None:
    common.warn("tag [b]\nsplit")
    common.note(None)
    common.note("")
    common.note("kept [i]")
    with pytest.raises(typer.Exit) as ended:
        common.fail("no such [file]", code=4)
    assert ended.value.exit_code == 4
    with pytest.raises(typer.Exit) as ended, common.failing(KeyError, ValueError):
        raise ValueError("bad [value]")
    assert ended.value.exit_code == 1
    with pytest.raises(TypeError), common.failing(KeyError, ValueError):
        raise TypeError("not mine")
    assert said.export_text() == ("warning: tag [b] split\nnote: kept [i]\nerror: no such [file]\n"
                                  "error: bad [value]\n")


def test_json_to_the_file_that_is_stdout_is_refused(said: Console, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.json"
    with out.open("w") as stdout:
        monkeypatch.setattr(sys, "stdout", stdout)
        common.json_clash(out, as_json=False)
        common.json_clash(None, as_json=True)
        common.json_clash(tmp_path / "other.json", as_json=True)  # not there yet
        (tmp_path / "there.json").write_text("{}")
        common.json_clash(tmp_path / "there.json", as_json=True)
        assert said.export_text() == ""
        with pytest.raises(typer.Exit):
            common.json_clash(out, as_json=True)
    assert said.export_text() == f"error: {out} is stdout, where --json prints too; drop --json or write to a file\n"

