"""Session 36's server work: conditional GET of the audio route (RFC 9110 §13) over real HTTP to a real `mess serve`,
and the CLI options the API had no form of."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import httpx
import mutagen.flac
import pytest
import soundfile as sf
import test_serve_api as api
from fastapi.testclient import TestClient
from ports import served_at
from test_serve_session35 import _same_similar, _similar_by_api_and_cli

from conftest import mess_here
from mess.serve.app import create_app
from mess.serve.routes_artists import _query_words

MESS = [sys.executable, "-m", "mess.cli"]
SOUNDTRACKS = Path("/work/data/soundtracks")
SOURCES = ("wesnoth/battle-epic.ogg", "wesnoth/frantic-old.ogg", "wesnoth/elvish-theme.ogg")
AN_HOUR_AGO = time.time() - 3600
serve_collection = api.serve_collection  # the session's store of 3 artists x 4 tracks, made once per run


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 s of three real soundtracks as tagged FLACs (tags padded: a retag of the same length keeps the size), their
    files an hour old, extracted with dsp: the store (``<folder>/store``; the music in ``<folder>/music``)."""
    root = tmp_path_factory.mktemp("serve36")
    music = root / "music"
    music.mkdir()
    for name in SOURCES:
        audio, rate = sf.read(SOUNDTRACKS / name, frames=20 * 44100, dtype="float32")
        path = music / f"{Path(name).stem}.flac"
        sf.write(path, audio, rate)
        tags = mutagen.flac.FLAC(path)
        tags.update({"artist": Path(name).parent.name, "title": Path(name).stem})
        tags.save()
        os.utime(path, (AN_HOUR_AGO, AN_HOUR_AGO))
    done = mess_here("extract", str(music), "--model", "dsp", "--store", str(root / "store"))
    assert done.returncode == 0, done.stderr
    return root / "store"


