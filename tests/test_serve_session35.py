"""What session 34 left in the API: the audio route's types in the schema, 405s that name the method and the route,
text search that folds compatibility forms and accents, and an empty artist name beside a track id."""

from __future__ import annotations

import json
import re
import shutil
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import mutagen.flac
import numpy as np
import pytest
import soundfile as sf
import test_serve_api as api
from fastapi.testclient import TestClient

from conftest import mess_here
from mess.audio.discover import find_audio
from mess.audio.windows import WindowPolicy
from mess.extract.pipeline import extract
from mess.models.dsp import DspModel
from mess.serve.app import create_app
from mess.store import FeatureStore

serve_collection = api.serve_collection  # the session's store, made once per run
SOUNDTRACK = Path("/work/data/soundtracks/wesnoth/battle-epic.ogg")
# file -> (artist, title): the same names in fullwidth forms, in lower case, composed and decomposed (NFD, as macOS
# writes them), and one that none of the searches below names
TAGGED = {"fullwidth.flac": ("Ｌｕｄｗｉｇ ｖａｎ ＢＥＥＴＨＯＶＥＮ", "Ｓｏｎａｔａ"),
          "lower.flac": ("ludwig van beethoven", "trio"),
          "composed.flac": ("Antonín Dvořák", "Humoresque"),
          "decomposed.flac": (unicodedata.normalize("NFD", "Antonín Dvořák"), "Slavonic Dance"),
          "other.flac": ("Someone Else", "Anything")}


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tagged FLACs above, a WavPack, a TTA and a WAV tone, and a real OGG soundtrack, extracted with dsp."""
    root = tmp_path_factory.mktemp("api35")
    music = root / "music"
    music.mkdir()
    t = np.arange(api.SR * 2) / api.SR
    for i, (name, (artist, title)) in enumerate(TAGGED.items()):
        sf.write(music / name, (0.3 * np.sin(2 * np.pi * 110 * (i + 2) * t)).astype(np.float32), api.SR)
        tags = mutagen.flac.FLAC(music / name)
        tags.update({"artist": artist, "title": title})
        tags.save()
    api._encoded(music / "tone.wv", "wavpack", "s16p")
    api._encoded(music / "tone.tta", "tta", "s16")
    sf.write(music / "tone.wav", (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), api.SR)
    if SOUNDTRACK.is_file():
        shutil.copyfile(SOUNDTRACK, music / SOUNDTRACK.name)
    store = FeatureStore(root / "store")
    summary = extract(store, find_audio([music]), DspModel(), WindowPolicy())
    store.close()
    assert not summary.failed, summary.failed
    return root / "store"


@pytest.fixture(scope="module")
def client(library: Path) -> Iterator[TestClient]:
    with TestClient(base_url="http://127.0.0.1", app=create_app(library)) as c:
        yield c


def _files(client: TestClient, **params: str) -> set[str]:
    """The file names of the tracks `/api/tracks` lists for ``params``."""
    answer = client.get("/api/tracks", params={**params, "limit": "1000"})
    assert answer.status_code == 200, answer.text
    return {t["file"] for t in answer.json()["items"]}


# ---------------------------------------------------------------- q= and the tag filters

@pytest.mark.parametrize(("params", "expected"), [
    ({"q": "Beethoven"}, {"fullwidth.flac", "lower.flac"}),
    ({"q": "ｂｅｅｔｈｏｖｅｎ sonata"}, {"fullwidth.flac"}),
    ({"q": "Dvorak"}, {"composed.flac", "decomposed.flac"}),
    ({"q": "DVOŘÁK humoresque"}, {"composed.flac"}),
    ({"q": unicodedata.normalize("NFD", "dvořák")}, {"composed.flac", "decomposed.flac"}),
    ({"artist": "antonin dvorak"}, {"composed.flac", "decomposed.flac"}),
    ({"artist": "Ludwig van Beethoven"}, {"fullwidth.flac", "lower.flac"}),
])
def test_search_folds_case_accents_and_compatibility_forms(client: TestClient, params: dict[str, str],
                                                           expected: set[str]) -> None:
    """`q=Beethoven` did not find 'ＢＥＥＴＨＯＶＥＮ' (NFC and casefold only) nor `q=Dvorak` 'Dvořák', where artist
    names are compared without accents everywhere else (mess.audio.names.normalize_name)."""
    assert _files(client, **params) == expected


# ---------------------------------------------------------------- the audio route's types

def test_every_audio_answer_has_a_type_the_schema_declares(client: TestClient) -> None:
    """The 200 of /api/tracks/{id}/audio declared no content at all (FastAPI's FileResponse has no media type): a
    client generated from the schema did not know it was audio."""
    responses = client.app.openapi()["paths"]["/api/tracks/{track_id}/audio"]["get"]["responses"]
    declared = {status: set(responses[status].get("content", {})) for status in ("200", "206")}
    sent: dict[str, set[str]] = {"200": set(), "206": set()}
    items = client.get("/api/tracks", params={"model": "any"}).json()["items"]
    assert len(items) == len(TAGGED) + 3 + SOUNDTRACK.is_file()
    for item in items:
        url = f"/api/tracks/{item['id']}/audio"
        for headers in ({}, {"Range": "bytes=0-9"}, {"Range": "bytes=0-1,20-29"}):
            answer = client.get(url, headers=headers)
            sent[str(answer.status_code)].add(answer.headers["content-type"].split(";")[0])
    assert {"audio/flac", "audio/x-wavpack", "audio/x-tta", "audio/wav", "multipart/byteranges"} <= sent["206"]
    for status in ("200", "206"):
        assert sent[status] and sent[status] <= declared[status], (status, sent[status] - declared[status])
        assert all(responses[status]["content"][t]["schema"] == {"type": "string", "format": "binary"}
                   for t in declared[status])


# ---------------------------------------------------------------- 405

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")


def test_a_method_a_route_does_not_take_is_refused_naming_both(client: TestClient) -> None:
    """405 said 'Method Not Allowed' and no more; its Allow header left out HEAD, which every GET route answers. Each
    route of the schema, sent each method it does not list."""
    one = client.get("/api/tracks").json()["items"][0]["id"]
    checked = 0
    for path, operations in client.app.openapi()["paths"].items():
        listed = [m.upper() for m in operations]
        allowed = {*listed, *(["HEAD"] if "GET" in listed else [])}
        url = re.sub(r"\{[^}]+\}", str(one), path)
        for method in METHODS:
            if method in listed:
                continue
            answer = client.request(method, url)
            assert answer.status_code == 405, (method, url, answer.status_code)
            said = answer.json()
            assert set(said) == {"detail"}, said
            assert said["detail"].startswith(f"{method} is not allowed on {path}; allowed: "), said
            assert set(said["detail"].rsplit("allowed: ", 1)[1].split(", ")) == allowed, said
            assert set(answer.headers["allow"].split(", ")) == allowed, answer.headers
            checked += 1
        if "GET" in listed:
            assert client.head(url).status_code != 405, url  # the HEAD the header names is answered
    assert checked > 50
    page = client.post("/app.js")
    assert page.status_code == 405 and page.json() == {"detail": "POST is not allowed on /app.js; allowed: GET, HEAD"}


# ---------------------------------------------------------------- name= beside track=

@pytest.fixture(scope="module")
def artists_client(serve_collection: Path) -> Iterator[TestClient]:
    """The session's store of 3 artists x 4 tracks."""
    with TestClient(base_url="http://127.0.0.1", app=create_app(serve_collection)) as c:
        yield c


def test_an_empty_artist_name_or_track_is_the_parameter_left_out(artists_client: TestClient) -> None:
    """`name=&track=1` (a form's empty name field beside a track) was 'give one of name and track', where every other
    empty parameter (layer=, model=, a tag filter, q=) is the parameter left out."""
    c = artists_client
    one = c.get("/api/tracks").json()["items"][0]
    by_track = c.get("/api/artists/similar", params={"track": one["id"], "k": 2})
    assert by_track.status_code == 200, by_track.text
    for params in ({"name": "", "track": one["id"]}, {"name": "  ", "track": one["id"]}):
        answer = c.get("/api/artists/similar", params={**params, "k": 2})
        assert answer.status_code == 200 and answer.json() == by_track.json(), answer.text
    by_name = c.get("/api/artists/similar", params={"name": one["artist"], "k": 2})
    assert by_name.status_code == 200 and by_name.json() == by_track.json()
    assert c.get("/api/artists/similar", params={"name": one["artist"], "track": "", "k": 2}).json() == by_name.json()
    for params in ({"name": ""}, {"track": ""}, {"name": "", "track": " "}):
        answer = c.get("/api/artists/similar", params=params)
        assert answer.status_code == 400, answer.text
        assert answer.json() == {"detail": "give one of name (an artist's name) and track (a track id)"}


# ---------------------------------------------------------------- the CLI and the API, one search

RESULT_FIELDS = ("id", "score", "adjusted", "why", "why_percentile", "reasons", "duplicate")


def _same_similar(answer: dict, cli: dict) -> None:
    """The API's similar answer holds every field of `mess similar --json`'s (but ``query``) with the same value, and
    the same results in the fields both give."""
    for key in set(cli) - {"query", "results"}:
        assert key in answer and answer[key] == cli[key], (key, answer.get(key), cli[key])
    assert [[r[f] for f in RESULT_FIELDS] for r in answer["results"]] == \
        [[r[f] for f in RESULT_FIELDS] for r in cli["results"]]


@pytest.mark.parametrize("options", [{}, {"layer": "mfcc", "expand": "0"}, {"hubness": "csls", "norm": "zscore"},
                                     {"ranking": "plain", "exclude_same_artist": "true", "k": "3"}])
def test_similar_answers_as_mess_similar_json_does(client: TestClient, library: Path, options: dict[str, str]) -> None:
    """`/api/tracks/{id}/similar` did not say the normalisation it applied ('auto' is power or zscore), the hubness
    reduction or the query expansion it used, nor how many files have no vectors yet, which `mess similar --json`
    says; every field the CLI's answer has (but ``match``, which the API does not take) is the same in both."""
    _same_similar(*_similar_by_api_and_cli(client, library, options))


def _similar_by_api_and_cli(client: TestClient, library: Path, options: dict[str, str]) -> tuple[dict, dict]:
    """The API's similar answer for the first track with ``options`` as query parameters, and `mess similar --json`'s
    with them as options (``"true"``: a flag)."""
    one = client.get("/api/tracks").json()["items"][0]["id"]
    api = client.get(f"/api/tracks/{one}/similar", params=options)
    assert api.status_code == 200, api.text
    args = [a for name, value in options.items() for a in
            ([f"--{name.replace('_', '-')}"] if value == "true" else ["-k" if name == "k" else f"--{name}", value])]
    done = mess_here("similar", str(one), "--json", "--store", str(library), *args)
    assert done.returncode == 0, done.stderr
    return api.json(), json.loads(done.stdout)


@pytest.mark.parametrize("options", [{}, {"layer": "spectral", "method": "chamfer"}, {"center": "false", "k": "1"}])
def test_similar_artists_answer_as_mess_artists_similar_json_does(artists_client: TestClient, serve_collection: Path,
                                                                  options: dict[str, str]) -> None:
    """`/api/artists/similar` left out the asked artist's ``confidence``, which `mess artists similar --json` gives;
    every field of the CLI's answer is the same in both, scores to the API's six decimals."""
    api = artists_client.get("/api/artists/similar", params={"name": "saw machine", **options})
    assert api.status_code == 200, api.text
    args = [a for name, value in options.items() for a in
            (["--no-center"] if name == "center" else ["-k" if name == "k" else f"--{name}", value])]
    done = mess_here("artists", "similar", "saw machine", "--json", "--store", str(serve_collection), *args)
    assert done.returncode == 0, done.stderr
    cli, answer = json.loads(done.stdout), api.json()
    for key in set(cli) - {"results"}:
        assert key in answer and answer[key] == cli[key], (key, answer.get(key), cli[key])
    assert answer["results"] == [{**r, "score": round(r["score"], 6)} for r in cli["results"]]


@pytest.mark.parametrize("options", [{"hubness": "csls"}, {"expand": "0", "layer": "mfcc"}])
def test_an_upload_takes_the_hubness_and_expansion_of_mess_similar_file(
        client: TestClient, library: Path, tmp_path: Path, options: dict[str, str]) -> None:
    """`mess similar FILE --hubness csls` and `--expand 0` had no upload counterpart: the upload route refused both
    ('does not take hubness'). Now it takes them and answers as the CLI does."""
    t = np.arange(api.SR * 3) / api.SR
    mine = tmp_path / "mine.wav"
    sf.write(mine, (0.3 * np.sin(2 * np.pi * 523 * t) * np.sin(2 * np.pi * 2 * t)).astype(np.float32), api.SR)
    answer = client.post("/api/similar/upload", params={**options, "k": "4"},
                         files={"file": ("mine.wav", mine.read_bytes(), "audio/wav")})
    assert answer.status_code == 200, answer.text
    args = [a for name, value in options.items() for a in (f"--{name}", value)]
    done = mess_here("similar", str(mine), "-k", "4", "--json", "--store", str(library), *args)
    assert done.returncode == 0, done.stderr
    _same_similar(answer.json(), json.loads(done.stdout))
    both = client.post("/api/similar/upload", params={"hubness": "csls", "ranking": "augmented"},
                       files={"file": ("mine.wav", mine.read_bytes(), "audio/wav")})
    assert both.status_code == 400, both.text
    assert both.json() == {"detail": "ranking augmented and hubness are two re-rankings: choose one"}


@pytest.mark.parametrize("options", [{"norm": "zscore", "rerank": "true"}, {"layer": "mfcc", "norm": "none"}])
def test_an_index_built_by_the_api_is_the_one_mess_index_builds(library: Path, tmp_path: Path,
                                                                 options: dict[str, str]) -> None:
    """`mess index --norm zscore --rerank` saves the ranking data that `similar?norm=zscore&ranking=reranked` reads;
    `POST /api/index` took no norm (it built the default normalisation's alone) and its answer did not say which."""
    for name in ("api", "cli"):
        shutil.copytree(library, tmp_path / name)
    with TestClient(base_url="http://127.0.0.1", app=create_app(tmp_path / "api", allow_indexing=True)) as c:
        answer = c.post("/api/index", params=options)
    assert answer.status_code == 200, answer.text
    args = [a for name, value in options.items() for a in (["--rerank"] if name == "rerank" else [f"--{name}", value])]
    done = mess_here("index", "--json", "--store", str(tmp_path / "cli"), *args)
    assert done.returncode == 0, done.stderr
    cli, api_answer = json.loads(done.stdout), answer.json()
    assert api_answer["norm"] == cli["norm"] == options["norm"] and api_answer["norm_note"] == cli["norm_note"]
    assert api_answer["file"] == Path(cli["path"]).name
    assert (api_answer["augment_file"], api_answer["rerank_file"]) == \
        tuple(Path(p).name if p else None for p in (cli["augment_path"], cli["rerank_path"]))
    assert sorted(p.name for p in (tmp_path / "api" / "indexes").iterdir()) == \
        sorted(p.name for p in (tmp_path / "cli" / "indexes").iterdir())
