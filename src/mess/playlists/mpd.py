"""Music Player Daemon: queue a radio after MPD's current song, or play a playlist file (python-mpd2).

MPD names songs by URIs relative to its music folder. A collection track matches a URI
when it is that file of the music folder (when given), else when it is the one track whose
path ends with the URI; the music folder is then the rest of that path, which maps the
other tracks to URIs. Tracks outside MPD's folder are found through MPD's database by file
name. Every URI is checked against MPD's database before the queue changes: files MPD does
not know are skipped, and the queue is never cleared or left half filled. File names that are not
UTF-8 travel both ways as the disk has them (python-mpd2 alone raised on reading one).
"""

from __future__ import annotations

import os
from collections.abc import Container, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import BinaryIO

from mpd import CommandError, MPDClient
from mpd import ConnectionError as MPDConnectionError

from mess.constants import port_problem
from mess.playlists.playlist import Playlist, artist_key, gone_tracks, with_gone_note, with_note
from mess.playlists.radio import DEFAULT_WINDOW, radio
from mess.playlists.served import served_problem, served_track, served_uri
from mess.query import resolve_query
from mess.store import FeatureStore, Run, Track
from mess.store.paths import resolved

DEFAULT_PORT = 6600
MAX_PRIORITY = 255  # MPD's highest song priority (random mode plays higher ones first)
# radios computed again, each without the tracks MPD's database lacked in the last (most of the collection outside
# MPD's folder would take many; what is still lacked then is skipped and named)
_LACKED_ROUNDS = 8
LIST_BYTES = 64 * 1024  # a command list's size at most: MPD closes the connection on one of max_command_list_size


class PlayerError(Exception):
    """MPD cannot be reached, plays nothing, or plays a file the collection lacks; one-line message."""


@contextmanager
def connect(host: str = "localhost", port: int = DEFAULT_PORT, password: str | None = None,
            timeout: float = 10.0) -> Iterator[MPDClient]:
    """A connected client, closed afterwards; PlayerError when MPD does not answer, refuses a command or goes away."""
    client = _Client((host, port, password))
    client.timeout = timeout
    _open(client)
    try:
        yield client
    except CommandError as exc:
        locked = str(exc).startswith("[4@") and not password  # ACK_ERROR_PERMISSION: this MPD has a password
        hint = "; it has a password: give it as --host PASSWORD@HOST (or MPD_HOST=PASSWORD@HOST)" if locked else ""
        raise PlayerError(f"MPD refused a command: {exc}{hint}") from exc
    except (MPDConnectionError, ConnectionError) as exc:  # python-mpd2's, or the socket's (reset, broken pipe)
        raise PlayerError(f"lost the connection to MPD at {host}:{port} ({exc}): did it stop or restart? Check its "
                          "queue and run the command again") from exc
    except TimeoutError as exc:  # MPD hangs (stopped, or blocked on a disk that does not answer)
        raise PlayerError(f"MPD at {host}:{port} did not answer within {timeout:g} s: is it hung? Check its queue "
                          "and run the command again") from exc
    finally:
        try:
            client.close()
            client.disconnect()
        except (OSError, MPDConnectionError):
            pass


class _Client(MPDClient):
    """python-mpd2's client, knowing the MPD it was asked to reach (host, port, password) for :func:`awake`."""

    def __init__(self, address: tuple[str, int, str | None]) -> None:
        super().__init__()
        self.address = address


def _open(client: _Client) -> None:
    """Connect ``client`` to its MPD and give the password; PlayerError when MPD does not answer or refuses it, or
    the port is out of range (the system dialled 70000 as 4464; a socket path as host takes no port)."""
    host, port, password = client.address
    if not host.startswith(("/", "@")) and (problem := port_problem(port)) is not None:
        raise PlayerError(f"cannot reach MPD at {host}:{port}: {problem}")
    try:
        client.connect(host, port)
        _keep_raw_names(client)
    except (OSError, MPDConnectionError, CommandError) as exc:
        raise PlayerError(f"cannot reach MPD at {host}:{port} ({exc}); is mpd running?") from exc
    try:
        if password:
            client.password(password)
    except CommandError as exc:
        client.disconnect()
        raise PlayerError(f"MPD at {host}:{port} refused the password ({exc})") from exc


