"""Playlist files for real files with awkward names and tags: not UTF-8, a leading '#', line breaks, control
characters; written, parsed and read back, through the API and the CLI."""

from __future__ import annotations

import codecs
import errno
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from mutagen.flac import FLAC
from typer.testing import CliRunner

from conftest import mess_here
from mess.cli.main import app
from mess.playlists.formats import XSPF_NS, read_playlist, write_playlist
from mess.playlists.playlist import Playlist, PlaylistError
from mess.store import Track

runner = CliRunner()
CAFE = os.fsdecode(b"caf\xe9.flac")  # a Latin-1 name: not valid UTF-8


def _flac(path: Path, seed: int, **tags: str) -> Path:
    """A 4 s tagged FLAC at ``path`` (any name the file system takes), a tone set by ``seed``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = 22050
    t = np.arange(4 * rate) / rate
    noise = np.random.default_rng(seed).standard_normal(len(t))
    audio = 0.3 * np.sin(2 * np.pi * 110 * 2 ** (seed / 5) * t) + 0.05 * noise
    sf.write(os.fsencode(path), audio.astype(np.float32), rate, format="FLAC")
    if tags:
        tagged = FLAC(os.fsencode(path))
        for key, value in tags.items():
            tagged[key] = [value]
        tagged.save()
    return path


def _playlist(paths: list[Path], **tags: str) -> Playlist:
    tracks = tuple(Track(i, str(_flac(p, i)), f"hash-{i}", 4.0, tags.get("artist"), tags.get("album"),
                         tags.get("title"), None, None) for i, p in enumerate(paths))
    return Playlist(tags.get("title", "mix"), tracks, tuple(1.0 for _ in tracks))


@pytest.fixture(scope="module")
def six_extracted(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    """6 tagged FLACs of 3 artists and a store of them extracted with dsp, made once for the module: the files are
    read-only, and :func:`six` gives each test a copy of the store."""
    root = tmp_path_factory.mktemp("six")
    files = [_flac(root / "music" / f"{i}.flac", 3 * i, artist=f"Artist {i % 3}", title=str(i)) for i in range(6)]
    out = runner.invoke(app, ["extract", str(root / "music"), "--model", "dsp", "--store", str(root / "store")])
    assert out.exit_code == 0, out.output
    return files, root / "store"


@pytest.fixture
def six(six_extracted: tuple[list[Path], Path], tmp_path: Path) -> tuple[list[Path], Path]:
    """:func:`six_extracted`'s files and a copy of its store of this test's own."""
    files, store = six_extracted
    return files, shutil.copytree(store, tmp_path / "store")


def _xspf(path: Path, tag: str) -> list[str]:
    return [el.text or "" for el in ET.parse(path).getroot().iter(f"{{{XSPF_NS}}}{tag}")]


@pytest.mark.parametrize("ext", ["m3u8", "xspf"])
def test_names_that_are_not_utf8_round_trip_and_replace_an_existing_playlist(tmp_path: Path, ext: str) -> None:
    music = tmp_path / "music"
    paths = [music / CAFE, music / os.fsdecode(b"new\nline \xe9.flac"),
             tmp_path / "other" / os.fsdecode(b"na\xefve.flac")]
    target = music / f"mix.{ext}"
    target.parent.mkdir(parents=True)
    target.write_text("#EXTM3U\nold.flac\n")
    write_playlist(_playlist(paths), target)
    assert read_playlist(target) == paths and all(p.is_file() for p in paths)
    data = target.read_bytes()
    if ext == "m3u8":  # the names' own bytes; a line break inside one: a file:// URI
        assert data.splitlines()[3::2] == [b"caf\xe9.flac", os.fsencode(paths[1].as_uri()), os.fsencode(paths[2])]
        assert data.endswith(b"/music/new%0Aline%20%E9.flac\n#EXTINF:4,na\\xefve\n" + os.fsencode(paths[2]) + b"\n")
    else:
        assert _xspf(target, "location") == ["caf%E9.flac", "new%0Aline%20%E9.flac",
                                             "file://" + os.fsdecode(tmp_path) + "/other/na%EFve.flac"]
        assert _xspf(target, "title") == ["mix", "caf\\xe9", "new\nline \\xe9", "na\\xefve"]
    assert sorted(p.name for p in music.iterdir()) == sorted([*(p.name for p in paths[:2]), target.name])


def test_tags_with_control_characters_keep_both_formats_readable(tmp_path: Path) -> None:
    tags = {"artist": "Ctrl\x01Artist", "album": "Side\x0bA", "title": "Bell\x07 and\n\x1b[31mred\x1b[0m"}
    playlist = _playlist([tmp_path / "a.flac", tmp_path / "b.flac"], **tags)
    write_playlist(playlist, tmp_path / "out" / "p.xspf")
    write_playlist(playlist, tmp_path / "out" / "p.m3u8")
    assert _xspf(tmp_path / "out" / "p.xspf", "creator") == ["CtrlArtist"] * 2  # parses: well-formed XML
    assert _xspf(tmp_path / "out" / "p.xspf", "album") == ["SideA"] * 2
    assert _xspf(tmp_path / "out" / "p.xspf", "title")[1:] == ["Bell and\n[31mred[0m"] * 2
    lines = (tmp_path / "out" / "p.m3u8").read_text().split("\n")
    assert lines[:4] == ["#EXTM3U", "#PLAYLIST:Bell and [31mred[0m", "#EXTINF:4,CtrlArtist - Bell and [31mred[0m",
                         str(tmp_path / "a.flac")] and len(lines) == 7
    for ext in ("xspf", "m3u8"):
        assert read_playlist(tmp_path / "out" / f"p.{ext}") == [tmp_path / "a.flac", tmp_path / "b.flac"]


def test_m3u8_names_with_a_leading_hash_or_a_line_break_are_not_lost(tmp_path: Path) -> None:
    names = ["#1 Hit.flac", "sub/#2.flac", "two\nlines é.flac", "trailing space.flac "]
    paths = [tmp_path / n for n in names]
    write_playlist(_playlist(paths), tmp_path / "p.m3u8")
    entries = [ln for ln in (tmp_path / "p.m3u8").read_bytes().splitlines() if not ln.startswith(b"#")]
    assert entries == [b"./#1 Hit.flac", b"sub/#2.flac", os.fsencode(paths[2].as_uri()), os.fsencode(paths[3].as_uri())]
    assert entries[2].endswith(b"/two%0Alines%20%C3%A9.flac")
    assert read_playlist(tmp_path / "p.m3u8") == paths and all(p.is_file() for p in paths)


def test_m3u8_entries_whose_first_folder_reads_as_a_uri_scheme_start_with_dot_slash(tmp_path: Path) -> None:
    """'file:x/a.flac' and 'http:y/b.flac' were written as they are: as URI references (RFC 3986) they are URIs of
    the schemes file and http, and a URI resolver took them so (urljoin dropped the folder 'file:', kept
    'http:y/b.flac' as a URL). Such entries start with './', as RFC 3986 section 4.2 asks of a relative path whose
    first segment holds a colon; every other entry is written as before."""
    from urllib.parse import quote, unquote, urljoin

    folder = tmp_path / "list"
    names = ["file:x/a.flac", "http:y/b.flac", "x:y.flac", "A+b.c-d:e/f.flac", "a/b:c.flac", "1:x.flac",
             "plain/d.flac", "#1.flac"]
    paths = [folder / n for n in names]
    write_playlist(_playlist(paths), folder / "p.m3u8")
    entries = [os.fsdecode(ln) for ln in (folder / "p.m3u8").read_bytes().splitlines() if not ln.startswith(b"#")]
    assert entries == ["./file:x/a.flac", "./http:y/b.flac", "./x:y.flac", "./A+b.c-d:e/f.flac", "a/b:c.flac",
                       "1:x.flac", "plain/d.flac", "./#1.flac"]
    base = folder.as_uri() + "/"
    for entry, path in zip(entries[:-1], paths[:-1], strict=True):  # '#' starts a URI's fragment: not a reference
        assert unquote(urljoin(base, quote(entry, safe="/:+"))) == unquote(path.as_uri()), entry
    assert read_playlist(folder / "p.m3u8") == paths


def test_a_failed_write_leaves_the_existing_playlist_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "mix.m3u8"
    target.write_bytes(b"#EXTM3U\nkept.flac\n")
    target.chmod(0o640)
    (tmp_path / "link.m3u8").symlink_to(target)
    playlist = _playlist([tmp_path / "music" / "a.flac"])

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", disk_full)
        with pytest.raises(OSError, match="No space left"):
            write_playlist(playlist, tmp_path / "link.m3u8")
    assert target.read_bytes() == b"#EXTM3U\nkept.flac\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.m3u8", "mix.m3u8", "music"]
    write_playlist(playlist, tmp_path / "link.m3u8")
    assert (tmp_path / "link.m3u8").is_symlink() and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert read_playlist(target) == [tmp_path / "music" / "a.flac"]


@pytest.mark.parametrize("ext", ["m3u8", "xspf"])
def test_a_playlist_written_through_a_symbolic_link_names_the_same_tracks_through_it_and_without(tmp_path: Path,
                                                                                               ext: str) -> None:
    """A playlist that is a symbolic link into another folder was written (through the link) with entries relative to
    the link's folder, so opened where it really is (a player given that path) it named files that do not exist. Its
    entries are now absolute; a link within the playlist's own folder keeps relative ones."""
    music = tmp_path / "music"
    paths = [music / "a.flac", music / "sub" / "b.flac"]
    playlist = _playlist(paths)
    real, link = tmp_path / "lists" / f"mix.{ext}", music / f"mix.{ext}"
    real.parent.mkdir()
    real.write_text("")
    link.symlink_to(real)
    write_playlist(playlist, link)
    assert link.is_symlink() and read_playlist(link) == paths == read_playlist(real)
    assert b"sub/b.flac" in real.read_bytes() and str(music).encode() in real.read_bytes()
    (music / f"alias.{ext}").symlink_to(f"mix2.{ext}")
    write_playlist(playlist, music / f"alias.{ext}")
    assert read_playlist(music / f"mix2.{ext}") == paths
    assert str(music).encode() not in (music / f"mix2.{ext}").read_bytes()