@pytest.fixture(scope="module")
def server(library: Path) -> Iterator[subprocess.Popen[str]]:
    """A real `mess serve` over :func:`library`, answering (its URL is :func:`base`)."""
    proc = subprocess.Popen([*MESS, "serve", "--store", str(library), "--port", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        proc.url = served_at(proc)  # type: ignore[attr-defined]
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(proc.url + "/api/health", timeout=2).is_success:  # type: ignore[attr-defined]
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not answer"
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def base(server: subprocess.Popen[str]) -> str:
    """The URL of :func:`server`."""
    return server.url  # type: ignore[attr-defined]


def _track(base: str, library: Path, stem: str) -> tuple[str, Path]:
    """The audio URL of the track of file ``stem``.flac, and the file."""
    items = httpx.get(base + "/api/tracks", params={"q": stem}).json()["items"]
    [one] = [t for t in items if t["file"] == f"{stem}.flac"]
    return f"{base}/api/tracks/{one['id']}/audio", library.parent / "music" / one["file"]


def _get(url: str, method: str = "GET", **headers: str) -> httpx.Response:
    return httpx.request(method, url, headers=headers, timeout=30)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_players_copy_still_current_is_a_304(base: str, library: Path, method: str) -> None:
    """A request carrying the audio's own ETag (alone, in a list, weak, or ``*``) or a date not older than the file
    got the whole file again: Starlette's FileResponse has no conditional GET. Now it is a 304 without a body, with
    the ETag; another tag, an older date or a date that cannot be read get the file (200)."""
    url, path = _track(base, library, "battle-epic")
    raw = path.read_bytes()
    first = _get(url)
    assert first.status_code == 200 and first.content == raw
    tag, modified = first.headers["etag"], first.headers["last-modified"]
    assert modified == formatdate(path.stat().st_mtime, usegmt=True)
    for headers in ({"If-None-Match": tag}, {"If-None-Match": f'"other", W/{tag}'}, {"If-None-Match": "*"},
                    {"If-Modified-Since": modified}, {"If-Modified-Since": formatdate(time.time(), usegmt=True)}):
        again = _get(url, method, **headers)
        assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", tag), headers
    older = formatdate(path.stat().st_mtime - 60, usegmt=True)
    for headers in ({"If-None-Match": '"other"'}, {"If-None-Match": tag[:-2] + '"'}, {"If-Modified-Since": older},
                    {"If-Modified-Since": "yesterday"}, {"If-None-Match": '"other"', "If-Modified-Since": modified}):
        whole = _get(url, method, **headers)  # If-None-Match present: If-Modified-Since is not looked at (§13.1.3)
        assert whole.status_code == 200, headers
        assert whole.content == (raw if method == "GET" else b"") and whole.headers["content-length"] == str(len(raw))


def _read_bytes(pid: int) -> int:
    """The bytes process ``pid`` has read so far (``rchar`` of /proc/PID/io: every read, cached or not)."""
    return int(dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())["rchar"])


def _settled_reads(pid: int) -> int:
    """:func:`_read_bytes` once it stays the same for half a second (at most a minute)."""
    deadline, now = time.monotonic() + 60, -1
    while now != (now := _read_bytes(pid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return now


def test_head_does_not_read_the_file(server: subprocess.Popen[str], base: str, library: Path) -> None:
    """HEAD reached the route as GET and the whole file was read and thrown away (a player or link checker probing a
    1 GB FLAC cost a gigabyte of reads): it reads none of it now, and answers with the GET's headers."""
    url, path = _track(base, library, "battle-epic")
    get = _get(url)
    before = _settled_reads(server.pid)  # the server imports scikit-learn in the background as it starts
    head = _get(url, "HEAD")
    read = _settled_reads(server.pid) - before  # the client has its answer before the server is done
    assert (head.status_code, head.content) == (200, b"")
    assert {k: head.headers[k] for k in ("etag", "content-length", "content-type", "last-modified")} == \
        {k: get.headers[k] for k in ("etag", "content-length", "content-type", "last-modified")}
    assert read < path.stat().st_size // 4, (read, path.stat().st_size)


def test_if_range_and_if_match_use_strong_validators(base: str, library: Path) -> None:
    """A Range with an If-Range of the current ETag or Last-Modified date is served as a range; a stale, weak or
    earlier validator gets the whole file (200). If-Match of another tag, or an If-Unmodified-Since before the file's
    date, is a JSON 412; the file's own tag or ``*`` passes."""
    url, path = _track(base, library, "frantic-old")
    raw = path.read_bytes()
    first = _get(url)
    tag, modified = first.headers["etag"], first.headers["last-modified"]
    for validator in (tag, modified):
        part = _get(url, Range="bytes=100-199", **{"If-Range": validator})
        assert (part.status_code, part.content) == (206, raw[100:200]), validator
    for validator in ('"stale"', f"W/{tag}", formatdate(path.stat().st_mtime - 1, usegmt=True), "soon"):
        whole = _get(url, Range="bytes=100-199", **{"If-Range": validator})
        assert (whole.status_code, whole.content) == (200, raw), validator
    for headers in ({"If-Match": '"other"'}, {"If-Match": f"W/{tag}"},
                    {"If-Unmodified-Since": formatdate(path.stat().st_mtime - 60, usegmt=True)}):
        refused = _get(url, **headers)
        assert refused.status_code == 412 and refused.headers["content-type"] == "application/json", headers
        assert "\n" not in refused.json()["detail"]
    for headers in ({"If-Match": tag}, {"If-Match": f'"other", {tag}'}, {"If-Match": "*"},
                    {"If-Unmodified-Since": modified}):
        assert _get(url, **headers).content == raw, headers


def test_the_etag_changes_when_the_file_does(base: str, library: Path) -> None:
    """A retag that keeps the file's size, its mtime put back (as `touch -r` or a tagger keeping dates does), plays
    (the same audio), but its bytes differ: the ETag of size and mtime stayed the same, so a player's stale copy got
    a 304, and a range of the new bytes was spliced into the old ones (If-Range). The ETag now changes."""
    url, path = _track(base, library, "elvish-theme")
    first = _get(url)
    tag = first.headers["etag"]
    before = path.stat()
    tags = mutagen.flac.FLAC(path)
    tags["title"] = "ELVISH-THEME"
    tags.save()
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    raw = path.read_bytes()
    assert raw != first.content
    now = _get(url, **{"If-None-Match": tag})
    assert now.status_code == 200 and now.content == raw and now.headers["etag"] != tag
    whole = _get(url, Range="bytes=0-99", **{"If-Range": tag})
    assert (whole.status_code, whole.content) == (200, raw)
    assert _get(url, **{"If-None-Match": now.headers["etag"]}).status_code == 304


# ---------------------------------------------------------------- the CLI's options in the API


@pytest.fixture(scope="module")
def client(library: Path) -> Iterator[TestClient]:
    with TestClient(base_url="http://127.0.0.1", app=create_app(library)) as c:
        yield c


@pytest.mark.parametrize("options", [{"match": "segments", "k": "2"},
                                     {"match": "segments", "layer": "mfcc", "exclude_same_artist": "true"}])
def test_similar_takes_match_segments_as_mess_similar_does(client: TestClient, library: Path,
                                                           options: dict[str, str]) -> None:
    """`mess similar --match segments` (Chamfer similarity of window vectors) had no API form: ``match`` was ignored,
    and the answer was the cosine of mean vectors. Now the answer is the CLI's, ``match`` and ``expand`` (0) too."""
    api, cli = _similar_by_api_and_cli(client, library, options)
    _same_similar(api, cli)
    assert api["match"] == "segments" and api["expand"] == 0


@pytest.mark.parametrize(("params", "detail"), [
    ({"match": "chamfer"}, "unknown match 'chamfer'; choose mean or segments"),
    ({"match": "segments", "hubness": "csls"}, "match segments needs a track or audio file as query, and no hubness "
                                               "or expand"),
    ({"k": "201"}, "invalid k '201'; use a whole number from 1 to 200 (200: the server's cap, to bound each "
                   "request's work; the command line has none)"),
    ({"expand": "51"}, "invalid expand '51'; use a whole number from 0 to 50 (50: the server's cap, to bound each "
                       "request's work; the command line has none)")])
def test_refusals_of_match_and_the_caps_say_why(client: TestClient, params: dict[str, str], detail: str) -> None:
    """An unknown ``match`` was ignored; ``k`` over 200 and ``expand`` over 50 were refused without saying that the
    server caps them (the CLI does not): a client that `mess similar -k 500` answers took it for a bug."""
    one = client.get("/api/tracks").json()["items"][0]["id"]
    answer = client.get(f"/api/tracks/{one}/similar", params=params)
    assert answer.status_code in (400, 422) and answer.json() == {"detail": detail}


@pytest.mark.parametrize(("route", "params", "cap"), [("radio", {"n": "501"}, 500), ("radio", {"window": "51"}, 50),
                                                      ("path", {"n": "201"}, 200)])
def test_the_playlist_caps_say_they_are_the_servers(client: TestClient, route: str, params: dict[str, str],
                                                    cap: int) -> None:
    """The radio's ``n`` (500) and ``window`` (50) and the path's ``n`` (200) are capped in the API, not in `mess
    playlist`: the refusal said 'use a whole number from 1 to 500' as if the command took no more."""
    ids = [t["id"] for t in client.get("/api/tracks").json()["items"]]
    where = {"seed": ids[0]} if route == "radio" else {"start": ids[0], "end": ids[1]}
    answer = client.get(f"/api/playlists/{route}", params={**where, **params})
    [(name, value)] = params.items()
    low = 2 if route == "path" else 1
    assert (answer.status_code, answer.json()) == (422, {"detail": (
        f"invalid {name} '{value}'; use a whole number from {low} to {cap} ({cap}: the server's cap, to bound each "
        "request's work; the command line has none)")})


def test_the_index_route_rebuilds_as_mess_index_rebuild_does(library: Path, tmp_path: Path) -> None:
    """`mess index --rebuild` builds from scratch; the API had no form of it (``rebuild=true`` was ignored: the
    index was 'unchanged'). Now both say 'built', for the index and its augmentation, and save the same files."""
    for name in ("api", "cli"):
        shutil.copytree(library, tmp_path / name)
    with TestClient(base_url="http://127.0.0.1", app=create_app(tmp_path / "api", allow_indexing=True)) as c:
        answers = [c.post("/api/index", params=p) for p in ({}, {}, {"rebuild": "true", "target_recall": "0.9"})]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    clis = [mess_here("index", "--json", "--store", str(tmp_path / "cli"), *args)
            for args in ([], [], ["--rebuild", "--target-recall", "0.9"])]
    assert all(d.returncode == 0 for d in clis), [d.stderr for d in clis]
    for answer, done in zip(answers, clis, strict=True):
        cli = json.loads(done.stdout)
        assert (answer.json()["mode"], answer.json()["augment"]) == (cli["mode"], cli["augment"])
    assert [a.json()["mode"] for a in answers] == ["built", "unchanged", "built"]
    assert sorted(p.name for p in (tmp_path / "api" / "indexes").iterdir()) == \
        sorted(p.name for p in (tmp_path / "cli" / "indexes").iterdir())


def _artists_args(options: dict[str, str]) -> list[str]:
    """`mess artists similar` options for the API's query ``options``."""
    flags = {"true": lambda n: [f"--{n}"], "false": lambda n: [f"--no-{n}"]}
    return [a for name, value in options.items()
            for a in flags.get(value, lambda n, v=value: ["-k" if n == "k" else f"--{n}", v])(name.replace("_", "-"))]


def _same_artists(answer: dict, cli: dict) -> None:
    """Every field of `mess artists similar --json`'s answer is the API's, scores and components to its six decimals."""
    for key in set(cli) - {"results"}:
        assert key in answer and answer[key] == cli[key], (key, answer.get(key), cli[key])
    assert answer["results"] == [{**r, "score": round(r["score"], 6),
                                  **({"components": {c: round(v, 6) for c, v in r["components"].items()}}
                                     if "components" in r else {})} for r in cli["results"]]


@pytest.mark.parametrize("options", [{"max_tracks": "2", "min_tracks": "1"}, {"min_tracks": "5", "hide_low": "true"},
                                     {"weights": "audio=0.5,genre=0.5", "method": "chamfer", "k": "1"}])
def test_similar_artists_take_the_options_of_mess_artists_similar(serve_collection: Path,
                                                                  options: dict[str, str]) -> None:
    """`--max-tracks`, `--min-tracks`, `--hide-low` and the hybrid blend (`--weights`) of `mess artists similar` had
    no API form: the parameters were ignored. Now the answer is the CLI's."""
    with TestClient(base_url="http://127.0.0.1", app=create_app(serve_collection)) as c:
        answer = c.get("/api/artists/similar", params={"name": "saw machine", **options})
    assert answer.status_code == 200, answer.text
    done = mess_here("artists", "similar", "saw machine", "--json", "--store", str(serve_collection),
                     *_artists_args(options))
    assert done.returncode == 0, done.stderr
    _same_artists(answer.json(), json.loads(done.stdout))
    said = [_query_words(line.removeprefix("note: ")) for line in done.stderr.splitlines() if line.startswith("note")]
    assert set(answer.json()["notes"]) <= set(said)  # those of the blend and of hide_low; others are fields
    assert [n for n in said if "hide_low" in n] == [n for n in answer.json()["notes"] if "hide_low" in n]


def test_hybrid_uses_the_saved_weights_as_mess_artists_similar_hybrid_does(serve_collection: Path,
                                                                           tmp_path: Path) -> None:
    """`--hybrid` blends with the weights `mess artists hybrid` saved, in the space and with the method and centring
    they were learned with (chamfer, uncentred, the spectral layer here); a method passed is kept and said."""
    store, reference = tmp_path / "store", tmp_path / "reference.json"
    shutil.copytree(serve_collection, store)
    reference.write_text(json.dumps({"Saw Machine": ["Noise Ensemble"], "Noise Ensemble": ["Saw Machine"],
                                     "Sine Choir": ["Saw Machine"]}))
    learned = mess_here("artists", "hybrid", "--reference", str(reference), "-k", "1", "--method", "chamfer",
                        "--no-center", "-l", "spectral", "--store", str(store))
    assert learned.returncode == 0, learned.stderr
    with TestClient(base_url="http://127.0.0.1", app=create_app(store)) as c:
        for options in ({"hybrid": "true"}, {"hybrid": "true", "method": "mean"}):
            answer = c.get("/api/artists/similar", params={"name": "saw machine", **options})
            assert answer.status_code == 200, answer.text
            done = mess_here("artists", "similar", "saw machine", "--json", "--store", str(store),
                             *_artists_args(options))
            assert done.returncode == 0, done.stderr
            _same_artists(answer.json(), json.loads(done.stdout))
            assert (answer.json()["space"], answer.json()["centered"]) == ("spectral", False)
            said = [n for n in answer.json()["notes"] if "learned with method chamfer" in n]
            assert len(said) == ("method" in options), answer.json()["notes"]


@pytest.mark.parametrize(("options", "detail"), [
    ({"max_tracks": "2"}, "min_tracks (3) is larger than max_tracks (2); an artist is represented by at most "
                          "max_tracks tracks"),
    ({"hybrid": "true"}, "no learned weights at artists_hybrid.json; run `mess artists hybrid --reference FILE` or "
                         "pass weights audio=...,genre=..."),
    ({"weights": "collab=1"}, "the weights are all on collab, of which this collection has no information (no tags / "
                              "collaborations / reference), so every artist would score 0; give weight to audio")])
def test_artist_refusals_are_the_clis_in_the_querys_words(serve_collection: Path, options: dict[str, str],
                                                          detail: str) -> None:
    """What `mess artists similar` refuses, the API refuses with a 400 saying the same, naming the query's
    parameters (``max_tracks``, not ``--max-tracks``) and the store's files by their names."""
    with TestClient(base_url="http://127.0.0.1", app=create_app(serve_collection)) as c:
        answer = c.get("/api/artists/similar", params={"name": "saw machine", **options})
    assert (answer.status_code, answer.json()) == (400, {"detail": detail})
    done = mess_here("artists", "similar", "saw machine", "--store", str(serve_collection), *_artists_args(options))
    assert done.returncode == 1 and "--" in done.stderr


def test_an_upload_takes_match_segments_as_mess_similar_file_does(client: TestClient, library: Path,
                                                                  tmp_path: Path) -> None:
    """`mess similar FILE --match segments` compares the file's window vectors; the upload route had no ``match``
    (ignored: mean vectors). Now the embedding process sends the windows back and the answer is the CLI's; segment
    matching with hubness is refused before the file is received."""
    audio, rate = sf.read(SOUNDTRACKS / "wesnoth/frantic.ogg", frames=15 * 44100, dtype="float32")
    mine = tmp_path / "frantic.wav"
    sf.write(mine, audio, rate)
    answer = client.post("/api/similar/upload", params={"match": "segments", "k": "2"},
                         files={"file": (mine.name, mine.read_bytes(), "audio/wav")})
    assert answer.status_code == 200, answer.text
    done = mess_here("similar", str(mine), "--match", "segments", "-k", "2", "--json", "--store", str(library))
    assert done.returncode == 0, done.stderr
    _same_similar(answer.json(), json.loads(done.stdout))
    assert answer.json()["match"] == "segments" and answer.json()["query"]["external"]
    refused = client.post("/api/similar/upload", params={"match": "segments", "hubness": "csls"},
                          files={"file": (mine.name, b"not read", "audio/wav")})
    assert refused.status_code == 400
    assert refused.json() == {"detail": "match segments needs a track or audio file as query, and no hubness or expand"}


def test_playlist_routes_default_to_the_commands_lengths(serve_collection: Path) -> None:
    """A radio asked of the API without n had 20 tracks, `mess playlist radio` without -n 30: the same request gave two
    playlists. The routes' defaults are the commands' own, read from both definitions."""
    import inspect

    from mess.cli.playlist import path_command, radio_command

    with TestClient(base_url="http://127.0.0.1", app=create_app(serve_collection)) as c:
        paths = c.app.openapi()["paths"]
    for route, command in (("/api/playlists/radio", radio_command), ("/api/playlists/path", path_command)):
        n = next(p for p in paths[route]["get"]["parameters"] if p["name"] == "n")
        assert n["schema"]["default"] == inspect.signature(command).parameters["n"].default, route
