"""The HTTP API over a real store: synthetic audio with three timbres extracted with the dsp model,
and the session's rendered-music ``extracted_store``."""

from __future__ import annotations

import email
import email.policy
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import httpx
import mutagen.flac
import numpy as np
import pytest
import soundfile as sf
import typer
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.testclient import TestClient
from matplotlib.image import imsave
from typer.testing import CliRunner

from conftest import cache_lock, run_folder
from mess.artists.profiles import load_artists, load_space
from mess.artists.similarity import artist_vectors, similarity_row
from mess.audio.discover import find_audio
from mess.audio.windows import WindowPolicy
from mess.cli.serve import is_loopback, register
from mess.extract.pipeline import extract
from mess.extract.runs import run_key
from mess.models.dsp import DspModel
from mess.query import resolve_query
from mess.search.query import similar_tracks
from mess.serve.app import create_app
from mess.serve.audio_file import AudioFile
from mess.serve.mapping import collection_map
from mess.serve.uploads import Embedded, EmbedWorker
from mess.store import FeatureStore, Run, TrackVectors
from mess.store.reports import report_paths

SR = 22050
ARTISTS = {"Sine Choir": "ambient", "Saw Machine": "electronic", "Noise Ensemble": "noise"}
PITCHES = (196.0, 247.0, 294.0, 370.0)
UPLOAD_LIMIT = 400_000


def _render(artist: str, f0: float, rng: np.random.Generator, seconds: float = 4.0) -> np.ndarray:
    """Three clearly different timbres: pure tremolo sines, pulsed sawtooths, filtered noise bursts."""
    t = np.arange(int(seconds * SR)) / SR
    if artist == "Sine Choir":
        y = np.sin(2 * np.pi * f0 * t) * (0.7 + 0.3 * np.sin(2 * np.pi * 3 * t))
    elif artist == "Saw Machine":
        y = sum(np.sin(2 * np.pi * n * f0 * t) / n for n in range(1, 16)) * (np.sin(2 * np.pi * 4 * t) > 0)
    else:
        noise = np.convolve(rng.standard_normal(t.size), np.ones(int(SR / f0)) / 8, mode="same")
        y = noise * (np.sin(2 * np.pi * 2 * t) > 0.3)
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


@pytest.fixture(scope="session")
def serve_collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 tagged FLAC files (3 artists x 4), extracted with the dsp model, plus an aspect map and a probe report:
    ``<folder>/music`` and the store ``<folder>/store`` (returned), built once per run by whichever worker asks first
    (test_serve_malformed uses it too); treat it as read-only."""
    shared = run_folder(tmp_path_factory) / "serve-collection"
    with cache_lock(shared):
        if not (shared / "complete").exists():
            shutil.rmtree(shared, ignore_errors=True)
            _build_collection(shared)
            (shared / "complete").touch()
    return shared / "store"


@pytest.fixture(scope="module")
def collection(serve_collection: Path) -> Path:
    """:func:`serve_collection`, read-only: this module's tests copy it before they change it."""
    return serve_collection


def _build_collection(root: Path) -> None:
    """Write the music of :func:`serve_collection` under ``root/music`` and extract it into ``root/store``."""
    rng = np.random.default_rng(0)
    for artist, genre in ARTISTS.items():
        for i, f0 in enumerate(PITCHES):
            path = root / "music" / artist.replace(" ", "_") / f"take{i}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, _render(artist, f0, rng), SR)
            tags = mutagen.flac.FLAC(path)
            tags.update({"artist": artist, "album": f"{artist} vol {i % 2 + 1}", "title": f"take {i}",
                         "genre": genre})
            tags.save()
    store = FeatureStore(root / "store")
    extract(store, find_audio([root / "music"]), DspModel(), WindowPolicy())
    run = store.run("dsp")
    store.set_aspect_map(run, [("timbre", "mfcc", 0.5, 0.1), ("harmony", "chroma", 0.4, 0.1)])
    paths = report_paths(store.reports_dir, run.model, run.id, "ridge")
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    paths["json"].write_text(json.dumps({"model": "dsp", "aspects": [{"aspect": "timbre", "layer": "mfcc"}]}))
    imsave(paths["png"], np.arange(12.0).reshape(3, 4))
    store.close()


@pytest.fixture(scope="module")
def client(collection: Path) -> TestClient:
    app = create_app(collection, max_upload_bytes=UPLOAD_LIMIT, embed_timeout=300)  # slow CI; deadline tested alone
    with TestClient(base_url="http://127.0.0.1", app=app) as c:
        yield c


@pytest.fixture(scope="module")
def store(collection: Path) -> FeatureStore:
    fs = FeatureStore(collection, readonly=True)
    yield fs
    fs.close()


def _multipart(name: str, data: bytes, content_type: str, *, file_param: str | None = None) -> tuple[bytes, str]:
    """A one-part multipart body; ``file_param`` replaces the part's ``filename="NAME"`` parameter."""
    boundary = uuid.uuid4().hex
    param = f'filename="{name}"' if file_param is None else file_param
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; {param}\r\n'
            f"Content-Type: {content_type}\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.fixture
def uploads_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp dir of this test's own for the server's upload files: the other test worker uploads too, into
    the shared system temp dir, so counting files there raced with it."""
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    return private


def test_health_answers_busy_while_a_long_request_holds_the_store(client: TestClient,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """/api/health waited for the store's lock, so a health check timed out behind a minutes-long index build (and a
    supervisor could restart a working server). It now answers 'busy', counts null, once HEALTH_WAIT has passed."""
    from mess.serve import routes_tracks

    monkeypatch.setattr(routes_tracks, "HEALTH_WAIT", 0.2)
    lock = client.app.state.mess.lock
    holding, release = threading.Event(), threading.Event()

    def long_request() -> None:
        with lock:
            holding.set()
            release.wait(60)

    holder = threading.Thread(target=long_request)
    holder.start()
    try:
        assert holding.wait(30)
        busy = client.get("/api/health")
    finally:
        release.set()
        holder.join()
    body = busy.json()
    assert busy.status_code == 200 and body["status"] == "busy" and "index build" in body["note"], body
    assert body["tracks"] is None and body["models"] is None and body["read_only"] is True
    assert client.get("/api/health").json()["status"] == "ok"  # the lock free again: counts as before


def _uploads_left(where: Path) -> set[str]:
    return {p.name for p in where.glob("mess-upload-*")}


def test_health_runs_and_openapi(client: TestClient) -> None:
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["tracks"] == 12 and health["models"] == ["dsp"]
    assert health["read_only"] is True and health["max_upload_bytes"] == UPLOAD_LIMIT
    run = client.get("/api/runs").json()["runs"][0]
    assert run["layers"] == list(DspModel().info.layer_names) and run["tracks"] == 12
    assert run["aspects"] == {"harmony": "chroma", "timbre": "mfcc"} and run["fused"] is False
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/health", "/api/tracks", "/api/tracks/{track_id}/similar", "/api/similar/upload",
                 "/api/artists/similar", "/api/probe", "/api/tracks/{track_id}/audio", "/api/map"):
        assert path in paths
    assert "multipart/form-data" in paths["/api/similar/upload"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 404  # its page would load scripts from a CDN
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert client.get("/app.js").status_code == 200 and client.get("/style.css").status_code == 200


def test_a_get_of_a_post_route_is_405_naming_the_method(client: TestClient) -> None:
    """``GET /api/similar/upload`` fell through to the page's files: 404 'Not Found' for a route that exists."""
    for url in ("/api/similar/upload", "/api/index"):
        for response in (client.get(url), client.head(url)):
            assert response.status_code == 405 and response.headers["allow"] == "POST", (url, response.status_code)
        assert client.get(url).json() == {"detail": f"GET is not allowed on {url}; allowed: POST"}
    missing = client.get("/api/nope")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no API route /api/nope; /openapi.json lists them"}
    assert client.get("/").status_code == client.get("/app.js").status_code == 200  # the page is still served
    assert client.post("/").status_code == 405


def test_the_page_files_are_revalidated_not_kept_by_heuristic(client: TestClient) -> None:
    """The page's files had a Last-Modified and no Cache-Control: a browser may keep such a file fresh for a tenth of
    its age without asking (RFC 9111 §4.2.2), so after an upgrade it ran the old app.js against the new API."""
    for name in ("/", "/app.js", "/style.css"):
        first = client.get(name)
        assert first.headers.get("cache-control") == "no-cache", (name, first.headers)
        again = client.get(name, headers={"If-None-Match": first.headers["etag"]})  # asking costs a 304
        assert again.status_code == 304 and again.headers.get("cache-control") == "no-cache", name


def test_the_page_files_answer_ranges_as_the_audio_route_does(client: TestClient) -> None:
    """A ``Range`` the page's files could not read was a plain-text 400 ('Range header: range must be requested'),
    an unsatisfiable one a plain-text 416."""
    whole = client.get("/app.js")
    size = len(whole.content)
    for header in ("bytes=5-2", "bytes=abc", "items=0-5"):
        ignored = client.get("/app.js", headers={"Range": header})
        assert ignored.status_code == 200 and ignored.content == whole.content, (header, ignored.text[:80])
    part = client.get("/app.js", headers={"Range": "bytes=0-9"})
    assert part.status_code == 206 and part.content == whole.content[:10]
    refused = client.get("/app.js", headers={"Range": f"bytes={size}-"})
    assert refused.status_code == 416 and refused.headers["content-range"] == f"bytes */{size}"
    assert refused.json()["detail"].startswith("range not satisfiable")
    assert client.get("/app.js", headers={"If-None-Match": whole.headers["etag"]}).status_code == 304
    assert client.get("/", headers={"Range": "bytes=x"}).status_code == 200


