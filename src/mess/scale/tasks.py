"""Per-file CPU work of a Ray extraction, as Ray Data row functions.

Kept free of torch and Ray imports, so the CPU workers that run them start fast. As in the local engine, each file is
inspected and decoded in a decode worker process (one per Ray worker process, started on first use): a decoder that
crashes or hangs past the timeout costs that file, named, never the Ray worker or the run.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, cast

import numpy as np

from mess.audio.windows import WindowPolicy
from mess.extract.child import Child
from mess.extract.decode_worker import FileFailed, ask
from mess.extract.prepare import FileRecord, Windows

_DECODER = Child("mess.extract.decode_worker")  # this Ray worker process's; it ends when the worker does
_ASKING = threading.Lock()  # one request at a time on its pipes, should Ray run two rows of this process at once


def inspect_row(row: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Hash (unless the file's change stamp matches the catalog's ``known_*``), probe and tag one file.

    Returns the path, an error message ("" when fine; a decoder that crashed or took over ``timeout`` seconds is
    the file's error) and the record as JSON (hash, size, mtime, info, tags) for ``FeatureStore.upsert_track``.
    """
    path = Path(row["path"])
    known = (row["known_hash"], row["known_stamp"]) if row["known_hash"] else None
    try:
        with _ASKING:
            rec = cast(FileRecord, ask(_DECODER, path, ("inspect", path, known), timeout))
    except FileFailed as exc:
        return {"path": row["path"], "error": str(exc), "record": ""}
    record = {"hash": rec.content_hash, "size": rec.size, "mtime": rec.mtime, "stamp": rec.stamp, "info": rec.info,
              "tags": rec.tags}
    return {"path": row["path"], "error": "", "record": json.dumps(record)}


def decode_row(row: dict[str, Any], sample_rate: int, policy: str, band_hz: float, timeout: float) -> dict[str, Any]:
    """Decode, validate and window one file (``path``, ``hash``, ``stamp``, ``size``, ``duration``, ``sample_rate``)
    at the model's rate, as the local pipeline does (seeking to each window of a long file; refused when the file
    changed since it was catalogued; a decoder that crashes or takes over ``timeout`` seconds fails the file).

    Returns the path, hash, error ("" when fine), warnings (newline-joined), window
    starts in seconds, the windows [n_windows, samples] (empty on error) and the decoded duration when it replaces
    the header's (a truncated file; -1 otherwise).
    """
    path = Path(row["path"])
    out = {"path": row["path"], "hash": row["hash"], "error": "", "warnings": "",
           "starts": np.zeros(0), "audio": np.zeros((0, 0), np.float32), "duration": -1.0}
    try:
        info = {"duration": row["duration"], "sample_rate": int(row.get("sample_rate") or 0)}
        record = FileRecord(path, row["hash"], int(row["size"]), 0.0, info, {}, row["stamp"])
        request = ("decode", record, sample_rate, WindowPolicy.from_json(policy), band_hz)
        with _ASKING:
            win = cast(Windows, ask(_DECODER, path, request, timeout))
    except FileFailed as exc:
        return {**out, "error": str(exc)}
    return {**out, "warnings": "\n".join(win.warnings), "starts": win.starts, "audio": win.audio,
            "duration": -1.0 if win.duration is None else float(win.duration)}
