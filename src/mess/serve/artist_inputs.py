"""The JSON body of ``POST /api/artists/similar``: what `mess artists similar` reads from its ``--reference`` and
``--tags`` files, sent as content (no request names a file), checked as the CLI checks those files."""

from __future__ import annotations

import json
from dataclasses import dataclass

from fastapi import HTTPException, Request
from starlette.requests import ClientDisconnect

from mess.artists.analysis import parse_tags
from mess.artists.profiles import ArtistError
from mess.artists.reference import parse_reference
from mess.serve.errors import short_values
from mess.serve.uploads import TooLarge, TooSlow, limited, too_slow

MAX_BODY = 2 * 2**20  # bytes: a reference map of thousands of artists is a few hundred KB
CAP_WORDS = "the server's cap, to bound each request's work; the command line reads files of any size"
FIELDS = ("reference", "tags")
BODY = {"requestBody": {"required": False, "content": {"application/json": {"schema": {
    "type": "object", "additionalProperties": False, "x-cap": CAP_WORDS,
    "description": f"At most {MAX_BODY // 2**20} MiB ({CAP_WORDS}). An empty body is none.",
    "properties": {
        "reference": {"description": "What `--reference FILE` holds: artist -> ordered list of similar artists, as "
                                     "names or objects with a name (ListenBrainz), or a Last.fm artist.getSimilar "
                                     "answer; feeds the hybrid 'reference' component."},
        "tags": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}},
                 "description": "What `--tags FILE` holds: artist -> genre tags, added to the files' tags."}}}}}}}


@dataclass(frozen=True)
class HybridInputs:
    """The reference lists and extra genre tags a request sent (None: not sent)."""

    reference: dict[str, list[str]] | None = None
    tags: dict[str, list[str]] | None = None


async def hybrid_inputs(request: Request) -> HybridInputs:
    """Dependency: a POST's JSON body read (413 beyond :data:`MAX_BODY`, without reading on when its
    ``Content-Length`` says so; 408 when it trickles in, by the uploads' rate rule) and checked (400 naming what is
    wrong, as the CLI names a bad file); a GET has none (one sent with a body, ``curl -X GET -d``, is a 400: the body
    would be read by nothing, silently)."""
    declared = request.headers.get("content-length", "")
    if request.method != "POST":
        if declared.strip("0") or "transfer-encoding" in request.headers:
            raise HTTPException(400, "a GET's body is not read: send the reference and tags with POST")
        return HybridInputs()
    if declared.isascii() and declared.isdigit() and (len(declared) > 12 or int(declared) > MAX_BODY):
        raise _too_large()
    body = bytearray()
    try:
        async for chunk in limited(request.stream(), MAX_BODY):
            body += chunk
    except TooLarge:
        raise _too_large() from None
    except TooSlow:  # a client trickling bytes held the request (and the client's place) for as long as it liked
        raise too_slow("the body") from None
    except ClientDisconnect:
        raise HTTPException(400, "the client disconnected before the body was whole") from None
    if not body.strip():
        return HybridInputs()
    try:
        data = json.loads(bytes(body).decode("utf-8-sig"))  # -sig: a file saved by Notepad, sent as it is
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HTTPException(400, f"the body is not valid JSON ({exc})") from None
    except RecursionError:
        raise HTTPException(400, "the body is not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict) or set(data) - set(FIELDS):
        raise HTTPException(400, 'the body must be a JSON object {"reference": ..., "tags": ...}'
                                 + (f"; {sorted(set(data) - set(FIELDS))[0]!r} is neither" if isinstance(data, dict)
                                    else f"; got {_kind(data)}"))
    try:
        return HybridInputs(parse_reference(data["reference"]) if "reference" in data else None,
                            parse_tags(data["tags"]) if "tags" in data else None)
    except ArtistError as exc:
        raise HTTPException(400, short_values(str(exc))) from None


def _kind(value: object) -> str:
    """What a JSON value that is no object is, in JSON's words."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return "an array" if isinstance(value, list) else "a string" if isinstance(value, str) else "a number"


def _too_large() -> HTTPException:
    return HTTPException(413, f"the body is larger than {MAX_BODY // 2**20} MiB ({CAP_WORDS})")
