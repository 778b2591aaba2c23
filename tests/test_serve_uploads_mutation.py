"""The upload path in-process: :func:`receive_upload` behind a route of its own (no store, no embedding child), the
body's size and rate rules on a real ASGI request fed chunk by chunk, the type checks and the queue places.

Expected answers come from the fixtures: the bytes sent (their SHA-256 and length), the limits each test sets, the
names as the request wrote them."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import json
import os
import resource
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from mess.constants import AUDIO_EXTENSIONS
from mess.extract.child import Child
from mess.serve import uploads
from mess.serve.errors import http_error
from mess.serve.uploads import EmbedWorker, TooLarge, TooSlow, check_audio_type, limited, receive_upload

LIMIT = 1000  # bytes of a file part the route takes
PARAMETERS = ("k", "layer")


def _app(limit: int = LIMIT) -> FastAPI:
    app = FastAPI()
    app.add_exception_handler(StarletteHTTPException, http_error)

    @app.post("/up")
    async def up(request: Request) -> dict:
        saved = await receive_upload(request, limit, PARAMETERS)
        try:
            data = saved.path.read_bytes()
            return {"file": saved.filename, "size": saved.size, "sha": hashlib.sha256(data).hexdigest(),
                    "suffix": saved.path.suffix, "dir": str(saved.path.parent)}
        finally:
            saved.path.unlink()

    return app


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temp dir the uploads are written to, this test's own (to count what is left there)."""
    where = tmp_path / "tmp"
    where.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(where))
    return where


@pytest.fixture
def client(private_tmp: Path) -> Iterator[TestClient]:
    with TestClient(_app(), raise_server_exceptions=False) as c:
        yield c


def _body(parts: list[tuple[bytes, bytes]], boundary: str | None = None) -> tuple[bytes, str]:
    """A multipart body of ``parts`` (raw header lines, data) and its Content-Type."""
    b = boundary or uuid.uuid4().hex
    out = b"".join(b"--" + b.encode() + b"\r\n" + head + b"\r\n\r\n" + data + b"\r\n" for head, data in parts)
    return out + b"--" + b.encode() + b"--\r\n", f"multipart/form-data; boundary={b}"


def _file(name: bytes, data: bytes, ctype: bytes = b"audio/wav", field: bytes = b"file") -> tuple[bytes, bytes]:
    return (b'Content-Disposition: form-data; name="' + field + b'"; filename="' + name + b'"\r\nContent-Type: '
            + ctype, data)


def _post(client: TestClient, *parts: tuple[bytes, bytes], ctype: str | None = None) -> object:
    body, written = _body(list(parts))
    return client.post("/up", content=body, headers={"content-type": ctype or written})


def _detail(answer: object, status: int) -> str:
    assert answer.status_code == status, (answer.status_code, answer.text[:300])
    assert answer.headers["content-type"] == "application/json"
    return answer.json()["detail"]


# --- check_audio_type -------------------------------------------------------------------------------------------

def test_an_audio_name_gives_its_lower_case_extension_and_other_names_are_415_listing_the_types() -> None:
    assert check_audio_type("Song.FLAC", "audio/flac") == ".flac"
    assert check_audio_type("x" * (uploads.MAX_FILENAME - 4) + ".wav", None) == ".wav"  # the longest name taken
    listed = ", ".join(sorted(AUDIO_EXTENSIONS))
    for name, shown in (("notes.txt", "'.txt'"), ("README", "'(none)'"), ("", "'(none)'"), ("a.TXT", "'.txt'")):
        with pytest.raises(HTTPException) as refused:
            check_audio_type(name, "audio/wav")
        assert refused.value.status_code == 415
        assert refused.value.detail == f"unsupported file type {shown}; upload one of {listed}"


def test_a_name_ending_past_an_audio_extension_is_refused_naming_that_ending() -> None:
    """'a.wav/' was refused as "unsupported file type '.wav'", a type the same message lists (pathlib drops the
    trailing '/'); the message names the name's real ending."""
    for name, shown in (("a.wav/", "'.wav/'"), ("b.Mp3//", "'.Mp3//'")):
        with pytest.raises(HTTPException) as refused:
            check_audio_type(name, "audio/wav")
        assert refused.value.status_code == 415
        assert refused.value.detail.startswith(f"unsupported file type {shown}; upload one of "), refused.value.detail

def test_a_name_one_past_the_limit_is_a_400_counting_its_characters() -> None:
    name = "é" * (uploads.MAX_FILENAME - 3) + ".wav"  # characters, not bytes
    with pytest.raises(HTTPException) as refused:
        check_audio_type(name, "audio/wav")
    assert refused.value.status_code == 400
    assert refused.value.detail == f"file name too long ({uploads.MAX_FILENAME + 1} characters; at most 1024 " \
                                   "characters)"


@pytest.mark.parametrize("ctype", [None, "", "audio/wav", "Audio/X-WAV; rate=44100", " video/mp4 ; codecs=x",
                                   "application/octet-stream", "APPLICATION/OCTET-STREAM; name=a.wav"])
def test_audio_video_and_octet_stream_content_types_are_taken_with_any_parameters(ctype: str | None) -> None:
    assert check_audio_type("a.wav", ctype) == ".wav"


