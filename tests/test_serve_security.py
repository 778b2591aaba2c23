"""The server against hostile or careless clients, over real HTTP to a real `mess serve` process.

DNS rebinding (a foreign Host), cross-origin writes, a token when one is set, an upload
flood that must not stall reads, clients that trickle their bodies, and a tiny FLAC
holding 10 hours of silence.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi import FastAPI
from fastapi.testclient import TestClient
from ports import served_at
from processes import running

from conftest import mess_here
from mess.serve.security import LOOPBACK_HOSTS, AccessPolicy, _hostname, host_name, install
from mess.serve.uploads import TooSlow, limited

MESS = [sys.executable, "-m", "mess.cli"]


@pytest.fixture(scope="module")
def dsp_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve-security")
    music = root / "music"
    music.mkdir()
    t = np.arange(22050 * 5) / 22050
    for i in range(6):
        y = 0.3 * np.sin(2 * np.pi * 110 * 2 ** (i / 5) * t) * (1 + 0.5 * np.sin(2 * np.pi * (i + 1) * t))
        sf.write(music / f"tone{i}.wav", y.astype(np.float32), 22050)
    out = mess_here("extract", str(music), "--model", "dsp", "--window", "4", "--store", str(root / "store"))
    assert out.returncode == 0, out.stderr
    return root / "store"


def _serve(store: Path, *args: str) -> Iterator[str]:
    proc = subprocess.Popen([*MESS, "serve", "--store", str(store), "--port", "0", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base = served_at(proc)
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(base + "/api/health", timeout=2, headers={"Authorization": "Bearer s3cret"}).is_success:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else "no answer"
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(dsp_store: Path) -> Iterator[str]:
    yield from _serve(dsp_store, "--allow-indexing", "--allowed-host", "music.lan")


def test_foreign_host_names_are_refused(server: str) -> None:
    evil = httpx.get(server + "/api/tracks", headers={"Host": "evil.example"})
    assert evil.status_code == 400 and "--allowed-host evil.example" in evil.json()["detail"]
    assert httpx.get(server + "/", headers={"Host": "evil.example:8000"}).status_code == 400
    assert httpx.get(server + "/api/tracks", headers={"Host": "music.lan:8000"}).status_code == 200
    assert httpx.get(server + "/api/tracks").status_code == 200
    for odd in ("localhost:@evil.example", "localhost:junk/../x", "127.0.0.1:99999999", "[::1]evil"):
        assert httpx.get(server + "/api/tracks", headers={"Host": odd}).status_code == 400, odd  # were 200


@pytest.mark.parametrize("name", ["a b", "http://music.lan", "music.lan/x", "a..b", "-lan", "*.lan", "bücher.lan", ""])
def test_an_allowed_host_no_request_could_name_is_refused(tmp_path: Path, name: str) -> None:
    """--allowed-host 'a b' was accepted: the server started and answered 400 to every request by that name."""
    out = mess_here("serve", "--allowed-host", "music.lan", "--allowed-host", name, "--store", str(tmp_path / "none"),
                    env={"COLUMNS": "300"}, timeout=60)
    assert out.returncode == 1 and out.stderr.startswith(f"error: invalid host name {name!r}: "), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_allowed_host_names_addresses_and_ports() -> None:
    given = ["Music.LAN:8000", "my_box", "nas.", "192.168.1.5", "[fe80::1]:80", "::1"]
    assert AccessPolicy.build(given).hosts >= {"music.lan", "my_box", "nas.", "192.168.1.5", "fe80::1", "::1"}


def test_a_file_replaced_by_a_link_is_not_served(server: str, dsp_store: Path, tmp_path: Path) -> None:
    """Catalogued paths are resolved; a link put in a file's place later (a shared folder) used to be followed."""
    track = next(t for t in httpx.get(server + "/api/tracks").json()["items"] if t["file"] == "tone5.wav")
    original = dsp_store.parent / "music" / "tone5.wav"
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    kept = original.rename(original.with_name("kept.bin"))
    try:
        original.symlink_to(secret)
        refused = httpx.get(f"{server}/api/tracks/{track['id']}/audio")
        assert refused.status_code == 404 and "replaced by a link" in refused.json()["detail"]
        assert b"root:x" not in refused.content
    finally:
        original.unlink()
        kept.rename(original)
    assert httpx.get(f"{server}/api/tracks/{track['id']}/audio").status_code == 200


