"""Fast in-process tests written while mutation-testing modules never mutated before (notes/mutation_session32.md):
the search's count check (mess.search.counts), the collection routes of the server over a small synthetic store
(mess.serve.routes_tracks), re-ranking (mess.search.rerank) and the extraction run's summary (mess.extract.pipeline).

Expected answers come from the fixtures' own geometry (which file has which tags, size, content and vector), numpy
(PCA by SVD, dense k-reciprocal re-ranking), ``unicodedata`` and ``os``."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from processes import decoders
from test_search_rerank import clusters
from test_search_rerank_outside import collection_scores, k_reciprocal, scores_with_query

from mess.audio.discover import content_hash
from mess.audio.windows import WindowPolicy
from mess.constants import file_stamp
from mess.extract import pipeline
from mess.extract.pipeline import ExtractInterrupted, ExtractSummary, extract
from mess.models.dsp import DspModel
from mess.search import rerank
from mess.search.counts import whole_count
from mess.search.rerank import build_reranker, copy_first
from mess.serve.app import create_app
from mess.serve.routes_tracks import changed_note
from mess.store import FeatureStore, RunKey, TrackVectors
from mess.store.config import write_setting

# ---------------------------------------------------------------- mess.search.counts


@pytest.mark.parametrize("value", [0, 3, np.int64(7), np.int32(0), np.uint8(200)])
def test_a_whole_count_is_given_back_as_a_python_int(value: object) -> None:
    got = whole_count(value, "k", "tracks", 0)
    assert type(got) is int and got == int(value)  # type: ignore[call-overload]


@pytest.mark.parametrize(("value", "least"), [(True, 0), (False, 0), (np.bool_(True), 0), (2.5, 0), (2.0, 0),
                                              ("3", 0), (None, 0), (-1, 0), (0, 1), (np.int64(-3), -2)])
def test_a_count_that_is_no_whole_number_of_at_least_its_least_is_refused_naming_it(value: object, least: int) -> None:
    with pytest.raises(ValueError) as caught:
        whole_count(value, "expand", "neighbours", least)
    assert str(caught.value) == f"expand must be a whole number of neighbours, {least} or more; got {value!r}"


def test_the_least_count_itself_is_accepted() -> None:
    assert whole_count(1, "k", "results", 1) == 1 and whole_count(-2, "k", "results", -2) == -2


# ---------------------------------------------------------------- mess.serve.routes_tracks over a synthetic store

NFD_ZOE = unicodedata.normalize("NFD", "ZOË KEATING")  # written on macOS: 'E' and a combining diaeresis
# name -> (artist, title, album, genre, composer, vector of model 'synthetic' or None); the clusters of the vectors
# are the map's geometry: two groups far apart along the first axis, spread a little along the second
TRACKS: dict[str, tuple[str | None, str | None, str | None, str | None, str | None, list[float] | None]] = {
    "a.flac": ("Zoë Keating", "Lyric", "Into the Trees", "Classical; Cello", "Zoë Keating", [1.0, 0.3, 0.0]),
    "b.mp3": ("Sigur Rós; Jónsi", "Hoppípolla", "Takk...", "Post-Rock", None, [-1.0, 0.2, 0.05]),
    "c.ogg": (NFD_ZOE, "Escape Artist", "One Cello x 16", "Classical", None, [1.0, -0.2, 0.1]),
    "d.wav": (None, None, None, None, None, None),  # catalogued, no vectors of 'synthetic'
    "e.opus": ("Jónsi", "Go Do", "Go", "Post-Rock; Pop", None, [-1.0, -0.3, 0.0]),
    "f.wv": ("Tiny", "Last", "Takk...", "Folk", None, [-1.0, 0.1, -0.1]),
}


def _synthetic(root: Path) -> tuple[Path, dict[str, int]]:
    """The files of :data:`TRACKS` (bytes of their own) under ``root/music`` and a store ``root/store`` cataloguing
    them with their real size, mtime and stamp; model 'synthetic' holds the vectors given, model 'other' only d.wav's.
    Returns the store folder and each file's track id."""
    music = root / "music"
    music.mkdir()
    store = FeatureStore(root / "store")
    run = store.ensure_run(RunKey("synthetic", "r1", "{}", 16000, ("a",), (3,)))
    other = store.ensure_run(RunKey("other", "r1", "{}", 16000, ("b",), (2,)))
    ids, items = {}, []
    for i, (name, (artist, title, album, genre, composer, vector)) in enumerate(TRACKS.items()):
        path = (music / name).resolve()
        path.write_bytes(f"audio of {name} ".encode() * (10 + i))
        stat = path.stat()
        h = content_hash(path)
        tags = {"artist": artist, "title": title, "album": album, "genre": genre, "composer": composer}
        ids[name] = store.upsert_track(path, h, stat.st_size, stat.st_mtime, {"duration": 30.0 + i}, tags,
                                       stamp=file_stamp(stat))
        if vector is not None:
            v = np.array(vector, dtype=np.float32)
            items.append(TrackVectors(h, [v], [v[None]], [0.0]))
        else:
            w = np.array([1.0, 2.0], dtype=np.float32)
            store.write_vectors(other, [TrackVectors(h, [w], [w[None]], [0.0])])
    store.write_vectors(run, items)
    store.close()
    return root / "store", ids