@pytest.mark.parametrize("ctype", ["text/plain", "text/audio", "audiox/wav", "application/ogg", "image/png; audio/x"])
def test_other_content_types_are_415_naming_them(ctype: str) -> None:
    with pytest.raises(HTTPException) as refused:
        check_audio_type("a.wav", ctype)
    assert refused.value.status_code == 415
    assert refused.value.detail == f"unsupported content type {ctype!r}; expected audio/*"


# --- receive_upload behind a route ------------------------------------------------------------------------------

def test_a_file_is_saved_whole_with_its_extension_and_its_name_without_folders(client: TestClient,
                                                                              private_tmp: Path) -> None:
    data = bytes(range(256)) * 3 + b"\r\n--not-the-boundary\r\n"
    for name, shown, suffix in ((b"song.WAV", "song.WAV", ".wav"), (b"../../etc/x.flac", "x.flac", ".flac"),
                                (b"a/b/c.ogg ", "c.ogg ", ".ogg"), (b"caf\xc3\xa9.mp3", "café.mp3", ".mp3"),
                                (b"caf\xe9.wav", "caf\xe9.wav", ".wav"),  # not UTF-8: read as Latin-1
                                (b"a\x00b.wav", "a\x00b.wav", ".wav"), (b"C:\\m\\y.wav", "y.wav", ".wav")):
        answer = _post(client, _file(name, data))
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"file": shown, "size": len(data), "sha": hashlib.sha256(data).hexdigest(),
                                 "suffix": suffix, "dir": str(private_tmp)}
    assert list(private_tmp.iterdir()) == []


def test_a_file_of_exactly_the_limit_is_taken_and_one_byte_more_is_413_leaving_no_file(client: TestClient,
                                                                                      private_tmp: Path) -> None:
    fits = _post(client, _file(b"a.wav", b"\x01" * LIMIT))
    assert fits.status_code == 200 and fits.json()["size"] == LIMIT, fits.text
    over = _post(client, _file(b"a.wav", b"\x01" * (LIMIT + 1)))
    assert _detail(over, 413) == f"upload larger than the {LIMIT / 2**20:.3g} MiB limit"
    assert list(private_tmp.iterdir()) == []


def test_an_empty_file_is_a_400_leaving_no_file(client: TestClient, private_tmp: Path) -> None:
    assert _detail(_post(client, _file(b"a.wav", b"")), 400) == "the uploaded file is empty"
    assert list(private_tmp.iterdir()) == []


def test_a_body_that_is_no_multipart_form_is_415(client: TestClient) -> None:
    for ctype in ("application/json", "multipart/mixed; boundary=x", "text/plain", None):
        headers = {"content-type": ctype} if ctype else {}
        answer = client.post("/up", content=b"abc", headers=headers)
        assert _detail(answer, 415) == "send the audio file as multipart/form-data in a field named 'file'"
    body, ctype = _body([_file(b"a.wav", b"abc")])
    upper = client.post("/up", content=body, headers={"content-type": ctype.replace("multipart/form-data",
                                                                                   "MULTIPART/Form-Data")})
    assert upper.status_code == 200 and upper.json()["size"] == 3


@pytest.mark.parametrize(("written", "status", "detail"), [
    ('multipart/form-data; boundary="{b}"', 200, None),
    ("multipart/form-data;boundary={b};;;", 200, None),
    ("multipart/form-data; charset=no-such; boundary={b}", 200, None),
    ("multipart/form-data; boundary={b}; charset=utf-16", 400, "no file in the form field 'file'"),
    ("multipart/form-data; boundary=", 400, "malformed upload: Invalid multipart data."),
    ("multipart/form-data; boundary={b}; boundary=other", 400, "malformed upload: Invalid multipart data."),
])
def test_odd_content_type_parameters_are_read_or_refused_in_words(client: TestClient, written: str, status: int,
                                                                   detail: str | None) -> None:
    boundary = uuid.uuid4().hex
    body, _ = _body([_file(b"a.wav", b"abc")], boundary)
    answer = client.post("/up", content=body, headers={"content-type": written.format(b=boundary)})
    if detail is None:
        assert answer.status_code == 200 and answer.json()["size"] == 3, answer.text
    else:
        assert _detail(answer, status) == detail

def test_a_declared_length_past_the_limit_is_413_before_the_body_is_read(client: TestClient) -> None:
    body, ctype = _body([_file(b"a.wav", b"abc")])
    most = LIMIT + uploads._MULTIPART_OVERHEAD
    over = client.post("/up", content=body, headers={"content-type": ctype, "content-length": str(most + 1)})
    assert _detail(over, 413).startswith("upload larger than")
    # a length that is no plain ASCII number is left to the body (superscript two is a digit to str.isdigit)
    for odd in (b"\xb2", b"0x10"):
        answer = client.post("/up", content=body, headers={"content-type": ctype, "content-length": odd})
        assert answer.status_code == 200, (odd, answer.text)
    # the largest length taken, and the body's own length written with leading zeros to 19 digits (RFC 9110: 1*DIGIT)
    for fits in (str(most), str(len(body)).zfill(19)):
        answer = client.post("/up", content=body, headers={"content-type": ctype, "content-length": fits})
        assert answer.status_code == 200, (fits, answer.text)
    for huge in ("1" + "0" * 19, "9" * 5000):  # past what int() reads (4,300 digits) too
        answer = client.post("/up", content=body, headers={"content-type": ctype, "content-length": huge})
        assert _detail(answer, 413).startswith("upload larger than")


