"""A music app built on the server, as its builder meets it: answers that keep the server's folders to itself, a
schema that lists what the routes send, and the app's own playlists read by a player."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import test_serve_api as api
from fastapi.testclient import TestClient

from conftest import mess_here
from mess.audio.discover import find_audio
from mess.audio.windows import WindowPolicy
from mess.extract.pipeline import extract
from mess.extract.runs import run_key
from mess.models.dsp import DspModel
from mess.playlists.clusters import cluster_name
from mess.serve.app import create_app
from mess.store import FeatureStore, RunKey, Track

serve_collection = api.serve_collection  # the session's store (3 artists x 4 tagged tracks, dsp), made once per run


@pytest.fixture(scope="module")
def shelf(serve_collection: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of three of the session's tracks: ``music/older`` (two) extracted with dsp, ``music/newer`` (one)
    with dsp under another window policy, a second run; dsp's current run (the one covering most tracks) has no
    vectors for the newer track, as while an extract of its folder has not reached it."""
    root = tmp_path_factory.mktemp("shelf")
    music = serve_collection.parent / "music"
    for folder, takes in (("older", ("Sine_Choir/take0.flac", "Saw_Machine/take1.flac")),
                          ("newer", ("Noise_Ensemble/take2.flac",))):
        (root / "music" / folder).mkdir(parents=True)
        for take in takes:
            shutil.copy(music / take, root / "music" / folder / take.replace("/", "-"))
    with closing(FeatureStore(root / "store")) as store:
        extract(store, find_audio([root / "music" / "older"]), DspModel(), WindowPolicy())
        extract(store, find_audio([root / "music" / "newer"]), DspModel(), WindowPolicy(max_windows=2))
    return root


@pytest.fixture(scope="module")
def shelf_app(shelf: Path) -> Iterator[TestClient]:
    with TestClient(create_app(shelf / "store"), base_url="http://127.0.0.1:8000") as client:
        yield client


def _newer_id(client: TestClient) -> int:
    tracks = client.get("/api/tracks", params={"model": "any"}).json()["items"]
    return next(t["id"] for t in tracks if t["file"].startswith("Noise_Ensemble"))


def test_a_track_not_yet_embedded_is_refused_without_the_servers_folders(shelf: Path, shelf_app: TestClient) -> None:
    """The refusal says what to run, naming the track's folder by its name alone: the path of the music on the
    server stays there, as it does in every other answer (it gave `mess extract /srv/.../newer --model dsp`)."""
    newer = _newer_id(shelf_app)
    for path, params in ((f"/api/tracks/{newer}/similar", {"model": "dsp"}),
                         ("/api/playlists/radio", {"seed": newer, "model": "dsp"})):
        answer = shelf_app.get(path, params=params)
        assert answer.status_code == 400, answer.text
        detail = answer.json()["detail"]
        assert "has no vectors of dsp yet" in detail and "`mess extract newer --model dsp` first" in detail, detail
        assert str(shelf) not in detail and "/" not in detail.split("`mess extract ")[1], detail


def _older_ids(client: TestClient) -> list[int]:
    return [t["id"] for t in client.get("/api/tracks", params={"model": "dsp"}).json()["items"]]


def test_the_schema_lists_the_media_type_of_every_answer(shelf_app: TestClient) -> None:
    """A client generated from /openapi.json reads each answer by the media types its route lists: the playlists'
    M3U8 and XSPF downloads were sent but not listed (JSON alone, with an empty schema)."""
    first, second = _older_ids(shelf_app)
    schema = shelf_app.get("/openapi.json").json()["paths"]
    asked = [("/api/health", "/api/health", {}), ("/api/tracks", "/api/tracks", {}),
             ("/api/tracks/{track_id}", f"/api/tracks/{first}", {}),
             ("/api/tracks/{track_id}/audio", f"/api/tracks/{first}/audio", {}),
             ("/api/tracks/{track_id}/similar", f"/api/tracks/{first}/similar", {}),
             ("/api/map", "/api/map", {})]
    asked += [("/api/playlists/radio", "/api/playlists/radio", {"seed": first, "n": 1, "format": fmt})
              for fmt in ("json", "m3u8", "xspf")]
    asked += [("/api/playlists/path", "/api/playlists/path", {"start": first, "end": second, "n": 2, "format": fmt})
              for fmt in ("json", "m3u8", "xspf")]
    for route, url, params in asked:
        answer = shelf_app.get(url, params=params)
        assert answer.status_code == 200, (url, answer.text)
        media = answer.headers["content-type"].split(";")[0]
        listed = schema[route]["get"]["responses"]["200"]["content"]
        assert media in listed, (url, params, media, sorted(listed))
        if media == "application/json":
            assert listed[media]["schema"].get("type") == "object" and isinstance(answer.json(), dict), (url, params)


