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


class DerivedRewritten(StoreError):
    """The file of a derived set (fused, ...) that the catalog version being read names is gone: ``fuse apply``
    rewrote the set twice since (or it was deleted). Read again on a newer version
    (see :meth:`~mess.store.connection.StoreConnection.reading`).
    """


class TrackFailed(StoreError):
    """The track asked for failed to extract, so it has no vectors; the message names it and the recorded reason."""

    def __init__(self, message: str, path: str) -> None:
        """``message`` names the file at ``path`` (kept, so a server can show the file name alone)."""
        super().__init__(message)
        self.path = path
