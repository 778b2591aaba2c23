"""`mess demo soundtracks`' builder on tiny local Debian packages: real .deb files (dpkg-deb), a stand-in apt-get that
hands them over as `apt-get download` does, the real dpkg -x, real short audio. What is tested is the set built from
the packages, never the network. Expected answers come from the packages' layout built here (which file is long,
in a sound folder, a copy, of which tone and length), mutagen (the tags read back) and the csv module."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import mutagen
import numpy as np
import pytest
import soundfile as sf

from mess.audio.decode import probe
from mess.datasets.debian import FetchError, unpack_package
from mess.datasets.soundtracks import MIN_SECONDS, fetch_soundtracks

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None or shutil.which("dpkg") is None,
                                reason="dpkg-deb builds the packages and dpkg unpacks them: Debian or Ubuntu only")

RATE = 8000
GAMES = {"alpha-data": "alpha", "beta-data": "beta"}


def _tone(seconds: float, hz: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _audio(path: Path, seconds: float, hz: float, artist: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".m4a", ".mka", ".aac"):
        _m4a(path, _tone(seconds, hz))
    else:
        sf.write(path, _tone(seconds, hz), RATE, format={".ogg": "OGG", ".wav": "WAV", ".mp3": "MP3"}.get(path.suffix,
                                                                                                          "FLAC"))
    if artist is not None:
        audio = mutagen.File(path, easy=True)
        if audio.tags is None:
            audio.add_tags()
        audio.tags["artist"] = artist
        audio.save()


def _m4a(path: Path, samples: np.ndarray) -> None:
    """An AAC track in an MP4 container (.m4a), a Matroska one (.mka) or none (.aac: ADTS frames), encoded by FFmpeg
    (PyAV)."""
    import av

    with av.open(str(path), "w", format={".mka": "matroska", ".aac": "adts"}.get(path.suffix, "ipod")) as out:
        stream = out.add_stream("aac", rate=RATE)
        stream.layout = "mono"
        for start in range(0, samples.size, 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="fltp", layout="mono")
            frame.sample_rate = RATE
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def _deb(debs: Path, package: str, files: dict[str, tuple[float, float, str | None] | Path | str]) -> None:
    """Build ``debs/PACKAGE_1.0_all.deb``: each file a tone (seconds, Hz, artist), a copy of a file, or text."""
    root = debs / f"{package}-build"
    for rel, what in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(what, tuple):
            _audio(target, *what)
        elif isinstance(what, Path):
            shutil.copyfile(what, target)
        else:
            target.write_text(what)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text(f"Package: {package}\nVersion: 1.0\nArchitecture: all\n"
                                             "Maintainer: Tests <tests@example.org>\nDescription: test music\n")
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Znone", "-b", str(root), str(debs / f"{package}_1.0_all.deb")],
                   check=True, capture_output=True)
    shutil.rmtree(root)


def _apt_get(debs: Path, bin_dir: Path) -> Path:
    """A stand-in `apt-get download PACKAGE` that copies PACKAGE's .deb from ``debs`` into the working folder, and
    otherwise fails as apt-get does; dpkg and the rest come from the system's PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "apt-get"
    script.write_text('#!/bin/sh\n[ "$1" = download ] || exit 100\n'
                      f'for f in "{debs}/$2"_*.deb; do [ -f "$f" ] && exec cp "$f" .; done\n'
                      'echo "E: Unable to locate package $2" >&2\nexit 100\n')
    script.chmod(0o755)
    return bin_dir