def awake(client: MPDClient) -> None:
    """Connect ``client`` (one :func:`connect` made) again when MPD has closed the connection meanwhile: MPD closes
    one idle for its connection_timeout (60 s by default), which a radio can outlast (a seed embedded again). When
    MPD does not answer again, the lost connection's error is raised (:func:`connect` says so)."""
    if not isinstance(client, _Client):
        return
    try:
        client.ping()
    except (MPDConnectionError, ConnectionError) as lost:
        client.disconnect()
        try:
            _open(client)
        except PlayerError:
            raise lost from None


class _Line(bytes):
    """A line MPD sent, decoded as Python decodes file names: bytes that are not UTF-8 become surrogates
    (python-mpd2 decodes each line strictly, so one such name in any answer raised UnicodeDecodeError)."""

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        """The text, with ``errors`` always 'surrogateescape'."""
        return bytes.decode(self, encoding, "surrogateescape")


class _Lines:
    """MPD's reply stream, handing out :class:`_Line` lines; everything else as the wrapped file does."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw

    def readline(self, size: int = -1) -> bytes:
        """The next line, as a :class:`_Line`."""
        return _Line(self._raw.readline(size))

    def __getattr__(self, name: str) -> object:
        return getattr(self._raw, name)


def _keep_raw_names(client: MPDClient) -> None:
    """Read and write file names that are not UTF-8 as the catalog holds them (surrogate escapes), so such a
    song is matched, found and queued like any other."""
    client._rbfile = _Lines(client._rbfile)
    client._wfile.close()  # its socket stays open: only the file object is replaced
    client._wfile = client._sock.makefile("w", encoding="utf-8", errors="surrogateescape", newline="\n")


def _sendable(path: Path) -> bool:
    """Whether MPD can be asked about ``path``: its protocol is one line per command, so a name with a line
    break can be neither sent nor in MPD's database, and one with a NUL byte (no file's: a playlist's garbage) ends
    MPD's reading of the line."""
    return "\n" not in str(path) and "\0" not in str(path)


def collection_track(tracks: Sequence[Track], uri: str, music_dir: Path | None = None) -> Track | None:
    """The collection track MPD plays as ``uri``: the file ``music_dir/uri`` when the music folder is known,
    else the one track whose path ends with ``uri`` (PlayerError naming them when several do)."""
    if music_dir is not None:
        path = collection_path(music_dir, uri, {t.path for t in tracks})
        return next((t for t in tracks if t.path == path), None)
    tail = "/" + uri.lstrip("/")
    found = [t for t in tracks if t.path.endswith(tail) or t.path == uri]
    if len(found) > 1:
        raise PlayerError(f"MPD's current song {uri} may be any of {', '.join(t.path for t in found)}; "
                          "pass --music-dir (MPD's music folder)")
    return found[0] if found else None


def collection_path(music_dir: Path | None, uri: str, paths: Container[str]) -> str:
    """The collection's path of MPD's song ``uri``: ``music_dir/uri`` (``uri`` itself when absolute: a local client's
    file:// song), else where its symbolic links lead (as extraction stores it), e.g. for a folder linked into the
    music folder; "" for a relative ``uri`` when the music folder is not known."""
    if music_dir is None and not uri.startswith("/"):
        return ""
    path = str((music_dir or Path("/")) / uri)
    return path if path in paths else str(resolved(path))


def _music_folder(tracks: Sequence[Track], queue: Sequence[dict], seed: Track | None, uri: str) -> Path | None:
    """MPD's music folder as the collection names it: the seed's path less its URI ``uri``; for a song MPD plays by
    its absolute path (a local client's file:// song), that of another queued song the collection holds, else None."""
    for song, track in [(uri, seed), *((s.get("file", ""), None) for s in queue)]:
        if not song or song.startswith("/") or "://" in song:
            continue
        try:
            track = track or collection_track(tracks, song)
        except PlayerError:  # several of the collection's files end so
            continue
        if track is not None:
            return Path(track.path[:len(track.path) - len(song)])
    return None


