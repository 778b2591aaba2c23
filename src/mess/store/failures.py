"""The store's record of the files that failed to extract, per run."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from mess.store.connection import StoreConnection
from mess.store.paths import expanded, from_db_path, printable, resolved, to_db_path
from mess.store.records import Run, Track


class FailureRecords(StoreConnection):
    """Why files could not be embedded: recorded per run and content, or per path for a file never read."""

    def record_failure(self, run: Run, content_hash: str, path: str, reason: str) -> None:
        """Remember why a file could not be embedded (files never hashed are keyed by their path)."""
        with self._write():
            self.db.execute(
                "INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?)",
                (run.id, content_hash or unread_key(path), to_db_path(path), printable(reason), time.time()),
            )

    def failures(self, run: Run) -> list[tuple[str, str]]:
        """(path, reason) of each file that failed in this run, as the files are now.

        A failure is kept per content, so every catalogued file with that content is listed (the reason
        naming each); a file whose content has changed since is not. Files never hashed are listed by path.
        """
        shared = self._query(
            "SELECT t.path, f.path, f.reason FROM failures f JOIN tracks t ON t.content_hash = f.content_hash "
            "WHERE f.run_id=? ORDER BY f.at, t.path",
            (run.id,),
        )
        unread = self._query(
            "SELECT path, path, reason FROM failures WHERE run_id=? AND content_hash LIKE 'path:%' ORDER BY at",
            (run.id,),
        )
        out = []
        for now, then, reason in [*shared, *unread]:
            path = from_db_path(now)
            out.append((path, reason.replace(printable(from_db_path(then)), printable(path))))
        return out

    def failure(self, run: Run, track: Track) -> str | None:
        """Why ``track``'s content failed to extract in ``run`` (the recorded reason, naming the file as it is now,
        less the 'PATH: ' it starts with: the caller names the track), or None when no failure is recorded."""
        row = self._one("SELECT path, reason FROM failures WHERE run_id=? AND content_hash=?",
                        (run.id, track.content_hash))
        if row is None:
            return None
        return _reason_alone(str(row[1]).replace(printable(from_db_path(row[0])), printable(track.path)), track.path)

    def unread_failure(self, ref: str | Path) -> tuple[str, str] | None:
        """(path, reason) of the latest failure, in any run, of a file never read (so not catalogued) at ``ref``:
        a path, or a file name when one such file has it; None when there is none. The reason is without the
        'PATH: ' it was recorded with (the caller names the file)."""
        rows = self._query("SELECT path, reason FROM failures WHERE content_hash LIKE 'path:%' ORDER BY at DESC")
        latest: dict[str, str] = {}
        for path, reason in rows:
            latest.setdefault(from_db_path(path), _reason_alone(str(reason), from_db_path(path)))
        exact = str(resolved(expanded(ref)))
        if exact in latest:
            return exact, latest[exact]
        named = [(path, reason) for path, reason in latest.items() if Path(path).name == Path(ref).name]
        return named[0] if len(named) == 1 else None

    def unread_paths(self) -> list[str]:
        """Paths of the failures of files that could not be read at all (never hashed), in every run."""
        rows = self._query("SELECT DISTINCT path FROM failures WHERE content_hash LIKE 'path:%'")
        return [from_db_path(r[0]) for r in rows]

    def forget_unread(self, paths: Iterable[str]) -> None:
        """Drop the failures of these never-read files (gone from disk, say), in every run."""
        with self._write():
            self.db.executemany("DELETE FROM failures WHERE content_hash=?", [(unread_key(p),) for p in paths])


def _reason_alone(reason: str, path: str) -> str:
    """A recorded failure ``reason`` without the 'PATH: ' that extraction starts it with ('x.wav: cannot decode
    (...)' -> 'cannot decode (...)'), for a message that names the file itself; any other reason as it is."""
    return reason.removeprefix(f"{printable(path)}: ")


def unread_key(path: str) -> str:
    """The failures table's key for a file that failed before it could be hashed."""
    return "path:" + printable(path)