def test_tracks_are_paged_and_filtered(client: TestClient, store: FeatureStore) -> None:
    seen = []
    for offset in range(0, 12, 5):
        page = client.get("/api/tracks", params={"offset": offset, "limit": 5}).json()
        assert page["total"] == 12 and len(page["items"]) == min(5, 12 - offset)
        seen += [t["id"] for t in page["items"]]
    assert seen == sorted(t.id for t in store.tracks())
    item = page["items"][0]
    assert "path" not in item and item["file"].endswith(".flac") and "/" not in item["file"]
    saw = client.get("/api/tracks", params={"artist": "saw MACHINE"}).json()
    assert saw["total"] == 4 and {t["artist"] for t in saw["items"]} == {"Saw Machine"}
    assert client.get("/api/tracks", params={"genre": "noise"}).json()["total"] == 4
    assert client.get("/api/tracks", params={"album": "Sine Choir vol 2"}).json()["total"] == 2
    text = client.get("/api/tracks", params={"q": "choir take 3"}).json()
    assert [t["name"] for t in text["items"]] == ["Sine Choir - take 3"]
    assert client.get("/api/tracks", params={"artist": "nobody"}).json() == {"total": 0, "offset": 0, "limit": 50,
                                                                              "items": []}
    one = client.get(f"/api/tracks/{seen[0]}").json()
    assert one["id"] == seen[0] and one["models"] == ["dsp"]


@pytest.mark.parametrize(("method", "url", "status", "words"), [
    ("get", "/api/tracks/9999", 404, "unknown track id 9999"),
    ("get", "/api/tracks/9999/similar", 404, "unknown track id"),
    ("get", "/api/tracks/9999/audio", 404, "unknown track id"),
    ("get", "/api/tracks/1/similar?model=mert-v1-95m", 404, "unknown model 'mert-v1-95m'; this store has "
                                                            "vectors for dsp"),
    ("get", "/api/tracks/1/similar?layer=nope", 400, "unknown layer 'nope'; dsp has mfcc, chroma, spectral, rhythm"),
    ("get", "/api/tracks/1/similar?aspect=mood", 400, "unknown aspect 'mood'; dsp has harmony, timbre"),
    ("get", "/api/tracks/1/similar?layer=mfcc&aspect=timbre", 400, "choose at most one of layer, aspect"),
    ("get", "/api/tracks/1/similar?fused=true", 400, "no fused vectors for dsp"),
    ("get", "/api/tracks/1/similar?hubness=magic", 400, "unknown hubness reduction 'magic'"),
    ("get", "/api/tracks/1/similar?k=0", 422, "invalid k '0'; use a whole number from 1 to 200"),
    ("get", "/api/tracks/abc", 422, "invalid track_id 'abc'; use a whole number"),
    ("get", "/api/tracks/+1", 422, "invalid track_id '+1'"),  # ASCII digits only: int() takes '+1', '1_0', ' 1'
    ("get", "/api/tracks/1_0/similar", 422, "invalid track_id '1_0'"),
    ("get", "/api/tracks/%C2%B2/audio", 422, "invalid track_id '\\u00b2'"),
    ("get", "/api/playlists/radio?seed=1&seed=%D9%A1", 422, "invalid seed '\\u0661'"),
    ("get", "/api/playlists/path?start=1&end=%2B2", 422, "invalid end '+2'"),
    ("get", "/api/playlists/path?start=1&end=2&n=13", 400, "12 tracks with vectors, fewer than n=13"),  # not -n
    ("get", "/api/map?layer=99", 400, "layer 99 out of range"),
    ("get", "/api/artists/similar?name=sine%20quire", 404, "did you mean 'Sine Choir'"),
    ("get", "/api/artists/similar?name=Sine%20Choir&method=median", 400, "unknown method 'median'"),
    ("get", "/api/probe?probe=mlp", 404, "no mlp probe report for dsp"),
    ("post", "/api/index", 403, "indexing is disabled"),
])
def test_errors_are_json_with_clear_messages(client: TestClient, method: str, url: str, status: int,
                                             words: str) -> None:
    response = getattr(client, method)(url)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert words in json.dumps(response.json()["detail"])


def test_similar_tracks_match_the_search_library_with_why(client: TestClient, store: FeatureStore) -> None:
    run = store.run("dsp")
    for seed in store.tracks(run)[::4]:
        data = client.get(f"/api/tracks/{seed.id}/similar", params={"k": 3}).json()
        assert data["query"]["id"] == seed.id and data["why_source"] == "aspects"
        expected = similar_tracks(store, run, resolve_query(store, seed.id, run), 3)
        assert [r["id"] for r in data["results"]] == [n.track.id for n in expected]
        assert [r["score"] for r in data["results"]] == pytest.approx([n.score for n in expected], abs=1e-5)
        assert {r["artist"] for r in data["results"]} == {seed.artist}, "three timbres should cluster"
        for r in data["results"]:
            assert set(r["why"]) == set(r["why_percentile"]) == {"timbre", "harmony"}
            assert all(0 <= p <= 1 for p in r["why_percentile"].values()) and len(r["reasons"]) == 2
        others = client.get(f"/api/tracks/{seed.id}/similar", params={"k": 20, "exclude_same_artist": True}).json()
        assert len(others["results"]) == 8 and seed.artist not in {r["artist"] for r in others["results"]}
    by_aspect = client.get("/api/tracks/1/similar", params={"aspect": "timbre", "k": 5}).json()
    by_layer = client.get("/api/tracks/1/similar", params={"layer": "mfcc", "k": 5}).json()
    assert [r["id"] for r in by_aspect["results"]] == [r["id"] for r in by_layer["results"]]
    assert by_aspect["vectors"] == "aspect timbre" and by_layer["vectors"] == "layer mfcc"
    hub = client.get("/api/tracks/1/similar", params={"k": 5, "hubness": "csls"}).json()["results"]
    assert len(hub) == 5 and all(r["adjusted"] is not None for r in hub)


def test_similar_says_which_ranking_it_used(client: TestClient, store: FeatureStore) -> None:
    """The default augments all layers of a small collection (as `ranking=augmented`); `ranking=plain` is the plain
    ranking; hubness by default ranks by hubness without an error, with an exact ranking it is a 400; one layer ranks
    plain. ``ranking`` says which was used."""
    run = store.run("dsp")
    tid = store.tracks(run)[2].id

    def ask(**params: object) -> dict:
        response = client.get(f"/api/tracks/{tid}/similar", params={"k": 5, **params})
        assert response.status_code == 200, response.text
        return response.json()

    def same(answer: dict, **options: object) -> bool:
        want = similar_tracks(store, run, resolve_query(store, tid, run), 5, **options)  # type: ignore[arg-type]
        return ([r["id"] for r in answer["results"]] == [n.track.id for n in want]
                and [r["adjusted"] for r in answer["results"]] == pytest.approx([n.adjusted for n in want], abs=1e-5))

    default, plain, hub, layer = ask(), ask(ranking="plain"), ask(hubness="csls"), ask(layer="mfcc")
    assert [a["ranking"] for a in (default, plain, hub, layer)] == ["augmented", "plain", "plain", "plain"]
    assert same(default, ranking="augmented") and same(plain, ranking="plain") and same(hub, hubness="csls")
    assert not same(default, ranking="plain") and same(layer, layer="mfcc", ranking="plain")
    assert client.get(f"/api/tracks/{tid}/similar", params={"ranking": "best"}).status_code == 400
    both = client.get(f"/api/tracks/{tid}/similar", params={"hubness": "csls", "ranking": "reranked"})
    assert both.status_code == 400 and "two re-rankings" in both.json()["detail"]