def song_uri(client: MPDClient, path: Path, music_dir: Path | None = None) -> str | None:
    """MPD's URI for a file: relative to ``music_dir`` when inside it, else looked up by file name (never a
    URI naming another file of ``music_dir``; without ``music_dir``, of the songs whose URI ends the path, the one
    with the longest: ``/music/sub/x.ogg`` is MPD's ``sub/x.ogg``, not its ``x.ogg``, which is ``/music/x.ogg``). Not
    checked against MPD's database: see :func:`known_uris`."""
    path = Path(path)
    if not _sendable(path):
        return None
    if music_dir is not None and path.is_relative_to(music_dir):
        return path.relative_to(music_dir).as_posix()
    tails = []
    for song in client.search("file", path.name):
        uri = song.get("file", "")
        other = music_dir / uri if music_dir is not None else None  # the file MPD means, as seen from here
        if other is not None and other.exists():
            if resolved(other) == resolved(path):  # also through a symbolic link in the music folder
                return uri
        elif str(path).endswith("/" + uri):
            tails.append(uri)
    return max(tails, key=len, default=None)


def known_uris(client: MPDClient, paths: Sequence[Path], music_dir: Path | None = None) -> tuple[list[str], list[Path]]:
    """MPD's URIs of the files its database holds, in order, and the files it lacks (checked in command lists)."""
    uris = _known(client, paths, music_dir)
    return [u for u in uris if u], [Path(p) for p, u in zip(paths, uris, strict=True) if not u]


def _known(client: MPDClient, paths: Sequence[Path], music_dir: Path | None = None) -> list[str | None]:
    """Per path, MPD's URI of the file when its database holds it, else None."""
    uris = [song_uri(client, Path(p), music_dir) for p in paths]
    found: list[list[dict]] = []
    for batch in _lists([(uri,) for uri in uris if uri]):
        client.command_list_ok_begin()
        for (uri,) in batch:
            client.find("file", uri)
        found += client.command_list_end()
    songs = iter(found)
    return [uri if uri and next(songs) else None for uri in uris]


def _lists(commands: Sequence[tuple]) -> Iterator[Sequence[tuple]]:
    """``commands`` (the arguments of one command each) cut into runs that each fit one command list: MPD closes the
    connection on a list of its max_command_list_size (2048 KiB by default), e.g. a playlist of 20,000 long names."""
    start, size = 0, 0
    for i, args in enumerate(commands):
        cost = 32 + sum(2 * len(os.fsencode(str(a))) for a in args)  # escaped quotes and backslashes count twice
        if i > start and size + cost > LIST_BYTES:
            yield commands[start:i]
            start, size = i, 0
        size += cost
    if start < len(commands):
        yield commands[start:]


def _queue_length(client: MPDClient) -> int:
    return int(client.status().get("playlistlength", 0))


def _snapshot(client: MPDClient) -> tuple[dict, list[dict]]:
    """MPD's status and queue as one moment saw them (read in one command list, which MPD runs whole)."""
    client.command_list_ok_begin()
    client.status()
    client.playlistinfo()
    status, queue = client.command_list_end()
    return status, queue


def _append(client: MPDClient, uris: Sequence[str], at: int | None = None) -> list[str]:
    """Put ``uris`` into MPD's queue from position ``at`` on (else at its end), all or none (when MPD refuses one,
    those it added are removed by song id); returns their song ids."""
    start = _queue_length(client) if at is None else at
    ids: list[str] = []
    try:
        for batch in _lists(list(enumerate(uris))):
            client.command_list_ok_begin()
            for i, uri in batch:
                client.addid(uri, start + i)
            client.iterate = True  # the ids one by one: those MPD added before refusing one are known
            for song_id in client.command_list_end():
                ids.append(str(song_id))
            client.iterate = False
    except CommandError as exc:
        client.iterate = False
        _remove(client, dict(zip(ids, uris, strict=False)))
        raise _Refused(f"MPD refused to queue the tracks ({exc}); the queue is unchanged", len(ids)) from exc
    finally:
        client.iterate = False
    return ids


class _Refused(PlayerError):
    """MPD refused a song of those :func:`_append` queued, after taking ``added`` of them (taken out again)."""

    def __init__(self, message: str, added: int) -> None:
        super().__init__(message)
        self.added = added


