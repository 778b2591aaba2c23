"""The HTTP API under malformed input: every route's parameters wrong in type, range or name, ids that name nothing,
hostile headers and bad uploads. Each answer is a 4xx (413 when too large) whose ``detail`` is one line naming the
parameter and what it takes, never a 500, a traceback or a server path; the server answers normally afterwards.

One app over one store (``test_serve_api``'s twelve rendered tones) serves the module."""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Annotated, Literal

import httpx
import numpy as np
import pytest
import soundfile as sf
import test_serve_api as api
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from mess.serve.app import create_app
from mess.serve.errors import http_error, invalid_request, short_values, unused_parameters, without_paths
from mess.store import FeatureStore, RunKey

serve_collection = api.serve_collection  # the session's store, made once per run


@pytest.fixture(scope="module")
def collection(serve_collection: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the session's store: this module's server may write to it (it builds an index)."""
    copy = tmp_path_factory.mktemp("serve") / "store"
    shutil.copytree(serve_collection, copy)
    return copy


@pytest.fixture(scope="module")
def server_files(collection: Path, serve_collection: Path) -> Path:
    """The folder above the store served and the music it catalogues: no answer may name it."""
    return Path(os.path.commonpath([collection, serve_collection]))
BIG = "9" * 5000  # past int()'s 4,300 digits
NINES = repr(BIG[:40])


@pytest.fixture(scope="module")
def client(collection: Path) -> Iterator[TestClient]:
    app = create_app(collection, max_upload_bytes=api.UPLOAD_LIMIT, allow_indexing=True, embed_timeout=300)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        yield c


def _refused(response: httpx.Response, status: int, words: str, where: Path) -> str:
    """The detail of a refusal: the status, one line of JSON holding ``words``, no traceback or server path."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and len(detail) < 12_000, detail[:300]
    assert words in detail, detail[:300]
    assert "Traceback" not in detail and str(where) not in detail and "mess-upload" not in detail, detail[:300]
    return detail


# Each row: METHOD URL | STATUS | words the detail holds ({BIG}, {NINES}, {LONG}: see _cases).
CASES = """\
# ids that name nothing (404) or are no id (422)
GET /api/tracks/999999 | 404 | unknown track id 999999
GET /api/tracks/99999999999999999999999/similar | 404 | unknown track id 99999999999999999999999
GET /api/tracks/-1 | 422 | invalid track_id '-1'; use a whole number of 1 or more
GET /api/tracks/1.5/audio | 422 | invalid track_id '1.5'; use a whole number
GET /api/tracks/%FF | 422 | invalid track_id '\ufffd'
GET /api/tracks/%00/similar | 422 | invalid track_id '\\x00'
GET /api/tracks/{BIG} | 422 | invalid track_id {NINES}... (5000 characters); use a whole number
GET /api/playlists/radio?seed=99999 | 404 | unknown track id 99999
GET /api/playlists/radio?seed= | 422 | invalid seed ''; use a whole number of 1 or more (repeat it for several)
GET /api/playlists/radio?seed=1&seed=abc | 422 | invalid seed 'abc'
GET /api/playlists/path?start=1&end=99999 | 404 | unknown track id 99999
GET /api/playlists/path?start=1&end=1 | 400 | the start and the end are the same recording
GET /api/artists/similar?name=%FF%FE | 404 | unknown artist '\ufffd\ufffd'
GET /api/artists/similar?name={LONG} | 404 | unknown artist 'zzz
GET /api/artists/similar?name= | 400 | give one of name (an artist's name) and track (a track id)
GET /api/artists/similar?track=%2B1 | 422 | invalid track '+1'; use a whole number
GET /api/artists/similar?track=1_0 | 422 | invalid track '1_0'; use a whole number
GET /api/artists/similar?track=%201 | 422 | invalid track ' 1'; use a whole number
# missing parameters
GET /api/artists/similar | 400 | give one of name (an artist's name) and track (a track id)
GET /api/playlists/radio | 422 | missing seed: seed track ids (repeat for several)
GET /api/playlists/path?start=1 | 422 | missing end: last track id
# numbers out of range or of the wrong type
GET /api/tracks/1/similar?k=-1 | 422 | invalid k '-1'; use a whole number from 1 to 200
GET /api/tracks/1/similar?k=0 | 422 | invalid k '0'; use a whole number from 1 to 200
GET /api/tracks/1/similar?k=201 | 422 | invalid k '201'; use a whole number from 1 to 200
GET /api/tracks/1/similar?k=100000000000000000000000 | 422 | invalid k '100000000000000000000000'; use a whole number
GET /api/tracks/1/similar?k=nan | 422 | invalid k 'nan'; use a whole number from 1 to 200
GET /api/tracks/1/similar?k=inf | 422 | invalid k 'inf'; use a whole number from 1 to 200
GET /api/tracks/1/similar?k=1.5 | 422 | invalid k '1.5'; use a whole number from 1 to 200
GET /api/tracks/1/similar?k=1e3 | 422 | invalid k '1e3'; use a whole number from 1 to 200
GET /api/tracks/1/similar?k= | 422 | invalid k ''; use a whole number from 1 to 200
GET /api/tracks/1/similar?expand=51 | 422 | invalid expand '51'; use a whole number from 0 to 50
GET /api/tracks/1/similar?expand=-1 | 422 | invalid expand '-1'; use a whole number from 0 to 50
GET /api/tracks?offset=-1 | 422 | invalid offset '-1'; use a whole number of 0 or more
GET /api/tracks?offset={BIG} | 422 | invalid offset {NINES}... (5000 characters)
GET /api/tracks?limit=0 | 422 | invalid limit '0'; use a whole number from 1 to 1000
GET /api/tracks?limit=1001 | 422 | invalid limit '1001'; use a whole number from 1 to 1000
GET /api/artists/similar?name=Sine%20Choir&k=0 | 422 | invalid k '0'; use a whole number from 1 to 200
GET /api/playlists/radio?seed=1&n=0 | 422 | invalid n '0'; use a whole number from 1 to 500
GET /api/playlists/radio?seed=1&n=100000 | 422 | invalid n '100000'; use a whole number from 1 to 500
GET /api/playlists/radio?seed=1&window=0 | 422 | invalid window '0'; use a whole number from 1 to 50
GET /api/playlists/path?start=1&end=2&n=1 | 422 | invalid n '1'; use a whole number from 2 to 200
GET /api/playlists/path?start=1&end=2&n=200 | 400 | 12 tracks with vectors, fewer than n=200
POST /api/similar/upload?k=0 | 422 | invalid k '0'; use a whole number from 1 to 200
# flags and choices
GET /api/tracks/1/similar?fused=maybe | 422 | invalid fused 'maybe'; use true or false
GET /api/tracks/1/similar?learned=2 | 422 | invalid learned '2'; use true or false
GET /api/tracks/1/similar?exclude_same_artist=yes%FF | 422 | invalid exclude_same_artist 'yes\ufffd'
GET /api/artists/similar?name=Sine%20Choir&center=maybe | 422 | invalid center 'maybe'; use true or false
GET /api/playlists/radio?seed=1&format=pdf | 422 | invalid format 'pdf'; use json, m3u8 or xspf
GET /api/playlists/path?start=1&end=2&format= | 422 | invalid format ''; use json, m3u8 or xspf
GET /api/probe?probe=nope | 422 | invalid probe 'nope'; use ridge or mlp
GET /api/probe/heatmap.png?probe= | 422 | invalid probe ''; use ridge or mlp
GET /api/tracks/1/similar?hubness=magic | 400 | unknown hubness reduction 'magic'; choose csls or mp
GET /api/artists/similar?name=Sine%20Choir&method= | 400 | unknown method ''; choose mean or chamfer
GET /api/playlists/radio?seed=1&blend=mix | 400 | unknown blend 'mix'; use nearest or turns
POST /api/index?kind=nope | 400 | unknown index kind 'nope'; choose auto, flat
# unknown models, runs, layers and aspects; conflicting vector choices
GET /api/tracks/1/similar?model=nope | 404 | unknown model 'nope'; this store has vectors for dsp
GET /api/tracks?model=%FF | 404 | unknown model '\ufffd'; this store has vectors for dsp
GET /api/map?model=. | 404 | unknown model '.'; this store has vectors for dsp
GET /api/tracks?model=~ | 404 | unknown model '~'; this store has vectors for dsp
GET /api/map?model=dsp@999 | 404 | no run 999 in this store; its runs: dsp@1
GET /api/artists?model=dsp@abc | 404 | 'dsp@abc' names no model of this store and is no run choice
GET /api/tracks/1/similar?model=dsp@{BIG} | 404 | names no model of this store and is no run choice
GET /api/probe?model=run:{BIG} | 404 | names no model of this store and is no run choice
GET /api/tracks/1/similar?layer=nope | 400 | unknown layer 'nope'; dsp has mfcc, chroma, spectral, rhythm
GET /api/map?layer=-99 | 400 | layer -99 out of range; dsp has 4 layers
GET /api/map?layer={BIG} | 400 | unknown layer '9999
GET /api/tracks/1/similar?layer=%00 | 400 | unknown layer '\\x00'
GET /api/artists/similar?name=Sine%20Choir&aspect=mood | 400 | unknown aspect 'mood'; dsp has harmony
GET /api/playlists/radio?seed=1&aspect=%FF | 400 | unknown aspect '\ufffd'
GET /api/tracks/1/similar?layer=mfcc&aspect=timbre&fused=true | 400 | choose at most one of layer, aspect, fused
GET /api/map?fused=true | 400 | no fused vectors for dsp
GET /api/map?learned=true | 400 | no learned head for dsp; heads ship for
POST /api/index?layer=nope | 400 | unknown layer 'nope'
POST /api/similar/upload?aspect=mood | 400 | unknown aspect 'mood'
POST /api/similar/upload?model=nope | 404 | unknown model 'nope'
# parameters of other routes
GET /api/playlists/radio?seed=1&layer=mfcc | 400 | /api/playlists/radio does not take layer; it takes seed, n, window,
GET /api/playlists/path?start=1&end=2&seed=3&fused=true | 400 | /api/playlists/path does not take fused or seed; it
GET /api/artists/similar?name=Sine%20Choir&learned=true | 400 | /api/artists/similar does not take learned; it takes
POST /api/similar/upload?seed=3 | 400 | /api/similar/upload does not take seed; it takes model, layer,
GET /api/health?k=3 | 400 | /api/health does not take k; it takes no parameters
GET /api/playlists/radio?seed=1&layer=mfcc&layer= | 400 | /api/playlists/radio does not take layer
# a parameter of one value given more than once, with different values (the last was used)
GET /api/tracks/1/similar?k=5&k=10 | 400 | k is given 2 different values ('5', '10'); it takes one
GET /api/map?layer=mfcc&layer= | 400 | layer is given 2 different values ('mfcc', ''); it takes one
GET /api/playlists/path?start=1&end=2&start=3 | 400 | start is given 2 different values ('1', '3'); it takes one
POST /api/similar/upload?model=dsp&model=nope | 400 | model is given 2 different values ('dsp', 'nope'); it takes
"""


def _cases(table: str) -> list[tuple[str, str, int, str]]:
    """(method, url, status, words) of each row 'METHOD URL | STATUS | WORDS', with {BIG}, {NINES} and {LONG} filled
    in; '#' rows are headings."""
    values = {"BIG": BIG, "NINES": NINES, "LONG": "z" * 10_000}
    rows = []
    for line in table.splitlines():
        if not line.startswith("#"):
            request, status, words = line.split(" | ")
            method, url = request.split(" ", 1)
            rows.append((method, url.format(**values), int(status), words.format(**values)))
    return rows


@pytest.mark.parametrize(("method", "url", "status", "words"), _cases(CASES),
                         ids=lambda value: value[:60] if isinstance(value, str) else None)
def test_malformed_parameters_are_refused_naming_them(client: TestClient, server_files: Path, method: str, url: str,
                                                      status: int, words: str) -> None:
    _refused(client.request(method, url), status, words, server_files)


def test_long_values_are_cut_in_every_refusal(client: TestClient, server_files: Path) -> None:
    """A model, layer, aspect, hubness method or track id of thousands of characters was echoed whole in the 400 and
    404 answers (422s were cut): every route, each query parameter and each path id, sent a long value."""
    long, digits = "z" * 10_000, "9" * 3000  # under int()'s 4,300 digits: a well-formed id that names no track
    cut = []
    for path, operations in client.app.openapi()["paths"].items():
        for method, operation in operations.items():
            plain = re.sub(r"\{[^}]+\}", "1", path)
            sent = [(plain, {p["name"]: long}) for p in operation.get("parameters", []) if p["in"] == "query"]
            sent += [(re.sub(r"\{[^}]+\}", digits, path), {})] if "{" in path else []
            for url, params in sent:
                response = client.request(method.upper(), url, params=params)
                if response.status_code >= 400:
                    detail = _refused(response, response.status_code, "", server_files)
                    assert len(detail) < 300, (method, path, params.keys(), detail[:300])
                    cut += [(path, *params)] if "characters)" in detail else []
    assert len(cut) >= 15 and ("/api/tracks/{track_id}",) in cut and ("/api/map", "aspect") in cut, cut


def test_every_refusal_has_the_shape_the_schema_declares_for_its_status(client: TestClient) -> None:
    """Each refusal of the table, and uploads refused before decoding, is JSON of the schema that /openapi.json
    declares for its route and status, as a client generated from the schema reads it (jsonschema validates it):
    FastAPI declared every 422 as pydantic's list of records, which the API never sends, and no other error status
    (404, 400, 503: a generated client had no type for them)."""
    def pattern(path: str) -> re.Pattern:  # '/api/tracks/{track_id}' matches any one part in the braces' place
        return re.compile("^" + "[^/]+".join(map(re.escape, re.split(r"\{[^}]+\}", path))) + "$")

    doc = client.get("/openapi.json").json()
    routes = [(pattern(p), p) for p in doc["paths"]]
    sent = [(method, url, status, {}) for method, url, status, _ in _cases(CASES)]
    sent += [("POST", "/api/similar/upload?k=3", status, request_args()) for case, request_args, status, _ in UPLOADS
             if case in ("empty", "not audio", "too large", "JSON", "no boundary")]
    checked = set()
    for method, url, status, request_args in sent:
        response = client.request(method, url, **request_args)
        assert response.status_code == status, (url, response.text[:200])
        path = next(p for regex, p in routes if regex.match(httpx.URL(url).path))
        responses = doc["paths"][path][method.lower()]["responses"]
        declared = responses.get(str(status)) or responses.get(f"{status // 100}XX")
        assert declared is not None, (method, path, status, sorted(responses))
        schema = declared["content"][response.headers["content-type"]]["schema"]
        Draft202012Validator({**schema, "components": doc["components"]}).validate(response.json())
        checked.add(status)
    assert checked == {400, 404, 413, 415, 422}, checked


def _wav(samples: np.ndarray, sr: int = api.SR, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples.astype(np.float32), sr, format="WAV", subtype=subtype)
    return buffer.getvalue()


def _ogg(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples.astype(np.float32), api.SR, format="OGG")
    return buffer.getvalue()


def _tone(seconds: float, channels: int = 1) -> np.ndarray:
    y = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * api.SR)) / api.SR)
    return np.tile(y[:, None], (1, channels)) if channels > 1 else y


