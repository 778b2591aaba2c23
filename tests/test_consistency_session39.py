"""Every read of an answer sees one catalog state, though another writer commits between its reads: the track list
and its version token, the track list and the vectors (`mess similar`, the server's similar)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import mutagen.flac
import numpy as np
import pytest
import soundfile as sf
import test_serve_api as api
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from mess.audio.discover import find_audio
from mess.audio.windows import WindowPolicy
from mess.cli import search as cli_search
from mess.cli.artists import register
from mess.cli.search import register as register_search
from mess.extract.pipeline import extract
from mess.models.dsp import DspModel
from mess.search.evaluate import evaluate
from mess.search.query import TrackQuery, collection_query, similar_tracks
from mess.search.vectors import VectorSet, VectorSpec, load_vectors, read_vectors
from mess.serve import routes_search
from mess.serve.app import create_app
from mess.store import FeatureStore, Run, TrackList

serve_collection = api.serve_collection  # the session's store (3 artists x 4 tagged tracks, dsp), made once per run


@pytest.fixture(scope="module")
def own_music(serve_collection: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of its own (ROOT/store) over a copy of the session's 12 files (ROOT/music), extracted with dsp."""
    root = tmp_path_factory.mktemp("consistency")
    shutil.copytree(serve_collection.parent / "music", root / "music")
    with closing(FeatureStore(root / "store")) as store:
        extract(store, find_audio([root / "music"]), DspModel(), WindowPolicy(), workers=1)
    return root


