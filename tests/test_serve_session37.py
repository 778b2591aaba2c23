"""The server as a music-app builder uses it: an app on another origin (CORS), one shape of "nothing to say" in the
answers, and the CLI's file inputs as request bodies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_serve_api as api
from fastapi.testclient import TestClient

from conftest import mess_here
from mess.serve.app import create_app
from mess.serve.security import AccessPolicy

serve_collection = api.serve_collection  # the session's store (3 artists x 4 tagged tracks, dsp), made once per run
APP = "http://localhost:5173"  # a dev server's page on another port
OTHER = "http://localhost:5174"


@pytest.fixture(scope="module")
def cors(serve_collection: Path) -> Iterator[TestClient]:
    """A server that lets APP's pages read it, with a token (as beyond loopback) and indexing allowed."""
    access = AccessPolicy.build(token="s3cret", origins=["HTTP://LocalHost:5173/"])  # as a user may type it
    with TestClient(create_app(serve_collection, access=access, allow_indexing=True),
                    base_url="http://127.0.0.1:8000") as client:
        yield client


@pytest.fixture(scope="module")
def plain(serve_collection: Path) -> Iterator[TestClient]:
    """A server started as today's users start it."""
    with TestClient(create_app(serve_collection), base_url="http://127.0.0.1:8000") as client:
        yield client


BEARER = {"Authorization": "Bearer s3cret"}


# ---------------------------------------------------------------- CORS