def test_a_form_of_more_than_eight_fields_besides_the_file_is_400(client: TestClient) -> None:
    def fields(n: int) -> list[tuple[bytes, bytes]]:
        return [(f'Content-Disposition: form-data; name="f{i}"'.encode(), b"x") for i in range(n)]

    assert _post(client, _file(b"a.wav", b"abc"), *fields(8)).status_code == 200
    assert _detail(_post(client, _file(b"a.wav", b"abc"), *fields(9)), 400) == \
        "malformed upload: Too many fields. Maximum number of fields is 8."


def test_form_fields_named_as_query_parameters_are_400_naming_them_in_order(client: TestClient) -> None:
    song = _file(b"a.wav", b"abc")

    def field(name: bytes) -> tuple[bytes, bytes]:
        return b'Content-Disposition: form-data; name="' + name + b'"', b"5"

    one = _detail(_post(client, song, field(b"k"), field(b"caption")), 400)
    assert one == "k goes in the query (/up?k=...), not in the form, where it would be ignored"
    two = _detail(_post(client, field(b"layer"), song, field(b"k")), 400)
    assert two == "k and layer go in the query (/up?k=...), not in the form, where they would be ignored"
    other = _post(client, song, field(b"caption"))
    assert other.status_code == 200 and other.json()["size"] == 3


def test_a_form_without_a_file_part_named_file_is_400(client: TestClient) -> None:
    for parts in ([_file(b"a.wav", b"abc", field=b"other")], [(b'Content-Disposition: form-data; name="file"', b"x")]):
        assert _detail(_post(client, *parts), 400) == "no file in the form field 'file'"


def test_two_files_a_truncated_body_and_a_missing_boundary_are_400_malformed(client: TestClient,
                                                                            private_tmp: Path) -> None:
    two = _post(client, _file(b"a.wav", b"abc"), _file(b"b.wav", b"def"))
    assert _detail(two, 400) == "malformed upload: Too many files. Maximum number of files is 1."
    body, ctype = _body([_file(b"a.wav", b"\x01" * 500)])
    cut = client.post("/up", content=body[:300], headers={"content-type": ctype})
    assert cut.status_code == 400 and cut.json()["detail"] in ("no file in the form field 'file'",
                                                               "malformed upload: Invalid multipart data.")
    nothing = client.post("/up", content=body, headers={"content-type": "multipart/form-data"})
    assert _detail(nothing, 400) == "malformed upload: Missing boundary in multipart."
    assert list(private_tmp.iterdir()) == []


def test_a_content_disposition_over_the_parser_s_line_is_400_as_a_name_too_long(client: TestClient) -> None:
    answer = _post(client, _file(b"a" * 5000 + b".wav", b"abc"))
    assert _detail(answer, 400) == "file name too long (its Content-Disposition header is over 4 KiB; at most 1024 " \
                                   "characters)"
    other = _post(client, _file(b"a.wav", b"abc", ctype=b"audio/wav; x=" + b"d" * 5000))
    assert _detail(other, 400) == "malformed upload: Invalid multipart data."


def test_a_file_named_only_by_filename_star_takes_that_name(client: TestClient) -> None:
    head = b"Content-Disposition: form-data; name=\"file\"; filename*=UTF-8''caf%C3%A9%20%E2%99%AB.wav"
    answer = _post(client, (head + b"\r\nContent-Type: audio/wav", b"abc"))
    assert answer.status_code == 200 and answer.json()["file"] == "café ♫.wav", answer.text
    both = (b"Content-Disposition: form-data; name=\"file\"; filename=\"plain.wav\"; filename*=UTF-8''other.wav"
            b"\r\nContent-Type: audio/wav")
    assert _post(client, (both, b"abc")).json()["file"] == "plain.wav"
    field = _post(client, (b'Content-Disposition: form-data; name="file"', b"abc"))  # no name at all: a plain field
    assert _detail(field, 400) == "no file in the form field 'file'"


def test_a_wrong_type_is_415_after_the_form_is_read(client: TestClient, private_tmp: Path) -> None:
    assert _detail(_post(client, _file(b"a.txt", b"abc")), 415).startswith("unsupported file type '.txt'")
    assert _detail(_post(client, _file(b"a.wav", b"abc", ctype=b"text/html")), 415) == \
        "unsupported content type 'text/html'; expected audio/*"
    assert list(private_tmp.iterdir()) == []


def test_a_refused_form_s_spooled_file_is_closed_before_the_refusal_is_handled(private_tmp: Path) -> None:
    """The parser keeps a part past 1 MiB in an unnamed temp file: a refusal closes it at once, not whenever the
    exception that holds the form's frame is let go."""
    body, ctype = _body([_file(b"big.txt", b"\x01" * (2 << 20))])
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(HTTPException) as refused:
        asyncio.run(receive_upload(_request(iter([body]), ctype, []), 4 << 20))
    assert refused.value.status_code == 415 and refused.tb is not None  # the frame, and the form, still referenced
    assert len(os.listdir("/proc/self/fd")) == before


# --- the body's limits on a real ASGI request, chunk by chunk ---------------------------------------------------