def test_map_is_the_pca_of_the_search_vectors(client: TestClient, store: FeatureStore,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import mess.serve.routes_tracks as routes
    from mess.search.vectors import ZSCORE_FLOOR

    built = []
    monkeypatch.setattr(routes, "collection_map", lambda vs: built.append(vs) or collection_map(vs))
    run = store.run("dsp")
    data = client.get("/api/map", params={"layer": "rhythm"}).json()
    assert data["method"] == "pca" and len(built) == 1
    # the reference, computed here: z-scored (the default norm of one layer) unit rhythm vectors of the stored
    # tracks, their two principal axes (SVD), each axis signed so its largest extreme is positive, all scaled by the
    # largest |coordinate|
    ids, raw = store.layer_matrix(run, "rhythm")
    std = raw.std(axis=0)
    x = (raw - raw.mean(axis=0)) / np.maximum(std, ZSCORE_FLOOR * std.mean())
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    centred = unit - unit.mean(axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ axes[:2].T
    coords *= np.where(coords.max(axis=0) >= -coords.min(axis=0), 1.0, -1.0)
    coords /= np.abs(coords).max()
    row = {int(i): r for r, i in enumerate(ids)}
    got = np.array([[p["x"], p["y"]] for p in data["points"]])
    assert sorted(p["id"] for p in data["points"]) == sorted(row) and len(got) == 12
    np.testing.assert_allclose(got, coords[[row[p["id"]] for p in data["points"]]], atol=2e-4)
    assert data["explained_variance"] == pytest.approx((singular[:2] ** 2 / (singular**2).sum()).tolist(), abs=1e-4)
    labels = np.array([p["artist"] for p in data["points"]])
    dist = np.linalg.norm(got[:, None] - got[None], axis=-1)
    same = labels[:, None] == labels[None]
    assert dist[same & ~np.eye(12, dtype=bool)].mean() < dist[~same].mean()
    again = client.get("/api/map", params={"layer": "rhythm"}).json()
    assert again == data and len(built) == 1  # the second answer comes from the cache: no second PCA


def test_empty_layer_aspect_model_and_hubness_parameters_mean_none_given(client: TestClient,
                                                                          store: FeatureStore) -> None:
    """A form's empty field (``?layer=``) was 400 "unknown layer ''": it now answers as the parameter left out."""
    one, two = (t.id for t in store.tracks()[:2])
    for url, params in ((f"/api/tracks/{one}/similar", {"k": 4}), ("/api/map", {}),
                        ("/api/playlists/radio", {"seed": one, "n": 4}),
                        ("/api/playlists/path", {"start": one, "end": two, "n": 4}),
                        ("/api/artists/similar", {"name": "Sine Choir"})):
        plain = client.get(url, params=params)
        assert plain.status_code == 200, (url, plain.text)
        for blank in ({"layer": ""}, {"aspect": ""}, {"model": ""}, {"layer": "", "aspect": " ", "model": ""},
                      {"hubness": ""}):
            if url.startswith("/api/playlists") and "layer" in blank:
                blank = {k: v for k, v in blank.items() if k != "layer"}
            response = client.get(url, params={**params, **blank})
            assert response.status_code == 200, (url, blank, response.text)
            assert response.json() == plain.json(), (url, blank)


def test_a_radio_that_runs_out_of_tracks_says_so_in_good_english(client: TestClient, store: FeatureStore) -> None:
    """Seeded with all tracks but one, the note read 'only 1 tracks fit'."""
    firsts = list({t.artist: t.id for t in reversed(store.tracks())}.values())  # one track of each artist
    for left, words in ((1, "only 1 track fits (no"), (2, "only 2 tracks fit (no")):
        kept = {store.track(i).artist for i in firsts[:left]}  # seeds by other artists last: they played just before
        seeds = [t.id for t in sorted(store.tracks(), key=lambda t: t.artist not in kept) if t.id not in firsts[:left]]
        answer = client.get("/api/playlists/radio", params={"seed": seeds, "n": 5}).json()
        assert sorted(t["id"] for t in answer["tracks"]) == sorted(firsts[:left]) and words in answer["note"], answer


def test_head_answers_as_get_without_a_body(client: TestClient, store: FeatureStore) -> None:
    track = store.tracks()[0]
    for url in ("/api/tracks", f"/api/tracks/{track.id}", f"/api/tracks/{track.id}/audio", "/api/health"):
        get, head = client.get(url), client.head(url)
        assert head.status_code == get.status_code == 200, (url, head.status_code)  # HEAD was 404 on every /api route
        assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]
        assert head.headers["content-length"] == str(len(get.content))
    missing = client.head("/api/tracks/999999")
    assert missing.status_code == client.get("/api/tracks/999999").status_code == 404 and missing.content == b""


def test_audio_streams_with_range_requests(client: TestClient, store: FeatureStore, tmp_path: Path) -> None:
    track = store.tracks()[0]
    raw = Path(track.path).read_bytes()
    url = f"/api/tracks/{track.id}/audio"
    full = client.get(url)
    assert full.status_code == 200 and full.content == raw
    assert full.headers["accept-ranges"] == "bytes" and full.headers["content-type"] == "audio/flac"
    part = client.get(url, headers={"Range": "bytes=10-109"})
    assert part.status_code == 206 and part.content == raw[10:110]
    assert part.headers["content-range"] == f"bytes 10-109/{len(raw)}"
    tail = client.get(url, headers={"Range": "bytes=-100"})
    assert tail.status_code == 206 and tail.content == raw[-100:]
    beyond = client.get(url, headers={"Range": f"bytes={len(raw) + 10}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(raw)}"
    song = tmp_path / "music" / "song.flac"  # moved away: a private copy (the collection is shared with other modules)
    song.parent.mkdir()
    shutil.copyfile(track.path, song)
    with closing(FeatureStore(tmp_path / "store")) as private:
        extract(private, [song], DspModel(), WindowPolicy())
        own = private.tracks()[0]
    with TestClient(base_url="http://127.0.0.1", app=create_app(tmp_path / "store")) as c:
        song.rename(song.with_suffix(".moved"))
        gone = c.get(f"/api/tracks/{own.id}/audio")
    assert gone.status_code == 404 and "no longer on disk" in gone.json()["detail"]


def test_a_range_header_that_cannot_be_read_is_ignored_and_refusals_are_json(client: TestClient,
                                                                              store: FeatureStore) -> None:
    """RFC 9110 §14.2: an unknown unit must be ignored and an invalid range may be: Starlette answered both with a
    plain-text 400 (and an unsatisfiable range with a plain-text 416)."""
    track = store.tracks()[1]
    raw = Path(track.path).read_bytes()
    url = f"/api/tracks/{track.id}/audio"
    for header in ("bytes=5-2", "bytes=abc", "items=0-5", "bytes", "bytes=", f"bytes={len(raw) + 5}-2", "bytes=1-x",
                   "bytes=0-4,abc", "bytes=+1-5"):
        response = client.get(url, headers={"Range": header})
        assert response.status_code == 200, (header, response.status_code, response.text[:80])
        assert response.content == raw and "content-range" not in response.headers, header
    for header in (f"bytes={len(raw)}-", f"bytes={len(raw) + 10}-{len(raw) + 20}", "bytes=-0"):
        refused = client.get(url, headers={"Range": header})
        assert refused.status_code == 416 and refused.headers["content-type"] == "application/json", header
        assert "range not satisfiable" in refused.json()["detail"] and str(len(raw)) in refused.json()["detail"]
        assert refused.headers["content-range"] == f"bytes */{len(raw)}"
    some = client.get(url, headers={"Range": f"bytes=2-5, {len(raw) + 10}-"})  # the part that fits is served
    assert some.status_code == 206 and some.content == raw[2:6]
    assert some.headers["content-range"] == f"bytes 2-5/{len(raw)}"
    stale = client.get(url, headers={"Range": f"bytes={len(raw)}-", "If-Range": '"not-the-etag"'})
    assert stale.status_code == 200 and stale.content == raw  # If-Range does not match: the whole file, no 416


def _ranged(path: Path) -> TestClient:
    """A bare app serving ``path`` as the audio route does: :meth:`AudioFile.answer`, its JSON 412 or 416 raised."""
    app = FastAPI()

    @app.get("/f")
    def f(request: Request) -> Response:
        return AudioFile(path, stat_result=path.stat()).answer(request)

    return TestClient(app)


def _byteranges(response: httpx.Response) -> list[tuple[str, bytes]]:
    """The parts of a multipart/byteranges body (RFC 9110 §14.6), read by the standard library's MIME parser."""
    message = email.message_from_bytes(b"Content-Type: " + response.headers["content-type"].encode() + b"\r\n\r\n"
                                       + response.content, policy=email.policy.HTTP)
    assert message.get_content_type() == "multipart/byteranges"
    return [(part["content-range"], part.get_payload(decode=True)) for part in message.iter_parts()]


def test_byte_ranges_are_served_as_rfc_9110_defines_them(tmp_path: Path) -> None:
    """Each range as the RFC reads it, against a slice of the file: first-last inclusive, a last past the end cut
    to it, -n the last n bytes, overlapping or adjacent ranges merged, several disjoint ones as multipart parts."""
    raw = bytes(np.random.default_rng(0).integers(ord("a"), ord("z") + 1, 1000, dtype=np.uint8))
    path = tmp_path / "f.bin"
    path.write_bytes(raw)
    n = len(raw)
    single = {"bytes=0-0": (0, 0), "bytes=10-": (10, n - 1), "bytes=990-5000": (990, n - 1), "bytes=-1": (n - 1, n - 1),
              "bytes=-5000": (0, n - 1), f"bytes={n - 1}-{n - 1}": (n - 1, n - 1), "bytes=0005-0009": (5, 9),
              "BYTES = 0-1, 2-3": (0, 3), "bytes=5-6,0-4": (0, 6), "bytes=0-10,5-6": (0, 10), "bytes=3-4,0-10": (0, 10),
              "bytes=0-" + "9" * 5000: (0, n - 1), f"bytes=2-5, {n + 10}-": (2, 5), "bytes=0-1,-0": (0, 1),
              "bytes=" + "0" * 30 + "5-9": (5, 9), "bytes=" + ",".join(["0-1"] * 100): (0, 1)}  # 100: the most
    with _ranged(path) as client:
        for header, (first, last) in single.items():
            part = client.get("/f", headers={"Range": header})
            assert part.status_code == 206, (header, part.status_code, part.text[:80])
            assert part.content == raw[first:last + 1] and part.headers["content-range"] == f"bytes {first}-{last}/{n}"
        several = client.get("/f", headers={"Range": "bytes=900-, 0-1, 5-6"})
        assert several.status_code == 206
        assert _byteranges(several) == [(f"bytes {a}-{b}/{n}", raw[a:b + 1]) for a, b in ((0, 1), (5, 6), (900, n - 1))]
        for header in ("bytes=" + ",".join(["0-1"] * 101), "bytes=" + "0-1," * 100 + "5-6", "bytes=,", "bytes=-",
                       "bytes=abc", "bytes=0-1,x", "items=0-5", "bytes", "bytes=5-2", "bytes=0-1,5-2", "bytes=1-x"):
            whole = client.get("/f", headers={"Range": header})  # past the ranges a request may hold: ignored
            assert whole.status_code == 200 and whole.content == raw, header
        for header in (f"bytes={n}-", "bytes=-0", f"bytes={n}-{n}", "bytes=" + "9" * 30 + "-", f"bytes={n}-,-0",
                       "bytes=" + "9" * 300 + "-"):
            refused = client.get("/f", headers={"Range": header})
            assert refused.status_code == 416 and refused.headers["content-range"] == f"bytes */{n}", header
            assert refused.json()["detail"] == f"range not satisfiable: {header[:100]!r} (the file has {n} bytes)"
        etag = client.get("/f").headers["etag"]
        assert client.get("/f", headers={"Range": f"bytes={n}-", "If-Range": etag}).status_code == 416
        stale = client.get("/f", headers={"Range": f"bytes={n}-", "If-Range": '"another"'})
        assert stale.status_code == 200 and stale.content == raw
    path.write_bytes(b"x")
    with _ranged(path) as client:  # a file of one byte: its last byte is its first
        for header in ("bytes=-1", "bytes=-5", "bytes=0-0", "bytes=0-"):
            one = client.get("/f", headers={"Range": header})
            assert (one.status_code, one.content, one.headers["content-range"]) == (206, b"x", "bytes 0-0/1"), header
    path.write_bytes(b"")
    with _ranged(path) as client:  # an empty file has no last byte
        assert client.get("/f", headers={"Range": "bytes=-5"}).status_code == 416


def test_an_audio_file_replaced_since_extraction_is_refused_until_extracted_again(tmp_path: Path) -> None:
    """A different file put at a track's path was served under the old track's title and duration, with no word."""
    music = tmp_path / "music"
    music.mkdir()
    song = music / "song.flac"
    rng = np.random.default_rng(3)
    sf.write(song, _render("Sine Choir", PITCHES[0], rng), SR)
    store = FeatureStore(tmp_path / "store")
    extract(store, find_audio([music]), DspModel(), WindowPolicy())
    track = store.tracks()[0]
    with TestClient(base_url="http://127.0.0.1", app=create_app(tmp_path / "store")) as c:
        url = f"/api/tracks/{track.id}/audio"
        assert c.get(url).content == song.read_bytes()
        song.rename(music / "aside.flac")  # moved away and back: the same file, still served
        (music / "aside.flac").rename(song)
        assert c.get(url).status_code == 200
        other = tmp_path / "other.flac"
        sf.write(other, _render("Noise Ensemble", PITCHES[2], rng, seconds=6.0), SR)
        other.replace(song)
        for response in (c.get(url), c.get(url, headers={"Range": "bytes=0-99"}), c.head(url)):
            assert response.status_code == 409 and response.headers["content-type"] == "application/json"
        detail = c.get(url).json()["detail"]
        assert "song.flac" in detail and "changed since it was extracted" in detail and "mess extract" in detail
        extract(store, find_audio([music]), DspModel(), WindowPolicy())
        again = store.tracks()[0]
        assert again.id == track.id and again.content_hash != track.content_hash
        assert c.get(f"/api/tracks/{again.id}").json()["duration"] == pytest.approx(6.0, abs=0.05)
        served = c.get(f"/api/tracks/{again.id}/audio")
        assert served.status_code == 200 and served.content == song.read_bytes()
    store.close()


def _audio_url_of_one_track(music: Path, store_dir: Path) -> str:
    """The audio URL of the one file in ``music``, extracted with dsp into a new store at ``store_dir``."""
    with closing(FeatureStore(store_dir)) as store:
        extract(store, find_audio([music]), DspModel(), WindowPolicy())
        return f"/api/tracks/{store.tracks()[0].id}/audio"


def test_an_audio_file_replaced_keeping_its_size_and_mtime_is_refused(tmp_path: Path) -> None:
    """The check compared size and mtime only: another recording of the same length and format put in its place with
    the old mtime (``touch -r``, ``rsync -t``, ``cp -p``) played under the old track's title and vectors."""
    music = tmp_path / "music"
    music.mkdir()
    song, other = music / "song.wav", tmp_path / "other.wav"
    rng = np.random.default_rng(4)
    sf.write(song, _render("Sine Choir", PITCHES[1], rng), SR, subtype="PCM_16")
    url = _audio_url_of_one_track(music, tmp_path / "store")
    with TestClient(base_url="http://127.0.0.1", app=create_app(tmp_path / "store")) as c:
        song.chmod(0o600)  # the same file, its ctime changed: still served
        assert c.get(url).status_code == 200 and c.get(url).content == song.read_bytes()
        before = song.stat()
        sf.write(other, _render("Noise Ensemble", PITCHES[1], rng), SR, subtype="PCM_16")
        os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
        other.replace(song)
        assert (song.stat().st_size, song.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
        for response in (c.get(url), c.get(url, headers={"Range": "bytes=0-99"}), c.head(url)):
            assert response.status_code == 409 and response.headers["content-type"] == "application/json"
        detail = c.get(url).json()["detail"]
        assert "song.wav" in detail and "same size and modification time but other audio" in detail, detail


def test_the_audio_refusals_of_a_file_whose_name_is_not_utf8_are_json(tmp_path: Path) -> None:
    """A file named b'caf\\xe9.wav' (Latin-1 bytes) was served, but its 409 and 404 were 500s: the name, with its
    undecodable byte, could not be written as JSON."""
    music = tmp_path / "music"
    music.mkdir()
    sf.write(tmp_path / "tone.wav", _render("Sine Choir", PITCHES[2], np.random.default_rng(5)), SR)
    song = music / os.fsdecode(b"caf\xe9.wav")
    (tmp_path / "tone.wav").rename(song)
    url = _audio_url_of_one_track(music, tmp_path / "store")
    with TestClient(base_url="http://127.0.0.1", app=create_app(tmp_path / "store")) as c:
        assert c.get(url).content == song.read_bytes()
        stat = song.stat()
        os.utime(song, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        changed = c.get(url)
        assert changed.status_code == 409, changed.text
        assert "(caf\\xe9.wav) changed since it was extracted" in changed.json()["detail"]
        song.rename(tmp_path / "aside.wav")
        gone = c.get(url)
        assert gone.status_code == 404 and "(caf\\xe9.wav) is no longer on disk" in gone.json()["detail"]


def _encoded(path: Path, codec: str, sample_format: str) -> Path:
    """Three seconds of a 440 Hz tone in ``codec`` (FFmpeg's encoder), written to ``path``."""
    import av

    t = np.arange(SR * 3) / SR
    frame = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)[None],
                                       format=sample_format, layout="mono")
    frame.sample_rate = SR
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=SR)
        stream.layout = "mono"
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


def test_audio_is_served_with_an_audio_content_type_whatever_the_host_knows(tmp_path: Path) -> None:
    """The type came from the host's mimetypes: on Debian a WavPack file was 'application/vnd.wv.csp+wbxml' (and
    Musepack 'chemical/x-mopac-input'), a name ending in a space 'application/octet-stream'."""
    music = tmp_path / "music"
    music.mkdir()
    _encoded(music / "tone.wv", "wavpack", "s16p")
    _encoded(music / "tone.tta", "tta", "s16")
    sf.write(music / "tone.wav ", _render("Sine Choir", 330, np.random.default_rng(1)), SR, format="WAV")
    fs = FeatureStore(tmp_path / "store")
    extract(fs, find_audio([music]), DspModel(), WindowPolicy())
    fs.close()
    with TestClient(base_url="http://127.0.0.1", app=create_app(tmp_path / "store")) as c:
        types = {t["file"]: c.get(f"/api/tracks/{t['id']}/audio").headers["content-type"]
                 for t in c.get("/api/tracks").json()["items"]}
    assert types == {"tone.wv": "audio/x-wavpack", "tone.tta": "audio/x-tta", "tone.wav ": "audio/wav"}, types


def test_probe_report_and_heatmap_are_served(client: TestClient, store: FeatureStore) -> None:
    run = store.run("dsp")
    paths = report_paths(store.reports_dir, run.model, run.id, "ridge")
    assert client.get("/api/probe").json() == json.loads(paths["json"].read_text())
    image = client.get("/api/probe/heatmap.png")
    assert image.headers["content-type"] == "image/png" and image.content == paths["png"].read_bytes()


def test_the_probe_report_names_the_files_it_left_out_without_their_folders(collection: Path,
                                                                             tmp_path: Path) -> None:
    """`mess probe` records the files it left out (removed or changed since extraction) by full path; /api/probe
    served them so, though answers never show where the server keeps its files."""
    from mess.cli.main import app as cli

    music = shutil.copytree(collection.parent / "music", tmp_path / "music")
    fs = FeatureStore(tmp_path / "store")
    extract(fs, find_audio([music]), DspModel(), WindowPolicy())
    fs.close()
    (music / "Saw_Machine" / "take2.flac").unlink()
    probed = CliRunner().invoke(cli, ["probe", "-m", "dsp", "--control", "none", "--store", str(tmp_path / "store")])
    assert probed.exit_code == 0, probed.output
    with TestClient(base_url="http://127.0.0.1", app=create_app(tmp_path / "store")) as c:
        answer = c.get("/api/probe")
    assert answer.status_code == 200 and str(tmp_path) not in answer.text, answer.text
    assert answer.json()["missing_tracks"] == [{"path": "take2.flac", "reason": "removed since it was extracted"}]


def test_similar_artists_follow_the_artist_library(client: TestClient, store: FeatureStore) -> None:
    listed = client.get("/api/artists").json()["artists"]
    assert [(a["name"], a["total_tracks"]) for a in listed] == sorted((a, 4) for a in ARTISTS)
    data = client.get("/api/artists/similar", params={"name": "sine choir", "layer": "spectral"}).json()
    run = store.run("dsp")
    artists = load_artists(store, run)
    space = load_space(store, run, layer="spectral")
    with pytest.warns(UserWarning, match=rf"^only {len(ARTISTS)} artists: centring"):  # the API's; the route's JSON
        scores = similarity_row(artist_vectors(artists, space), artists.index("Sine Choir"))  # says it instead
    expected = sorted((n for n in artists.names if n != "Sine Choir"), key=lambda n: -scores[artists.index(n)])
    assert data["artist"] == "Sine Choir" and data["space"] == "spectral"
    assert [r["artist"] for r in data["results"]] == expected
    expected_scores = [scores[artists.index(n)] for n in expected]
    assert [r["score"] for r in data["results"]] == pytest.approx(expected_scores, abs=1e-5)
    default = client.get("/api/artists/similar", params={"name": "Noise Ensemble", "k": 1}).json()
    assert default["space"] in DspModel().info.layer_names and len(default["results"]) == 1


def _partly_fused(collection: Path, root: Path, unfused: int = 1) -> Path:
    """A copy of the store whose fused vectors (the mfcc layer) miss ``unfused`` of Sine Choir's tracks, as tracks
    extracted after `mess fuse apply` do."""
    shutil.copytree(collection, root)
    with closing(FeatureStore(root)) as fs:
        run = fs.run("dsp")
        late = {t.id for t in fs.tracks(run, artist="Sine Choir")[:unfused]}
        ids, mfcc = fs.layer_matrix(run, "mfcc")
        keep = [j for j, i in enumerate(ids) if int(i) not in late]
        fs.write_derived(run, "fused", [fs.track(int(ids[j])).content_hash for j in keep], mfcc[keep], {"note": "m"})
    return root


def test_fused_similar_artists_count_only_the_tracks_with_fused_vectors(collection: Path, tmp_path: Path) -> None:
    """Sine Choir was answered as 4 tracks in the fused space though one had no fused vector, without a word."""
    with TestClient(base_url="http://127.0.0.1", app=create_app(_partly_fused(collection, tmp_path / "s"))) as c:
        data = c.get("/api/artists/similar", params={"name": "Saw Machine", "fused": True}).json()
        rows = {r["artist"]: r for r in data["results"]}
        assert data["space"] == "fused" and data["tracks_without_fused_vectors"] == 1, data
        assert (rows["Sine Choir"]["tracks"], rows["Sine Choir"]["total_tracks"]) == (3, 4)
        assert rows["Sine Choir"]["confidence"] == pytest.approx(0.6)
        mine = c.get("/api/artists/similar", params={"name": "Sine Choir", "fused": True}).json()
        assert mine["tracks"] == 3 and mine["tracks_without_fused_vectors"] == 1
        layer = c.get("/api/artists/similar", params={"name": "Sine Choir", "layer": "mfcc"}).json()
        assert layer["tracks"] == 4 and layer["tracks_without_fused_vectors"] == 0
    with TestClient(base_url="http://127.0.0.1",
                    app=create_app(_partly_fused(collection, tmp_path / "none", unfused=4))) as c:
        gone = c.get("/api/artists/similar", params={"name": "Sine Choir", "fused": True})
        assert gone.status_code == 400 and "Sine Choir has no fused vectors" in gone.json()["detail"], gone.text
        other = c.get("/api/artists/similar", params={"name": "Saw Machine", "fused": True}).json()
        assert [r["artist"] for r in other["results"]] == ["Noise Ensemble"], other


def test_fused_similar_and_map_say_how_many_tracks_they_leave_out(collection: Path, tmp_path: Path) -> None:
    """`mess similar --fused` says that tracks extracted since `mess fuse apply` were left out; the routes did not."""
    said = "1 track has no fused vectors yet and was left out; `mess fuse apply` adds them"
    with TestClient(base_url="http://127.0.0.1", app=create_app(_partly_fused(collection, tmp_path / "s"))) as c:
        query = c.get("/api/tracks", params={"artist": "Saw Machine"}).json()["items"][0]["id"]
        similar = c.get(f"/api/tracks/{query}/similar", params={"fused": True, "k": 20}).json()
        assert similar["tracks_without_fused_vectors"] == 1 and said in similar["notes"], similar
        assert len(similar["results"]) == 12 - 1 - 1  # neither the query nor the unfused track
        fused_map = c.get("/api/map", params={"fused": True}).json()
        assert fused_map["tracks_without_fused_vectors"] == 1 and fused_map["note"] == said
        assert len(fused_map["points"]) == 11
        layer = c.get(f"/api/tracks/{query}/similar", params={"layer": "mfcc", "k": 20}).json()
        assert layer["tracks_without_fused_vectors"] == 0 and not any("fused" in n for n in layer["notes"])
        layer_map = c.get("/api/map", params={"layer": "mfcc"}).json()
        assert layer_map["tracks_without_fused_vectors"] == 0 and layer_map["note"] is None


def test_artist_requests_reuse_their_groups_until_the_catalog_changes(
        collection: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mess.artists.profiles as profiles
    import mess.serve.routes_artists as routes

    calls = {"build_artists": 0, "most_discriminative": 0, "artist_vectors": 0}

    def counting(module: object, name: str) -> None:
        real = getattr(module, name)

        def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls[name] += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(module, name, wrapped)

    counting(profiles, "build_artists")
    counting(routes, "most_discriminative")
    counting(routes, "artist_vectors")
    copy = tmp_path / "store"
    shutil.copytree(collection, copy)
    with TestClient(base_url="http://127.0.0.1", app=create_app(copy)) as c:
        def similar(name: str, **params: object) -> dict:
            response = c.get("/api/artists/similar", params={"name": name, **params})
            assert response.status_code == 200, response.text
            return response.json()

        def names() -> dict[str, int]:
            return {a["name"]: a["total_tracks"] for a in c.get("/api/artists").json()["artists"]}

        first = [similar("Sine Choir"), similar("Saw Machine", layer="mfcc"), similar("Noise Ensemble", fused=False,
                                                                                       method="chamfer")]
        warm = dict(calls)
        assert warm == {"build_artists": 1, "most_discriminative": 1, "artist_vectors": 2}
        for _ in range(3):  # nothing changed: artist groups, spaces and artist vectors are reused
            assert [similar("Sine Choir"), similar("Saw Machine", layer="mfcc"),
                    similar("Noise Ensemble", fused=False, method="chamfer")] == first
            assert names() == dict.fromkeys(ARTISTS, 4)
        assert calls == warm
        state = c.app.state.mess
        run = state.store.run("dsp")
        aset = load_artists(state.store, run)
        assert load_artists(state.store, run) is aset
        assert load_artists(state.store, run, max_tracks=2) is not aset  # other parameters, other groups
        assert max(len(p.track_ids) for p in load_artists(state.store, run, max_tracks=2).profiles) == 2
        warm = dict(calls)

        # another connection (another process, e.g. `mess extract`) retags a track ...
        other = FeatureStore(copy)
        moved = other.track(other.tracks(run, artist="Saw Machine")[0].id)
        other.upsert_track(Path(moved.path), moved.content_hash, 1, 0.0, {"duration": moved.duration},
                           {"artist": "Square Wave", "album": moved.album, "title": moved.title,
                            "genre": moved.genre, "composer": None})
        assert names() == {"Sine Choir": 4, "Noise Ensemble": 4, "Saw Machine": 3, "Square Wave": 1}
        retagged = similar("Square Wave", layer="mfcc")
        assert retagged["low_confidence"] and "Saw Machine" in [r["artist"] for r in retagged["results"]]
        assert calls["build_artists"] == warm["build_artists"] + 1
        assert similar("Sine Choir")["results"] != first[0]["results"]  # four artists now

        # ... and adds a track with new content and vectors
        ids, mats = zip(*(other.layer_matrix(run, name) for name in run.layer_names), strict=False)
        row = list(ids[0]).index(moved.id)
        h = "new-content-hash"
        other.upsert_track(copy.parent / "new.flac", h, 1, 0.0, {"duration": 4.0},
                           {"artist": "New Voice", "album": None, "title": "new", "genre": None, "composer": None})
        layers = [m[row] + 0.01 for m in mats]
        other.write_vectors(run, [TrackVectors(h, layers, [v[None] for v in layers], [0.0])])
        other.close()
        assert names()["New Voice"] == 1
        assert similar("New Voice")["results"][0]["artist"] == "Square Wave"
        assert calls["most_discriminative"] == warm["most_discriminative"] + 2  # once per catalog change seen


def test_a_store_moved_aside_and_extracted_again_is_answered_from_its_new_catalog(collection: Path,
                                                                                  tmp_path: Path) -> None:
    """The advice for a damaged catalog (move the store aside, extract again) while the server runs: its open
    connection followed the moved catalog, so it listed the old tracks and read them against the new row files
    ('differ from their checksums ... run `mess check --repair`')."""
    copy = tmp_path / "store"
    shutil.copytree(collection, copy)
    with TestClient(base_url="http://127.0.0.1", app=create_app(copy)) as c:
        assert c.get("/api/health").json()["tracks"] == 12
        assert c.get("/api/tracks/1/similar", params={"k": 3}).status_code == 200
        copy.rename(tmp_path / "aside")
        fresh = FeatureStore(copy)
        music = collection.parent / "music"
        extract(fresh, find_audio([music / "Saw_Machine", music / "Noise_Ensemble"]), DspModel(), WindowPolicy())
        run = fresh.run("dsp")
        tracks = fresh.tracks(run)
        health = c.get("/api/health").json()
        assert health["tracks"] == len(tracks) == 8 and health["default_model"] == "dsp"
        listed = c.get("/api/tracks").json()["items"]
        assert [t["id"] for t in listed] == [t.id for t in tracks]
        assert {t["artist"] for t in listed} == {"Saw Machine", "Noise Ensemble"}
        for layer in ("chroma", None):
            params = {"k": 3} if layer is None else {"k": 3, "layer": layer}
            response = c.get(f"/api/tracks/{tracks[0].id}/similar", params=params)
            assert response.status_code == 200, response.text
            expected = similar_tracks(fresh, run, resolve_query(fresh, tracks[0].id, run), 3, layer=layer)
            assert [r["id"] for r in response.json()["results"]] == [n.track.id for n in expected]
        assert len(c.get("/api/map").json()["points"]) == 8
        fresh.close()


def test_a_store_being_rebuilt_in_place_is_a_503_to_retry_not_damage_to_repair(collection: Path,
                                                                              tmp_path: Path) -> None:
    """Deleted and extracted again while the server ran, the store was answered from the old catalog against the
    missing row files: 400 'run `mess check --repair`' until the new catalog held vectors."""
    copy = tmp_path / "store"
    shutil.copytree(collection, copy)
    urls = ("/api/tracks/1/similar?k=3", "/api/map?layer=chroma", "/api/playlists/radio?seed=1&n=3")
    with TestClient(base_url="http://127.0.0.1", app=create_app(copy)) as c:
        assert c.get("/api/health").json()["tracks"] == 12  # nothing read from the row files yet
        shutil.rmtree(copy)
        for words in ("its catalog is gone", "a new catalog has replaced"):
            assert c.get("/api/health").json()["status"] == "rebuilding"
            for url in urls:
                response = c.get(url)
                assert response.status_code == 503 and response.headers["retry-after"] == "10", (url, response.text)
                detail = response.json()["detail"]
                assert detail.startswith("the store is being rebuilt: " + words) and "repair" not in detail, detail
            FeatureStore(copy).close()  # the rebuild has begun: a catalog without vectors
        fresh = FeatureStore(copy)
        music = collection.parent / "music"
        extract(fresh, find_audio([music / "Sine_Choir", music / "Saw_Machine"]), DspModel(), WindowPolicy())
        for url in urls:
            assert c.get(url).status_code == 200, url
        assert c.get("/api/health").json()["tracks"] == 8 and c.get("/api/health").json()["status"] == "ok"
        fresh.close()


@pytest.mark.parametrize(("folder", "shown"), [(b"store", "store"), (b"st\xf6re", "st\\xf6re")])
def test_a_damaged_store_is_named_without_its_parent_folders(collection: Path, tmp_path: Path, folder: bytes,
                                                             shown: str) -> None:
    """A store error named the store by its full path ('/home/me/music/store: dsp track vectors ... stop at row 0'):
    API answers name no server path, a track's file included; the store is named by its folder's name, one that is
    not UTF-8 with escapes (it was a 500: the name could not be written as JSON)."""
    copy = tmp_path / "private" / os.fsdecode(folder)
    shutil.copytree(collection, copy)
    with TestClient(base_url="http://127.0.0.1", app=create_app(copy)) as c:
        (copy / "runs" / "1" / "track" / "001.f16").write_bytes(b"")  # the chroma vectors lost
        damaged = c.get("/api/tracks/1/similar", params={"layer": "chroma"})
        assert damaged.status_code == 400, damaged.text
        detail = damaged.json()["detail"]
        assert detail.startswith(f"{shown}: dsp track vectors of layer chroma stop at row 0"), detail
        assert str(tmp_path) not in detail and detail.endswith("run `mess check --repair`")


def test_runs_say_which_run_answers_for_a_model_extracted_again(collection: Path, tmp_path: Path) -> None:
    """A second dsp run (another window policy, 2 of 12 files) is the newest, but the first answers: the page took
    the newest run's aspects and layers for its choices (here none of the first run's probed aspects)."""
    copy = tmp_path / "store"
    shutil.copytree(collection, copy)
    other = FeatureStore(copy)
    extract(other, find_audio([collection.parent / "music"])[:2], DspModel(), WindowPolicy(max_windows=1))
    assert len(other.runs()) == 2
    answering = other.run("dsp")
    other.close()
    with TestClient(base_url="http://127.0.0.1", app=create_app(copy)) as c:
        runs = c.get("/api/runs").json()["runs"]
        assert [(r["tracks"], r["current"]) for r in runs] == [(12, True), (2, False)]
        current = next(r for r in runs if r["current"])
        assert current["id"] == answering.id and current["aspects"] == {"timbre": "mfcc", "harmony": "chroma"}
        assert runs[-1]["aspects"] == {}
        response = c.get("/api/tracks/1/similar", params={"aspect": "timbre", "k": 3})
        assert response.status_code == 200 and response.json()["vectors"] == "aspect timbre"


def test_upload_finds_the_original_and_places_it_on_the_map(client: TestClient, store: FeatureStore,
                                                            uploads_dir: Path) -> None:
    original = store.tracks()[5]
    audio, sr = sf.read(original.path, dtype="float32")
    buffer = io.BytesIO()
    noisy = 0.8 * audio + 0.003 * np.random.default_rng(1).standard_normal(audio.shape).astype(np.float32)
    sf.write(buffer, noisy, sr, format="WAV")
    answer = client.post("/api/similar/upload", params={"k": 3, "layer": "mfcc"},
                         files={"file": ("mine.wav", buffer.getvalue(), "audio/wav")})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["query"]["external"] is True and data["query"]["file"] == "mine.wav"
    assert data["ranking"] == "plain" and data["notes"] == []  # one layer: the plain ranking
    assert data["results"][0]["id"] == original.id and data["results"][0]["score"] > data["results"][1]["score"]
    whole = client.post("/api/similar/upload", params={"k": 3},  # all layers: the augmented ranking
                        files={"file": ("mine.wav", buffer.getvalue(), "audio/wav")}).json()
    assert whole["ranking"] == "augmented" and len(whole["results"]) == 3
    same = client.post("/api/similar/upload", params={"k": 3},
                       files={"file": ("copy.flac", Path(original.path).read_bytes(), "audio/flac")}).json()
    assert same["query"]["external"] is False and same["query"]["id"] == original.id and same["warnings"] == []
    point = next(p for p in client.get("/api/map").json()["points"] if p["id"] == original.id)
    assert [same["query"]["x"], same["query"]["y"]] == pytest.approx([point["x"], point["y"]], abs=0.01)
    assert original.id not in [r["id"] for r in same["results"]]
    trailing = client.post("/api/similar/upload", params={"k": 3},  # named as extract reads names: a FLAC
                           files={"file": ("copy.flac. ", Path(original.path).read_bytes(), "audio/flac")})
    assert trailing.status_code == 200, trailing.text
    assert trailing.json()["query"]["id"] == original.id and trailing.json()["query"]["file"] == "copy.flac. "
    assert _uploads_left(uploads_dir) == set()


def test_an_upload_can_be_re_ranked(client: TestClient, store: FeatureStore, uploads_dir: Path,
                                    tmp_path: Path) -> None:
    """`ranking` and `norm` on an upload: the file is augmented from its nearest tracks and re-ranked as `mess
    similar FILE --norm power --ranking reranked` ranks it; an unknown ranking is refused before the upload."""
    original = store.tracks()[5]
    audio, sr = sf.read(original.path, dtype="float32")
    copy = tmp_path / "mine.wav"
    sf.write(copy, 0.8 * audio, sr, format="WAV")
    params = {"k": 3, "layer": "mfcc", "norm": "power", "ranking": "reranked"}
    answer = client.post("/api/similar/upload", params=params,
                         files={"file": ("mine.wav", copy.read_bytes(), "audio/wav")})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    run = store.run()
    want = similar_tracks(store, run, resolve_query(store, copy, run), 3, layer="mfcc", norm="power",
                          ranking="reranked")
    assert [r["id"] for r in results] == [n.track.id for n in want] and original.id in [r["id"] for r in results]
    assert [r["adjusted"] for r in results] == pytest.approx([n.adjusted for n in want], abs=1e-6)  # re-ranked scores
    assert [r["adjusted"] for r in results] == sorted((r["adjusted"] for r in results), reverse=True)
    bad = client.post("/api/similar/upload", params={"ranking": "best"},
                      files={"file": ("mine.wav", copy.read_bytes(), "audio/wav")})
    assert bad.status_code == 400 and "unknown ranking" in bad.json()["detail"]
    assert _uploads_left(uploads_dir) == set()


def test_an_upload_answers_the_warnings_the_cli_prints(client: TestClient, uploads_dir: Path) -> None:
    """A file sampled below half the model's rate was searched and answered without a word (the warning `mess
    similar FILE` prints went to the server's log only); the answer lists it, naming the uploaded file."""
    def upload(name: str, rate: int) -> dict:
        t = np.arange(4 * rate) / rate
        tones = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1320 * t) * (np.sin(2 * np.pi * t) > 0)
        buffer = io.BytesIO()
        sf.write(buffer, tones.astype(np.float32), rate, format="WAV")
        answer = client.post("/api/similar/upload", params={"k": 2},
                             files={"file": (name, buffer.getvalue(), "audio/wav")})
        assert answer.status_code == 200, answer.text
        assert answer.json()["query"]["external"] is True
        return answer.json()

    assert upload("phone.wav", 4000)["warnings"] == [
        "phone.wav: sampled at 4000 Hz, below half the model's 22050 Hz: it hears nothing above 2000 Hz, "
        "so its vectors say little"]
    assert upload("studio.wav", 22050)["warnings"] == []
    assert _uploads_left(uploads_dir) == set()


def test_an_untagged_title_of_an_upload_is_its_file_name_without_the_extension(client: TestClient, tmp_path: Path,
                                                                             uploads_dir: Path) -> None:
    """An upload with an artist tag but no title is labelled 'artist - name' as `mess similar FILE` labels a file:
    'mine.flac. ' (a FLAC to extract) gives 'Eps - mine', not 'Eps - mine.flac. '."""
    song = tmp_path / "song.flac"
    t = np.arange(3 * SR) / SR
    sf.write(song, (0.3 * np.sin(2 * np.pi * 330 * t) * np.sin(2 * np.pi * 1.5 * t)).astype(np.float32), SR)
    tags = mutagen.flac.FLAC(song)
    tags["artist"] = "Eps"
    tags.save()
    answer = client.post("/api/similar/upload", params={"k": 1},
                         files={"file": ("mine.flac. ", song.read_bytes(), "audio/flac")})
    assert answer.status_code == 200, answer.text
    assert answer.json()["query"]["external"] is True and answer.json()["query"]["label"] == "Eps - mine"
    assert _uploads_left(uploads_dir) == set()


def test_an_upload_credited_only_to_a_composer_excludes_that_artist(client: TestClient, tmp_path: Path,
                                                                     uploads_dir: Path) -> None:
    """An upload tagged with a composer and no artist excluded nothing with exclude_same_artist, where a collection
    track of that composer is grouped by it (as `mess artists` and `mess similar FILE` do)."""
    song = tmp_path / "song.flac"
    sf.write(song, _render("Sine Choir", 220.0, np.random.default_rng(5)), SR)
    tags = mutagen.flac.FLAC(song)
    tags["composer"] = "Sine Choir"
    tags.save()
    answer = client.post("/api/similar/upload", params={"k": 20, "exclude_same_artist": True},
                         files={"file": ("song.flac", song.read_bytes(), "audio/flac")})
    assert answer.status_code == 200, answer.text
    found = {r["artist"] for r in answer.json()["results"]}
    assert found == set(ARTISTS) - {"Sine Choir"}, found
    assert _uploads_left(uploads_dir) == set()


def test_bad_uploads_are_refused(client: TestClient, uploads_dir: Path) -> None:
    cases = [
        (("big.wav", b"\0" * (UPLOAD_LIMIT + 1), "audio/wav"), 413, "larger than"),
        (("notes.txt", b"hello", "text/plain"), 415, "unsupported file type '.txt'"),
        (("song.wav", b"hello", "text/html"), 415, "unsupported content type"),
        (("song.wav", b"RIFF not really a wave file" * 40, "audio/wav"), 400, "cannot decode the upload: song.wav"),
        (("song.mp3", b"", "audio/mpeg"), 400, "empty"),
    ]
    for file, status, words in cases:
        response = client.post("/api/similar/upload", files={"file": file})
        assert response.status_code == status, response.text
        assert words in response.json()["detail"] and "mess-upload" not in response.json()["detail"]
    assert client.post("/api/similar/upload", content=b"abc", headers={"content-type": "audio/wav"}).status_code == 415
    assert client.post("/api/similar/upload", files={"other": ("a.wav", b"abc", "audio/wav")}).status_code == 400
    fused = client.post("/api/similar/upload", params={"fused": True}, files={"file": ("a.wav", b"abc", "audio/wav")})
    assert fused.status_code == 400 and "no fused vectors for dsp" in fused.json()["detail"]
    body, ctype = _multipart("stream.wav", b"\1" * (2 * UPLOAD_LIMIT), "audio/wav")
    chunked = client.post("/api/similar/upload", content=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                          headers={"content-type": ctype})
    assert "content-length" not in chunked.request.headers and chunked.status_code == 413
    assert _uploads_left(uploads_dir) == set()


def test_an_upload_with_a_file_name_too_long_is_refused_naming_the_cause(client: TestClient, uploads_dir: Path,
                                                                         store: FeatureStore) -> None:
    """A 5000-character file name was answered 'malformed upload: Invalid multipart data.' (the parser's limit on a
    part's header line), which does not say what is wrong; names past the limit are refused in words, with it."""
    song = Path(store.tracks()[0].path).read_bytes()
    for name, why in (("a" * 4996 + ".wav", "its Content-Disposition header is over 4 KiB"),
                      ("b" * 1021 + ".wav", "1025 characters")):
        response = client.post("/api/similar/upload", files={"file": (name, song, "audio/flac")})
        assert response.status_code == 400, response.text
        assert response.json()["detail"] == f"file name too long ({why}; at most 1024 characters)"
    longest = "c" * 1019 + ".flac"
    fits = client.post("/api/similar/upload", params={"k": 1}, files={"file": (longest, song, "audio/flac")})
    assert fits.status_code == 200 and fits.json()["query"]["file"] == longest, fits.text
    body, ctype = _multipart("song.flac", song, "audio/flac; x=" + "d" * 5000)  # another header too long: as before
    other = client.post("/api/similar/upload", content=body, headers={"content-type": ctype})
    assert other.status_code == 400 and other.json()["detail"] == "malformed upload: Invalid multipart data."
    assert _uploads_left(uploads_dir) == set()


def test_an_upload_named_only_by_its_rfc_5987_file_name_is_read_with_that_name(client: TestClient,
                                                                               uploads_dir: Path) -> None:
    """A part naming its file only as ``filename*=UTF-8''...`` (as urllib3 before 2.0 sent non-ASCII names) was
    answered 'no file in the form field'; it is the decoded name wherever the name is used."""
    t = np.arange(3 * SR) / SR
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * 262 * t)).astype(np.float32), SR, format="WAV")  # untagged
    for param, name in (("filename*=UTF-8''caf%C3%A9%20%E2%99%AB.wav", "café ♫.wav"),
                        ("filename*=iso-8859-1'fr'd%E9j%E0.wav", "déjà.wav"),
                        ("filename*0*=UTF-8''na%C3%AFve; filename*1=.wav", "naïve.wav"),
                        ('filename="plain.wav"; filename*=UTF-8\'\'other.wav', "plain.wav")):  # the plain name wins
        body, ctype = _multipart("", buffer.getvalue(), "audio/wav", file_param=param)
        answer = client.post("/api/similar/upload", params={"k": 2}, content=body, headers={"content-type": ctype})
        assert answer.status_code == 200, (param, answer.text)
        assert answer.json()["query"]["file"] == answer.json()["query"]["label"] == name
    for param, status, words in (("filename*=UTF-8''bad%E2%99%AB.wav", 400, "cannot decode the upload: bad♫.wav"),
                                 ("filename*=UTF-8''%E2%99%AB.txt", 415, "unsupported file type '.txt'")):
        body, ctype = _multipart("", b"RIFF not really a wave file" * 40, "audio/wav", file_param=param)
        refused = client.post("/api/similar/upload", content=body, headers={"content-type": ctype})
        assert refused.status_code == status and refused.json()["detail"].startswith(words), refused.text
    assert _uploads_left(uploads_dir) == set()