def _once_after(store: FeatureStore | type[FeatureStore], name: str, then: Callable[[], None],
                monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``then`` once, right after the first call of ``store.<name>`` (of any store's, given the class): the moment
    another writer commits."""
    original = getattr(store, name)

    def hooked(*args: object, **kwargs: object) -> object:
        out = original(*args, **kwargs)
        monkeypatch.setattr(store, name, original)
        then()
        return out

    monkeypatch.setattr(store, name, hooked)


def _change_in_place(root: Path, name: str, untagged: bool = False) -> None:
    """Another writer (a store handle of its own) re-extracts ``name`` after its audio changed in place: its track
    keeps its id, with another content hash and another vector (and no tags, ``untagged``: no artist or title)."""
    song = root / "music" / name
    tags = dict(mutagen.flac.FLAC(song).tags or {})
    audio, rate = sf.read(song)
    sf.write(song, np.roll(audio, len(audio) // 3) * 0.5, rate)
    if not untagged:
        flac = mutagen.flac.FLAC(song)
        flac.update(tags)
        flac.save()
    with closing(FeatureStore(root / "store")) as writer:
        extract(writer, [song], DspModel(), WindowPolicy(), workers=1)


def _untagged(root: Path, name: str) -> Callable[[], None]:
    """:func:`_change_in_place` of ``name`` that leaves it without tags, to run later."""
    return lambda: _change_in_place(root, name, untagged=True)


def _pairs(vs: VectorSet) -> dict[int, tuple[str, bytes]]:
    """Track id -> (content hash, raw vector) of a vector set."""
    return {int(i): (str(h), vs.raw[r].tobytes()) for r, (i, h) in enumerate(zip(vs.ids, vs.hashes, strict=True))}


def _fresh_pairs(root: Path) -> dict[int, tuple[str, bytes]]:
    with closing(FeatureStore(root / "store", readonly=True)) as store:
        return _pairs(read_vectors(store, store.run("dsp"), VectorSpec.from_options(layer="0")))


def test_a_track_list_is_labelled_with_the_version_it_was_read_at(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`tracks()` read its version token, then its rows in another statement: a second writer committing between them
    gave the new rows labelled with the old version, the key every value derived from them is memoised under."""
    with closing(FeatureStore(tmp_path / "store")) as writer, closing(FeatureStore(tmp_path / "store")) as store:
        writer.upsert_track(tmp_path / "a.wav", "a" * 40, 10, 1.0, {"duration": 2.0}, {})
        before = [t.path for t in writer.tracks()]  # not read by ``store``: its memo holds no list yet
        version_before = store.version()

        def commit() -> None:
            writer.upsert_track(tmp_path / "b.wav", "b" * 40, 10, 1.0, {"duration": 2.0}, {})

        _once_after(store, "version", commit, monkeypatch)
        listed = store.tracks()
        after = [t.path for t in store.tracks()]
        assert len(after) == len(before) + 1  # the writer committed
        assert isinstance(listed, TrackList)
        assert (listed.version, [t.path for t in listed]) in ((version_before, before), (store.version(), after))


@pytest.mark.parametrize("read", [read_vectors, load_vectors], ids=["read_vectors", "load_vectors"])
def test_a_vector_set_is_read_from_one_state(own_music: Path, read: Callable[..., VectorSet],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A file changed in place and re-extracted between the vector set's read of the track list and its read of the
    vectors (`mess similar` beside `mess extract`): the set held the track's old content hash with its new vector."""
    name = f"Sine_Choir/take{1 if read is read_vectors else 2}.flac"
    before = _fresh_pairs(own_music)
    with closing(FeatureStore(own_music / "store", readonly=True)) as store:
        _once_after(store, "tracks", lambda: _change_in_place(own_music, name), monkeypatch)
        during = _pairs(read(store, store.run("dsp"), VectorSpec.from_options(layer="0")))
    after = _fresh_pairs(own_music)
    changed = [i for i in before if before[i] != after[i]]
    assert len(changed) == 1 and before[changed[0]][0] != after[changed[0]][0]  # one track: new hash, new vector
    assert during in (before, after)


def test_similar_tracks_reads_one_state(own_music: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`mess similar` (and the server's similar) read the track list, then the vectors: a change in place committed
    between them answered the changed track with its old content hash and its new vector's score."""
    def similar(store: FeatureStore) -> list[tuple[int, str, float]]:
        run = store.run("dsp")
        results = similar_tracks(store, run, collection_query(store, seed), 11, layer="0", ranking="plain")
        return [(r.track.id, r.track.content_hash, round(r.score, 5)) for r in results]

    def fresh() -> list[tuple[int, str, float]]:
        with closing(FeatureStore(own_music / "store", readonly=True)) as store:
            return similar(store)

    with closing(FeatureStore(own_music / "store", readonly=True)) as store:
        seed = next(t.id for t in store.tracks() if t.path.endswith("Sine_Choir/take0.flac"))
        before = fresh()
        _once_after(store, "tracks", lambda: _change_in_place(own_music, "Sine_Choir/take3.flac"), monkeypatch)
        during = similar(store)
        after = fresh()
        assert before != after
        assert during in (before, after), (during, before, after)


def test_the_api_similar_artists_reads_one_state(own_music: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`GET /api/artists/similar` read the track list (the artists), then the layer (their vectors): a file rewritten
    (new audio, no tags) between them counted in its old artist with its new vector."""
    def answer(client: TestClient) -> list[tuple[str, float | None]]:
        got = client.get("/api/artists/similar", params={"name": "Sine Choir", "layer": "0", "model": "dsp"})
        assert got.status_code == 200, got.text
        return [(r["artist"], r["score"]) for r in got.json()["results"]]

    _api_reads_one_state(own_music, answer, "Saw_Machine/take0.flac", monkeypatch)


def test_mess_artists_similar_reads_one_state(own_music: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`mess artists similar` (every `mess artists` command) read the artists' tracks, then their vectors: a file
    rewritten between them counted in its old artist with its new vector."""
    app = typer.Typer()
    register(app)

    def answer() -> list[tuple[str, float]]:
        done = CliRunner().invoke(app, ["artists", "similar", "Sine Choir", "--layer", "0", "--model", "dsp",
                                        "--json", "--store", str(own_music / "store")])
        assert done.exit_code == 0, done.output
        return [(r["artist"], r["score"]) for r in json.loads(done.stdout)["results"]]

    before = answer()
    _once_after(FeatureStore, "tracks", _untagged(own_music, "Noise_Ensemble/take0.flac"), monkeypatch)
    during = answer()
    after = answer()
    assert before != after
    assert during in (before, after), (during, before, after)


def test_the_api_similar_reads_the_query_track_and_its_neighbours_from_one_state(
        own_music: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`GET /api/tracks/{id}/similar` read the query track, then searched in a later state: the query's own file
    rewritten and re-extracted between them made a valid request a 400 ("not track N ... extracted again since")."""
    def answer(client: TestClient) -> tuple[int, object]:
        got = client.get(f"/api/tracks/{seed}/similar", params={"layer": "0", "model": "dsp", "ranking": "plain"})
        body = got.json()
        return got.status_code, (body.get("query"), body.get("results")) if got.status_code == 200 else body

    with closing(FeatureStore(own_music / "store", readonly=True)) as store:
        seed = next(t.id for t in store.tracks() if t.path.endswith("Noise_Ensemble/take1.flac"))
    with (TestClient(base_url="http://127.0.0.1", app=create_app(own_music / "store")) as other,
          TestClient(base_url="http://127.0.0.1", app=create_app(own_music / "store")) as client):
        before = answer(other)
        query = routes_search.collection_query

        def hooked(store: FeatureStore, ref: int) -> TrackQuery:
            monkeypatch.setattr(routes_search, "collection_query", query)
            out = query(store, ref)
            _change_in_place(own_music, "Noise_Ensemble/take1.flac")
            return out

        monkeypatch.setattr(routes_search, "collection_query", hooked)
        during = answer(client)
        after = answer(other)
    assert before[0] == after[0] == 200 and before != after
    assert during in (before, after), (during, before, after)


def test_mess_similar_by_file_reads_the_query_and_its_neighbours_from_one_state(
        own_music: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`mess similar FILE` (or ID) resolved its query in one state and searched in a later one: the query's file
    rewritten and re-extracted between them failed the command ("not track N ... extracted again since")."""
    app = typer.Typer()
    register_search(app)
    song = own_music / "music" / "Saw_Machine" / "take1.flac"

    def answer() -> tuple[int, object]:
        done = CliRunner().invoke(app, ["similar", str(song), "--layer", "0", "--model", "dsp", "--ranking", "plain",
                                        "--json", "--store", str(own_music / "store")])
        if done.exit_code:
            return done.exit_code, done.output
        out = json.loads(done.stdout)
        return 0, (out["query"], [(r["id"], r["score"]) for r in out["results"]])

    before = answer()
    resolve = cli_search.resolved_query

    def hooked(fs: FeatureStore, query: str, run: Run) -> TrackQuery:
        monkeypatch.setattr(cli_search, "resolved_query", resolve)
        out = resolve(fs, query, run)
        _change_in_place(own_music, "Saw_Machine/take1.flac")
        return out

    monkeypatch.setattr(cli_search, "resolved_query", hooked)
    during = answer()
    after = answer()
    assert before[0] == after[0] == 0 and before != after
    assert during in (before, after), (during, before, after)


def test_the_api_map_reads_its_points_and_their_tracks_from_one_state(
        own_music: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`GET /api/map` read the vectors (the points), then the track list (what each point names): a file rewritten
    (new audio, no tags) between them named its old position with its new title."""
    def answer(client: TestClient) -> list[tuple[int, str, float, float]]:
        got = client.get("/api/map", params={"layer": "0", "model": "dsp"})
        assert got.status_code == 200, got.text
        return [(p["id"], p["title"], p["x"], p["y"]) for p in got.json()["points"]]

    _api_reads_one_state(own_music, answer, "Noise_Ensemble/take2.flac", monkeypatch)


def test_an_upload_is_answered_from_one_state(own_music: Path, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    """`POST /api/similar/upload` of a collection file's copy matched it to its track (external_query), then searched
    in a later state: that track's file rewritten and re-extracted between them made a valid upload a 400."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the server's upload files: this test's own folder
    song = own_music / "music" / "Saw_Machine" / "take2.flac"
    upload = song.read_bytes()

    def answer(client: TestClient) -> tuple[int, object]:
        got = client.post("/api/similar/upload", params={"k": 4, "layer": "0", "model": "dsp", "ranking": "plain"},
                          files={"file": ("copy.flac", upload, "audio/flac")})
        body = got.json()
        return got.status_code, ((body["query"]["id"], [(r["id"], r["score"]) for r in body["results"]])
                                 if got.status_code == 200 else body)

    with TestClient(base_url="http://127.0.0.1", app=create_app(own_music / "store")) as client:
        before = answer(client)
        query = routes_search.external_query
        calls = []

        def hooked(*args: object, **kwargs: object) -> TrackQuery:
            out = query(*args, **kwargs)  # type: ignore[arg-type]
            calls.append(out)
            if len(calls) == 2:  # the search's (the ranking's preparation resolves it first)
                monkeypatch.setattr(routes_search, "external_query", query)
                _change_in_place(own_music, "Saw_Machine/take2.flac")
            return out

        monkeypatch.setattr(routes_search, "external_query", hooked)
        during = answer(client)
    assert before[0] == 200
    assert during == before, (during, before)  # the upload's content is the track's as it was


def test_an_evaluation_reads_one_state(own_music: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`mess evaluate` read the labelled track list, then each vector set: a file rewritten (new audio, no tags)
    between them was scored with its old label and its new vector."""
    def scores(store: FeatureStore) -> list[tuple[str, float]]:
        found = evaluate(store, store.run("dsp"), "artist", 3, ranking="plain")
        return [(s.name, round(s.scores.map, 6)) for s in found.sets]

    def fresh() -> list[tuple[str, float]]:
        with closing(FeatureStore(own_music / "store", readonly=True)) as store:
            return scores(store)

    before = fresh()
    with closing(FeatureStore(own_music / "store", readonly=True)) as store:
        _once_after(store, "tracks", _untagged(own_music, "Noise_Ensemble/take3.flac"), monkeypatch)
        during = scores(store)
    after = fresh()
    assert before != after
    assert during in (before, after), (during, before, after)


def _api_reads_one_state(own_music: Path, answer: Callable[[TestClient], object], rewritten: str,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    """``answer`` from a server while ``rewritten`` (under own_music) is rewritten without tags and extracted again
    right after the server's first ``tracks()`` read: the old answer or the new one (a server of its own, ``other``,
    gives both: ``client`` memoises nothing of the state before), never a mix."""
    with (TestClient(base_url="http://127.0.0.1", app=create_app(own_music / "store")) as other,
          TestClient(base_url="http://127.0.0.1", app=create_app(own_music / "store")) as client):
        before = answer(other)
        _once_after(FeatureStore, "tracks", _untagged(own_music, rewritten), monkeypatch)
        during = answer(client)
        after = answer(other)
    assert before != after
    assert during in (before, after), (during, before, after)