def test_cli_writes_every_playlist_of_awkward_files_from_a_real_store(tmp_path: Path) -> None:
    music, store = tmp_path / "music", tmp_path / "store"
    files = [_flac(music / "a.flac", 1, artist="Alpha", title="A"),
             _flac(music / CAFE, 4, artist="Gamma", title="Caf\x07e"),
             _flac(music / "#1 Hit.flac", 7, artist="Beta\x01", title="Hit\x1b[2J"),
             _flac(music / "d.flac", 10, artist="Delta", title="D")]
    out = runner.invoke(app, ["extract", str(music), "--model", "dsp", "--store", str(store)])
    assert out.exit_code == 0, out.output
    (music / "mix.m3u8").write_text("#EXTM3U\nold.flac\n")
    for ext in ("m3u8", "xspf"):
        out = runner.invoke(app, ["playlist", "radio", "a.flac", "-n", "3", "-o", str(music / f"mix.{ext}"),
                                  "--store", str(store)])
        assert out.exit_code == 0, out.output
        assert "Hit[2J" in out.output and not set("\x01\x07\x1b") & set(out.output)  # no escape reaches a terminal
        assert sorted(read_playlist(music / f"mix.{ext}")) == sorted(files[1:])
        out = runner.invoke(app, ["playlist", "clusters", "-k", "1", "-o", str(music / ext), "--format", ext,
                                  "--store", str(store)])
        assert out.exit_code == 0, out.output
        [written] = (music / ext).glob("[!.]*")  # .mess-clusters lists it
        assert sorted(read_playlist(written)) == sorted(files)
    assert len(_xspf(music / "mix.xspf", "track")) == 3