class _ReplacedWhileEmbedding(EmbedWorker):
    """A real embed worker during whose embedding the store is replaced and the server has seen it (as at any
    request): each upload calls the next of ``swaps`` (none once they are used up)."""

    def __init__(self, swaps: list[Callable[[], None]]) -> None:
        super().__init__(300)
        self.swaps = swaps

    def embed(self, path: Path, run: Run, name: str, source: dict[str, str] | None = None,
              segments: bool = False) -> Embedded:
        embedded = super().embed(path, run, name, source, segments)
        if self.swaps:
            self.swaps.pop(0)()
        return embedded


def test_an_upload_is_searched_in_the_store_reopened_while_it_was_embedded(collection: Path, tmp_path: Path,
                                                                           uploads_dir: Path) -> None:
    """An upload resolved its run before embedding and searched after: a store reopened in between was searched with
    the old store's run id, here another run's (2 tracks of another window policy), so the answer came from those."""
    copy = tmp_path / "store"
    shutil.copytree(collection, copy)
    music = collection.parent / "music"
    app = create_app(copy)
    state = app.state.mess
    fresh: list[FeatureStore] = []

    def rebuild(*policies: tuple[list[Path], WindowPolicy]) -> Callable[[], None]:
        def swap() -> None:
            shutil.rmtree(copy)
            store = FeatureStore(copy)
            for folder, policy in policies:
                extract(store, find_audio(folder), DspModel(), policy)
            fresh.append(store)
            state.refresh()
        return swap

    one = WindowPolicy(max_windows=1)
    state.worker = _ReplacedWhileEmbedding([
        rebuild(([music / "Noise_Ensemble"], one), ([music / "Sine_Choir", music / "Saw_Machine"], WindowPolicy())),
        rebuild(([music / "Sine_Choir"], one))])  # the upload's window policy is gone
    song = find_audio([music / "Saw_Machine"])[0]
    with TestClient(base_url="http://127.0.0.1", app=app) as c:
        answer = c.post("/api/similar/upload", params={"k": 5}, files={"file": ("saw.flac", song.read_bytes(),
                                                                                "audio/flac")})
        assert answer.status_code == 200, answer.text
        store = fresh[0]
        run = store.run("dsp")
        assert run.id == 2 and len(store.tracks(run)) == 8
        query = answer.json()["query"]
        same = next(t for t in store.tracks(run) if Path(t.path) == song)
        assert query["id"] == same.id and query["external"] is False
        expected = similar_tracks(store, run, resolve_query(store, same.id, run), 5)
        assert [r["id"] for r in answer.json()["results"]] == [n.track.id for n in expected]
        refused = c.post("/api/similar/upload", files={"file": ("saw.flac", song.read_bytes(), "audio/flac")})
        assert refused.status_code == 409 and "replaced while the upload was embedded" in refused.json()["detail"]
        assert c.post("/api/similar/upload", params={"k": 2},  # sent again, it is embedded as the new store's run
                      files={"file": ("saw.flac", song.read_bytes(), "audio/flac")}).status_code == 200
    for store in fresh:
        store.close()
    assert _uploads_left(uploads_dir) == set()


