"""`mess mpd radio` and `mess mpd play`: hand playlists to a Music Player Daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mess.cli.common import console, emit_json, failing, open_store, plain, stdout
from mess.cli.options import DEFAULT_STORE_PATH, AspectOpt, JsonOpt, ModelOpt, RadioWindowOpt, StoreOpt
from mess.constants import counted

mpd_app = typer.Typer(help="Play through MPD (Music Player Daemon): radio from the current song, playlists.",
                      no_args_is_help=True)
HostOpt = Annotated[str, typer.Option("--host", help="MPD host, or PASSWORD@HOST as mpc takes it (env MPD_HOST).",
                                      envvar="MPD_HOST")]
PortOpt = Annotated[int, typer.Option("--port", help="MPD port (env MPD_PORT).", envvar="MPD_PORT")]
MusicDirOpt = Annotated[Path | None, typer.Option("--music-dir", help="MPD's music folder: a file in it is the "
                                                  "song of its relative path (else found by name in MPD's "
                                                  "database).")]


def radio_command(
    n: Annotated[int, typer.Option("-n", min=1, help="How many tracks to queue.")] = 20,
    window: RadioWindowOpt = 3,
    aspect: AspectOpt = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the songs queued after the current one (those "
                                        "there when the command began).")] = False,
    music_dir: MusicDirOpt = None,
    host: HostOpt = "localhost",
    port: PortOpt = 6600,
    model: ModelOpt = None,
    token: Annotated[str | None, typer.Option(envvar="MESS_TOKEN", help="The token of the `mess serve` whose stream "
                                              "MPD plays, if it asks for one (env MESS_TOKEN).")] = None,
    store: StoreOpt = DEFAULT_STORE_PATH,
    as_json: JsonOpt = False,
) -> None:
    """Queue a radio right after MPD's current song (before the songs queued later): similar tracks, artists
    spread out. A queue played to its end goes on from its last song. A song streamed from `mess serve` over this
    store seeds too, and the radio is queued as that server's streams."""
    from mess.playlists.mpd import PlayerError, connect, queue_radio
    from mess.playlists.playlist import PlaylistError

    with open_store(store) as fs:
        run = fs.run(model)
        with failing(PlayerError, PlaylistError):
            name, password = _host_password(host)
            with connect(name, port, password) as client:
                playlist, uris, unknown = queue_radio(client, fs, run, n, window=window, aspect=aspect,
                                                      clear_upcoming=clear, music_dir=music_dir, token=token)
    if as_json:
        emit_json({**playlist.to_dict(), "queued": uris, "unknown": unknown})
        return
    for i, t in enumerate(playlist.tracks, start=1):
        stdout.print(f"{i:>3}. {plain(t.name)}")
    stdout.print(f"queued {counted(len(uris), 'track')} after {plain(playlist.title.removeprefix('radio: '))}")
    if playlist.note:
        console.print(f"[yellow]{plain(playlist.note)}[/]")
    _print_unknown(unknown)


def play_command(
    playlist: Annotated[Path, typer.Argument(help="An .m3u8 / .m3u or .xspf file.")],
    append: Annotated[bool, typer.Option("--append", help="Add to the end of the queue instead of replacing it; "
                                         "what MPD plays goes on (the first added starts only when MPD is "
                                         "stopped).")] = False,
    music_dir: MusicDirOpt = None,
    host: HostOpt = "localhost",
    port: PortOpt = 6600,
    store: StoreOpt = DEFAULT_STORE_PATH,
    as_json: JsonOpt = False,
) -> None:
    """Play a playlist file in MPD (replacing its queue unless --append). Its files not on disk are skipped, each
    named: no longer on disk when the store catalogued it (moved or removed since), else not found."""
    from mess.playlists.formats import read_playlist
    from mess.playlists.mpd import PlayerError, connect, play_files
    from mess.playlists.playlist import PlaylistError

    with failing(PlayerError, PlaylistError):
        paths = read_playlist(playlist)
        name, password = _host_password(host)
        with connect(name, port, password) as client:
            uris, unknown, missing = play_files(client, paths, append=append, music_dir=music_dir)
    catalogued = _catalogued(store) if missing else set()
    gone = [p for p in missing if str(p) in catalogued]
    not_found = [p for p in missing if str(p) not in catalogued]
    if as_json:
        emit_json({"queued": uris, "unknown": unknown, "gone": gone, "not_found": not_found})
        return
    stdout.print(f"{'queued' if append else 'playing'} {counted(len(uris), 'track')} from {plain(str(playlist))}")
    _print_unknown(unknown)
    _print_unknown(gone, "no longer on disk")  # catalogued: moved or removed since
    _print_unknown(not_found, "not found")


def _catalogued(store: Path) -> set[str]:
    """The paths of the tracks the store at ``store`` catalogues; none where no store can be read there (`mess mpd
    play` needs none)."""
    from contextlib import closing

    from mess.store import FeatureStore, StoreError

    try:
        with closing(FeatureStore(store, readonly=True, create=False)) as fs:
            return {t.path for t in fs.tracks()}
    except (StoreError, OSError):
        return set()


def _host_password(host: str) -> tuple[str, str | None]:
    """(host, password) from MPD_HOST's form PASSWORD@HOST, as mpc and libmpdclient read it; (host, None) without
    a password (also for '@NAME', an abstract socket)."""
    password, at, name = host.rpartition("@")
    return (name, password) if at and password else (host, None)


def _print_unknown(paths: list[Path], why: str = "not in MPD's database") -> None:
    """Name the files skipped, and ``why``."""
    for p in paths:
        console.print(f"[yellow]{why} (skipped):[/] {plain(str(p))}")


def register(app: typer.Typer) -> None:
    """Add the `mpd` command group to the main CLI."""
    mpd_app.command("radio")(radio_command)
    mpd_app.command("play")(play_command)
    app.add_typer(mpd_app, name="mpd")
