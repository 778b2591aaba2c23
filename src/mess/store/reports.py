"""Where the reports of a run are written (probe, fusion and the server read the same names)."""

from __future__ import annotations

import re
from pathlib import Path


def slug(text: str) -> str:
    """``text`` made safe as part of a file name: every run of other characters than ASCII letters, digits,
    ``_``, ``.`` and ``-`` becomes one ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def report_paths(folder: Path, model: str, run_id: int, probe: str, *, partial: bool = False) -> dict[str, Path]:
    """Where the JSON, CSV and PNG of a probe report go (``partial``: of a probe of some layers only)."""
    stem = f"probe-{slug(model)}-run{run_id}" + ("" if probe == "ridge" else f"-{probe}") + ("-partial" * partial)
    return {ext: Path(folder) / f"{stem}.{ext}" for ext in ("json", "csv", "png")}
