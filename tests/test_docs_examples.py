"""The docs run as written: every Python block, every ``mess`` and ``curl`` line of README.md and docs/*.md, run
in a sandbox on real audio (notes/docs_session35.md).

The sandbox is a home folder. ``~/Music`` holds 48 three-second excerpts of the rendered corpus (16 pieces x 3,
tagged artist and composer = the composer, album = the piece), also reached as ``demo`` and ``music`` (links, as the
docs name the folder), with ``~/Music/some/track.flac`` and ``~/Music/Artist/Album/song.flac`` among them. Outside
the collection lie ``song.ogg`` and ``demo.mp3`` (also in ``~/Downloads``; other excerpts) and the reference files
``similar.json`` and ``tags.json`` of docs/artists.md. The store is the default one, ``./.mess``, holding the runs
the docs read (musicnn, musicnn-msd and dsp, extracted by ``mess extract`` itself) and a probe of musicnn; each
block runs on a fresh copy of it, its lines in order, in that folder with ``HOME`` set to it. A ``mess`` line's words
are what bash makes of it (quotes, ``~``, comments, a redirection of its output: bash runs the line with ``mess`` a
function that reports its arguments); the command then runs in this process (:func:`conftest.mess_here`) and must
exit 0. :data:`PLACEHOLDERS` replaces the docs' placeholder words and the names of another collection. A ``curl``
line runs in bash with ``--fail`` and ``pipefail`` against a ``mess serve`` of the block's store (a process started
at the block's first curl line), at the port it picked in place of the docs' 8000.

Markers, an HTML comment on the line right above a block, read here so a new block is run by default:
``<!-- docs-test: skip (why) -->`` leaves the block out (no test case: a pytest skip fails .ci/run);
``<!-- docs-test: skip "TEXT" (why) -->`` skips its lines that hold TEXT (several in one comment, separated by
``;``); ``<!-- docs-test: shows "mess ..." -->`` above a plain block says it is what that command prints: each of
its lines without a digit must be printed too (less a note in brackets), and as many numbered rows. Any other line
of a shell block must be skipped by a marker.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mutagen.flac
import pytest
import soundfile as sf
from ports import served_at

from conftest import mess_here

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELLS = {"bash", "sh", "shell", "console"}
PLACEHOLDERS = {"SEED": "1", "Mattias Westlund": "Palestrina"}  # README's radio seed; a Wesnoth composer
START_S, EXCERPT_S, PARTS = 5.0, 3.0, 3  # from 5 s: one piece opens with 6 s of silence
ERAS = {"Palestrina": ["renaissance", "vocal"], "Bach": ["baroque", "vocal"], "Haydn": ["classical"],
        "Mozart": ["classical"]}  # docs/artists.md's --tags file: artist -> tags
SIMILAR = {"Palestrina": ["Bach", "Haydn", "Mozart"], "Bach": ["Palestrina", "Haydn", "Mozart"],
           "Haydn": ["Mozart", "Bach", "Palestrina"], "Mozart": ["Haydn", "Bach", "Palestrina"]}  # its --reference
MARKER = re.compile(r"<!--\s*docs-test:(.*?)-->")
FENCE = re.compile(r"^(```+)\s*(\S*)\s*$")
# the user's cache (exported graphs, filter banks, numba's compiled code), as a real home has one warm: a sandbox home
# of its own made each block export musicnn and compile librosa again (30 s of the sandbox's making)
CACHE = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
REPORT_ARGS = r"""mess() { printf '%s\0' "$@" >&3; { readlink /proc/self/fd/4; } 4>&1 >&3; }"""


@dataclass(frozen=True)
class Block:
    """One fenced block of a page: its language, first line number (of the fence), text and marker comment."""

    page: Path
    line: int
    lang: str
    text: str
    marker: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    def skipped(self) -> str | None:
        """Why the whole block is skipped, or None."""
        found = re.search(r"(?:^|;)\s*skip\s+\(([^)]*)\)", self.marker)
        return found[1] if found else None

    def skipped_lines(self) -> list[str]:
        """The texts whose lines are skipped."""
        return re.findall(r'skip\s+"([^"]+)"\s+\([^)]*\)', self.marker)

    def shows(self) -> str | None:
        """The command this block is the output of, or None."""
        found = re.search(r'shows\s+"([^"]+)"', self.marker)
        return found[1] if found else None

    def commands(self) -> list[str]:
        """The block's shell lines (continuations joined) that are not skipped."""
        lines = self.text.replace("\\\n", " ").splitlines()
        return [ln.strip() for ln in lines if ln.strip() and not any(t in ln for t in self.skipped_lines())]


