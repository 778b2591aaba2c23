"""The HTTP/1.1 protocol `mess serve` runs: uvicorn's h11 one, whose answer to a request that is not valid HTTP (a
URL with raw non-ASCII bytes or spaces, a malformed header line) was a plain-text 400 "Invalid HTTP request
received." sent before the app sees the request. It is a JSON error now, as every answer of the API, saying what
was wrong."""

from __future__ import annotations

import json
import re
import sys
from http import HTTPStatus

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from mess.serve.security import HEADERS

LINE = 200  # characters of a refused request line quoted back


class JsonErrorsProtocol(H11Protocol):
    """uvicorn's h11 protocol, its refusals of malformed requests JSON ``{"detail": ...}`` with the status h11 hints
    (400; 431 for headers past its buffer), the page's security headers, and the connection closed (as before)."""

    def send_400_response(self, msg: str) -> None:
        """Called by uvicorn inside its ``except h11.RemoteProtocolError`` (``msg`` its generic words)."""
        exc = sys.exc_info()[1]
        status = exc.error_status_hint if isinstance(exc, h11.RemoteProtocolError) else 400
        body = json.dumps({"detail": refusal(exc, msg)}).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
                   *((k.lower().encode(), v.encode()) for k, v in HEADERS.items())]
        for event in (h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase.encode()),
                      h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()


def refusal(exc: BaseException | None, fallback: str) -> str:
    """The words of a refused request: h11's reason (the bytes it quotes as a string, escapes for those that are not
    printable ASCII, cut at :data:`LINE` characters), for a request line with the advice to percent-encode."""
    if not isinstance(exc, h11.RemoteProtocolError):
        return fallback
    if exc.error_status_hint == 431:  # h11's words: 'Receive buffer too long'
        return "invalid HTTP request: its request line and headers are larger than the server takes"
    reason = re.sub(r"bytearray\(b('.*'|\".*\")\)", lambda m: _cut(m[1]), str(exc), flags=re.S)
    advice = ("; it must be METHOD TARGET HTTP/1.1, the target printable ASCII: percent-encode spaces and other "
              "characters of the URL (q=caf%C3%A9 for q=caf\u00e9), as browsers and HTTP libraries do")
    return f"invalid HTTP request: {reason}" + (advice if "request line" in reason else "")


def _cut(quoted: str) -> str:
    return quoted if len(quoted) <= LINE else quoted[:LINE] + "..."