def test_a_line_break_in_a_tag_never_splits_a_table_row(tmp_path: Path) -> None:
    music, store = tmp_path / "music", tmp_path / "store"
    for i, (artist, title) in enumerate([("Alpha\nBand", "Song\nOne"), ("Alpha\nBand", "Song\r\nTwo"),
                                         ("Beta\tBand", "Song \u2028 Three"), ("Beta\tBand", "Song\n\nFour")]):
        _flac(music / f"{i}.flac", 3 * i, artist=artist, title=title)
    out = runner.invoke(app, ["extract", str(music), "--model", "dsp", "--store", str(store)])
    assert out.exit_code == 0, out.output
    artist, title = r"\b(Alpha|Beta) Band\b", r"\bSong (One|Two|Three|Four)\b"
    halves = {r"\b(Alpha|Beta)\b": artist, r"\bBand\b": artist, r"\bSong\b": title, r"\b(One|Two|Three|Four)\b": title}
    for args in (["similar", "0.flac", "-k", "3"], ["playlist", "radio", "0.flac", "-n", "3"],
                 ["playlist", "clusters", "-k", "1"], ["artists", "similar", "alpha band", "--min-tracks", "1"]):
        out = runner.invoke(app, [*args, "--store", str(store)], env={"COLUMNS": "300"})  # wide: no cell wraps
        assert out.exit_code == 0, out.output
        assert re.search(r"(Alpha|Beta) Band", out.output), out.output
        for line in out.output.splitlines():  # each half of a tag stands on the line of the other half
            assert all(len(re.findall(half, line)) == len(re.findall(whole, line)) for half, whole in halves.items()), (
                args, out.output)


def test_clusters_into_a_folder_replace_the_clusters_an_earlier_run_left_there(six: tuple[list[Path], Path],
                                                                              tmp_path: Path) -> None:
    """Running `clusters -o DIR` again (another -k or format) left the earlier run's playlists beside the new ones:
    DIR then held more clusters than asked for, two numbered 01, and tracks in two of them."""
    files, store = six
    out = tmp_path / "clusters"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for k, fmt in (("4", "m3u8"), ("3", "xspf"), ("2", "m3u8")):
        result = runner.invoke(app, ["playlist", "clusters", "-k", k, "-o", str(out), "--format", fmt,
                                     "--store", str(store)])
        assert result.exit_code == 0, result.output
        written = sorted(p for p in out.iterdir() if p.name not in ("notes.txt", ".mess-clusters"))
        assert len(written) == int(k) and all(p.suffix == f".{fmt}" for p in written)
        assert sorted(p for f in written for p in read_playlist(f)) == sorted(files)  # every track once
    assert (out / "notes.txt").read_text() == "mine"


def test_clusters_into_a_folder_keep_the_users_own_numbered_playlists(six: tuple[list[Path], Path],
                                                                     tmp_path: Path) -> None:
    """`clusters -o DIR` removed every NN-name.m3u8 / .xspf in DIR it did not write now, so a user's own
    '01-favourites.m3u8' there was deleted without a word; only the cluster playlists mess wrote are replaced."""
    files, store = six
    out = tmp_path / "playlists"
    mine = {out / "01-favourites.m3u8": f"{files[0]}\n", out / "07-party.xspf": "<playlist/>\n"}
    for path, text in mine.items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    for k in ("3", "2"):
        result = runner.invoke(app, ["playlist", "clusters", "-k", k, "-o", str(out), "--store", str(store)])
        assert result.exit_code == 0, result.output
        written = sorted(p for p in out.iterdir() if p not in mine and not p.name.startswith("."))
        assert len(written) == int(k), written
        assert sorted(p for f in written for p in read_playlist(f)) == sorted(files)
    assert {p: p.read_text() for p in mine} == mine


