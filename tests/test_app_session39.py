"""A music app built on the server and the CLI, as its builder meets it: answers computed from one state of a store
another process is writing."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import mutagen.flac
import numpy as np
import pytest
import soundfile as sf
import test_serve_api as api
from fastapi.testclient import TestClient

from mess.audio.decode import AudioError
from mess.audio.discover import find_audio
from mess.audio.incomplete import cut_short
from mess.audio.windows import WindowPolicy
from mess.extract.pipeline import extract
from mess.extract.prepare import decode_windows, inspect_file
from mess.models.dsp import DspModel
from mess.playlists.radio import radio
from mess.search.query import collection_query
from mess.serve import embed_worker
from mess.serve.app import create_app
from mess.store import FeatureStore, TrackList

serve_collection = api.serve_collection  # the session's store (3 artists x 4 tagged tracks, dsp), made once per run


@pytest.fixture(scope="module")
def own_music(serve_collection: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of its own (ROOT/store) over a copy of the session's 12 files (ROOT/music), extracted with dsp: each
    test may change one file of its own in place."""
    root = tmp_path_factory.mktemp("own")
    shutil.copytree(serve_collection.parent / "music", root / "music")
    with closing(FeatureStore(root / "store")) as store:
        extract(store, find_audio([root / "music"]), DspModel(), WindowPolicy(), workers=1)
    return root