UPLOADS: list[tuple[str, Callable[[], dict], int, str]] = [
    ("empty", lambda: {"files": {"file": ("a.mp3", b"", "audio/mpeg")}}, 400, "the uploaded file is empty"),
    ("not audio", lambda: {"files": {"file": ("notes.txt", b"hello", "text/plain")}}, 415,
     "unsupported file type '.txt'"),
    ("truncated", lambda: {"files": {"file": ("cut.wav", _wav(_tone(2))[:20_000], "audio/wav")}}, 400,
     "cannot decode the upload: cut.wav: too short"),
    ("header only", lambda: {"files": {"file": ("h.wav", _wav(_tone(1))[:44], "audio/wav")}}, 400,
     "cannot decode the upload: h.wav: contains no audio samples"),
    ("silent", lambda: {"files": {"file": ("s.wav", _wav(np.zeros(3 * api.SR)), "audio/wav")}}, 400,
     "cannot decode the upload: s.wav: silent"),
    ("NaN samples", lambda: {"files": {"file": ("n.wav", _wav(np.full(2 * api.SR, np.nan), subtype="FLOAT"),
                                                "audio/wav")}}, 400, "n.wav: decoded samples contain NaN"),
    ("garbage", lambda: {"files": {"file": ("junk.mp3", b"\xff\xfb" + bytes(5000), "audio/mpeg")}}, 400,
     "cannot decode the upload: junk.mp3: cannot decode (invalid data found when processing input: damaged, or not "
     "audio)"),  # as `mess similar junk.mp3` says it (was the header reader's 'InvalidDataError: [Errno 1094995529]')
    ("cut Ogg", lambda: {"files": {"file": ("cut.ogg", _ogg(_tone(2))[:3000], "audio/ogg")}}, 400,
     "cannot decode the upload: cut.ogg: cannot decode (end of file before any audio: cut short?)"),
    ("too large", lambda: {"files": {"file": ("big.wav", bytes(api.UPLOAD_LIMIT + 1), "audio/wav")}}, 413,
     "upload larger than"),
    ("huge declared size", lambda: {"content": b"abc", "headers": {
        "content-type": "multipart/form-data; boundary=x", "content-length": BIG}}, 413, "upload larger than"),
    ("two files", lambda: {"files": [("file", ("a.wav", b"a", "audio/wav")), ("file", ("b.wav", b"b", "audio/wav"))]},
     400, "malformed upload: Too many files"),
    ("no file field", lambda: {"files": {"other": ("a.wav", b"abc", "audio/wav")}}, 400,
     "no file in the form field 'file'"),
    ("parameters in the form", lambda: {"files": {"file": ("a.wav", _wav(_tone(2)), "audio/wav")},
                                        "data": {"k": "3", "layer": "mfcc", "caption": "x"}}, 400,
     "k and layer go in the query (/api/similar/upload?k=...), not in the form, where they would be ignored"),
    ("JSON", lambda: {"json": {"file": "abc"}}, 415, "send the audio file as multipart/form-data"),
    ("malformed JSON", lambda: {"content": b"{bad", "headers": {"content-type": "application/json"}}, 415,
     "multipart/form-data"),
    ("no boundary", lambda: {"content": b"x", "headers": {"content-type": "multipart/form-data"}}, 400,
     "malformed upload: Missing boundary"),
    ("name too long", lambda: {"files": {"file": ("b" * 1100 + ".wav", b"abc", "audio/wav")}}, 400,
     "file name too long (1104 characters; at most 1024 characters)"),
]


