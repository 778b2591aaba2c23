"""Uploads: size-limited streaming receipt to a temp file, then decode + embed in a child process.

The request body is counted while it streams in and refused (413) as soon as it
passes the limit, so an endless upload never fills memory or disk. A body must also
keep coming at a minimum rate after a grace period (408 otherwise, the rule of Apache's
mod_reqtimeout), so a client that trickles bytes cannot hold a place for long; and a
place in the embedding queue is taken only once the whole body is in. Decoding and
inference run in one long-lived child process (:class:`EmbedWorker`): a file
that crashes the decoder kills only the child, and one that hangs it is killed
after a timeout; either way the server answers 400 and starts a fresh child for
the next upload.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from email.message import Message
from multiprocessing.connection import Connection
from pathlib import Path
from typing import BinaryIO

from fastapi import HTTPException, Request
from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from mess.audio.recording import FirstSpans
from mess.constants import AUDIO_EXTENSIONS, audio_suffix
from mess.extract.child import Child, describe_exit
from mess.serve.embed_protocol import Embedded, EmbedJob
from mess.serve.errors import without_paths
from mess.store import Run

DEFAULT_MAX_UPLOAD = 50 * 2**20
DEFAULT_EMBED_TIMEOUT = 120.0
DEFAULT_MAX_QUEUE = 4
DEFAULT_MAX_SECONDS = 20 * 60.0
START_TIMEOUT = 300.0
BODY_GRACE = 30.0
BODY_MIN_RATE = 16 * 2**10
FIELD = "file"
MAX_FILENAME = 1024  # characters of an upload's file name (well inside the parser's 4 KiB header line)
_NAME_TOO_LONG = f"file name too long ({{}}; at most {MAX_FILENAME} characters)"
_MULTIPART_OVERHEAD = 64 * 2**10
_COPY_CHUNK = 1 << 20
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # a full disk, a quota, a size limit (RLIMIT_FSIZE)
log = logging.getLogger(__name__)


class TooLarge(Exception):
    """The request body passed the size limit."""


class TooSlow(Exception):
    """The request body came in slower than the minimum rate."""


class _Parser(MultiPartParser):
    """Starlette's multipart parser, knowing the name of the part header it reads (to say which one is too long) and
    reading a file name given only as ``filename*=UTF-8''caf%C3%A9.wav`` (RFC 5987), a form it ignores.

    RFC 7578 forbids that form in multipart/form-data, but clients send it (urllib3 before 2.0 for any non-ASCII
    name); the part was read as a plain field and the upload answered "no file". A plain ``filename`` wins.
    """

    header = b""
    value = b""
    extended_name: str | None = None  # the file part's name from its filename* parameter

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header += data[start:end]
        super().on_header_field(data, start, end)

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]  # handed on whole at the header's end, where it may get a plain filename

    def on_header_end(self) -> None:
        value = self._with_plain_name(self.value) if self.header.lower() == b"content-disposition" else self.value
        self.header = self.value = b""
        super().on_header_value(value, 0, len(value))
        super().on_header_end()

    def _with_plain_name(self, disposition: bytes) -> bytes:
        """``disposition`` with an empty plain ``filename`` added when it names the file by ``filename*`` alone (so
        the part is read as a file); the decoded name is kept in ``extended_name``."""
        if b"filename" in parse_options_header(disposition)[1]:
            return disposition
        header = Message()
        header["content-disposition"] = disposition.decode("latin-1")
        name = header.get_filename()
        if name is None:
            return disposition
        self.extended_name = name
        return disposition + b'; filename=""'


@dataclass(frozen=True)
class SavedUpload:
    """An uploaded file written to a private temp file (delete it when done)."""

    path: Path
    filename: str
    size: int


def check_audio_type(filename: str, content_type: str | None) -> str:
    """The file's lower-case extension; 415 unless it is a supported audio type, 400 for a name too long."""
    if len(filename) > MAX_FILENAME:
        raise HTTPException(400, _NAME_TOO_LONG.format(f"{len(filename)} characters"))
    suffix = audio_suffix(filename or "")  # as extract reads names: 'song.wav ' is a WAV
    if not suffix:
        shown = Path(filename or "").suffix.lower()
        if shown in AUDIO_EXTENSIONS:  # 'a.wav/': pathlib drops the trailing '/' that makes it no audio file's name
            shown = filename[filename.lower().rindex(shown):]
        raise HTTPException(415, f"unsupported file type {shown or '(none)'!r}; upload one of "
                                 f"{', '.join(sorted(AUDIO_EXTENSIONS))}")
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime and mime.split("/", 1)[0] not in ("audio", "video") and mime != "application/octet-stream":
        raise HTTPException(415, f"unsupported content type {content_type!r}; expected audio/*")
    return suffix


