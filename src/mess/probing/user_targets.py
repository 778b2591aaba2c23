"""Your own targets (`mess probe --targets FILE.csv`): per-track numbers (scored by R^2) or labels (accuracy).

The CSV names tracks by an ``id`` (or ``track_id``, as `mess export` writes it), ``path`` or ``file`` column, as
`mess evaluate --labels` reads them; every other column is a target. A column whose filled cells are all numbers is
a number (in a file separated by ``;`` or tabs, as a spreadsheet saves in many locales, ``0,3`` is one too), any
other a label. An empty cell (or ``nan``) leaves the track out of that target only.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

from mess.constants import counted
from mess.probing.probes import ProbeError
from mess.store import FeatureStore
from mess.store.errors import StoreError

REFERENCES = ("id", "track_id", "path", "file")  # track_id: as `mess export` names the id column
NUMBER, LABEL = "number", "label"
_DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+(?:[eE][+-]?\d+)?")


@dataclass(frozen=True)
class UserTarget:
    """One column of the file: its kind and each named track's value."""

    name: str
    kind: str  # NUMBER or LABEL
    values: dict[int, float | str]  # track id -> value


@dataclass(frozen=True)
class TargetFile:
    """The targets of one CSV, and the rows that named no track in the store."""

    path: Path
    column: str  # how rows name tracks: id, path or file
    targets: tuple[UserTarget, ...]
    unknown: tuple[tuple[int, str], ...]  # (line, reference)


def read_targets(store: FeatureStore, path: str | Path) -> TargetFile:
    """The targets of ``path``; ProbeError naming the file (and the line) for a file that cannot be read, has no
    id/path/file column or no other column, has two target columns of one name, names one track twice with other
    values, has a row whose cells do not match the header, an infinite number, or no row naming a track of the
    store."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            first = f.readline()
            f.seek(0)
            unquoted = re.sub(r'"[^"]*"', "", first)  # commas, else what the header separates with
            delimiter = next((d for d in (",", ";", "\t") if d in unquoted), ",")
            reader = csv.reader(f, delimiter=delimiter, strict=True)
            rows: list[tuple[int, list[str]]] = []
            try:
                for row in reader:
                    rows.append((reader.line_num, row))
            except csv.Error as exc:  # the record that fails starts on the line after the last one read
                raise ProbeError(f"{path}:{rows[-1][0] + 1 if rows else 1}: not valid CSV ({exc})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ProbeError(f"cannot read targets file {path}: {exc}") from exc
    rows = [(line, row) for line, row in rows if any(c.strip() for c in row)]
    if not rows:
        raise ProbeError(f"{path} is empty: it needs a header with an id, path or file column and target columns")
    header = [c.strip() for c in rows[0][1]]
    folded = [c.casefold() for c in header]
    ref_col = next((c for c in REFERENCES if c in folded), None)
    columns = [i for i, c in enumerate(folded) if c not in REFERENCES and c]
    if ref_col is None or not columns:
        raise ProbeError(f"{path} needs an id, path or file column naming tracks and at least one column of "
                         f"targets; its header is {header}")
    for n, i in enumerate(columns):  # a report names its targets: two of one name would be one
        if (twice := next((j for j in columns[n + 1:] if header[j] == header[i]), None)) is not None:
            raise ProbeError(f"{path}: two target columns are named {header[i]!r} (columns {i + 1} and {twice + 1} of "
                             "the header): rename one")
    ref_at, ref_kind = folded.index(ref_col), "id" if ref_col == "track_id" else ref_col
    cells: dict[int, dict[int, tuple[str, int]]] = {i: {} for i in columns}  # column -> track id -> (cell, line)
    unknown: list[tuple[int, str]] = []
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise ProbeError(f"{path}:{line}: {len(row)} cells where the header has {len(header)}")
        ref = row[ref_at].strip()
        try:
            track = store.track_at(ref) if ref_kind == "path" else store.find(ref) if ref else None
        except StoreError as exc:  # a file name several tracks share
            raise ProbeError(f"{path}:{line}: {exc}") from exc
        if track is None:
            unknown.append((line, ref))
            continue
        for i in columns:
            value = row[i].strip()
            if not value or value.casefold() == "nan":
                continue
            before, at = cells[i].setdefault(track.id, (value, line))
            if before != value:
                raise ProbeError(f"{path}:{line}: track {track.id} ({track.name}) has {header[i]} {value!r} here "
                                 f"and {before!r} on line {at}")
    if not any(cells.values()):
        listed = ", ".join(f"line {n} {r!r}" for n, r in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        raise ProbeError(f"{path}: no row gives a target of a track in this store"
                         + (f" (rows naming no track: {listed})" if unknown else ""))
    comma = delimiter != ","  # a spreadsheet saving ';' writes decimal commas (0,3)
    return TargetFile(path, ref_kind, tuple(_target(path, header[i], cells[i], comma) for i in columns),
                      tuple(unknown))


def _target(path: Path, name: str, cells: dict[int, tuple[str, int]], decimal_comma: bool) -> UserTarget:
    """A column as numbers when every filled cell is one (finite; with ``decimal_comma``, ``0,3`` too), else as
    labels."""
    numbers: dict[int, float | str] = {}
    for tid, (cell, line) in cells.items():
        try:
            value = float(cell.replace(",", ".") if decimal_comma and _DECIMAL_COMMA.fullmatch(cell) else cell)
        except ValueError:
            return UserTarget(name, LABEL, {t: c for t, (c, _) in cells.items()})
        if not math.isfinite(value):
            raise ProbeError(f"{path}:{line}: {name} {cell!r} is not a finite number (leave the cell empty for "
                             "no value)")
        numbers[tid] = value
    return UserTarget(name, NUMBER, numbers)


def unknown_note(targets: TargetFile, shown: int = 3) -> str:
    """One line naming the rows that named no track in the store (empty when none)."""
    if not targets.unknown:
        return ""
    listed = ", ".join(f"line {n} {r!r}" for n, r in targets.unknown[:shown])
    more = ", ..." if len(targets.unknown) > shown else ""
    return (f"{counted(len(targets.unknown), 'row names', 'rows name')} no track of the store and "
            f"{'was' if len(targets.unknown) == 1 else 'were'} left out: {listed}{more}")