@pytest.fixture
def synthetic(tmp_path: Path) -> Iterator[tuple[TestClient, Path, dict[str, int]]]:
    """A client of the server over :func:`_synthetic`'s store (default model 'synthetic'), the music folder and the
    track ids by file name: for a test that changes the files."""
    root, ids = _synthetic(tmp_path)
    with TestClient(base_url="http://127.0.0.1", app=create_app(root, "synthetic", max_upload_bytes=1234)) as c:
        yield c, tmp_path / "music", ids


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path, dict[str, int]]]:
    """:func:`synthetic` once for this module's tests that change nothing (a server starts in seconds here)."""
    folder = tmp_path_factory.mktemp("served")
    root, ids = _synthetic(folder)
    with TestClient(base_url="http://127.0.0.1", app=create_app(root, "synthetic", max_upload_bytes=1234)) as c:
        yield c, folder / "music", ids


def _names(page: dict) -> list[str]:
    return [item["file"] for item in page["items"]]


def test_health_counts_every_catalogued_track_and_names_each_model_once(
        served: tuple[TestClient, Path, dict[str, int]]) -> None:
    client, _, _ = served
    assert client.get("/api/health").json() == {"status": "ok", "note": None, "tracks": len(TRACKS),
                                                "models": ["other", "synthetic"], "default_model": "synthetic",
                                                "read_only": True, "max_upload_bytes": 1234}


def test_runs_list_each_run_with_its_layers_tracks_and_whether_it_answers(
        served: tuple[TestClient, Path, dict[str, int]]) -> None:
    client, _, _ = served
    body = client.get("/api/runs").json()
    assert body["default_model"] == "synthetic"
    by_model = {r["model"]: r for r in body["runs"]}
    assert set(by_model) == {"synthetic", "other"}
    mine = by_model["synthetic"]
    assert (mine["layers"], mine["dims"], mine["revision"], mine["tracks"], mine["current"]) == (["a"], [3], "r1", 5,
                                                                                                  True)
    assert (mine["fused"], mine["fused_note"], mine["aspects"]) == (False, None, {})
    assert (by_model["other"]["tracks"], by_model["other"]["current"]) == (1, True)


def test_only_the_run_covering_most_tracks_of_a_model_is_current(tmp_path: Path) -> None:
    root, _ = _synthetic(tmp_path)
    with closing(FeatureStore(root)) as store:  # a second run of 'synthetic' (another revision) with one track's vector
        again = store.ensure_run(RunKey("synthetic", "r2", "{}", 16000, ("a",), (3,)))
        one = store.tracks()[0]
        v = np.ones(3, dtype=np.float32)
        store.write_vectors(again, [TrackVectors(one.content_hash, [v], [v[None]], [0.0])])
    with TestClient(base_url="http://127.0.0.1", app=create_app(root, "synthetic")) as client:
        runs = client.get("/api/runs").json()["runs"]
    current = {(r["revision"], r["tracks"]): r["current"] for r in runs if r["model"] == "synthetic"}
    assert current == {("r1", 5): True, ("r2", 1): False}