async def limited(stream: AsyncIterator[bytes], limit: int, grace: float | None = None,
                  min_rate: float = BODY_MIN_RATE) -> AsyncGenerator[bytes, None]:
    """The stream's chunks; TooLarge past ``limit`` bytes, TooSlow once it falls behind the rate rule: how every
    route reads a request body (a client trickling bytes holds nothing for long).

    By ``grace + n / min_rate`` seconds from the start, more than ``n`` bytes must have come (``grace``: by default
    :data:`BODY_GRACE` as it is when the body starts).
    """
    grace = BODY_GRACE if grace is None else grace
    loop = asyncio.get_running_loop()
    start = loop.time()
    total = 0
    chunks = aiter(stream)
    while True:
        left = start + grace + total / min_rate - loop.time()
        try:
            if left <= 0:
                raise TimeoutError
            chunk = await asyncio.wait_for(anext(chunks), left)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise TooSlow from None
        total += len(chunk)
        if total > limit:
            raise TooLarge
        yield chunk


def too_slow(what: str) -> HTTPException:
    """The 408 for a body that fell behind :func:`limited`'s rate rule, ``what`` naming it ("the upload")."""
    return HTTPException(408, f"{what} came in too slowly (the body must arrive at {BODY_MIN_RATE // 2**10} KiB/s or "
                              f"more after {BODY_GRACE:g} s)")


async def receive_upload(request: Request, max_bytes: int, parameters: Collection[str] = ()) -> SavedUpload:
    """Stream a multipart upload (field ``file``) to a temp file, enforcing size and type.

    Raises HTTPException: 413 past ``max_bytes``, 415 for non-audio files or bodies,
    408 for a body slower than the rate rule, 400 for malformed or empty uploads, for a client gone before the
    body was whole (no one reads it; the server logs no traceback), for a file name longer than
    ``MAX_FILENAME`` characters and for form fields named as one of the route's query ``parameters`` (``-F k=5``
    was ignored: ten results of the default vectors, not the five asked for); 507 (or 503) when the server's temp
    folder cannot take the file.
    """
    if parse_options_header(request.headers.get("content-type", ""))[0] != b"multipart/form-data":  # in any case
        raise HTTPException(415, f"send the audio file as multipart/form-data in a field named {FIELD!r}")
    too_large = HTTPException(413, f"upload larger than the {max_bytes / 2**20:.3g} MiB limit")
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > 19 or  # int() refuses over 4,300 digits
                                                      int(declared) > max_bytes + _MULTIPART_OVERHEAD):
        raise too_large
    parser = _Parser(request.headers, limited(request.stream(), max_bytes + _MULTIPART_OVERHEAD),
                     max_files=1, max_fields=8)
    try:
        form = await parser.parse()
    except OSError as exc:  # the parser spools a large part to the temp folder
        raise _cannot_store(exc) from None
    except TooLarge:
        raise too_large from None
    except ClientDisconnect:
        raise HTTPException(400, "the client disconnected before the upload was whole") from None
    except TooSlow:
        raise too_slow("the upload") from None
    except MultiPartException as exc:
        if parser.header.lower() == b"content-disposition" and "header size" in str(exc.__cause__):
            raise HTTPException(400, _NAME_TOO_LONG.format("its Content-Disposition header is over 4 KiB")) from None
        raise HTTPException(400, f"malformed upload: {exc.message}") from None
    # the temp file is this function's to remove from before it exists to its return: a request cancelled while its
    # thread copied (a second Ctrl-C) stopped waiting, and the file the thread made was no one's
    path: Path | None = None
    try:
        try:
            misplaced = sorted({name for name in form if name != FIELD} & set(parameters))
            if misplaced:
                one = len(misplaced) == 1
                raise HTTPException(400, f"{' and '.join(misplaced)} {'goes' if one else 'go'} in the query "
                                         f"({request.url.path}?{misplaced[0]}=...), not in the form, where "
                                         f"{'it' if one else 'they'} would be ignored")
            upload = form.get(FIELD)
            if not isinstance(upload, UploadFile):
                raise HTTPException(400, f"no file in the form field {FIELD!r}")
            if parser.extended_name is not None:  # the one file part (max_files=1) named itself by filename* alone
                upload.filename = parser.extended_name
            suffix = check_audio_type(upload.filename or "", upload.content_type)
            name = Path(tempfile.gettempdir()) / f"mess-upload-{secrets.token_hex(8)}{suffix}"
            try:
                path = name
                out = open(name, "xb", opener=_private)  # closed by _save, in its thread
                size = await run_in_threadpool(_save, upload, out, max_bytes, too_large)
            except FileExistsError as exc:  # a name drawn twice (one chance in 2**64): another upload's file
                path = None
                raise _cannot_store(exc) from None
            except OSError as exc:
                raise _cannot_store(exc) from None
            return SavedUpload(name, Path(upload.filename or "upload").name, size)
        finally:
            await form.close()
    except BaseException:
        if path is not None:
            with suppress(OSError):  # a temp folder that refused the file may refuse this too: its error stands
                path.unlink(missing_ok=True)
        raise