@pytest.mark.parametrize(("case", "request_args", "status", "words"), UPLOADS, ids=[u[0] for u in UPLOADS])
def test_bad_uploads_are_refused_in_words(client: TestClient, server_files: Path, case: str,
                                          request_args: Callable[[], dict], status: int, words: str) -> None:
    _refused(client.post("/api/similar/upload", params={"k": 3}, **request_args()), status, words, server_files)


@pytest.mark.parametrize(("name", "seconds", "channels"), [("one second.wav", 1, 1), ("5.1.wav", 1.2, 6)])
def test_short_and_many_channel_uploads_are_answered(client: TestClient, name: str, seconds: float,
                                                     channels: int) -> None:
    """A 1-second file (the shortest analysed) and a 5.1 file (mixed down) are searched like any other."""
    audio = _wav(_tone(seconds, channels), subtype="PCM_16")
    answer = client.post("/api/similar/upload", params={"k": 3}, files={"file": (name, audio, "audio/wav")})
    assert answer.status_code == 200, answer.text
    assert answer.json()["query"]["file"] == name and len(answer.json()["results"]) == 3


@pytest.mark.parametrize(("url", "status"), [("/api/tracks/1/audio", 206), ("/app.js", 206)])
@pytest.mark.parametrize("header", [f"bytes=0-{BIG}", f"bytes=-{BIG}"])
def test_a_range_of_thousands_of_digits_reads_past_the_file(client: TestClient, url: str, status: int,
                                                           header: str) -> None:
    """``Range: bytes=0-999...`` (5,000 digits) was a 500: int() refuses over 4,300 digits. It reaches past the file."""
    whole = client.get(url).content
    answer = client.get(url, headers={"range": header})
    assert answer.status_code == status and answer.content == whole
    refused = client.get(url, headers={"range": f"bytes={BIG}-"})
    assert refused.status_code == 416 and refused.json()["detail"].startswith("range not satisfiable")


