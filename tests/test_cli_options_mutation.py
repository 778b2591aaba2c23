"""The shared option parsers (mess.cli.options) in this process: what a user typing an empty value, a file for a
folder, 'nan' or a number out of range is told. Expected values from the definitions (an inclusive range, numpy's
seed range 0 .. 2**32 - 1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer

from mess.cli.options import SEED_MAX, given_folder, given_path, given_text, number_in


@pytest.mark.parametrize("parse", [given_path, given_folder, given_text])
def test_an_empty_value_is_refused_as_an_unset_variable(parse: object) -> None:
    with pytest.raises(typer.BadParameter, match=r"^is empty \(an unset shell variable\?\)$"):
        parse("")  # type: ignore[operator]


def test_paths_and_names_are_taken_as_given(tmp_path: Path) -> None:
    assert given_path("a b/c") == Path("a b/c") and given_path(Path(" ")) == Path(" ")
    assert given_text(" x ") == " x "
    assert given_folder(str(tmp_path)) == tmp_path
    assert given_folder(str(tmp_path / "new")) == tmp_path / "new"


def test_a_file_is_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(typer.BadParameter, match=f"^{tmp_path}/f is a file, not a folder$"):
        given_folder(str(tmp_path / "f"))


def test_a_number_in_an_inclusive_range() -> None:
    parse = number_in(0.5, 600.0)
    assert [parse(raw) for raw in ("0.5", "600", "1e2", " 7 ")] == [0.5, 600.0, 100.0, 7.0]
    for raw in ("0.4999", "600.001", "-1", "inf", "-inf", "1e400"):
        with pytest.raises(typer.BadParameter, match=rf"^{raw} is not in the range 0\.5 to 600$"):
            parse(raw)
    for raw in ("nan", "NaN", "abc", ""):
        with pytest.raises(typer.BadParameter, match=f"^{raw!r} is not a number$"):
            parse(raw)


def test_the_largest_seed_is_numpy_s() -> None:
    np.random.default_rng(SEED_MAX)
    np.random.RandomState(SEED_MAX)
    with pytest.raises(ValueError):
        np.random.RandomState(SEED_MAX + 1)


@pytest.mark.parametrize(("value", "want"), [(None, ".mess"), ("", ".mess"), ("/data/store", "/data/store")])
def test_the_default_store_is_mess_store_unless_it_is_empty(value: str | None, want: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MESS_STORE"} | ({} if value is None else {"MESS_STORE": value})
    got = subprocess.run([sys.executable, "-c", "from mess.cli.options import DEFAULT_STORE_PATH as p; print(p)"],
                         capture_output=True, text=True, env=env, check=True)
    assert got.stdout.strip() == want
