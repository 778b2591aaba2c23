"""`mess serve`: the HTTP API and web page over the local store."""

from __future__ import annotations

import errno
import ipaddress
import socket
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from mess.cli.common import console, fail, failing, plain
from mess.cli.options import DEFAULT_STORE_PATH, StoreOpt, given_text
from mess.constants import port_problem

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve_command(
    host: Annotated[str, typer.Option(help="Address to bind; beyond loopback it needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: one the system picks).")] = 8000,
    model: Annotated[str | None, typer.Option("--model", "-m", parser=given_text,
                                              help="Default model, or one of its runs as NAME@RUN_ID (default: the "
                                              "best extracted; see `mess config`).")]
    = None,
    allow_indexing: Annotated[bool, typer.Option("--allow-indexing", help="Open the store writable and enable "
                                                 "POST /api/index (read-only otherwise).")] = False,
    allowed_host: Annotated[list[str] | None, typer.Option("--allowed-host", help="Host name the server may be "
                                                           "reached by, besides loopback names (repeatable).")]
    = None,
    allow_origin: Annotated[list[str] | None, typer.Option("--allow-origin", help="Origin of an app whose pages may "
                                                           "read the API from a browser (CORS), such as "
                                                           "http://localhost:5173 (repeatable; not index builds).")]
    = None,
    token: Annotated[str | None, typer.Option(envvar="MESS_TOKEN", help="Require this bearer token (env "
                                              "MESS_TOKEN); open the page once as /?token=TOKEN.")] = None,
    max_upload_mb: Annotated[float, typer.Option(min=0.1, max=2.0**20, help="Largest accepted upload in MiB.")] = 50.0,
    max_upload_minutes: Annotated[float, typer.Option(min=0.1, help="Longest accepted upload in minutes.")] = 20.0,
    embed_timeout: Annotated[float, typer.Option(min=1.0, help="Seconds an upload may take to decode and embed.")]
    = 120.0,
    store: StoreOpt = DEFAULT_STORE_PATH,
) -> None:
    """Serve the collection: JSON API under /api, a web page at /, the OpenAPI schema at /openapi.json."""
    from mess.serve.app import create_app
    from mess.serve.security import AccessPolicy
    from mess.store import StoreError

    if (problem := port_problem(port, any_port=True)) is not None:
        fail(f"cannot listen at {host}:{port}: {problem}")
    if not is_loopback(host) and not token:
        fail(f"binding to {host} exposes your collection to other machines: set a token with --token or "
             "MESS_TOKEN (clients send 'Authorization: Bearer TOKEN'), or bind to 127.0.0.1")
    hosts = [*(allowed_host or []), *([] if host in ("0.0.0.0", "::") else [host])]
    try:
        access = AccessPolicy.build(hosts, token, allow_origin or ())
    except ValueError as exc:  # 'a b' was allowed: no request's Host could be it; '*' as an origin
        fail(str(exc))
    with failing(StoreError):
        app = create_app(store, model, allow_indexing, max_upload_bytes=int(max_upload_mb * 2**20),
                         embed_timeout=embed_timeout, access=access, max_upload_seconds=max_upload_minutes * 60)
    mode = "indexing enabled" if allow_indexing else "read-only"
    address = host.removeprefix("[").removesuffix("]")  # '[::1]', as URLs write it (it was passed to bind as is)
    shown = f"[{address}]" if ":" in address else address
    listening = listen(address, port, shown)
    console.print(f"serving {plain(str(store))} ({mode}{', token required' if token else ''}) at "
                  f"http://{plain(shown)}:{listening.getsockname()[1]}/ (OpenAPI schema at /openapi.json)")
    try:
        _server(app).run(sockets=[listening])
    except KeyboardInterrupt:  # as uvicorn.run: a Ctrl-C before the server took over its signals
        pass


def _server(app: FastAPI) -> uvicorn.Server:
    """uvicorn's server for ``app``: a first Ctrl-C lets requests finish, as uvicorn does; a second one also ends the
    upload being embedded (the embed worker runs in a process group of its own, out of the terminal's Ctrl-C reach,
    and the server waited for the file to be done). A request that is not valid HTTP is refused in JSON, as the API
    refuses (:class:`~mess.serve.protocol.JsonErrorsProtocol`)."""
    import uvicorn

    from mess.serve.protocol import JsonErrorsProtocol

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            if self.force_exit:
                app.state.mess.worker.kill()

    return Server(uvicorn.Config(app, log_level="warning", http=JsonErrorsProtocol))


def listen(host: str, port: int, shown: str) -> socket.socket:
    """A socket bound to ``host``:``port`` (port 0: a free one), as uvicorn binds it; a one-line error when it cannot
    be (the port in use: uvicorn said so only after the page's address was printed, then a worker's traceback)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's backlog: a client that connects once the address is printed waits in it
    except OSError as exc:
        sock.close()
        fail(f"cannot serve at http://{shown}:{port}/: {exc.strerror or exc}"
             + ("; is another server using that port? pick one with --port" if exc.errno == errno.EADDRINUSE else ""))
    return sock


def register(app: typer.Typer) -> None:
    """Add `serve` to the main CLI."""
    app.command("serve")(serve_command)
