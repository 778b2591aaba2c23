"""The child process that inspects and decodes files for `mess extract`: ``python -m mess.extract.decode_worker``.

Requests: ``("inspect", path, known)`` -> :class:`~mess.extract.prepare.FileRecord`; ``("decode", record,
sample_rate, policy, band_hz)`` -> :class:`~mess.extract.prepare.Windows`; ``("plan", paths, policy)`` -> the audio
seconds the policy analyses in them.
Replies: ``("ok", value)``, or ``(kind, message)`` with kind ``audio`` (AudioError), ``os`` (OSError) or
``other`` (any other exception). What C libraries print goes to /dev/null (see :func:`quiet_native_output`).
The parent asks through :func:`ask`, which turns a reply, a crash or a hang into the file's value or its failure.
"""

from __future__ import annotations

import os
from pathlib import Path

from mess.audio.decode import AudioError
from mess.extract.child import Child, ChildDied, ZygoteDied, serve_requests
from mess.extract.prepare import decode_windows, describe, inspect_file, planned_seconds

DECODE_TIMEOUT = 900.0  # seconds one file's inspection or decoding may take before its process is stopped


class FileFailed(Exception):
    """One file could not be inspected or decoded; the message is the recorded reason."""


def ask(child: Child, path: Path, request: tuple, timeout: float) -> object:
    """What the decode worker ``child`` computes for one file's ``request``; FileFailed with the reason when it
    cannot (the file's error, a crash, or over ``timeout`` seconds: the child is then stopped, the next call starts
    another). A child that died with its zygote (not the file's fault) is replaced and asked once more."""
    try:
        try:
            reply = child.call(request, timeout)
        except ZygoteDied:
            reply = child.call(request, timeout)
    except ZygoteDied as exc:
        raise FileFailed(f"{path}: the decoder {exc}, twice; file skipped") from None
    except ChildDied as exc:
        raise FileFailed(f"{path}: the decoder {exc}; file skipped") from None
    if not (isinstance(reply, tuple) and len(reply) == 2):
        raise FileFailed(f"{path}: the decoder answered {reply!r}")
    kind, value = reply
    if kind == "ok":
        return value
    if kind == "os":
        raise FileFailed(f"{path}: cannot read ({value})")
    raise FileFailed(value if kind == "audio" else f"{path}: {value}")


def handle(request: object) -> tuple:
    """One request's reply (never raises)."""
    if not isinstance(request, tuple) or not request:
        return ("other", f"malformed request {request!r}")
    op, args = request[0], request[1:]
    try:
        if op == "inspect":
            return ("ok", inspect_file(*args))
        if op == "decode":
            return ("ok", decode_windows(*args))
        if op == "plan":
            return ("ok", planned_seconds(*args))
        return ("other", f"unknown request {op!r}")
    except AudioError as exc:
        return ("audio", str(exc))
    except OSError as exc:
        return ("os", exc.strerror or str(exc))
    except Exception as exc:  # noqa: BLE001 -- one file's fault is that file's reply
        return ("other", describe(exc))


def quiet_native_output() -> None:
    """Send what the decoders' C libraries print to /dev/null: libmpg123 writes 'Note: Illegal Audio-MPEG-Header
    ...' for each damaged frame of an MP3, which broke the progress bar; a file's failure is its reply."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def main() -> None:
    """The decoding process: answer requests on stdin / stdout (started as ``python -m`` or forked warm)."""
    quiet_native_output()
    serve_requests(handle)


if __name__ == "__main__":
    main()
