"""Shared CLI pieces: the console, JSON output and clean error exits."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup
from typer.models import DefaultPlaceholder

from mess.cli.options import STDOUT
from mess.cli.signals import reader_gone
from mess.constants import counted

if TYPE_CHECKING:
    import click

    from mess.search.query import TrackQuery
    from mess.store import FeatureStore, Run

UNWRAPPED = 100_000  # the width of a pipe or a file: wider than any line mess prints


class _Console(Console):
    """rich's Console, its width taken when it prints: a terminal's own (or COLUMNS), and none to wrap at for a pipe
    or a file. rich reads COLUMNS once, as the console is made (at import: a later COLUMNS was ignored, an earlier
    one kept), and gives a pipe or a file 80 columns, or the width of a terminal on another stream: `mess similar X
    > out.txt` typed in a terminal wrapped the table at the terminal's width."""

    def __init__(self, *, stderr: bool = False) -> None:
        super().__init__(stderr=stderr, soft_wrap=True, emoji=False)  # one message, one line; ":smile:" as written
        self._width = None  # not COLUMNS as it was at import: rich reads it again for each print

    @property
    def size(self) -> ConsoleDimensions:
        """The terminal's size (rich's), or for a pipe or a file :data:`UNWRAPPED` columns."""
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(UNWRAPPED, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


console = _Console(stderr=True)
# A command's result (its table, its answer) goes to stdout, for a script to read; notes, warnings, errors and
# progress to stderr (``console``). A terminal shows both, in the order printed (rich flushes each print).
stdout = _Console()


def emit_json(data: object) -> None:
    """Print ``data`` as JSON on stdout; NaN and infinities become null, paths strings."""
    from mess.store.paths import printable  # here: the store (and numpy) load with the command that needs them

    def clean(v: object) -> object:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(a): clean(b) for a, b in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, (str, Path)):
            return printable(str(v))
        return v

    typer.echo(json.dumps(clean(data), indent=2))


def plain(text: object) -> str:
    """User data (a path, a tag) made safe for rich markup and the terminal, on one line: '[/x]' and caf\xe9 print
    as such, control characters (a tag's escape sequences, bells) are dropped, a line break is a space."""
    from mess.store.paths import one_line

    return escape(one_line(str(text)))


def os_reason(exc: OSError, named: object = None) -> str:
    """What the system refused and why, e.g. "ref.json/sub: Not a directory" (no errno, no traceback); a file the
    caller's message already ``named`` is not named again."""
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None and str(n) != str(named)]
    reason = exc.strerror or str(exc)
    return f"{' -> '.join(names)}: {reason}" if names else reason


def not_embedded_note(count: int, model: str, store: Path, extract: str) -> None:
    """Say that ``count`` catalogued files have no ``model`` vectors and were left out of the answer (if any): while
    a writer holds the ``store``'s lock (an extract embedding them), that the answer covers what it has committed so
    far; else that files still on disk are embedded by an extract with the options ``extract``
    (:meth:`~mess.store.FeatureStore.extract_options`), deleted ones forgotten by its --prune (`mess check` tells
    them apart)."""
    from mess.store.lock import StoreLock

    if not count:
        return
    left_out = (f"{counted(count, 'file has', 'files have')} no {plain(model)} vectors and "
                f"{'was' if count == 1 else 'were'} left out")
    if writer := StoreLock(store).writer():
        console.print(f"[yellow]{left_out}: a writer is running on this store ({plain(writer)}), and this answer "
                      "covers what it has committed so far; ask again when it is done[/]")
    else:
        console.print(f"[yellow]{left_out}; `mess check` names them; `mess extract FOLDER {plain(extract)}` "
                      "embeds those on disk, `mess extract FOLDER --prune` forgets deleted ones[/]")


def device_missing(device: str) -> str | None:
    """Why torch cannot run on ``device`` (a name :func:`~mess.models.registry.check_device` took) here, or None: no
    CUDA device of that index, or no MPS (torch's own refusal is a traceback, after the model has loaded)."""
    if device == "cpu":
        return None
    import torch

    if device == "mps":
        return None if torch.backends.mps.is_available() else "--device mps asked for, but MPS is not available"
    index = int(device.partition(":")[2] or 0)
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index < visible:
        return None
    return (f"--device {device} asked for, but " + ("no CUDA GPU is visible" if not visible else
                                                     f"{visible} CUDA GPU(s) are visible (cuda:0..cuda:{visible - 1})"))


def warn(text: str) -> None:
    """Print ``text`` as a one-line warning, as the CLI's others ('warning: ...', not a logging record)."""
    console.print(f"[yellow]warning:[/] {plain(text)}")


def note(text: str | None) -> None:
    """Print ``text`` as a one-line note (nothing for None or empty)."""
    if text:
        console.print(f"[yellow]note:[/] {plain(text)}")