def _remove(client: MPDClient, songs: Mapping[str, str]) -> None:
    """Remove the queued songs ``songs`` (song id: URI) by id, those still queued as they were: positions move as
    other clients edit the queue, and a song one of them removed meanwhile, or an id now naming another song, is
    left alone."""
    ids = [(s["id"],) for s in client.playlistinfo() if songs.get(s["id"]) == s["file"]]
    for batch in _lists(ids):
        client.command_list_ok_begin()
        for (song_id,) in batch:
            client.deleteid(song_id)
        client.command_list_end()


def _replace(client: MPDClient, uris: Sequence[str], old: Mapping[str, str], at: int | None = None) -> list[str]:
    """Put ``uris`` (from position ``at`` on, else at the end) in place of the queued songs ``old`` (song id: URI; MPD
    refusing the new ones, the queue is left as it was): added first, then the old songs removed; when MPD's queue
    cannot hold both (its max_playlist_length, 16,384 songs by default: a queue filled with a whole library) but could
    hold the new ones (as many as it took before refusing, and the old), the old are removed first. Returns the new
    songs' ids."""
    try:
        ids = _append(client, uris, at)
    except _Refused as exc:
        full = str(exc.__cause__).startswith("[51@")  # ACK_ERROR_PLAYLIST_MAX: the queue is full
        if not full or len(uris) > exc.added + len(old):
            raise
        _remove(client, old)
        try:
            return _append(client, uris, at)
        except PlayerError:  # another client filled the queue meanwhile: the old songs back, in their order
            _append(client, list(old.values()), at)
            raise
    _remove(client, old)
    return ids


def play_first(client: MPDClient, ids: Sequence[str]) -> int:
    """In random mode, give the songs ``ids`` MPD's highest priorities, falling in their order (255, 254, ...), so
    that they play next and in order (MPD resets a song's priority once it has played); returns how many play in order.

    Songs that hold priorities already (an earlier radio's, a client's "play next") keep their order after them, each
    priority lowered only as far as that needs: a second radio plays before the rest of the first, as it does outside
    random mode, rather than interleaved with it. MPD has 255 priorities: songs past them share priority 1 and play in
    random order among themselves.
    """
    status = client.status()
    if status.get("random") != "1" or not ids:
        return 0
    new = set(ids)
    held = sorted(((int(s["prio"]), s["id"]) for s in client.playlistinfo()
                   if int(s.get("prio", 0)) and s["id"] not in new and s["id"] != status.get("songid")), reverse=True)
    changes, level = [], MAX_PRIORITY + 1
    for song_id in ids:
        level = max(level - 1, 1)
        changes.append((level, song_id))
    for prio, group in groupby(held, key=itemgetter(0)):
        level = max(min(prio, level - 1), 1)
        changes += [(level, song_id) for _, song_id in group if level != prio]
    for batch in _lists(changes):
        client.command_list_ok_begin()
        for prio, song_id in batch:
            client.prioid(prio, song_id)
        client.command_list_end()
    return min(len(ids), MAX_PRIORITY)