def test_clusters_replace_the_cluster_playlists_written_before_the_list_existed(six: tuple[list[Path], Path],
                                                                               tmp_path: Path) -> None:
    """A folder of cluster playlists written before `.mess-clusters` existed kept them all beside the new run's
    (old clusters accumulated); mess's own are now recognised by being byte for byte what it writes, while the
    user's playlists there stay, even one named and headed like a cluster's or a radio mess wrote."""
    files, store = six
    out = tmp_path / "clusters"
    out.mkdir()
    for k, fmt in (("3", "m3u8"), ("2", "xspf")):  # two older runs into `out`, which listed nothing
        result = runner.invoke(app, ["playlist", "clusters", "-k", k, "-o", str(tmp_path / k), "--format", fmt,
                                     "--store", str(store)])
        assert result.exit_code == 0, result.output
        for written in (tmp_path / k).glob("[!.]*"):  # the tracks lie outside both folders: the same bytes
            written.rename(out / written.name)
    result = runner.invoke(app, ["playlist", "radio", "0.flac", "-n", "2", "-o", str(out / "03-radio-artist-0-0.m3u8"),
                                 "--store", str(store)])
    assert result.exit_code == 0 and "#PLAYLIST:radio: Artist 0 - 0\n" in (out / "03-radio-artist-0-0.m3u8"
                                                                           ).read_text(), result.output
    mine = {out / "01-favourites.m3u8": f"{files[0]}\n",
            out / "02-road-trip.m3u8": f"#EXTM3U\n#PLAYLIST:Road trip\n#EXTINF:4,on the way\n{files[1]}\n",
            out / "03-radio-artist-0-0.m3u8": (out / "03-radio-artist-0-0.m3u8").read_text()}
    for path, text in mine.items():
        path.write_text(text)
    assert len(list(out.iterdir())) == 3 + 2 + len(mine)
    result = runner.invoke(app, ["playlist", "clusters", "-k", "2", "-o", str(out), "--store", str(store)])
    assert result.exit_code == 0, result.output
    written = sorted(p for p in out.iterdir() if p not in mine and not p.name.startswith("."))
    assert len(written) == 2 and all(p.suffix == ".m3u8" for p in written), written
    assert sorted(p for f in written for p in read_playlist(f)) == sorted(files)
    assert {p: p.read_text() for p in mine} == mine


def test_clusters_never_overwrite_a_users_playlist_of_the_same_name(six: tuple[list[Path], Path],
                                                                    tmp_path: Path) -> None:
    """`clusters -o DIR` wrote over a user's playlist there that had the name of a new cluster playlist (their own
    '01-artist-0-artist-2.m3u8', say); now it stops with one line naming the file, and writes nothing."""
    files, store = six
    out = tmp_path / "playlists"
    args = ["playlist", "clusters", "-k", "2", "--store", str(store)]
    assert runner.invoke(app, [*args, "-o", str(tmp_path / "first")]).exit_code == 0
    name = sorted(p.name for p in (tmp_path / "first").glob("[!.]*"))[0]
    out.mkdir()
    (out / name).write_text(f"{files[0]}\n")
    result = runner.invoke(app, [*args, "-o", str(out)])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and name in result.output, result.output
    assert [p.name for p in out.iterdir()] == [name] and (out / name).read_text() == f"{files[0]}\n"


def test_playlists_name_their_tracks_whose_files_are_gone(tmp_path: Path) -> None:
    """A track deleted from disk since extraction went into radio, path and cluster playlists without a word
    (players then stop on it or skip it); the playlist's note names it and says how to forget it."""
    import json

    music, store = tmp_path / "music", tmp_path / "store"
    files = [_flac(music / f"{i}.flac", 4 * i, artist=f"Artist {i}", title=f"Song {i}") for i in range(5)]
    assert runner.invoke(app, ["extract", str(music), "--model", "dsp", "--store", str(store)]).exit_code == 0
    files[2].unlink()
    for args in (["radio", "0.flac", "-n", "4"], ["path", "0.flac", "4.flac", "-n", "5"]):
        out = runner.invoke(app, ["playlist", *args, "-o", str(music / "mix.m3u8"), "--json", "--store", str(store)])
        assert out.exit_code == 0, out.output
        data = json.loads(out.stdout)
        assert files[2] in read_playlist(music / "mix.m3u8") and str(files[2]) in {t["path"] for t in data["tracks"]}
        assert "no longer on disk" in data["note"] and "2.flac" in data["note"] and "--prune" in data["note"]
        out = runner.invoke(app, ["playlist", *args, "--store", str(store)], env={"COLUMNS": "300"})
        assert out.exit_code == 0 and "no longer on disk" in out.output and "2.flac" in out.output, out.output
    out = runner.invoke(app, ["playlist", "clusters", "-k", "2", "--json", "--store", str(store)])
    assert out.exit_code == 0, out.output
    notes = {str(files[2]) in {t["path"] for t in c["tracks"]}: c["note"] for c in json.loads(out.stdout)["playlists"]}
    assert "2.flac" in notes[True] and "--prune" in notes[True] and notes[False] == ""
    out = runner.invoke(app, ["playlist", "clusters", "-k", "2", "--store", str(store)], env={"COLUMNS": "300"})
    assert out.exit_code == 0 and "no longer on disk" in out.output and "2.flac" in out.output, out.output
    for seed in ("1.flac", "4.flac"):
        data = json.loads(runner.invoke(app, ["playlist", "radio", seed, "-n", "1", "--json", "--store", str(store)]
                                        ).stdout)
        assert ("no longer on disk" in data["note"]) == (data["tracks"][0]["path"] == str(files[2]))