def blocks(page: Path) -> list[Block]:
    """Every fenced block of ``page``, with the marker comment on the line above it."""
    lines, found, i = page.read_text(encoding="utf-8").splitlines(), [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == fence[1])
        marker = MARKER.search(lines[i - 1]) if i else None
        found.append(Block(page, i + 1, fence[2], "\n".join(lines[i + 1:end]) + "\n", marker[1] if marker else ""))
        i = end + 1
    return found


ALL = [b for page in PAGES for b in blocks(page)]
PYTHON = [b for b in ALL if b.lang == "python"]
SHELL = [b for b in ALL if b.lang in SHELLS]
RUN = [b for b in ALL if not b.skipped()]  # a marked block is no test case: .ci/run fails on a skip
SHOWN = [b for b in ALL if b.shows()]


# ---------------------------------------------------------------- the sandbox


def _excerpts(sources: list[Path], music: Path) -> list[Path]:
    """PARTS excerpts of EXCERPT_S seconds of each source from START_S on, tagged from it, under ``music/Composer/``."""
    written = []
    for src in sources:
        audio, rate = sf.read(src, dtype="float32")
        tags = mutagen.flac.FLAC(src)
        composer, piece = tags["artist"][0], tags["album"][0]
        for part in range(PARTS):
            out = music / composer / f"{src.stem} part {part + 1}.flac"
            out.parent.mkdir(parents=True, exist_ok=True)
            start = int((START_S + part * EXCERPT_S) * rate)
            sf.write(out, audio[start:start + int(EXCERPT_S * rate)], rate)
            flac = mutagen.flac.FLAC(out)
            flac.update({"artist": composer, "composer": composer, "album": piece, "genre": "classical",
                         "title": f"{piece} part {part + 1}"})
            flac.save()
            written.append(out)
    return written


