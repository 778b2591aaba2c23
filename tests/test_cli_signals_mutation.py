"""The entry point's endings (mess.cli.main.main, mess.cli.signals) in this process: the commands are small typer
apps built here, run by the real `main` (conftest.run_here answers as a process would). Expected exit codes come
from the shell's convention (128 + the signal's number), the messages from what a user is to read."""

from __future__ import annotations

import errno
import os
import signal
import warnings
from collections.abc import Callable

import pytest
import typer

from conftest import run_here
from mess.cli import signals
from mess.cli.main import INTERRUPTED, main
from mess.cli.signals import Terminated, record_terminated, terminate, terminated


@pytest.fixture(autouse=True)
def no_sigterm_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a fresh process: no SIGTERM received (the record is the module's)."""
    monkeypatch.setattr(signals, "_TERMINATED", [])


def _run(command: Callable[[], None], monkeypatch: pytest.MonkeyPatch, *args: str,
         env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`mess ARGS` where the CLI is one typer command running ``command``."""
    import mess.cli.app

    app = typer.Typer()
    app.command("go")(command)
    app.command("other")(lambda: None)  # two commands: the first is named on the command line
    monkeypatch.setattr(mess.cli.app, "app", app)
    with warnings.catch_warnings():  # main adds its filters; they end with the test
        done = run_here(["mess", *(args or ("go",))], main, env=env)
    return done.returncode, done.stdout, done.stderr


def test_sigterm_raises_an_interrupt_and_is_remembered() -> None:
    assert not terminated()
    with pytest.raises(Terminated) as raised:
        terminate(signal.SIGTERM, None)
    assert isinstance(raised.value, KeyboardInterrupt), "commands end on it as on Ctrl-C"
    assert terminated()


def test_a_sigterm_a_command_s_own_handler_took_is_remembered() -> None:
    record_terminated(signal.SIGTERM)
    assert terminated()


@pytest.mark.parametrize(("sigterm", "code"), [(False, 128 + 2), (True, 128 + 15)])
def test_an_interrupt_no_command_handled_is_said_in_one_line(monkeypatch: pytest.MonkeyPatch, sigterm: bool,
                                                             code: int) -> None:
    """typer turns a KeyboardInterrupt inside a command into exit 130 after printing nothing: main says it."""
    def go() -> None:
        if sigterm:
            terminate(signal.SIGTERM, None)
        raise KeyboardInterrupt

    got, out, err = _run(go, monkeypatch)
    assert (got, out) == (code, "")
    assert err.startswith("interrupted: stopped before the command finished;") and err.count("\n") == 1, err


@pytest.mark.parametrize(("sigterm", "code"), [(False, 130), (True, 143)])
def test_a_command_that_said_it_was_interrupted_is_not_said_again(monkeypatch: pytest.MonkeyPatch, sigterm: bool,
                                                                  code: int) -> None:
    def go() -> None:
        if sigterm:
            record_terminated(signal.SIGTERM)
        typer.echo("stopped: kept 3 files", err=True)
        raise typer.Exit(130)

    assert _run(go, monkeypatch) == (code, "", "stopped: kept 3 files\n")


@pytest.mark.parametrize(("sigterm", "code"), [(False, 130), (True, 143)])
def test_an_interrupt_while_the_commands_load_is_said_in_one_line(monkeypatch: pytest.MonkeyPatch, sigterm: bool,
                                                                  code: int) -> None:
    import mess.cli.app

    def app() -> None:  # the commands' modules, loading
        if sigterm:
            terminate(signal.SIGTERM, None)
        raise KeyboardInterrupt

    monkeypatch.setattr(mess.cli.app, "app", app)
    done = run_here(["mess", "go"], main)
    assert (done.returncode, done.stdout, done.stderr) == (code, "", INTERRUPTED + "\n")


def test_other_exits_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    def go() -> None:
        raise typer.Exit(3)

    assert _run(go, monkeypatch)[:2] == (3, "")
    code, _, err = _run(go, monkeypatch, "nosuch")  # a usage error: typer's own exit 2 and its message
    assert code == 2 and "No such command" in err and "interrupted" not in err


def test_a_refused_file_is_named_in_one_error_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def go() -> None:
        raise PermissionError(errno.EACCES, "Permission denied", "/music/[b]caf\udce9.flac")

    assert _run(go, monkeypatch) == (1, "", "error: /music/[b]caf\\xe9.flac: Permission denied\n")


@pytest.mark.parametrize(("hub", "verbosity"), [(None, "info"), ("0", None)])
def test_the_process_is_set_up_before_the_command_runs(monkeypatch: pytest.MonkeyPatch, hub: str | None,
                                                       verbosity: str | None) -> None:
    """SIGTERM ends a command as Ctrl-C; the hub's progress bars and transformers' notices are off unless the user
    set them; the MLP probe's 'maximum iterations' warning is not shown, others are."""
    seen: dict[str, object] = {}

    def go() -> None:
        seen["handler"] = signal.getsignal(signal.SIGTERM)
        seen["env"] = (os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"), os.environ.get("TRANSFORMERS_VERBOSITY"))
        with warnings.catch_warnings(record=True) as shown:
            for text, module in (("Stochastic Optimizer: Maximum iterations (200) reached", "sklearn.neural_network"),
                                 ("Stochastic Optimizer: Maximum iterations (200) reached", "mess.probing"),
                                 ("something else", "sklearn.neural_network")):
                warnings.warn_explicit(text, UserWarning, "x.py", 1, module=module)
        seen["shown"] = [(str(w.message), w.filename) for w in shown]

    for name, value in (("HF_HUB_DISABLE_PROGRESS_BARS", hub), ("TRANSFORMERS_VERBOSITY", verbosity)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert _run(go, monkeypatch)[0] == 0
    assert seen["handler"] is terminate
    assert seen["env"] == (hub or "1", verbosity or "error")
    assert [text for text, _ in seen["shown"]] == ["Stochastic Optimizer: Maximum iterations (200) reached",
                                                   "something else"]


def test_the_typer_app_is_loaded_on_first_use() -> None:
    import mess.cli.app
    import mess.cli.main

    assert mess.cli.main.app is mess.cli.app.app
    with pytest.raises(AttributeError, match="^module 'mess.cli.main' has no attribute 'nosuch'$"):
        mess.cli.main.nosuch  # noqa: B018
