"""A listener's and a user's evening with mess: the page's downloads, the server's errors, the fusion report's
verdict and the MPD radio, as they meet them."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
import test_serve_api as api
from fastapi.testclient import TestClient

from mess.playlists.formats import XSPF_NS
from mess.serve.app import create_app
from mess.store import FeatureStore

serve_collection = api.serve_collection  # the session's store (3 artists x 4 tagged tracks, dsp), made once per run


@pytest.fixture
def own_store(serve_collection: Path, tmp_path: Path) -> Path:
    """A copy of the session's store (its tracks still name the session's music files), for a test to change."""
    shutil.copytree(serve_collection, tmp_path / "store")
    return tmp_path / "store"


@contextmanager
def _client(store: Path) -> Iterator[TestClient]:
    """A client of a server on ``store``, without its lifespan (the upload worker has no part in these answers)."""
    app = create_app(store)
    try:
        yield TestClient(app, base_url="http://127.0.0.1:8000")
    finally:
        app.state.mess.store.close()


def _listed(text: str) -> list[int]:
    return [int(i) for i in re.findall(r"/api/tracks/(\d+)/audio", text)]


def test_a_download_leaves_out_a_track_pruned_since_the_list_was_shown(own_store: Path) -> None:
    """The page lists a radio; `mess extract --prune` then forgets one of its tracks; the page's M3U8 / XSPF link
    (the ids shown) was a 404, so the browser saved no file at all. The file now holds the other tracks, in order, and
    says which it left out (a comment line of the M3U8, the XSPF's annotation, the X-Left-Out header); only a list
    none of whose tracks is left is a 404, naming them."""
    with _client(own_store) as client:
        seed = client.get("/api/tracks").json()["items"][0]["id"]
        shown = client.get("/api/playlists/radio", params={"seed": seed, "n": 5}).json()
        ids = [t["id"] for t in shown["tracks"]]
        pruned = ids[1]
        with closing(FeatureStore(own_store)) as writer:  # what `mess extract --prune` does once the file is gone
            assert writer.remove_tracks([writer.track(pruned).path]) == 1
        kept = [i for i in ids if i != pruned]
        for fmt in ("m3u8", "xspf"):
            params = [*(("track", i) for i in ids), ("title", shown["title"]), ("name", "radio"), ("format", fmt)]
            answer = client.get("/api/playlists/file", params=params)
            assert answer.status_code == 200, answer.text
            assert _listed(answer.text) == kept, answer.text
            assert answer.headers["x-left-out"] == str(pruned)
            if fmt == "m3u8":
                notes = [ln for ln in answer.text.splitlines() if ln.startswith("# ")]
            else:
                notes = [el.text or "" for el in ET.fromstring(answer.content).iter(f"{{{XSPF_NS}}}annotation")]
            assert len(notes) == 1 and re.search(rf"\btrack {pruned}\b.*no longer in the collection", notes[0]), notes
        alone = client.get("/api/playlists/file", params={"track": [pruned, pruned], "format": "m3u8"})
        assert alone.status_code == 404, alone.text
        assert re.match(rf"track {pruned} no longer in the collection", alone.json()["detail"]), alone.text
