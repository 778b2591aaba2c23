"""Who may talk to the server: trusted Host names, same-origin writes, an optional bearer token.

* **Host.** A request whose ``Host`` is not a loopback name or one the user allowed gets
  400: a web page on another site cannot reach the API through DNS rebinding.
* **Origin.** A state-changing request (POST, PUT, PATCH, DELETE) that a browser marks as
  coming from another origin gets 403: another site's page cannot write an index.
* **Token.** With a token set (``--token`` / ``MESS_TOKEN``, required beyond loopback),
  every request needs it: ``Authorization: Bearer TOKEN``, ``?token=TOKEN``, or the cookie
  that opening the page once as ``/?token=TOKEN`` sets (``mess_token_PORT``: a browser sends
  a host's cookies to every port, so servers on one machine keep apart; a token in the query
  wins over an old cookie).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from mess.constants import port_problem

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
COOKIE = "mess_token"
# on every response: no page of another site may frame this one (a click there would be a same-origin write to
# this server: save a playlist, build an index), no browser guesses a type other than the one sent, and no URL
# (one holding ?token=) is sent on as a Referer
HEADERS = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")  # '_' too: LAN and container names use it, browsers send it


@dataclass(frozen=True)
class AccessPolicy:
    """The Host names the server answers to, and the token it requires (None: no token)."""

    hosts: frozenset[str] = LOOPBACK_HOSTS
    token: str | None = None

    @classmethod
    def build(cls, extra_hosts: Iterable[str] = (), token: str | None = None) -> AccessPolicy:
        """Loopback names plus ``extra_hosts`` (names or addresses; a port is dropped); ValueError names one that is
        neither, which no request's Host could match (see :func:`host_name`)."""
        return cls(LOOPBACK_HOSTS | {host_name(h) for h in extra_hosts}, token or None)


def host_name(value: str) -> str:
    """``value`` as the Host name it allows: lower-cased, without port or IPv6 brackets.

    Raises:
        ValueError: ``value`` is neither a host name nor an IP address ('a b', 'http://music.lan', 'a..b').
    """
    host = _hostname(value)
    if _is_address(host) or _is_name(host):
        return host
    raise ValueError(f"invalid host name {value!r}: give a name such as music.lan (ASCII letters, digits, '-' or "
                     "'_' between dots; xn--... for an international name) or an IP address, without spaces, scheme "
                     "or path")


def _is_name(host: str) -> bool:
    return len(host) <= 253 and all(_LABEL.fullmatch(label) for label in host.removesuffix(".").split("."))


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def install(app: FastAPI, policy: AccessPolicy) -> None:
    """Check every request against ``policy`` before any route runs."""

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await _checked(request, call_next, policy)
        response.headers.update(HEADERS)
        return response


async def _checked(request: Request, call_next: Callable[[Request], Awaitable[Response]],
                   policy: AccessPolicy) -> Response:
    """The route's response for a request ``policy`` lets through, else the refusal (400, 403 or 401)."""
    host_header = request.headers.get("host", "")
    host = _hostname(host_header)
    if host not in policy.hosts:
        return JSONResponse({"detail": f"host {host!r} is not allowed; start the server with "
                                       f"--allowed-host {host} to serve it"}, status_code=400)
    if request.method not in _SAFE_METHODS and _cross_origin(request, host_header):
        return JSONResponse({"detail": "cross-origin requests may not change anything"}, status_code=403)
    if policy.token is None:
        return await call_next(request)
    from_query = request.query_params.get("token")
    cookie = f"{COOKIE}_{request.url.port}" if request.url.port else COOKIE
    supplied = _bearer(request) or from_query or request.cookies.get(cookie)
    if supplied is None or not hmac.compare_digest(supplied.encode(), policy.token.encode()):
        return JSONResponse({"detail": "a token is required: send 'Authorization: Bearer TOKEN' or open "
                                       "the page as /?token=TOKEN"}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})
    response = await call_next(request)
    if from_query is not None:
        response.set_cookie(cookie, policy.token, httponly=True, samesite="strict")
    return response


def _hostname(netloc: str) -> str:
    """'example.org:8000' -> 'example.org', '[::1]:80' -> '::1', lower-cased; a port that is not a port number
    ('localhost:@evil.example') leaves the whole value, which no allowed name matches."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        port = rest.removeprefix(":") if rest.startswith(":") or not rest else None
    elif netloc.count(":") == 1:
        host, port = netloc.split(":")
    else:
        host, port = netloc, ""
    number = (port or "").lstrip("0") or "0"  # int() refuses over 4,300 digits: a ValueError, not a port
    valid_port = port is not None and (port == "" or (port.isascii() and port.isdigit() and len(number) <= 5
                                                     and port_problem(int(number), any_port=True) is None))
    return host if valid_port else netloc


def _cross_origin(request: Request, host_header: str) -> bool:
    """Whether a browser says this request comes from a page of another origin (an Origin that is no URL, such as
    'http://[::1', is none of this server's: urlsplit's ValueError was a 500)."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = request.headers.get("origin")
    if origin is None:
        return False
    try:
        return urlsplit(origin).netloc.lower() != host_header.lower()
    except ValueError:
        return True


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None