def _request(chunks: Iterator[bytes], ctype: str, pulled: list[int], delay: float = 0.0) -> Request:
    """A request whose body comes from ``chunks``; ``pulled`` counts the bytes the server asked for."""
    async def receive() -> dict:
        if delay:
            await asyncio.sleep(delay)
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled.append(len(chunk))
        return {"type": "http.request", "body": chunk, "more_body": True}

    scope = {"type": "http", "method": "POST", "path": "/up", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", ctype.encode())]}
    return Request(scope, receive)


def test_an_endless_body_is_refused_413_once_it_passes_the_limit_not_after_it_is_read(private_tmp: Path) -> None:
    head, ctype = _body([_file(b"a.wav", b"")])
    head = head[:head.index(b"\r\n\r\n") + 4]

    def endless() -> Iterator[bytes]:
        yield head
        while True:
            yield b"\x01" * 4096

    pulled: list[int] = []
    with pytest.raises(HTTPException) as refused:
        asyncio.run(receive_upload(_request(endless(), ctype, pulled), LIMIT))
    assert refused.value.status_code == 413
    assert LIMIT + uploads._MULTIPART_OVERHEAD < sum(pulled) <= LIMIT + uploads._MULTIPART_OVERHEAD + 4096
    assert list(private_tmp.iterdir()) == []


def test_a_body_trickling_in_is_408_saying_the_rate(private_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uploads, "limited", lambda stream, limit: limited(stream, limit, grace=0.2))
    body, ctype = _body([_file(b"a.wav", b"abc")])
    with pytest.raises(HTTPException) as refused:
        asyncio.run(receive_upload(_request(iter([body[:10], body[10:]]), ctype, [], delay=1.0), LIMIT))
    assert refused.value.status_code == 408
    assert refused.value.detail == "the upload came in too slowly (the body must arrive at 16 KiB/s or more after 30 s)"
    assert list(private_tmp.iterdir()) == []


async def _timed(chunks: list[tuple[float, bytes]]) -> AsyncIterator[bytes]:
    """``chunks`` as (seconds from the start, bytes)."""
    start = time.monotonic()
    for at, data in chunks:
        await asyncio.sleep(max(0.0, at - (time.monotonic() - start)))
        yield data


async def _drain(stream: AsyncIterator[bytes]) -> int:
    return sum([len(c) async for c in stream])


def test_the_rate_rule_allows_the_grace_plus_one_second_per_min_rate_bytes_come() -> None:
    # 10,000 bytes at once at 10,000 B/s: the next chunk is due within grace + 1 s
    kept = limited(_timed([(0, b"\x01" * 10_000), (0.9, b"\x02")]), 20_000, grace=0.5, min_rate=10_000)
    assert asyncio.run(_drain(kept)) == 10_001
    late = limited(_timed([(0, b"\x01" * 1000), (2.0, b"\x02")]), 20_000, grace=0.5, min_rate=10_000)
    with pytest.raises(TooSlow):
        asyncio.run(_drain(late))
    never = limited(_timed([(3.0, b"\x01")]), 20_000, grace=0.3, min_rate=10_000)  # nothing in the grace
    started = time.monotonic()
    with pytest.raises(TooSlow):
        asyncio.run(_drain(never))
    assert time.monotonic() - started < 2.0


def test_the_size_rule_passes_the_limit_exactly_and_refuses_a_byte_more() -> None:
    assert asyncio.run(_drain(limited(_timed([(0, b"a" * 600), (0, b"b" * 400)]), 1000))) == 1000
    with pytest.raises(TooLarge):
        asyncio.run(_drain(limited(_timed([(0, b"a" * 600), (0, b"b" * 401)]), 1000)))


# --- queue places -----------------------------------------------------------------------------------------------

def test_slots_and_receipts_are_503_with_retry_after_when_all_are_taken_and_freed_after() -> None:
    worker = EmbedWorker(max_queue=2)
    assert worker.pid is None  # nothing started
    for places, count, words in ((worker.slot, 2, "too many uploads are waiting to be embedded; try again shortly"),
                                 (worker.receipt, 8, "too many uploads are coming in at once; try again shortly")):
        held = [places() for _ in range(count)]
        for place in held:
            place.__enter__()
        with pytest.raises(HTTPException) as busy, places():
            pass
        assert busy.value.status_code == 503 and busy.value.detail == words
        assert busy.value.headers == {"Retry-After": "10"}
        for place in held:
            place.__exit__(None, None, None)
        with pytest.raises(ValueError, match="boom"), places():  # freed after a failure inside too
            raise ValueError("boom")
        held = [places() for _ in range(count)]
        for place in held:
            place.__enter__()
        for place in held:
            place.__exit__(None, None, None)


# --- a client gone mid-upload -----------------------------------------------------------------------------------

def test_a_client_that_disconnects_mid_upload_is_answered_400_not_an_error_with_a_traceback(private_tmp: Path) -> None:
    """A client gone mid-body raised ClientDisconnect out of the app: a 500, and uvicorn logged 'Exception in ASGI
    application' with a traceback for every upload a user cancelled. It is a 400 now, with no file left behind."""
    body, ctype = _body([_file(b"a.wav", b"\x01" * (2 << 20))])  # past the 1 MiB the parser keeps in memory
    messages = [{"type": "http.request", "body": body[:(1 << 20) + 5000], "more_body": True}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/up", "raw_path": b"/up", "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000),
             "server": ("127.0.0.1", 80), "headers": [(b"content-type", ctype.encode()), (b"host", b"127.0.0.1")]}
    asyncio.run(_app(4 << 20)(scope, receive, send))
    assert sent[0]["status"] == 400
    assert b"the client disconnected before the upload was whole" in sent[1]["body"]
    assert list(private_tmp.iterdir()) == []


