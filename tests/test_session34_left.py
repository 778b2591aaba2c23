"""What earlier sessions left: a typo'd output folder made without a word, a note said outside ``on_note``, and
tables wrapped at a width a pipe does not have."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import warnings
from contextlib import closing
from pathlib import Path

import mutagen.flac
import numpy as np
import pytest
import soundfile as sf
from test_artists_cli import _solo_store

from conftest import mess_here
from mess.store import FeatureStore

MESS = [sys.executable, "-m", "mess.cli"]
SR = 22050
TITLE = "a title long enough that a table of similar tracks is wider than eighty columns, number {}"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 tones, 2 artists of 3, long titles, extracted with dsp."""
    root = tmp_path_factory.mktemp("left34")
    music = root / "music"
    music.mkdir()
    t = np.arange(2 * SR) / SR
    for i in range(6):
        path = music / f"tone{i}.flac"
        sf.write(path, (0.3 * np.sin(2 * np.pi * 110.0 * (i + 1) * t)).astype(np.float32), SR)
        tags = mutagen.flac.FLAC(path)
        tags.update({"artist": f"Artist {i % 2}", "title": TITLE.format(i)})
        tags.save()
    out = mess_here("extract", str(music), "--model", "dsp", "--store", str(root / "store"))
    assert out.returncode == 0, out.stderr
    return root / "store"


# ---------------------------------------------------------------- 1. an output in a folder that is not there

@pytest.mark.parametrize(("args", "made"), [
    (["playlist", "radio", "1", "-n", "2", "-o", "{missing}/radio.m3u8"], False),
    (["playlist", "path", "1", "2", "-n", "3", "-o", "{missing}/path.xspf"], False),
    (["playlist", "clusters", "-k", "2", "-o", "{missing}/mixes"], True),
    (["export", "{missing}/vectors.npz"], False),
    (["evaluate", "--label", "artist", "--plot", "{missing}/eval.png"], False),
    (["artists", "matrix", "--min-tracks", "1", "-o", "{missing}/matrix"], False),
    (["artists", "matrix", "--min-tracks", "1", "-o", "{missing}/heat/"], True),
])
def test_an_output_in_a_missing_folder_is_refused_and_no_folder_made(store: Path, tmp_path: Path, args: list[str],
                                                                     made: bool) -> None:
    """`-o /no/such/dir/r.m3u8` (a typo in a folder's name) made the folders without a word, for every option that
    names a file to write; the folder `clusters -o` and `matrix -o DIR/` name is made, the folders above it not.
    Refused in one `error:` line naming the option, exit code 1, as every other bad value (session 35: it was
    typer's usage box, exit code 2)."""
    missing = tmp_path / "no" / "such"
    done = mess_here(*[a.replace("{missing}", str(missing)) for a in args], "--store", str(store),
                     env={"COLUMNS": "300"})
    said = done.stderr
    assert done.returncode == 1 and said.count("\n") == 1 and said.startswith("error: Invalid value for '"), said
    why = "the folder named, not the folders above it" if made else "no folder for a file it writes"
    assert f"the folder {missing} does not exist; create it first (mess makes {why})" in said, said
    assert not (tmp_path / "no").exists() and done.stdout == ""


def test_an_output_in_a_folder_that_exists_is_written(store: Path, tmp_path: Path) -> None:
    """The folder `clusters -o` names is made in a folder that exists; a playlist goes in an existing folder."""
    done = mess_here("playlist", "clusters", "-k", "2", "-o", str(tmp_path / "mixes"), "--store", str(store))
    assert done.returncode == 0 and len(list((tmp_path / "mixes").glob("*.m3u8"))) == 2, done.stderr
    done = mess_here("playlist", "radio", "1", "-n", "2", "-o", str(tmp_path / "mixes" / "r.m3u8"), "--store",
                     str(store))
    assert done.returncode == 0 and (tmp_path / "mixes" / "r.m3u8").is_file(), done.stderr


# ---------------------------------------------------------------- 2. validate's centring note

def test_validate_says_centring_few_artists_through_on_note(tmp_path: Path) -> None:
    """`validate_layers` said nothing of centring 4 artists (the similarity functions' warning turned off), where
    `similar`, `matrix` and `hybrid` say it through ``on_note``: the CLI printed no note and a library caller got
    none. Now it is a note, once, and no warning."""
    from mess.artists.analysis import ArtistOptions, validate_layers
    from mess.artists.similarity import centring_note

    root = _solo_store(tmp_path / "store")
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({f"Solo {a}": [f"Solo {a ^ 1}"] for a in range(4)}))
    expected = centring_note(4, "--no-center")
    assert expected is not None
    said: list[str] = []
    with closing(FeatureStore(root, readonly=True)) as fs, warnings.catch_warnings():
        warnings.simplefilter("error")
        validate_layers(fs, ref, 2, ArtistOptions(min_tracks=1), on_note=said.append)
        validate_layers(fs, ref, 2, ArtistOptions(min_tracks=1, center=False), on_note=said.append)
    assert said.count(expected) == 1, said
    done = mess_here("artists", "validate", "--reference", str(ref), "-k", "2", "--min-tracks", "1", "--store",
                     str(root), env={"COLUMNS": "300"})
    assert done.returncode == 0, done.stderr
    assert " ".join(done.stderr.split()).count(f"note: {expected}") == 1, done.stderr


# ---------------------------------------------------------------- 5. tables on a pipe

def _similar_rows(store: Path, **run: object) -> tuple[str, list[str]]:
    """`mess similar 1` in a process of its own, stdout a pipe, COLUMNS unset: its stdout, and the names of the
    tracks it lists (from its --json answer and the store)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    args = [*MESS, "similar", "1", "-k", "3", "--model", "dsp", "--store", str(store)]
    answer = subprocess.run([*args, "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert answer.returncode == 0, answer.stderr
    with closing(FeatureStore(store, readonly=True)) as fs:
        names = [fs.track(r["id"]).name for r in json.loads(answer.stdout)["results"]]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, **run)  # type: ignore[call-overload]
    assert done.returncode == 0, done.stderr
    return done.stdout, names


def test_a_table_on_a_pipe_keeps_each_row_on_one_line(store: Path) -> None:
    """`mess similar ... | grep` wrapped the table at 80 columns, a row's track name over two lines."""
    out, names = _similar_rows(store)
    assert len(names) == 3 and all(len(n) > 80 for n in names)
    for name in names:
        assert any(name in line for line in out.splitlines()), out


def test_a_table_into_a_file_typed_in_a_narrow_terminal_is_not_wrapped_at_its_width(store: Path) -> None:
    """`mess similar ... > out.txt` typed in a terminal took the terminal's width (its stdin's) for the file."""
    master, slave = pty.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 60, 0, 0))
        out, names = _similar_rows(store, stdin=slave)
    finally:
        os.close(slave)
        os.close(master)
    for name in names:
        assert any(name in line for line in out.splitlines()), out
