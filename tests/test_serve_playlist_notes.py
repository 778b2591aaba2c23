"""The API's playlists say what the CLI's say: tracks whose files are gone (`missing`, the note), and radio's blend."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_playlist_files import _flac

from mess.audio.discover import find_audio
from mess.audio.windows import WindowPolicy
from mess.extract.pipeline import extract
from mess.models.dsp import DspModel
from mess.playlists.radio import radio
from mess.search.query import collection_query
from mess.serve.app import create_app
from mess.store import FeatureStore

GONE = 2  # index of the file deleted after extraction


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 tagged FLACs (4 artists) extracted with the dsp model, then file 2 deleted."""
    root = tmp_path_factory.mktemp("notes")
    files = [_flac(root / "music" / f"{i}.flac", 3 * i, artist=f"Artist {i % 4}", title=f"Song {i}")
             for i in range(8)]
    with closing(FeatureStore(root / "store")) as store:
        extract(store, find_audio([root / "music"]), DspModel(), WindowPolicy())
    files[GONE].unlink()
    return root


@pytest.fixture(scope="module")
def client(collection: Path) -> Iterator[TestClient]:
    with TestClient(create_app(collection / "store"), base_url="http://127.0.0.1") as c:
        yield c


@pytest.fixture(scope="module")
def store(collection: Path) -> Iterator[FeatureStore]:
    with closing(FeatureStore(collection / "store", readonly=True)) as fs:
        yield fs


def _id(store: FeatureStore, name: str) -> int:
    return next(t.id for t in store.tracks() if Path(t.path).name == name)


def test_radio_and_path_name_the_tracks_whose_files_are_gone(client: TestClient, store: FeatureStore,
                                                             collection: Path) -> None:
    """The API answered a track deleted since extraction like any other (its audio URL then 404s); now `missing`
    lists its id and the note names its file as the CLI's does (file name only: no path leaves the server)."""
    gone, first, last = _id(store, f"{GONE}.flac"), _id(store, "0.flac"), _id(store, "7.flac")
    for url, params in (("/api/playlists/radio", {"seed": first, "n": 7}),
                        ("/api/playlists/path", {"start": first, "end": last, "n": 7})):
        answer = client.get(url, params=params).json()
        assert gone in [t["id"] for t in answer["tracks"]], answer
        assert answer["missing"] == [gone], answer
        assert f"1 track is no longer on disk ({GONE}.flac); `mess extract --prune FOLDER`" in answer["note"], answer
        assert str(collection) not in answer["note"]
    kept = client.get("/api/playlists/radio", params={"seed": gone, "n": 1}).json()
    assert kept["missing"] == [] and kept["note"] is None, kept  # the seed is no pick: nothing to say


def test_radio_takes_the_clis_blend(client: TestClient, store: FeatureStore) -> None:
    """`blend=turns` was ignored (the seeds never took turns); now the API answers as the library and the CLI's
    `--blend turns` do, and an unknown blend is a 400 in the CLI's words."""
    run, ids = store.run("dsp"), [t.id for t in store.tracks()]
    differ = 0
    for seeds in itertools.combinations(ids, 2):  # every pair: ids follow decoding order, which varies by run
        queries = [collection_query(store, i) for i in seeds]
        answers = {}
        for blend in ("nearest", "turns"):
            got = client.get("/api/playlists/radio", params={"seed": list(seeds), "n": 5, "blend": blend}).json()
            answers[blend] = [t["id"] for t in got["tracks"]]
            assert answers[blend] == [t.id for t in radio(store, run, queries, 5, blend=blend).tracks], blend
        differ += answers["nearest"] != answers["turns"]
    assert differ, "no seeds whose blends differ: the test proves nothing"
    bad = client.get("/api/playlists/radio", params={"seed": ids[0], "blend": "mix"})
    assert bad.status_code == 400 and bad.json() == {"detail": "unknown blend 'mix'; use nearest or turns"}


def test_openapi_documents_missing_and_blend(client: TestClient) -> None:
    """The schema a client reads names the new field and parameter."""
    paths = client.get("/openapi.json").json()["paths"]
    radio_doc, path_doc = paths["/api/playlists/radio"]["get"], paths["/api/playlists/path"]["get"]
    assert "``missing``" in radio_doc["description"] and "``missing``" in path_doc["description"]
    blend = next(p for p in radio_doc["parameters"] if p["name"] == "blend")
    assert blend["schema"]["default"] == "nearest" and "nearest or turns" in blend["description"]