# --- EmbedWorker's side of the protocol, against a scripted child -----------------------------------------------

# The child speaks embed_worker's protocol; what it does with a job is the first line of the job's file, and the
# model's name says how it loads (slow: 1.5 s the first time; broken: a load error; mute: never).
SCRIPT = """\
import json, os, sys, time
from multiprocessing.connection import Connection
import numpy as np
from mess.serve.embed_protocol import Embedded
out = os.dup(1)
os.dup2(2, 1)
inbox, outbox = Connection(os.dup(0), writable=False), Connection(out, readable=False)
if os.environ.get("SCRIPTED_MUTE"):
    time.sleep(60)
if os.environ.get("SCRIPTED_EXIT"):  # an import that fails: the child ends before it is ready
    sys.exit(int(os.environ["SCRIPTED_EXIT"]))
outbox.send(("ready",))
loaded = set()
while True:
    try:
        job = inbox.recv()
    except EOFError:
        break
    path, model, revision, policy, max_seconds, source, segments = job
    with open(path + ".job", "w") as f:
        json.dump(list(job), f)
    command = open(path).read().strip()
    if command == "crash":
        os._exit(3)
    if command == "word":
        outbox.send(("what",))
        continue
    if model not in loaded:
        if model.startswith("slow"):
            time.sleep(1.5)
        if model.startswith("broken"):
            outbox.send(("error", "model", f"cannot load model {model}: no weights at /srv/models/{model}.bin"))
            continue
        if model.startswith("mute"):
            time.sleep(60)
        if model.startswith("huge"):  # the kernel's OOM killer, while the model loads
            os.kill(os.getpid(), 9)
        loaded.add(model)
    outbox.send(("loaded",))
    if command == "crash after load":  # the decoder's death on this file
        os._exit(4)
    if command == "hang":
        time.sleep(60)
    elif command == "decode":
        outbox.send(("error", "decode", f"{path}: cannot decode (bad header in /usr/lib/x.so)"))
    elif command == "model":
        outbox.send(("error", "model", "out of memory in /opt/cuda/lib.so"))
    elif command.startswith("layers"):  # 'layers 1.5': after 1.5 s, vectors for layers of 2 and 3 values
        time.sleep(float(command.split()[1]))
        outbox.send(("ok", Embedded("hash-new", [np.ones(2, np.float32), np.ones(3, np.float32)], {"artist": None}, [],
                                    2.0)))
    else:
        outbox.send(("ok", Embedded("hash-" + os.path.basename(path), [np.arange(3, dtype=np.float32)],
                                    {"artist": "Ann"}, [f"{path}: sampled at 4000 Hz",
                                                        f"{os.path.basename(path)}: only its first 20 min analysed"])))
"""


class _Run:
    """What EmbedWorker reads of a run."""

    def __init__(self, model: str) -> None:
        self.model, self.revision, self.policy = model, "rev1", '{"window": 5}'


@pytest.fixture
def scripted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbedWorker]:
    (tmp_path / "scripted_child.py").write_text(SCRIPT)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    worker = EmbedWorker(timeout=1.0, start_timeout=10.0, max_seconds=600.0)
    worker._child = Child("scripted_child", own_group=True)
    yield worker
    worker.close()


def _job(tmp_path: Path, command: str, name: str = "mess-upload-x.wav") -> Path:
    path = tmp_path / name
    path.write_text(command)
    return path


def test_an_upload_is_embedded_with_the_run_s_model_and_warnings_name_the_file(scripted: EmbedWorker,
                                                                             tmp_path: Path) -> None:
    path = _job(tmp_path, "ok")
    got = scripted.embed(path, _Run("dsp"), "My Song.wav", {"repo": "x"})
    assert got.content_hash == "hash-mess-upload-x.wav" and got.tags == {"artist": "Ann"}
    assert [list(v) for v in got.layers] == [[0.0, 1.0, 2.0]]
    assert got.warnings == ["My Song.wav: sampled at 4000 Hz", "My Song.wav: only its first 20 min analysed"]
    assert json.loads(Path(f"{path}.job").read_text()) == [str(path), "dsp", "rev1", '{"window": 5}', 600.0,
                                                           {"repo": "x"}, False]
    first = scripted.pid
    assert first is not None and scripted.embed(path, _Run("dsp"), "b.wav").content_hash == got.content_hash
    assert scripted.pid == first  # one long-lived child