@pytest.mark.parametrize("body", [{"json": {"layer": "mfcc"}}, {"content": b"{bad", "headers": {"content-type": "x"}}],
                         ids=["JSON", "malformed"])
def test_a_body_sent_to_the_index_route_is_refused(client: TestClient, server_files: Path, body: dict) -> None:
    """The body was ignored: ``{"layer": "mfcc"}`` built the index of the default vectors."""
    _refused(client.post("/api/index", params={"kind": "flat"}, **body), 400,
             "/api/index takes no request body; give its parameters in the query", server_files)


def test_the_server_answers_normally_afterwards(client: TestClient) -> None:
    assert client.get("/api/health").json()["status"] == "ok"
    unused = client.get("/api/map", params={"_": "1700000000", "hubness": "", "token": "x"})  # no route's, or blank
    assert unused.status_code == 200, unused.text
    similar = client.get("/api/tracks/1/similar", params={"k": 3})
    assert similar.status_code == 200 and len(similar.json()["results"]) == 3
    again = client.get("/api/tracks/1/similar", params=[("k", "3"), ("k", "3")])  # one value, given twice
    assert again.status_code == 200 and again.json()["results"] == similar.json()["results"]
    two = client.get("/api/playlists/radio", params=[("seed", "1"), ("seed", "2"), ("n", "3")])  # a list
    assert two.status_code == 200 and len(two.json()["tracks"]) == 3
    assert client.post("/api/index", params={"kind": "flat"}).status_code == 200