MUSIC = "usr/share/games/alpha/music"


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alpha-data: two long pieces and a short one in music/, a byte-identical copy in music/copy/, long pieces in
    sfx/ and Sounds/, another long theme.ogg in levels/, a text file. beta-data: one long piece and a copy of
    alpha's music/theme.ogg."""
    debs = tmp_path_factory.mktemp("debs")
    theme = debs / "theme.ogg"
    _audio(theme, MIN_SECONDS + 1, 220.0, "Ann")
    _deb(debs, "alpha-data", {
        f"{MUSIC}/theme.ogg": theme,
        f"{MUSIC}/battle.flac": (MIN_SECONDS + 5, 330.0, None),
        f"{MUSIC}/short.ogg": (10.0, 440.0, "Ann"),
        f"{MUSIC}/copy/theme.ogg": theme,
        "usr/share/games/alpha/sfx/boom.ogg": (MIN_SECONDS + 2, 550.0, None),
        "usr/share/games/alpha/Sounds/wind.flac": (MIN_SECONDS + 3, 660.0, None),
        "usr/share/games/alpha/levels/theme.ogg": (MIN_SECONDS + 4, 440.0, None),
        "usr/share/doc/alpha-data/README": "not music\n",
    })
    _deb(debs, "beta-data", {"usr/share/beta/music/intro.flac": (MIN_SECONDS + 2, 880.0, "Bo"),
                             "usr/share/beta/music/theme.ogg": theme})
    return debs