def test_health_and_runs_name_the_default_model_the_store_is_set_to_now(tmp_path: Path) -> None:
    """A server started without --model follows `mess config default-model` changed while it runs."""
    root, _ = _synthetic(tmp_path)
    with TestClient(base_url="http://127.0.0.1", app=create_app(root)) as client:
        for model in ("other", "synthetic", "other"):
            write_setting(root, "default-model", model)
            assert client.get("/api/health").json()["default_model"] == model
            assert client.get("/api/runs").json()["default_model"] == model


def test_tracks_are_those_with_vectors_of_the_model_or_every_one_with_any(
        served: tuple[TestClient, Path, dict[str, int]]) -> None:
    client, _, ids = served
    with_vectors = sorted((ids[n], n) for n, t in TRACKS.items() if t[5] is not None)
    page = client.get("/api/tracks").json()
    assert (page["total"], page["offset"], page["limit"]) == (5, 0, 50)
    assert _names(page) == [n for _, n in with_vectors]
    assert _names(client.get("/api/tracks", params={"model": "any"}).json()) == sorted(TRACKS, key=ids.__getitem__)
    assert _names(client.get("/api/tracks", params={"model": "other"}).json()) == ["d.wav"]
    second = client.get("/api/tracks", params={"offset": 1, "limit": 2}).json()
    assert (second["total"], second["offset"], second["limit"], _names(second)) == (5, 1, 2, [n for _, n in
                                                                                             with_vectors[1:3]])
    assert client.get("/api/tracks", params={"offset": 5}).json()["items"] == []
    assert _names(client.get("/api/tracks", params={"offset": 0, "limit": 1}).json()) == [with_vectors[0][1]]
    assert client.get("/api/tracks", params={"limit": 1000}).json()["limit"] == 1000
    for bad in ({"offset": -1}, {"limit": 0}, {"limit": 1001}):
        assert client.get("/api/tracks", params=bad).status_code == 422


def test_tag_filters_fold_case_and_unicode_form_and_match_one_value_of_a_multi_valued_tag(
        served: tuple[TestClient, Path, dict[str, int]]) -> None:
    client, _, _ = served

    def files(**params: str) -> set[str]:
        return set(_names(client.get("/api/tracks", params={"model": "any", **params}).json()))

    assert files(artist="zoë keating") == {"a.flac", "c.ogg"}  # NFC typed, one file's tag NFD and upper case
    assert files(artist=unicodedata.normalize("NFD", "Zoë Keating")) == {"a.flac", "c.ogg"}
    assert files(artist="  Jónsi ") == {"b.mp3", "e.opus"}  # one value of 'Sigur Rós; Jónsi', and a whole tag
    assert files(artist="sigur rós; jónsi") == {"b.mp3"}  # the whole value
    assert files(artist="Sigur") == set()  # values, not substrings
    assert files(genre="pop") == {"e.opus"} and files(genre="cello") == {"a.flac"}
    assert files(composer="ZOË KEATING") == {"a.flac"}
    assert files(album="takk...") == {"b.mp3", "f.wv"}
    assert files(album="Takk") == set()  # the album is matched whole
    assert files(album="Go; Pop") == set()
    assert files(artist="Jónsi", genre="Pop") == {"e.opus"}  # every filter given
    assert files(artist="Jónsi", album="Go", genre="Folk") == set()


def test_blank_filters_as_an_empty_form_sends_them_are_filters_left_out(
        served: tuple[TestClient, Path, dict[str, int]]) -> None:
    """``?artist=&album=&genre=&composer=&q=`` (a form's empty fields) listed no track, or with model=any only the
    untagged one, while ``?model=`` and ``?layer=`` were taken as left out: every blank parameter is."""
    client, _, ids = served
    everything = _names(client.get("/api/tracks").json())
    blank = {"artist": "", "album": " ", "genre": "", "composer": "\t", "q": ""}
    assert _names(client.get("/api/tracks", params=blank).json()) == everything
    assert _names(client.get("/api/tracks", params={**blank, "model": "any"}).json()) == sorted(TRACKS,
                                                                                               key=ids.__getitem__)
    assert _names(client.get("/api/tracks", params={**blank, "genre": "folk"}).json()) == ["f.wv"]