def stale_aspect_note(store: FeatureStore, run: Run, aspect: str | None) -> None:
    """With an ``aspect`` asked for, note when the aspect map comes from a probe of fewer tracks than ``run`` has
    now (:func:`mess.search.query.stale_aspect_map`)."""
    from mess.search.query import stale_aspect_map

    if aspect is not None:
        note(stale_aspect_map(store, run))


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a one-line error (no traceback) and exit; under a write refused because the reader went away (`mess
    export /dev/stdout | head`) say nothing and raise that error again: the entry point ends quietly."""
    handled = sys.exc_info()[1]
    if reader_gone(handled):
        raise handled
    console.print(f"[bold red]error:[/] {plain(message)}")
    raise typer.Exit(code)


@contextmanager
def failing(*errors: type[Exception]) -> Iterator[None]:
    """Any of ``errors`` raised inside ends the command with its message as the one-line error."""
    try:
        yield
    except errors as exc:
        fail(str(exc))


def is_stdout(output: Path | None) -> bool:
    """Whether ``output`` is this process's stdout (/dev/stdout, as ``-`` is read, or the file stdout goes to)."""
    if output is None:
        return False
    if output == STDOUT:  # by its name also where sys.stdout is no file (a test runner's buffer)
        return True
    try:
        return os.path.samestat(os.stat(output), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError):  # no such file yet, or a stdout with no descriptor (a test runner's buffer)
        return False


def json_clash(output: Path | None, as_json: bool) -> None:
    """Fail when ``--json`` and the file being written would both go to stdout (``-o - --json``)."""
    if as_json and is_stdout(output):
        said = "the output goes to stdout" if output == STDOUT else f"{output} is stdout"  # -o -: not /dev/stdout
        fail(f"{said}, where --json prints too; drop --json or write to a file")


@contextmanager
def open_store(path: Path, *, readonly: bool = True, create: bool = True) -> Iterator[FeatureStore]:
    """Open the store for a command (a writer that only changes a store passes ``create=False``: no store is made
    where there was none); its errors become clean CLI errors, lock waits a note."""
    from mess.store import FeatureStore, StoreBusy, StoreError

    try:
        store = FeatureStore(path, readonly=readonly, create=create,
                             on_wait=lambda m: console.print(f"[yellow]{plain(m)}[/]"))
    except StoreError as exc:
        fail(str(exc))
    if store.lost_commits:
        console.print(f"[yellow]{plain(store.lost_commits)}[/]")
    try:
        yield store
    except (StoreError, StoreBusy) as exc:
        fail(str(exc))
    finally:
        store.close()


def resolved_query(fs: FeatureStore, query: str, run: Run) -> TrackQuery:
    """:func:`mess.query.resolve_query`, its warnings said; a query naming nothing fails with the tracks whose names
    hold its words (:func:`named_like`)."""
    from mess.query import UNKNOWN_QUERY, resolve_query
    from mess.store import StoreError

    try:
        return resolve_query(fs, query, run, on_warning=warn)
    except StoreError as exc:
        fail(f"{exc}{named_like(fs, query) if UNKNOWN_QUERY in str(exc) else ''}")


def named_like(fs: FeatureStore, text: str, shown: int = 5) -> str:
    """'; did you mean ...' naming the first ``shown`` tracks (by id) whose title, artist - title or file name holds
    ``text`` (case, accents and punctuation aside: 'transience' finds '01 - Transience.ogg'); '' when none does. For
    an unknown track's error: a title typed as a query."""
    from mess.audio.names import normalize_name
    from mess.constants import file_title
    from mess.store.paths import printable

    wanted = normalize_name(text)
    if not wanted:
        return ""
    hits = [t for t in fs.tracks() if any(wanted in normalize_name(name) for name in
                                          (t.name, file_title(t.path)))]
    if not hits:
        return ""
    listed = ", ".join(f"{t.id} ({printable(t.path)})" for t in hits[:shown]) + (", ..." if len(hits) > shown else "")
    return f"; did you mean {listed}? (give the id, the path or the file name with its extension)"


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"mess {version('mess')}")
        except PackageNotFoundError:
            typer.echo("mess (not installed as a package)")
        raise typer.Exit()


def version_option(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                          callback=_print_version)] = False,
) -> None:
    """Music Embedding Similarity Search: extract multi-layer embeddings, discover what each layer encodes,
    and search for similar tracks and artists with evidence."""


_C = TypeVar("_C")


class _PlainParams:
    """Help without type markers: arguments as NAME, valued options as NAME, flags bare."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params: list[click.Parameter] = super().get_params(ctx)  # type: ignore[misc]
        for p in params:
            if p.metavar is None:
                p.metavar = "" if getattr(p, "is_flag", False) else p.name.upper()
            if isinstance(p, TyperArgument):  # usage line "QUERY", not "{QUERY}"; no type column
                usage = p.metavar + ("..." if p.nargs != 1 else "")
                # per-instance overrides of typer's display hooks (no subclass of TyperArgument to swap in)
                p._usage_display_name = lambda usage=usage: usage  # type: ignore[method-assign]
                p.display_type_rich = lambda ctx: None  # type: ignore[method-assign]
        return params


class PlainCommand(_PlainParams, TyperCommand):  # type: ignore[misc]  # typer's get_params is untyped
    """A command whose help shows no type markers."""


class PlainGroup(_PlainParams, TyperGroup):  # type: ignore[misc]  # as above
    """A command group whose help shows no type markers."""


def plain_help(app: typer.Typer) -> None:
    """Give every command and group of ``app`` (recursively) help pages without type markers."""
    def pick(cls: type[_C] | DefaultPlaceholder | None, default: type[_C], plain_cls: type[_C]) -> type[_C]:
        return plain_cls if cls is None or cls is default or isinstance(cls, DefaultPlaceholder) else cls

    for command in app.registered_commands:
        command.cls = pick(command.cls, TyperCommand, PlainCommand)
    for group in app.registered_groups:
        group.cls = pick(group.cls, TyperGroup, PlainGroup)
        if group.typer_instance is not None:
            plain_help(group.typer_instance)
    app.info.cls = pick(app.info.cls, TyperGroup, PlainGroup)