def _change_in_place(root: Path, name: str) -> None:
    """Another writer (a store handle of its own) re-extracts ``name`` after its audio changed in place: its track
    keeps its id, with another content and other vectors."""
    song = root / "music" / name
    audio, rate = sf.read(song)
    sf.write(song, np.roll(audio, len(audio) // 3) * 0.5, rate)
    with closing(FeatureStore(root / "store")) as writer:
        extract(writer, [song], DspModel(), WindowPolicy(), workers=1)


def _radio(store: FeatureStore, seed: int) -> list[tuple[int, float]]:
    playlist = radio(store, store.run("dsp"), [collection_query(store, seed)], 11)
    return [(t.id, round(s, 5)) for t, s in zip(playlist.tracks, playlist.scores, strict=True)]


def _fresh_radio(root: Path, seed: int) -> list[tuple[int, float]]:
    with closing(FeatureStore(root / "store", readonly=True)) as store:
        return _radio(store, seed)


def _after_tracks_read(store: FeatureStore, then: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``then`` once, right after ``store`` first reads its track list: the moment a writer may commit between
    two reads of one answer."""
    read = store.tracks

    def tracks(*args: object, **kwargs: object) -> TrackList:
        out = read(*args, **kwargs)  # type: ignore[arg-type]
        monkeypatch.setattr(store, "tracks", read)
        then()
        return out

    monkeypatch.setattr(store, "tracks", tracks)


def test_a_radio_is_computed_from_one_state_of_the_store(own_music: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file changed in place and re-extracted by another writer (`mess extract` beside `mess playlist radio` or `mess
    mpd radio`) between the radio's read of the track list and its read of the vectors: the vector set took the
    track's old content hash (its fingerprint, the key of every value derived from it) with its new vector, and the
    radio scored the collection as the store never held it (neither the answer before the change nor the one
    after)."""
    with closing(FeatureStore(own_music / "store", readonly=True)) as store:
        seed = next(t.id for t in store.tracks() if t.path.endswith("Sine_Choir/take0.flac"))
        before = _fresh_radio(own_music, seed)
        _after_tracks_read(store, lambda: _change_in_place(own_music, "Sine_Choir/take1.flac"), monkeypatch)
        during = _radio(store, seed)
        after = _fresh_radio(own_music, seed)
        assert before != after  # the change moves the radio's scores
        assert during in (before, after), (during, before, after)
        assert _radio(store, seed) == after



STDOUT_WRITER = """
import sys
from pathlib import Path
import numpy as np
from mess.store.paths import replace_file, replacing
print("printed first", flush=True)
replace_file(Path("/dev/stdout"), b"written\\n")
with replacing(Path("/dev/fd/1")) as f:
    np.savez(f, tones=np.arange(5))
"""


def test_a_file_written_to_stdout_goes_into_the_file_stdout_is_appended_to(tmp_path: Path) -> None:
    """`store.paths.replacing` (every whole-file write: playlists, exports, reports, plots) renamed a new file over
    the file stdout was redirected to: `>>` lost the lines before, and what the process had printed. Now stdout
    itself is written into, where it is: after the file's lines and the process's own, an npz whole (a zip written
    into a file opened to append could not seek back to finish its members)."""
    out = tmp_path / "out.bin"
    out.write_bytes(b"line0\n")
    with out.open("ab") as appended:
        done = subprocess.run([sys.executable, "-c", STDOUT_WRITER], stdout=appended, stderr=subprocess.PIPE,
                              timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    data = out.read_bytes()
    head = b"line0\nprinted first\nwritten\n"
    assert data.startswith(head), data[:80]
    with np.load(io.BytesIO(data[len(head):])) as npz:
        assert npz["tones"].tolist() == list(range(5))


@contextmanager
def _client(store: Path) -> Iterator[TestClient]:
    """A client of a server on ``store``, without its lifespan: the upload worker it starts (and waits seconds for
    at shutdown) has no part in these answers."""
    app = create_app(store)
    try:
        yield TestClient(app, base_url="http://127.0.0.1:8000")
    finally:
        app.state.mess.store.close()


def _listed(text: str) -> list[int]:
    return [int(i) for i in re.findall(r"/api/tracks/(\d+)/audio", text)]


def test_the_page_downloads_the_playlist_it_shows(own_music: Path) -> None:
    """The page's M3U8 and XSPF links asked the server for the radio again: after a track was extracted beside the
    server, the file held another list than the page showed. They name the tracks shown now
    (`/api/playlists/file?track=...`), which the server formats as they are, in their order."""
    with _client(own_music / "store") as client:
        seed = next(t["id"] for t in client.get("/api/tracks").json()["items"]
                    if t["artist"] == "Saw Machine" and t["file"] == "take0.flac")
        shown = client.get("/api/playlists/radio", params={"seed": seed, "n": 5}).json()
        ids = [t["id"] for t in shown["tracks"]]
        song = own_music / "music" / "New_Band" / "saw.flac"
        song.parent.mkdir(exist_ok=True)
        sf.write(song, api._render("Saw Machine", 210.0, np.random.default_rng(7)), api.SR)
        tags = mutagen.flac.FLAC(song)
        tags["artist"] = "New Band"
        tags.save()
        with closing(FeatureStore(own_music / "store")) as writer:
            extract(writer, [song], DspModel(), WindowPolicy(), workers=1)
        again = client.get("/api/playlists/radio", params={"seed": seed, "n": 5}).json()
        assert [t["id"] for t in again["tracks"]] != ids  # the radio asked for again is another list now
        for fmt, media in (("m3u8", "audio/x-mpegurl"), ("xspf", "application/xspf+xml")):
            params = [*(("track", i) for i in ids), ("title", shown["title"]), ("name", "radio"), ("format", fmt)]
            answer = client.get("/api/playlists/file", params=params)
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"].startswith(media)
            assert answer.headers["content-disposition"] == f'attachment; filename="radio.{fmt}"'
            assert _listed(answer.text) == ids and shown["title"] in answer.text, answer.text
        unknown = client.get("/api/playlists/file", params={"track": [999], "format": "m3u8"})
        assert unknown.status_code == 404 and "999" in unknown.json()["detail"], unknown.text


def test_a_truncated_file_is_said_to_be_cut_short(serve_collection: Path, tmp_path: Path) -> None:
    """The first 16,000 bytes of a real OGG (0.6 s of its audio): `mess extract` called it 'incomplete: its Ogg
    stream stops before the page that ends it ... (a download in progress?)' while it was recent, but 'too short
    (0.61 s; the minimum is 1.00 s)' later and from the upload route, as if it were a short clip. Both say now why it
    is that short: the file is cut short (the words other tests and scripts match stay first). A FLAC cut short was
    'cannot decode (invalid data ...: damaged, or not audio)': it says why too."""
    cut = tmp_path / "battle-epic.ogg"
    with open("/work/data/soundtracks/wesnoth/battle-epic.ogg", "rb") as whole:
        cut.write_bytes(whole.read(16_000))
    old = time.time() - 3600  # written long ago: a file cut for good, not one arriving
    os.utime(cut, (old, old))
    said = cut_short(cut)
    assert said and "missing" in said
    upload = embed_worker._embed(cut, DspModel(), WindowPolicy(), 600.0, False)  # what the upload route answers
    with pytest.raises(AudioError) as later:  # what a later `mess extract` records
        decode_windows(inspect_file(cut), DspModel().info.sample_rate, WindowPolicy())
    for message in (upload[2], str(later.value)):
        assert re.search(r": too short \(0\.\d\d s; the minimum is 1\.00 s\) because the file is cut short: "
                         + re.escape(said) + "$", message), message
    assert upload[:2] == ("error", "decode"), upload
    flac = tmp_path / "take0.flac"  # 1.5 s of a 4 s FLAC: 'cannot decode (invalid data ...: damaged, or not audio)'
    with open(serve_collection.parent / "music" / "Saw_Machine" / "take0.flac", "rb") as whole:
        flac.write_bytes(whole.read(20_000))
    os.utime(flac, (old, old))
    said = cut_short(flac)
    assert said and "the file holds" in said
    with pytest.raises(AudioError, match=r"^.*take0\.flac: cannot decode .* because the file is cut short: ") as cut:
        decode_windows(inspect_file(flac), DspModel().info.sample_rate, WindowPolicy())
    assert str(cut.value).endswith(said), cut.value
