"""`mess mpd radio` / `mess mpd play` against a real MPD server (Debian's mpd) over loopback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from mpd import MPDClient
from ports import refusing_port
from typer.testing import CliRunner, Result

from mess.cli.main import app
from mess.playlists.formats import read_playlist
from mess.playlists.mpd import (
    LIST_BYTES,
    PlayerError,
    _append,
    _lists,
    _music_folder,
    _replace,
    _sendable,
    collection_path,
    collection_track,
    connect,
    known_uris,
    play_files,
    play_first,
    song_uri,
)
from mess.playlists.playlist import artist_key
from mess.playlists.radio import radio
from mess.query import resolve_query
from mess.search.query import collection_query
from mess.store import FeatureStore, Track

runner = CliRunner()
MPD_STARTS = 5  # tries of mpd on a port found free, which another process may take before mpd binds it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mpd_port(extracted_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real mpd on a loopback port whose music folder is the rendered collection (null audio output)."""
    with closing(FeatureStore(extracted_store, readonly=True)) as store:
        music = Path(store.tracks()[0].path).parent
    with _mpd(music, tmp_path_factory.mktemp("mpd")) as port:
        yield port


@contextmanager
def _mpd(music: Path, home: Path, password: str | None = None, settings: str = "") -> Iterator[int]:
    """Run mpd over ``music`` (its state in ``home``; with ``password``, clients without it may do nothing; more
    ``settings`` lines) until its database is scanned; yields its port. mpd takes no port the system picks, so it is
    given one found free a moment before; where another process took that port meanwhile, mpd exits saying so and
    is started again on another (at most :data:`MPD_STARTS` times)."""
    if shutil.which("mpd") is None:
        pytest.skip("mpd is not installed (scripts/install.sh installs Debian's mpd)")
    (home / "playlists").mkdir()
    for _ in range(MPD_STARTS):
        port = _free_port()
        conf = home / "mpd.conf"
        conf.write_text(f'music_directory "{music}"\nplaylist_directory "{home / "playlists"}"\n'
                        f'db_file "{home / "database"}"\nlog_file "{home / "log"}"\nstate_file "{home / "state"}"\n'
                        f'bind_to_address "127.0.0.1"\nport "{port}"\nzeroconf_enabled "no"\n'
                        'audio_output {\n    type "null"\n    name "silent"\n}\n'
                        + (f'password "{password}@read,add,control,admin"\ndefault_permissions ""\n' if password
                           else "")
                        + settings)
        (home / "log").unlink(missing_ok=True)  # what an mpd that found its port taken said
        with (home / "stderr").open("wb") as stderr:
            proc = subprocess.Popen(["mpd", "--no-daemon", str(conf)], stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            if _wait_for_database(port, proc, home, password):
                yield port
                return
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    pytest.fail(f"mpd found the port it was given taken {MPD_STARTS} times")


def _wait_for_database(port: int, proc: subprocess.Popen, home: Path, password: str | None = None) -> bool:
    """Wait until mpd answers and has scanned the music folder (True); False when it exited as its port was taken
    (it says so in its log, ``home/log``, or on its stderr, ``home/stderr``)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = "".join(p.read_text(errors="replace") for p in (home / "log", home / "stderr") if p.exists())
            if "Address already in use" in said:
                return False
            pytest.fail(f"mpd exited ({proc.returncode}): {said}")
        try:
            with connect("127.0.0.1", port, password, timeout=5) as client:
                if "updating_db" not in client.status() and client.stats().get("songs", "0") != "0":
                    return True
                client.update()
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.3)
    pytest.fail("mpd did not scan the music folder within 60 s")


@dataclass
class Library:
    """mpd over ``root/music``, whose database lacks ``music/new.flac`` (added after its scan); a dsp store
    over ``root/downloads`` then ``root/music``, ``downloads/<dup>`` being another piece named as ``music/<dup>``."""

    port: int
    root: Path
    songs: list[str]  # the file names in MPD's database
    dup: str

    def mpd(self, *args: str) -> Result:
        return runner.invoke(app, ["mpd", *args, "--port", str(self.port), "--host", "127.0.0.1"])

    def radio(self, *args: str) -> Result:
        return self.mpd("radio", "--model", "dsp", "--store", str(self.root / "store"), *args)

    def set_queue(self, uris: list[str]) -> None:
        """Queue ``uris`` with the first one current (paused)."""
        with connect("127.0.0.1", self.port) as client:
            client.clear()
            for uri in uris:
                client.add(uri)
            client.play(0)
            client.pause(1)

    def queue(self) -> list[str]:
        with connect("127.0.0.1", self.port) as client:
            return [s["file"] for s in client.playlistinfo()]

    def expected_radio(self, seed: str) -> tuple[list[str], list[str]]:
        """The radio (-n 10) of ``music/seed``: the URIs MPD knows, in order (the radio of the tracks MPD has), and
        the paths under root of the others the radio held."""
        with closing(FeatureStore(self.root / "store", readonly=True)) as store:
            run = store.run("dsp")
            query = collection_query(store, store.track(str(self.root / "music" / seed)).id)
            mpd_has = {t.id for t in store.tracks(run) if Path(t.path).parent.name == "music"
                       and Path(t.path).name in self.songs}
            lacked = [t for t in radio(store, run, [query], 10).tracks if t.id not in mpd_has]
            known = radio(store, run, [query], 10, exclude=frozenset(t.id for t in lacked)).tracks
        return [Path(t.path).name for t in known], [str(Path(t.path).relative_to(self.root)) for t in lacked]


@pytest.fixture(scope="module")
def library(rendered_collection: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    """See :class:`Library`: 4 songs in MPD's database, 2 more files in the store that MPD lacks."""
    from mess.audio.windows import WindowPolicy
    from mess.extract.pipeline import extract
    from mess.models.registry import load_model

    root = tmp_path_factory.mktemp("library").resolve()
    (root / "music").mkdir()
    (root / "downloads").mkdir()
    songs = [f.name for f in rendered_collection[0:16:4]]  # one piece per composer
    for i in range(0, 16, 4):
        shutil.copy(rendered_collection[i], root / "music")
    shutil.copy(rendered_collection[1], root / "downloads" / songs[2])
    with _mpd(root / "music", tmp_path_factory.mktemp("mpd")) as port:
        shutil.copy(rendered_collection[5], root / "music" / "new.flac")
        with closing(FeatureStore(root / "store")) as store:
            for folder in ("downloads", "music"):
                summary = extract(store, sorted((root / folder).iterdir()), load_model("dsp"), WindowPolicy())
                assert not summary.failed, summary.failed
        yield Library(port, root, songs, songs[2])


def _uris_to_tracks(store: FeatureStore, uris: list[str]) -> list:
    by_tail = {t.path: t for t in store.tracks()}
    return [next(t for p, t in by_tail.items() if p.endswith("/" + u)) for u in uris]


def test_mpd_radio_queues_similar_tracks_after_the_current_song(mpd_port: int, extracted_store: Path) -> None:
    with closing(FeatureStore(extracted_store, readonly=True)) as store:
        seed = store.track(3)
        with connect("127.0.0.1", mpd_port) as client:
            client.clear()
            client.add(Path(seed.path).name)
            client.play(0)
            client.pause(1)  # the seed stays the current song however long the commands below take
        out = runner.invoke(app, ["mpd", "radio", "-n", "6", "--port", str(mpd_port), "--host", "127.0.0.1",
                                  "--model", "musicnn-msd", "--store", str(extracted_store)])
        assert out.exit_code == 0, out.output
        with connect("127.0.0.1", mpd_port) as client:
            queue = [s["file"] for s in client.playlistinfo()]
            assert client.status()["state"] == "pause" and client.currentsong()["file"] == queue[0]
        queued = _uris_to_tracks(store, queue)
        assert queued[0].id == seed.id and len(queued) == 7
        run = store.run("musicnn-msd")
        expected = radio(store, run, [resolve_query(store, seed.id, run)], 6)
        assert [t.id for t in queued[1:]] == [t.id for t in expected.tracks]
        artists = [artist_key(t) for t in queued]
        assert all(a != b for a, b in zip(artists, artists[1:], strict=False))
        out = runner.invoke(app, ["mpd", "radio", "-n", "3", "--clear", "--port", str(mpd_port), "--host",
                                  "127.0.0.1", "--model", "musicnn-msd", "--store", str(extracted_store), "--json"])
        assert out.exit_code == 0, out.output
        with connect("127.0.0.1", mpd_port) as client:
            queue = [s["file"] for s in client.playlistinfo()]
        assert [t.id for t in _uris_to_tracks(store, queue)] == [seed.id] + [t.id for t in expected.tracks[:3]]


def test_mpd_radio_never_queues_again_a_song_that_played(mpd_port: int, extracted_store: Path) -> None:
    """A listener plays the seed's closest track, then the seed, and asks for a radio (or refills one as it plays).
    Outside random mode the radio left out only the songs after the current one, so the song just heard was queued
    again, to play next. Every song of MPD's queue is left out now, played or to play: none is queued twice."""
    with closing(FeatureStore(extracted_store, readonly=True)) as store:
        run = store.run("musicnn-msd")
        seed = store.track(3)
        closest = radio(store, run, [resolve_query(store, seed.id, run)], 1).tracks[0]
    with connect("127.0.0.1", mpd_port) as client:
        client.clear()
        client.add(Path(closest.path).name)
        client.add(Path(seed.path).name)
        client.play(1)  # the closest has played
        client.pause(1)
    out = runner.invoke(app, ["mpd", "radio", "-n", "4", "--port", str(mpd_port), "--host", "127.0.0.1", "--model",
                              "musicnn-msd", "--store", str(extracted_store)])
    assert out.exit_code == 0, out.output
    with connect("127.0.0.1", mpd_port) as client:
        queue = [s["file"] for s in client.playlistinfo()]
        assert client.currentsong()["pos"] == "1"
    assert queue[:2] == [Path(closest.path).name, Path(seed.path).name] and len(queue) == 6, queue
    assert len(set(queue)) == len(queue), queue


def _seed_closest_and_its_artists_other(store: FeatureStore) -> tuple[Track, Track, Track]:
    """Track 3 (the seed), the first track of its radio, and another track by that track's artist."""
    run = store.run("musicnn-msd")
    seed = store.track(3)
    closest = radio(store, run, [resolve_query(store, seed.id, run)], 1).tracks[0]
    other = next(t for t in store.tracks(run) if artist_key(t) == artist_key(closest) and t.id != closest.id)
    return seed, closest, other


def _mpd_radio_around(port: int, store_path: Path, store: FeatureStore, songs: list[Track], playing: int,
                      n: int) -> tuple[list[str], list[str]]:
    """`mess mpd radio -n N` with MPD's queue set to ``songs``, the one at ``playing`` current (paused): MPD's queue
    afterwards and the artist of each of its songs."""
    with connect("127.0.0.1", port) as client:
        client.clear()
        for song in songs:
            client.add(Path(song.path).name)
        client.play(playing)
        client.pause(1)
    out = runner.invoke(app, ["mpd", "radio", "-n", str(n), "--port", str(port), "--host", "127.0.0.1",
                              "--model", "musicnn-msd", "--store", str(store_path)])
    assert out.exit_code == 0, out.output
    with connect("127.0.0.1", port) as client:
        queue = [s["file"] for s in client.playlistinfo()]
    return queue, [artist_key(t) for t in _uris_to_tracks(store, queue)]


def test_mpd_radio_keeps_the_artist_of_the_song_before_the_seed_a_window_apart(mpd_port: int,
                                                                                extracted_store: Path) -> None:
    """X by A played, then the seed S by B: the radio's first song was A's too (S's closest other artist), so A played,
    B, then A again, though an artist keeps 3 songs apart (the window); only the seed counted as what played before.
    The songs before the seed in MPD's queue count now: A comes back no sooner than the radio's third song."""
    with closing(FeatureStore(extracted_store, readonly=True)) as store:
        seed, closest, before = _seed_closest_and_its_artists_other(store)
        queue, artists = _mpd_radio_around(mpd_port, extracted_store, store, [before, seed], 1, 4)
    assert len(queue) == 6 and artists[1] != artists[0] and artist_key(closest) == artists[0], artists
    assert all(len(set(artists[i:i + 3])) == 3 for i in range(len(artists) - 2)), artists


def test_mpd_radio_keeps_the_artist_of_the_song_queued_after_it_apart(mpd_port: int, extracted_store: Path) -> None:
    """S plays, T by A is queued after it; the radio (-n 1) goes between them. Its one song was S's closest other
    artist's, A's too: A's two songs played back to back. The songs queued after the radio count in the window now."""
    with closing(FeatureStore(extracted_store, readonly=True)) as store:
        seed, _, later = _seed_closest_and_its_artists_other(store)
        queue, artists = _mpd_radio_around(mpd_port, extracted_store, store, [seed, later], 0, 1)
    assert len(queue) == 3 and queue[2] == Path(later.path).name, queue
    assert all(a != b for a, b in zip(artists, artists[1:], strict=False)), artists


def test_mpd_radio_after_the_queue_played_to_its_end_goes_on_from_its_last_song(mpd_port: int,
                                                                                 extracted_store: Path) -> None:
    """The radio played to its end and MPD stopped, with no current song (MPD forgets it then): the listener asks for
    more, and `mess mpd radio` said "MPD has no current song; play something first". The queue's last song (the one
    heard last) seeds the radio now, queued after it and played."""
    with closing(FeatureStore(extracted_store, readonly=True)) as store:
        run = store.run("musicnn-msd")
        first, seed = store.track(5), store.track(3)
        expected = radio(store, run, [resolve_query(store, seed.id, run)], 3, heard=frozenset({first.id})).tracks
        with connect("127.0.0.1", mpd_port) as client:
            client.clear()
            client.add(Path(first.path).name)
            client.add(Path(seed.path).name)
            client.play(1)
            client.seekcur(max(float(seed.duration or 0) - 0.3, 0))
            deadline = time.monotonic() + 10
            while "song" in client.status() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert client.status()["state"] == "stop" and "song" not in client.status()
        out = runner.invoke(app, ["mpd", "radio", "-n", "3", "--port", str(mpd_port), "--host", "127.0.0.1",
                                  "--model", "musicnn-msd", "--store", str(extracted_store)])
        assert out.exit_code == 0, out.output
        with connect("127.0.0.1", mpd_port) as client:
            queue = [s["file"] for s in client.playlistinfo()]
            status, now = client.status(), client.currentsong()
            client.stop()
    assert queue == [Path(t.path).name for t in (first, seed, *expected)]
    assert status["state"] == "play" and now["pos"] == "2", (status, now)
    with _random_mode(mpd_port, Path(seed.path).name) as client:  # any song may have played last: none seeds
        client.add(Path(first.path).name)
        client.pause(0)
        deadline = time.monotonic() + 20
        while "song" in (playing := client.status()) and time.monotonic() < deadline:  # each song to its end
            if float(playing.get("elapsed", 0)) < float(playing.get("duration", 0)) - 1:
                client.seekcur(float(playing["duration"]) - 0.3)
            time.sleep(0.1)
        assert "song" not in client.status()
        out = runner.invoke(app, ["mpd", "radio", "-n", "3", "--port", str(mpd_port), "--host", "127.0.0.1",
                                  "--model", "musicnn-msd", "--store", str(extracted_store)])
        assert out.exit_code == 1 and "MPD has no current song" in out.output, out.output
        assert len(client.playlistinfo()) == 2


def test_mpd_play_plays_a_playlist_file_in_order(mpd_port: int, extracted_store: Path, tmp_path: Path) -> None:
    out = runner.invoke(app, ["playlist", "path", "2", "15", "-n", "5", "-o", str(tmp_path / "p.xspf"),
                              "--store", str(extracted_store)])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["mpd", "play", str(tmp_path / "p.xspf"), "--port", str(mpd_port),
                              "--host", "127.0.0.1"])
    assert out.exit_code == 0, out.output
    with connect("127.0.0.1", mpd_port) as client:
        queue = [s["file"] for s in client.playlistinfo()]
        status = client.status()
    assert [Path(p).name for p in read_playlist(tmp_path / "p.xspf")] == [Path(u).name for u in queue]
    assert status["state"] == "play" and status["song"] == "0"