def _cannot_store(exc: OSError) -> HTTPException:
    """The answer when the server's temp folder refuses an upload: 507 for a disk (or quota) without room, 503
    otherwise; the system's words alone, no server path; one line in the server log, where it is the server's to
    mend (a full disk was a 500 with a traceback, as if the server were broken)."""
    why = os.strerror(exc.errno) if exc.errno else type(exc).__name__
    log.error("cannot store an upload in the temp folder %s: %s", tempfile.gettempdir(), why)
    if exc.errno in _NO_ROOM:
        return HTTPException(507, f"the server has no room to receive the upload now ({why}); try again later")
    return HTTPException(503, f"the server cannot receive uploads now ({why}); try again later")


def _private(path: str, flags: int) -> int:
    """An opener for a file only its owner may read (as :func:`tempfile.mkstemp` makes)."""
    return os.open(path, flags, 0o600)


def _save(upload: UploadFile, out: BinaryIO, max_bytes: int, too_large: HTTPException) -> int:
    """Copy the upload into ``out`` (a new file, closed here) and return its size; the file removed on failure."""
    size = 0
    try:
        with out:  # its close writes the last bytes: a full disk fails there too
            upload.file.seek(0)
            while chunk := upload.file.read(_COPY_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise too_large
                out.write(chunk)
        if size == 0:
            raise HTTPException(400, "the uploaded file is empty")
    except BaseException:
        Path(out.name).unlink(missing_ok=True)
        raise
    return size


class EmbedWorker:
    """One child process (``python -m mess.serve.embed_worker``) that decodes and embeds uploads.

    At most ``max_queue`` uploads wait for or use it at a time: :meth:`slot` answers 503
    beyond that, so queued uploads never hold the server's threads and reads stay fast.
    Bodies are received before a slot is taken, at most ``4 * max_queue`` at a time (:meth:`receipt`).
    ``timeout`` counts from when the child has its model loaded, not from its cold start.
    """

    def __init__(self, timeout: float = DEFAULT_EMBED_TIMEOUT, *, max_queue: int = DEFAULT_MAX_QUEUE,
                 max_seconds: float = DEFAULT_MAX_SECONDS, start_timeout: float = START_TIMEOUT) -> None:
        self.timeout = timeout
        self.max_seconds = max_seconds
        self.start_timeout = start_timeout
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_queue)
        self._receipts = threading.BoundedSemaphore(4 * max_queue)
        # forked warm (mess.extract.zygote): a server started again in one process (the tests, an app's restarts)
        # starts it in 10 ms; the server's Ctrl-C stops it by its pipe
        self._child = Child("mess.serve.embed_worker", own_group=True, warm=True)
        self._recv: Connection | None = None
        self._ready = False
        self._loaded: set[str] = set()

    @contextmanager
    def receipt(self) -> Iterator[None]:
        """A place to receive an upload's body in; 503 (with Retry-After) when ``4 * max_queue`` are in use."""
        with _hold(self._receipts, "too many uploads are coming in at once; try again shortly"):
            yield

    @contextmanager
    def slot(self) -> Iterator[None]:
        """A place in the upload queue for the block; HTTPException 503 (with Retry-After) when it is full."""
        with _hold(self._slots, "too many uploads are waiting to be embedded; try again shortly"):
            yield

    def embed(self, path: Path, run: Run, name: str, source: dict[str, str] | None = None,
              segments: bool = False) -> Embedded:
        """Content hash, per-layer track vectors, tags, warnings and duration of a file, and with ``segments`` its
        window vectors (what segment matching compares); HTTPException 400 when it cannot be used.

        ``name`` (the uploaded file name) replaces the temp path in error messages and warnings. ``source``: the
        run's record of where its model came from (``FeatureStore.model_source``), for a model its name cannot load.
        """
        with self._lock:
            send, recv = self._start()
            doing = "before it was ready"  # until the file is read, a death is the server's, not the file's
            try:
                self._await("ready", self.start_timeout, "start")
                send.send(EmbedJob(str(path), run.model, run.revision, run.policy, self.max_seconds, source,
                                   segments))
                if run.model not in self._loaded:  # a cold model: its loading does not count against the file
                    doing = f"loading the model {run.model}"
                    self._await("loaded", self.start_timeout, "load the model")
                    self._loaded.add(run.model)
                else:
                    doing = ""
                    self._expect(self._reply(recv), "loaded")
                doing = ""
                reply = self._reply(recv)
            except (EOFError, OSError):
                code = self._stop(grace=1.0 if doing else 0.0)  # a moment to end by itself: its own exit code
                if doing:
                    raise HTTPException(503, f"the embedding process ended {doing} ({describe_exit(code)}); see the "
                                             "server log") from None
                raise HTTPException(400, f"the decoder process died on this file (exit code {code}); "
                                         "file rejected") from None
        if reply[0] == "ok":
            embedded: Embedded = reply[1]
            return embedded._replace(warnings=[text.replace(str(path), name).replace(path.name, name)
                                               for text in embedded.warnings])
        _, kind, message = reply
        if kind == "decode":
            raise HTTPException(400, f"cannot decode the upload: {without_paths(message.replace(str(path), name))}")
        raise HTTPException(503, without_paths(message))

    def spans(self, path: Path) -> FirstSpans:
        """The file's side of the same-recording check (:func:`mess.audio.recording.first_spans`), decoded in the
        child, never here: a file that crashes the decoder at its spans ends the child (started again for the next
        upload), not the server. Its ``error`` says why there are none (the child died, took longer than the upload
        timeout, or could not start)."""
        with self._lock:
            send, recv = self._start()
            try:
                self._await("ready", self.start_timeout, "start")
                send.send(("spans", str(path)))
                if not recv.poll(self.timeout):
                    self._stop()
                    return FirstSpans(error=f"{path}: decoding its spans took longer than {self.timeout:g} s")
                reply = recv.recv()
                if reply[0] != "spans":
                    raise EOFError(f"unexpected message {reply[0]!r}")
            except (EOFError, OSError):
                return FirstSpans(error=f"{path}: the decoder process died on it (exit code {self._stop()})")
            except HTTPException as exc:  # the child did not start
                return FirstSpans(error=str(exc.detail))
        return reply[1]

    def _await(self, word: str, timeout: float, doing: str) -> None:
        """Wait for the child's ``word`` (sent once it can take work); 503 when it does not come in time."""
        if word == "ready" and self._ready:
            return
        assert self._recv is not None
        if not self._recv.poll(timeout):
            self._stop()
            raise HTTPException(503, f"the embedding process did not {doing} within {timeout:g} s")
        self._expect(self._recv.recv(), word)
        self._ready = self._ready or word == "ready"

    @staticmethod
    def _expect(got: tuple, word: str) -> None:
        if got != (word,):
            if got[0] == "error":  # the model could not be loaded (a model named by its folder: by the folder's name)
                raise HTTPException(503, without_paths(got[2]))
            raise EOFError(f"unexpected message {got!r}")

    def _reply(self, recv: Connection) -> tuple:
        """The child's next message within the upload timeout; 400 (and a fresh child next time) past it."""
        if not recv.poll(self.timeout):
            self._stop()
            raise HTTPException(400, f"decoding and embedding the upload took longer than {self.timeout:g} s; "
                                     "file rejected")
        return recv.recv()

    @property
    def pid(self) -> int | None:
        """Process id of the running child (None before the first upload or after a failure)."""
        return self._child.pid

    def start(self) -> None:
        """Start the child ahead of the first upload (forked from its zygote, which imports the upload path's code
        once per server process; models load at the first upload that needs them)."""
        with self._lock:
            self._start()

    def kill(self) -> None:
        """Kill the child now, without waiting for the upload it may be embedding (that upload gets its 400); the
        next upload starts a fresh one."""
        self._child.kill()

    def close(self) -> None:
        """Stop the child process (given a few seconds to end by itself and remove its temp files)."""
        with self._lock:
            self._stop(grace=5.0)

    def _start(self) -> tuple[Connection, Connection]:
        send, recv, fresh = self._child.connect()
        if fresh:
            self._ready = False
            self._loaded = set()
        self._recv = recv
        return send, recv

    def _stop(self, grace: float = 0.0) -> int | None:
        self._recv = None
        self._ready = False
        self._loaded = set()
        return self._child.stop(grace)


@contextmanager
def _hold(places: threading.BoundedSemaphore, busy: str) -> Iterator[None]:
    """One of ``places`` for the block; HTTPException 503 with ``busy`` (and Retry-After) when none is free."""
    if not places.acquire(blocking=False):
        raise HTTPException(503, busy, headers={"Retry-After": "10"})
    try:
        yield
    finally:
        places.release()
