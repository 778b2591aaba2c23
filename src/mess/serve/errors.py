"""Error answers in the API's one shape, ``{"detail": "one line"}``: a request FastAPI cannot validate, a parameter
of another route, and server paths kept out of messages."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from fastapi import HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from mess.store.paths import printable

_SHOWN = 40  # characters of a sent value quoted in a message
_LONG = re.compile(rf"\S{{{2 * _SHOWN + 1},}}")  # a run of non-space characters no message word is this long
_PATH = re.compile(r"(?<![\w.~/:-])/[^\s'\"(),;:]+(?<!\.)")  # an absolute path, not a URL's (nor a full stop after)


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 for parameters of the wrong type or range, or missing: each named with what it takes, as the API's other
    errors are (FastAPI's answer was a list of pydantic's records, echoing the value however long)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    route = request.scope.get("route")
    specs = _parameters(request, route) if isinstance(route, Route) else {}
    lines = dict.fromkeys(_line(error, specs) for error in errors)  # once each, in order
    return JSONResponse({"detail": "; ".join(lines)}, status_code=422)


async def http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer to an HTTPException, with a long value the message echoes (a model name or a track id of
    thousands of characters) cut (see :func:`short_values`) and bytes of a file name that are not UTF-8 escaped."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        exc = _not_allowed(request, exc)
    elif exc.status_code == 404 and request.scope.get("route") is None and request.url.path.startswith("/api/"):
        exc = StarletteHTTPException(404, f"no API route {request.url.path}; /openapi.json lists them", exc.headers)
    if isinstance(exc.detail, str):  # a store folder's name that is not UTF-8 is escaped: JSON holds UTF-8 alone
        exc = StarletteHTTPException(exc.status_code, short_values(printable(exc.detail)), exc.headers)
    return await http_exception_handler(request, exc)


def _not_allowed(request: Request, exc: StarletteHTTPException) -> StarletteHTTPException:
    """A 405 that names the method and the route (Starlette's said 'Method Not Allowed'), its ``Allow`` header naming
    HEAD beside GET on an API route (:class:`mess.serve.app.HeadAsGet` answers it; FastAPI's header left it out) and
    the methods of every route of the path in the schema (Starlette's named the first route's only: GET and HEAD of
    /api/artists/similar, whose POST is a route of its own)."""
    allowed = [m.strip() for m in (exc.headers or {}).get("Allow", "").split(",") if m.strip()]
    route = request.scope.get("route")
    where = route.path if isinstance(route, Route) else request.url.path  # /api/tracks/{track_id}; a page file's path
    allowed += [m.upper() for m in request.app.openapi()["paths"].get(where, {}) if m.upper() not in allowed]
    if "GET" in allowed and "HEAD" not in allowed and where.startswith("/api/"):
        allowed.append("HEAD")
    method = request.scope.get("mess.method", request.method)  # HEAD, which HeadAsGet routes as GET
    detail = f"{method} is not allowed on {where}; allowed: {', '.join(allowed) or 'none'}"
    return StarletteHTTPException(405, detail, {**(exc.headers or {}), "Allow": ", ".join(allowed)})


def short_values(text: str) -> str:
    """``text`` with each run of more than 80 non-space characters (a value sent in a request, echoed back) cut to
    its first 40, so an error answer stays one short line however long the request was."""
    return _LONG.sub(_cut, text)


def _cut(run: re.Match) -> str:
    """One long run cut, its quotes and punctuation kept: "'xxxx...; use" -> "'xxxx... (3000 characters)'; use"."""
    value = run[0].rstrip("'\";:,.)")
    opening = len(value) - len(value.lstrip("'\"("))  # not counted: 'x...' of 3000 x's was '(3001 characters)'
    return f"{value[:opening + _SHOWN]}... ({len(value) - opening} characters){run[0][len(value):]}"


ERROR_SCHEMA = {"title": "Error", "type": "object", "required": ["detail"],
                "properties": {"detail": {"type": "string", "title": "Detail",
                                          "description": "One line saying what was wrong, naming the bad input."}}}
_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


def error_shapes(schema: dict) -> dict:
    """The app's OpenAPI ``schema`` with every error answer in the shape the API sends, ``{"detail": "one line"}``:
    FastAPI documented its 422 as pydantic's list of records, which the API never sends (a client generated from the
    schema failed on every 422), and no other error status; each error status a route lists is that shape now, and
    so are the ``4XX`` and ``5XX`` it does not list (an unknown id's 404, a store being rebuilt's 503)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    components["Error"] = ERROR_SCHEMA
    for operations in schema["paths"].values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for code, response in responses.items():
                if code[0] in "45":
                    response["content"] = dict(_ERROR_CONTENT)
            responses.setdefault("4XX", {"description": "Refused: a parameter, id or file that cannot be used, named "
                                                        "in the detail", "content": dict(_ERROR_CONTENT)})
            responses.setdefault("5XX", {"description": "The server cannot answer now (a store being rebuilt, a "
                                                        "model that cannot load): the detail says why",
                                         "content": dict(_ERROR_CONTENT)})
    return schema


def unused_parameters(request: Request) -> None:
    """Dependency: 400 for a parameter another route takes but this one does not (``layer`` to the radio, which
    takes ``aspect`` alone, was ignored: a playlist of other vectors than asked for); a blank one is left out, as
    everywhere, and names no route takes (a cache-buster, ``token``) are ignored. Also 400 for a parameter of one value
    given twice with different values (``k=5&k=10``, ``layer=mfcc&layer=``): the last was used, the others ignored."""
    route = request.scope.get("route")
    if not isinstance(route, Route):
        return
    specs = _parameters(request, route)
    taken = [name for name, p in specs.items() if p["in"] == "query"]
    sent = {name for name, value in request.query_params.multi_items() if value.strip()} - set(taken)
    unused = sorted(sent & {p["name"] for operations in request.app.openapi()["paths"].values()
                            for operation in operations.values() for p in operation.get("parameters", ())})
    if unused:
        takes = f"it takes {', '.join(taken)}" if taken else "it takes no parameters"
        raise HTTPException(400, f"{route.path} does not take {' or '.join(unused)}; {takes}")
    for name in taken:
        values = dict.fromkeys(request.query_params.getlist(name))
        if len(values) > 1 and _single(specs[name].get("schema", {})).get("type") != "array":
            shown = ", ".join(map(_shown, values))
            raise HTTPException(400, f"{name} is given {len(values)} different values ({shown}); it takes one")


def query_parameters(request: Request) -> list[str]:
    """The query parameters the request's route takes, as its OpenAPI schema lists them."""
    route = request.scope.get("route")
    if not isinstance(route, Route):
        return []
    return [name for name, p in _parameters(request, route).items() if p["in"] == "query"]


def without_paths(text: str) -> str:
    """``text`` with each absolute path replaced by its last part ('/srv/models/mert: no config.json' -> 'mert: no
    config.json'): answers never show where the server keeps its files."""
    return _PATH.sub(lambda m: PurePosixPath(m[0]).name or m[0], text)


def _parameters(request: Request, route: Route) -> dict[str, dict]:
    """The route's parameters in its OpenAPI schema, by name (HEAD reaches the route as GET, see ``HeadAsGet``)."""
    operation = request.app.openapi()["paths"].get(route.path, {}).get(request.method.lower(), {})
    return {p["name"]: p for p in operation.get("parameters", [])}


def _line(error: dict, specs: dict[str, dict]) -> str:
    """One pydantic error in words: 'missing NAME: what it is' or 'invalid NAME 'VALUE'; use WHAT IT TAKES'."""
    name = next(str(part) for part in reversed(error["loc"]) if not isinstance(part, int))  # seed, not seed.1
    spec = specs.get(name, {})
    if error.get("type") == "missing":
        what = spec.get("description", "").rstrip(".")
        return f"missing {name}" + (f": {what[:1].lower()}{what[1:]}" if what else "")
    if error.get("type") == "too_long":  # more values of a repeated parameter than its cap
        most, cap = error.get("ctx", {}).get("max_length"), spec.get("schema", {}).get("x-cap")
        return f"{name} is given {len(error.get('input') or ())} times; at most {most}" + (f" ({cap})" if cap else "")
    allowed = _allowed(spec.get("schema", {}))
    cap = spec.get("schema", {}).get("x-cap") if error.get("type") == "less_than_equal" else None
    return (f"invalid {name} {_shown(error.get('input'))}" + (f"; use {allowed}" if allowed else "")
            + (f" ({_single(spec['schema'])['maximum']}: {cap})" if cap else ""))


def _single(schema: dict) -> dict:
    """A parameter's schema without its null choice (an optional parameter's ``anyOf``)."""
    return next((s for s in schema.get("anyOf", ()) if s.get("type") != "null"), schema)


def _allowed(schema: dict) -> str:
    """What a parameter's schema takes, in words ('a whole number from 1 to 200', 'true or false')."""
    schema = _single(schema)
    if schema.get("type") == "array":
        return f"{_allowed(schema.get('items', {}))} (repeat it for several)"
    if "enum" in schema:
        names = [str(v) for v in schema["enum"]]
        return " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    if schema.get("type") == "boolean":
        return "true or false"
    if schema.get("type") == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and high is not None:
            return f"a whole number from {low} to {high}"
        return "a whole number" + (f" of {low} or more" if low is not None else "")
    return ""


def _shown(value: object) -> str:
    """A sent value quoted, cut to its first characters when long (the message stays one short line)."""
    text = str(value)
    if len(text) <= _SHOWN:
        return repr(text)
    return f"{text[:_SHOWN]!r}... ({len(text)} characters)"
