"""The file response of the audio endpoint and the page's files: HTTP range requests as RFC 9110 §14 reads them.

Starlette answered a ``Range`` it could not read (``bytes=5-2``, ``bytes=abc``, ``items=0-5``) with a
plain-text 400 and an unsatisfiable one with a plain-text 416. A server must ignore a range unit it does not
know and may ignore an invalid range: here both get 200 with the whole file; a valid range none of whose parts
lies in the file gets 416, raised by the route as JSON like every API error.
"""

from __future__ import annotations

import os
import re

from fastapi import HTTPException, Request
from fastapi.responses import FileResponse
from starlette.responses import RangeNotSatisfiable

_SPEC = re.compile(r"([0-9]*)-([0-9]*)", re.ASCII)  # int-range (first-[last]) or suffix-range (-length)
_BEYOND = 2**63  # a byte position past every file


def _position(digits: str) -> int:
    """A byte position or length as written; past 19 digits, :data:`_BEYOND` (int() refuses over 4,300 digits:
    'bytes=0-999...' was a 500)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 19 else _BEYOND


class AudioFile(FileResponse):
    """A file response that ignores a ``Range`` header it cannot read instead of refusing it."""

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
