"""End to end: `mess serve` in a subprocess, driven by Debian's headless chromium.

Chromium is driven over the Chrome DevTools Protocol on a pipe (``--remote-debugging-pipe``:
NUL-separated JSON on file descriptors 3 and 4), so no webdriver, node package or
websocket library is needed. The test loads the page, clicks a point of the map with
real mouse events, waits for the neighbours list, and saves a screenshot (path printed).
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import shutil
import subprocess
import sys
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import soundfile as sf
from ports import served_at

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe", "--mute-audio", "--autoplay-policy=no-user-gesture-required")
TIMEOUT = 30.0

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (scripts/install.sh)")


class Browser:
    """A headless chromium and one page, spoken to over the DevTools pipe."""

    def __init__(self, profile: Path) -> None:
        ours_in, theirs_out = os.pipe()  # chromium writes to its fd 4
        theirs_in, ours_out = os.pipe()  # chromium reads from its fd 3

        def wire_fds() -> None:  # via fds >= 10, so the pipes cannot clobber each other on the way to 3 and 4
            high_in, high_out = fcntl.fcntl(theirs_in, fcntl.F_DUPFD, 10), fcntl.fcntl(theirs_out, fcntl.F_DUPFD, 10)
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)

        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     pass_fds=(3, 4), preexec_fn=wire_fds,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(theirs_in)
        os.close(theirs_out)
        self._in, self._out = ours_in, ours_out
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None
        self.target: str | None = None
        self.events: list[dict] = []

    def call(self, method: str, params: dict | None = None, *, browser_level: bool = False) -> dict:
        """Send a command and wait for its result (events arriving meanwhile are kept)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session and not browser_level:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def _read(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def open(self, url: str, width: int = 1400, height: int = 1000) -> None:
        self.target = target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 browser_level=True)["sessionId"]
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                         "deviceScaleFactor": 1, "mobile": False})
        self.call("Page.navigate", {"url": url})

    def evaluate(self, expression: str) -> object:
        """Evaluate JavaScript in the page (promises awaited) and return its JSON value."""
        result = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = TIMEOUT) -> object:
        """Poll a JavaScript expression until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None  # page still loading
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}")

    def click(self, x: float, y: float) -> None:
        """A real left click at page coordinates."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left",
                                                   "clickCount": 1 if kind != "mouseMoved" else 0})

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def exceptions(self) -> list[str]:
        """JavaScript exceptions the page threw so far."""
        return [e["params"]["exceptionDetails"].get("exception", {}).get("description", "?")
                for e in self.events if e.get("method") == "Runtime.exceptionThrown"
                and e.get("sessionId") == self.session]

    def close_page(self) -> None:
        """Close the page :meth:`open` opened (its tab), keeping the browser for the next one."""
        if self.target is not None:
            self.call("Target.closeTarget", {"targetId": self.target}, browser_level=True)
        self.session = self.target = None
        self.events.clear()

    def close(self) -> None:
        try:
            self.call("Browser.close", browser_level=True)
            self.proc.wait(10)
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._in)
            os.close(self._out)


