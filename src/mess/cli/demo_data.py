"""`mess demo render`, `mess demo wesnoth`, `mess demo soundtracks`: real, labelled audio to try the toolkit on."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mess.cli.common import console, fail, failing, stdout
from mess.cli.options import given_folder

app = typer.Typer(name="demo", no_args_is_help=True,
                  help="Labelled demo audio: music21 corpus pieces rendered with fluidsynth, "
                       "Wesnoth's soundtrack, six game soundtracks.")


@app.command("render")
def render_command(
    out: Annotated[Path, typer.Argument(help="Folder for the FLACs (and their MIDI files).", parser=given_folder)],
    composers: Annotated[str, typer.Option(help="Comma-separated music21 corpus folders.")] =
        "bach,palestrina,monteverdi,mozart,haydn,josquin",
    per_composer: Annotated[int, typer.Option(min=1, help="Pieces per composer.")] = 5,
    max_seconds: Annotated[float, typer.Option(min=1.0, help="Length of each render (the piece's opening).")] = 30.0,
    sample_rate: Annotated[int, typer.Option(min=8000, help="Render rate in Hz (the default musicnn model reads up "
                                                            "to 16 kHz, so below 32 kHz it warns).")] = 44100,
    workers: Annotated[int, typer.Option(min=1, help="Pieces rendered at once.")] = 2,
) -> None:
    """Render corpus pieces to FLACs tagged artist = composer; already rendered files are kept."""
    from mess.datasets.render import RenderError, RenderSettings, render_collection

    names = [c.strip().lower() for c in composers.split(",") if c.strip()]
    if not names:
        fail("give at least one composer")
    start = time.perf_counter()
    try:
        paths = render_collection(out, names, per_composer, workers=workers, console=console,
                                  settings=RenderSettings(max_seconds=max_seconds, sample_rate=sample_rate))
    except RenderError as exc:
        fail(str(exc))
    except ImportError as exc:
        fail(f"{exc}: rendering needs music21 (pip install music21)")
    counts = Counter(p.name.split("__")[0] for p in paths)
    short = {n: counts[n] for n in names if counts[n] < per_composer}
    console.print(f"{len(paths)} pieces by {len(counts)} composers in {out} ({time.perf_counter() - start:.1f} s)")
    if short:
        console.print(f"[yellow]fewer renderable pieces than asked:[/] {short}")


@app.command("wesnoth")
def wesnoth_command(
    out: Annotated[Path, typer.Argument(help="Folder for the OGG tracks.", parser=given_folder)],
) -> None:
    """Fetch Wesnoth's soundtrack (41 OGGs, 10 tagged composers) with apt-get; kept if already there."""
    from mess.datasets.wesnoth import FetchError, fetch_wesnoth, read_artists

    with failing(FetchError):
        tracks = fetch_wesnoth(out)
    counts = Counter(artist or "(untagged)" for artist in read_artists(tracks).values())
    _print_table(f"{len(tracks)} tracks in {out}", ("composer", "tracks"),
                 [(artist, str(n)) for artist, n in counts.most_common()])


@app.command("soundtracks")
def soundtracks_command(
    out: Annotated[Path, typer.Argument(help="Folder for the tracks (one subfolder per game).", parser=given_folder)],
) -> None:
    """Fetch six games' soundtracks with apt-get (album tag = game; manifest.csv); kept if already there."""
    from mess.datasets.soundtracks import FetchError, fetch_soundtracks

    with failing(FetchError):
        tracks = fetch_soundtracks(out)
    rows = []
    for game in dict.fromkeys(t.game for t in tracks):
        mine = [t for t in tracks if t.game == game]
        rows.append((game, str(len(mine)), str(sum(t.artist is not None for t in mine)),
                     f"{sum(t.duration for t in mine) / 60:.1f}"))
    _print_table(f"{len(tracks)} tracks in {out} (label: --label album, or --labels {out}/manifest.csv)",
                 ("game", "tracks", "with artist tag", "minutes"), rows)


def _print_table(title: str, columns: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    """A table whose first column is text and the others right-aligned figures."""
    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    stdout.print(table)


def register(parent: typer.Typer) -> None:
    """Add the `demo` command group to the main CLI."""
    parent.add_typer(app, name="demo")
