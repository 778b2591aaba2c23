"""Per-file CPU work of a Ray extraction, as Ray Data row functions.

Kept free of torch and Ray imports, so the CPU workers that run them start fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mess.audio.decode import AudioError
from mess.audio.windows import WindowPolicy
from mess.extract.prepare import FileRecord, decode_windows, inspect_file


def inspect_row(row: dict[str, Any]) -> dict[str, Any]:
    """Hash (unless the file's change stamp matches the catalog's ``known_*``), probe and tag one file.

    Returns the path, an error message ("" when fine) and the record as JSON
    (hash, size, mtime, info, tags) for ``FeatureStore.upsert_track``.
    """
    path = Path(row["path"])
    known = (row["known_hash"], row["known_stamp"]) if row["known_hash"] else None
    try:
        rec = inspect_file(path, known)
    except OSError as exc:
        return {"path": row["path"], "error": f"{path}: cannot read ({exc.strerror or exc})", "record": ""}
    record = {"hash": rec.content_hash, "size": rec.size, "mtime": rec.mtime, "stamp": rec.stamp, "info": rec.info,
              "tags": rec.tags}
    return {"path": row["path"], "error": "", "record": json.dumps(record)}


def decode_row(row: dict[str, Any], sample_rate: int, policy: str, band_hz: float = 0.0) -> dict[str, Any]:
    """Decode, validate and window one file (``path``, ``hash``, ``stamp``, ``size``, ``duration``, ``sample_rate``)
    at the model's rate, as the local pipeline does (seeking to each window of a long file; refused when the file
    changed since it was catalogued).

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
        win = decode_windows(record, sample_rate, WindowPolicy.from_json(policy), band_hz)
    except AudioError as exc:
        return {**out, "error": str(exc)}
    except OSError as exc:
        return {**out, "error": f"{path}: cannot read ({exc.strerror or exc})"}
    return {**out, "warnings": "\n".join(win.warnings), "starts": win.starts, "audio": win.audio,
            "duration": -1.0 if win.duration is None else float(win.duration)}
