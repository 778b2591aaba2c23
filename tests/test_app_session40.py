"""A listener's and a user's evening with mess: the page's downloads, the server's errors, the fusion report's
verdict and the MPD radio, as they meet them."""

from __future__ import annotations

import json
import re
import shutil
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import test_mpd as mpd_tests
import test_serve_api as api
from fastapi.testclient import TestClient
from test_serve_browser import CHROMIUM, Browser
from typer.testing import CliRunner

from mess.cli.main import app
from mess.cli.serve import _server, listen
from mess.playlists.formats import XSPF_NS
from mess.playlists.mpd import connect
from mess.playlists.playlist import artist_key
from mess.playlists.radio import radio
from mess.search.query import collection_query
from mess.serve.app import create_app
from mess.store import FeatureStore

serve_collection = api.serve_collection  # the session's store (3 artists x 4 tagged tracks, dsp), made once per run
runner = CliRunner()


@pytest.fixture
def own_store(serve_collection: Path, tmp_path: Path) -> Path:
    """A copy of the session's store (its tracks still name the session's music files), for a test to change."""
    shutil.copytree(serve_collection, tmp_path / "store")
    return tmp_path / "store"


@contextmanager
def _client(store: Path) -> Iterator[TestClient]:
    """A client of a server on ``store``, without its lifespan (the upload worker has no part in these answers)."""
    api_app = create_app(store)
    try:
        yield TestClient(api_app, base_url="http://127.0.0.1:8000")
    finally:
        api_app.state.mess.store.close()


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


@contextmanager
def _serving(store: Path) -> Iterator[int]:
    """`mess serve`'s server (cli.serve._server) on ``store`` in a thread, on a free loopback port (yielded), without
    the app's lifespan (the upload worker has no part in these answers)."""
    api_app = create_app(store)
    server = _server(api_app)
    server.config.lifespan = "off"
    sock = listen("127.0.0.1", 0, "127.0.0.1")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(20)
        api_app.state.mess.store.close()


