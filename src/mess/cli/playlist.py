"""`mess playlist radio / path / clusters`: playlists written as M3U8 or XSPF (by -o's extension or --format) or
JSON."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from mess.cli.common import (
    console,
    emit_json,
    fail,
    failing,
    is_stdout,
    json_clash,
    note,
    open_store,
    os_reason,
    plain,
    resolved_query,
    stale_aspect_note,
    stdout,
)
from mess.cli.options import (
    DEFAULT_STORE_PATH,
    STDOUT,
    AspectOpt,
    JsonOpt,
    ModelOpt,
    RadioWindowOpt,
    StoreOpt,
    folder_to_make,
    output_path,
)
from mess.constants import counted

if TYPE_CHECKING:
    from collections.abc import Callable

    from mess.playlists.playlist import Playlist
    from mess.store import FeatureStore, Run

playlist_app = typer.Typer(
    help="Playlists from the similarity space: radio, sonic path, clusters.", no_args_is_help=True
)


def _known_format(value: str | None) -> str | None:
    """--format checked as it is read, with --output or without (where a typo was silently ignored)."""
    from mess.playlists.formats import format_named
    from mess.playlists.playlist import PlaylistError

    if value is not None:
        try:
            format_named(value)
        except PlaylistError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


OutOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Write the playlist here: .m3u8 or .xspf "
                                             "(another name with --format; - for stdout, M3U8 unless --format).",
                                             parser=output_path)]
FormatOpt = Annotated[str | None, typer.Option("--format", help="m3u8 (or m3u) or xspf, for an --output whose name "
                                               "has no playlist extension.", callback=_known_format)]


def radio_command(
    seeds: Annotated[
        list[str], typer.Argument(help="Seed tracks: ids, collection paths or file names, or audio files.")
    ],
    n: Annotated[int, typer.Option("-n", min=1, help="How many tracks.")] = 30,
    output: OutOpt = None,
    fmt: FormatOpt = None,
    aspect: AspectOpt = None,
    window: RadioWindowOpt = 3,
    blend: Annotated[str, typer.Option("--blend", help="Several seeds: nearest (by closeness to the nearest seed; one "
                                       "may take every slot) or turns (the seeds take turns, each adding its next "
                                       "closest track).")] = "nearest",
    ranking: Annotated[str, typer.Option("--ranking", help="How closeness is scored: auto (the default: as `mess "
                                         "similar` ranks, augmented for all layers, else cosine), plain (cosine), "
                                         "augmented or reranked.")] = "auto",
    model: ModelOpt = None,
    store: StoreOpt = DEFAULT_STORE_PATH,
    as_json: JsonOpt = False,
) -> None:
    """A radio: the tracks closest to the seeds, closest first, artists spread out, no near-duplicates."""
    _outside_store(output, store)
    from mess.playlists.radio import radio
    def make(fs: FeatureStore, run: Run) -> Playlist:
        queries = [resolved_query(fs, s, run) for s in seeds]
        return radio(fs, run, queries, n, aspect=aspect, window=window, blend=blend, ranking=ranking)

    _emit(*_made(make, store, model, aspect), output, fmt, as_json)


def path_command(
    start: Annotated[str, typer.Argument(help="First track: id, collection path or file name.")],
    end: Annotated[str, typer.Argument(help="Last track: id, collection path or file name.")],
    n: Annotated[int, typer.Option("-n", min=2, help="How many tracks, START and END included.")] = 12,
    output: OutOpt = None,
    fmt: FormatOpt = None,
    aspect: AspectOpt = None,
    model: ModelOpt = None,
    store: StoreOpt = DEFAULT_STORE_PATH,
    as_json: JsonOpt = False,
) -> None:
    """A sonic path from START to END in even steps through the collection."""
    _outside_store(output, store)
    from mess.playlists.path import sonic_path

    def make(fs: FeatureStore, run: Run) -> Playlist:
        return sonic_path(fs, run, fs.track(start), fs.track(end), n, aspect=aspect)

    _emit(*_made(make, store, model, aspect), output, fmt, as_json)


def clusters_command(
    k: Annotated[int | None, typer.Option("-k", min=1, help="How many playlists (default: sqrt(tracks / 2)).")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder to write one playlist per cluster into, made "
                                  "when missing (replacing the cluster playlists an earlier run wrote there: listed "
                                  "in its .mess-clusters, or exactly as mess writes them; other files are left "
                                  "alone).", parser=folder_to_make)
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="m3u8 (or m3u) or xspf (with -o).",
                                     callback=_known_format)] = "m3u8",
    aspect: AspectOpt = None,
    model: ModelOpt = None,
    store: StoreOpt = DEFAULT_STORE_PATH,
    as_json: JsonOpt = False,
) -> None:
    """The collection cut into K playlists of similar tracks, each named from its tags."""
    if output is not None and (str(output) == "-" or is_stdout(output)):
        fail(f"clusters are one playlist file each, written into a folder: -o {output} cannot take them; give a "
             "folder, or write one playlist to stdout with `mess playlist radio` or `path` and -o - --format m3u8")
    _outside_store(output, store)
    if output is not None and output.exists() and not output.is_dir():
        fail(f"cannot write the cluster playlists into {output}: it is a file, and -o takes a folder")
    from mess.playlists.clusters import clusters
    from mess.playlists.formats import collection_roots, music_root, write_cluster_folder
    from mess.playlists.playlist import PlaylistError

    with open_store(store) as fs:
        run = fs.run(model)
        try:
            with failing(PlaylistError):
                playlists = [_with_gone_note(p) for p in clusters(fs, run, k, aspect=aspect)]
                roots = collection_roots(fs.extract_roots(), (t.path for t in fs.tracks()))
                files = write_cluster_folder(playlists, output, fmt, music_root(roots, output)) \
                    if output is not None else []
        except OSError as exc:
            fail(f"cannot write the playlists into {output}: {os_reason(exc)}")
        stale_aspect_note(fs, run, aspect)
    if as_json:
        emit_json(
            {
                "model": run.model,
                "playlists": [
                    {**p.to_dict(), "file": str(f) if files else None}
                    for p, f in zip(playlists, files or playlists, strict=False)
                ],
            }
        )
        return
    _print_clusters(playlists, files, run.model)


def _print_clusters(playlists: list[Playlist], files: list[Path], model: str) -> None:
    """The clusters as a table, then each one's note (tracks no longer on disk) and the files written."""
    table = Table(title=plain(f"{len(playlists)} clusters  [{model}]"))
    for col in ("#", "name", "tracks", "first tracks"):
        table.add_column(col, justify="right" if col in ("#", "tracks") else "left")
    for i, p in enumerate(playlists, start=1):
        table.add_row(str(i), plain(p.title), str(len(p)), plain("; ".join(t.name for t in p.tracks[:3])))
    stdout.print(table)
    for i, p in enumerate(playlists, start=1):
        if p.note:
            console.print(f"[yellow]{i}. {plain(p.note)}[/]")
    for f in files:
        console.print(f"[dim]{plain(str(f))}[/]")