def test_embed_worker_survives_a_hang_and_a_crash(collection: Path, store: FeatureStore) -> None:
    run = store.run("dsp")
    path = Path(store.tracks()[0].path)
    worker = EmbedWorker(timeout=60)
    try:
        content_hash, layers, tags, warnings, duration, _ = worker.embed(path, run, path.name)
        assert content_hash == store.tracks()[0].content_hash and len(layers) == 4 and tags["artist"]
        assert warnings == [] and duration == pytest.approx(sf.info(path).duration, abs=0.01)
        first = worker.pid
        os.kill(first, signal.SIGSTOP)  # a decoder stuck forever
        worker.timeout = 1.0
        with pytest.raises(HTTPException, match="took longer than 1 s") as hang:
            worker.embed(path, run, path.name)
        assert hang.value.status_code == 400 and worker.pid is None
        worker.timeout = 60
        assert worker.embed(path, run, path.name)[0] == content_hash and worker.pid != first
        os.kill(worker.pid, signal.SIGSTOP)
        killer = threading.Timer(0.5, os.kill, (worker.pid, signal.SIGKILL))  # dies mid-job
        killer.start()
        with pytest.raises(HTTPException, match="died on this file") as crash:
            worker.embed(path, run, path.name)
        killer.join()
        assert crash.value.status_code == 400 and worker.pid is None
    finally:
        worker.close()


