"""`mess config`: per-store settings, such as the model commands use when they name none."""

from __future__ import annotations

from typing import Annotated

import typer

from mess.cli.common import emit_json, fail, failing, note, open_store, plain, stdout
from mess.cli.options import DEFAULT_STORE_PATH, JsonOpt, StoreOpt


def config_command(
    key: Annotated[str | None, typer.Argument(metavar="[KEY]", help="Setting to show or change: default-model.")]
    = None,
    value: Annotated[str | None, typer.Argument(metavar="[VALUE]",
                                                help="New value (a model extracted into this store).")] = None,
    unset: Annotated[bool, typer.Option("--unset", help="Remove the setting (back to the automatic choice).")] = False,
    store: StoreOpt = DEFAULT_STORE_PATH,
    as_json: JsonOpt = False,
) -> None:
    """Show the store's settings and the model used by default, or change one setting."""
    from mess.store import StoreDamaged, StoreError
    from mess.store.config import SETTINGS, ConfigError, model_key, names_a_run, read_config, write_setting

    if unset and key is None:
        fail(f"--unset needs the setting to remove, e.g. `mess config {next(iter(SETTINGS))} --unset`")
    if unset and value is not None:
        fail(f"--unset takes no value: `mess config {key} --unset` removes the setting, "
             f"`mess config {key} {value}` sets it")
    with open_store(store) as fs:
        models = sorted({r.model for r in fs.runs()})
        with failing(ConfigError):
            if key is not None and (value is not None or unset):
                if key == "default-model" and value is not None and model_key(value, models) not in models:
                    if names_a_run(value):
                        with failing(StoreError):  # a run not here: 'pick it per command' would not work either
                            fs.run(value)
                    fail(f"default-model is a model, not one run: pick {value!r} per command with --model {value}"
                         if names_a_run(value) else
                         f"no vectors for model {value!r} in {fs.root}; extracted models: {', '.join(models)}")
                write_setting(fs.root, key, None if value is None else model_key(value, models))
            elif key is not None and key not in SETTINGS:
                fail(f"unknown setting {key!r}; known: {', '.join(SETTINGS)}")
            settings = read_config(fs.root)
        try:
            default, problem = (fs.run().model if models else None), None
        except StoreDamaged:
            raise
        except StoreError as exc:  # a default-model without vectors: shown, so that it can be unset here
            default, problem = None, str(exc)
    if as_json:
        emit_json({"settings": settings, "default_model": default, "models": models, "problem": problem})
        return
    note(problem)
    for name, about in SETTINGS.items():
        stdout.print(f"{name} = {plain(settings.get(name, '(not set)'))}  [dim]{plain(about)}[/]")
    stdout.print(f"model used by default: {plain(default or 'none')} (extracted: {plain(', '.join(models))})")


def register(app: typer.Typer) -> None:
    """Add `config` to the main CLI."""
    app.command("config")(config_command)