def test_words_must_all_occur_in_the_name_album_genre_composer_or_file(
        served: tuple[TestClient, Path, dict[str, int]]) -> None:
    client, _, _ = served

    def files(q: str) -> set[str]:
        return set(_names(client.get("/api/tracks", params={"model": "any", "q": q}).json()))

    assert files("KEATING lyric") == {"a.flac"}
    assert files("trees") == {"a.flac"}  # the album
    assert files("post-rock") == {"b.mp3", "e.opus"}  # the genre
    assert files("zoë classical") == {"a.flac", "c.ogg"}  # NFD artist, folded
    assert files("d.wav") == {"d.wav"}  # the file name of an untagged track
    assert files("mp3") == {"b.mp3"}
    assert files("lyric escape") == set()  # both words in one track's text
    assert files("") == set(TRACKS)


def test_one_track_lists_the_models_with_its_vectors(served: tuple[TestClient, Path, dict[str, int]]) -> None:
    client, _, ids = served
    one = client.get(f"/api/tracks/{ids['c.ogg']}").json()
    assert (one["id"], one["file"], one["title"], one["duration"], one["models"]) == (ids["c.ogg"], "c.ogg",
                                                                                       "Escape Artist", 32.0,
                                                                                       ["synthetic"])
    assert client.get(f"/api/tracks/{ids['d.wav']}").json()["models"] == ["other"]
    gone = client.get(f"/api/tracks/{max(ids.values()) + 1}")
    assert gone.status_code == 404 and gone.json()["detail"] == f"unknown track id {max(ids.values()) + 1}"


@pytest.mark.parametrize(("name", "media"), [("a.flac", "audio/flac"), ("b.mp3", "audio/mpeg"), ("c.ogg", "audio/ogg"),
                                             ("d.wav", "audio/wav"), ("e.opus", "audio/ogg"),
                                             ("f.wv", "audio/x-wavpack")])
def test_audio_is_the_file_as_stored_with_its_media_type(served: tuple[TestClient, Path, dict[str, int]],
                                                         name: str, media: str) -> None:
    client, music, ids = served
    got = client.get(f"/api/tracks/{ids[name]}/audio")
    assert got.status_code == 200 and got.content == (music / name).read_bytes()
    assert got.headers["content-type"] == media and got.headers["accept-ranges"] == "bytes"
    part = client.get(f"/api/tracks/{ids[name]}/audio", headers={"Range": "bytes=2-5"})
    assert part.status_code == 206 and part.content == (music / name).read_bytes()[2:6]
    size = (music / name).stat().st_size
    past = client.get(f"/api/tracks/{ids[name]}/audio", headers={"Range": f"bytes={size}-"})  # no byte in the file
    assert (past.status_code, past.json()["detail"], past.headers["content-range"]) == (
        416, f"range not satisfiable: 'bytes={size}-' (the file has {size} bytes)", f"bytes */{size}")


def test_the_audio_routes_answers_are_described_in_the_openapi_schema(
        served: tuple[TestClient, Path, dict[str, int]]) -> None:
    client, _, _ = served
    described = client.get("/openapi.json").json()["paths"]["/api/tracks/{track_id}/audio"]["get"]["responses"]
    assert {"200", "206", "409", "416"} <= set(described)
    assert described["206"]["description"].startswith("Partial content")


def test_audio_of_a_file_gone_or_replaced_by_a_link_is_a_404(synthetic: tuple[TestClient, Path, dict[str, int]]
                                                             ) -> None:
    client, music, ids = synthetic
    (music / "a.flac").unlink()
    gone = client.get(f"/api/tracks/{ids['a.flac']}/audio")
    assert (gone.status_code, gone.json()["detail"]) == (404, f"the audio file of track {ids['a.flac']} (a.flac) is "
                                                              "no longer on disk")
    target = music / "elsewhere.mp3"
    (music / "b.mp3").rename(target)
    (music / "b.mp3").symlink_to(target)  # the same bytes, now behind a link
    linked = client.get(f"/api/tracks/{ids['b.mp3']}/audio")
    assert linked.status_code == 404 and linked.json()["detail"].endswith("has been replaced by a link; run `mess "
                                                                          "extract` again")
    assert client.get(f"/api/tracks/{ids['c.ogg']}/audio").status_code == 200