def test_untagged_files_whose_names_end_in_dots_or_spaces_are_titled_without_their_extension(tmp_path: Path) -> None:
    """'b.flac.' and 'song.flac. ' are FLACs to the extractor (mess.constants.audio_suffix); with no title tag their
    title in playlists (JSON, XSPF), track names and a query's label drop '.flac' as for 'x.y.flac' (Path.stem kept
    'b.flac.' and 'song.flac')."""
    import json

    music, store = tmp_path / "music", tmp_path / "store"
    _flac(music / "b.flac.", 1)
    _flac(music / "song.flac. ", 4)
    _flac(music / "x.y.flac", 7)
    _flac(music / "Live.FLAC", 10)
    _flac(music / "d.flac..", 13, artist="Delta")
    out = runner.invoke(app, ["extract", str(music), "--model", "dsp", "--store", str(store)])
    assert out.exit_code == 0 and "5 embedded" in out.output, out.output
    titles = {"b", "song", "x.y", "Live", "d"}
    out = runner.invoke(app, ["playlist", "clusters", "-k", "1", "--json", "--store", str(store)])
    assert out.exit_code == 0, out.output
    [cluster] = json.loads(out.stdout)["playlists"]
    assert {t["title"] for t in cluster["tracks"]} == titles
    assert {t["name"] for t in cluster["tracks"]} == titles - {"d"} | {"Delta - d"}
    out = runner.invoke(app, ["playlist", "clusters", "-k", "1", "-o", str(tmp_path / "xspf"), "--format", "xspf",
                              "--store", str(store)])
    assert out.exit_code == 0, out.output
    [written] = (tmp_path / "xspf").glob("[!.]*")  # .mess-clusters lists it
    assert set(_xspf(written, "title")) == titles | {cluster["title"]}  # the playlist's own title, then the tracks'
    outside = _flac(tmp_path / "other" / "e.flac.", 16, artist="Eps")
    out = runner.invoke(app, ["similar", str(outside), "-k", "1", "--json", "--store", str(store)])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["query"]["label"] == "Eps - e"


def test_a_playlist_is_never_written_over_the_stores_own_files(tmp_path: Path) -> None:
    """`playlist radio 1 -o .mess/catalog.sqlite --format m3u` replaced the catalog with the playlist: every later
    command said the store was damaged, beyond repair ('file is not a database'). `mess export` refused a path in the
    store; playlists are refused there too (through a link as well), before anything is written."""
    music, store = tmp_path / "music", tmp_path / "store"
    for i in range(3):
        _flac(music / f"{i}.flac", 3 * i, artist=f"Artist {i}", title=str(i))
    assert runner.invoke(app, ["extract", str(music), "--model", "dsp", "--store", str(store)]).exit_code == 0
    catalog = (store / "catalog.sqlite").read_bytes()
    (tmp_path / "link").symlink_to(store)
    row_file = next((store / "runs").rglob("*.f16"))
    for args in (["radio", "0.flac", "-n", "2", "-o", str(store / "catalog.sqlite"), "--format", "m3u"],
                 ["path", "0.flac", "2.flac", "-n", "3", "-o", str(tmp_path / "link" / row_file.relative_to(store)),
                  "--format", "xspf"],
                 ["clusters", "-k", "1", "-o", str(store / "runs")]):
        out = runner.invoke(app, ["playlist", *args, "--store", str(store)])
        assert out.exit_code == 1 and "is inside the feature store" in out.output, out.output
    assert (store / "catalog.sqlite").read_bytes() == catalog and not list((store / "runs").glob("*.m3u8"))
    check = runner.invoke(app, ["check", "--store", str(store)])
    assert check.exit_code == 0 and "ok" in check.output, check.output


def test_xspf_file_uris_are_read_in_every_form_rfc_8089_allows(tmp_path: Path) -> None:
    """XSPF locations are URIs: 'file:/music/x.flac' (the form Java's File.toURI writes) and 'FILE:///...' (schemes
    are case-insensitive) were read as relative paths under the playlist's folder, so `mess mpd play` skipped those
    tracks as no longer on disk."""
    music = tmp_path.resolve() / "my music"
    files = [_flac(music / f"{i} #x.flac", i) for i in range(4)]
    quoted = [f.as_uri().removeprefix("file://") for f in files]
    forms = [f"file:{quoted[0]}", f"FILE://{quoted[1]}", f"file://localhost{quoted[2]}", f"file://{quoted[3]}"]
    playlist = tmp_path / "other" / "java.xspf"
    playlist.parent.mkdir()
    tracks = "".join(f"<track><location>{u}</location></track>" for u in forms)
    playlist.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<playlist version="1" xmlns="{XSPF_NS}">'
                        f"<trackList>{tracks}</trackList></playlist>")
    assert read_playlist(playlist) == files
    playlist = tmp_path / "odd.m3u8"  # every entry is parsed as a URI now: a path that is none stays a path
    playlist.write_text("//[x/a.flac\n/m/[live] #1.flac\n")
    assert read_playlist(playlist) == [Path("//[x/a.flac"), Path("/m/[live] #1.flac")]