def queue_radio(client: MPDClient, store: FeatureStore, run: Run, n: int = 20, *, window: int = DEFAULT_WINDOW,
                aspect: str | None = None, clear_upcoming: bool = False, music_dir: Path | None = None,
                token: str | None = None) -> tuple[Playlist, list[str], list[Path]]:
    """Queue a radio seeded by MPD's current song right after the song MPD plays (before the songs queued later);
    in random mode the radio's songs get MPD's highest priorities, so that they play next and in order there too.
    When MPD has played its queue to the end (it stopped and has no current song) outside random mode, the queue's
    last song seeds the radio, which is queued after it and played.

    Returns the playlist, the queued URIs and the tracks MPD does not know (skipped). The radio leaves out the songs
    of MPD's queue and their copies (else heard twice): those after the current one play later, those before it
    have played (a radio run again as it plays queued the song just heard) or in random mode may still play; with
    ``clear_upcoming`` the songs after it are removed instead, once the radio is queued: by song id, those that were
    after it when the call began, so neither a song other clients queued meanwhile nor the one MPD moved on to goes.
    A current song whose file changed since extraction seeds as it is now (embedded, with a warning); one renamed or
    added since (in MPD's music folder, given or found from the queue) seeds by its file, known by its content.
    Tracks whose files are gone from MPD's music folder are left out (MPD stops playing at one), named in the
    playlist's note; those MPD's database lacks are left out too (returned as skipped): the next closest take their
    places.

    A current song streamed from `mess serve` (its audio URL, as the page's downloads name it) seeds by its track id
    once that server is found to serve this store (its track of that id is this store's: :func:`served_problem`;
    ``token``: the server's, when it asks for one), and the radio is queued as that server's URLs too.
    """
    status, queue = _snapshot(client)
    # MPD played the queue to its end: its last song, heard last, seeds (in random mode any song may have been last)
    ended = "song" not in status and bool(queue) and status.get("random") != "1"
    song = queue[int(status["song"])] if "song" in status else queue[-1] if ended else {}
    if not song.get("file"):
        raise PlayerError("MPD has no current song; play something first")
    served = served_track(song["file"])
    if "://" in song["file"] and served is None:  # a stream of another server: no file to seed from
        raise PlayerError(f"MPD's current song {song['file']} is a stream, not a file of its music folder; play a file "
                          "of the collection to seed the radio (or make one with `mess playlist radio`)")
    music_dir = Path(music_dir).expanduser().resolve() if music_dir is not None else None
    tracks = store.tracks(run)
    base = None if served is None else served[0]
    if served is not None:
        seed = next((t for t in tracks if t.id == served[1]), None)
        if (problem := served_problem(*served, seed, token)) is not None:
            raise PlayerError(f"MPD's current song {song['file']} is a stream of `mess serve`, but {problem}")
    else:
        seed = collection_track(tracks, song["file"], music_dir)
    if seed is None and music_dir is not None and any(t.path.endswith(f"/{song['file']}") for t in tracks):
        raise PlayerError(f"MPD's current song {song['file']} is not {music_dir / song['file']} but the store holds "
                          f"a file of that name elsewhere: is --music-dir {music_dir} MPD's music folder?")
    given = music_dir is not None
    if music_dir is None:
        music_dir = _music_folder(tracks, queue, seed, "" if served else song["file"])
    if seed is not None:
        seed_path = Path(seed.path)
    elif music_dir is not None and (music_dir / song["file"]).is_file():  # renamed (or added) since extraction:
        seed_path = music_dir / song["file"]  # it seeds as `mess playlist radio FILE` does, known by its content
    else:
        hint = "" if given else " (or, where symbolic links lead into it, pass it as --music-dir)"
        raise PlayerError(f"MPD's current song {song['file']} is not in the collection of this store; "
                          f"run `mess extract` on MPD's music folder{hint}")
    by_path = {t.path: t for t in tracks}
    at = int(song["pos"])
    after = queue[at + 1:]
    heard = queue[:at] + ([] if clear_upcoming else after)
    queued = frozenset(t.id for t in _tracks_of(heard, by_path, music_dir, base) if t is not None)
    # the songs that played just before the seed keep their artists a window apart from the radio's (not in random
    # mode: those before the current song there may not have played); a song the collection lacks has no artist
    random = status.get("random") == "1"
    before = [] if random else _tracks_of(queue[max(at - window, 0):at], by_path, music_dir, base)
    played = [artist_key(t) if t is not None else "" for t in before]
    later = [] if clear_upcoming or random else _tracks_of(after[:window], by_path, music_dir, base)
    following = [artist_key(t) if t is not None else "" for t in later]  # after the radio: no artist back to back
    seeds = [resolve_query(store, seed_path, run)]
    gone: list[Track] = []
    lacked: list[Track] = []  # in the collection, not in MPD's database (a folder MPD does not hold)
    rounds = 0  # the radios asked of MPD; those that only left out deleted files are not counted
    while True:  # a file MPD stops playing at (deleted since its update) or lacks: the next closest
        playlist = radio(store, run, seeds, n, aspect=aspect, window=window,
                         exclude=frozenset(t.id for t in (*gone, *lacked)), heard=queued, played=played,
                         following=following)
        here = music_dir.is_dir() if music_dir is not None else base is None or Path(seed_path).is_file()
        newly = gone_tracks(playlist) if here else ()  # not when unmounted (or served from another machine)
        if newly:
            gone += newly
            continue
        if base is not None:  # the server's URLs, which MPD streams as it streams the seed
            uris, unknown = [served_uri(base, t) for t in playlist.tracks], list[Path]()
            break
        awake(client)
        uris, unknown = known_uris(client, [Path(t.path) for t in playlist.tracks], music_dir)
        rounds += 1
        if not unknown or not uris or rounds >= _LACKED_ROUNDS:  # none known: MPD's folder is elsewhere (said below)
            break
        lacked += [t for t in playlist.tracks if Path(t.path) in unknown]
    playlist = with_gone_note(playlist, [t.path for t in gone])
    unknown = [Path(t.path) for t in lacked] + unknown
    if playlist.tracks and not uris:
        raise PlayerError("MPD's database has none of the radio's tracks (update MPD's database?); "
                          "the queue is unchanged")
    now = client.currentsong()  # the radio took a while: MPD may have moved on to the next song
    pos = int(now["pos"]) if "pos" in now else _queue_length(client) - 1
    cleared = {s["id"]: s["file"] for s in after if s["id"] != now.get("id")} if clear_upcoming else {}
    ids = _replace(client, uris, cleared, pos + 1)
    if ended and ids and "pos" not in now:  # else MPD, stopped, would start the queue again from its first song
        client.playid(ids[0])
    ordered = play_first(client, ids)
    if 0 < ordered < len(uris):
        playlist = with_note(playlist, f"in MPD's random mode the first {ordered} play in order (its priorities run "
                             f"{MAX_PRIORITY} to 1), the other {len(uris) - ordered} after them in random order")
    return playlist, uris, unknown


