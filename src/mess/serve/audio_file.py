"""The file response of the audio endpoint and the page's files: conditional requests as RFC 9110 §13 and range
requests as its §14 read them.

Starlette's FileResponse has no conditional GET: a request carrying the file's own ETag in ``If-None-Match`` got the
whole file again (a browser's player re-downloaded it), ``If-Modified-Since`` was ignored, and its ETag (of size and
mtime) stayed the same for a file rewritten keeping both. Starlette answered a ``Range`` it could not read
(``bytes=5-2``, ``bytes=abc``, ``items=0-5``) with a plain-text 400 and an unsatisfiable one with a plain-text 416.
A server must ignore a range unit it does not know and may ignore an invalid range: here both get 200 with the whole
file; a valid range none of whose parts lies in the file gets 416, raised by the route as JSON like every API error.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from datetime import UTC
from email.utils import parsedate_to_datetime

from fastapi import HTTPException, Request
from fastapi.responses import FileResponse, Response
from starlette.responses import RangeNotSatisfiable
from starlette.staticfiles import NotModifiedResponse
from starlette.types import Receive, Scope, Send

from mess.constants import file_stamp

_SPEC = re.compile(r"([0-9]*)-([0-9]*)", re.ASCII)  # int-range (first-[last]) or suffix-range (-length)
_BEYOND = 2**63  # a byte position past every file
_TAG = re.compile(r'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')  # one entity-tag of a list (§8.8.3)


def _position(digits: str) -> int:
    """A byte position or length as written; past 19 digits, :data:`_BEYOND` (int() refuses over 4,300 digits:
    'bytes=0-999...' was a 500)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 19 else _BEYOND


def etag(stat: os.stat_result) -> str:
    """The strong ETag of a file: of its size, mtime, inode and ctime (:func:`file_stamp`), so that any write, replace
    or rename-over changes it, also one that keeps size and mtime (a retag, ``touch -r``)."""
    return f'"{hashlib.blake2b(file_stamp(stat).encode(), digest_size=16).hexdigest()}"'


def _tags(field: str) -> list[tuple[bool, str]] | None:
    """The entity-tags of an ``If-Match`` / ``If-None-Match`` value as (weak, opaque tag); None for ``*``; [] for a
    value that is no list of entity-tags (it matches nothing)."""
    if field.strip() == "*":
        return None
    tags, at = [], 0
    while at < len(field):
        match = _TAG.match(field, at)
        if match is None or match.end() == at:
            return []
        tags.append((match[1] is not None, match[2]))
        at = match.end()
    return tags


def _date(field: str | None) -> float | None:
    """An HTTP-date (IMF-fixdate, RFC 850 or asctime form) as a POSIX time; None when absent, not a date, or more
    than one (§13.1.3 and §13.1.4: such a field is ignored)."""
    if field is None or field.count(",") > 1:
        return None
    try:
        when = parsedate_to_datetime(field)
    except (TypeError, ValueError, IndexError):
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


