"""The 2-D map of the collection: PCA of one vector set's unit vectors (as search compares them)."""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mess.search.vectors import VectorSet

if TYPE_CHECKING:
    from sklearn.decomposition import PCA


@dataclass(frozen=True)
class CollectionMap:
    """Track ids and their 2-D coordinates (collection scaled into [-1, 1]), and the fitted projection."""

    ids: np.ndarray
    xy: np.ndarray
    explained: tuple[float, float]
    pca: PCA | None
    scale: np.ndarray  # per axis: sign (largest extreme positive) / largest |coordinate|

    def place(self, unit: np.ndarray) -> np.ndarray:
        """2-D coordinates of new unit vectors [n, dim] on this map."""
        if self.pca is None:
            return np.zeros((len(unit), 2), dtype=np.float32)
        return (self.pca.transform(np.atleast_2d(unit)) * self.scale).astype(np.float32)


def preload() -> threading.Thread:
    """Import scikit-learn's PCA in a background thread, so the first map is not computed behind it.

    Handlers compute maps while holding the request lock; a cold import there (about 1 s on a quiet
    machine, several under load) stalled every other request, health checks included. The server
    calls this at start-up; it still starts at once.
    """
    thread = threading.Thread(target=importlib.import_module, args=("sklearn.decomposition",),
                              name="mess-preload", daemon=True)
    thread.start()
    return thread


def collection_map(vectors: VectorSet) -> CollectionMap:
    """PCA to 2-D of a vector set's unit vectors (the caller caches it by ``vectors.fingerprint``); fewer than 3, or
    all the same, have no axis of variance: every point at the centre, none explained."""
    from sklearn.decomposition import PCA  # here, not at the top: the server starts without waiting for it

    unit = vectors.unit()
    if len(unit) < 3 or (unit == unit[0]).all():  # all the same: PCA's ratio is 0/0, or its mean's rounding noise
        return CollectionMap(vectors.ids.copy(), np.zeros((len(unit), 2), np.float32), (0.0, 0.0), None, np.ones(2))
    pca = PCA(n_components=2, random_state=0).fit(unit)
    xy = pca.transform(unit)
    sign = np.where(xy.max(axis=0) >= -xy.min(axis=0), 1.0, -1.0)
    scale = sign / max(float(np.abs(xy).max()), 1e-12)
    ratio = pca.explained_variance_ratio_
    return CollectionMap(vectors.ids.copy(), (xy * scale).astype(np.float32), (float(ratio[0]), float(ratio[1])),
                         pca, scale)
