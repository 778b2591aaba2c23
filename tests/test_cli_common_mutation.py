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
    (1, "1 file has no dsp[x] vectors and was left out; `mess check` names them; `mess extract FOLDER --model "
        "dsp[x]` embeds those on disk, `mess extract FOLDER --prune` forgets deleted ones\n"),
    (2, "2 files have no dsp[x] vectors and were left out; `mess check` names them; `mess extract FOLDER --model "
        "dsp[x]` embeds those on disk, `mess extract FOLDER --prune` forgets deleted ones\n"),
])
def test_files_without_vectors_are_counted(said: Console, count: int, text: str, tmp_path: Path) -> None:
    common.not_embedded_note(count, "dsp[x]", tmp_path, "--model dsp[x]")  # a store no writer holds
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



def test_a_command_s_store_is_opened_closed_and_its_errors_are_one_line(said: Console, tmp_path: Path) -> None:
    from mess.store import StoreBusy, StoreError

    missing = tmp_path / "typo"
    with pytest.raises(typer.Exit) as ended, common.open_store(missing, readonly=False, create=False):
        pass
    assert ended.value.exit_code == 1 and not missing.exists()
    assert said.export_text() == f"error: no feature store at {missing} (run `mess extract` first)\n"
    with common.open_store(tmp_path / "s", readonly=False) as fs:
        assert len(fs.tracks()) == 0 and not fs.readonly
    with common.open_store(tmp_path / "s") as fs:
        assert fs.readonly, "a command reads unless it says it writes"
    with pytest.raises(Exception, match="closed"):
        fs.tracks()
    for error in (StoreError("damaged [row] file"), StoreBusy("held by pid 7")):
        with pytest.raises(typer.Exit), common.open_store(tmp_path / "s") as fs:
            raise error
        with pytest.raises(Exception, match="closed"):
            fs.tracks()
    assert said.export_text() == "error: damaged [row] file\nerror: held by pid 7\n"


def test_the_version_is_the_installed_package_s(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import PackageNotFoundError, version

    common._print_version(False)
    assert capsys.readouterr().out == ""
    with pytest.raises(typer.Exit):
        common._print_version(True)
    try:
        want = f"mess {version('mess')}\n"
    except PackageNotFoundError:
        want = "mess (not installed as a package)\n"
    assert capsys.readouterr().out == want


def test_help_pages_show_no_type_markers() -> None:
    from typer.testing import CliRunner

    app = typer.Typer()
    sub = typer.Typer()

    @app.command("find")
    def find(query: str, paths: list[str], k: int = 5, json_: bool = typer.Option(False, "--json")) -> None:
        """Find."""

    @sub.command("run")
    def run(name: str) -> None:
        """Run."""

    @sub.callback()
    def group_options(level: int = 1) -> None:
        """A group with an option of its own."""

    app.add_typer(sub, name="group")
    common.plain_help(app)
    runner = CliRunner()
    text = runner.invoke(app, ["find", "--help"], terminal_width=200).output
    assert "Usage: root find [OPTIONS] QUERY PATHS..." in text
    assert "<" not in text and "{" not in text, text  # typer's <int>, <list[str]>, {query}
    cells = [line.strip("│ ").split() for line in text.splitlines() if "│" in line]
    assert ["*", "QUERY", "[required]"] in cells and ["*", "PATHS", "[required]"] in cells
    assert ["--k", "K", "[default:", "5]"] in cells and ["--json"] in cells, cells
    nested = runner.invoke(app, ["group", "run", "--help"], terminal_width=200).output
    assert "Usage: root group run [OPTIONS] NAME" in nested and "<" not in nested
    for args in (["--help"], ["group", "--help"]):  # the app's and a group's own pages (typer: '--help <bool>')
        page = runner.invoke(app, args, terminal_width=200).output
        assert "--help" in page and "<" not in page, page
