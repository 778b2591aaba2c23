"""Per-store settings (``STORE/config.json``) and which run a command uses when it names no model.

The default run is the best model extracted, not the latest: a local MERT folder or
MERT from the hub, then musicnn, then dsp, then anything else (probe controls last),
unless ``mess config default-model NAME`` chose one. A ``--model`` of ``NAME@RUN_ID`` or
``run:RUN_ID`` picks one run (:func:`run_choice`).
"""

from __future__ import annotations

import errno
import json
from collections.abc import Collection, Sequence
from pathlib import Path

from mess.store.paths import expanded, replace_file

CONFIG_FILE = "config.json"
SETTINGS = {"default-model": "Model used when a command names none (default: mert, then musicnn, then dsp)."}
MODEL_PREFERENCE = ("mert-v1-330m", "mert-v1-95m", "musicnn", "musicnn-msd", "musicnn-mtt", "dsp")
CONTROL_SUFFIX = "-random-init"


class ConfigError(ValueError):
    """An unknown setting or an unreadable config file."""


def read_config(root: Path) -> dict[str, str]:
    """The store's settings ({} when none were set)."""
    path = Path(root) / CONFIG_FILE
    if not path.is_file():
        return {}
    fix = "set it again with `mess config default-model NAME` or remove it with `mess config default-model --unset`"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path} ({exc}); {fix}") from exc
    if not isinstance(data, dict):  # read as no settings before: a default-model written there was ignored
        raise ConfigError(f"cannot read {path} (not a JSON object of settings); {fix}")
    return {str(k): str(v) for k, v in data.items() if v is not None}


def write_setting(root: Path, key: str, value: str | None) -> dict[str, str]:
    """Set (or with ``value`` None, unset) one setting; returns all settings.

    An unreadable config file is replaced (setting a value is how a user repairs it); the file is written whole.
    """
    if key not in SETTINGS:
        raise ConfigError(f"unknown setting {key!r}; known: {', '.join(SETTINGS)}")
    try:
        config = read_config(root)
    except ConfigError:
        config = {}
    if value is None:
        config.pop(key, None)
    else:
        config[key] = value
    try:
        replace_file(Path(root) / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
    except OSError as exc:
        raise ConfigError(f"cannot change the settings of the store at {root}: {_unwritable(exc)}") from None
    return config


def _unwritable(exc: OSError) -> str:
    """Why the store's folder refused a new config file, for a one-line error."""
    if exc.errno == errno.EROFS:
        return "it is on a read-only file system (mount it writable to change its settings)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"this user may not write in its folder ({exc.strerror})"
    return f"{CONFIG_FILE} cannot be written there ({exc.strerror or exc})"


def model_rank(name: str) -> int:
    """Lower is better: a local model folder (a MERT checkpoint), then MODEL_PREFERENCE order, others, controls."""
    if name.endswith(CONTROL_SUFFIX):
        return len(MODEL_PREFERENCE) + 2
    if Path(name).is_absolute():
        return -1
    return MODEL_PREFERENCE.index(name) if name in MODEL_PREFERENCE else len(MODEL_PREFERENCE) + 1


def preferred_model(models: Sequence[str], configured: str | None = None) -> str | None:
    """The configured model, else the best-ranked one (the latest among equals); None when nothing is extracted.

    Raises:
        ConfigError: ``configured`` is not among the extracted ``models`` (never a silent fallback).
    """
    if not models:
        return None
    if configured and configured not in models:
        raise ConfigError(f"default-model {configured!r} (set by `mess config`) has no vectors in this store "
                          f"(extracted: {', '.join(sorted(set(models)))}); name one with --model, or run "
                          "`mess config default-model --unset` (or `mess config default-model NAME`)")
    if configured:
        return configured
    best = min(model_rank(m) for m in models)
    return [m for m in models if model_rank(m) == best][-1]


def names_a_run(text: str) -> bool:
    """Whether ``text`` is written as a run choice (``NAME@RUN_ID`` or ``run:RUN_ID``), well formed or not."""
    return text.startswith("run:") or "@" in text


def run_choice(text: str, known: Collection[str] = ()) -> tuple[str | None, int] | None:
    """(model, run id) that ``text`` picks: ``NAME@RUN_ID`` or ``run:RUN_ID`` (model None); None when ``text`` is a
    model name (one of the ``known`` ones wins: a folder called 'x@2' holding an extracted model is that model).

    Raises:
        ConfigError: ``text`` is written as a run choice but is malformed ('dsp@', 'dsp@x', '@2', 'run:', a run id
            of more than 19 digits, which no store has).
    """
    if not names_a_run(text) or model_key(text, known) in known:
        return None
    name: str | None = None
    if text.startswith("run:"):
        number = text.removeprefix("run:")
    else:
        name, _, number = text.rpartition("@")
    if not (number.isascii() and number.isdigit() and len(number) <= 19) or name == "":  # 19: SQLite's largest id
        raise ConfigError(f"{text!r} names no model of this store and is no run choice: pick a run as "
                          "NAME@RUN_ID (dsp@2) or run:RUN_ID, with a run id that `mess info` lists")
    return (None if name is None else model_key(name, known)), int(number)


def model_key(name: str, known: Collection[str] = ()) -> str:
    """A run's model name for ``name``: ``name`` itself when it is one of the ``known`` (extracted) models, else the
    resolved path for a local model folder, else ``name`` (a folder called 'dsp' in the working directory does not
    hide the store's dsp run). Model names are read in any case, as `mess extract` reads them ('DSP' is dsp)."""
    if name in known:
        return name
    if "/" not in name and name.lower() in known:  # a registry name; a folder's run is its path, as written
        return name.lower()
    path = expanded(name)
    try:
        return str(path.resolve()) if path.is_dir() else name
    except OSError:  # a name too long to be a path, or under a folder it may not search: no model folder
        return name