def _outside_store(output: Path | None, store: Path) -> None:
    """End the command when ``output`` lies in the store folder ('-o .mess/catalog.sqlite' replaced the catalog)."""
    from mess.store.paths import inside_store

    if output is not None and inside_store(output, store):
        fail(f"{output} is inside the feature store {store}, whose files only mess writes; write the playlist "
             "outside it")


def _made(make: Callable[[FeatureStore, Run], Playlist], store: Path, model: str | None,
          aspect: str | None) -> tuple[Playlist, list[str], dict[str, str | None]]:
    """The playlist ``make`` builds from the store's run of ``model``, the folders its relative entries may stay
    within (:func:`mess.playlists.formats.collection_roots`), and what the JSON says of the run as the API's playlists
    do (``model``; ``stale_aspect_map``, also noted on stderr); a PlaylistError ends the command."""
    from mess.playlists.formats import collection_roots
    from mess.playlists.playlist import PlaylistError
    from mess.search.query import stale_aspect_map

    with open_store(store) as fs:
        run = fs.run(model)
        with failing(PlaylistError):
            playlist = make(fs, run)
        stale = stale_aspect_map(fs, run) if aspect is not None else None
        note(stale)
        roots = collection_roots(fs.extract_roots(), (t.path for t in fs.tracks()))
    return playlist, roots, {"model": run.model, "stale_aspect_map": stale}


def _emit(playlist: Playlist, roots: list[str], about: dict[str, str | None], output: Path | None, fmt: str | None,
          as_json: bool) -> None:
    """Write the playlist file when asked (in ``fmt`` when its name has no playlist extension; entries relative
    within the one of ``roots`` holding it, :func:`mess.playlists.formats.music_root`), then print it as JSON (with
    ``about`` the run) or a table."""
    from mess.playlists.formats import music_root, streamed, write_playlist
    from mess.playlists.playlist import PlaylistError
    from mess.store.paths import replace_file

    json_clash(output, as_json)
    to_stdout = is_stdout(output)
    shown = console if to_stdout else stdout  # the playlist file goes to stdout: the table to stderr
    named = "stdout" if to_stdout else str(output)  # not /dev/stdout, to a user who typed -o -
    playlist = _with_gone_note(playlist)
    written = None
    if output is not None and not playlist.tracks:  # an empty file would replace a playlist there with nothing
        fail(f"{playlist.title} holds no track ({playlist.note.split('; ')[0]}); {named} is not written")
    if output is not None:
        try:
            with failing(PlaylistError):
                if to_stdout:  # absolute entries, as no folder holds a stream; written into stdout (replacing)
                    replace_file(STDOUT, streamed(playlist, output, fmt or "m3u8"))
                    written = output
                else:
                    written = write_playlist(playlist, output, fmt, music_root(roots, output.expanduser().parent))
        except OSError as exc:
            fail(f"cannot write {named}: {os_reason(exc, output)}")
    if as_json:
        emit_json({**playlist.to_dict(), **about, "file": written})
        return
    table = Table(title=plain(playlist.title))
    for col in ("#", "id", "track", "min:s", "score"):
        table.add_column(col, justify="left" if col == "track" else "right")
    for i, (t, s) in enumerate(zip(playlist.tracks, playlist.scores, strict=False), start=1):
        length = "" if t.duration is None else f"{int(t.duration) // 60}:{int(t.duration) % 60:02d}"
        table.add_row(str(i), str(t.id), plain(t.name), length, f"{s:.3f}")
    shown.print(table)
    if playlist.note:
        console.print(f"[yellow]{plain(playlist.note)}[/]")
    if written is not None:
        console.print(f"wrote {counted(len(playlist), 'track')} to {plain(named)}")


def _with_gone_note(playlist: Playlist) -> Playlist:
    """The playlist, its note naming (by path) the tracks whose files are no longer on disk."""
    from mess.playlists.playlist import gone_tracks, with_gone_note

    return with_gone_note(playlist, [t.path for t in gone_tracks(playlist)])


def register(app: typer.Typer) -> None:
    """Add the `playlist` command group to the main CLI."""
    playlist_app.command("radio")(radio_command)
    playlist_app.command("path")(path_command)
    playlist_app.command("clusters")(clusters_command)
    app.add_typer(playlist_app, name="playlist")