def test_playing_a_folder_says_it_is_a_folder(tmp_path: Path) -> None:
    """`mess mpd play CLUSTERS_FOLDER` said 'no such playlist file' of a folder that is there."""
    out = runner.invoke(app, ["mpd", "play", str(tmp_path), "--port", "1"])
    assert out.exit_code == 1 and out.output.count("\n") == 1, out.output
    assert f"{tmp_path} is a folder; give a playlist file in it" in out.output


def test_a_seed_typed_composed_finds_a_file_saved_decomposed(tmp_path: Path) -> None:
    """A file saved with a decomposed name (NFD, as macOS saves 'Café') was an 'unknown track' when typed (NFC) as a
    radio's seed or a path's end, by name or by path."""
    import unicodedata

    music = tmp_path.resolve() / "music"
    nfd = unicodedata.normalize("NFD", "Café.flac")
    for i, name in enumerate([nfd, "other.flac", "third.flac"]):
        _flac(music / name, i)
    store = tmp_path / "store"
    out = runner.invoke(app, ["extract", str(music), "--model", "dsp", "--store", str(store)])
    assert out.exit_code == 0, out.output
    typed = unicodedata.normalize("NFC", "Café.flac")
    assert typed != nfd
    for seed in (typed, str(music / typed)):
        out = runner.invoke(app, ["playlist", "radio", seed, "-n", "2", "--store", str(store), "--json"])
        assert out.exit_code == 0, out.output
        assert {Path(t["path"]).name for t in json.loads(out.stdout)["tracks"]} == {"other.flac", "third.flac"}
    out = runner.invoke(app, ["playlist", "path", "other.flac", typed, "-n", "3", "--store", str(store), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["tracks"][-1]["path"] == str(music / nfd)


def test_a_playlist_named_near_the_file_name_limit_is_written(tmp_path: Path) -> None:
    """A playlist named with 250 bytes (the limit is 255) failed with 'File name too long' naming the temp file it is
    written through ('.NAME.XXXXXXXX.tmp', 14 bytes longer); the temp file's name is now cut to fit."""
    target = tmp_path / ("é" * 120 + "x.m3u8")  # 246 bytes in UTF-8
    assert len(os.fsencode(target.name)) <= 255
    written = write_playlist(_playlist([tmp_path / "music" / "a.flac"]), target)
    assert read_playlist(written) == [tmp_path / "music" / "a.flac"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["music", target.name])  # no temp file left


def _fake(path: Path, i: int, duration: float | None = 4.0, **tags: str) -> Track:
    """A track named ``path`` (no file needed to render it)."""
    return Track(i, str(path), f"hash-{i}", duration, tags.get("artist"), tags.get("album"), tags.get("title"), None,
                 None)


def test_by_hand_formats_are_named_by_extension_or_option_and_refused_in_one_line() -> None:
    from mess.playlists.formats import format_named, output_format, playlist_format

    assert [format_named(f) for f in ("m3u8", "m3u", "xspf")] == ["m3u8", "m3u8", "xspf"]
    assert [playlist_format(Path(f"a.{e}")) for e in ("M3U", "m3u8", "XSPF")] == ["m3u8", "m3u8", "xspf"]
    assert output_format(Path("/dev/stdout"), "m3u") == "m3u8" and output_format(Path("a.xspf")) == "xspf"
    assert output_format(Path("a.m3u8"), "m3u") == "m3u8"
    for call, message in ((lambda: format_named("pls"), "unknown playlist format 'pls'"),
                          (lambda: playlist_format(Path("a")), "'(none)'"),
                          (lambda: playlist_format(Path("a.pls")), "'.pls'"),
                          (lambda: output_format(Path("a.xspf"), "m3u8"), "the extension of a.xspf says xspf but"),
                          (lambda: output_format(Path("/dev/stdout")),
                           "'(none)' of /dev/stdout; use .m3u8 or .xspf, or give the format")):
        with pytest.raises(PlaylistError, match=re.escape(message)):
            call()


def test_by_hand_m3u8_and_xspf_hold_what_each_format_defines(tmp_path: Path) -> None:
    """#EXTINF's whole seconds (-1 unknown) and 'Artist - Title'; XSPF's milliseconds, creator and album only when
    tagged, and a relative location that resolves (as URIs do) against the playlist's folder to the file's URI."""
    from urllib.parse import urljoin

    from mess.playlists.formats import render

    tracks = (_fake(tmp_path / "sub dir" / "a b.flac", 1, 10.4, artist="Ann", album="LP", title="Song"),
              _fake(tmp_path / "c.flac", 2, 10.6), _fake("/elsewhere/d.flac", 3, None))
    playlist = Playlist("Mix\nNight", tracks, (1.0, 1.0, 1.0))
    lines = render(playlist, "m3u", tmp_path).splitlines()
    assert lines == ["#EXTM3U", "#PLAYLIST:Mix Night", "#EXTINF:10,Ann - Song", "sub dir/a b.flac", "#EXTINF:11,c",
                     "c.flac", "#EXTINF:-1,d", "/elsewhere/d.flac"]
    assert render(playlist, "m3u8", None, locate=lambda t: f"http://h/{t.id}").splitlines()[3::2] == [
        "http://h/1", "http://h/2", "http://h/3"]
    root = ET.fromstring(render(playlist, "xspf", tmp_path))
    ns = {"x": XSPF_NS}
    assert root.get("version") == "1" and root.findtext("x:title", namespaces=ns) == "Mix\nNight"
    rows = root.findall("x:trackList/x:track", ns)
    assert [urljoin(tmp_path.as_uri() + "/", r.findtext("x:location", namespaces=ns)) for r in rows] == [
        Path(t.path).as_uri() for t in tracks]
    assert [r.findtext("x:duration", namespaces=ns) for r in rows] == ["10400", "10600", None]
    assert [(r.findtext("x:creator", namespaces=ns), r.findtext("x:album", namespaces=ns)) for r in rows] == [
        ("Ann", "LP"), (None, None), (None, None)]
    assert [r.findtext("x:title", namespaces=ns) for r in rows] == ["Song", "c", "d"]


def test_by_hand_m3u_files_of_other_tools_are_read(tmp_path: Path) -> None:
    """Comments, blank lines and CR LF; a UTF-8 byte-order mark; UTF-16 with its mark (Windows' "Unicode"), and
    broken UTF-16; '..' taken off; file:// URIs decoded; stream URLs kept; a path that is no URL kept."""
    music = tmp_path / "music"
    music.mkdir()
    text = "#EXTM3U\r\n\r\n#EXTINF:1,x\r\na.flac\r\n ../up.flac \r\nfile:///m/x%20y.flac\r\nhttp://h:8/s.ogg\r\n"
    (music / "crlf.m3u").write_bytes(codecs.BOM_UTF8 + text.encode())
    expected = [music / "a.flac", tmp_path / "up.flac", Path("/m/x y.flac"), "http://h:8/s.ogg"]
    assert read_playlist(music / "crlf.m3u") == expected
    (music / "wide.m3u8").write_bytes(("#EXTM3U\nçé.flac\r\n/abs.flac").encode("utf-16"))
    assert read_playlist(music / "wide.m3u8") == [music / "çé.flac", Path("/abs.flac")]
    (music / "bad.m3u8").write_bytes(codecs.BOM_UTF16_LE + b"a\x00\x00\xd8")  # a lone high surrogate
    with pytest.raises(PlaylistError, match="not valid UTF-16"):
        read_playlist(music / "bad.m3u8")
    (music / "bad.xspf").write_text("<playlist><trackList>")
    with pytest.raises(PlaylistError, match="is not valid XSPF"):
        read_playlist(music / "bad.xspf")
    with pytest.raises(PlaylistError, match="no such playlist file"):
        read_playlist(music / "none.m3u8")
    with pytest.raises(PlaylistError, match="is a folder"):
        write_playlist(Playlist("x", (), ()), music)


def test_an_xspf_track_whose_location_is_blank_or_a_file_uri_without_a_path_is_no_track(tmp_path: Path) -> None:
    """A <location> holding only white space (a line break, as pretty-printers leave an emptied element) was read as
    the playlist's own folder, listed among its tracks."""
    playlist = tmp_path / "p.xspf"
    playlist.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<playlist version="1" xmlns="{XSPF_NS}"><trackList>'
                        "<track><location>\n    </location><title>t</title></track><track><location/></track>"
                        "<track><location> a.flac </location></track></trackList></playlist>\n")
    assert read_playlist(playlist) == [tmp_path / "a.flac"]
    for uri in ("file://", "FILE://localhost", "file:"):  # a file: URI without a path (was the working folder)
        playlist.write_text(f'<playlist version="1" xmlns="{XSPF_NS}"><trackList><track><location>{uri}</location>'
                            "</track><track><location>a.flac</location></track></trackList></playlist>\n")
        (tmp_path / "p.m3u").write_text(f"{uri}\na.flac\n")
        assert read_playlist(playlist) == [tmp_path / "a.flac"], uri
        in_m3u = [tmp_path / "file:"] if uri == "file:" else []  # in M3U a URI needs its '//', else it is a name
        assert read_playlist(tmp_path / "p.m3u") == [*in_m3u, tmp_path / "a.flac"], uri


def test_by_hand_entries_are_read_as_paths_or_urls_by_their_form(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """M3U entries are paths ('%20' is part of a name; '//srv/x' is an absolute path; 'C://x' a Windows drive, kept
    relative), URLs only with a scheme of two letters or more and a host; XSPF's relative locations are
    percent-decoded; '~' is the home folder; a folder is no playlist."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "p.m3u").write_text("a%20b.flac\n//srv/x.flac\nC://m/c.flac\nws://h/s\n")
    assert read_playlist("~/p.m3u") == [tmp_path / "a%20b.flac", Path("//srv/x.flac"), tmp_path / "C:" / "m" / "c.flac",
                                        "ws://h/s"]
    (tmp_path / "p.xspf").write_text(f'<playlist version="1" xmlns="{XSPF_NS}"><trackList><track>'
                                     "<location>my%20music/a%23.flac</location></track></trackList></playlist>")
    assert read_playlist(tmp_path / "p.xspf") == [tmp_path / "my music" / "a#.flac"]
    with pytest.raises(PlaylistError, match="is a folder; give a playlist file in it"):
        read_playlist(tmp_path)


def test_by_hand_xspf_is_in_the_default_namespace_with_file_uris_outside_its_folder(tmp_path: Path) -> None:
    """As the XSPF specification's examples: <playlist xmlns="http://xspf.org/ns/0/">, no 'ns0:' prefixes; a track
    outside the playlist's folder is a file:// URI."""
    from mess.playlists.formats import render

    text = render(Playlist("p", (_fake("/elsewhere/d.flac", 1),), (1.0,)), "xspf", tmp_path)
    assert f'xmlns="{XSPF_NS}"' in text and "ns0:" not in text
    assert ET.fromstring(text).findtext(f"{{{XSPF_NS}}}trackList/{{{XSPF_NS}}}track/{{{XSPF_NS}}}location") == \
        "file:///elsewhere/d.flac"


def test_entries_into_another_file_system_of_the_music_tree_stay_absolute(tmp_path: Path) -> None:
    """Inside the music tree, entries are relative to the playlist's folder ('../other/a.flac') only for tracks on the
    playlist's file system: '../' into another disk breaks when either is mounted elsewhere. Here the tree is /dev,
    the playlist in /dev/shm (a tmpfs of its own), one track on /dev's file system, the other in /dev/shm. A
    collection that only '/' holds has no tree: entries outside the playlist's folder stay absolute."""
    from mess.playlists.formats import music_tree

    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat("/dev").st_dev:
        pytest.skip("/dev/shm is no file system of its own here")
    root = Path(tempfile.mkdtemp(dir=shm))
    try:
        near = _flac(root / "other" / "a.flac", 1)
        far = Path("/dev") / f"mess-gone-{os.getpid()}" / "b.flac"  # a file gone from disk, on /dev's file system
        tracks = (Track(1, str(near), "h1", 4.0, None, None, None, None, None),
                  Track(2, str(far), "h2", 4.0, None, None, None, None, None))
        playlist = Playlist("mix", tracks, (1.0, 0.5))
        (root / "Playlists").mkdir()
        assert music_tree([str(near), str(far)]) == Path("/dev")
        written = write_playlist(playlist, root / "Playlists" / "mix.m3u8", tree=music_tree([str(near), str(far)]))
        assert [ln for ln in written.read_text().splitlines() if not ln.startswith("#")] == ["../other/a.flac",
                                                                                             str(far)]
        assert music_tree([str(near), str(tmp_path / "c.flac")]) is None
        written = write_playlist(playlist, root / "Playlists" / "mix.m3u8", tree=None)
        assert [ln for ln in written.read_text().splitlines() if not ln.startswith("#")] == [str(near), str(far)]
    finally:
        shutil.rmtree(root)


def test_dash_as_output_without_format_writes_m3u8_to_stdout_and_never_names_dev_stdout(
        six: tuple[list[Path], Path]) -> None:
    """`-o -` without --format ended "unknown playlist extension '(none)' of /dev/stdout", a name the user never typed;
    stdout now gets M3U8 (XSPF with --format xspf), and what is said of it says stdout: 'wrote 3 tracks to stdout',
    and with --json one line saying both would go to stdout. In a real process, the M3U8 read from its stdout."""
    files, store = six
    radio = ["playlist", "radio", str(files[0]), "-n", "3", "--store", str(store)]
    done = subprocess.run([sys.executable, "-m", "mess.cli", *radio, "-o", "-"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "/dev/stdout" not in done.stderr, done.stderr
    assert "wrote 3 tracks to stdout" in done.stderr and done.stdout.startswith("#EXTM3U\n"), done.stdout
    entries = [ln for ln in done.stdout.splitlines() if not ln.startswith("#")]
    assert entries == [t["path"] for t in json.loads(mess_here(*radio, "--json").stdout)["tracks"]]
    streamed = subprocess.run([sys.executable, "-m", "mess.cli", *radio, "-o", "-", "--format", "xspf"],
                              capture_output=True, text=True, timeout=120)
    assert streamed.returncode == 0 and ET.fromstring(streamed.stdout).tag == f"{{{XSPF_NS}}}playlist"
    clash = mess_here(*radio, "-o", "-", "--json")
    assert clash.returncode == 1 and clash.stderr.count("\n") == 1 and "/dev/stdout" not in clash.stderr
    assert "goes to stdout, where --json prints too" in clash.stderr and not clash.stdout, clash