@pytest.fixture
def copied(collection: Path, tmp_path: Path) -> Path:
    """A copy of the store under a private folder, with runs of two models named by their (gone) files, as a model
    loaded from its folder or an .onnx file is named."""
    copy = tmp_path / "private" / "store"
    shutil.copytree(collection, copy)
    with closing(FeatureStore(copy)) as store:
        run = store.run("dsp")
        for model in (tmp_path / "models" / "mert-local", tmp_path / "models" / "gone.onnx"):
            store.ensure_run(RunKey(str(model), "r1", run.policy, run.sample_rate, run.layer_names, run.layer_dims))
    return copy


def test_a_model_that_cannot_load_is_a_503_naming_no_server_path(copied: Path, tmp_path: Path) -> None:
    """A model named by its folder showed the folder's path in the 503; an .onnx file that is gone raised a ValueError
    the worker did not catch: 400 'the decoder process died on this file'."""
    with TestClient(create_app(copied), base_url="http://127.0.0.1") as c:
        for model, words in (("mert-local", "mert-local is the model folder the collection was extracted with, and "
                                            "it is gone"),
                             ("gone.onnx", "gone.onnx is the model file the collection was extracted with, and it "
                                           "is gone")):
            answer = c.post("/api/similar/upload", params={"model": str(tmp_path / "models" / model)},
                            files={"file": ("a.wav", _wav(_tone(2)), "audio/wav")})
            assert _refused(answer, 503, words, tmp_path).startswith(words)
        good = c.post("/api/similar/upload", params={"model": "dsp", "k": 2},
                      files={"file": ("a.wav", _wav(_tone(2)), "audio/wav")})
        assert good.status_code == 200, good.text