def test_cross_origin_writes_are_refused(server: str, dsp_store: Path) -> None:
    indexes = dsp_store / "indexes"
    before = sorted(indexes.glob("*")) if indexes.exists() else []
    port = server.rsplit(":", 1)[1]
    foreign = httpx.post(server + "/api/index", headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403
    sibling = httpx.post(server + "/api/index", headers={"Origin": "http://127.0.0.1:1"})  # another local site
    assert sibling.status_code == 403
    assert (sorted(indexes.glob("*")) if indexes.exists() else []) == before
    same = httpx.post(server + "/api/index", headers={"Origin": f"http://127.0.0.1:{port}"})
    assert same.status_code == 200 and sorted(indexes.glob("*.faiss"))
    assert httpx.post(server + "/api/index").status_code == 200  # not a browser: no Origin


def test_no_other_site_may_frame_the_page_and_no_response_is_sniffed(server: str) -> None:
    """A page of another site could frame this one and have its user click a same-origin write (save a playlist,
    build an index), which the Origin check lets through; the page, the API, static files and refusals all say
    they may not be framed, must not be type-sniffed and send no Referer (a ?token= URL)."""
    answers = [httpx.get(server + path) for path in ("/", "/api/tracks", "/app.js", "/api/tracks/999999")]
    answers.append(httpx.get(server + "/api/tracks", headers={"Host": "evil.example"}))
    answers.append(httpx.post(server + "/api/index", headers={"Origin": "http://evil.example"}))
    assert [a.status_code for a in answers] == [200, 200, 200, 404, 400, 403]
    for answer in answers:
        assert answer.headers["x-frame-options"] == "DENY", answer.url
        assert answer.headers["content-security-policy"] == "frame-ancestors 'none'", answer.url
        assert answer.headers["x-content-type-options"] == "nosniff", answer.url
        assert answer.headers["referrer-policy"] == "no-referrer", answer.url


def test_a_malformed_origin_is_a_foreign_one(server: str) -> None:
    """An Origin that is no URL (an unclosed IPv6 bracket) made urlsplit raise: a 500 instead of the 403."""
    for origin in ("http://[::1", "http://127.0.0.1]", "http://[127.0.0.1]"):
        refused = httpx.post(server + "/api/index", headers={"Origin": origin})
        assert refused.status_code == 403, (origin, refused.text)
        assert refused.json()["detail"] == "cross-origin requests may not change anything"


def test_a_token_guards_everything_and_the_page_sets_a_cookie(dsp_store: Path) -> None:
    refused = mess_here("serve", "--store", str(dsp_store), "--host", "0.0.0.0", env={"MESS_TOKEN": ""}, timeout=60)
    assert refused.returncode == 1 and "--token" in refused.stderr
    for base in _serve(dsp_store, "--token", "s3cret"):
        assert httpx.get(base + "/api/tracks").status_code == 401
        assert httpx.get(base + "/api/tracks", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(base + "/api/tracks", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        with httpx.Client(base_url=base) as browser:
            assert browser.get("/").status_code == 401
            assert browser.get("/?token=s3cret").status_code == 200
            assert browser.get("/api/tracks").status_code == 200  # the cookie carries the token
            assert list(browser.cookies) == [f"mess_token_{base.rsplit(':', 1)[1]}"]  # one per server port
        with httpx.Client(base_url=base, cookies={f"mess_token_{base.rsplit(':', 1)[1]}": "an old token"}) as stale:
            assert stale.get("/api/tracks").status_code == 401
            assert stale.get("/?token=s3cret").status_code == 200  # the query wins (an old cookie locked users out)
            assert stale.get("/api/tracks").status_code == 200


def _upload(base: str, name: str, data: bytes) -> httpx.Response:
    return httpx.post(base + "/api/similar/upload", files={"file": (name, data, "audio/wav")}, timeout=300)


def test_an_upload_flood_gets_503_and_reads_stay_fast(server: str) -> None:
    t = np.arange(22050 * 300) / 22050  # one 5-minute upload keeps the worker busy
    slow = io.BytesIO()
    sf.write(slow, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 22050, format="WAV")
    tiny = io.BytesIO()
    sf.write(tiny, (0.3 * np.sin(2 * np.pi * 330 * t[:22050 * 2])).astype(np.float32), 22050, format="WAV")
    codes: list[int] = []
    retry_after: list[str | None] = []

    def send(name: str, data: bytes) -> None:
        r = _upload(server, name, data)
        codes.append(r.status_code)
        retry_after.append(r.headers.get("retry-after"))

    threads = [threading.Thread(target=send, args=("slow.wav", slow.getvalue()))]
    threads += [threading.Thread(target=send, args=(f"tiny{i}.wav", tiny.getvalue())) for i in range(40)]
    for th in threads:
        th.start()
    latencies = []
    while any(th.is_alive() for th in threads):
        start = time.perf_counter()
        assert httpx.get(server + "/api/health", timeout=30).status_code == 200
        latencies.append(time.perf_counter() - start)
        time.sleep(0.1)
    for th in threads:
        th.join()
    assert codes.count(503) >= 30 and set(codes) <= {200, 503}, codes
    assert all(r == "10" for c, r in zip(codes, retry_after, strict=False) if c == 503)
    assert np.median(latencies) < 0.5 and max(latencies) < 5.0, latencies  # was 14 s behind the queue


def _trickle(base: str, stop: threading.Event) -> None:
    """An upload whose body comes one byte a second until ``stop`` (a slow or hostile client)."""
    host, port = base.removeprefix("http://").split(":")
    body = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n" + b"\0" * 5000
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(f"POST /api/similar/upload HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: multipart/form-data; "
                     f"boundary=b\r\nContent-Length: {len(body) + 10}\r\n\r\n".encode())
        for byte in body:
            if stop.wait(1.0):
                return
            conn.sendall(bytes([byte]))


def test_clients_that_trickle_their_bodies_do_not_hold_the_upload_queue(server: str) -> None:
    stop = threading.Event()
    slow = [threading.Thread(target=_trickle, args=(server, stop)) for _ in range(4)]  # as many as the queue
    for th in slow:
        th.start()
    try:
        time.sleep(2.0)
        tiny = io.BytesIO()
        t = np.arange(22050 * 3) / 22050
        sf.write(tiny, (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 22050, format="WAV")
        r = _upload(server, "tiny.wav", tiny.getvalue())
        assert r.status_code == 200, r.text  # was 503: each trickling body held a place in the queue
    finally:
        stop.set()
        for th in slow:
            th.join()


def test_the_body_rate_rule() -> None:
    async def body(pause: float) -> AsyncIterator[bytes]:
        for _ in range(8):
            await asyncio.sleep(pause)
            yield b"x" * 100

    async def read(pause: float) -> bytes:
        return b"".join([c async for c in limited(body(pause), 10_000, grace=0.3, min_rate=2000)])

    assert asyncio.run(read(0.0)) == b"x" * 800  # in time: every byte passes through
    with pytest.raises(TooSlow):  # 100 bytes per 0.1 s falls behind 0.3 s + 1 s per 2000 bytes
        asyncio.run(read(0.1))


def test_ten_hours_of_silence_are_refused_from_the_header(server: str, tmp_path: Path) -> None:
    path = tmp_path / "silence.flac"
    with sf.SoundFile(path, "w", samplerate=1000, channels=1, format="FLAC") as f:
        for _ in range(36):
            f.write(np.zeros(1_000_000, dtype=np.int16))
    assert path.stat().st_size < 2_000_000
    start = time.perf_counter()
    r = httpx.post(server + "/api/similar/upload", files={"file": ("silence.flac", path.read_bytes(), "audio/flac")},
                   timeout=300)
    assert r.status_code == 400 and "uploads may last at most 20 min" in r.json()["detail"]
    assert "silence.flac" in r.json()["detail"] and time.perf_counter() - start < 60


def test_a_port_in_use_is_one_line_and_port_0_says_which_port(dsp_store: Path) -> None:
    """A port in use printed 'serving ... at http://127.0.0.1:PORT/' (another server's page), uvicorn's error and then
    the embed worker's BrokenPipeError traceback (exit 3); `--port 0` printed ':0' for the free port it got."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run([*MESS, "serve", "--store", str(dsp_store), "--port", str(port)],
                              capture_output=True, text=True, timeout=120)
    said = busy.stdout + busy.stderr
    assert busy.returncode == 1 and "Traceback" not in said and "serving" not in said, said
    assert said.strip().splitlines() == [f"error: cannot serve at http://127.0.0.1:{port}/: Address already in use; "
                                         "is another server using that port? pick one with --port"], said
    proc = subprocess.Popen([*MESS, "serve", "--store", str(dsp_store), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        got = int(line.split("http://127.0.0.1:", 1)[1].split("/", 1)[0])
        assert got > 0 and httpx.get(f"http://127.0.0.1:{got}/api/health", timeout=60).json()["status"] == "ok", line
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_an_ipv6_address_in_brackets_is_served(dsp_store: Path) -> None:
    """`--host [::1]`, as a URL writes it, is a loopback address to the token rule and the Host check, but was bound
    as written: 'Name or service not known' after the page's address was printed as 'http://[[::1]]:8000/'."""
    proc = subprocess.Popen([*MESS, "serve", "--store", str(dsp_store), "--host", "[::1]", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "at http://[::1]:" in line, line + proc.stdout.read() if proc.poll() is not None else line
        port = int(line.split("http://[::1]:", 1)[1].split("/", 1)[0])
        assert httpx.get(f"http://[::1]:{port}/api/health", timeout=60).json()["status"] == "ok"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("upload_first", [False, True])
def test_ctrl_c_stops_the_server_without_a_traceback(dsp_store: Path, upload_first: bool) -> None:
    """Ctrl-C in the terminal (SIGINT to the whole foreground process group) also interrupted the embed worker,
    wherever it was (importing, or waiting for an upload): a KeyboardInterrupt traceback on every stop."""
    proc = subprocess.Popen([*MESS, "serve", "--store", str(dsp_store), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        base = served_at(proc)
        deadline = time.time() + 120
        while not _answers(base + "/api/health"):
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.2)
        if upload_first:  # the worker has its model loaded and waits for the next upload
            wav = io.BytesIO()
            sf.write(wav, 0.3 * np.sin(np.arange(22050 * 3) / 9), 22050, format="WAV")
            r = httpx.post(base + "/api/similar/upload", files={"file": ("a.wav", wav.getvalue(), "audio/wav")},
                           timeout=120)
            assert r.status_code == 200, r.text
        os.killpg(proc.pid, signal.SIGINT)  # at once after the first answer: the worker is still starting
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).is_success
    except httpx.HTTPError:
        return False


def test_a_second_ctrl_c_ends_an_upload_being_embedded(dsp_store: Path) -> None:
    """Out of the terminal's reach (its own process group), the embed worker kept embedding after a second Ctrl-C:
    the server waited for the file (up to --embed-timeout) before it exited. Now the worker is killed and it exits."""
    proc = subprocess.Popen([*MESS, "serve", "--store", str(dsp_store), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wav = io.BytesIO()
    sf.write(wav, 0.3 * np.sin(np.arange(22050 * 3) / 9), 22050, format="WAV")
    upload = {"file": ("a.wav", wav.getvalue(), "audio/wav")}
    answers: list[httpx.Response] = []
    worker = None
    try:
        base = served_at(proc)
        deadline = time.time() + 120
        while not _answers(base + "/api/health"):
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.2)
        assert httpx.post(base + "/api/similar/upload", files=upload, timeout=120).status_code == 200
        worker = running("mess.serve.embed_worker", under=proc.pid)[0].pid  # (forked by its zygote)
        os.kill(worker, signal.SIGSTOP)  # a file that takes long to embed
        sender = threading.Thread(target=lambda: answers.append(
            httpx.post(base + "/api/similar/upload", files=upload, timeout=120)))
        sender.start()
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)  # the first lets requests finish
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=30)  # was --embed-timeout (120 s)
        sender.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if worker is not None and Path(f"/proc/{worker}").exists():
            os.kill(worker, signal.SIGKILL)  # stopped, it would outlive the test
    # answered, not left waiting: the worker's death (400), or the forced exit's cancelled request (500) when the
    # server stops before that answer is sent
    assert answers and answers[0].status_code in (400, 500), answers


def _guarded(policy: AccessPolicy, base_url: str = "http://localhost:8765") -> TestClient:
    """A TestClient of a bare app behind ``policy``: the guard alone, in this process."""
    app = FastAPI()
    install(app, policy)

    @app.api_route("/x", methods=["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"])
    def x() -> dict:
        return {"ok": True}

    return TestClient(app, base_url=base_url)


def test_host_names_are_read_as_a_url_parser_reads_them() -> None:
    """The Host check in this process, against urllib's reading of the same netloc (valid ports) and of
    values whose port is none (left whole, so that no allowed name matches them)."""
    for netloc in ("Example.ORG:8000", "localhost", " localhost:65535 ", "[::1]:80", "[fe80::1]", "127.0.0.1:0",
                   "localhost:"):
        assert _hostname(netloc) == urlsplit("//" + netloc.strip()).hostname, netloc
    for netloc in ("localhost:65536", "localhost:@evil.example", "localhost:8o", "[::1]evil", "[::1]:99999",
                   "localhost:\u0663"):  # an Arabic-Indic digit: str.isdigit, not a port
        assert _hostname(netloc) == netloc.strip().lower(), netloc
    assert _hostname("::1") == "::1" and _hostname("FE80::1") == "fe80::1"  # a bare IPv6 address has no port
    longest = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253 characters, DNS's limit
    assert host_name(longest) == longest and host_name("a" * 63 + ".lan.") == "a" * 63 + ".lan."
    for too_long in (longest + "b", "a" * 64 + ".lan"):
        with pytest.raises(ValueError, match="invalid host name"):
            host_name(too_long)
    assert AccessPolicy.build([], token="").token is None and AccessPolicy.build().hosts == LOOPBACK_HOSTS
    with pytest.raises(dataclasses.FrozenInstanceError):  # a running server's policy cannot be widened
        AccessPolicy.build().token = "x"  # type: ignore[misc]


def test_the_guard_checks_host_origin_and_token_of_each_request() -> None:
    with _guarded(AccessPolicy.build(["music.lan"])) as open_:
        assert open_.get("/x").json() == {"ok": True}
        assert open_.get("/x", headers={"Host": "music.lan:1"}).status_code == 200
        refused = open_.get("/x", headers={"Host": "evil.example"})
        assert refused.status_code == 400 and "--allowed-host evil.example" in refused.json()["detail"]
        assert open_.get("/x", headers={"Host": ""}).status_code == 400
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            assert open_.request(method, "/x", headers={"Origin": "http://evil.example"}).status_code == 403, method
            assert open_.request(method, "/x", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403, method
            assert open_.request(method, "/x", headers={"Origin": "http://LOCALHOST:8765"}).status_code == 200
            assert open_.request(method, "/x", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
            assert open_.request(method, "/x", headers={"Origin": "http://[::1"}).status_code == 403  # no URL
        for method in ("GET", "HEAD", "OPTIONS"):  # reading from another site changes nothing
            assert open_.request(method, "/x", headers={"Origin": "http://evil.example",
                                                        "Sec-Fetch-Site": "cross-site"}).status_code == 200, method
    with _guarded(AccessPolicy.build(token="s3cret")) as browser:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer "},
                        {"Authorization": "Basic s3cret"}, {"Authorization": "s3cret"}):
            refused = browser.get("/x", headers=headers)
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer", headers
        assert browser.get("/x", headers={"Authorization": "bearer  s3cret "}).status_code == 200
        assert not browser.cookies  # a header's token sets no cookie
        assert browser.get("/x", params={"token": "wrong"}).status_code == 401 and not browser.cookies
        opened = browser.get("/x", params={"token": "s3cret"})
        assert opened.status_code == 200  # a page's scripts cannot read the cookie, nor other sites' requests send it
        assert {"httponly", "samesite=strict"} <= {a.strip().lower() for a in opened.headers["set-cookie"].split(";")}
        assert dict(browser.cookies) == {"mess_token_8765": "s3cret"}
        assert browser.get("/x").status_code == 200  # the cookie carries it
    with _guarded(AccessPolicy.build(token="s3cret"), "http://localhost") as default_port:
        assert default_port.get("/x", params={"token": "s3cret"}).status_code == 200
        assert dict(default_port.cookies) == {"mess_token": "s3cret"} and default_port.get("/x").status_code == 200


def test_a_host_whose_port_has_thousands_of_digits_is_a_host_refused() -> None:
    """A Host header 'localhost:' + 5,000 digits (a header of 5 KB, which the server reads) made the guard's int()
    raise ValueError (Python refuses integers of over 4,300 digits): a 500 and a traceback in the server log. Such a
    port is no port: the whole value is the host, refused 400 as any other unknown one; an --allowed-host of it is
    refused as an invalid host name."""
    digits = "1" * 5000
    assert _hostname(f"localhost:{digits}") == f"localhost:{digits}"
    assert _hostname(f"localhost:{'0' * 5000}80") == "localhost" == urlsplit(f"//localhost:{'0' * 5000}80").hostname
    with _guarded(AccessPolicy.build()) as client:
        refused = client.get("/x", headers={"Host": f"localhost:{digits}"})
        assert refused.status_code == 400 and refused.json()["detail"].startswith("host 'localhost:111")
        assert client.get("/x", headers={"Host": "localhost:00000000080"}).status_code == 200  # leading zeros: 80
    with pytest.raises(ValueError, match="invalid host name"):
        AccessPolicy.build([f"music.lan:{digits}"])
