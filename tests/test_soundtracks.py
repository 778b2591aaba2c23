"""The soundtrack development set: which files count as music, labels, dedup, cache, manifest."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from conftest import CACHE_ROOT, cache_lock
from mess.audio.decode import probe
from mess.audio.discover import content_hash
from mess.audio.tags import read_tags
from mess.datasets.soundtracks import MIN_SECONDS, PACKAGES, FetchError, fetch_soundtracks, music_files, read_manifest

TWO_GAMES = {package: PACKAGES[package] for package in ("wesnoth-1.16-music", "xmoto-data")}


@pytest.fixture(scope="session")
def soundtracks() -> Path:
    """Two of the games (the tests keep downloads small; the benchmark fetches all six), fetched once."""
    out = CACHE_ROOT / "soundtracks-2"
    try:
        with cache_lock(out):
            fetch_soundtracks(out, TWO_GAMES)
    except FetchError as exc:
        pytest.skip(str(exc))
    return out


def test_only_long_files_outside_sound_folders(wesnoth_tracks: list[Path], rendered_collection: list[Path],
                                               tmp_path: Path) -> None:
    long = next(p for p in wesnoth_tracks if probe(p).duration > 60)
    short = rendered_collection[0]  # 20 s
    for folder, src in (("music", long), ("music", short), ("sfx", long), ("sounds/ambient", long)):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, tmp_path / folder / src.name)
    found = music_files(tmp_path.rglob("*"))
    assert [p for p, _ in found] == [tmp_path / "music" / long.name]
    assert found[0][1] == pytest.approx(probe(long).duration)


def test_music_files_reads_names_as_the_extractor_does(tmp_path: Path) -> None:
    """'a.flac.' and 'b.flac ' are audio to `mess extract` (find_audio, by audio_suffix); the soundtrack set took
    only names whose Path.suffix is an audio extension, so such files were dropped from it (and '.FLAC' kept)."""
    import numpy as np
    import soundfile as sf

    from mess.audio.discover import find_audio

    rate = 8000
    t = np.arange(int((MIN_SECONDS + 1) * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    music = tmp_path / "music"
    music.mkdir()
    for name in ("a.flac.", "b.flac ", "c.FLAC", "d.flac", "notes.flac.txt", "e.flac.bak"):
        sf.write(music / name, tone, rate, format="FLAC")
    sf.write(music / "short.flac", tone[: 10 * rate], rate, format="FLAC")
    found = music_files(tmp_path.rglob("*"))
    assert [p.name for p, _ in found] == ["a.flac.", "b.flac ", "c.FLAC", "d.flac"]
    assert all(duration == pytest.approx(MIN_SECONDS + 1) for _, duration in found)
    assert {p.name for p in find_audio([music])} - {"short.flac"} == {p.name for p, _ in found}


def test_set_is_labelled_by_game_and_deduplicated(soundtracks: Path) -> None:
    tracks = read_manifest(soundtracks)
    games = Counter(t.game for t in tracks)
    assert set(games) == set(TWO_GAMES.values())
    assert min(games.values()) >= 6
    assert all(t.duration >= MIN_SECONDS for t in tracks)
    assert len({content_hash(t.path) for t in tracks}) == len(tracks)
    assert not any("sfx" in t.path.as_posix().lower() or "sound" in t.path.parent.name.lower() for t in tracks)
    tags = [read_tags(t.path) for t in tracks]
    assert [tag["album"] for tag in tags] == [t.game for t in tracks]
    assert [tag["artist"] for tag in tags] == [t.artist for t in tracks]
    assert sum(t.artist is not None for t in tracks) > len(tracks) // 2


def test_second_fetch_is_served_from_the_manifest(soundtracks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")  # no apt-get: only the cache can answer
    again = fetch_soundtracks(soundtracks, TWO_GAMES)
    assert again == read_manifest(soundtracks)
    (soundtracks / "missing-dir").mkdir(exist_ok=True)
    with pytest.raises(FetchError, match="apt-get is not available"):
        fetch_soundtracks(soundtracks / "missing-dir")



def test_cli_lists_the_games_and_fails_in_one_line(soundtracks: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import typer
    from typer.testing import CliRunner

    from mess.cli.demo_data import register

    app = typer.Typer()
    register(app)
    monkeypatch.setenv("PATH", "")
    ok = CliRunner().invoke(app, ["demo", "soundtracks", str(soundtracks)])
    assert ok.exit_code == 0, ok.output
    assert all(game in ok.output for game in TWO_GAMES.values())
    assert f"{len(read_manifest(soundtracks))} tracks" in ok.output
    bad = CliRunner().invoke(app, ["demo", "soundtracks", str(tmp_path / "empty")])
    assert bad.exit_code == 1
    assert "apt-get is not available" in bad.output and "Traceback" not in bad.output


def test_a_fetch_killed_before_its_manifest_is_redone_without_duplicates(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A rerun after a killed fetch (copies made, no manifest yet) found each earlier copy in the way and kept it
    beside a second copy named 'Musics__<name>': the folder held every track twice, and extraction read both."""
    from mess.audio.discover import find_audio
    from mess.datasets import debian, soundtracks

    unpacked: list[Path] = []

    def unpack_once(package: str, work_dir: Path) -> Path:  # apt-get downloads the package once; reruns get a copy
        if not unpacked:
            unpacked.append(debian.unpack_package(package, tmp_path / "apt"))
        return Path(shutil.copytree(unpacked[0], work_dir / unpacked[0].name, symlinks=True))  # as dpkg -x left it

    monkeypatch.setattr(soundtracks, "unpack_package", unpack_once)
    one_game = {"xmoto-data": PACKAGES["xmoto-data"]}
    out = tmp_path / "sound tracks ü"
    try:
        first = fetch_soundtracks(out, one_game)
    except FetchError as exc:
        pytest.skip(str(exc))
    (out / "manifest.csv").unlink()  # killed after the copies, before the manifest
    again = fetch_soundtracks(out, one_game)
    assert [t.path.name for t in again] == [t.path.name for t in first]
    assert sorted(find_audio([out])) == sorted(t.path for t in again) == sorted(t.path for t in read_manifest(out))
    import mutagen

    mine = first[0].path  # now a file of the user's (its album tag is not the game): never replaced
    audio = mutagen.File(mine, easy=True)
    audio.tags["album"] = "my own album"
    audio.save()
    kept = mine.read_bytes()
    (out / "manifest.csv").unlink()
    third = fetch_soundtracks(out, one_game)
    assert mine.read_bytes() == kept
    assert [t.path.name for t in third][1:] == [t.path.name for t in first][1:]
    assert third[0].path.name != mine.name and read_tags(third[0].path)["album"] == one_game["xmoto-data"]