@pytest.mark.parametrize(("folder", "shown"), [(b"store", "store"), (b"st\xf6re", "st\\xf6re")])
def test_indexing_only_with_the_flag(collection: Path, tmp_path: Path, folder: bytes, shown: str) -> None:
    """Also: the 503 of a busy store named it by its full path, and a folder name that is not UTF-8 made it a 500."""
    copy = tmp_path / os.fsdecode(folder)
    shutil.copytree(collection, copy)
    with TestClient(base_url="http://127.0.0.1", app=create_app(copy, allow_indexing=True)) as writable:
        assert writable.get("/api/health").json()["read_only"] is False
        built = writable.post("/api/index", params={"layer": "mfcc", "kind": "flat"}).json()
        assert built["mode"] == "built" and built["tracks"] == 12 and (copy / "indexes" / built["file"]).is_file()
        assert built["rerank"] == built["augment"] == "" and built["augment_file"] is None  # one layer ranks plain
        again = writable.post("/api/index", params={"layer": "mfcc", "kind": "flat", "rerank": True}).json()
        assert again["mode"] == "unchanged" and again["note"] is None and again["rerank"] == "built"
        assert (copy / "indexes" / again["rerank_file"]).stat().st_size == again["rerank_bytes"] > 0
        again = writable.post("/api/index", params={"layer": "mfcc", "kind": "flat", "rerank": True}).json()
        assert again["rerank"] == again["augment"] == "unchanged"
        default = writable.post("/api/index", params={"kind": "flat"}).json()  # all layers: the augmentation
        assert default["augment"] == "built" and default["rerank"] == "" and default["rerank_file"] is None
        assert (copy / "indexes" / default["augment_file"]).stat().st_size == default["augment_bytes"] > 0
        plain = writable.post("/api/index", params={"kind": "flat", "rerank": False}).json()
        assert plain["mode"] == "unchanged" and plain["augment"] == plain["rerank"] == ""
        ivf = writable.post("/api/index", params={"layer": "mfcc", "kind": "ivf"}).json()  # 12 tracks: too few
        assert ivf["kind"] == "flat" and ivf["note"].startswith("ivf needs 32 tracks"), ivf
        assert writable.post("/api/index", params={"kind": "lsh"}).status_code == 400
        holder = subprocess.Popen(  # another process writes: 503 at once, the store named without its path
            [sys.executable, "-c", "import sys; from mess.store import FeatureStore\n"
             "with FeatureStore(sys.argv[1]).writing('mess extract'):\n print('held', flush=True); sys.stdin.read()",
             str(copy)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline() == "held\n"
        busy = writable.post("/api/index", params={"layer": "chroma", "kind": "flat"})
        holder.communicate("", timeout=60)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "30", busy.text
        assert busy.json()["detail"].startswith(f"the store is busy: the store lock on {shown} held by pid "), busy.text
        assert str(tmp_path) not in busy.json()["detail"]


def test_cli_loopback_check_and_clean_errors(tmp_path: Path) -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.5.0.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.20", "example.org"))
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    out = CliRunner().invoke(app, ["serve", "--store", str(tmp_path / "none")])
    assert out.exit_code == 1 and "no feature store" in out.output and "Traceback" not in out.output
    with pytest.raises(Exception, match="no feature store"):
        create_app(tmp_path / "none")


MODELS = ("dsp", "musicnn-msd")


@pytest.mark.parametrize("model", MODELS)
def test_real_music_similar_and_map(extracted_store: Path, model: str) -> None:
    with TestClient(base_url="http://127.0.0.1", app=create_app(extracted_store, model=model)) as client:
        fs = FeatureStore(extracted_store, readonly=True)
        try:
            run = fs.run(model)
            tracks = fs.tracks(run)
            seed = tracks[0]
            data = client.get(f"/api/tracks/{seed.id}/similar", params={"k": 5}).json()
            expected = similar_tracks(fs, run, resolve_query(fs, seed.id, run), 5)
            assert [r["id"] for r in data["results"]] == [n.track.id for n in expected]
            assert seed.id not in [r["id"] for r in data["results"]] and all(r["why"] for r in data["results"])
            others = client.get(f"/api/tracks/{seed.id}/similar", params={"k": 5, "exclude_same_artist": True}).json()
            assert others["results"] and seed.artist not in {r["artist"] for r in others["results"]}
            points = client.get("/api/map").json()["points"]
            assert sorted(p["id"] for p in points) == sorted(t.id for t in tracks)
        finally:
            fs.close()


def test_real_music_upload_finds_its_original(extracted_store: Path) -> None:
    fs = FeatureStore(extracted_store, readonly=True)
    seed = fs.tracks(fs.run("dsp"))[2]
    fs.close()
    audio, sr = sf.read(seed.path, dtype="float32")
    buffer = io.BytesIO()
    sf.write(buffer, 0.7 * audio, sr, format="FLAC")
    with TestClient(base_url="http://127.0.0.1", app=create_app(extracted_store, model="dsp")) as client:
        answer = client.post("/api/similar/upload", params={"k": 3},
                             files={"file": ("quiet.flac", buffer.getvalue(), "audio/flac")})
    assert answer.status_code == 200, answer.text
    assert answer.json()["query"]["external"] is True and answer.json()["results"][0]["id"] == seed.id


def test_cli_advice_keeps_its_dashes_in_api_messages() -> None:
    from mess.serve.state import api_words

    got = api_words("use --layer or --aspect; no aspect map for dsp: run `mess probe --model dsp` first")
    # the command inside backticks was shown as `mess probe model dsp`
    assert got == "use layer or aspect; no aspect map for dsp: run `mess probe --model dsp` first"
    # a track's name, what the request sent and options the API lacks were rewritten too: 'n=5', '(Intro live x=2)'
    for kept in ("unknown blend '-n 5'; use nearest or turns", "the same recording (Intro --live -x 2)",
                 "run mess check --repair"):
        assert api_words(kept) == kept
    assert api_words("the store's -n 12 and --k") == "the store's n=12 and k"


def test_requests_naming_no_model_follow_the_default_model_as_the_store_changes(extracted_store: Path,
                                                                                tmp_path: Path) -> None:
    """`mess config default-model dsp` while the server ran: `mess similar 1` answered from dsp, the server (started
    without --model) kept answering from the model it picked at start, so the page and the CLI disagreed on the
    same question. A server started with --model keeps that model."""
    from mess.cli.main import app as cli

    copy = tmp_path / "store"
    shutil.copytree(extracted_store, copy)

    def config(*args: str) -> None:
        out = CliRunner().invoke(cli, ["config", "default-model", *args, "--store", str(copy)])
        assert out.exit_code == 0, out.output

    with TestClient(base_url="http://127.0.0.1", app=create_app(copy)) as c:
        assert c.get("/api/health").json()["default_model"] == "musicnn-msd"
        config("dsp")
        assert c.get("/api/health").json()["default_model"] == "dsp"
        assert c.get("/api/runs").json()["default_model"] == "dsp"
        assert c.get("/api/tracks/1/similar", params={"k": 3}).json()["model"] == "dsp"
        assert c.get("/api/playlists/radio", params={"seed": 1, "n": 3}).json()["model"] == "dsp"
        config("--unset")
        assert c.get("/api/tracks/1/similar", params={"k": 3}).json()["model"] == "musicnn-msd"
    config("dsp")
    with TestClient(base_url="http://127.0.0.1", app=create_app(copy, model="musicnn-msd")) as c:
        assert c.get("/api/health").json()["default_model"] == "musicnn-msd"
        assert c.get("/api/tracks/1/similar", params={"k": 3}).json()["model"] == "musicnn-msd"


def test_the_artist_list_of_a_collection_of_one_artist_lists_it(tmp_path: Path) -> None:
    """GET /api/artists lists the collection's artists; with fewer than two (one tagged artist, or none) it answered
    400 "artist similarity needs at least 2 artists", an error of the similarity routes, not of a listing."""
    music = tmp_path / "music"
    music.mkdir()
    rng = np.random.default_rng(5)
    for i, f0 in enumerate(PITCHES[:3]):
        path = music / f"take{i}.flac"
        sf.write(path, _render("Sine Choir", f0, rng), SR)
        if i:  # take0 has no tags
            tags = mutagen.flac.FLAC(path)
            tags.update({"artist": "Sine Choir", "title": f"take {i}"})
            tags.save()
    with closing(FeatureStore(tmp_path / "store")) as store:
        extract(store, find_audio([music]), DspModel(), WindowPolicy())
    with TestClient(base_url="http://127.0.0.1", app=create_app(tmp_path / "store")) as c:
        response = c.get("/api/artists")
        assert response.status_code == 200, response.text
        assert [(a["name"], a["tracks"]) for a in response.json()["artists"]] == [("Sine Choir", 2)]
        similar = c.get("/api/artists/similar", params={"name": "Sine Choir"})
        assert similar.status_code == 400 and "at least 2 artists" in similar.json()["detail"]



@pytest.mark.parametrize("n", [3, 4, 9])  # 9: past MIN_FIT_TRACKS, so z-scored
def test_a_map_of_identical_vectors_puts_every_track_at_the_centre_with_no_variance_explained(tmp_path: Path,
                                                                                             n: int) -> None:
    """Tracks of identical vectors have no axis of variance: PCA's explained variance ratio is 0/0 (NaN, four
    tracks), or rounding noise in their mean (three) made PC 1 'explain 100%' and the points spread over the whole
    map. Every point is at the centre and neither axis explains any variance, as for a collection of two tracks."""
    store = FeatureStore(tmp_path / "store")
    info = DspModel().info
    run = store.ensure_run(run_key(info, WindowPolicy()))
    layers = [np.linspace(0.1, 1.7, d, dtype=np.float32) for d in info.layer_dims]  # one vector, every track
    for i in range(n):
        store.upsert_track(tmp_path / f"{i}.flac", f"h{i}", 1, 0.0, {"duration": 4.0},
                           {"artist": f"A{i}", "album": None, "title": f"t{i}", "genre": None, "composer": None})
        store.write_vectors(run, [TrackVectors(f"h{i}", layers, [v[None] for v in layers], [0.0])])
    store.close()
    with TestClient(create_app(tmp_path / "store"), base_url="http://127.0.0.1") as c:
        for params in ({}, {"layer": info.layer_names[0]}):
            answer = c.get("/api/map", params=params)
            assert answer.status_code == 200, answer.text
            data = answer.json()
            assert data["explained_variance"] == [0.0, 0.0] and len(data["points"]) == n
            assert all((p["x"], p["y"]) == (0.0, 0.0) for p in data["points"])


def test_an_upload_s_media_type_is_read_in_any_case(client: TestClient, uploads_dir: Path) -> None:
    """Media types are case-insensitive (RFC 9110 §8.3.1): an upload sent as 'Multipart/Form-Data' was refused 415,
    'send the audio file as multipart/form-data'."""
    t = np.arange(3 * SR) / SR
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * 262 * t)).astype(np.float32), SR, format="WAV")
    body, ctype = _multipart("tone.wav", buffer.getvalue(), "audio/wav")
    boundary = ctype.split("; boundary=")[1]  # a boundary is case-sensitive: kept as it is
    for written in (f"Multipart/Form-Data; boundary={boundary}", f"MULTIPART/FORM-DATA; BOUNDARY={boundary}"):
        answer = client.post("/api/similar/upload", params={"k": 2}, content=body, headers={"content-type": written})
        assert answer.status_code == 200, (written, answer.text)
        assert answer.json()["query"]["file"] == "tone.wav" and len(answer.json()["results"]) == 2
    other = client.post("/api/similar/upload", content=body,
                        headers={"content-type": f"multipart/form-datax; boundary={boundary}"})
    assert other.status_code == 415, other.text  # another media type, though it starts as this one
    assert _uploads_left(uploads_dir) == set()


def test_cli_serve_port_out_of_range_is_said_as_the_other_commands_say_it(tmp_path: Path) -> None:
    """`mess serve --port 70000` was typer's usage error ("Invalid value for '--port': 70000 is not in the range
    0<=x<=65535.", exit 2) where `mess mpd` and `mess extract --engine ray` say 'the port is out of range (1-65535)'.
    Now it is the same words, with the range a server may bind (0: a port the system picks), before anything else."""
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    for port in ("70000", "65536"):
        out = CliRunner().invoke(app, ["serve", "--port", port, "--store", str(tmp_path / "none")],
                                 env={"COLUMNS": "200"})
        assert out.exit_code == 1, out.output
        assert out.output == f"error: cannot listen at 127.0.0.1:{port}: the port is out of range (0-65535)\n"