def test_a_rebuilt_store_answers_once_its_run_holds_vectors(serve_collection: Path, tmp_path: Path) -> None:
    """`mess extract` into a store moved aside writes its run's row before its first vectors: the server took that
    catalog at once and answered an empty collection ('ok', 0 tracks listed, an empty map) until the first batch
    was committed, where the docs say the old catalog answers until the new one holds vectors."""
    copy = tmp_path / "store"
    shutil.copytree(serve_collection, copy)
    with TestClient(create_app(copy), base_url="http://127.0.0.1:8000") as client:
        assert client.get("/api/tracks").json()["total"] == 12
        shutil.move(copy, tmp_path / "aside")
        with closing(FeatureStore(copy)) as fresh:
            fresh.ensure_run(run_key(DspModel().info, WindowPolicy()))  # the rebuild's run, no vectors yet
            health = client.get("/api/health").json()
            assert health["status"] == "rebuilding" and health["tracks"] == 12, health
            assert client.get("/api/tracks").json()["total"] == 12
            waiting = client.get("/api/map")
            assert waiting.status_code == 503 and waiting.headers["retry-after"] == "10", waiting.text
            music = serve_collection.parent / "music"
            extract(fresh, find_audio([music / "Sine_Choir"]), DspModel(), WindowPolicy())
            health = client.get("/api/health").json()
            assert health["status"] == "ok" and health["tracks"] == 4, health
            assert client.get("/api/tracks").json()["total"] == 4
            assert len(client.get("/api/map").json()["points"]) == 4


def _track(tid: int, artist: str | None = None) -> Track:
    return Track(id=tid, path=f"/m/{tid}.ogg", content_hash=f"h{tid}", duration=60.0, artist=artist, album=None,
                 title=None, genre=None, composer=None)


def test_a_cluster_is_named_after_its_artists_only_when_they_made_all_of_it() -> None:
    """A game soundtrack's cluster of eight tracks, one of them tagged 'Luke.RUSTLTD', was written as
    02-luke-rustltd.m3u8, named as if all eight were his; the untagged seven are others too."""
    one_tagged = (_track(1, "Luke.RUSTLTD"), *(_track(i) for i in range(2, 9)))
    assert cluster_name(one_tagged) == "Luke.RUSTLTD and others"
    two_and_untagged = (_track(1, "A"), _track(2, "A"), _track(3, "B"), _track(4))
    assert cluster_name(two_and_untagged) == "A & B and others"
    assert cluster_name(two_and_untagged[:3]) == "A & B"  # every track theirs
    assert cluster_name((_track(5), _track(6))) == "cluster"


def test_a_better_model_whose_extract_has_only_begun_is_not_the_default_yet(serve_collection: Path,
                                                                           tmp_path: Path) -> None:
    """`mess extract` of a better model (musicnn) beside a server of dsp vectors writes its run's row first: requests
    and commands naming no model went to that run at once, and for the minutes before its first batch the page
    showed no track and `mess similar 1` said "no vectors for musicnn in this store yet; run `mess extract` first"."""
    copy = tmp_path / "store"
    shutil.copytree(serve_collection, copy)
    with TestClient(create_app(copy), base_url="http://127.0.0.1:8000") as client:
        with closing(FeatureStore(copy)) as store:
            begun = store.ensure_run(RunKey("musicnn", "begun", WindowPolicy().to_json(), 16000, ("a",), (4,)))
            assert [r.model for r in store.runs()] == ["dsp", "musicnn"] and not store.tracks(begun)
            assert store.run().model == "dsp"  # what every command naming no model uses
        health = client.get("/api/health").json()
        assert health["default_model"] == "dsp" and client.get("/api/runs").json()["default_model"] == "dsp"
        assert client.get("/api/tracks").json()["total"] == 12
        assert client.get("/api/tracks/1/similar", params={"k": 2}).json()["model"] == "dsp"
    cli = mess_here("similar", "1", "-k", "2", "--json", "--store", str(copy))
    assert cli.returncode == 0 and json.loads(cli.stdout)["model"] == "dsp", cli.stderr