def test_mpd_is_started_again_when_its_port_was_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mpd is given a port found free a moment before: another process that took it meanwhile made mpd exit ('Address
    already in use') and the test fail. It is started again on another port."""
    music, home = tmp_path / "music", tmp_path / "home"
    music.mkdir()
    home.mkdir()
    sf.write(music / "a.wav", (0.2 * np.sin(np.arange(8000) / 10)).astype(np.float32), 8000)
    free = _free_port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        given = [taken.getsockname()[1]]  # the first port mpd is given: taken
        monkeypatch.setattr(sys.modules[__name__], "_free_port", lambda: given.pop() if given else free())
        with _mpd(music, home) as port, connect("127.0.0.1", port, None, timeout=5) as client:
            assert port != taken.getsockname()[1] and client.stats()["songs"] == "1"
    assert not given


def test_mpd_errors_are_one_line(extracted_store: Path, tmp_path: Path) -> None:
    with refusing_port() as port:
        out = runner.invoke(app, ["mpd", "radio", "--port", str(port), "--host", "127.0.0.1",
                                  "--store", str(extracted_store)])
    assert out.exit_code == 1 and "cannot reach MPD" in out.output and "Traceback" not in out.output


def test_an_mpd_port_out_of_range_is_said_and_never_dialled(extracted_store: Path) -> None:
    """`mess mpd radio --port 70000` (or MPD_PORT=70000) said 'Connection refused': the system took the port modulo
    65536 and dialled 4464 instead. A port outside 1-65535 is refused, saying so, before anything is dialled (here
    a listener at the port it would wrap to sees no connection); a socket path as host has no port to check."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        wrapped = listener.getsockname()[1] + 65536
        for port in (wrapped, 0, -1):
            with pytest.raises(PlayerError, match=rf"^cannot reach MPD at 127\.0\.0\.1:{port}: the port is out of "
                                                  r"range \(1-65535\)$"):
                with connect("127.0.0.1", port, timeout=1):
                    pass
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing came
    with pytest.raises(PlayerError, match="No such file") as socket_path:
        with connect("/nonexistent/mpd.socket", 70000):
            pass
    assert "out of range" not in str(socket_path.value)
    for option, env in ((["--port", "70000"], {}), ([], {"MPD_PORT": "70000"})):
        out = runner.invoke(app, ["mpd", "radio", *option, "--host", "127.0.0.1", "--store", str(extracted_store)],
                            env=env)
        assert out.exit_code == 1 and "Traceback" not in out.output, out.output
        assert out.output == "error: cannot reach MPD at 127.0.0.1:70000: the port is out of range (1-65535)\n"


def test_mpd_play_skips_files_mpd_lacks_and_keeps_the_queue(library: Library) -> None:
    music = library.root / "music"
    a, b, c = library.songs[:3]
    playlist = library.root / "list.m3u8"
    playlist.write_text(f"{music / a}\n{music / 'new.flac'}\n{music / b}\n")
    library.set_queue([c, a])
    out = library.mpd("play", str(playlist), "--music-dir", str(music))
    assert out.exit_code == 0, out.output
    assert f"not in MPD's database (skipped): {music / 'new.flac'}" in out.output
    assert library.queue() == [a, b]
    playlist.write_text(f"{music / 'new.flac'}\n")
    for args in (["--music-dir", str(music)], []):
        out = library.mpd("play", str(playlist), *args)
        assert out.exit_code == 1 and out.output.count("\n") == 1 and "none of the playlist's files" in out.output
        assert library.queue() == [a, b]  # untouched
    playlist.write_text("#EXTM3U\n#PLAYLIST:empty\n")  # said MPD's database lacked its files: update it?
    out = library.mpd("play", str(playlist))
    assert out.exit_code == 1 and out.output.count("\n") == 1 and "holds no tracks" in out.output, out.output
    assert library.queue() == [a, b]


def test_mpd_play_skips_files_no_longer_on_disk(library: Library) -> None:
    """A playlist's file deleted since MPD's database was updated was queued, and MPD stops playing when it reaches
    it ("Failed to open"); it is now skipped and named. A playlist none of whose files is here (MPD's music folder on
    another machine) is still handed over whole. A file the store never catalogued (a typo, a file that never
    existed) was called 'no longer on disk' too: it is 'not found', in the text and apart in the JSON."""
    music = library.root / "music"
    a, b, c = library.songs[:3]
    playlist = library.root / "gone.m3u8"
    playlist.write_text(f"{music / a}\n{music / b}\n{music / 'never.flac'}\n{music / c}\n")
    library.set_queue([a])
    (music / b).rename(library.root / b)
    try:
        out = library.mpd("play", str(playlist), "--store", str(library.root / "store"))
        assert out.exit_code == 0, out.output
        assert library.queue() == [a, c] and f"no longer on disk (skipped): {music / b}" in out.output, out.output
        assert f"not found (skipped): {music / 'never.flac'}" in out.output and out.output.count("skipped") == 2
        said = json.loads(library.mpd("play", str(playlist), "--store", str(library.root / "store"), "--json").stdout)
        assert (said["gone"], said["not_found"]) == ([str(music / b)], [str(music / "never.flac")])
        without = library.mpd("play", str(playlist), "--store", str(library.root / "no-store"))  # none there: unknown
        assert f"not found (skipped): {music / b}" in without.output and not (library.root / "no-store").exists()
        playlist.write_text(f"{library.root / 'elsewhere' / b}\n")  # found in MPD's database by name
        out = library.mpd("play", "--append", str(playlist))  # MPD plays a: b is not opened while away
    finally:
        (library.root / b).rename(music / b)
    assert out.exit_code == 0 and library.queue() == [a, c, b], out.output


def test_mpd_radio_skips_tracks_mpd_lacks(library: Library) -> None:
    seed = library.songs[0]
    library.set_queue([seed])
    out = library.radio("-n", "10")
    assert out.exit_code == 0, out.output
    known, skipped = library.expected_radio(seed)
    assert "music/new.flac" in skipped and f"downloads/{library.dup}" in skipped  # the latter is not MPD's song
    assert library.queue() == [seed, *known]
    for path in skipped:
        assert f"not in MPD's database (skipped): {library.root / path}" in out.output


def test_mpd_radio_takes_the_next_closest_for_tracks_mpd_lacks(library: Library) -> None:
    """`mess mpd radio -n 3` with a track MPD's database lacks among the 3 closest queued 2 (the store also held
    files outside MPD's folder); it now takes the next closest songs MPD has, as for files gone from disk."""
    with closing(FeatureStore(library.root / "store", readonly=True)) as store:
        run = store.run("dsp")

        def closest(seed: str) -> list[str]:
            query = collection_query(store, store.track(str(library.root / "music" / seed)).id)
            return [str(Path(t.path).relative_to(library.root)) for t in radio(store, run, [query], 3).tracks]

        seeds = [s for s in library.songs if any(not p.startswith("music/") or p == "music/new.flac"
                                                  for p in closest(s))]
    assert seeds, "no seed's 3 closest hold a file MPD lacks: the test shows nothing"
    seed = seeds[0]
    library.set_queue([seed])
    out = library.radio("-n", "3")
    assert out.exit_code == 0, out.output
    queued = library.queue()
    assert queued[0] == seed and len(queued) == 4, out.output
    assert set(queued[1:]) == set(library.songs) - {seed}  # MPD has 4 songs: the other 3 are the radio
    assert "queued 3 tracks" in out.output and "not in MPD's database (skipped)" in out.output


def test_mpd_radio_leaves_out_tracks_whose_files_are_gone(library: Library) -> None:
    """A file deleted since MPD's database was updated was still queued, and MPD stops playing when it reaches one
    ("Failed to open"); the radio now takes the next closest tracks instead and names the gone one."""
    seed = library.songs[0]
    known, _ = library.expected_radio(seed)
    gone, kept = library.root / "music" / known[0], library.root / "kept.flac"
    library.set_queue([seed])
    shutil.move(gone, kept)
    try:
        out = library.radio("-n", "10")
    finally:
        shutil.move(kept, gone)
    assert out.exit_code == 0, out.output
    assert library.queue() == [seed, *known[1:]]
    assert f"1 track is no longer on disk ({gone})" in " ".join(out.output.split())


def test_mpd_stopping_while_the_radio_is_computed_is_one_line_saying_so(library: Library, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """MPD stopped (or restarted) while the radio was computed: the next command found the connection closed, and the
    answer said "MPD refused a command" (or, the connection reset, a traceback); it now says the connection was lost."""
    import mess.playlists.mpd as player

    with _mpd(library.root / "music", tmp_path) as port:
        other = Library(port, library.root, library.songs, library.dup)
        other.set_queue([library.songs[0]])

        def meanwhile(*args: object, **kwargs: object) -> object:
            with connect("127.0.0.1", port) as client:
                client.kill()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # until MPD has gone
                try:
                    with connect("127.0.0.1", port, timeout=1):
                        pass
                except PlayerError:
                    break
            return radio(*args, **kwargs)

        monkeypatch.setattr(player, "radio", meanwhile)
        out = other.radio("-n", "3")
    assert out.exit_code == 1 and out.output.count("\n") == 1, out.output
    assert "lost the connection to MPD" in out.output and "refused" not in out.output, out.output


def test_mpd_radio_plays_next_not_after_the_rest_of_the_queue(library: Library) -> None:
    """With songs queued after the current one, the radio went to the end of the queue (after the rest of an
    album, say) while the command said it was queued after the current song; and it held songs queued there
    already, so they played twice."""
    seed, later = library.songs[0], library.songs[3]
    known, _ = library.expected_radio(seed)
    assert later in known  # the radio of the seed alone holds it
    library.set_queue([seed, later])
    out = library.radio("-n", "10")
    assert out.exit_code == 0, out.output
    queue = library.queue()
    assert queue[0] == seed and queue[-1] == later and queue.count(later) == 1
    assert sorted(queue[1:-1]) == sorted(set(known) - {later})
    out = library.radio("-n", "10", "--clear")
    assert out.exit_code == 0, out.output
    assert library.queue() == [seed, *known]


def test_mpd_with_a_wrong_music_dir_says_so_rather_than_to_extract_again(library: Library) -> None:
    """A --music-dir that is not MPD's music folder (its parent here) answered that the current song is not in the
    collection and to run `mess extract` on MPD's folder, an hour's work that changes nothing."""
    seed = library.songs[0]
    library.set_queue([seed])
    playlist = library.root / "one.m3u8"
    playlist.write_text(f"{library.root / 'music' / seed}\n")
    for args in (["radio", "--model", "dsp", "--store", str(library.root / "store")], ["play", str(playlist)]):
        out = library.mpd(*args, "--music-dir", str(library.root))
        assert out.exit_code == 1 and out.output.count("\n") == 1, out.output
        assert "--music-dir" in out.output and "mess extract" not in out.output, out.output
        assert library.queue() == [seed]


def test_mpd_radio_seeds_from_the_file_mpd_plays_not_a_namesake(library: Library) -> None:
    library.set_queue([library.dup])
    out = library.radio("-n", "10")
    assert out.exit_code == 1 and out.output.count("\n") == 1, out.output
    assert "--music-dir" in out.output
    assert all(str(library.root / d / library.dup) in out.output for d in ("music", "downloads"))
    assert library.queue() == [library.dup]
    out = library.radio("-n", "10", "--music-dir", str(library.root / "music"))
    assert out.exit_code == 0, out.output
    known, _ = library.expected_radio(library.dup)
    assert library.queue() == [library.dup, *known] and known


def test_mpd_radio_seeds_from_the_current_song_as_it_is_now_when_changed_since_extraction(
        rendered_collection: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A current song replaced since extraction (Bach's piece now holds Palestrina's) seeded the radio with the
    vectors of what it held before, without a word: `mess similar PATH` and `mess playlist radio FILE` embed it."""
    from mess.query import embed_query

    root = tmp_path.resolve()
    music, home, _ = _dsp_collection(root, rendered_collection[0:16:2])  # two pieces per composer
    song = rendered_collection[0].name
    shutil.copy(rendered_collection[13], music / song)  # another piece, not in the collection
    with _mpd(music, home) as port, closing(FeatureStore(root / "store", readonly=True)) as store:
        run = store.run("dsp")
        now = radio(store, run, [embed_query(store, music / song, run)], 3).tracks
        before = radio(store, run, [collection_query(store, str(music / song))], 3).tracks
        assert [t.id for t in now] != [t.id for t in before]
        library = Library(port, root, [p.name for p in music.iterdir()], song)
        library.set_queue([song])
        out = library.radio("-n", "3")
        assert out.exit_code == 0, out.output
        assert library.queue() == [song, *(Path(t.path).name for t in now)]
        assert f"{music / song} has changed since it was extracted" in caplog.text


def test_mpd_handles_file_names_that_are_not_utf8_or_hold_a_line_break(rendered_collection: list[Path],
                                                                        tmp_path: Path) -> None:
    """A song named in Latin-1 made every command whose answer named it a UnicodeDecodeError traceback (python-mpd2
    decodes strictly), and a playlist entry with a line break broke `mess mpd play` with MPD's protocol error."""
    from mess.audio.windows import WindowPolicy
    from mess.extract.pipeline import extract
    from mess.models.registry import load_model

    root = tmp_path.resolve()
    music, home = root / "music", root / "mpd"
    music.mkdir()
    home.mkdir()
    latin = os.fsdecode(b"caf\xe9.flac")
    names = ["a.flac", "b.flac", latin, "line\nbreak.flac"]
    for name, source in zip(names, rendered_collection[0:16:4], strict=True):
        shutil.copy(source, music / name)
    with closing(FeatureStore(root / "store")) as store:
        assert not extract(store, sorted(music.iterdir()), load_model("dsp"), WindowPolicy()).failed
    with _mpd(music, home) as port:
        library = Library(port, root, names, latin)
        with connect("127.0.0.1", port) as client:
            client.clear()
            client.add("")  # a, b and café: MPD leaves the name with a line break out of its database
            known = [s["file"] for s in client.playlistinfo()]
            client.clear()
            client.add(latin)
            client.play(0)
            client.pause(1)
        out = library.radio("-n", "3")
        assert out.exit_code == 0, out.output
        queue = library.queue()
        assert sorted(known) == sorted(names[:3]) and queue[0] == latin and sorted(queue[1:]) == ["a.flac", "b.flac"]
        assert f"not in MPD's database (skipped): {music / 'line break.flac'}" in out.output  # printed on one line
        playlist = root / "list.m3u8"
        playlist.write_bytes(os.fsencode("\n".join([str(music / "b.flac"), str(music / latin)]) + "\n"))
        with playlist.open("a", encoding="utf-8") as f:
            f.write("file://" + str(music / "line%0Abreak.flac") + "\n")
        out = library.mpd("play", str(playlist))
        assert out.exit_code == 0, out.output
        assert library.queue() == ["b.flac", latin]


def test_mpd_host_may_carry_the_password_as_mpc_reads_it(rendered_collection: list[Path], tmp_path: Path) -> None:
    """MPD_HOST=PASSWORD@HOST (mpc's form) was taken as a host name, so an MPD with a password could not be used
    at all (and the error printed the password)."""
    root = tmp_path.resolve()
    music, home = root / "music", root / "mpd"
    music.mkdir()
    home.mkdir()
    for source in rendered_collection[:2]:
        shutil.copy(source, music)
    playlist = root / "list.m3u8"
    playlist.write_text("".join(f"{music / p.name}\n" for p in rendered_collection[:2]))
    with _mpd(music, home, password="s3cret") as port:
        def play(host: str) -> Result:
            return runner.invoke(app, ["mpd", "play", str(playlist), "--port", str(port)], env={"MPD_HOST": host})

        out = play("s3cret@127.0.0.1")
        assert out.exit_code == 0, out.output
        with connect("127.0.0.1", port, "s3cret") as client:
            assert [s["file"] for s in client.playlistinfo()] == [p.name for p in rendered_collection[:2]]
        out = play("wrong@127.0.0.1")
        assert out.exit_code == 1 and out.output.count("\n") == 1 and "refused the password" in out.output
        out = play("127.0.0.1")  # said only that MPD refused the command: no word of how to give mess the password
        assert out.exit_code == 1 and out.output.count("\n") == 1 and "permission" in out.output, out.output
        assert "--host PASSWORD@HOST" in out.output
        assert "wrong" not in out.output.replace("incorrect password", "")


def test_mpd_play_that_mpd_refuses_halfway_leaves_the_queue_as_it_was(rendered_collection: list[Path],
                                                                       tmp_path: Path) -> None:
    """A queue MPD caps (max_playlist_length) takes only part of a playlist: the songs it did add are taken out again
    by their song ids, and the queue is as it was. A playlist that fits the cap replaces a queue (it was refused:
    the new songs were added before the old were removed, so a full queue could never be replaced)."""
    music, home = tmp_path / "music", tmp_path / "mpd"
    music.mkdir()
    home.mkdir()
    for source in rendered_collection[:7]:
        shutil.copy(source, music)
    names = [p.name for p in rendered_collection[:7]]
    playlist = tmp_path / "list.m3u8"
    playlist.write_text("".join(f"{music / n}\n" for n in names[3:]))
    with _mpd(music, home, settings='max_playlist_length "5"\n') as port:
        library = Library(port, tmp_path, names, "")
        library.set_queue(names[:3])
        out = library.mpd("play", str(playlist), "--append")
        assert out.exit_code == 1 and "refused to queue the tracks" in out.output, out.output
        assert library.queue() == names[:3]
        out = library.mpd("play", str(playlist))
        assert out.exit_code == 0, out.output
        assert library.queue() == names[3:]
        playlist.write_text("".join(f"{music / n}\n" for n in names[:6]))  # more than MPD's queue takes
        with connect("127.0.0.1", port) as client:
            before = client.status()
        out = library.mpd("play", str(playlist))
        assert out.exit_code == 1 and "refused to queue the tracks" in out.output, out.output
        assert library.queue() == names[3:]
        with connect("127.0.0.1", port) as client:  # left alone: the same songs, still playing
            assert {k: client.status()[k] for k in ("state", "songid")} == {k: before[k] for k in ("state", "songid")}


@pytest.mark.parametrize("state", ["play", "pause", "stop"])
def test_mpd_play_append_leaves_what_mpd_plays_alone(library: Library, state: str) -> None:
    """`mess mpd play --append` jumped to the first added track, cutting off the song MPD was playing; now the
    songs are only added, and the first of them starts only when MPD was stopped."""
    a, b, c, d = library.songs
    playlist = library.root / "append.m3u8"
    playlist.write_text(f"{library.root / 'music' / c}\n{library.root / 'music' / d}\n")
    library.set_queue([a, b])
    with connect("127.0.0.1", library.port) as client:
        client.play(1)
        {"pause": lambda: client.pause(1), "stop": client.stop, "play": lambda: None}[state]()
    out = library.mpd("play", "--append", str(playlist))
    assert out.exit_code == 0 and "queued 2 tracks" in out.output, out.output
    with connect("127.0.0.1", library.port) as client:
        status, current = client.status(), client.currentsong()
    assert library.queue() == [a, b, c, d]
    assert (status["state"], current["file"]) == (("play", c) if state == "stop" else (state, b))


def test_mpd_radio_plays_next_and_in_order_in_random_mode(mpd_port: int, extracted_store: Path) -> None:
    """In MPD's random mode the radio queued after the current song played at random among the whole queue; now its
    songs carry MPD's highest priorities (falling in the radio's order), which random mode plays first. A song
    queued before the current one may still play there, so the radio leaves it out (it was queued twice)."""
    with closing(FeatureStore(extracted_store, readonly=True)) as store:
        run = store.run("musicnn-msd")
        seed = store.track(3)
        first = radio(store, run, [resolve_query(store, seed.id, run)], 1).tracks[0]
        expected = radio(store, run, [resolve_query(store, seed.id, run)], 5, exclude=frozenset({first.id})).tracks
        others = [t for t in store.tracks(run) if t not in (seed, first, *expected)][:5]
    with connect("127.0.0.1", mpd_port) as client:
        client.clear()
        for t in (first, seed, *others):  # the radio's first before the seed: in random mode still to play
            client.add(Path(t.path).name)
        client.random(1)
        client.play(1)
        client.pause(1)
    try:
        out = runner.invoke(app, ["mpd", "radio", "-n", "5", "--port", str(mpd_port), "--host", "127.0.0.1",
                                  "--model", "musicnn-msd", "--store", str(extracted_store)])
        assert out.exit_code == 0, out.output
        played = []
        with connect("127.0.0.1", mpd_port) as client:
            for _ in expected:
                client.next()
                played.append(client.currentsong()["file"])
    finally:
        with connect("127.0.0.1", mpd_port) as client:
            client.random(0)
    assert played == [Path(t.path).name for t in expected]


@contextmanager
def _random_mode(port: int, current: str) -> Iterator[MPDClient]:
    """MPD in random mode with only ``current`` queued, current and paused; random mode is off again afterwards."""
    with connect("127.0.0.1", port) as client:
        client.clear()
        client.add(current)
        client.random(1)
        client.play(0)
        client.pause(1)
        try:
            yield client
        finally:
            client.random(0)


def test_mpd_second_radio_in_random_mode_plays_first_not_interleaved(mpd_port: int, extracted_store: Path,
                                                                      tmp_path: Path) -> None:
    """A second radio in random mode took the first one's priorities (255, 254, ...) while the first's songs still
    held them, so the two played interleaved. It now plays first, in order (as it is queued first outside random
    mode); the rest of the first keeps its order after it, a song another client gave a lower priority keeps it, and
    `mpd play --append` (no priority) comes after them all."""
    def queue_radio() -> list[str]:
        out = runner.invoke(app, ["mpd", "radio", "-n", "4", "--port", str(mpd_port), "--host", "127.0.0.1",
                                  "--model", "musicnn-msd", "--store", str(extracted_store), "--json"])
        assert out.exit_code == 0, out.output
        return list(json.loads(out.stdout)["queued"])

    with closing(FeatureStore(extracted_store, readonly=True)) as store:
        seed, other = (Path(store.track(i).path).name for i in (3, 9))
        paths = [Path(t.path) for t in store.tracks()]
    with _random_mode(mpd_port, seed) as client:
        first = queue_radio()
        other_id = client.addid(other)
        client.prioid(100, other_id)
        second = queue_radio()
        assert not set(first) & set(second) and other not in first + second
        assert client.playlistid(other_id)[0]["prio"] == "100"
        last = next(p for p in paths if p.name not in {seed, other, *first, *second})
        (tmp_path / "last.m3u8").write_text(f"{last}\n")
        out = runner.invoke(app, ["mpd", "play", "--append", str(tmp_path / "last.m3u8"), "--port", str(mpd_port),
                                  "--host", "127.0.0.1"])
        assert out.exit_code == 0, out.output
        played = []
        for _ in range(10):
            client.next()
            played.append(client.currentsong()["file"])
    assert played == [*second, *first, other, last.name]


def test_mpd_random_mode_plays_255_songs_in_order_and_says_so(mpd_port: int, extracted_store: Path) -> None:
    """MPD's priorities run 255 to 1: past 255 songs the rest of a radio shares priority 1 (random order among
    themselves); :func:`play_first` says how many play in order, which `mpd radio` notes."""
    with closing(FeatureStore(extracted_store, readonly=True)) as store:
        names = [Path(t.path).name for t in store.tracks()]
    with _random_mode(mpd_port, names[0]) as client:
        client.command_list_ok_begin()
        for i in range(300):
            client.addid(names[1 + i % (len(names) - 1)])
        ids = [str(i) for i in client.command_list_end()]
        assert play_first(client, ids) == 255
        prio = {s["id"]: int(s.get("prio", 0)) for s in client.playlistinfo()}
    assert [prio[i] for i in ids] == [*range(255, 0, -1), *[1] * 45]


def test_mpd_radio_clear_removes_by_song_id_what_followed_the_seed(mpd_port: int, extracted_store: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`--clear` removed the queue's positions after the radio as they were once it was computed: when MPD had moved
    on meanwhile (in random mode, to a song before the seed), it removed songs still to play there, among them one
    the radio had left out for that reason, and a song another client had just queued. It now removes, by song id,
    only the songs that followed the seed when the command began, never the one MPD plays now."""
    import mess.playlists.mpd as player

    with closing(FeatureStore(extracted_store, readonly=True)) as store:
        b0, b1, seed, a0, a1, x = (Path(store.track(i).path).name for i in (1, 5, 3, 9, 12, 14))

    def meanwhile(*args: object, **kwargs: object) -> object:  # another client acts while the radio is computed
        with connect("127.0.0.1", mpd_port) as other:
            other.playid(other.playlistfind("file", b0)[0]["id"])
            other.pause(1)
            other.add(x)
        return radio(*args, **kwargs)

    monkeypatch.setattr(player, "radio", meanwhile)
    with _random_mode(mpd_port, b0) as client:
        for name in (b1, seed, a0, a1):
            client.add(name)
        client.play(2)
        client.pause(1)
        out = runner.invoke(app, ["mpd", "radio", "-n", "3", "--clear", "--port", str(mpd_port), "--host",
                                  "127.0.0.1", "--model", "musicnn-msd", "--store", str(extracted_store), "--json"])
        assert out.exit_code == 0, out.output
        queued = json.loads(out.stdout)["queued"]
        assert [s["file"] for s in client.playlistinfo()] == [b0, *queued, b1, seed, x]
        assert b1 not in queued and client.currentsong()["file"] == b0


def test_mpd_follows_symbolic_links_in_its_music_folder(rendered_collection: list[Path], tmp_path: Path) -> None:
    """A folder linked into MPD's music folder (music/linked -> elsewhere/album) is stored by extraction where the
    link leads, so with --music-dir a song there was 'not in the collection' (`mpd radio`) and 'not in MPD's
    database' (`mpd play`); MPD's songs now map to the collection's files through the links."""
    from mess.audio.discover import find_audio
    from mess.audio.windows import WindowPolicy
    from mess.extract.pipeline import extract
    from mess.models.registry import load_model

    root = tmp_path.resolve()
    music, album, home = root / "music", root / "elsewhere" / "album", root / "mpd"
    for folder in (music, album, home):
        folder.mkdir(parents=True)
    for source in rendered_collection[0:16:4]:
        shutil.copy(source, music)
    for source in rendered_collection[1:16:4]:
        shutil.copy(source, album)
    (music / "linked").symlink_to(album)
    with closing(FeatureStore(root / "store")) as store:
        assert not extract(store, find_audio([music]), load_model("dsp"), WindowPolicy()).failed
        assert all(t.path.startswith(str(album)) == ("/" in t.path.removeprefix(f"{music}/"))
                   for t in store.tracks())  # the linked songs are stored where the link leads
    linked = sorted(f"linked/{p.name}" for p in album.iterdir())
    with _mpd(music, home) as port:
        library = Library(port, root, [], "")
        library.set_queue([linked[0], linked[1]])
        out = library.radio("-n", "5")  # the link's name is not the folder's: MPD's song is found by --music-dir
        assert out.exit_code == 1 and out.output.count("\n") == 1 and "--music-dir" in out.output, out.output
        out = library.radio("-n", "5", "--music-dir", str(music))
        assert out.exit_code == 0, out.output
        queue = library.queue()
        assert queue[0] == linked[0] and queue[-1] == linked[1] and queue.count(linked[1]) == 1  # not queued twice
        assert len(queue) == 7 and "not in MPD's database" not in out.output, out.output
        playlist = root / "list.m3u8"
        playlist.write_text(f"{album / Path(linked[2]).name}\n{music / Path(queue[1]).name}\n")
        out = library.mpd("play", str(playlist), "--music-dir", str(music))
        assert out.exit_code == 0 and "not in MPD's database" not in out.output, out.output
        assert library.queue()[0] == linked[2]


def test_mpd_radio_leaves_out_copies_of_the_songs_queued_after_the_seed(rendered_collection: list[Path],
                                                                        tmp_path: Path) -> None:
    """The radio leaves out the songs queued after the current one (else heard twice), but queued a copy of one of
    them under another name (the same recording: a duplicate the radio never picks twice itself)."""
    from mess.audio.windows import WindowPolicy
    from mess.extract.pipeline import extract
    from mess.models.registry import load_model

    music = tmp_path / "music"
    music.mkdir()
    pieces = rendered_collection[0:16:4]  # one piece per composer
    for piece in pieces:
        shutil.copy(piece, music)
    shutil.copy(pieces[1], music / "zz-copy.flac")
    with closing(FeatureStore(tmp_path / "store")) as store:
        summary = extract(store, sorted(music.iterdir()), load_model("dsp"), WindowPolicy())
        assert not summary.failed, summary.failed
        run = store.run("dsp")
        seed, queued, copy = (store.track(str(music / name)) for name in (pieces[0].name, pieces[1].name,
                                                                          "zz-copy.flac"))
        unqueued = radio(store, run, [collection_query(store, seed.id)], 10, exclude=frozenset({queued.id}))
        assert copy.id in [t.id for t in unqueued.tracks]  # what the radio picks with the song merely left out
    (tmp_path / "mpd-home").mkdir()
    with _mpd(music, tmp_path / "mpd-home") as port:
        lib = Library(port, tmp_path, [p.name for p in pieces], "")
        lib.set_queue([pieces[0].name, pieces[1].name])
        out = lib.radio("-n", "10")
        assert out.exit_code == 0, out.output
        queue = lib.queue()
    assert queue[:1] == [pieces[0].name] and queue[-1] == pieces[1].name and len(queue) > 2
    assert "zz-copy.flac" not in queue


def test_mpd_play_without_music_dir_queues_each_file_not_a_namesake_higher_up(rendered_collection: list[Path],
                                                                             tmp_path: Path) -> None:
    """Without --music-dir a file was queued as the first of MPD's songs whose URI ended its path: music/sub/x.flac
    became MPD's x.flac (music/x.flac, another piece), so the playlist played that one twice."""
    root = tmp_path.resolve()
    music, home = root / "music", root / "mpd"
    (music / "sub").mkdir(parents=True)
    home.mkdir()
    shutil.copy(rendered_collection[0], music / "x.flac")
    shutil.copy(rendered_collection[5], music / "sub" / "x.flac")
    playlist = root / "list.m3u8"
    playlist.write_text("music/sub/x.flac\nmusic/x.flac\n")
    with _mpd(music, home) as port:
        library = Library(port, root, [], "")
        out = library.mpd("play", str(playlist))
        assert out.exit_code == 0, out.output
        assert library.queue() == ["sub/x.flac", "x.flac"]


def test_mpd_radio_slower_than_mpds_connection_timeout_is_still_queued(library: Library, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """MPD closes a connection idle for its connection_timeout (60 s by default; a radio whose current song changed
    since extraction is embedded again first, minutes with a large model on a CPU): the radio was then lost with
    "lost the connection to MPD ... did it stop or restart?"; mess now connects again and queues it."""
    import mess.playlists.mpd as player

    def slow(*args: object, **kwargs: object) -> object:
        time.sleep(2.5)  # the computation outlasts MPD's connection_timeout of 1 s below
        return radio(*args, **kwargs)

    with _mpd(library.root / "music", tmp_path, settings='connection_timeout "1"\n') as port:
        other = Library(port, library.root, library.songs, library.dup)
        seed = library.songs[0]
        other.set_queue([seed])
        monkeypatch.setattr(player, "radio", slow)
        out = other.radio("-n", "10", "--json")
        assert out.exit_code == 0, out.output
        queued = json.loads(out.stdout)["queued"]
        assert len(queued) > 1 and other.queue() == [seed, *queued]  # this MPD's database has new.flac too


def _dsp_collection(tmp_path: Path, pieces: list[Path]) -> tuple[Path, Path, list[str]]:
    """``pieces`` copied into tmp_path/music and extracted with dsp into tmp_path/store; (music, an MPD home, the
    songs' names)."""
    from mess.audio.windows import WindowPolicy
    from mess.extract.pipeline import extract
    from mess.models.registry import load_model

    music, home = tmp_path / "music", tmp_path / "mpd-home"
    music.mkdir()
    home.mkdir()
    for piece in pieces:
        shutil.copy(piece, music)
    with closing(FeatureStore(tmp_path / "store")) as store:
        assert not extract(store, sorted(music.iterdir()), load_model("dsp"), WindowPolicy()).failed
    return music, home, sorted(p.name for p in music.iterdir())


def test_mpd_radio_when_the_queue_holds_every_other_track_says_so(rendered_collection: list[Path],
                                                                 tmp_path: Path) -> None:
    """With every other track of the collection queued after the current song, the radio queued nothing and said
    only "only 0 tracks fit (artists spread, no duplicates)", as if the collection lacked tracks; it now says that
    the songs queued already were left out."""
    music, home, songs = _dsp_collection(tmp_path, rendered_collection[0:16:4])
    with _mpd(music, home) as port:
        lib = Library(port, tmp_path, songs, "")
        lib.set_queue(songs)
        out = lib.radio("-n", "10")
        assert out.exit_code == 0, out.output
        assert lib.queue() == songs
    assert "queued 0 tracks" in out.output and "none of the 3 queued already" in out.output.replace("\n", " ")


def _pid_of(argument: str) -> int:
    """The id of the process started with ``argument`` on its command line."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and argument.encode() in (proc / "cmdline").read_bytes().split(b"\0"):
                return int(proc.name)
        except OSError:  # gone meanwhile
            continue
    raise LookupError(argument)


def test_mpd_that_stops_answering_mid_command_is_one_line(rendered_collection: list[Path], tmp_path: Path) -> None:
    """An MPD that hangs while mess talks to it (stopped, or blocked on a disk) made the next command end in a
    TimeoutError traceback; it is now a PlayerError saying MPD did not answer."""
    import signal

    music, home = tmp_path / "music", tmp_path / "mpd-home"
    music.mkdir()
    home.mkdir()
    shutil.copy(rendered_collection[0], music)
    with _mpd(music, home) as port:
        pid = _pid_of(str(home / "mpd.conf"))
        try:
            with pytest.raises(PlayerError, match="did not answer within 1 s"), \
                    connect("127.0.0.1", port, timeout=1) as client:
                os.kill(pid, signal.SIGSTOP)
                client.status()
        finally:
            os.kill(pid, signal.SIGCONT)


def test_mpd_play_of_a_playlist_longer_than_mpds_command_list_limit(rendered_collection: list[Path],
                                                                    tmp_path: Path) -> None:
    """MPD closes the connection on a command list of its max_command_list_size (2048 KiB by default: some 20,000
    long names): a large playlist ended in "lost the connection to MPD ... did it stop or restart?" and was never
    queued. The commands now go in lists well below the limit (64 KiB here, which 2,000 songs pass)."""
    music, home = tmp_path / "music", tmp_path / "mpd-home"
    music.mkdir()
    home.mkdir()
    names = [p.name for p in rendered_collection[0:16:4]]
    for piece in rendered_collection[0:16:4]:
        shutil.copy(piece, music)
    playlist = tmp_path / "all.m3u8"
    playlist.write_text("".join(f"{music / name}\n" for name in names * 500))
    with _mpd(music, home, settings='max_command_list_size "64"\n') as port:
        lib = Library(port, tmp_path, names, "")
        lib.set_queue(names[:1])
        out = lib.mpd("play", str(playlist), "--music-dir", str(music))
        assert out.exit_code == 0, out.output
        assert lib.queue() == names * 500


def test_mpd_radio_clear_replaces_the_songs_after_the_current_one_in_a_full_queue(rendered_collection: list[Path],
                                                                                  tmp_path: Path) -> None:
    """`mpd radio --clear` queued the radio before removing the songs it replaces, so in a full queue (MPD's
    max_playlist_length, 5 here) MPD refused it; the songs after the current one now go first when only that fits."""
    music, home, songs = _dsp_collection(tmp_path, rendered_collection[0:12:2])
    with _mpd(music, home, settings='max_playlist_length "5"\n') as port:
        lib = Library(port, tmp_path, songs, "")
        lib.set_queue(songs[:5])
        out = lib.radio("-n", "3", "--clear", "--json")
        assert out.exit_code == 0, out.output
        queued = json.loads(out.stdout)["queued"]
        assert len(queued) == 3 and lib.queue() == [songs[0], *queued]
        lib.set_queue(songs[:5])
        out = lib.radio("-n", "3")  # without --clear there is no room: refused, the queue as it was
        assert out.exit_code == 1 and "refused to queue the tracks" in out.output, out.output
        assert lib.queue() == songs[:5]


def test_mpd_play_of_relative_entries_through_a_linked_folder(rendered_collection: list[Path], tmp_path: Path) -> None:
    """A playlist beside the music naming 'linked/a.flac' (linked -> a folder elsewhere, MPD's song linked/a.flac)
    was read as the link's target, so without --music-dir it was skipped as 'not in MPD's database'; the same entry
    written as an absolute path played. Relative entries now keep the names they give."""
    root = tmp_path.resolve()
    music, album, home = root / "music", root / "elsewhere" / "album", root / "mpd"
    for folder in (music, album, home):
        folder.mkdir(parents=True)
    shutil.copy(rendered_collection[0], music / "a.flac")
    shutil.copy(rendered_collection[5], album / "b.flac")
    (music / "linked").symlink_to(album)
    playlist = music / "list.m3u8"
    playlist.write_text("linked/b.flac\na.flac\n")
    assert read_playlist(playlist) == [music / "linked" / "b.flac", music / "a.flac"]
    with _mpd(music, home) as port:
        library = Library(port, root, [], "")
        out = library.mpd("play", str(playlist))
        assert out.exit_code == 0, out.output
        assert library.queue() == ["linked/b.flac", "a.flac"]


def test_mpd_play_of_a_utf16_m3u(rendered_collection: list[Path], tmp_path: Path) -> None:
    """An M3U saved as UTF-16 (Windows tools' "Unicode" text) was read byte by byte: entries full of NUL bytes, sent to
    MPD as they were, ended in "MPD refused a command: ... Missing closing '\"'"; it is now read as UTF-16."""
    root = tmp_path.resolve()
    music, home = root / "music", root / "mpd"
    music.mkdir()
    home.mkdir()
    names = ["a.flac", "café ü.flac"]
    for name, source in zip(names, rendered_collection, strict=False):
        shutil.copy(source, music / name)
    playlist = root / "list.m3u"
    playlist.write_bytes(("#EXTM3U\r\n" + "".join(f"{music / n}\r\n" for n in reversed(names))).encode("utf-16"))
    with _mpd(music, home) as port:
        library = Library(port, root, names, "")
        out = library.mpd("play", str(playlist))
        assert out.exit_code == 0, out.output
        assert library.queue() == names[::-1]


def test_mpd_play_skips_an_entry_with_a_nul_byte(library: Library) -> None:
    """A playlist entry holding a NUL byte (a damaged or binary file) was sent to MPD, which stopped reading the line
    there: "MPD refused a command: ... Missing closing '\"'", nothing played. It is skipped as MPD cannot have it."""
    a, b = library.songs[:2]
    elsewhere = library.root / "elsewhere"  # none of the entries on disk here: all are looked up in MPD's database
    playlist = library.root / "nul.m3u8"
    playlist.write_bytes(f"{elsewhere / a}\n".encode() + os.fsencode(str(elsewhere)) + b"/x\0y.flac\n"
                         + f"{elsewhere / b}\n".encode())
    out = library.mpd("play", str(playlist))
    assert out.exit_code == 0, out.output
    assert library.queue() == [a, b] and "not in MPD's database (skipped)" in out.output


@contextmanager
def _http(folder: Path) -> Iterator[str]:
    """An HTTP server of ``folder``'s files on a loopback port (as `mess serve` streams tracks); yields its base URL."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()


@pytest.mark.parametrize("ext", ["m3u8", "xspf"])
def test_mpd_play_hands_stream_urls_to_mpd(library: Library, ext: str) -> None:
    """`mess serve`'s playlists name tracks by URL (http://HOST/api/tracks/ID/audio): `mess mpd play` read each URL as
    a file path under the playlist's folder ('no longer on disk (skipped): .../http:/127.0.0.1...'), and a playlist of
    URLs only as 'MPD's database has none of the playlist's files'. URLs now go to MPD as they are, in order."""
    from mess.playlists.formats import render
    from mess.playlists.playlist import Playlist
    from mess.store import Track

    a, b = library.songs[:2]
    file = library.root / "music" / a
    tracks = (Track(1, "web", "h1", 1.0, None, None, "web", None, None),
              Track(2, str(file), "h2", 1.0, None, None, "a", None, None))
    with _http(library.root / "music") as base:
        url = f"{base}/{b}"
        locations = {1: url, 2: str(file) if ext == "m3u8" else file.as_uri()}
        playlist = library.root / f"web.{ext}"  # as the server writes it, a local file beside
        playlist.write_text(render(Playlist("mix", tracks, (1.0, 1.0)), ext, locate=lambda t: locations[t.id]))
        out = library.mpd("play", str(playlist))
        assert out.exit_code == 0, out.output
        assert library.queue() == [url, a] and "skipped" not in out.output, out.output
        only = library.root / "urls.m3u8"
        only.write_text(f"{url}\n")
        out = library.mpd("play", str(only))
        assert out.exit_code == 0, out.output
        assert library.queue() == [url]
        library.set_queue([a])  # MPD stops streaming from the server before it goes


def test_mpd_radio_from_a_stream_says_it_is_one(library: Library) -> None:
    """MPD playing a stream (a `mess serve` playlist's URL) as the radio's seed was 'not in the collection of this
    store; run `mess extract` on MPD's music folder', advice that cannot help; it now says the song is a stream."""
    with _http(library.root / "music") as base:
        url = f"{base}/{library.songs[1]}"
        with connect("127.0.0.1", library.port) as client:
            client.clear()
            client.add(url)
            client.add(library.songs[0])
            client.play(0)
            client.pause(1)
        out = library.radio("-n", "3")
        queue = library.queue()
        library.set_queue([library.songs[0]])  # MPD stops streaming from the server before it goes
    assert out.exit_code == 1 and out.output.count("\n") == 1, out.output
    assert f"MPD's current song {url} is a stream" in out.output and "mess extract" not in out.output
    assert queue == [url, library.songs[0]]


def test_mpd_radio_seeded_by_a_local_clients_file_leaves_out_what_is_queued(rendered_collection: list[Path],
                                                                            tmp_path: Path) -> None:
    """MPD plays a file outside its database by absolute path when a local client (over its socket) added it as
    file:///...: the music folder was taken to be '' (the seed's path less that URI), so the songs queued after it
    were not known as queued, and the radio queued them again."""
    import tempfile

    from mess.audio.windows import WindowPolicy
    from mess.extract.pipeline import extract
    from mess.models.registry import load_model

    root = tmp_path.resolve()
    music, outside, home = root / "music", root / "outside", root / "mpd"
    for folder in (music, outside, home):
        folder.mkdir()
    for piece in rendered_collection[0:16:4]:
        shutil.copy(piece, music)
    seed = Path(shutil.copy(rendered_collection[1], outside))
    with closing(FeatureStore(root / "store")) as store:
        assert not extract(store, sorted([*music.iterdir(), seed]), load_model("dsp"), WindowPolicy()).failed
    songs = sorted(p.name for p in music.iterdir())
    socket_dir = Path(tempfile.mkdtemp(prefix="mpd", dir="/tmp"))  # a socket's path has at most 107 bytes
    try:
        sock = str(socket_dir / "socket")
        with _mpd(music, home, settings=f'bind_to_address "{sock}"\n'):
            with connect(sock) as client:
                client.clear()
                client.add(seed.as_uri())  # only a local client may
                for song in songs[:2]:
                    client.add(song)
                client.play(0)
                client.pause(1)
            out = runner.invoke(app, ["mpd", "radio", "-n", "10", "--model", "dsp", "--store", str(root / "store"),
                                      "--host", sock])
            assert out.exit_code == 0, out.output
            with connect(sock) as client:
                queue = [s["file"] for s in client.playlistinfo()]
    finally:
        shutil.rmtree(socket_dir)
    assert queue[0] == str(seed) and queue[-2:] == songs[:2]
    assert sorted(queue[1:-2]) == songs[2:]  # the radio: the other two, none queued twice


@pytest.fixture(scope="module")
def tiny_mpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A real mpd over five 1-second WAVs, two named a.wav (one in sub/); no store: the player's side alone."""
    root = tmp_path_factory.mktemp("tiny-mpd").resolve()
    music = root / "music"
    (music / "sub").mkdir(parents=True)
    (root / "home").mkdir()
    t = np.arange(8000) / 8000
    for i, name in enumerate(["a.wav", "c.wav", "d.wav", "sub/a.wav", "sub/b.wav"]):
        sf.write(music / name, (0.2 * np.sin(2 * np.pi * 220 * (i + 1) * t)).astype(np.float32), 8000)
    with _mpd(music, root / "home") as port:
        yield port, music


def _track(i: int, path: str) -> Track:
    return Track(i, path, f"h{i}", 1.0, None, None, None, None, None)


def test_mpd_uris_and_collection_tracks_map_both_ways(tmp_path: Path) -> None:
    """MPD's URIs to the collection's tracks and back, without a player: the file of the music folder when it is
    known, else the one track the URI ends; the music folder is the seed's path less its URI."""
    tracks = [_track(1, "/m/a.wav"), _track(2, "/m/sub/a.wav"), _track(3, "/m/sub/b.wav"), _track(4, "/x/c.wav")]
    assert collection_track(tracks, "sub/a.wav") == tracks[1] and collection_track(tracks, "/m/sub/b.wav") == tracks[2]
    assert collection_track(tracks, "b.wav") == tracks[2] and collection_track(tracks, "z.wav") is None
    assert collection_track(tracks, "ub/b.wav") is None  # a URI ends at a folder's boundary
    with pytest.raises(PlayerError, match="may be any of /m/a.wav, /m/sub/a.wav"):
        collection_track(tracks, "a.wav")
    assert collection_track(tracks, "a.wav", Path("/m")) == tracks[0]
    assert collection_track(tracks, "c.wav", Path("/m")) is None
    paths = {t.path for t in tracks}
    assert collection_path(None, "a.wav", paths) == ""
    assert collection_path(Path("/m"), "sub/b.wav", paths) == "/m/sub/b.wav"
    assert collection_path(None, "/m/a.wav", paths) == "/m/a.wav"  # a local client's file:// song
    real, link = tmp_path / "real.wav", tmp_path / "link.wav"
    real.touch()
    link.symlink_to(real)
    assert collection_path(tmp_path, "link.wav", {str(link)}) == str(link)  # a catalogued path is kept as it is
    assert collection_path(tmp_path, "link.wav", {str(real)}) == str(real)  # else where the link leads
    queue = [{"file": "http://radio.example/x.wav"}, {"file": "a.wav"}, {"file": "sub/b.wav"}, {}]
    assert _music_folder(tracks, queue, tracks[1], "sub/a.wav") == Path("/m")
    assert _music_folder(tracks, queue, tracks[0], "/m/a.wav") == Path("/m")  # from sub/b.wav: a.wav is two files
    assert _music_folder(tracks, queue[:2], tracks[0], "/m/a.wav") is None
    assert not _sendable(Path("/m/a\nb.wav")) and not _sendable(Path("/m/a\0b.wav")) and _sendable(Path("/m/a b.wav"))


def test_mpd_command_lists_keep_every_command_in_order_and_under_the_limit() -> None:
    """Each list holds what MPD reads of it (its escaped arguments, quotes doubled at worst) within LIST_BYTES, and
    the lists hold every command once, in order: a run of long names is cut where the next would pass the limit."""
    commands = [(i, "/m/" + "é" * (100 + 37 * (i % 50)) + '"') for i in range(400)]
    batches = list(_lists(commands))
    assert [c for b in batches for c in b] == commands and all(batches)
    sent = [sum(len(f"addid {a} \"{b}\"\n".encode()) * 2 for a, b in batch) for batch in batches]  # worst escaping
    assert max(sent) <= LIST_BYTES
    for batch, following in zip(batches, batches[1:], strict=False):  # none cut early: the next one would not fit
        assert sum(len(f"addid {a} \"{b}\"\n".encode()) for a, b in (*batch, following[0])) > LIST_BYTES // 3
    assert list(_lists([])) == [] and list(_lists([("x" * LIST_BYTES,)])) == [[("x" * LIST_BYTES,)]]


def test_mpd_player_side_queues_all_or_none_and_orders_priorities(tiny_mpd: tuple[int, Path]) -> None:
    """URIs MPD knows, a queue replaced or appended to whole, and random mode's priorities, against a real mpd."""
    port, music = tiny_mpd
    with connect("127.0.0.1", port) as client:
        assert song_uri(client, music / "sub" / "a.wav", music) == "sub/a.wav"
        assert song_uri(client, Path("/elsewhere/sub/a.wav")) == "sub/a.wav"  # the longest URI the path ends with
        assert song_uri(client, Path("/elsewhere/a.wav")) == "a.wav"
        assert song_uri(client, Path("/elsewhere/sub/b.wav"), music) is None  # not sub/b.wav: another file
        assert song_uri(client, Path("/elsewhere/x\n.wav")) is None
        wanted = [music / "c.wav", music / "gone.wav", music / "sub" / "b.wav", music / "d.wav"]
        assert known_uris(client, wanted, music) == (["c.wav", "sub/b.wav", "d.wav"], [music / "gone.wav"])
        client.clear()
        client.random(0)
        uris, unknown, gone = play_files(client, [music / "a.wav", music / "nowhere.wav", music / "d.wav"],
                                         music_dir=music)
        assert (uris, unknown, gone) == (["a.wav", "d.wav"], [], [music / "nowhere.wav"])
        assert [s["file"] for s in client.playlistinfo()] == ["a.wav", "d.wav"]
        assert client.status()["state"] == "play" and client.currentsong()["file"] == "a.wav"
        client.pause(1)
        play_files(client, [music / "c.wav"], append=True, music_dir=music)
        assert [s["file"] for s in client.playlistinfo()] == ["a.wav", "d.wav", "c.wav"]
        assert client.status()["state"] == "pause" and client.currentsong()["file"] == "a.wav"
        with pytest.raises(PlayerError, match=f"none of the playlist's files \\(is --music-dir {music} MPD's"):
            play_files(client, [music / "nowhere.wav", Path("/elsewhere/z.wav")], music_dir=music)
        with pytest.raises(PlayerError, match="holds no tracks"):
            play_files(client, [])
        queue = client.playlistinfo()
        with pytest.raises(PlayerError, match="the queue is unchanged"):
            _append(client, ["c.wav", "not-in-mpd.wav"])  # MPD takes the first, refuses the second
        assert client.playlistinfo() == queue
        ids = _append(client, ["sub/a.wav", "sub/b.wav"], at=1)
        assert [s["file"] for s in client.playlistinfo()] == ["a.wav", "sub/a.wav", "sub/b.wav", "d.wav", "c.wav"]
        old = {s["id"]: s["file"] for s in client.playlistinfo()[1:3]}
        assert ids == list(old)
        new = _replace(client, ["c.wav"], old, at=1)
        assert [s["file"] for s in client.playlistinfo()] == ["a.wav", "c.wav", "d.wav", "c.wav"]
        assert client.playlistinfo()[1]["id"] == new[0]
        before = client.playlistinfo()
        assert play_first(client, [s["id"] for s in before[1:]]) == 0  # not in random mode: nothing to do
        assert all("prio" not in s or s["prio"] == "0" for s in client.playlistinfo())
        client.random(1)
        try:
            held, low = before[1]["id"], before[2]["id"]
            client.prioid(255, held)  # an earlier radio's first song
            client.prioid(7, low)  # a client's own choice, below every radio
            assert play_first(client, [before[3]["id"]]) == 1
            prio = {s["id"]: int(s.get("prio", 0)) for s in client.playlistinfo()}
            assert prio == {before[0]["id"]: 0, before[3]["id"]: 255, held: 254, low: 7}
            client.prioid(0, held, low, before[3]["id"])
            assert play_first(client, []) == 0
        finally:
            client.random(0)
        client.pause(1)  # replacing the queue plays it, also when MPD was paused
        assert play_files(client, [Path("/not/here/sub/b.wav"), Path("/not/here/c.wav")]) == (["sub/b.wav", "c.wav"],
                                                                                               [], [])
        assert [s["file"] for s in client.playlistinfo()] == ["sub/b.wav", "c.wav"]  # none on disk: MPD's own
        assert client.status()["state"] == "play" and client.currentsong()["file"] == "sub/b.wav"


def test_mpd_play_reads_the_music_folder_as_the_shell_would(tiny_mpd: tuple[int, Path], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """--music-dir ~/music is the home's music folder: a file elsewhere named as one of its songs (sub/b.wav) is not
    that song."""
    port, music = tiny_mpd
    monkeypatch.setenv("HOME", str(music.parent))
    namesake = tmp_path / "sub" / "b.wav"
    namesake.parent.mkdir()
    namesake.write_bytes((music / "c.wav").read_bytes())
    with connect("127.0.0.1", port) as client:
        got = play_files(client, [music / "c.wav", namesake], music_dir=Path("~/music"))
        assert got == (["c.wav"], [namesake], [])


def test_mpd_replacing_songs_in_a_full_queue_removes_them_first(tiny_mpd: tuple[int, Path], tmp_path: Path) -> None:
    """MPD's queue at its max_playlist_length: the new songs go in once the old are out (none more than it holds)."""
    _, music = tiny_mpd
    (tmp_path / "home").mkdir()
    with _mpd(music, tmp_path / "home", settings='max_playlist_length "3"\n') as port, \
            connect("127.0.0.1", port) as client:
        for uri in ("a.wav", "c.wav", "d.wav"):
            client.add(uri)
        old = {s["id"]: s["file"] for s in client.playlistinfo()[1:]}
        ids = _replace(client, ["sub/a.wav", "sub/b.wav"], old, at=1)
        assert [(s["id"], s["file"]) for s in client.playlistinfo()][1:] == list(zip(ids, ["sub/a.wav", "sub/b.wav"],
                                                                                     strict=True))
        queue = client.playlistinfo()
        with pytest.raises(PlayerError, match="queue is unchanged"):  # three new ones for two old: cannot fit
            _replace(client, ["c.wav", "d.wav", "a.wav"], {s["id"]: s["file"] for s in queue[1:]})
        with pytest.raises(PlayerError, match="queue is unchanged"):  # refused for another reason than a full queue
            _replace(client, ["not-in-mpd.wav"], {s["id"]: s["file"] for s in queue[1:]})
        assert client.playlistinfo() == queue


def test_mpd_reads_entries_in_folders_named_like_uri_schemes_with_and_without_dot_slash(tmp_path: Path) -> None:
    """M3U8 entries whose first folder is named like a URI scheme ('file:x/a.flac') are written as './file:x/a.flac'
    (as URI references the bare ones are URIs, RFC 3986). MPD takes a URI only with '://': both forms name the same
    songs of its database, in a playlist file in its music folder listed and loaded."""
    from mess.playlists.formats import write_playlist
    from mess.playlists.playlist import Playlist

    music, home = tmp_path / "music", tmp_path / "mpd"
    home.mkdir()
    songs = ["file:x/a.flac", "http:y/b.flac", "plain/c.flac"]
    for i, song in enumerate(songs):
        (music / song).parent.mkdir(parents=True)
        t = np.arange(3 * 8000) / 8000
        sf.write(music / song, (0.3 * np.sin(2 * np.pi * 220 * (i + 1) * t)).astype(np.float32), 8000)
    tracks = tuple(Track(i, str(music / s), f"h{i}", 3.0, None, None, s, None, None) for i, s in enumerate(songs))
    write_playlist(Playlist("mix", tracks, (1.0, 1.0, 1.0)), music / "dotted.m3u8")
    dotted = [ln for ln in (music / "dotted.m3u8").read_text().splitlines() if not ln.startswith("#")]
    assert dotted == ["./file:x/a.flac", "./http:y/b.flac", "plain/c.flac"]
    (music / "bare.m3u8").write_text("#EXTM3U\n" + "\n".join(songs) + "\n")  # as mess wrote them before
    with _mpd(music, home) as port, connect("127.0.0.1", port, None, timeout=10) as client:
        for name in ("dotted.m3u8", "bare.m3u8"):
            assert client.listplaylist(name) == songs, name
            client.clear()
            client.load(name)
            assert [s["file"] for s in client.playlistinfo()] == songs, name


def test_a_playlist_in_the_music_trees_playlists_folder_is_relative_and_survives_the_tree_moving(
        rendered_collection: list[Path], tmp_path: Path) -> None:
    """`mess playlist radio -o MUSIC/Playlists/mix.m3u8` (a folder beside the artists' folders, as players expect)
    wrote absolute paths: the playlist broke when the music folder moved. Its entries are '../Artist/...' now: after
    the whole tree moves, each entry of the M3U8 and the XSPF names a file there, and MPD over the moved tree loads
    the M3U8 as those songs. A playlist outside the music tree keeps absolute paths."""
    from conftest import mess_here

    music = tmp_path / "music"
    for i, artist in ((0, "Artist A"), (4, "Artist A"), (8, "Artist B"), (12, "Artist B")):
        (music / artist).mkdir(parents=True, exist_ok=True)
        shutil.copy(rendered_collection[i], music / artist)
    store = ["--model", "dsp", "--store", str(tmp_path / "store")]
    assert mess_here("extract", str(music), *store).returncode == 0
    (music / "Playlists").mkdir()
    for out in ("Playlists/mix.m3u8", "Playlists/mix.xspf"):
        done = mess_here("playlist", "radio", str(music / "Artist A" / rendered_collection[0].name), "-n", "3",
                         "-o", str(music / out), *store)
        assert done.returncode == 0, done.stderr
    entries = [ln for ln in (music / "Playlists" / "mix.m3u8").read_text().splitlines() if not ln.startswith("#")]
    assert len(entries) == 3 and all(e.startswith(("../Artist A/", "../Artist B/")) for e in entries), entries
    assert str(tmp_path) not in (music / "Playlists" / "mix.xspf").read_text()
    (tmp_path / "other").mkdir()
    outside = mess_here("playlist", "radio", "1", "-n", "3", "-o", str(tmp_path / "other" / "mix.m3u8"), *store)
    assert outside.returncode == 0 and f"\n{music}/" in (tmp_path / "other" / "mix.m3u8").read_text()  # absolute

    moved = tmp_path / "elsewhere" / "music"
    moved.parent.mkdir()
    shutil.move(music, moved)
    songs = []
    for name in ("mix.m3u8", "mix.xspf"):
        paths = read_playlist(moved / "Playlists" / name)
        assert len(paths) == 3 and all(isinstance(p, Path) and p.is_file() and p.is_relative_to(moved)
                                       for p in paths), (name, paths)
        songs.append([p.relative_to(moved).as_posix() for p in paths if isinstance(p, Path)])
    assert songs[0] == songs[1] and songs[0] == [e.removeprefix("../") for e in entries]
    (tmp_path / "mpd").mkdir()
    with _mpd(moved, tmp_path / "mpd") as port, connect("127.0.0.1", port, None, timeout=10) as client:
        client.clear()
        client.load("Playlists/mix.m3u8")
        assert [s["file"] for s in client.playlistinfo()] == songs[0]
