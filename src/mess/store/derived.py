"""Vectors computed from a run (fused, ...): a file per version, aligned to the run's track rows."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from mess.store.arrays import DTYPE, UNSTORABLE, RowFile, set_aside, unstorable
from mess.store.checksums import changed, row_expected, row_sums
from mess.store.errors import DerivedRewritten, StoreDamaged, StoreError
from mess.store.records import Run
from mess.store.vectors import VectorRows


class DerivedSets(VectorRows):
    """Derived vector sets (fused, ...) of each run, by name."""

    def write_derived(self, run: Run, name: str, content_hashes: Sequence[str], matrix: np.ndarray,
                      meta: dict) -> None:
        """Store per-track vectors computed from a run (e.g. fused), replacing older ones.

        Each vector goes to the row of the content it was computed from (``content_hashes``, as read), looked
        up under the write lock: a file re-embedded since it was read keeps no vector for its new content (it
        counts in :meth:`derived_missing`), and content the run no longer holds is skipped. Vectors not finite as
        stored (NaN, infinity, or past float16's largest value, 65504) are refused (ValueError) before anything is
        written, as :meth:`write_vectors` refuses them.
        """
        bad = unstorable(matrix)
        if bad.any():
            first = int(np.argmax(bad))
            content = content_hashes[first] if first < len(content_hashes) else f"of row {first}"
            raise ValueError(f"non-finite {name} vectors for content {content} ({UNSTORABLE})")
        with self._write():
            rows = self.track_rows(run)
            dim = matrix.shape[1]
            full = np.full((max(rows.values(), default=-1) + 1, dim), np.nan, dtype=np.float32)
            for content_hash, vec in zip(content_hashes, matrix, strict=True):
                if content_hash in rows:
                    full[rows[content_hash]] = vec
            self._store_derived(run, name, full, meta)

    def _store_derived(self, run: Run, name: str, matrix: np.ndarray, meta: dict) -> None:
        """Write a derived set to a file of its own and point the catalog at it (in the caller's transaction).

        The catalog names the file (``meta["file"]``) and records its rows' checksums, so a reader, or a writer
        killed between the two steps, sees the old file with the old metadata and sums or the new with the new,
        never one with the other. The file replaced stays for readers still on the old catalog version; older
        ones go.
        """
        previous = self.derived_meta(run, name)
        folder = self.derived_path(run, name).parent
        file = f"{name}.{time.time_ns()}.f16"
        stored = np.asarray(matrix, dtype=DTYPE)
        RowFile(folder / file, matrix.shape[1]).replace(stored)
        now = time.time()  # in the metadata too, so caches keyed on it see every rewrite
        self.db.execute(
            "INSERT OR REPLACE INTO derived (run_id, name, dim, meta, created_at, checksums) VALUES (?, ?, ?, ?, ?, ?)",
            (run.id, name, matrix.shape[1],
             json.dumps({**meta, "written_at": now, "rows": len(matrix), "file": file}), now, row_sums(stored)),
        )
        keep = {file, _derived_file(name, previous)} if previous is not None else {file}
        for old in _derived_files(folder, name):
            if old.name not in keep:
                old.unlink(missing_ok=True)

    def derived_matrix(self, run: Run, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(track ids, float32 matrix) of derived vectors; tracks added since are left out. Rows that differ from
        their checksums raise StoreDamaged. A set rewritten twice while read is read again (:meth:`reading`)."""
        return self.reading(lambda: self._derived_matrix(run, name))

    def derived_elsewhere(self, run: Run, name: str, option: str) -> str:
        """Advice naming the other runs that hold derived vectors ``name`` ("dsp@1 has them: pick one with --model
        dsp@1, or "; ``option`` is what precedes the choice: "--model " or "model="), or "" when none does: naming
        them helps more than training another network for ``run``."""
        others = [r for r in self.runs() if r.id != run.id
                  and self._query("SELECT 1 FROM derived WHERE run_id=? AND name=?", (r.id, name))]
        if not others:
            return ""
        verb = "has" if len(others) == 1 else "have"
        return (f"{', '.join(f'{r.model}@{r.id}' for r in others)} {verb} them: pick one with {option}"
                f"{others[0].model}@{others[0].id}, or ")

    def _derived_matrix(self, run: Run, name: str) -> tuple[np.ndarray, np.ndarray]:
        found = [s for s in self.derived_sets(run) if s[0] == name]
        if not found:
            raise StoreError(f"no {name!r} vectors for {run.model}; {self.derived_elsewhere(run, name, '--model ')}"
                             "run `mess fuse train` and `mess fuse apply` first")
        _, file, sums = found[0]
        data = file.read()
        if not len(data) and not file.path.exists():  # looked at after the read: it may go while read
            raise DerivedRewritten(f"the {name} vectors of {run.model} are not where the catalog says "
                                   f"({file.path.name}): rewritten twice while read, each time it was read (try "
                                   "again), or deleted (`mess check --repair`)")
        pairs = [(r["track_id"], r["track_row"]) for r in self._rows(run) if r["track_row"] < len(data)]
        ids, rows = np.array([p[0] for p in pairs], dtype=np.int64), np.array([p[1] for p in pairs], dtype=np.int64)
        wrong = changed(data, rows, np.ones(len(rows), dtype=np.int64), row_expected(sums, len(data))[rows])
        if wrong.any():
            raise StoreDamaged(f"{self.root}: {run.model} {name} vectors of track ids {sorted(ids[wrong].tolist())[:5]}"
                               " differ from their checksums (changed on disk); run `mess check --repair`")
        mat = np.asarray(data[rows], dtype=np.float32)
        keep = np.isfinite(mat).all(axis=1)
        return ids[keep], mat[keep]

    def derived_missing(self, run: Run, name: str) -> int:
        """How many of the run's tracks have no derived ``name`` vector (added or re-embedded since it was written)."""
        return len(self.tracks(run)) - len(self.derived_matrix(run, name)[0])

    def forget_derived_rows(self, run: Run, rows: Iterable[int], keep: int) -> int:
        """Blank the derived vectors (fused, ...) of track ``rows`` and of every row from ``keep`` on (the catalog
        no longer holds them: a later file may be written there). Returns how many derived vectors were blanked.

        Call it under the write lock when vectors are dropped: derived vectors are stored by row, so a new file
        written to a freed row would otherwise be searched with the vector of the file that held it before.
        """
        rows, blanked = list(rows), 0
        derived_sets = self._query("SELECT name, dim, meta FROM derived WHERE run_id=?", (run.id,))
        for name, dim, meta in derived_sets:
            data = np.array(RowFile(self.derived_path(run, name), dim).read(), dtype=np.float32)
            drop = [r for r in rows if r < min(keep, len(data))]
            before = int(np.isfinite(data).all(axis=1).sum())
            data[drop] = np.nan
            data = data[:keep]
            blanked += before - int(np.isfinite(data).all(axis=1).sum())
            with self._lock, self.db:
                self._store_derived(run, name, data, json.loads(meta))
        return blanked

    def move_derived_rows(self, run: Run, moved: Mapping[int, int]) -> None:
        """Rewrite each derived set with the vectors of track rows ``moved`` (from -> to) at their new rows, for the
        rows the catalog references once moved (the caller's transaction, under the write lock, moved them)."""
        rows = np.array(sorted(set(self.track_rows(run).values())), dtype=np.int64)
        back = {dst: src for src, dst in moved.items()}
        for name, dim, meta in self._query("SELECT name, dim, meta FROM derived WHERE run_id=?", (run.id,)):
            data = np.array(RowFile(self.derived_path(run, name), dim).read(), dtype=np.float32)
            out = np.full((int(rows[-1]) + 1 if len(rows) else 0, dim), np.nan, dtype=np.float32)
            src = np.array([back.get(int(r), int(r)) for r in rows], dtype=np.int64)
            have = src < len(data)
            out[rows[have]] = data[src[have]]
            self._store_derived(run, name, out, json.loads(meta))

    def derived_sets(self, run: Run) -> list[tuple[str, RowFile, bytes | None]]:
        """(name, row file as the catalog names it, the checksums recorded with its rows: None when an older mess
        wrote it) of each derived vector set, by name."""
        sums = "checksums" if self._has_column("derived", "checksums") else "NULL AS checksums"  # older, read-only
        sets = self._query(f"SELECT name, dim, meta, {sums} FROM derived WHERE run_id=? ORDER BY name", (run.id,))
        folder = self._run_folder(run) / "derived"
        return [(name, RowFile(folder / _derived_file(name, json.loads(meta)), dim), blob)
                for name, dim, meta, blob in sets]

    def derived_sizes(self, run: Run) -> list[tuple[str, int, int | None]]:
        """(name, rows in its file, rows written) of each derived vector set (written: None for older stores)."""
        sets = self._query("SELECT name, dim, meta FROM derived WHERE run_id=? ORDER BY name", (run.id,))
        return [(name, RowFile(self.derived_path(run, name), dim).rows, json.loads(meta).get("rows"))
                for name, dim, meta in sets]

    def drop_derived(self, run: Run, name: str) -> None:
        """Forget a derived vector set: its catalog row and its file."""
        with self._write():
            folder = self.derived_path(run, name).parent
            self.db.execute("DELETE FROM derived WHERE run_id=? AND name=?", (run.id, name))
            for path in _derived_files(folder, name):
                set_aside(path, self.root) if path.is_dir() else path.unlink(missing_ok=True)

    def derived_meta(self, run: Run, name: str) -> dict | None:
        """Metadata stored with derived vectors, or None."""
        row = self._one("SELECT meta FROM derived WHERE run_id=? AND name=?", (run.id, name))
        return None if row is None else json.loads(row[0])

    def derived_path(self, run: Run, name: str) -> Path:
        """The row file of a derived vector set, as the catalog names it."""
        return self._run_folder(run) / "derived" / _derived_file(name, self.derived_meta(run, name))


def _derived_file(name: str, meta: dict | None) -> str:
    """The file name of a derived set: its metadata names it (stores before that used ``NAME.f16``)."""
    return str((meta or {}).get("file") or f"{name}.f16")


def _derived_files(folder: Path, name: str) -> list[Path]:
    """The files of derived set ``name`` in ``folder``: ``NAME.NS.f16`` (as written) or ``NAME.f16`` (older stores),
    not those of a set whose name starts as this one's ('fused.v2' for 'fused')."""
    pattern = re.compile(re.escape(name) + r"(\.[0-9]+)?\.f16")
    return [p for p in folder.iterdir() if pattern.fullmatch(p.name)] if folder.is_dir() else []