def test_a_model_s_first_load_does_not_count_against_the_upload_s_timeout(scripted: EmbedWorker,
                                                                          tmp_path: Path) -> None:
    path = _job(tmp_path, "ok")
    assert scripted.embed(path, _Run("slow-a"), "a.wav").content_hash  # 1.5 s to load, timeout 1 s
    assert scripted.embed(path, _Run("slow-a"), "a.wav").content_hash  # loaded: fast
    assert scripted.embed(path, _Run("slow-b"), "a.wav").content_hash  # another model: loaded in its turn
    scripted.start_timeout = 0.5
    with pytest.raises(HTTPException) as late:
        scripted.embed(path, _Run("slow-c"), "a.wav")
    assert late.value.status_code == 503 and late.value.detail == "the embedding process did not load the model " \
                                                                  "within 0.5 s"
    assert scripted.pid is None
    scripted.start_timeout = 10.0
    assert scripted.embed(path, _Run("slow-a"), "a.wav").content_hash  # a fresh child loads it again


def test_a_file_that_cannot_be_decoded_is_400_naming_the_upload_not_server_paths(scripted: EmbedWorker,
                                                                                 tmp_path: Path) -> None:
    path = _job(tmp_path, "decode")
    with pytest.raises(HTTPException) as bad:
        scripted.embed(path, _Run("dsp"), "My Song.wav")
    assert bad.value.status_code == 400
    assert bad.value.detail == "cannot decode the upload: My Song.wav: cannot decode (bad header in x.so)"
    pid = scripted.pid
    assert pid is not None and scripted.embed(_job(tmp_path, "ok", "b.wav"), _Run("dsp"), "b.wav")
    assert scripted.pid == pid  # the child lives on


def test_a_model_that_fails_is_503_without_server_paths(scripted: EmbedWorker, tmp_path: Path) -> None:
    with pytest.raises(HTTPException) as failed:
        scripted.embed(_job(tmp_path, "model"), _Run("dsp"), "a.wav")
    assert failed.value.status_code == 503 and failed.value.detail == "out of memory in lib.so"
    with pytest.raises(HTTPException) as broken:
        scripted.embed(_job(tmp_path, "ok"), _Run("broken"), "a.wav")
    assert broken.value.status_code == 503
    assert broken.value.detail == "cannot load model broken: no weights at broken.bin"


def test_a_child_that_dies_or_hangs_on_a_file_is_400_and_the_next_upload_gets_a_fresh_one(scripted: EmbedWorker,
                                                                                          tmp_path: Path) -> None:
    ok = _job(tmp_path, "ok", "ok.wav")
    assert scripted.embed(ok, _Run("dsp"), "ok.wav")
    first = scripted.pid
    with pytest.raises(HTTPException) as crash:
        scripted.embed(_job(tmp_path, "crash"), _Run("dsp"), "a.wav")
    assert crash.value.status_code == 400
    assert crash.value.detail == "the decoder process died on this file (exit code 3); file rejected"
    assert scripted.pid is None
    assert scripted.embed(ok, _Run("dsp"), "ok.wav") and scripted.pid not in (None, first)
    second = scripted.pid
    started = time.monotonic()
    with pytest.raises(HTTPException) as hang:
        scripted.embed(_job(tmp_path, "hang"), _Run("dsp"), "a.wav")
    assert time.monotonic() - started < 10
    assert hang.value.status_code == 400
    assert hang.value.detail == "decoding and embedding the upload took longer than 1 s; file rejected"
    assert scripted.pid is None
    assert scripted.embed(ok, _Run("dsp"), "ok.wav") and scripted.pid not in (None, second)


def test_an_unexpected_message_is_the_child_s_death(scripted: EmbedWorker, tmp_path: Path) -> None:
    with pytest.raises(HTTPException) as cold:  # before the model is loaded: the server's fault
        scripted.embed(_job(tmp_path, "word"), _Run("cold"), "a.wav")
    assert cold.value.status_code == 503
    assert cold.value.detail.startswith("the embedding process ended loading the model cold (")
    assert scripted.pid is None
    scripted.embed(_job(tmp_path, "ok", "ok.wav"), _Run("warm"), "ok.wav")
    with pytest.raises(HTTPException) as warm:
        scripted.embed(_job(tmp_path, "word"), _Run("warm"), "a.wav")
    assert warm.value.status_code == 400 and warm.value.detail.startswith("the decoder process died on this file")
    assert scripted.pid is None


def test_a_child_that_never_starts_is_503_and_start_and_close_manage_it(scripted: EmbedWorker, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    scripted.start()
    assert scripted.pid is not None
    scripted.close()
    assert scripted.pid is None
    monkeypatch.setenv("SCRIPTED_MUTE", "1")
    scripted.start_timeout = 0.5
    with pytest.raises(HTTPException) as mute:
        scripted.embed(_job(tmp_path, "ok"), _Run("dsp"), "a.wav")
    assert mute.value.status_code == 503 and mute.value.detail == "the embedding process did not start within 0.5 s"
    assert scripted.pid is None
    monkeypatch.delenv("SCRIPTED_MUTE")
    scripted.start_timeout = 10.0
    assert scripted.embed(_job(tmp_path, "ok"), _Run("dsp"), "a.wav")
    scripted.timeout = 30.0
    hang = _job(tmp_path, "hang", "hang.wav")
    said: list[object] = []

    def embed() -> None:
        try:
            scripted.embed(hang, _Run("dsp"), "hang.wav")
        except HTTPException as exc:
            said.append(exc.detail)

    thread = threading.Thread(target=embed)
    thread.start()
    while not Path(f"{hang}.job").exists():
        time.sleep(0.02)
    scripted.kill()  # a second Ctrl-C: the upload being embedded ends now
    thread.join(10)
    assert said == ["the decoder process died on this file (exit code -9); file rejected"]


# --- a full disk ------------------------------------------------------------------------------------------------

def test_a_temp_file_that_cannot_be_written_whole_is_removed_even_when_its_last_bytes_fail_at_close(
        private_tmp: Path) -> None:
    """The last bytes of a small upload wait in the temp file's buffer and are written when it closes: on a full disk
    that write failed after the clean-up, and the part written stayed in the temp folder for ever (50 MiB a try on a
    disk already full). The server's error stands; the file goes. The full disk is RLIMIT_FSIZE here (EFBIG)."""
    upload = UploadFile(io.BytesIO(b"\x01" * 3000), filename="a.wav")
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of a signal
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, limits[1]))
    try:
        with pytest.raises(OSError) as full:
            uploads._save(upload, open(private_tmp / "mess-upload-x.wav", "xb"), LIMIT * 10, HTTPException(413))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert full.value.errno == errno.EFBIG
    assert list(private_tmp.iterdir()) == []


