"""`mess models fetch NAME DIR`'s own words in this process: the files it names and the extract command it hands
on (an ONNX graph by its file, a MERT checkpoint by its folder). The download itself (mess.models.essentia.fetch,
tested in test_onnx_fetch.py against a local server) is stood in for by a function returning the files it would."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mess.cli.models import register
from mess.models.essentia import fetch as fetching


def _fetch(monkeypatch: pytest.MonkeyPatch, names: list[str] | None, folder: Path) -> tuple[int, str]:
    def fetch(name: str, where: Path) -> list[Path]:
        assert (name, where) == ("some-model", folder)
        if names is None:
            raise fetching.FetchError("cannot download https://x/[y] (HTTP 404)")
        return [where / n for n in names]

    monkeypatch.setattr(fetching, "fetch", fetch)
    app = typer.Typer()
    register(app)
    app.command("other")(lambda: None)
    got = CliRunner().invoke(app, ["models", "fetch", "some-model", str(folder)], terminal_width=400)
    return got.exit_code, got.output


def test_an_onnx_preset_is_handed_on_by_its_graph(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    code, out = _fetch(monkeypatch, ["x-1.json", "x-1.onnx", "y-2.onnx"], tmp_path)
    assert code == 0
    assert out.splitlines() == [f"ok {tmp_path}/x-1.json", f"ok {tmp_path}/x-1.onnx", f"ok {tmp_path}/y-2.onnx",
                                f"use it with: mess extract DIR --model {tmp_path}/x-1.onnx"]


def test_a_checkpoint_is_handed_on_by_its_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    code, out = _fetch(monkeypatch, ["config.json", "model.safetensors"], tmp_path)
    assert code == 0
    assert out.splitlines()[-1] == f"use it with: mess extract DIR --model {tmp_path}"


def test_a_failed_fetch_is_one_error_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    code, out = _fetch(monkeypatch, None, tmp_path)
    assert (code, out) == (1, "error: cannot download https://x/[y] (HTTP 404)\n")


def test_models_alone_shows_its_help() -> None:
    app = typer.Typer()
    register(app)
    app.command("other")(lambda: None)
    got = CliRunner().invoke(app, ["models"], terminal_width=400)
    assert "Model files for machines with internet" in got.output and "fetch" in got.output
    assert "Missing command" not in got.output
