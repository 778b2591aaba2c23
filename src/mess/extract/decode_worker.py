"""The child process that inspects and decodes files for `mess extract`: ``python -m mess.extract.decode_worker``.

Requests: ``("inspect", path, known)`` -> :class:`FileRecord`; ``("decode", record, sample_rate,
policy)`` -> :class:`Windows`. Replies: ``("ok", value)``, or ``(kind, message)``
with kind ``audio`` (AudioError), ``os`` (OSError) or ``other`` (any other exception).
"""

from __future__ import annotations

from mess.audio.decode import AudioError
from mess.extract.child import serve_requests
from mess.extract.prepare import decode_windows, describe, inspect_file


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
        return ("other", f"unknown request {op!r}")
    except AudioError as exc:
        return ("audio", str(exc))
    except OSError as exc:
        return ("os", exc.strerror or str(exc))
    except Exception as exc:  # noqa: BLE001 -- one file's fault is that file's reply
        return ("other", describe(exc))


if __name__ == "__main__":
    serve_requests(handle)
