"""Who may talk to the server: trusted Host names, same-origin writes, an optional bearer token.

* **Host.** A request whose ``Host`` is not a loopback name or one the user allowed gets
  400: a web page on another site cannot reach the API through DNS rebinding.
* **Origin.** A state-changing request (POST, PUT, PATCH, DELETE) that a browser marks as
  coming from another origin gets 403: another site's page cannot write an index.
* **Allowed origins.** ``--allow-origin`` names app origins (a dev server on another port) whose pages may read
  the API (CORS); of the POST routes they may use those that only ask (:data:`ASKING_POSTS`), never an index build.
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
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware

from mess.constants import port_problem
from mess.serve.errors import short_values

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
COOKIE = "mess_token"
# on every response: no page of another site may frame this one (a click there would be a same-origin write to
# this server: save a playlist, build an index), no browser guesses a type other than the one sent, and no URL
# (one holding ?token=) is sent on as a Referer
HEADERS = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# POST routes that change nothing (a body too large for a query): an allowed origin's page may send them
ASKING_POSTS = frozenset({"/api/similar/upload", "/api/artists/similar"})
# what an allowed origin's page may send and read beyond CORS's safelists: the token, a JSON body, ranges and
# conditional requests of the audio; ranges, validators, Retry-After, a download's name and what it left out
_CORS_HEADERS = ("Authorization", "Content-Type", "Range", "If-Range", "If-None-Match", "If-Modified-Since",
                 "If-Match", "If-Unmodified-Since")
_CORS_EXPOSED = ("Content-Range", "Accept-Ranges", "ETag", "Last-Modified", "Retry-After", "Content-Disposition",
                 "X-Left-Out")
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")  # '_' too: LAN and container names use it, browsers send it


@dataclass(frozen=True)
class AccessPolicy:
    """The Host names the server answers to, the token it requires (None: no token), and the origins whose pages
    may read it (CORS)."""

    hosts: frozenset[str] = LOOPBACK_HOSTS
    token: str | None = None
    origins: frozenset[str] = frozenset()

    @classmethod
    def build(cls, extra_hosts: Iterable[str] = (), token: str | None = None,
              origins: Iterable[str] = ()) -> AccessPolicy:
        """Loopback names plus ``extra_hosts`` (names or addresses; a port is dropped), and ``origins`` as browsers
        send them; ValueError names a host that is neither, which no request's Host could match (see
        :func:`host_name`), or an origin that is none (see :func:`origin_name`)."""
        return cls(LOOPBACK_HOSTS | {host_name(h) for h in extra_hosts}, token or None,
                   frozenset(origin_name(o) for o in origins))


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


def origin_name(value: str) -> str:
    """``value`` as the ``Origin`` a browser sends for it: scheme and host lower-cased, a default port and a final
    '/' dropped ('HTTP://LocalHost:80/' -> 'http://localhost').

    Raises:
        ValueError: ``value`` is no http(s) origin: '*', 'null', no scheme, a path, query or user name.
    """
    bad = (f"invalid origin {value!r}: give an app's origin as a browser sends it, http:// or https://, a host and a "
           "port only, such as http://localhost:5173 (repeat --allow-origin for several)")
    if value.strip() in ("*", "null"):
        raise ValueError(bad.replace(" (repeat", "; '*' and 'null' would let pages of any site read the "
                                                 "collection (repeat"))
    try:
        parts = urlsplit(value.strip())
        port = parts.port  # ValueError: not a port number
    except ValueError:
        raise ValueError(bad) from None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if (scheme not in _DEFAULT_PORTS or parts.path not in ("", "/") or parts.query or parts.fragment
            or "@" in parts.netloc or parts.netloc.endswith(":") or not (_is_address(host) or _is_name(host))
            or port == 0):
        raise ValueError(bad)
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" + ("" if port is None or str(port) == _DEFAULT_PORTS[scheme] else f":{port}")


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

    if policy.origins:  # outside the guard: a browser's preflight carries no token
        app.add_middleware(_Cors, allow_origins=sorted(policy.origins), allow_methods=["GET", "HEAD", "POST"],
                           allow_headers=_CORS_HEADERS, expose_headers=_CORS_EXPOSED,
                           allow_private_network=True)  # an allowed app on a LAN address may read a loopback server


class _Cors(CORSMiddleware):
    """Starlette's CORS, its preflight answers with the headers of every answer and a refusal in the API's shape and
    words (it was a plain-text 400 'Disallowed CORS origin')."""

    def preflight_response(self, request_headers: Headers) -> Response:
        """The preflight's answer; a refusal says what was refused and what is allowed."""
        answer = super().preflight_response(request_headers)
        headers = {k: v for k, v in answer.headers.items() if k.lower().startswith(("access-control-", "vary"))}
        if answer.status_code != 400:
            return Response(status_code=answer.status_code, headers={**headers, **HEADERS})
        origin = request_headers["origin"]
        why = {"origin": f"origin {origin!r} may not read this server from a browser (--allow-origin names those "
                         "that may)",
               "method": f"method {request_headers['access-control-request-method']!r} is not allowed; the API takes "
                         "GET, HEAD and POST",
               "headers": f"headers {request_headers.get('access-control-request-headers', '')!r} are not all "
                          f"allowed; a page may send {', '.join(_CORS_HEADERS)}"}
        failed = bytes(answer.body).decode().removeprefix("Disallowed CORS ").split(", ")
        return JSONResponse({"detail": short_values("; ".join(why.get(f, f) for f in failed))}, status_code=400,
                            headers={**headers, **HEADERS})


async def _checked(request: Request, call_next: Callable[[Request], Awaitable[Response]],
                   policy: AccessPolicy) -> Response:
    """The route's response for a request ``policy`` lets through, else the refusal (400, 403 or 401)."""
    host_header = request.headers.get("host", "")
    host = _hostname(host_header)
    if host not in policy.hosts:
        return JSONResponse({"detail": f"host {host!r} is not allowed; start the server with "
                                       f"--allowed-host {host} to serve it"}, status_code=400)
    if request.method not in _SAFE_METHODS and _cross_origin(request, host_header):
        if request.headers.get("origin") not in policy.origins:
            return JSONResponse({"detail": "cross-origin requests may not change anything"}, status_code=403)
        if request.url.path not in ASKING_POSTS:
            return JSONResponse({"detail": f"an allowed origin's page may read the API, not change the store: "
                                           f"{request.method} {request.url.path} is for this server's own page and "
                                           "clients that are not browsers (curl, scripts)"}, status_code=403)
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