class AudioFile(FileResponse):
    """A file response that answers conditional requests (RFC 9110 §13), and ignores a ``Range`` header it cannot
    read instead of refusing it."""

    modified = 0  # Last-Modified as a POSIX time (whole seconds)

    def set_stat_headers(self, stat_result: os.stat_result) -> None:
        """Starlette's Content-Length and Last-Modified, and the ETag of :func:`etag`."""
        self.headers.setdefault("etag", etag(stat_result))
        self.modified = int(stat_result.st_mtime)
        super().set_stat_headers(stat_result)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Sent as FileResponse sends it; a HEAD that :class:`mess.serve.app.HeadAsGet` routed as GET is sent as HEAD
        (headers only), so the file is not read to be thrown away."""
        if scope.get("mess.method") == "HEAD":
            scope = {**scope, "method": "HEAD"}
        await super().__call__(scope, receive, send)

    def answer(self, request: Request) -> Response:
        """This response, or what its preconditions make of it in RFC 9110 §13.2.2's order, for a GET or HEAD: a
        false ``If-Match`` (else ``If-Unmodified-Since``) is a 412; a true ``If-None-Match`` (else
        ``If-Modified-Since`` not older than the file) a 304 with the ETag; an ``If-Range`` that does not match
        (:meth:`_should_use_range`) leaves the ``Range`` out (200, the whole file); else an unsatisfiable range is a
        416. The 412 and 416 are raised as HTTPException (JSON, as every API error).

        Raises:
            HTTPException: 412 or 416.
        """
        headers, tag = request.headers, self.headers["etag"]
        if (if_match := headers.get("if-match")) is not None:
            listed = _tags(if_match)
            if listed is not None and (False, tag) not in listed:
                raise HTTPException(412, f"If-Match {if_match[:100]!r} does not match the file's ETag {tag}")
        elif (since := _date(headers.get("if-unmodified-since"))) is not None and self.modified > since:
            raise HTTPException(412, f"the file was modified ({self.headers['last-modified']}) since the "
                                     "If-Unmodified-Since date")
        if (if_none_match := headers.get("if-none-match")) is not None:
            listed = _tags(if_none_match)
            if listed is None or tag in (opaque for _, opaque in listed):  # weak comparison
                return NotModifiedResponse(self.headers)
        elif (since := _date(headers.get("if-modified-since"))) is not None and self.modified <= since:
            return NotModifiedResponse(self.headers)
        refusal = self.refusal(request, self.stat_result) if self.stat_result is not None else None
        if refusal is not None:
            raise refusal
        return self

    def _should_use_range(self, http_if_range: str) -> bool:
        """Whether an ``If-Range`` validator matches (§13.1.5): an entity-tag by strong comparison (a weak one never),
        a date when it is the Last-Modified date and that is a strong validator (the file unchanged for a second
        since, §8.8.2.2: two writes within that second would share it)."""
        value = http_if_range.strip()
        if value.startswith(('"', "W/")):
            return value == self.headers["etag"]
        when = _date(value)
        return when is not None and when == self.modified and self.modified + 1 < time.time()

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        """[start, end) byte ranges, merged; [] (the whole file) for an unknown unit or an invalid range set.

        Raises:
            RangeNotSatisfiable: a valid range set none of whose ranges starts inside the file.
        """
        unit, sep, spec = http_range.partition("=")
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        if not sep or unit.strip().lower() != "bytes" or not parts or len(parts) > cls.max_ranges:
            return []
        ranges: list[tuple[int, int]] = []
        for part in parts:
            match = _SPEC.fullmatch(part)
            if match is None or not (match[1] or match[2]):
                return []
            if match[1]:  # first-[last]: last < first makes the whole header invalid
                first, last = _position(match[1]), _position(match[2]) if match[2] else None
                if last is not None and last < first:
                    return []
                if first < file_size:
                    ranges.append((first, file_size if last is None else min(last + 1, file_size)))
            elif _position(match[2]) > 0 and file_size > 0:  # the last n bytes
                ranges.append((max(file_size - _position(match[2]), 0), file_size))
        if not ranges:
            raise RangeNotSatisfiable(file_size)
        ranges.sort()
        merged = [ranges[0]]
        for start, end in ranges[1:]:
            if start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return merged

    def refusal(self, request: Request, stat: os.stat_result) -> HTTPException | None:
        """The JSON 416 for the request's ``Range`` when it will be used (no ``If-Range``, or one that matches) and
        no part of it lies in the file; None otherwise."""
        http_range, if_range = request.headers.get("range"), request.headers.get("if-range")
        if http_range is None or (if_range is not None and not self._should_use_range(if_range)):
            return None
        try:
            self._parse_range_header(http_range, stat.st_size)
        except RangeNotSatisfiable:
            return HTTPException(416, f"range not satisfiable: {http_range[:100]!r} (the file has {stat.st_size} "
                                      "bytes)", headers={"Content-Range": f"bytes */{stat.st_size}"})
        return None