def test_uploads_at_once_past_the_queue_are_503_and_none_leaves_a_file(tmp_path: Path, private_tmp: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Three uploads at once into a queue of one, through the whole app (a real store, the scripted child): one is
    answered, the others are told to retry; no temp file stays and the server answers normally afterwards."""
    from test_serve_state import _store

    from mess.serve.app import create_app

    _store(tmp_path / "store", "dsp").close()
    (tmp_path / "scripted_child.py").write_text(SCRIPT)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    app = create_app(tmp_path / "store", max_upload_bytes=LIMIT, max_queue=1, embed_timeout=30)
    app.state.mess.worker._child = Child("scripted_child", own_group=True)
    barrier = threading.Barrier(3)
    answers: list[object] = []
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        def upload() -> None:
            barrier.wait()
            answers.append(client.post("/api/similar/upload", params={"k": 1},
                                       files={"file": ("new.wav", b"layers 1.0", "audio/wav")}))

        threads = [threading.Thread(target=upload) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200, 503, 503], [a.text for a in answers]
        for busy in (a for a in answers if a.status_code == 503):
            assert busy.json() == {"detail": "too many uploads are waiting to be embedded; try again shortly"}
            assert busy.headers["retry-after"] == "10"
        done = next(a for a in answers if a.status_code == 200).json()
        assert done["query"]["file"] == "new.wav" and done["query"]["external"] is True and len(done["results"]) == 1
        again = client.post("/api/similar/upload", files={"file": ("again.wav", b"layers 0", "audio/wav")})
        assert again.status_code == 200 and client.get("/api/health").status_code == 200
    assert [p.suffix for p in private_tmp.iterdir()] == [".job", ".job"]  # the scripted child's notes alone


def test_a_child_that_dies_starting_or_loading_a_model_is_503_not_the_file_s_fault(
        scripted: EmbedWorker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker whose imports failed, or that the OOM killer ended while it loaded the model, had read no file yet;
    every upload was answered 400 'the decoder process died on this file; file rejected', which blames the file and
    sends its user to try another. Both are 503 now, saying what died; files are rejected only for a death after the
    model is loaded, while the file is decoded."""
    ok = _job(tmp_path, "ok")
    monkeypatch.setenv("SCRIPTED_EXIT", "1")
    with pytest.raises(HTTPException) as start:
        scripted.embed(ok, _Run("dsp"), "a.wav")
    assert start.value.status_code == 503
    assert start.value.detail == "the embedding process ended before it was ready (exit code 1); see the server log"
    monkeypatch.delenv("SCRIPTED_EXIT")
    with pytest.raises(HTTPException) as load:
        scripted.embed(ok, _Run("huge"), "a.wav")
    assert load.value.status_code == 503
    assert load.value.detail == "the embedding process ended loading the model huge (killed by SIGKILL); see the " \
                                "server log"
    assert scripted.pid is None and scripted.embed(ok, _Run("dsp"), "a.wav")
    with pytest.raises(HTTPException) as crash:
        scripted.embed(_job(tmp_path, "crash", "c.wav"), _Run("dsp"), "c.wav")
    assert crash.value.status_code == 400 and "died on this file" in crash.value.detail


def test_a_death_decoding_the_file_is_the_file_s_400_even_with_a_model_just_loaded(scripted: EmbedWorker,
                                                                                  tmp_path: Path) -> None:
    with pytest.raises(HTTPException) as crash:
        scripted.embed(_job(tmp_path, "crash after load"), _Run("slow-a"), "a.wav")
    assert crash.value.status_code == 400
    assert crash.value.detail == "the decoder process died on this file (exit code 4); file rejected"


def test_a_child_killed_while_idle_is_replaced_and_its_models_loaded_again(scripted: EmbedWorker,
                                                                         tmp_path: Path) -> None:
    """The next upload waits for the fresh child to be ready and to load its model (not counted against the file)."""
    ok = _job(tmp_path, "ok")
    assert scripted.embed(ok, _Run("slow-a"), "a.wav")
    first = scripted.pid
    scripted.kill()
    while scripted.pid is not None:
        time.sleep(0.02)
    assert scripted.embed(ok, _Run("slow-a"), "a.wav").content_hash == "hash-mess-upload-x.wav"
    assert scripted.pid not in (None, first)


def test_a_model_that_fails_on_the_first_job_leaves_the_child_ready_for_the_next(scripted: EmbedWorker,
                                                                                tmp_path: Path) -> None:
    with pytest.raises(HTTPException, match="cannot load model broken"):
        scripted.embed(_job(tmp_path, "ok"), _Run("broken"), "a.wav")
    scripted.start_timeout = 2.0  # the child said 'ready' once: no second 'ready' is awaited
    assert scripted.embed(_job(tmp_path, "ok"), _Run("dsp"), "a.wav").content_hash


def test_the_embedding_child_runs_in_a_process_group_of_its_own() -> None:
    """The terminal's Ctrl-C reaches the server alone, which stops the child by its pipe."""
    worker = EmbedWorker()
    worker.start()
    try:
        assert worker.pid is not None and os.getpgid(worker.pid) == worker.pid != os.getpgid(0)
    finally:
        worker.close()
    assert worker.pid is None


@pytest.mark.parametrize("size", [3000, 3 << 20], ids=["copied", "spooled by the parser"])  # starlette spools > 1 MiB
def test_a_full_disk_is_a_507_in_one_line_and_leaves_no_file(private_tmp: Path, size: int,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A temp folder without room was a 500 'internal error (OSError)' with a traceback in the server log, as if the
    server were broken; the client is told there is no room now (507), the log says where in one line, the server
    answers afterwards. The full disk is RLIMIT_FSIZE here (EFBIG)."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of a signal
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    body, ctype = _body([_file(b"a.wav", b"\x01" * size)])
    with TestClient(_app(limit=8 << 20), raise_server_exceptions=False) as c:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, limits[1]))
        try:
            full = c.post("/up", content=body, headers={"content-type": ctype})
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limits)
            signal.signal(signal.SIGXFSZ, handler)
        after = c.post("/up", content=body, headers={"content-type": ctype})
    assert full.status_code == 507, full.text
    assert full.json() == {"detail": f"the server has no room to receive the upload now "
                                     f"({os.strerror(errno.EFBIG)}); try again later"}
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage() for r in errors] == [f"cannot store an upload in the temp folder {private_tmp}: "
                                                f"{os.strerror(errno.EFBIG)}"] and not errors[0].exc_info
    assert list(private_tmp.iterdir()) == []
    assert after.status_code == 200 and after.json()["size"] == size, after.text[:300]


