"""A run's track and window vectors: written after the catalog's last rows, read checked against their sums."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from contextlib import closing

import numpy as np

from mess.store.arrays import DTYPE, UNSTORABLE, RowFile, ShortFile, unstorable
from mess.store.catalog import uri
from mess.store.checksums import block_sum, changed, expected, pack
from mess.store.errors import RowsMoved, StoreDamaged, StoreError
from mess.store.paths import from_db_path
from mess.store.records import Run, TrackVectors
from mess.store.runs import RunCatalog


class VectorRows(RunCatalog):
    """The vectors of each run: one float16 row file per layer and level, rows named by the catalog."""

    def row_file(self, run: Run, level: str, layer: int) -> RowFile:
        """The float16 row file of one layer at one level ('track' or 'segment')."""
        return RowFile(self._run_folder(run) / level / f"{layer:03d}.f16", run.layer_dims[layer])

    def catalog_rows(self, run: Run) -> tuple[int, int]:
        """(track rows, segment rows) that the catalog references: row files hold at least these."""
        track_rows, seg_rows = self._query(
            "SELECT COALESCE(MAX(track_row)+1, 0), COALESCE(MAX(seg_row+n_segments), 0) FROM vectors WHERE run_id=?",
            (run.id,),
        )[0]
        return int(track_rows), int(seg_rows)

    def cut_past_catalog(self, runs: Sequence[Run] | None = None) -> None:
        """Cut the row files of ``runs`` (default: every run) after the rows the catalog references: rows a killed
        write or reclaim left past them (`mess check`'s orphan-rows), which no catalog version references. Under the
        write lock, so no writer has rows there that it is about to commit; a kill between two files leaves rows
        past the catalog in the others, cut next time."""
        with self._write():
            for run in self.runs() if runs is None else runs:
                track_rows, seg_rows = self.catalog_rows(run)
                for layer in range(len(run.layer_names)):
                    self.row_file(run, "track", layer).truncate(track_rows)
                    self.row_file(run, "segment", layer).truncate(seg_rows)

    def has_vectors(self, run: Run, content_hash: str) -> bool:
        """Whether this content was already embedded in this run."""
        return self._one("SELECT 1 FROM vectors WHERE run_id=? AND content_hash=?", (run.id, content_hash)) is not None

    def write_vectors(self, run: Run, items: Sequence[TrackVectors]) -> None:
        """Write vectors at the rows after the catalog's last, then commit their catalog rows with the
        rows' checksums (:mod:`mess.store.checksums`).

        Under the write lock, so positions come from the catalog alone: bytes a killed
        writer left past them are overwritten, never referenced. Vectors not finite as stored
        (NaN, infinity, or past float16's largest value, 65504) are refused (ValueError) before
        anything is written, and so are vectors whose shapes are not the run's layers (one vector each, a row per
        start time of its windows).
        """
        for it in items:
            shapes = [np.shape(v) for v in it.layers], [np.shape(v) for v in it.segments]
            if shapes != ([(d,) for d in run.layer_dims], [(len(it.seg_starts), d) for d in run.layer_dims]):
                raise ValueError(f"vectors for content {it.content_hash} do not fit {run.model}'s layers of sizes "
                                 f"{list(run.layer_dims)} (track vectors of shapes {shapes[0]}, windows of shapes "
                                 f"{shapes[1]} for {len(it.seg_starts)} start times)")
        for it in items:
            if any(unstorable(v).any() for v in (*it.layers, *it.segments)):
                raise ValueError(f"non-finite vectors for content {it.content_hash} ({UNSTORABLE})")
        with self._write():
            unique = {it.content_hash: it for it in items if not self.has_vectors(run, it.content_hash)}
            items = list(unique.values())
            if not items:
                return
            track_row, seg_row = self.catalog_rows(run)
            layers = range(len(run.layer_names))
            tracks = [[np.asarray(it.layers[i], dtype=DTYPE) for i in layers] for it in items]  # as stored
            segments = [[np.asarray(it.segments[i], dtype=DTYPE) for i in layers] for it in items]
            try:
                for i in layers:
                    self.row_file(run, "track", i).write_at(track_row, np.stack([t[i] for t in tracks]))
                    self.row_file(run, "segment", i).write_at(seg_row, np.concatenate([s[i] for s in segments]))
            except ValueError as exc:
                raise StoreDamaged(
                    f"{exc}; the catalog references rows the file lacks: run `mess check --repair`"
                ) from None
            now = time.time()
            rows = []
            for n, it in enumerate(items):
                sums = pack([block_sum(v) for v in tracks[n]], [block_sum(v) for v in segments[n]])
                starts = json.dumps([round(float(s), 3) for s in it.seg_starts])
                rows.append((run.id, it.content_hash, track_row + n, seg_row, len(it.seg_starts), starts, now, sums))
                seg_row += len(it.seg_starts)
            self.db.executemany(
                "INSERT INTO vectors (run_id, content_hash, track_row, seg_row, n_segments, seg_starts, created_at, "
                "checksums) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self.db.executemany(
                "DELETE FROM failures WHERE run_id=? AND content_hash=?", [(run.id, it.content_hash) for it in items]
            )

    def unembedded(self, run: Run) -> list[str]:
        """Paths of catalogued files with neither vectors nor a recorded failure in ``run``, by id: no answer from
        the run includes them. An interrupted or running `mess extract` leaves such files, and so does a damaged
        content hash (tracks meet their vectors by it); `mess extract` embeds them."""
        if self._query("SELECT COUNT(*) FROM tracks")[0][0] == len(self.tracks(run)):
            return []  # the common case, at the cost of one count
        rows = self._query(
            "SELECT path FROM tracks t WHERE NOT EXISTS (SELECT 1 FROM vectors v WHERE v.run_id=? AND "
            "v.content_hash=t.content_hash) AND NOT EXISTS (SELECT 1 FROM failures f WHERE f.run_id=? AND "
            "f.content_hash=t.content_hash) ORDER BY t.id", (run.id, run.id))
        return [from_db_path(r[0]) for r in rows]

    def _rows(self, run: Run) -> list[sqlite3.Row]:
        sums = "v.checksums" if self._has_column("vectors", "checksums") else "NULL AS checksums"  # older, read-only
        return self._query(
            f"SELECT t.id AS track_id, v.content_hash, v.track_row, v.seg_row, v.n_segments, v.seg_starts, {sums} "
            "FROM tracks t JOIN vectors v ON v.content_hash=t.content_hash AND v.run_id=? ORDER BY t.id",
            (run.id,),
        )

    def _read(self, run: Run, level: str, layer: int, rows: list[sqlite3.Row]) -> tuple[np.ndarray, np.ndarray]:
        """(track id per vector, float32 vectors) of one layer at ``level`` for catalog ``rows``: a track row each,
        or its block of segment rows. A short file, a non-finite value or bytes that differ from their checksum
        raise StoreDamaged, or RowsMoved where the newest catalog no longer references those rows there."""
        try:
            return self._read_rows(run, level, layer, rows)
        except StoreDamaged:
            if self._moved(run, rows):
                raise RowsMoved(f"{self.root}: the {run.model} vectors read were moved since their catalog version "
                                "was read (`mess check --reclaim` or `--repair` ran meanwhile, each time it was "
                                "read): run the command again") from None
            raise

    def _moved(self, run: Run, rows: list[sqlite3.Row]) -> bool:
        """Whether the newest catalog version (a connection of its own: this one may hold an older) lacks one of
        ``rows`` at the rows it names; False where it cannot be read."""
        try:
            with closing(sqlite3.connect(uri(self.root / "catalog.sqlite"), uri=True, timeout=60)) as db:
                newest = set(db.execute("SELECT content_hash, track_row, seg_row, n_segments FROM vectors "
                                        "WHERE run_id=?", (run.id,)))
        except sqlite3.Error:
            return False
        return any((r["content_hash"], r["track_row"], r["seg_row"], r["n_segments"]) not in newest for r in rows)

    def _read_rows(self, run: Run, level: str, layer: int, rows: list[sqlite3.Row]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_read` as this catalog version's ``rows`` say, damage or not."""
        if level == "track":
            starts, counts = np.array([r["track_row"] for r in rows], dtype=np.int64), np.ones(len(rows), np.int64)
        else:
            starts = np.array([r["seg_row"] for r in rows], dtype=np.int64)
            counts = np.array([r["n_segments"] for r in rows], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        take = np.repeat(starts - offsets[:-1], counts) + np.arange(offsets[-1])
        ids = np.repeat(np.array([r["track_id"] for r in rows], dtype=np.int64), counts)
        name = run.layer_names[layer]
        try:
            mat = self.row_file(run, level, layer).take(take.tolist())  # float16 on disk: exact in float32
        except ShortFile as exc:
            raise StoreDamaged(
                f"{self.root}: {run.model} {level} vectors of layer {name} stop at "
                f"row {exc.rows} but the catalog references row {take.max()}; "
                "run `mess check --repair`"
            ) from None
        bad = ~np.isfinite(mat).all(axis=1)
        if bad.any():
            raise StoreDamaged(
                f"{self.root}: non-finite {run.model} vectors (layer {name}) for "
                f"track ids {sorted(set(ids[bad].tolist()))[:5]}; run `mess check --repair`"
            )
        want = expected([r["checksums"] for r in rows], level, layer, len(run.layer_names))
        wrong = changed(mat, offsets[:-1], counts, want)
        if wrong.any():
            raise StoreDamaged(
                f"{self.root}: {run.model} {level} vectors (layer {name}) of track ids "
                f"{sorted(r['track_id'] for r, w in zip(rows, wrong, strict=True) if w)[:5]} differ from their "
                "checksums (changed on disk); run `mess check --repair`"
            )
        return ids, mat

    def layer_matrix(self, run: Run, layer: str | int) -> tuple[np.ndarray, np.ndarray]:
        """(track ids, float32 [n_tracks, dim]) of one layer's track vectors (read again where rows moved meanwhile,
        outside a snapshot: its rows query is one statement)."""
        return self.reading(lambda: self._read(run, "track", run.layer_index(layer), self._rows(run)), snapshot=False)

    def all_layers(self, run: Run) -> tuple[np.ndarray, np.ndarray]:
        """(track ids, float32 [n_tracks, n_layers, dim]) for models whose layers share one dim."""
        if len(set(run.layer_dims)) != 1:
            raise StoreError(f"{run.model} layers have different sizes {run.layer_dims}; read them one by one")
        mats = [self.layer_matrix(run, i) for i in range(len(run.layer_names))]
        return mats[0][0], np.stack([m for _, m in mats], axis=1)

    def segment_matrix(self, run: Run, layer: str | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(track id per segment, start seconds, float32 [n_segments, dim]) of one layer; StoreDamaged when two
        files' windows overlap (the open-time check sees shared track rows only). Read again where rows moved
        meanwhile, outside a snapshot (its rows query is one statement)."""
        return self.reading(lambda: self._segment_matrix(run, layer), snapshot=False)

    def _segment_matrix(self, run: Run, layer: str | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = self._rows(run)
        spans = sorted({r["content_hash"]: (r["seg_row"], r["n_segments"]) for r in rows}.values())
        if any(a[0] + a[1] > b[0] for a, b in zip(spans, spans[1:], strict=False)):
            raise StoreDamaged(f"{self.root}: two files' {run.model} window vectors point at the same rows; "
                               "run `mess check` for details and `mess check --repair` to fix it")
        seg_ids, mat = self._read(run, "segment", run.layer_index(layer), rows)
        starts = [s for r in rows for s in json.loads(r["seg_starts"])]
        return seg_ids, np.array(starts), mat

    def track_rows(self, run: Run) -> dict[str, int]:
        """content hash -> track row, for writing derived vectors aligned to rows."""
        return {
            r[0]: r[1] for r in self._query("SELECT content_hash, track_row FROM vectors WHERE run_id=?", (run.id,))
        }