def test_audio_of_a_file_of_another_size_or_mtime_is_a_409(synthetic: tuple[TestClient, Path, dict[str, int]]
                                                           ) -> None:
    client, music, ids = synthetic
    song = music / "c.ogg"
    song.write_bytes(song.read_bytes() + b"more")
    grown = client.get(f"/api/tracks/{ids['c.ogg']}/audio")
    assert grown.status_code == 409 and "(c.ogg) changed since it was extracted" in grown.json()["detail"]
    other = music / "e.opus"
    before = other.stat()
    os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # touched: same bytes, a second later
    assert client.get(f"/api/tracks/{ids['e.opus']}/audio").status_code == 409
    assert client.get(f"/api/tracks/{ids['f.wv']}/audio").status_code == 200


def test_audio_replaced_keeping_size_and_mtime_is_a_409_and_the_same_bytes_rewritten_are_served(
        synthetic: tuple[TestClient, Path, dict[str, int]]) -> None:
    client, music, ids = synthetic
    for name, data in (("a.flac", None), ("b.mp3", b"X")):
        song = music / name
        before = song.stat()
        old = song.read_bytes()
        new = old if data is None else data + old[1:]  # the same bytes, or one byte changed: the same size
        (music / "tmp").write_bytes(new)
        os.utime(music / "tmp", ns=(before.st_atime_ns, before.st_mtime_ns))
        (music / "tmp").replace(song)  # another inode: the stamp differs, size and mtime do not
        assert (song.stat().st_size, song.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
        assert file_stamp(song.stat()) != file_stamp(before)
    assert client.get(f"/api/tracks/{ids['a.flac']}/audio").status_code == 200
    replaced = client.get(f"/api/tracks/{ids['b.mp3']}/audio")
    assert replaced.status_code == 409 and "same size and modification time but other audio" in \
        replaced.json()["detail"]


def test_audio_of_a_name_with_no_audio_extension_is_octet_stream(tmp_path: Path) -> None:
    root, _ = _synthetic(tmp_path)
    odd = (tmp_path / "music" / "notes.xyz").resolve()
    odd.write_bytes(b"not audio")
    stat = odd.stat()
    with closing(FeatureStore(root)) as store:
        tid = store.upsert_track(odd, content_hash(odd), stat.st_size, stat.st_mtime, {}, {}, stamp=file_stamp(stat))
    with TestClient(base_url="http://127.0.0.1", app=create_app(root, "synthetic")) as client:
        got = client.get(f"/api/tracks/{tid}/audio")
    assert got.status_code == 200 and got.headers["content-type"] == "application/octet-stream"
    assert got.content == b"not audio"


def test_changed_note_speaks_only_of_other_audio(tmp_path: Path) -> None:
    song = tmp_path / "song.wav"
    song.write_bytes(b"first take")
    known = (content_hash(song), file_stamp(song.stat()))
    assert changed_note(song, known) is None  # unchanged
    assert changed_note(song, None) is None  # not catalogued
    before = song.stat()
    song.write_bytes(b"first take")  # rewritten with the same bytes: the stamp may differ, the audio does not
    os.utime(song, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    assert changed_note(song, known) is None
    song.write_bytes(b"other take, longer")
    assert changed_note(song, known) == ("song.wav has changed since it was extracted: answering from what it held "
                                         "then (upload the file to search with it as it is now; `mess extract` "
                                         "updates the collection)")
    song.unlink()
    assert changed_note(song, known) is None  # gone
    song.mkdir()  # something there that cannot be hashed (a folder: root reads a file whatever its mode)
    assert changed_note(song, known) is None


def _pca_xy(unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2-D PCA of ``unit`` [n, dim] by SVD, scaled as the map scales it (largest |coordinate| 1, each axis's largest
    extreme positive), and the two axes' share of the variance."""
    centred = unit - unit.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    xy *= np.where(xy.max(axis=0) >= -xy.min(axis=0), 1.0, -1.0) / np.abs(xy).max()
    return xy, (s**2 / (s**2).sum())[:2]


def test_the_map_places_each_track_with_vectors_as_the_pca_of_its_unit_vector(
        served: tuple[TestClient, Path, dict[str, int]]) -> None:
    client, _, ids = served
    body = client.get("/api/map", params={"layer": "a"}).json()
    named = [n for n, t in TRACKS.items() if t[5] is not None]
    vectors = np.array([TRACKS[n][5] for n in named], dtype=np.float64)  # type: ignore[misc]
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    want_xy, want_ratio = _pca_xy(unit)
    assert (body["model"], body["method"], body["tracks_without_fused_vectors"], body["note"]) == ("synthetic", "pca",
                                                                                                  0, None)
    assert body["explained_variance"] == pytest.approx(want_ratio, abs=1e-4)
    assert [round(v, 4) for v in body["explained_variance"]] == body["explained_variance"]  # to 4 places
    points = {p["file"]: p for p in body["points"]}
    assert sorted(points) == sorted(named)
    for name, (x, y) in zip(named, want_xy, strict=True):
        p = points[name]
        assert p["id"] == ids[name] and p["artist"] == TRACKS[name][0]
        assert (p["x"], p["y"]) == pytest.approx((x, y), abs=1e-4)
        assert p["x"] == round(p["x"], 5) and p["y"] == round(p["y"], 5)
    assert {n for n, p in points.items() if p["x"] > 0} == {"a.flac", "c.ogg"}  # the two clusters, either side


def test_a_map_of_a_run_with_fewer_tracks_than_the_catalog_leaves_the_others_out(
        served: tuple[TestClient, Path, dict[str, int]]) -> None:
    client, _, ids = served
    body = client.get("/api/map", params={"model": "other"}).json()
    assert [(p["id"], p["x"], p["y"]) for p in body["points"]] == [(ids["d.wav"], 0.0, 0.0)]
    assert body["explained_variance"] == [0.0, 0.0] and body["model"] == "other"


# ---------------------------------------------------------------- mess.search.rerank


def test_a_near_copy_is_put_first_when_its_cosine_leads_by_the_default_gap_of_five_hundredths() -> None:
    """The default gap is 0.05 (docs: a noisy copy found first 103 of 104 times): a lead of 1/16 moves the nearest
    track to the query's own score, one of 1/32 does not (both dyadic: exact in float64)."""
    scores = np.array([-0.2, -0.1, -0.3])
    np.testing.assert_array_equal(copy_first(scores, np.array([0.5, 0.5625, 0.25]), 0.0), [-0.2, 0.0, -0.3])
    np.testing.assert_array_equal(copy_first(scores, np.array([0.5, 0.53125, 0.25]), 0.0), scores)


def _unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_a_reranker_remembers_the_last_four_outside_queries_and_answers_them_again_unchanged() -> None:
    """The last 4 outside queries (docs: OUTSIDE_KEPT) are kept, by exact bytes and dtype; a remembered one is
    answered without building the re-ranking again, and as the re-ranking of the collection with it added (its own
    row there, by the dense formula)."""
    unit = _unit_rows(24, 6, seed=1)
    queries = _unit_rows(6, 6, seed=2)
    reranker = build_reranker(unit)
    first = [reranker.outside(q)[0] for q in queries]
    assert [key[2] for key in reranker.answered] == [q.tobytes() for q in queries[-4:]]
    for q, got in zip(queries, first, strict=True):  # the dense formula of the collection with the query added
        want = k_reciprocal(collection_scores(np.vstack([unit, q[None]])), 10, 3, 0.3)[0][len(unit), :len(unit)]
        np.testing.assert_allclose(got, want, atol=1e-5)
    kept = dict(reranker.answered)
    again = reranker.outside(queries[-1])[0]
    np.testing.assert_array_equal(again, first[-1])
    assert reranker.answered.keys() == kept.keys() and all(reranker.answered[k] is kept[k] for k in kept)
    again[:] = 7.0  # the caller's copy: the remembered row is not changed
    np.testing.assert_array_equal(reranker.outside(queries[-1])[0], first[-1])
    reranker.outside(queries[-1].astype(np.float64))  # the same values in another dtype: another key
    assert len(reranker.answered) == 4 and list(reranker.answered)[-1][1] == np.dtype(np.float64).str
    with pytest.raises(dataclasses.FrozenInstanceError):  # shared by the server's threads: never reassigned
        reranker.lam = 0.5  # type: ignore[misc]


# ---------------------------------------------------------------- mess.extract.pipeline: a run's summary and defaults

SR = 16000
HOLDER = ("import sys; from pathlib import Path; from mess.store.lock import StoreLock\n"
          "with StoreLock(Path(sys.argv[1])).hold('a test holding the store'):\n"
          "    print('held', flush=True); sys.stdin.readline()\n")


def _tones(folder: Path, count: int, seconds: float) -> list[Path]:
    """``count`` float WAVs of ``seconds`` each, each a tone of its own pitch."""
    folder.mkdir()
    t = np.arange(int(seconds * SR)) / SR
    paths = []
    for i in range(count):
        path = folder / f"{i}.wav"
        sf.write(path, (0.3 * np.sin(2 * np.pi * (200.0 + 70 * i) * t)).astype(np.float32), SR, subtype="FLOAT")
        paths.append(path)
    return paths


class _Counted:
    """The DSP model, recording the number of windows of each batch it embeds and the decoder processes running that
    were not running when it was made."""

    def __init__(self) -> None:
        self._model = DspModel()
        self.info = self._model.info
        self.batches: list[int] = []
        self.decoders: list[int] = []
        self._before = {p.pid for p in decoders()}  # another test's (a Ray worker's decoder)

    def __getattr__(self, name: str) -> object:
        return getattr(self._model, name)

    def embed(self, windows: np.ndarray) -> list[np.ndarray]:
        self.batches.append(len(windows))
        self.decoders.append(sum(1 for p in decoders() if p.pid not in self._before))
        return self._model.embed(windows)


def test_an_empty_summary_counts_nothing_and_its_rate_is_audio_over_wall_seconds() -> None:
    empty = ExtractSummary()
    assert (empty.done, empty.skipped, empty.copies, empty.failed, empty.removed, empty.warnings) == (0, 0, 0, [], 0,
                                                                                                      [])
    assert (empty.audio_seconds, empty.wall_seconds, empty.realtime_factor, empty.handled) == (0.0, 0.0, 0.0, 0)
    assert ExtractSummary(audio_seconds=30.0).realtime_factor == 0.0  # no time measured: no rate, no division
    assert ExtractSummary(audio_seconds=30.0, wall_seconds=4.0).realtime_factor == 7.5
    some = ExtractSummary(done=3, skipped=5, copies=7, failed=[("a", "b"), ("c", "d")], removed=11)
    assert some.handled == 3 + 5 + 7 + 2  # removed files are not files of this run's list


def test_an_interrupted_run_is_a_keyboard_interrupt_carrying_its_summary() -> None:
    summary = ExtractSummary(done=2)
    stop = ExtractInterrupted(summary)
    assert isinstance(stop, KeyboardInterrupt) and stop.summary is summary and str(stop) == "interrupted"


def test_a_run_with_the_default_options_batches_four_windows_in_two_decoders_and_waits_for_the_store(
        tmp_path: Path) -> None:
    """The defaults are the command's (--batch-size 4, --workers 2) and a run waits for another writer of the store
    (telling on_wait) rather than failing; nothing is pruned unless asked."""
    paths = _tones(tmp_path / "music", 5, 0.8)  # one window each
    store = FeatureStore(tmp_path / "store")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(store.root)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdin is not None and holder.stdout is not None
    heard = []

    def waits(message: str) -> None:  # the other writer lets go once the run says it waits
        heard.append(message)
        holder.stdin.close()  # type: ignore[union-attr]

    try:
        assert holder.stdout.readline().strip() == "held"
        model = _Counted()
        summary = extract(store, paths, model, WindowPolicy(1.0, 2, 0.5), on_wait=waits)  # type: ignore[arg-type]
    finally:
        if not holder.stdin.closed:
            holder.stdin.close()
        assert holder.wait(60) == 0
    assert len(heard) == 1 and "held by pid" in heard[0] and "a test holding the store" in heard[0]
    assert (summary.done, summary.removed, summary.failed) == (5, 0, [])
    assert model.batches == [4, 1] and max(model.decoders) == 2
    store.close()


def test_a_run_stops_its_header_reading_before_it_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The total of the files to embed is reported, and the planner's stop (the real one, watched) has been called
    when the run returns: no call of on_total can come after it."""
    paths = _tones(tmp_path / "music", 2, 1.5)
    policy = WindowPolicy(1.0, 2, 0.5)
    stops: list[str] = []
    real = pipeline.plan_in_background

    def watched(*args: object) -> Callable[[], None]:
        stop = real(*args)  # type: ignore[arg-type]

        def counted() -> None:
            stop()
            stops.append("stopped")

        return counted

    monkeypatch.setattr(pipeline, "plan_in_background", watched)
    totals: list[float] = []
    store = FeatureStore(tmp_path / "store")
    summary = extract(store, paths, DspModel(), policy, workers=1, on_total=totals.append)
    assert stops == ["stopped"] and summary.done == 2
    assert totals == [pytest.approx(2 * policy.analysed_seconds(1.5))]
    extract(store, paths, DspModel(), policy, workers=1)  # no on_total: no planner
    assert stops == ["stopped"]
    store.close()


def test_a_collection_of_exactly_exact_tracks_answers_an_outside_query_exactly_whatever_the_local_size(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """At EXACT_TRACKS tracks (the bound included) the whole collection is re-ranked with the query, not only the
    query's LOCAL_TRACKS nearest: with 24 of 36 local, one track more than the bound differs from the exact answer."""
    vectors = clusters(40, seed=3)
    unit, queries = vectors[:36], vectors[36:]
    want = np.stack([k_reciprocal(collection_scores(np.vstack([unit, q[None]])), 10, 3, 0.3)[0][36, :36]
                     for q in queries])
    monkeypatch.setattr(rerank, "LOCAL_TRACKS", 24)
    monkeypatch.setattr(rerank, "EXACT_TRACKS", 36)
    np.testing.assert_allclose(build_reranker(unit).outside(queries), want, atol=1e-5)
    monkeypatch.setattr(rerank, "EXACT_TRACKS", 35)
    assert np.abs(build_reranker(unit).outside(queries) - want).max() > 1e-3


@pytest.mark.parametrize("n", [3, 4])
def test_a_collection_of_fewer_tracks_than_expansion_neighbours_reranks_by_the_formula(n: int) -> None:
    """Three or four tracks: each expanded with the n - 1 others (not with itself), as the dense formula does."""
    unit = clusters(n, seed=5)
    want = k_reciprocal(collection_scores(unit), 10, 3, 0.3)[0]
    np.testing.assert_allclose(build_reranker(unit).rows(np.arange(n)), want, atol=1e-5)


def test_beyond_exact_tracks_the_tracks_outside_the_local_set_rank_by_their_distance_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside the query's LOCAL_TRACKS nearest, a track's score is -((1 - lambda) + lambda d / max d), d = 2 - 2 s
    from its expanded augmented score s with the query (dense, float64), max d over the whole collection (the local
    tracks' d from the local set with the query added); tracks at a score above 1/2 (d below 1) are among them."""
    vectors = clusters(37, seed=4)
    unit, q = vectors[:36], vectors[36]
    monkeypatch.setattr(rerank, "EXACT_TRACKS", 0)
    monkeypatch.setattr(rerank, "LOCAL_TRACKS", 4)
    got = build_reranker(unit).outside(q)[0]
    near = np.sort(np.argsort(-(unit @ q), kind="stable")[:4])
    far = np.setdiff1d(np.arange(36), near)
    d = np.maximum(2.0 - 2.0 * scores_with_query(unit, q)[36, :36], 0.0)
    d[near] = np.maximum(2.0 - 2.0 * collection_scores(np.vstack([unit[near], q[None]]))[4, :4], 0.0)
    assert (d[far] < 1.0).any()
    np.testing.assert_allclose(got[far], -(0.7 + 0.3 * d[far] / d.max()), atol=1e-5)
