"""Where the reports of a run are written (probe, fusion and the server read the same names)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from mess.constants import PROBE_KINDS
from mess.store.paths import resolved


def slug(text: str) -> str:
    """``text`` made safe as part of a file name: every run of other characters than ASCII letters, digits,
    ``_``, ``.`` and ``-`` becomes one ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def located_stem(store_root: Path, path: Path) -> str:
    """``<file stem>-<10 hex>``, the hex a SHA-256 of where ``path`` is (relative to the store when inside it, so a
    moved store keeps the names): two files of one name in two folders never share a report name."""
    target, root = resolved(path), resolved(store_root)
    where = target.relative_to(root).as_posix() if target.is_relative_to(root) else str(target)
    digest = hashlib.sha256(where.encode("utf-8", "surrogateescape")).hexdigest()  # a name's bytes, UTF-8 or not
    return f"{slug(path.stem)}-{digest[:10]}"


def fusion_stem(store_root: Path, checkpoint: Path) -> str:
    """The name a fusion checkpoint's training log and report files start with: ``fusion-`` and
    :func:`located_stem`, so two checkpoints of one file name in two folders never share a log or a report."""
    return f"fusion-{located_stem(store_root, checkpoint)}"


def report_paths(folder: Path, model: str, run_id: int, probe: str, *, partial: bool = False) -> dict[str, Path]:
    """Where the JSON, CSV and PNG of a probe report go (``partial``: of a probe of some layers only)."""
    stem = f"probe-{slug(model)}-run{run_id}" + ("" if probe == "ridge" else f"-{probe}") + ("-partial" * partial)
    return {ext: Path(folder) / f"{stem}.{ext}" for ext in ("json", "csv", "png")}


def newer_probe(folder: Path, model: str, run_id: int, probed_at: float | None) -> Path | None:
    """The report of a probe of every layer of the run that mapped aspects after the probe stamped ``probed_at``
    (the stored aspect map's), or None: such a report means a probe stopped between its reports and its map.

    None too when the map carries no stamp (from an older mess) or a report cannot be read (`mess probe` rewrites it).
    """
    if probed_at is None:
        return None
    for probe in PROBE_KINDS:
        path = report_paths(folder, model, run_id, probe)["json"]
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        stamp = report.get("probed_at") if isinstance(report, dict) else None
        if isinstance(stamp, (int, float)) and stamp > probed_at and report.get("aspects"):
            return path
    return None