def test_health_while_the_store_is_rebuilt_says_what_it_serves(copied: Path) -> None:
    """/api/health counted the old catalog while the store was rebuilt with only 'status': 'rebuilding' to tell."""
    with TestClient(create_app(copied), base_url="http://127.0.0.1") as c:
        assert c.get("/api/health").json()["note"] is None
        shutil.rmtree(copied)
        for words in ("its catalog is gone", "a new catalog has replaced the one the server read"):
            health = c.get("/api/health").json()
            assert health["status"] == "rebuilding" and health["tracks"] == 12
            assert health["note"].startswith(f"the store is being rebuilt: {words}"), health["note"]
            assert "these counts are the old catalog's" in health["note"] and str(copied) not in health["note"]
            FeatureStore(copied).close()  # the rebuild begins: a catalog without vectors


@pytest.mark.parametrize(("text", "shown"), [
    ("/srv/models/mert holds no model (no config.json)", "mert holds no model (no config.json)"),
    ("no such model file: '/home/me/x.onnx'.", "no such model file: 'x.onnx'."),
    ("cannot fetch m-a-p/MERT-v1-95M from https://huggingface.co/api (offline)",
     "cannot fetch m-a-p/MERT-v1-95M from https://huggingface.co/api (offline)"),
])
def test_messages_name_paths_by_their_last_part(text: str, shown: str) -> None:
    assert without_paths(text) == shown


