"""Each run's aspect map: the layer a probe chose per aspect, and what the probe saw."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

from mess.store.derived import DerivedSets
from mess.store.records import Run, Track


class AspectMaps(DerivedSets):
    """The aspect -> (layer, score, margin) map of each run, as the last probe chose it."""

    def set_aspect_map(self, run: Run, entries: Iterable[tuple[str, str, float, float]], *,
                       n_tracks: int | None = None, probed_at: float | None = None,
                       tracks_digest: str | None = None) -> None:
        """Replace the aspect -> (layer, score, margin) map of a run; ``n_tracks``: the run's tracks when probed;
        ``probed_at``: the stamp of the probe report it comes from; ``tracks_digest``: :meth:`tracks_digest` of the
        run when probed. A score or margin that is not a finite number is refused (ValueError), the stored map kept."""
        entries = list(entries)
        for aspect, _, score, margin in entries:
            if not (math.isfinite(score) and math.isfinite(margin)):
                raise ValueError(f"the aspect map's score ({score}) or margin ({margin}) of aspect {aspect!r} is not a "
                                 "finite number")
        with self._write():
            self.db.execute("DELETE FROM aspect_map WHERE run_id=?", (run.id,))
            self.db.executemany(
                "INSERT INTO aspect_map (run_id, aspect, layer, score, margin, n_tracks, probed_at, tracks_digest) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run.id, a, layer, s, m, n_tracks, probed_at, tracks_digest) for a, layer, s, m in entries],
            )

    def tracks_digest(self, run: Run) -> str:
        """A digest of the audio of the run's tracks (their content hashes, copies counted): two sets of as many
        tracks differ in it."""
        tracks = self.tracks(run)
        return self.cached(("tracks-digest", run.id), lambda: track_set_digest(tracks), tracks=tracks)

    def aspect_map_digest(self, run: Run) -> str | None:
        """:meth:`tracks_digest` of the run when the stored aspect map was probed; None when never probed or not
        recorded (a map from an older mess)."""
        value = self._aspect_map_field(run, "tracks_digest")
        return None if value is None else str(value)

    def aspect_map_probed_at(self, run: Run) -> float | None:
        """The stamp (``probed_at``) of the probe report the stored aspect map comes from; None when never probed or
        not recorded (a map from an older mess)."""
        value = self._aspect_map_field(run, "probed_at")
        return None if value is None else float(value)

    def aspect_map_tracks(self, run: Run) -> int | None:
        """How many tracks the run had when the stored aspect map was probed; None when never probed or not
        recorded (a map from an older mess)."""
        value = self._aspect_map_field(run, "n_tracks")
        return None if value is None else int(value)

    def _aspect_map_field(self, run: Run, column: str) -> str | int | float | None:
        """The stored aspect map's ``column`` (one of this class's own names) for the run; None when never probed or
        the column is not there (a catalog from an older mess)."""
        if not self._has_column("aspect_map", column):
            return None
        return self._query(f"SELECT MAX({column}) FROM aspect_map WHERE run_id=?", (run.id,))[0][0]

    def aspect_scores(self, run: Run) -> dict[str, float]:
        """aspect -> the probe's cross-validated score (R^2) of the chosen layer, less the shuffled control's when
        that ran (empty when never probed)."""
        return {
            r[0]: float(r[1])
            for r in self._query("SELECT aspect, score FROM aspect_map WHERE run_id=? ORDER BY aspect", (run.id,))
        }

    def aspect_map(self, run: Run) -> dict[str, str]:
        """aspect -> layer name, as chosen by the last probe of this run (empty when never probed)."""
        return {
            r[0]: r[1]
            for r in self._query("SELECT aspect, layer FROM aspect_map WHERE run_id=? ORDER BY aspect", (run.id,))
        }


def track_set_digest(tracks: Iterable[Track]) -> str:
    """SHA-256 (hex, 16 characters) of the sorted content hashes of ``tracks``: which audio a probe saw."""
    return hashlib.sha256("\n".join(sorted(t.content_hash for t in tracks)).encode()).hexdigest()[:16]