def test_an_allowed_origin_passes_the_preflight_without_the_token(cors: TestClient) -> None:
    """A browser asks before it sends the token (a preflight carries none): the answer lets APP send it."""
    asked = cors.options("/api/tracks", headers={"Origin": APP, "Access-Control-Request-Method": "GET",
                                                 "Access-Control-Request-Headers": "authorization"})
    assert asked.status_code == 200, asked.text
    assert asked.headers["access-control-allow-origin"] == APP
    assert "authorization" in asked.headers["access-control-allow-headers"].lower()
    refused = cors.options("/api/tracks", headers={"Origin": OTHER, "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in refused.headers


def test_an_allowed_origin_reads_what_others_cannot(cors: TestClient, plain: TestClient) -> None:
    """A simple request: the same answer for every origin, the header that lets a browser hand it to the page for
    APP alone; a server started without --allow-origin lets no page read it, as before."""
    read = cors.get("/api/tracks", headers={"Origin": APP, **BEARER})
    assert read.status_code == 200 and read.headers["access-control-allow-origin"] == APP
    assert "etag" in read.headers["access-control-expose-headers"].lower()
    other = cors.get("/api/tracks", headers={"Origin": OTHER, **BEARER})
    assert other.json() == read.json() and "access-control-allow-origin" not in other.headers
    refused = cors.get("/api/tracks", headers={"Origin": APP})  # no token: the app can read why
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == APP
    before = plain.options("/api/tracks", headers={"Origin": APP, "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in before.headers
    assert "access-control-allow-origin" not in plain.get("/api/tracks", headers={"Origin": APP}).headers


def test_an_allowed_origin_may_ask_by_post_but_not_build_an_index(cors: TestClient) -> None:
    """An upload only asks: APP's page may send one (this one is not audio: the route's own 415, past the guard);
    an index build changes the store: 403 for APP's page too, as for any other origin."""
    cross = {"Sec-Fetch-Site": "cross-site", **BEARER}
    files = {"file": ("notes.txt", b"not audio", "text/plain")}
    upload = cors.post("/api/similar/upload", files=files, headers={"Origin": APP, **cross})
    assert upload.status_code == 415, upload.text
    assert upload.headers["access-control-allow-origin"] == APP
    assert cors.post("/api/similar/upload", files=files, headers={"Origin": OTHER, **cross}).status_code == 403
    index = cors.post("/api/index", headers={"Origin": APP, **cross})
    assert index.status_code == 403 and "not change the store" in index.json()["detail"]
    assert index.headers["access-control-allow-origin"] == APP  # the app can read why


@pytest.mark.parametrize("origin", ["*", "null", "localhost:5173", "http://localhost:5173/app", "ftp://music.lan",
                                    "http://user@localhost:5173", "http://localhost:99999", "http://a b"])
def test_a_bad_origin_is_refused_in_one_line(origin: str) -> None:
    """Each would match no browser's Origin (or, '*' and 'null', every page's): refused before the server starts."""
    out = mess_here("serve", "--allow-origin", origin, "--store", "/nonexistent-store", "--port", "0")
    assert out.returncode == 1 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid origin") and repr(origin) in lines[0], out.stderr


# ---------------------------------------------------------------- one shape of "nothing to say"

def test_every_routes_note_is_null_when_nothing_is_to_be_said(plain: TestClient) -> None:
    """The radio and the path said `"note": ""`, the map, the artists and health null: a client had to test for both.
    Each is asked here where it has nothing to say (every track has vectors, the playlists fit, no file is gone)."""
    ids = [t["id"] for t in plain.get("/api/tracks").json()["items"]]
    answers = {url: plain.get(url, params=params) for url, params in (
        ("/api/playlists/radio", {"seed": ids[0], "n": 3}),
        ("/api/playlists/path", {"start": ids[0], "end": ids[-1], "n": 4}),
        ("/api/map", {}), ("/api/artists/similar", {"track": ids[0], "center": "false"}), ("/api/health", {}))}
    assert all(a.status_code == 200 for a in answers.values()), {u: a.text for u, a in answers.items()}
    assert {url: a.json()["note"] for url, a in answers.items()} == dict.fromkeys(answers)


# ---------------------------------------------------------------- the CLI's files as a body

REFERENCE = {"Saw Machine": [{"name": "Noise Ensemble", "score": 0.9}, "Sine Choir"],  # ListenBrainz and plain names
             "Noise Ensemble": ["Saw Machine"], "Nobody Here": ["Sine Choir"]}
TAGS = {"Saw Machine": ["industrial", "electronic"], "Noise Ensemble": ["industrial"]}
BLEND = {"weights": "audio=0.4,genre=0.3,reference=0.3", "k": "2"}


def test_reference_and_tags_sent_as_a_body_answer_as_the_clis_files(plain: TestClient, serve_collection: Path,
                                                                     tmp_path: Path) -> None:
    """`mess artists similar --reference FILE --tags FILE` had no API form (the route named the files and said to use
    the CLI). POSTed as JSON, the answer is the CLI's with those files, the reference component included; a GET, and a
    POST without a body, answer as before."""
    (tmp_path / "ref.json").write_text(json.dumps(REFERENCE))
    (tmp_path / "tags.json").write_text("\ufeff" + json.dumps(TAGS))  # with a BOM, as Notepad saves: read the same
    done = mess_here("artists", "similar", "saw machine", "--json", "--store", str(serve_collection), "-k", "2",
                     "--weights", BLEND["weights"], "--reference", str(tmp_path / "ref.json"),
                     "--tags", str(tmp_path / "tags.json"))
    assert done.returncode == 0, done.stderr
    cli = json.loads(done.stdout)
    answer = plain.post("/api/artists/similar", params={"name": "saw machine", **BLEND},
                        content="\ufeff" + json.dumps({"reference": REFERENCE, "tags": TAGS}),
                        headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert {key: got[key] for key in set(cli) - {"results"}} == {key: cli[key] for key in set(cli) - {"results"}}
    assert [(r["artist"], r["components"]) for r in got["results"]] == [
        (r["artist"], {c: round(v, 6) for c, v in r["components"].items()}) for r in cli["results"]]
    assert [r["score"] for r in got["results"]] == [round(r["score"], 6) for r in cli["results"]]
    assert "reference" in got["results"][0]["components"]
    without = plain.get("/api/artists/similar", params={"name": "saw machine", **BLEND}).json()
    assert "reference" not in without["results"][0]["components"]
    assert plain.post("/api/artists/similar", params={"name": "saw machine", **BLEND}).json() == without


@pytest.mark.parametrize(("body", "cli_file", "detail"), [
    ([["Saw Machine"]], "ref", "reference must be a JSON object mapping each artist to an ordered list of similar "
                               "artists"),
    ({"Saw Machine": "Noise Ensemble"}, "ref", "reference for 'Saw Machine' is not a list"),
    ({"Saw Machine": [{"mbid": "x"}]}, "ref", "reference entry {'mbid': 'x'} for 'Saw Machine' has no artist name"),
    ({"Saw Machine": "industrial"}, "tags", "must map each artist to a list of tags (strings)")],
    ids=["an array", "no list", "no name", "tags no list"])
def test_a_bad_body_is_refused_as_the_cli_refuses_the_file(plain: TestClient, serve_collection: Path, tmp_path: Path,
                                                           body: object, cli_file: str, detail: str) -> None:
    """The same checks and words as the CLI's file readers (the CLI names its file, the API the body's field)."""
    (tmp_path / "bad.json").write_text(json.dumps(body))
    option = "--reference" if cli_file == "ref" else "--tags"
    done = mess_here("artists", "similar", "saw machine", "--store", str(serve_collection), "--weights",
                     BLEND["weights"], option, str(tmp_path / "bad.json"))
    assert done.returncode == 1 and detail in done.stderr, done.stderr
    field = "reference" if cli_file == "ref" else "tags"
    answer = plain.post("/api/artists/similar", params={"name": "saw machine", **BLEND}, json={field: body})
    assert answer.status_code == 400 and detail in answer.json()["detail"], answer.text
    assert answer.json()["detail"].startswith(field)


@pytest.mark.parametrize(("content", "status", "detail"), [
    (b'{"reference": ', 400, "the body is not valid JSON (Expecting value"),
    (b"\xff\xfe{}", 400, "the body is not valid JSON ("),
    (b"[" * 100_000, 400, "the body is not valid JSON (nested too deeply)"),
    (b'{"references": {}}', 400, "the body must be a JSON object {\"reference\": ..., \"tags\": ...}; 'references'"),
    (b"null", 400, "; got null"),
    (json.dumps({"reference": {"Saw Machine": ["x" * 64] * 40_000}}).encode(), 413,
     "the body is larger than 2 MiB (the server's cap")],
    ids=["cut short", "not UTF-8", "nested deeply", "unknown field", "null", "over the cap"])
def test_a_body_that_is_no_such_object_is_one_line(plain: TestClient, content: bytes, status: int,
                                                   detail: str) -> None:
    answer = plain.post("/api/artists/similar", params={"name": "saw machine", **BLEND}, content=content)
    assert answer.status_code == status and detail in answer.json()["detail"], answer.text
    assert "\n" not in answer.json()["detail"] and len(answer.json()["detail"]) < 300


def test_a_body_without_the_blend_says_what_it_feeds(plain: TestClient) -> None:
    """As `mess artists similar --reference FILE` without --hybrid: it was read by nothing, silently."""
    answer = plain.post("/api/artists/similar", params={"name": "saw machine"}, json={"tags": TAGS})
    assert answer.status_code == 400 and answer.json()["detail"] == ("tags feeds the hybrid score: add hybrid=true (or "
                                                                     "weights)"), answer.text


# ---------------------------------------------------------------- found trying the API as an app builder

def test_a_refused_preflight_says_why_in_the_apis_shape(cors: TestClient) -> None:
    """Starlette's refusal was a plain-text 400 'Disallowed CORS origin, method, headers', without the headers every
    other answer has (nosniff, no framing); an allowed app on a LAN address asking a loopback server (Chrome's
    Private Network Access preflight) was refused."""
    refused = cors.options("/api/tracks", headers={"Origin": OTHER, "Access-Control-Request-Method": "PUT",
                                                   "Access-Control-Request-Headers": "x-foo"})
    assert refused.status_code == 400 and refused.headers["x-content-type-options"] == "nosniff"
    detail = refused.json()["detail"]
    assert all(word in detail for word in (repr(OTHER), "--allow-origin", "'PUT'", "'x-foo'")), detail
    private = cors.options("/api/tracks", headers={"Origin": APP, "Access-Control-Request-Method": "GET",
                                                   "Access-Control-Request-Private-Network": "true"})
    assert private.status_code == 200 and private.headers["access-control-allow-private-network"] == "true"
    assert private.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("path", ["/api/nope", "/api/tracks/1/audio/x", "/api/artist/similar"])
def test_a_route_that_does_not_exist_is_named(plain: TestClient, path: str) -> None:
    """A typo in a route ('artist' for 'artists') was 404 'Not Found', as an unknown track's answer says why."""
    answer = plain.get(path)
    assert answer.status_code == 404 and answer.json()["detail"] == f"no API route {path}; /openapi.json lists them"
    assert plain.get("/api/tracks/999").json()["detail"] == "unknown track id 999"  # a route's own 404 unchanged


def test_a_get_with_a_body_is_refused_not_ignored(plain: TestClient) -> None:
    """`curl -X GET -d @body.json` sent the reference with a GET: answered without it, as if it had been read."""
    answer = plain.request("GET", "/api/artists/similar", params={"name": "saw machine", **BLEND},
                           json={"reference": REFERENCE})
    assert answer.status_code == 400 and "POST" in answer.json()["detail"], answer.text
    assert plain.get("/api/artists/similar", params={"name": "saw machine", **BLEND}).status_code == 200