def _exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` bytes as they are (no client library would send a raw UTF-8 byte in a URL) and read the whole
    answer: status, headers, body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(raw)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:]))
    return int(lines[0].split()[1]), headers, body


def test_a_request_that_is_not_http_is_refused_in_json(own_store: Path) -> None:
    """`curl 'http://127.0.0.1:8000/api/tracks?q=狐'` sends the UTF-8 bytes raw: uvicorn refused the request line
    before the app saw it, with a plain-text 400 'Invalid HTTP request received.', where the API promises JSON
    errors. `mess serve`'s server (cli.serve._server, run here in a thread, without the app's lifespan) answers JSON
    now, naming what was wrong and how to send it; a percent-encoded query is answered by the app."""
    with _serving(own_store) as port:
        status, headers, body = _exchange(port, "GET /api/tracks?q=狐 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        assert status == 400 and headers["content-type"] == "application/json", (status, headers, body)
        detail = json.loads(body)["detail"]
        assert "/api/tracks?q=\\xe7\\x8b\\x90" in detail and "percent-encode" in detail, detail
        assert headers["x-content-type-options"] == "nosniff"
        status, headers, body = _exchange(port, b"GET /api/tracks HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header: 1\r\n"
                                                b"\r\n")
        assert status == 400 and "illegal header line: 'Bad Header: 1'" in json.loads(body)["detail"], body
        status, headers, body = _exchange(port, b"GET /api/tracks?q=%E7%8B%90 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                                b"Connection: close\r\n\r\n")
        assert status == 200 and json.loads(body)["items"] == [], body  # the app's answer: no track is called so


def test_the_fusion_verdict_is_about_the_search_mess_similar_gives(extracted_store: Path,
                                                                  one_torch_thread: None) -> None:  # noqa: ARG001
    """`mess fuse report` scored the `default` row (what `mess similar` ranks by) but its verdict and paired
    Wilcoxon test still set fused against `all-layers`, a search nothing runs by default any more. Both are about the
    default now: the p-value is scipy's on per-query nDCG@5 that sklearn gives the fused cosines and the orders
    `similar_tracks` gives, among the held-out tracks."""
    from scipy.stats import wilcoxon
    from sklearn.metrics import ndcg_score

    from mess.fusion.data import load_layers
    from mess.fusion.report import compare, default_search
    from mess.fusion.train import FusionConfig, embed, train_fusion
    from mess.search.query import collection_query, similar_tracks

    with closing(FeatureStore(extracted_store, readonly=True)) as fs:
        run = fs.run("dsp")
        data = load_layers(fs, run)
        moods = {t.id: f"mood{n % 4}" for n, t in enumerate(data.tracks)}  # labels no layer knows: imperfect rows
        config = FusionConfig(label="mood", labels_file="moods.csv", weight_epochs=1, max_epochs=0, val_frac=0,
                              test_frac=0.5, fusion_dim=4)
        result = train_fusion(data, config, given=moods)
        report = compare(result, data, 5, default_search(fs, run, data))
        ids = [t.id for t in data.tracks if moods[t.id] in result.split.test]
        rows, artists = [data.track_ids.tolist().index(i) for i in ids], [moods[i] for i in ids]
        fused = embed(result.network, data.x[rows]).astype(np.float64)
        fused /= np.linalg.norm(fused, axis=1, keepdims=True)
        fused_q, default_q = [], []
        for q, i in enumerate(ids):
            others = [o for o in range(len(ids)) if o != q]
            relevant = np.array([[artists[o] == artists[q] for o in others]])
            fused_q.append(ndcg_score(relevant, (fused[others] @ fused[q])[None], k=5))
            ranked = [n.track.id for n in similar_tracks(fs, run, collection_query(fs, i), k=len(data.tracks))]
            order = [ids.index(j) for j in ranked if j in ids]  # the held-out tracks, in the default search's order
            rank = np.array([-order.index(o) for o in others], dtype=float)
            default_q.append(ndcg_score(relevant, rank[None], k=5))
    p = wilcoxon(fused_q, default_q).pvalue
    assert report.compared_with == "default" and report.wilcoxon_p == pytest.approx(p, abs=1e-6), (report.wilcoxon_p, p)
    row, mine = report.score("default"), report.score("fused")
    assert row.ndcg == pytest.approx(np.mean(default_q), abs=1e-4)
    word = "is not significantly different from" if p >= 0.05 else "beats" if mine.ndcg > row.ndcg else "is worse than"
    assert report.verdict.startswith(f"fused {word} `mess similar`'s default ranking on held-out nDCG@5 "
                                     f"({mine.ndcg:.3f} vs {row.ndcg:.3f}, paired Wilcoxon p={p:.3g}); mean of all "
                                     f"layers: {report.score('all-layers').ndcg:.3f}"), report.verdict


def test_mpd_radio_goes_on_from_a_song_streamed_from_the_server(own_store: Path, tmp_path: Path) -> None:
    """The page's M3U8 (this server's audio URLs) loaded into MPD, `mess mpd radio` refused: "MPD's current song
    http://.../api/tracks/5/audio is a stream, not a file of its music folder". The URL names a track of the server;
    once the server is found to serve this store (its track of that id is this store's file), that track seeds the
    radio, which is queued as the server's URLs after it, leaving out the songs queued (heard or to come). A store
    whose track of that id is another (or none) is refused in one line naming the server."""
    with closing(FeatureStore(own_store, readonly=True)) as store:
        run = store.run("dsp")
        tracks = store.tracks(run)
        seed, heard = tracks[0], tracks[1]
        music = Path(seed.path).parent.parent
    (tmp_path / "mpd").mkdir()
    with _serving(own_store) as port, mpd_tests._mpd(music, tmp_path / "mpd") as mpd_port:
        url = f"http://127.0.0.1:{port}/api/tracks/{{}}/audio"
        with connect("127.0.0.1", mpd_port) as client:
            client.add(url.format(heard.id))
            client.add(url.format(seed.id))
            client.play(1)
            client.pause(1)
        radio_of = ["mpd", "radio", "-n", "3", "--port", str(mpd_port), "--host", "127.0.0.1", "--model", "dsp"]
        done = runner.invoke(app, [*radio_of, "--store", str(own_store)])
        assert done.exit_code == 0, done.output
        with connect("127.0.0.1", mpd_port) as client:
            queue = [s["file"] for s in client.playlistinfo()]
        with closing(FeatureStore(own_store, readonly=True)) as store:
            expected = radio(store, run, [collection_query(store, seed.id)], 3, heard=frozenset({heard.id}),
                             played=[artist_key(heard)])
        assert queue == [url.format(i) for i in (heard.id, seed.id, *(t.id for t in expected.tracks))], queue
        other = tmp_path / "other"
        shutil.copytree(own_store, other)
        with closing(FeatureStore(other)) as store:  # a store whose track of the seed's id is none (rebuilt, say)
            store.remove_tracks([seed.path])
        refused = runner.invoke(app, [*radio_of, "--store", str(other)])
    assert refused.exit_code == 1 and refused.output.startswith(
        f"error: MPD's current song {url.format(seed.id)} is a stream of `mess serve`, but the server at "
        f"http://127.0.0.1:{port} serves another collection than this store: its track {seed.id} is "
        f"'{Path(seed.path).name}', this store's is None"), refused.output


def _key(page: Browser, key: str) -> None:
    for kind in ("keyDown", "keyUp"):
        page.call("Input.dispatchKeyEvent", {"type": kind, "key": key, **({"text": key} if kind == "keyDown" else {})})


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (scripts/install.sh)")
def test_the_page_plays_its_list_as_a_player_does_and_keeps_it(own_store: Path, tmp_path: Path) -> None:
    """What a listener missed on the page: no next / previous (only "play in order" and clicking entries), no keys
    (space, k, n, p; not while typing in the search field), nothing for the system's media controls, and the list
    gone on a reload, with no way to open the playlist file downloaded from it, nor to add a track to it. Now: buttons
    and keys step the list, the media session names the track, a neighbour's "+" adds it to the list as it plays, a
    reload shows the list again (less a track pruned since, said), and the downloaded M3U8 or XSPF opens as the
    list (an entry whose length is not its track's, another recording under that id, left out and named). On a
    phone the player stays in view at the screen's foot (it was ~900 px below the map: a tap played music whose
    title and controls were out of sight), and a name shown beside a point near the map's right edge no longer
    widens the page past the screen."""
    with _serving(own_store) as port:
        url = f"http://127.0.0.1:{port}"
        page = Browser(tmp_path / "profile")
        try:
            page.open(url + "/")
            page.wait_for("window.mess && window.mess.state.points.length")
            seed = page.evaluate("window.mess.state.points[Math.floor(window.mess.state.points.length / 2)].id")
            page.click(*page.evaluate(f"window.mess.pagePosition({seed})"))
            page.wait_for(f"window.mess.state.selected === {seed}")
            page.evaluate("document.getElementById('playlist-n').value = '4'; "
                          "document.getElementById('radio-btn').click()")
            page.wait_for("document.querySelectorAll('#playlist li').length === 4")
            queue = page.evaluate("window.mess.state.queue")
            at = "window.mess.state.queueAt"
            page.evaluate("document.activeElement.blur()")
            steps = []
            for step in ("n", "n", "p", "#next-btn", "#next-btn", "#prev-btn"):
                if step.startswith("#"):
                    page.evaluate(f"document.querySelector('{step}').click()")
                else:
                    _key(page, step)
                steps.append(page.evaluate(at))
            assert steps == [0, 1, 0, 1, 2, 1], steps
            assert page.evaluate("document.getElementById('player').src") == f"{url}/api/tracks/{queue[1]}/audio"
            track = httpx.get(f"{url}/api/tracks/{queue[1]}").json()
            assert page.evaluate("navigator.mediaSession.metadata.title") == track["title"] or track["name"]
            page.wait_for("!document.getElementById('player').paused")
            _key(page, " ")
            page.wait_for("document.getElementById('player').paused")
            _key(page, "k")
            page.wait_for("!document.getElementById('player').paused")
            page.evaluate("document.getElementById('search').focus()")
            _key(page, "n")  # typed into the search field
            assert page.evaluate(at) == 1 and page.evaluate("document.getElementById('search').value") == "n"
            added = page.evaluate("(() => { const li = [...document.querySelectorAll('#neighbours li')].find(li => "
                                  "!window.mess.state.queue.includes(+li.querySelector('button.track').dataset.id)); "
                                  "li.querySelector('button.add').click(); "
                                  "return +li.querySelector('button.track').dataset.id; })()")
            queue = [*queue, added]  # added at the end while entry 1 plays on
            assert page.evaluate("window.mess.state.queue") == queue and page.evaluate(at) == 1
            assert page.evaluate("[...document.querySelectorAll('#playlist li')].map(li => "
                                 "li.classList.contains('playing'))") == [False, True, False, False, False]
            caption = page.evaluate("document.getElementById('playlist-caption').textContent")
            download = httpx.get(url + page.evaluate("document.getElementById('dl-m3u8').getAttribute('href')"))
            page.evaluate("window.before = true; location.reload()")
            page.wait_for("!window.before && window.mess && window.mess.state.points.length && "
                          "window.mess.state.queue.length")
            assert page.evaluate("window.mess.state.queue") == queue
            assert page.evaluate("document.getElementById('playlist-caption').textContent") == caption
            saved = tmp_path / "radio.m3u8"
            saved.write_bytes(download.content)
            page.click(*page.evaluate(f"window.mess.pagePosition({seed})"))
            page.wait_for(f"window.mess.state.selected === {seed}")
            page.evaluate("document.getElementById('playlist-n').value = '3'; "
                          "document.getElementById('radio-btn').click()")
            page.wait_for("window.mess.state.queue.length === 3")
            doc = page.call("DOM.getDocument")["root"]["nodeId"]
            node = page.call("DOM.querySelector", {"nodeId": doc, "selector": "#open-playlist"})["nodeId"]
            page.call("DOM.setFileInputFiles", {"files": [str(saved)], "nodeId": node})
            page.wait_for("window.mess.state.queue.length === 5")
            assert page.evaluate("window.mess.state.queue") == _listed(download.text) == queue
            assert page.evaluate("document.getElementById('playlist-caption').textContent") == caption
            xspf = httpx.get(url + page.evaluate("document.getElementById('dl-xspf').getAttribute('href')"))
            lines = download.text.splitlines()
            at_second = [i for i, ln in enumerate(lines) if ln.startswith("#EXTINF:")][1]
            lines[at_second] = "#EXTINF:999," + lines[at_second].split(",", 1)[1]  # another recording under that id
            for name, content, expected in (("radio.xspf", xspf.content, queue),
                                            ("other.m3u8", "\n".join(lines).encode(), queue[:1] + queue[2:])):
                (tmp_path / name).write_bytes(content)
                page.evaluate("window.mess.state.queue = []")
                page.call("DOM.setFileInputFiles", {"files": [str(tmp_path / name)], "nodeId": node})
                page.wait_for("window.mess.state.queue.length")
                assert page.evaluate("window.mess.state.queue") == expected, name
            second = httpx.get(f"{url}/api/tracks/{queue[1]}").json()["name"]
            assert page.evaluate("document.getElementById('playlist-caption').textContent").endswith(
                f"(4 tracks; left out, of another length: {second})")
            page.call("DOM.setFileInputFiles", {"files": [str(saved)], "nodeId": node})  # the whole list again
            page.wait_for("window.mess.state.queue.length === 5")
            pruned = queue[2]  # forgotten by `mess extract --prune` before the next visit: no longer offered
            name = httpx.get(f"{url}/api/tracks/{pruned}").json()["name"]
            with closing(FeatureStore(own_store)) as writer:
                writer.remove_tracks([writer.track(pruned).path])
            page.evaluate("window.before = true; location.reload()")
            page.wait_for("!window.before && window.mess && window.mess.state.points.length && "
                          "window.mess.state.queue.length")
            assert page.evaluate("window.mess.state.queue") == [i for i in queue if i != pruned]
            assert page.evaluate("document.getElementById('playlist-caption').textContent").endswith(
                f"(4 tracks; left out, no longer in the collection: {name})")
            assert page.evaluate("[counted(1, 'track'), counted(2, 'track')]") == ["1 track", "2 tracks"]
            page.call("Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 1,
                                                             "mobile": True})  # a phone: one column
            right = page.evaluate("window.mess.state.points.reduce((a, b) => (b.x > a.x ? b : a)).id")
            x, y = page.evaluate(f"window.mess.pagePosition({right})")
            page.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})  # its name shown beside it
            page.wait_for("!document.getElementById('tooltip').hidden")
            sizes = page.evaluate("(() => { const r = document.getElementById('now').getBoundingClientRect(); "
                                  "return [r.top, r.bottom, innerHeight, document.documentElement.scrollWidth, "
                                  "document.documentElement.clientWidth]; })()")
            top, bottom, height, scroll, width = sizes
            assert top < height and abs(bottom - height) <= 1 and scroll <= width, sizes  # the player in view
            assert page.exceptions() == []
        finally:
            page.close()
