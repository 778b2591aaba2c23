"""The `mess` typer application: one sub-module per stage registers its commands here, imported only when one of
its commands runs (or shows its help), so that a command pays for its own imports alone."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import import_module
from typing import TYPE_CHECKING, Any

import typer
import typer.main
from typer._click.exceptions import BadParameter, MissingParameter, NoArgsIsHelpError, UsageError

from mess.cli.common import PlainGroup, fail, plain_help, version_option

if TYPE_CHECKING:
    from typer._click import Command, Context  # the click that typer vendors (typer.core's base classes)

# Each command or command group, and the module of mess.cli whose ``register`` adds it, in the order `mess --help`
# lists them (typer's: commands, then groups).
COMMANDS: dict[str, str] = {
    "extract": "extract", "info": "extract", "check": "check", "probe": "probe", "probe-validate": "probe",
    "index": "search", "similar": "search", "evaluate": "search", "serve": "serve", "config": "config",
    "export": "export", "artists": "artists", "fuse": "fuse", "demo": "demo_data", "models": "models",
    "playlist": "playlist", "mpd": "mpd",
}


_STAGES: dict[str, typer.Typer] = {}  # module name -> its commands, registered once per process


def _stage(module: str) -> typer.Typer:
    """The commands of ``mess.cli.<module>`` on a typer app of their own (with `app`'s typer defaults, so they build
    as they would there), the module imported and registered on first use."""
    if module not in _STAGES:
        stage = typer.Typer()
        import_module(f"mess.cli.{module}").register(stage)
        plain_help(stage)
        _STAGES[module] = stage
    return _STAGES[module]


@contextmanager
def _one_line_refusals() -> Iterator[None]:
    """click's refusals of what was typed (a bad value, an unknown option or command, a missing argument) end as
    mess's own do, in one ``error:`` line with exit code 1, not in typer's usage box with exit code 2. A command or
    group typed alone still shows its help."""
    try:
        yield
    except NoArgsIsHelpError:
        raise
    except UsageError as exc:
        fail(_refusal(exc))


def _refusal(exc: UsageError) -> str:
    """click's message (a bad value names its option and what it takes); for a slip of the command line (an unknown
    option or command, an argument missing or too many) the help page that shows what is taken."""
    message = exc.format_message()
    if isinstance(exc, BadParameter) and not isinstance(exc, MissingParameter):
        return message + _bounds(exc.param, message)
    names: list[str] = []
    ctx = exc.ctx
    while ctx is not None:
        names.append(ctx.info_name or "" if ctx.parent is not None else "mess")  # `python -m mess.cli` is mess too
        ctx = ctx.parent
    return f"{message.rstrip('.')}; `{' '.join(reversed(names or ['mess']))} --help` shows what it takes"


def _bounds(param: object, message: str) -> str:
    """'; it takes 1 to 14400' (or 'at least 1', 'at most 5') for a number option with bounds whose refusal does not
    say them ('-n x': 'Input should be a valid integer'); '' otherwise."""
    low, high = (_number(getattr(param, bound, None)) for bound in ("min", "max"))
    said = [b for b in (low, high) if b]
    if not said or any(b in message for b in said):
        return ""
    return f"; it takes {f'{low} to {high}' if low and high else f'at least {low}' if low else f'at most {high}'}"


def _number(bound: float | None) -> str:
    """A bound as typed: 1048576, not 1.04858e+06; 0.1; '' for none."""
    return "" if bound is None else str(int(bound)) if float(bound).is_integer() else str(bound)


class LazyGroup(PlainGroup):
    """The `mess` group: it names its commands without importing them, and builds one (its module's commands) when
    click asks for it; click's refusals of what was typed are one line (:func:`_one_line_refusals`)."""

    def make_context(self, info_name: str | None, args: list[str], parent: Context | None = None,
                     **extra: Any) -> Context:  # noqa: ANN401 - click's own signature
        """click's, its refusals of `mess`'s own options one line."""
        with _one_line_refusals():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: Context) -> Any:  # noqa: ANN401 - what the command returns
        """click's, its refusals of the command's options and arguments (and of a command not known) one line."""
        with _one_line_refusals():
            return super().invoke(ctx)

    def list_commands(self, ctx: Context) -> list[str]:
        """Every command's name, in help order."""
        return list(COMMANDS)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        """The command ``cmd_name``, its module imported and its commands built by typer on first use."""
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.commands.update(typer.main.get_group(_stage(COMMANDS[cmd_name])).commands)
        return self.commands.get(cmd_name)

    def resolve_command(self, ctx: Context, args: list[str]) -> tuple[str | None, Command | None, list[str]]:
        """typer's, whose 'Did you mean ...?' draws on the commands built: a name not known builds them all."""
        if args and self.get_command(ctx, args[0]) is None:
            for name in COMMANDS:
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)


app = typer.Typer(
    name="mess",
    help="Music Embedding Similarity Search: extract multi-layer embeddings, discover what each layer "
    "encodes, and search for similar tracks and artists with evidence.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=LazyGroup,
)
app.callback()(version_option)
plain_help(app)