@pytest.mark.parametrize("how", ["moved", "copied"])
def test_a_moved_or_copied_set_is_read_where_it_lies(soundtracks: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """The manifest names absolute paths: a moved set asked apt for all of it again (and failed without apt-get);
    a copied one answered with the original's files, and its manifest (--labels) named files outside the copy."""
    here = tmp_path / "set ü"
    if how == "moved":
        original = tmp_path / "original"
        shutil.copytree(soundtracks, original)
        fetch_soundtracks(original, TWO_GAMES)  # where the move starts: a set whose manifest names its own files
        original.rename(here)
    else:
        shutil.copytree(soundtracks, here)
    monkeypatch.setenv("PATH", "")  # no apt-get: only the folder itself can answer
    tracks = fetch_soundtracks(here, TWO_GAMES)
    assert [t.path for t in tracks] == [here / t.path.parent.name / t.path.name for t in read_manifest(soundtracks)]
    assert [t.path for t in read_manifest(here)] == [t.path for t in tracks]
    written = (here / "manifest.csv").read_text(encoding="utf-8")
    assert str(soundtracks) not in written and written.count(str(here)) == len(tracks)
    assert [(t.game, t.artist, t.duration) for t in tracks] == [(t.game, t.artist, t.duration)
                                                                for t in read_manifest(soundtracks)]


@pytest.mark.parametrize(("text", "why"), [("a,b\n1,2\n", "KeyError: 'path'"),
                                           ("path,game,artist,duration\n/x/y.ogg,g,,abc\n", "ValueError"),
                                           ("path,game,artist,duration\n/x/y.ogg,g\n", "TypeError")])
def test_a_foreign_manifest_fails_in_one_line_and_is_kept(tmp_path: Path, text: str, why: str) -> None:
    """A manifest.csv this command did not write (another tool's, or edited by hand) ended in a KeyError, ValueError
    or TypeError traceback; it is now named in one line, and left as it is."""
    import typer
    from typer.testing import CliRunner

    from mess.cli.demo_data import register

    (tmp_path / "manifest.csv").write_text(text)
    app = typer.Typer()
    register(app)
    got = CliRunner().invoke(app, ["demo", "soundtracks", str(tmp_path)])
    assert got.exit_code == 1
    assert f"is not a manifest this command wrote ({why}" in " ".join(got.output.split())
    assert got.exception is None or isinstance(got.exception, SystemExit)
    assert (tmp_path / "manifest.csv").read_text() == text