def test_check_names_a_default_model_whose_run_holds_no_vectors_yet(serve_collection: Path, tmp_path: Path) -> None:
    """Commands naming no model refuse a default-model whose run holds no vectors yet (the run `mess extract` has just
    begun); `mess check` still found that setting usable, since it looked for a run alone."""
    copy = tmp_path / "store"
    shutil.copytree(serve_collection, copy)
    with closing(FeatureStore(copy)) as store:
        store.ensure_run(RunKey("musicnn", "begun", WindowPolicy().to_json(), 16000, ("a",), (4,)))
    (copy / "config.json").write_text(json.dumps({"default-model": "musicnn"}))
    refused = mess_here("similar", "1", "--store", str(copy))
    assert refused.returncode != 0 and "default-model" in refused.stderr, refused.stderr
    checked = mess_here("check", "--json", "--store", str(copy))
    problems = json.loads(checked.stdout)["problems"]
    config = [p["message"] for p in problems if p["kind"] == "config"]
    assert len(config) == 1 and "musicnn" in config[0], problems


def test_a_playlist_to_stdout_goes_into_the_file_it_is_redirected_to(shelf: Path, tmp_path: Path) -> None:
    """`mess playlist radio ID -o - >> mix.m3u8` replaced mix.m3u8 with the new playlist (its earlier lines lost), and
    in `(echo a; mess ... -o -; echo b) > f` both echoes were lost: /dev/stdout, a regular file there, was replaced by
    a renamed new file rather than written into. It is written at stdout's place now, as `>>` and `>` mean."""
    radio = ["playlist", "radio", "1", "-n", "1", "--store", str(shelf / "store"), "-o"]
    assert mess_here(*radio, str(tmp_path / "alone.m3u8")).returncode == 0  # outside the music: absolute entries
    expected = (tmp_path / "alone.m3u8").read_text()
    mix = tmp_path / "mix.m3u8"
    mix.write_text("#EXTM3U\nearlier.ogg\n")
    with mix.open("a") as appended:
        done = subprocess.run([sys.executable, "-m", "mess.cli", *radio, "-"], stdout=appended, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert mix.read_text() == "#EXTM3U\nearlier.ogg\n" + expected


def test_a_one_track_playlist_is_counted_as_one_track(shelf: Path, tmp_path: Path) -> None:
    """`mess playlist radio 1 -n 1 -o FILE` said 'wrote 1 tracks to FILE'."""
    done = mess_here("playlist", "radio", "1", "-n", "1", "--store", str(shelf / "store"), "-o",
                     str(tmp_path / "r.m3u8"))
    entries = [line for line in (tmp_path / "r.m3u8").read_text().splitlines() if not line.startswith("#")]
    assert done.returncode == 0 and len(entries) == 1, done.stderr
    assert f"wrote 1 track to {tmp_path / 'r.m3u8'}" in " ".join(done.stderr.split()), done.stderr


def test_a_radio_takes_at_most_a_hundred_seeds(shelf_app: TestClient) -> None:
    """Each seed is compared with every track under the store lock, and the seeds were not capped: 14,000 copies of
    one id in a 98 KB URL held the server 2.4 s on 33 tracks (seeds x tracks grows with the collection). At most 100
    now, said in the API's words; 100 are taken."""
    first = _older_ids(shelf_app)[0]
    schema = shelf_app.get("/openapi.json").json()["paths"]["/api/playlists/radio"]["get"]["parameters"]
    [seeds] = [p["schema"] for p in schema if p["name"] == "seed"]
    assert seeds["maxItems"] == 100 and "x-cap" in seeds
    refused = shelf_app.get("/api/playlists/radio", params={"seed": [first] * 101, "n": 1})
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"] == ("seed is given 101 times; at most 100 (the server's cap, to bound each "
                                        "request's work; the command line has none)")
    taken = shelf_app.get("/api/playlists/radio", params={"seed": [first] * 100, "n": 1})
    assert taken.status_code == 200 and len(taken.json()["tracks"]) == 1, taken.text


def test_the_playlist_json_of_the_cli_names_the_model_and_a_stale_aspect_map_as_the_api(
        serve_collection: Path) -> None:
    """`mess playlist radio --json` had no `model` nor `stale_aspect_map`, which GET /api/playlists/radio gives (the
    stale map only as a note on stderr): a script reading either got two shapes of one playlist."""
    with TestClient(create_app(serve_collection), base_url="http://127.0.0.1:8000") as client:
        api_answer = client.get("/api/playlists/radio", params={"seed": 1, "n": 3, "aspect": "timbre"}).json()
    cli = mess_here("playlist", "radio", "1", "-n", "3", "--aspect", "timbre", "--json", "--store",
                    str(serve_collection))
    assert cli.returncode == 0, cli.stderr
    answer = json.loads(cli.stdout)
    assert api_answer["stale_aspect_map"] and api_answer["stale_aspect_map"] in " ".join(cli.stderr.split())
    for key in ("model", "stale_aspect_map"):
        assert key in answer and answer[key] == api_answer[key], (key, answer.get(key), api_answer[key])
    assert [t["id"] for t in answer["tracks"]] == [t["id"] for t in api_answer["tracks"]]