@contextmanager
def _serving(store: Path, model: str) -> Iterator[str]:
    """`mess serve` of ``store`` on a loopback port the system picks; yields its base URL."""
    code = ("import sys, typer; from mess.cli.serve import serve_command; "
            "app = typer.Typer(); app.command()(serve_command); app(sys.argv[1:])")
    proc = subprocess.Popen([sys.executable, "-c", code, "--store", str(store), "--port", "0", "--model", model],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = served_at(proc)
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server did not start: {proc.communicate()[1][-2000:]}")
        time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def server(extracted_store: Path) -> Iterator[str]:
    """`mess serve` of the session's store on a free loopback port, for the module (it keeps no state a test
    changes); yields its base URL."""
    with _serving(extracted_store, "dsp") as url:
        yield url


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """One headless chromium for the module; each test opens its own page with :func:`browser`."""
    browser = Browser(tmp_path_factory.mktemp("profile"))
    yield browser
    browser.close()


@pytest.fixture()
def browser(chromium: Browser) -> Iterator[Browser]:
    """The module's chromium, for one page: the test opens it, and it is closed after the test."""
    chromium.events.clear()
    yield chromium
    chromium.close_page()


@pytest.fixture(scope="module")
def small(rendered_collection: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """`mess serve` of 3 rendered files and a WavPack tone (``tone.wv``: Chromium has no WavPack decoder), extracted
    with dsp, the second rendered file then overwritten by another song (``changed``). Yields ``url``, ``music``,
    ``changed`` and ``wavpack`` (tracks)."""
    import av

    from mess.audio.windows import WindowPolicy
    from mess.extract.pipeline import extract
    from mess.models.dsp import DspModel
    from mess.store import FeatureStore

    root = tmp_path_factory.mktemp("small")
    music = root / "music"
    music.mkdir()
    for i, source in enumerate(rendered_collection[:3]):
        shutil.copyfile(source, music / f"{i}-{source.name}")
    sr = 22050
    frame = av.AudioFrame.from_ndarray((9000 * np.sin(np.arange(3 * sr) / 7)).astype(np.int16)[None], format="s16p",
                                       layout="mono")
    frame.sample_rate = sr
    with av.open(str(music / "tone.wv"), "w") as container:
        stream = container.add_stream("wavpack", rate=sr)
        stream.layout = "mono"
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    store = FeatureStore(root / "store")
    extract(store, sorted(music.iterdir()), DspModel(), WindowPolicy())
    tracks = store.tracks()
    store.close()
    changed = next(t for t in tracks if Path(t.path).name.startswith("1-"))
    wavpack = next(t for t in tracks if t.path.endswith(".wv"))
    shutil.copyfile(rendered_collection[5], changed.path)  # another song written over it
    with _serving(root / "store", "dsp") as url:
        yield SimpleNamespace(url=url, music=music, changed=changed, wavpack=wavpack)


def test_page_click_a_track_shows_neighbours(server: str, browser: Browser, tmp_path: Path,
                                             record_property) -> None:
    expected = httpx.get(f"{server}/api/map", params={"model": "dsp"}, timeout=TIMEOUT).json()["points"]
    browser.open(server + "/")
    assert browser.wait_for("window.mess && window.mess.state.points.length") == len(expected)
    assert browser.evaluate("document.getElementById('model').value") == "dsp"
    legend = browser.evaluate("[...document.querySelectorAll('#legend li')].map(li => li.textContent)")
    artists = {p["artist"] for p in expected}
    assert len(legend) == len(artists) and all(any(a in item for item in legend) for a in artists)

    target = expected[len(expected) // 2]
    x, y = browser.evaluate(f"window.mess.pagePosition({target['id']})")
    browser.click(x, y)
    count = browser.wait_for("document.querySelectorAll('#neighbours li').length")
    assert count == min(10, len(expected) - 1)
    assert browser.evaluate("window.mess.state.selected") == target["id"]
    assert browser.evaluate("document.getElementById('now-title').textContent") == target["name"]
    assert browser.evaluate("document.getElementById('player').src").endswith(f"/api/tracks/{target['id']}/audio")
    shown = browser.evaluate("[...document.querySelectorAll('#neighbours button.track')].map(b => +b.dataset.id)")
    api = httpx.get(f"{server}/api/tracks/{target['id']}/similar", params={"model": "dsp", "k": 10},
                    timeout=TIMEOUT).json()
    assert shown == [r["id"] for r in api["results"]] and target["id"] not in shown
    # the page shows the score the list is ordered by (the default's augmented score), not the cosine
    assert api["ranking"] == "augmented"
    scores = browser.evaluate("[...document.querySelectorAll('#neighbours .score')].map(s => +s.textContent)")
    assert len(scores) == count and scores == sorted(scores, reverse=True)
    assert all(abs(s - r["adjusted"]) <= 5.1e-5 for s, r in zip(scores, api["results"], strict=True))
    assert any(abs(s - r["score"]) > 1e-3 for s, r in zip(scores, api["results"], strict=True))  # not the cosine
    assert browser.wait_for("document.querySelectorAll('#neighbours .chip').length") >= count
    assert browser.wait_for("document.getElementById('player').readyState >= 1"), "audio did not load"

    words = target["artist"].lower().split()
    browser.evaluate("(() => { const s = document.getElementById('search');"
                     f" s.value = {json.dumps(target['artist'])}; s.dispatchEvent(new Event('input')); }})()")
    hits = browser.evaluate("document.querySelectorAll('#search-results button.track').length")
    texts = [" ".join(str(p[f]) for f in ("name", "album", "genre", "composer", "file") if p[f]).lower()
             for p in expected]
    assert hits == min(30, sum(all(w in t for w in words) for t in texts)) >= 1

    low = io.BytesIO()  # an upload sampled at 4 kHz: the page shows the server's warning under its title
    sf.write(low, 0.3 * np.sin(2 * np.pi * 440 * np.arange(4 * 4000) / 4000), 4000, format="WAV")
    browser.evaluate("(() => { const t = new DataTransfer(); t.items.add(new File([Uint8Array.from(atob("
                     f"{json.dumps(base64.b64encode(low.getvalue()).decode())}), c => c.charCodeAt(0))], "
                     "'phone.wav', {type: 'audio/wav'})); document.getElementById('upload-file').files = t.files;"
                     " document.getElementById('upload-form').requestSubmit(); })()")
    warned = browser.wait_for("[...document.querySelectorAll('#upload-warnings p')].map(p => p.textContent)")
    assert warned == ["warning: phone.wav: sampled at 4000 Hz, below half the model's 22050 Hz: it hears nothing "
                      "above 2000 Hz, so its vectors say little"]
    assert browser.evaluate("document.getElementById('upload-warnings').hidden") is False
    assert browser.evaluate("document.getElementById('now-title').textContent") == "phone.wav"
    shot = browser.screenshot(tmp_path / "serve-browser.png")
    browser.evaluate("document.querySelector('#neighbours button.track').click()")  # a collection track: gone
    assert browser.wait_for("document.getElementById('upload-warnings').hidden")
    assert browser.evaluate("document.querySelectorAll('#upload-warnings p').length") == 0
    assert browser.exceptions() == []
    assert shot.stat().st_size > 10_000
    record_property("screenshot", str(shot))
    print(f"\nscreenshot: {shot}")


def test_page_offers_the_vectors_of_the_run_that_answers(rendered_collection: list[Path], browser: Browser,
                                                        tmp_path: Path) -> None:
    """dsp extracted on 4 files, then again with another window policy on 2 of them: the newer run is not the one
    answering (it covers fewer tracks), so the page must offer the probed aspects of the first run, not the newer
    run's none."""
    from mess.audio.windows import WindowPolicy
    from mess.extract.pipeline import extract
    from mess.models.dsp import DspModel
    from mess.store import FeatureStore

    music = rendered_collection[:4]
    store = FeatureStore(tmp_path / "store")
    extract(store, music, DspModel(), WindowPolicy())
    store.set_aspect_map(store.run("dsp"), [("timbre", "mfcc", 0.5, 0.1)])
    extract(store, music[:2], DspModel(), WindowPolicy(max_windows=1))
    assert len(store.runs()) == 2
    newer = store.runs()[-1]
    store.close()
    with _serving(tmp_path / "store", "dsp") as url:
        browser.open(url + "/")
        assert browser.wait_for("window.mess && window.mess.state.points.length") == len(music)
        options = browser.evaluate("[...document.getElementById('vectors').options].map(o => o.value)")
        assert "aspect:timbre" in options
        browser.evaluate("(() => { const v = document.getElementById('vectors'); v.value = 'aspect:timbre';"
                         " v.dispatchEvent(new Event('change')); })()")
        caption = browser.wait_for("(t => t.includes('aspect timbre') && t)"
                                   "(document.getElementById('map-caption').textContent)")
        assert caption.startswith(f"{len(music)} tracks")
        # the other run is offered too (as NAME@RUN_ID), and picking it maps its own two tracks
        models = browser.evaluate("[...document.getElementById('model').options].map(o => o.value)")
        assert models == ["dsp", f"dsp@{newer.id}"]
        browser.evaluate(f"(() => {{ const m = document.getElementById('model'); m.value = 'dsp@{newer.id}';"
                         " m.dispatchEvent(new Event('change')); })()")
        assert browser.wait_for("window.mess.state.model.includes('@') && window.mess.state.points.length"
                                " === 2 && window.mess.state.points.length") == 2
        assert browser.exceptions() == []


def test_neighbours_of_a_track_clicked_earlier_never_replace_the_later_ones(server: str, browser: Browser) -> None:
    """Two tracks clicked in turn, the first one's search answered last (held in the browser's network layer):
    the page showed the first track's neighbours under the second, playing, track."""
    points = httpx.get(f"{server}/api/map", timeout=TIMEOUT).json()["points"]
    first, second = points[0], next(p for p in points if p["artist"] != points[0]["artist"])
    expected = {p["id"]: [r["id"] for r in httpx.get(f"{server}/api/tracks/{p['id']}/similar",
                                                      params={"k": 10}, timeout=TIMEOUT).json()["results"]]
                for p in (first, second)}
    assert expected[first["id"]] != expected[second["id"]]
    browser.open(server + "/")
    assert browser.wait_for("window.mess && window.mess.state.points.length") == len(points)
    browser.call("Fetch.enable", {"patterns": [{"urlPattern": "*/api/tracks/*/similar*"}]})
    browser.evaluate(f"selectTrack({first['id']}); selectTrack({second['id']}); 1")
    deadline = time.monotonic() + TIMEOUT
    while len(paused := [e["params"] for e in browser.events if e.get("method") == "Fetch.requestPaused"]) < 2:
        assert time.monotonic() < deadline, "the two searches were not sent"
        browser.evaluate("1")  # reads the events that came meanwhile
    held = {int(p["request"]["url"].split("/api/tracks/")[1].split("/")[0]): p["requestId"] for p in paused}
    browser.call("Fetch.continueRequest", {"requestId": held[second["id"]]})
    shown = "[...document.querySelectorAll('#neighbours button.track')].map(b => +b.dataset.id)"
    later = json.dumps(expected[second["id"]], separators=(",", ":"))
    assert browser.wait_for(f"JSON.stringify({shown}) === {json.dumps(later)}")
    browser.call("Fetch.continueRequest", {"requestId": held[first["id"]]})
    browser.call("Fetch.disable")
    time.sleep(2)  # the first answer arrives and is dropped
    assert browser.evaluate(shown) == expected[second["id"]]
    assert browser.evaluate("window.mess.state.selected") == second["id"]
    assert browser.evaluate("document.getElementById('neighbours-caption').textContent").startswith(
        f"like {second['name']},")
    assert browser.exceptions() == []


def test_a_track_whose_file_changed_since_extraction_says_why_it_does_not_play(small: SimpleNamespace,
                                                                                browser: Browser) -> None:
    """The server refuses a file changed since extraction (409); the page's player stayed silent with no word."""
    browser.open(small.url + "/")
    browser.wait_for("window.mess && window.mess.state.points.length")
    browser.evaluate(f"selectTrack({small.changed.id}); 1")
    meta = browser.wait_for("(t => t.startsWith('cannot play') && t)"
                            "(document.getElementById('now-meta').textContent)")
    assert "changed since it was extracted" in meta and Path(small.changed.path).name in meta, meta
    assert browser.exceptions() == []


def test_a_file_the_browser_cannot_decode_says_so(small: SimpleNamespace, browser: Browser) -> None:
    """A WavPack track (served whole, but Chromium has no WavPack decoder) and the same file uploaded: the player
    stayed silent and the page said nothing."""
    said = "cannot play: this browser cannot decode the file's format"
    browser.open(small.url + "/")
    browser.wait_for("window.mess && window.mess.state.points.length")
    browser.evaluate(f"selectTrack({small.wavpack.id}); 1")
    meta = browser.wait_for("(t => t.includes('cannot') && t)(document.getElementById('now-meta').textContent)")
    assert meta.endswith(f"tone.wv · {said}"), meta
    data = base64.b64encode((small.music / "tone.wv").read_bytes()).decode()
    browser.evaluate("(() => { const t = new DataTransfer(); t.items.add(new File([Uint8Array.from(atob("
                     f"{json.dumps(data)}), c => c.charCodeAt(0))], 'copy.wv')); "
                     "document.getElementById('upload-file').files = t.files;"
                     " document.getElementById('upload-form').requestSubmit(); })()")
    meta = browser.wait_for("(t => t.startsWith('already') && t.includes('cannot') && t)"
                            "(document.getElementById('now-meta').textContent)")
    assert meta == f"already in the collection · {said}", meta
    assert browser.exceptions() == []


def test_the_page_search_finds_a_name_whatever_its_unicode_normal_form(small: SimpleNamespace,
                                                                      browser: Browser) -> None:
    """A track whose file was named on macOS (NFD: 'e' and a combining accent) was not found by the page's search
    box when 'Café' was typed as one letter (NFC), nor an NFC name by NFD text; each form now finds the other."""
    nfc, nfd = unicodedata.normalize("NFC", "Café Été"), unicodedata.normalize("NFD", "Café Été")
    browser.open(small.url + "/")
    browser.wait_for("window.mess && window.mess.state.points.length")
    for name, typed in ((nfd, nfc), (nfc, nfd), (nfd, nfd.upper())):
        hits = browser.evaluate(
            f"(() => {{ const p = window.mess.state.points; p.forEach(q => {{ q.name = 'x'; q.file = 'x.flac'; }});"
            f" p[0].file = {json.dumps(name + '.flac')}; const s = document.getElementById('search');"
            f" s.value = {json.dumps(typed.split()[0])}; s.dispatchEvent(new Event('input'));"
            " return document.querySelectorAll('#search-results button.track').length; })()")
        assert hits == 1, (name, typed)
    assert browser.exceptions() == []
