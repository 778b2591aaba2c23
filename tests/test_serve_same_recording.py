"""The server's similar answers carry the audio comparison `mess similar` makes (``same_recording``): an uploaded file
is compared with its close results while the server holds its temporary copy (it was never compared: the copy was
removed before the search, so an app uploading a FLAC whose MP3 is in the collection heard nothing of it), and the
comparison's reason names files by their names alone, never by a server path.

Real audio: 20 s FLAC excerpts of three Wesnoth tracks and an MP3 (128 kb/s) of the first, made here with FFmpeg
(:mod:`mess.datasets.copies`); a dsp store in the test's folder; the app in-process with its real embedding process.
The expected comparison is the CLI's (`mess similar FILE`: ``embed_query`` then ``similar_tracks``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import closing
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mess.audio.windows import WindowPolicy
from mess.datasets.copies import read_channels, write_copy
from mess.extract.pipeline import extract
from mess.models.registry import load_model
from mess.query import embed_query
from mess.search.query import similar_tracks
from mess.serve.app import create_app
from mess.store import FeatureStore

SOUNDTRACKS = Path(os.environ.get("MESS_SOUNDTRACKS", "/work/data/soundtracks")) / "wesnoth"
SOURCES = ("transience.ogg", "main_menu.ogg", "revelation.ogg")
EXCERPT = 20.0  # seconds


def _library(folder: Path, request: pytest.FixtureRequest) -> tuple[Path, list[Path]]:
    """(the lossless excerpt of the first source, kept out of the collection; the collection's files: its MP3 copy
    and the other sources' excerpts) under ``folder``."""
    by_name = ({n: SOUNDTRACKS / n for n in SOURCES} if SOUNDTRACKS.is_dir()
               else {Path(t).name: Path(t) for t in request.getfixturevalue("wesnoth_tracks")})
    music = folder / "music"
    music.mkdir(parents=True)
    originals = []
    for name in SOURCES:
        audio, rate = read_channels(by_name[name], EXCERPT)
        originals.append(write_copy(audio, rate, folder / f"{Path(name).stem}.flac", "flac"))
    audio, rate = read_channels(originals[0])
    copy = write_copy(audio, rate, music / "transience copy.mp3", "libmp3lame", bit_rate=128_000)
    kept = [Path(p.replace(music / p.name)) for p in originals[1:]]
    return originals[0], [copy, *kept]


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> tuple[Path, Path, Path]:
    """(the store, the upload: a FLAC whose MP3 copy is in the collection, that MP3), dsp extracted. Read only."""
    root = tmp_path_factory.mktemp("recording")
    upload, files = _library(root, request)
    with closing(FeatureStore(root / "store")) as store:
        assert not extract(store, files, load_model("dsp"), WindowPolicy()).failed
    return root / "store", upload, files[0]


def test_an_upload_whose_lossy_copy_is_in_the_collection_is_answered_same_recording(
        library: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The upload's answer flags the MP3 as the same recording, with the evidence the CLI gives for the file (same
    verdict, score and lag), the other tracks not; no temporary file is left, and none is named."""
    root, upload, copy = library
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    with closing(FeatureStore(root, readonly=True)) as store:
        run = store.run("dsp")
        cli = {n.track.path: n for n in similar_tracks(store, run, embed_query(store, upload, run), k=3)}
    assert cli[str(copy)].recording is not None and cli[str(copy)].recording.same  # the premise: the CLI says so
    with TestClient(create_app(root, embed_timeout=300), base_url="http://127.0.0.1") as client:
        answer = client.post("/api/similar/upload", params={"k": 3},
                             files={"file": (upload.name, upload.read_bytes(), "audio/flac")})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["query"]["external"] is True
    by_file = {r["file"]: r for r in data["results"]}
    assert set(by_file) == {Path(p).name for p in cli}
    for path, expected in cli.items():
        got = by_file[Path(path).name]["same_recording"]
        if expected.recording is None:
            assert got is None, got
            continue
        want = expected.recording.to_dict()
        assert {k: got[k] for k in ("same", "score", "lag")} == {k: want[k] for k in ("same", "score", "lag")}, got
    mp3 = by_file[copy.name]
    assert mp3["duplicate"] is True and "same recording" in mp3["same_recording"]["reason"]
    assert not any(r["duplicate"] for r in data["results"] if r["file"] != copy.name)
    assert str(private) not in answer.text and "mess-upload" not in answer.text
    assert list(private.iterdir()) == []


def test_the_comparison_names_the_files_it_could_not_read_without_their_folders(
        library: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """A close result whose file no longer decodes (junk written over it since extraction) is "not compared", and the
    reason names it by its file name, as every answer names files: it gave the server's full path."""
    root, upload, copy = library
    music = tmp_path / "music"
    music.mkdir()
    files = [Path(shutil.copy(p, music)) for p in (upload, *copy.parent.iterdir())]
    with closing(FeatureStore(tmp_path / "store")) as store:
        assert not extract(store, files, load_model("dsp"), WindowPolicy()).failed
        query = store.track(str(music / upload.name)).id
    (music / copy.name).write_bytes(b"\xff\xfb" + bytes(5000))  # no longer audio; its length still as catalogued
    with TestClient(create_app(tmp_path / "store"), base_url="http://127.0.0.1") as client:
        answer = client.get(f"/api/tracks/{query}/similar", params={"k": 3})
    assert answer.status_code == 200, answer.text
    result = next(r for r in answer.json()["results"] if r["file"] == copy.name)
    reason = result["same_recording"]["reason"]
    assert reason.startswith(f"not compared: {copy.name}: ") and result["same_recording"]["same"] is False, reason
    assert str(tmp_path) not in answer.text