@pytest.fixture
def apt(debs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = _apt_get(debs, tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def _sha(path: Path) -> bytes:
    import hashlib

    return hashlib.sha256(path.read_bytes()).digest()


def test_the_fixture_s_copies_are_byte_identical(debs: Path, tmp_path: Path, apt: Path) -> None:
    alpha, beta = unpack_package("alpha-data", tmp_path / "a"), unpack_package("beta-data", tmp_path / "b")
    theme = alpha / MUSIC / "theme.ogg"
    assert _sha(theme) == _sha(alpha / MUSIC / "copy" / "theme.ogg") == _sha(beta / "usr/share/beta/music/theme.ogg")


def test_the_set_is_the_long_music_once_labelled_by_game_with_its_artist(apt: Path, tmp_path: Path) -> None:
    out = tmp_path / "set"
    tracks = fetch_soundtracks(out, GAMES)
    # alpha, in path order: levels/theme.ogg (takes the name theme.ogg), music/battle.flac, music/copy/theme.ogg
    # (the first of the two identical files; theme.ogg is taken, so copy__theme.ogg); beta: intro.flac (its
    # theme.ogg is alpha's bytes again). Not: short.ogg (10 s), sfx/, Sounds/, README.
    want = [(out / "alpha" / "theme.ogg", "alpha", None, MIN_SECONDS + 4),
            (out / "alpha" / "battle.flac", "alpha", None, MIN_SECONDS + 5),
            (out / "alpha" / "copy__theme.ogg", "alpha", "Ann", MIN_SECONDS + 1),
            (out / "beta" / "intro.flac", "beta", "Bo", MIN_SECONDS + 2)]
    assert [(t.path, t.game, t.artist) for t in tracks] == [w[:3] for w in want]
    assert [t.duration for t in tracks] == pytest.approx([w[3] for w in want], abs=0.01)
    assert sorted(p for p in out.rglob("*") if p.is_file()) == sorted([out / "manifest.csv", out / ".packages.json"]
                                                                      + [w[0] for w in want])
    for path, game, artist, seconds in want:
        tags = mutagen.File(path, easy=True).tags
        assert tags["album"] == [game]
        assert (tags.get("artist") or [None]) == [artist]
        assert probe(path).duration == pytest.approx(seconds, abs=0.01)
    with (out / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["path", "game", "artist", "duration"]
    assert rows[1:] == [[str(p.resolve()), g, a or "", f"{s:.2f}"] for p, g, a, s in want]


def test_a_second_fetch_answers_from_the_manifest_without_apt(apt: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "set"
    first = fetch_soundtracks(out, GAMES)
    monkeypatch.setenv("PATH", "")
    again = fetch_soundtracks(out, GAMES)
    assert [(t.path, t.game, t.artist) for t in again] == [(t.path, t.game, t.artist) for t in first]
    assert [t.duration for t in again] == [round(t.duration, 2) for t in first]
    (again[1].path).unlink()  # a file gone: the set is fetched again (and apt-get is missing)
    with pytest.raises(FetchError, match="^apt-get is not available: fetching alpha-data needs Debian or Ubuntu$"):
        fetch_soundtracks(out, GAMES)


def test_a_set_whose_manifest_lists_nothing_is_fetched(apt: Path, tmp_path: Path) -> None:
    out = tmp_path / "set"
    out.mkdir()
    (out / "manifest.csv").write_text("path,game,artist,duration\n", encoding="utf-8")
    assert [t.path.name for t in fetch_soundtracks(out, {"beta-data": "beta"})] == ["intro.flac", "theme.ogg"]


def test_a_missing_package_fails_in_one_line_naming_apt_s_reason(apt: Path, tmp_path: Path) -> None:
    with pytest.raises(FetchError) as failed:
        fetch_soundtracks(tmp_path / "set", {"beta-data": "beta", "nosuch-data": "nosuch"})
    assert str(failed.value) == ("apt-get download nosuch-data failed (try apt-get update first): "
                                 "E: Unable to locate package nosuch-data")


def test_unpack_leaves_the_files_and_not_the_package(debs: Path, apt: Path, tmp_path: Path) -> None:
    work = tmp_path / "work" / "deeper"  # made where it is missing
    root = unpack_package("beta-data", work)
    assert root == work / "beta-data-root"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "usr/share/beta/music/intro.flac", "usr/share/beta/music/theme.ogg"]
    assert not list(work.glob("*.deb"))


def test_a_damaged_package_and_missing_tools_fail_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    debs = tmp_path / "debs"
    debs.mkdir()
    (debs / "cut-data_1.0_all.deb").write_bytes(b"!<arch>\nnot a package")
    bin_dir = _apt_get(debs, tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with pytest.raises(FetchError, match=r"^dpkg -x cut-data_1\.0_all\.deb failed: dpkg-deb") as failed:
        unpack_package("cut-data", tmp_path / "work")
    assert "\n" not in str(failed.value)
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    (noisy / "apt-get").write_text('#!/bin/sh\nprintf "start-%0400d-end\\n" 0 >&2\nexit 100\n')
    (noisy / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", f"{noisy}:{os.environ['PATH']}")
    with pytest.raises(FetchError, match=r": 0+-end$") as failed:  # the end of apt's message, where its reason is
        unpack_package("x", tmp_path / "work2")
    assert "start" not in str(failed.value)
    only_apt = tmp_path / "only-apt"
    only_apt.mkdir()
    (only_apt / "apt-get").symlink_to(bin_dir / "apt-get")
    monkeypatch.setenv("PATH", str(only_apt))
    with pytest.raises(FetchError, match="^dpkg is not available: fetching x needs Debian or Ubuntu$"):
        unpack_package("x", tmp_path / "work3")



def test_a_temporary_folder_named_sound_hides_no_music(apt: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Folders of sound effects are skipped by the words in their names: the package's folders, not those of the
    temporary folder it is unpacked in (TMPDIR=/home/soundlab/tmp gave an empty set)."""
    scratch = tmp_path / "soundlab" / "tmp"
    scratch.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    tracks = fetch_soundtracks(tmp_path / "set", {"beta-data": "beta"})
    assert [t.path.name for t in tracks] == ["intro.flac", "theme.ogg"]



def test_files_of_one_name_in_folders_of_one_name_are_all_kept(debs: Path, apt: Path, tmp_path: Path) -> None:
    """Three different x.ogg in a/music/, b/music/, c/music/: the second and third were both named music__x.ogg,
    the third copied over the second, and the manifest listed one file twice."""
    _deb(debs, "gamma-data", {f"usr/share/gamma/{d}/music/x.ogg": (MIN_SECONDS + n, 220.0 * (n + 1), None)
                              for n, d in enumerate("abc")})
    tracks = fetch_soundtracks(tmp_path / "set", {"gamma-data": "gamma"})
    assert [t.path.name for t in tracks] == ["x.ogg", "music__x.ogg", "music__2__x.ogg"]  # as the docstring says
    assert [round(probe(t.path).duration) for t in tracks] == [MIN_SECONDS + n for n in range(3)]



def test_a_user_s_file_at_the_longer_name_is_not_replaced(debs: Path, apt: Path, tmp_path: Path) -> None:
    """A file of the user's at game/theme.ogg sends the copy to the longer name; one there too was overwritten."""
    out = tmp_path / "set"
    (out / "alpha").mkdir(parents=True)
    for name in ("theme.ogg", "levels__theme.ogg"):
        _audio(out / "alpha" / name, 2.0, 100.0, "the user")
    mine = {name: (out / "alpha" / name).read_bytes() for name in ("theme.ogg", "levels__theme.ogg")}
    tracks = fetch_soundtracks(out, {"alpha-data": "alpha"})
    assert {name: (out / "alpha" / name).read_bytes() for name in mine} == mine
    assert len({t.path for t in tracks}) == len(tracks) == 3
    assert not {t.path.name for t in tracks} & set(mine)


def test_a_folder_not_named_in_utf8_is_refused_before_any_fetch(apt: Path, tmp_path: Path) -> None:
    """manifest.csv lists the tracks' paths as UTF-8 (`mess evaluate --labels` reads it so): a folder named in
    Latin-1 got every package fetched and copied, then a UnicodeEncodeError traceback and no manifest, each time."""
    import typer
    from typer.testing import CliRunner

    from mess.cli.demo_data import register

    out = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9"))
    with pytest.raises(FetchError, match="is not named in UTF-8"):
        fetch_soundtracks(out, GAMES)
    assert not out.exists(), "refused before anything is fetched"
    app = typer.Typer()
    register(app)
    got = CliRunner().invoke(app, ["demo", "soundtracks", str(out)])
    assert got.exit_code == 1 and (got.exception is None or isinstance(got.exception, SystemExit))
    assert "caf\\xe9 is not named in UTF-8" in " ".join(got.output.split()) and "Traceback" not in got.output


def test_an_interrupted_fetch_s_copies_are_replaced_not_kept_beside(apt: Path, tmp_path: Path) -> None:
    """Copies of a fetch killed before its manifest (album tag = the game) are the set's own: taken over by name."""
    out = tmp_path / "set"
    first = fetch_soundtracks(out, {"beta-data": "beta"})
    (out / "manifest.csv").unlink()
    (out / "beta" / ".intro.partial.flac").write_bytes(b"cut short")  # killed while copying it again
    _audio(out / "beta" / "theme.ogg", 2.0, 100.0, "x")
    audio = mutagen.File(out / "beta" / "theme.ogg", easy=True)
    audio.tags["album"] = "beta"
    audio.save()
    again = fetch_soundtracks(out, {"beta-data": "beta"})
    assert [t.path for t in again] == [t.path for t in first] == [out / "beta" / n for n in ("intro.flac", "theme.ogg")]
    assert sorted(p.name for p in (out / "beta").iterdir()) == ["intro.flac", "theme.ogg"]
    assert [probe(t.path).duration for t in again] == pytest.approx([MIN_SECONDS + 2, MIN_SECONDS + 1], abs=0.01)


def test_packages_without_music_give_an_empty_set_and_its_manifest(debs: Path, apt: Path, tmp_path: Path) -> None:
    _deb(debs, "quiet-data", {"usr/share/doc/quiet-data/README": "no music\n",
                              "usr/share/games/quiet/sfx/boom.ogg": (MIN_SECONDS + 1, 220.0, None)})
    out = tmp_path / "new" / "set"
    assert fetch_soundtracks(out, {"quiet-data": "quiet"}) == []
    assert (out / "manifest.csv").read_text(encoding="utf-8").splitlines() == ["path,game,artist,duration"]
    assert sorted(p.name for p in out.iterdir()) == [".packages.json", "manifest.csv"]


def test_wav_music_is_labelled_too(debs: Path, apt: Path, tmp_path: Path) -> None:
    """A WAV in a package ended the fetch in a traceback (TypeError: 'wave' not a Frame instance): mutagen's easy
    names do not reach a WAV's ID3 tag."""
    _deb(debs, "wave-data", {"usr/share/wave/music/loop.wav": (MIN_SECONDS + 1, 220.0, None)})
    tracks = fetch_soundtracks(tmp_path / "set", {"wave-data": "wave"})
    assert [t.path.name for t in tracks] == ["loop.wav"]
    assert mutagen.File(tracks[0].path).tags["TALB"].text == ["wave"]
    assert probe(tracks[0].path).duration == pytest.approx(MIN_SECONDS + 1, abs=0.01)


def test_an_mp3_without_a_tag_is_labelled(debs: Path, apt: Path, tmp_path: Path) -> None:
    """mutagen knows an MP3 without an ID3 header by its name only, and the copy was tagged under the name
    '.menu.mp3.partial': it reached the set with no album tag (unlabelled for `mess evaluate --label album`)."""
    _deb(debs, "mp3-data", {"usr/share/mp3/music/menu.mp3": (MIN_SECONDS + 2, 330.0, None)})
    tracks = fetch_soundtracks(tmp_path / "set", {"mp3-data": "mp3"})
    assert [t.path.name for t in tracks] == ["menu.mp3"]
    assert mutagen.File(tracks[0].path, easy=True).tags["album"] == ["mp3"]
    assert sorted(p.name for p in (tmp_path / "set" / "mp3").iterdir()) == ["menu.mp3"]


def test_an_m4a_is_labelled_in_its_own_album_atom(debs: Path, apt: Path, tmp_path: Path) -> None:
    """MP4 names the album '\xa9alb': the tag is written through mutagen's easy names."""
    _deb(debs, "m4a-data", {"usr/share/m4a/music/hymn.m4a": (MIN_SECONDS + 3, 330.0, None)})
    tracks = fetch_soundtracks(tmp_path / "set", {"m4a-data": "m4a"})
    assert [t.path.name for t in tracks] == ["hymn.m4a"]
    assert mutagen.File(tracks[0].path).tags["\xa9alb"] == ["m4a"]


def test_an_apt_get_that_downloads_nothing_is_a_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exit status 0 and no package file (a stand-in, a wrapper that only prints): one line, not an IndexError."""
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    (quiet / "apt-get").write_text('#!/bin/sh\necho "W: nothing to do" >&2\nexit 0\n')
    (quiet / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", f"{quiet}:{os.environ['PATH']}")
    with pytest.raises(FetchError) as failed:
        unpack_package("x", tmp_path / "work")
    assert str(failed.value) == "apt-get download x failed (try apt-get update first): W: nothing to do"


def test_the_command_s_table_counts_each_game(debs: Path, apt: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`mess demo soundtracks DIR` (its six packages replaced by two of the fixture's): one row per game, in the
    packages' order, with its tracks, those with an artist tag and its minutes; the game left, the figures right."""
    import re

    import typer
    from typer.testing import CliRunner

    from mess.cli.demo_data import register
    from mess.datasets import soundtracks

    _deb(debs, "table-data", {f"usr/share/table/music/{n}.ogg": (MIN_SECONDS + n, 110.0 * (n + 2),
                                                                   "Cy" if n > 1 else None) for n in (1, 2, 3)})
    for package in list(soundtracks.PACKAGES):
        monkeypatch.delitem(soundtracks.PACKAGES, package)
    for package, game in (("table-data", "table"), ("beta-data", "beta")):
        monkeypatch.setitem(soundtracks.PACKAGES, package, game)
    app = typer.Typer()
    register(app)
    out = tmp_path / "set"
    got = CliRunner().invoke(app, ["demo", "soundtracks", str(out)], terminal_width=200)
    assert got.exit_code == 0, got.output
    rows = [line for line in got.output.splitlines() if re.search(r"\b(table|beta)\b", line)]
    # table: 46, 47, 48 s, two with an artist; beta: intro.flac (47 s, Bo) and theme.ogg (46 s, Ann)
    want = [("table", 3, 2, 3 * MIN_SECONDS + 6), ("beta", 2, 2, 2 * MIN_SECONDS + 3)]
    assert [re.findall(r"[\w.]+", line) for line in rows] == [[g, str(n), str(a), f"{s / 60:.1f}"]
                                                              for g, n, a, s in want]
    header = next(line for line in got.output.splitlines() if "with artist tag" in line)
    for line in rows:  # each cell starts (the game) or ends (a figure) where its column's heading does
        assert line.index(line.split()[1]) == header.index("game")
        for heading, figure in zip(("tracks", "with artist tag", "minutes"), re.findall(r"[\d.]+", line), strict=True):
            end = header.index(heading) + len(heading)
            assert line[end - len(figure):end] == figure, (line, header)
    text = " ".join(got.output.split())
    assert f"5 tracks in {out} (label: --label album, or --labels {out}/manifest.csv)" in text


def test_raw_aac_is_labelled_and_matroska_copied_as_it_is_and_once_across_a_killed_fetch(debs: Path, apt: Path,
                                                                                         tmp_path: Path) -> None:
    """Raw AAC (ADTS) ended the fetch in a traceback (mutagen's AACError: "doesn't support tags"), leaving
    '.intro.partial.aac'; a Matroska file was copied untagged, and after a fetch killed before its manifest the rerun
    found that copy without the game's album tag, took it for another file and copied it again as
    'music__loop.mka'. The AAC gets an ID3 tag before its frames (FFmpeg reads it, and the same audio), the Matroska
    file is copied as it is (mutagen writes no Matroska tags: labelled by the manifest), and a rerun takes its copies
    over."""
    import av

    made = debs / "untaggable"
    _audio(made / "loop.mka", MIN_SECONDS + 1, 220.0)
    _audio(made / "intro.aac", MIN_SECONDS + 2, 330.0)
    _deb(debs, "mka-data", {"usr/share/mka/music/loop.mka": made / "loop.mka",
                            "usr/share/mka/music/intro.aac": made / "intro.aac"})
    out = tmp_path / "set"
    first = fetch_soundtracks(out, {"mka-data": "mka"})
    assert [t.path for t in first] == [out / "mka" / "intro.aac", out / "mka" / "loop.mka"]
    assert _sha(first[1].path) == _sha(made / "loop.mka")
    with av.open(str(first[0].path)) as copy, av.open(str(made / "intro.aac")) as source:
        assert copy.metadata.get("album") == "mka"
        assert np.array_equal(np.concatenate([f.to_ndarray() for f in copy.decode(audio=0)], axis=1),
                              np.concatenate([f.to_ndarray() for f in source.decode(audio=0)], axis=1))
    assert [t.game for t in first] == ["mka", "mka"]
    (out / "manifest.csv").unlink()  # killed after the copies, before the manifest
    again = fetch_soundtracks(out, {"mka-data": "mka"})
    assert [t.path for t in again] == [t.path for t in first]
    assert sorted(p.name for p in (out / "mka").iterdir()) == ["intro.aac", "loop.mka"]
    # AAC adds its encoder delay and the last frame's padding: a quarter of a second at most here
    assert [probe(t.path).duration for t in again] == pytest.approx([MIN_SECONDS + 2, MIN_SECONDS + 1], abs=0.3)
    with (out / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        assert [(row["path"], row["game"]) for row in csv.DictReader(fh)] == [(str(t.path), "mka") for t in first]


def test_a_manifest_of_other_packages_is_not_the_answer(apt: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A library caller asking for beta-data in a folder that holds alpha-data's complete set got alpha's tracks back
    (any complete manifest was reused): it gets beta's, and the manifest lists them."""
    out = tmp_path / "set"
    alpha = fetch_soundtracks(out, {"alpha-data": "alpha"})
    assert {t.game for t in alpha} == {"alpha"}
    beta = fetch_soundtracks(out, {"beta-data": "beta"})
    assert [(t.path, t.game) for t in beta] == [(out / "beta" / name, "beta") for name in ("intro.flac", "theme.ogg")]
    with (out / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        assert [row["path"] for row in csv.DictReader(fh)] == [str(t.path) for t in beta]
    both = fetch_soundtracks(out, {"alpha-data": "alpha", "beta-data": "beta"})
    assert {t.game for t in both} == {"alpha", "beta"}
    monkeypatch.setenv("PATH", os.environ["PATH"].replace(f"{apt}:", ""))  # no apt-get now: the same set is reused
    assert fetch_soundtracks(out, {"alpha-data": "alpha", "beta-data": "beta"}) == both