def _worded() -> TestClient:
    """A bare app with the API's error answers: its validation and HTTP error handlers, and the dependency refusing
    another route's parameters."""
    app = FastAPI()
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    router = APIRouter(dependencies=[Depends(unused_parameters)])

    @router.get("/a")
    def a(seed: Annotated[int, Query(description="The seed track.")],
          n: Annotated[int, Query(ge=1, le=200, description="How many.")] = 10,
          offset: Annotated[int, Query(ge=0)] = 0, plain: int = 0, flag: bool = False,
          kind: Literal["x", "y", "z"] = "x", ids: Annotated[list[int], Query()] = (),
          bare: Annotated[str | None, Query()] = None, opt: Annotated[int | None, Query(ge=0, le=50)] = None) -> dict:
        return {"seed": seed}

    @router.get("/b")
    def b() -> dict:
        raise HTTPException(404, "unknown model '" + "m" * 100 + "'; the track caf\udce9.wav")

    @router.get("/c")
    def c(layer: str | None = None, name: Annotated[str, Query(description="")] = "") -> dict:
        return {"layer": layer}

    app.include_router(router)
    return TestClient(app, base_url="http://127.0.0.1")


def test_the_error_answers_name_each_parameter_and_what_it_takes() -> None:
    long = "7" * 100
    cases = {"/a": "missing seed: the seed track",
             "/a?seed=1&n=0": "invalid n '0'; use a whole number from 1 to 200",
             "/a?seed=1&offset=-1": "invalid offset '-1'; use a whole number of 0 or more",
             "/a?seed=1&plain=x": "invalid plain 'x'; use a whole number",
             "/a?seed=1&flag=maybe": "invalid flag 'maybe'; use true or false",
             "/a?seed=1&kind=w": "invalid kind 'w'; use x, y or z",
             "/a?seed=1&opt=x": "invalid opt 'x'; use a whole number from 0 to 50",  # optional: its anyOf read
             "/a?seed=1&ids=2&ids=b": "invalid ids 'b'; use a whole number (repeat it for several)",
             f"/a?seed={long}x": f"invalid seed {long[:40]!r}... (101 characters); use a whole number",
             f"/a?seed={long[:40]}x": f"invalid seed {long[:40]!r}... (41 characters); use a whole number",
             f"/a?seed={long[:39]}x": f"invalid seed {long[:39] + 'x'!r}; use a whole number",  # 40: whole
             "/a?seed=1&n=0&kind=w": "invalid n '0'; use a whole number from 1 to 200; invalid kind 'w'; use x, y or z",
             "/a?seed=1&ids=a&ids=a": "invalid ids 'a'; use a whole number (repeat it for several)",  # once
             "/a?seed=x&n=": "invalid seed 'x'; use a whole number; invalid n ''; use a whole number from 1 to 200",
             }
    with _worded() as client:
        for url, detail in cases.items():
            answer = client.get(url)
            assert (answer.status_code, answer.json()) == (422, {"detail": detail}), url
        other = client.get("/a?seed=3&layer=2")  # another route's parameter: refused
        assert (other.status_code, other.json()) == (400, {
            "detail": "/a does not take layer; it takes seed, n, offset, plain, flag, kind, ids, bare, opt"})
        assert client.get("/b?layer=2&seed=1").json() == {"detail": "/b does not take layer or seed; it takes no "
                                                                      "parameters"}
        assert client.get("/a?seed=3&layer=&token=x&_=1").json() == {"seed": 3}  # blank, or no route's: ignored
        assert client.get("/c?layer=1&bare=%20").json() == {"layer": "1"}
        cut = client.get("/b")
        assert cut.status_code == 404
        assert cut.json() == {"detail": f"unknown model '{'m' * 40}... (100 characters)'; the track caf\\xe9.wav"}
    assert short_values("x" * 80) == "x" * 80 and short_values("x" * 81) == "x" * 40 + "... (81 characters)"
    assert short_values(f"a ({'y' * 90}).") == f"a ({'y' * 40}... (90 characters)).", "closing punctuation kept"
