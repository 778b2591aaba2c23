"""The store's errors, and the advice for a catalog that cannot be read."""

from __future__ import annotations

CATALOG_ADVICE = (
    "restore catalog.sqlite from a backup, or move the store aside and extract again "
    "(`mess check --repair` cannot rebuild a catalog)"
)


class StoreError(Exception):
    """A request the store cannot answer (unknown run, track or layer)."""


class StoreDamaged(StoreError):
    """The store's files disagree with its catalog; the message names what and how to repair it."""


class ReadAgain(StoreError):
    """What a read found was changed by a newer catalog version than the one it read: read again on the newest
    (:meth:`~mess.store.connection.StoreConnection.reading` does), not damage."""


class DerivedRewritten(ReadAgain):
    """The file of a derived set (fused, ...) that the catalog version being read names is gone: ``fuse apply``
    rewrote the set twice since (or it was deleted)."""


class RowsMoved(ReadAgain):
    """Rows the catalog version being read references were moved or freed since (``mess check --reclaim`` or
    ``--repair`` ran): what the read found there is another file's vectors, zeros or nothing."""


class TrackFailed(StoreError):
    """The track asked for failed to extract, so it has no vectors; the message names it and the recorded reason."""

    def __init__(self, message: str, path: str) -> None:
        """``message`` names the file at ``path`` (kept, so a server can show the file name alone)."""
        super().__init__(message)
        self.path = path
