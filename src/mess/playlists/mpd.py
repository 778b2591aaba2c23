"""Music Player Daemon: queue a radio after MPD's current song, or play a playlist file (python-mpd2).

MPD names songs by URIs relative to its music folder. A collection track matches a URI
when its path ends with it; the music folder is then the rest of that path, which maps
the other tracks to URIs. Tracks outside MPD's folder are found through MPD's database
by file name, and skipped when MPD does not know them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from mpd import CommandError, MPDClient
from mpd import ConnectionError as MPDConnectionError

from mess.playlists.playlist import Playlist
from mess.playlists.radio import DEFAULT_WINDOW, radio
from mess.search.query import TrackQuery
from mess.store import FeatureStore, Run, Track

DEFAULT_PORT = 6600


class PlayerError(Exception):
    """MPD cannot be reached, plays nothing, or plays a file the collection lacks; one-line message."""


@contextmanager
def connect(host: str = "localhost", port: int = DEFAULT_PORT, password: str | None = None,
            timeout: float = 10.0) -> Iterator[MPDClient]:
    """A connected client, closed afterwards; PlayerError when MPD does not answer."""
    client = MPDClient()
    client.timeout = timeout
    try:
        client.connect(host, port)
        if password:
            client.password(password)
    except (OSError, MPDConnectionError, CommandError) as exc:
        raise PlayerError(f"cannot reach MPD at {host}:{port} ({exc}); is mpd running?") from exc
    try:
        yield client
    except (MPDConnectionError, CommandError) as exc:
        raise PlayerError(f"MPD refused a command: {exc}") from exc
    finally:
        try:
            client.close()
            client.disconnect()
        except (OSError, MPDConnectionError):
            pass


def collection_track(tracks: Sequence[Track], uri: str) -> Track | None:
    """The collection track whose path ends with MPD's ``uri`` (the lowest id when several do)."""
    tail = "/" + uri.lstrip("/")
    return next((t for t in tracks if t.path.endswith(tail) or t.path == uri), None)


def song_uri(client: MPDClient, path: Path, music_dir: Path | None = None) -> str | None:
    """MPD's URI for a file: relative to ``music_dir`` when inside it, else looked up by file name."""
    path = Path(path)
    if music_dir is not None and path.is_relative_to(music_dir):
        return path.relative_to(music_dir).as_posix()
    for song in client.search("file", path.name):
        uri = song.get("file", "")
        if str(path).endswith("/" + uri):
            return uri
    return None


def queue_radio(client: MPDClient, store: FeatureStore, run: Run, n: int = 20, *, window: int = DEFAULT_WINDOW,
                aspect: str | None = None, clear_upcoming: bool = False) -> tuple[Playlist, list[str]]:
    """Append a radio seeded by MPD's current song to MPD's queue; returns the playlist and queued URIs.

    With ``clear_upcoming`` the songs queued after the current one are removed first.
    """
    song = client.currentsong()
    if not song.get("file"):
        raise PlayerError("MPD has no current song; play something first")
    tracks = store.tracks(run)
    seed = collection_track(tracks, song["file"])
    if seed is None:
        raise PlayerError(f"MPD's current song {song['file']} is not in the collection of this store; "
                          "run `mess extract` on MPD's music folder")
    music_dir = Path(seed.path[:len(seed.path) - len(song["file"])])
    playlist = radio(store, run, [TrackQuery(seed.name, track=seed, content_hash=seed.content_hash,
                                             artist=seed.artist)], n, aspect=aspect, window=window)
    if clear_upcoming:
        pos, length = int(song.get("pos", 0)), int(client.status().get("playlistlength", 0))
        if length > pos + 1:
            client.delete((pos + 1, length))
    uris = [u for u in (song_uri(client, Path(t.path), music_dir) for t in playlist.tracks) if u]
    for uri in uris:
        client.add(uri)
    return playlist, uris


def play_files(client: MPDClient, paths: Sequence[Path], *, append: bool = False,
               music_dir: Path | None = None) -> tuple[list[str], list[Path]]:
    """Replace (or with ``append`` extend) MPD's queue with ``paths`` and start playing.

    Returns (queued URIs, paths MPD does not know). PlayerError when MPD knows none of them.
    """
    uris, unknown = [], []
    for p in paths:
        uri = song_uri(client, p, music_dir)
        if uri:
            uris.append(uri)
        else:
            unknown.append(Path(p))
    if not uris:
        raise PlayerError("MPD's database has none of the playlist's files; is its music folder the collection's?")
    start = 0 if not append else int(client.status().get("playlistlength", 0))
    if not append:
        client.clear()
    for uri in uris:
        client.add(uri)
    client.play(start)
    return uris, unknown