def _tracks_of(songs: Sequence[dict], by_path: Mapping[str, Track], music_dir: Path | None,
               base: str | None = None) -> list[Track | None]:
    """The collection track of each of MPD's queued ``songs``, None for one the collection lacks (a stream, say; one
    of the `mess serve` at ``base``, which serves this store, is its track of that id)."""
    by_id = {t.id: t for t in by_path.values()}
    return [by_id.get(served[1]) if (served := served_track(s.get("file", ""))) is not None and served[0] == base
            else by_path.get(collection_path(music_dir, s.get("file", ""), by_path)) for s in songs]


def play_files(client: MPDClient, entries: Sequence[Path | str], *, append: bool = False,
               music_dir: Path | None = None) -> tuple[list[str], list[Path], list[Path]]:
    """Replace MPD's queue with ``entries`` (files, and URLs of streams as strings, handed to MPD as they are) and
    play them; with ``append``, add them to its end and leave what MPD plays (or has paused) alone, starting the first
    added only when MPD was stopped.

    Returns the queued URIs, the paths MPD does not know and those no longer on disk (both skipped: MPD, its
    database not updated since a file was deleted, stops playing when it reaches it); when none of the paths is on
    disk here, MPD's music folder is taken to be elsewhere and none is skipped for that. PlayerError when there are
    none or MPD knows none of them, the queue then unchanged.
    """
    if not entries:
        raise PlayerError("the playlist holds no tracks; the queue is unchanged")
    music_dir = Path(music_dir).expanduser().resolve() if music_dir is not None else None
    paths = [Path(e) for e in entries if not isinstance(e, str)]
    missing = [not p.exists() for p in paths]
    if all(missing):
        missing = [False] * len(paths)
    gone = [p for p, m in zip(paths, missing, strict=True) if m]
    present = [p for p, m in zip(paths, missing, strict=True) if not m]
    found = _known(client, present, music_dir)
    unknown = [p for p, u in zip(present, found, strict=True) if not u]
    per_path = iter(found)
    per_file = iter([None if m else next(per_path) for m in missing])
    uris = [u for e in entries if (u := e if isinstance(e, str) else next(per_file))]
    if not uris:
        folder = f"is --music-dir {music_dir} MPD's music folder?" if music_dir else \
            "is its music folder the collection's?"
        raise PlayerError(f"MPD's database has none of the playlist's files ({folder} "
                          "update MPD's database?); the queue is unchanged")
    status, queue = _snapshot(client)
    ids = _append(client, uris) if append else _replace(client, uris, {s["id"]: s["file"] for s in queue})
    if not append or status.get("state") == "stop":
        client.playid(ids[0])
    return uris, unknown, gone