def test_a_temp_folder_that_cannot_be_written_is_a_503(private_tmp: Path) -> None:
    """Any other refusal of the temp folder (gone, read-only, no permission) is the server's: 503, in the system's
    words, without the server's path."""
    private_tmp.rmdir()  # the temp folder is gone
    body, ctype = _body([_file(b"a.wav", b"\x01" * 3000)])
    with TestClient(_app(), raise_server_exceptions=False) as c:
        gone = c.post("/up", content=body, headers={"content-type": ctype})
    assert gone.status_code == 503, gone.text
    assert gone.json() == {"detail": f"the server cannot receive uploads now ({os.strerror(errno.ENOENT)}); "
                                     "try again later"}
    private_tmp.write_bytes(b"")  # a file where the temp folder should be: the clean-up fails as the create did
    with TestClient(_app(), raise_server_exceptions=False) as c:
        not_a_folder = c.post("/up", content=body, headers={"content-type": ctype})
    assert not_a_folder.status_code == 503, not_a_folder.text
    assert not_a_folder.json()["detail"] == (f"the server cannot receive uploads now ({os.strerror(errno.ENOTDIR)}); "
                                             "try again later")


# --- a request cancelled while its upload is copied (a second Ctrl-C stopping the server) ----------------------

@pytest.mark.parametrize("when", ["after the copy", "before the copy"])
def test_an_upload_cancelled_while_its_copy_runs_leaves_no_temp_file(private_tmp: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     when: str) -> None:
    """Before: the copy to the temp file runs in a thread; the request cancelled meanwhile (a second Ctrl-C makes the
    server cancel its requests) stopped waiting at once while the thread wrote on, and the temp file whose name it
    returned was no one's to remove: left in the temp folder. Now the file is the request's to remove from before it
    exists, whenever the cancellation comes. The worst point: the copy done, its name on the way back."""
    body, ctype = _body([_file(b"a.wav", b"\x01" * 700)])
    real, running, finished = uploads._save, [], threading.Event()

    def cancelled_around_the_copy(*args: object) -> object:
        loop, task = running[0]
        try:
            if when == "before the copy":
                loop.call_soon_threadsafe(task.cancel)
                while not task.done():
                    time.sleep(0.005)
            result = real(*args)
            if when == "after the copy":
                loop.call_soon_threadsafe(task.cancel)
                while not task.done():
                    time.sleep(0.005)
            return result
        finally:
            finished.set()

    monkeypatch.setattr(uploads, "_save", cancelled_around_the_copy)

    async def main() -> None:
        task = asyncio.create_task(receive_upload(_request(iter([body]), ctype, []), LIMIT))
        running.append((asyncio.get_running_loop(), task))
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert finished.wait(10)  # the thread's copy has ended too (its failure, before the copy, is its own)
    assert list(private_tmp.iterdir()) == []