@pytest.fixture(scope="module")
def base(rendered_collection: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared sandbox: music, outside files and a store extracted and probed by ``mess`` itself."""
    home = tmp_path_factory.mktemp("docs-home")
    pieces = sorted(p for p in rendered_collection if p.suffix == ".flac")
    tracks = _excerpts(pieces, home / "Music")
    for name, track in (("some/track.flac", tracks[1]), ("Artist/Album/song.flac", tracks[4])):
        (home / "Music" / name).parent.mkdir(parents=True)
        track.rename(home / "Music" / name)
    audio, rate = sf.read(pieces[0], dtype="float32")  # its last 6 s, outside the excerpts
    sf.write(home / "song.ogg", audio[-int(EXCERPT_S * rate):], rate)
    (home / "Downloads").mkdir()
    sf.write(home / "Downloads" / "demo.mp3", audio[-2 * int(EXCERPT_S * rate):-int(EXCERPT_S * rate)], rate)
    (home / "similar.json").write_text(json.dumps(SIMILAR))
    (home / "tags.json").write_text(json.dumps(ERAS))
    for args in (["extract", "Music"], ["extract", "Music", "--model", "musicnn-msd"],
                 ["extract", "Music", "--model", "dsp"], ["probe", "--model", "musicnn"]):
        done = mess_here(*args, env={"HOME": str(home), "XDG_CACHE_HOME": CACHE, "MESS_STORE": None}, cwd=home)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    return home


@pytest.fixture
def home(base: Path, tmp_path: Path) -> Path:
    """A fresh sandbox for one block: a copy of the store, the rest linked or copied from :func:`base`."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copytree(base / ".mess", home / ".mess")
    for name in ("Music", "Downloads"):
        (home / name).symlink_to(base / name)
    for name in ("demo", "music"):
        (home / name).symlink_to(base / "Music")
    for name in ("song.ogg", "Downloads/demo.mp3", "similar.json", "tags.json"):
        shutil.copy(base / name, home)
    return home


@contextlib.contextmanager
def serving(home: Path) -> Iterator[str]:
    """``mess serve --port 0`` on the sandbox's store, in a process: its base URL while the block runs."""
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": CACHE, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("MESS_STORE", None)
    server = subprocess.Popen([sys.executable, "-m", "mess.cli", "serve", "--port", "0"], cwd=home, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield served_at(server)
    finally:
        server.terminate()
        server.wait(timeout=30)


def run_curl(line: str, home: Path, base_url: str) -> subprocess.CompletedProcess[str]:
    """A doc's ``curl`` line run by bash against :func:`serving`'s server (for the docs' port 8000), with
    ``--fail`` (an HTTP error is exit 22) and ``pipefail`` (so a failure before ``| jq`` is the line's)."""
    line = re.sub(r"(?:http://)?(?:127\.0\.0\.1|localhost):8000", base_url, line)
    script = f'set -o pipefail\ncurl() {{ command curl --fail "$@"; }}\n{line}'
    return subprocess.run(["bash", "-c", script], cwd=home, env={"HOME": str(home), "PATH": os.environ["PATH"]},
                          capture_output=True, text=True, timeout=120)


def run_line(line: str, home: Path) -> subprocess.CompletedProcess[str]:
    """A doc's ``mess`` line run as a shell would read it, in ``home``; its output also lands where it is sent."""
    for word, value in PLACEHOLDERS.items():
        line = re.sub(rf"\b{re.escape(word)}\b", value, line)
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    read, write = os.pipe()
    with os.fdopen(read, "rb") as reported:
        shell = subprocess.run(["bash", "-c", f"exec 3>&{write}\n{REPORT_ARGS}\n{line}"], cwd=home, env=env,
                               capture_output=True, text=True, pass_fds=(write,), timeout=30)
        os.close(write)
        calls = reported.read().decode().splitlines()
    assert shell.returncode == 0 and len(calls) == 1, f"bash ran {line!r} as {len(calls)} mess commands: {shell.stderr}"
    *words, sent_to = calls[0].split("\0")
    done = mess_here(*words, env={"HOME": str(home), "XDG_CACHE_HOME": CACHE, "MESS_STORE": None}, cwd=home)
    if not sent_to.startswith("pipe:"):
        Path(sent_to).write_text(done.stdout)
    return done


# ---------------------------------------------------------------- the blocks


def test_the_pages_hold_the_blocks_this_test_runs() -> None:
    """The parser finds the pages' blocks (a broken fence or marker would silently test nothing), and each line
    marker still names lines of its block."""
    assert len(PYTHON) >= 4 and len(SHELL) >= 15 and len(SHOWN) >= 1, [b.name for b in ALL]
    for block in ALL:
        assert block.marker == "" or re.fullmatch(r'(\s*(skip( "[^"]+")? \([^)]+\)|shows "[^"]+")\s*;?)+\s*',
                                                  block.marker), f"{block.name}: unreadable marker {block.marker!r}"
        stale = [text for text in block.skipped_lines() if text not in block.text]
        assert not stale, f"{block.name}: the marker skips lines holding {stale}, and none does"


@pytest.mark.parametrize("block", [b for b in PYTHON if b in RUN], ids=lambda b: b.name)
def test_the_python_blocks_run_as_written(block: Block, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each Python block runs in the sandbox: imports, a store opened where the docs say, calls as written."""
    monkeypatch.chdir(home)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", CACHE)
    monkeypatch.delenv("MESS_STORE", raising=False)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block.text, block.name, "exec"), {"__name__": "__docs__"})  # noqa: S102 -- the doc's own code
    assert "print(" not in block.text or printed.getvalue(), f"{block.name} printed nothing"


@pytest.mark.parametrize("block", [b for b in SHELL if b in RUN], ids=lambda b: b.name)
def test_the_mess_lines_run_as_written(block: Block, home: Path) -> None:
    """Each ``mess`` line of a shell block exits 0 on the sandbox, the block's lines in order on one store."""
    lines = block.commands()
    strays = [ln for ln in lines if not ln.startswith(("mess ", "curl "))]
    assert not strays, f"{block.name}: neither a mess or curl command nor marked skipped: {strays}"
    base_url = ""
    with contextlib.ExitStack() as stack:
        for line in lines:
            if line.startswith("curl "):
                base_url = base_url or stack.enter_context(serving(home))
                done = run_curl(line, home, base_url)
            else:
                done = run_line(line, home)
            said = f"{done.stdout}\n{done.stderr}"
            assert done.returncode == 0, f"{block.name}: `{line}` exited {done.returncode}\n{said}"


def _table(text: str) -> list[str]:
    """Printed lines with box drawing read as ``|`` and spaces squeezed, border lines left out."""
    lines = [re.sub(r"\s+", " ", re.sub("[│┃]", "|", ln)).strip(" |") for ln in text.splitlines()]
    return [ln for ln in lines if ln and not re.fullmatch(r"[─━┏┓┗┛┡┩└┘┌┐├┤┼╇╈┳┻┬┴╋\s|]+", ln)]


@pytest.mark.parametrize("block", SHOWN, ids=lambda b: b.name)
def test_the_shown_output_is_what_the_command_prints(block: Block, home: Path) -> None:
    """A block marked as a command's output: its words (lines without digits) are printed, and as many rows."""
    done = run_line(block.shows() or "", home)
    assert done.returncode == 0, done.stderr
    shown = [re.sub(r" \([^)]*\)", "", ln) for ln in _table(block.text)]  # a note in brackets is the writer's
    printed = _table(done.stdout)
    for line in shown:
        if not re.search(r"\d", line):
            assert line in printed, f"{block.name}: {line!r} not printed:\n{done.stdout}"
    rows = re.compile(r"\d+ \|")
    assert sum(map(bool, map(rows.match, shown))) == sum(map(bool, map(rows.match, printed))), done.stdout

