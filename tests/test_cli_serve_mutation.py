"""`mess serve`'s refusals before it serves, in this process: a port out of range, an address beyond loopback without
a token, an allowed host that is no host name, no store, a port in use. Expected answers from the definitions
(loopback addresses per RFC 5735/4291, 0-65535 for a port to listen on) and a socket the test holds."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mess.cli.serve import is_loopback, listen, register


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost", True), ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
    ("0.0.0.0", False), ("::", False), ("[::]", False), ("192.168.1.2", False), ("music.lan", False),
    ("128.0.0.1", False),
])
def test_only_this_machine_s_addresses_are_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def _serve(*args: str) -> tuple[int, str]:
    app = typer.Typer()
    register(app)
    app.command("other")(lambda: None)
    got = CliRunner().invoke(app, ["serve", *args], terminal_width=400, env={"MESS_TOKEN": ""})
    return got.exit_code, " ".join(got.output.split())


@pytest.mark.parametrize(("port", "ok"), [(-1, False), (0, True), (65535, True), (65536, False)])
def test_a_port_to_listen_on_is_0_to_65535(tmp_path: Path, port: int, ok: bool) -> None:
    code, said = _serve("--port", str(port), "--store", str(tmp_path / "none"))
    assert code == 1
    if ok:  # past the port check: the missing store is what stops it
        assert said == f"error: no feature store at {tmp_path / 'none'} (run `mess extract` first)", said
    else:
        assert said == f"error: cannot listen at 127.0.0.1:{port}: the port is out of range (0-65535)"


def test_an_address_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    code, said = _serve("--host", "0.0.0.0", "--store", str(tmp_path / "none"))
    assert code == 1 and said.startswith("error: binding to 0.0.0.0 exposes your collection to other machines: "
                                         "set a token with --token or MESS_TOKEN"), said
    code, said = _serve("--host", "0.0.0.0", "--token", "t", "--store", str(tmp_path / "none"))
    assert said == f"error: no feature store at {tmp_path / 'none'} (run `mess extract` first)", said
    code, said = _serve("--host", "[::1]", "--store", str(tmp_path / "none"))
    assert "no feature store" in said, "loopback needs none"


def test_an_allowed_host_that_is_no_host_name_is_one_line(tmp_path: Path) -> None:
    code, said = _serve("--allowed-host", "a b", "--store", str(tmp_path / "none"))
    assert code == 1 and said.startswith("error: invalid host name 'a b'"), said
    code, said = _serve("--host", "music lan", "--token", "t", "--store", str(tmp_path / "none"))
    assert code == 1 and said.startswith("error: invalid host name 'music lan'"), said
    code, said = _serve("--host", "0.0.0.0", "--token", "t", "--allowed-host", "music.lan", "--store",
                        str(tmp_path / "none"))
    assert "no feature store" in said, "0.0.0.0 itself is no host name a request names: not checked"


def test_listen_binds_a_free_port_and_names_one_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    sock = listen("127.0.0.1", 0, "127.0.0.1")
    try:
        port = sock.getsockname()[1]
        assert sock.family == socket.AF_INET and port > 0
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # it listens
        with pytest.raises(typer.Exit) as ended:
            listen("127.0.0.1", port, "127.0.0.1")
        assert ended.value.exit_code == 1
    finally:
        sock.close()
    said = " ".join(capsys.readouterr().err.split())
    assert said == (f"error: cannot serve at http://127.0.0.1:{port}/: Address already in use; is another server "
                    "using that port? pick one with --port")


def test_an_address_this_machine_does_not_have_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit):
        listen("192.0.2.1", 0, "192.0.2.1")  # TEST-NET-1: no interface holds it
    said = " ".join(capsys.readouterr().err.split())
    assert said == "error: cannot serve at http://192.0.2.1:0/: Cannot assign requested address", said


def test_listen_takes_ipv6_addresses() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        sock = listen("::1", 0, "[::1]")
    except typer.Exit:
        pytest.skip("::1 cannot be bound here")
    with sock:
        assert sock.family == socket.AF_INET6 and sock.getsockname()[1] > 0


def test_reusing_a_port_left_in_time_wait_works() -> None:
    """A server stopped while a client was connected leaves its port in TIME_WAIT: a restart on that port binds."""
    first = listen("127.0.0.1", 0, "127.0.0.1")
    port = first.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    accepted, _ = first.accept()
    accepted.close()  # the server's side closes first: its end goes to TIME_WAIT
    client.close()
    first.close()
    again = listen("127.0.0.1", port, "127.0.0.1")
    again.close()


class _Stand:
    """Stands in for uvicorn and the app factory: records what serve_command hands them."""

    def __init__(self) -> None:
        self.app_args: tuple[object, ...] = ()
        self.app_kwargs: dict[str, object] = {}
        self.sockets: list[tuple[int, int]] = []  # (family, port) of each socket the server was given

    def create_app(self, *args: object, **kwargs: object) -> object:
        self.app_args, self.app_kwargs = args, kwargs
        return object()

    def server(self, app: object) -> object:
        stand = self

        class Server:
            def run(self, sockets: list[socket.socket]) -> None:
                stand.sockets = [(sock.family, sock.getsockname()[1]) for sock in sockets]
                for sock in sockets:
                    sock.close()
                raise KeyboardInterrupt  # Ctrl-C before uvicorn took over its signals: a clean end

        return Server()


@pytest.mark.parametrize(("args", "host", "shown", "mode"), [
    ([], "127.0.0.1", "127.0.0.1", "read-only"),
    (["--host", "[::1]", "--allow-indexing", "--token", "t"], "::1", "[::1]", "indexing enabled, token required"),
])
def test_what_the_server_is_given_and_where_it_is_said_to_be(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             args: list[str], host: str, shown: str,
                                                             mode: str) -> None:
    import mess.cli.serve
    import mess.serve.app

    stand = _Stand()
    monkeypatch.setattr(mess.serve.app, "create_app", stand.create_app)
    monkeypatch.setattr(mess.cli.serve, "_server", stand.server)
    code, said = _serve(*args, "--port", "0", "--store", str(tmp_path / "s"))
    assert code == 0, said
    [(family, port)] = stand.sockets
    assert family == (socket.AF_INET6 if ":" in host else socket.AF_INET)
    assert port > 0 and said == (f"serving {tmp_path / 's'} ({mode}) at http://{shown}:{port}/ "
                                 "(OpenAPI schema at /openapi.json)")
    assert stand.app_args == (tmp_path / "s", None, "indexing" in mode)
    assert stand.app_kwargs["max_upload_bytes"] == 50 * 1024 * 1024  # --help: 50 MiB
    assert stand.app_kwargs["max_upload_seconds"] == 20 * 60 and stand.app_kwargs["embed_timeout"] == 120


def test_upload_limits_are_passed_in_bytes_and_seconds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mess.cli.serve
    import mess.serve.app

    stand = _Stand()
    monkeypatch.setattr(mess.serve.app, "create_app", stand.create_app)
    monkeypatch.setattr(mess.cli.serve, "_server", stand.server)
    code, said = _serve("--port", "0", "--max-upload-mb", "0.5", "--max-upload-minutes", "1.5", "--embed-timeout",
                        "7", "-m", "dsp", "--store", str(tmp_path / "s"))
    assert code == 0, said
    assert stand.app_args[1] == "dsp"
    assert stand.app_kwargs["max_upload_bytes"] == 524288 and stand.app_kwargs["max_upload_seconds"] == 90
    assert stand.app_kwargs["embed_timeout"] == 7


@pytest.mark.parametrize(("option", "refused", "taken"), [("--max-upload-mb", "0.09", "0.1"),
                                                          ("--max-upload-mb", "1048577", "1048576"),
                                                          ("--max-upload-minutes", "0.09", "0.1"),
                                                          ("--embed-timeout", "0.9", "1")])
def test_upload_limits_have_bounds(tmp_path: Path, option: str, refused: str, taken: str) -> None:
    code, said = _serve("--port", "-1", option, refused)
    assert code == 2 and "Invalid value for" in said, said
    code, said = _serve("--port", "-1", option, taken)  # past the bounds: the port is what stops it
    assert code == 1 and "the port is out of range" in said, said
