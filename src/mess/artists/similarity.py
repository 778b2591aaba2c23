"""Artist x artist similarity from track vectors: mean-of-tracks or set-to-set (Chamfer)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from mess.artists.profiles import ArtistError, ArtistSet, Space
from mess.artists.setdist import chamfer_matrix, chamfer_row

METHODS = ("mean", "chamfer")
FEW_ARTISTS = 5  # below this many, centred scores say more about the collection's mean than about the music


@dataclass(frozen=True)
class ArtistVectors:
    """Unit track vectors of each artist's chosen tracks, rows grouped by artist.

    Artist g owns rows ``offsets[g]:offsets[g+1]`` (in :class:`ArtistSet` order).
    """

    vectors: np.ndarray
    offsets: np.ndarray
    centered: bool

    @property
    def means(self) -> np.ndarray:
        """Unit mean vector per artist, [n_artists, dim]."""
        return _unit_rows(np.add.reduceat(self.vectors, self.offsets, axis=0))


def artist_vectors(artists: ArtistSet, space: Space, *, center: bool = True) -> ArtistVectors:
    """Gather each artist's track vectors, optionally mean-centred, as unit rows.

    Centring subtracts the mean of *all* tracks in the space before the cosine.
    Embeddings of short chunks share a large common direction (anisotropy) that
    makes every pair of artists look 0.8-0.97 similar; removing it restores contrast.
    """
    row_of = {int(t): i for i, t in enumerate(space.track_ids)}
    matrix = np.asarray(space.matrix, dtype=np.float32)
    if center:
        matrix = matrix - matrix.mean(axis=0, keepdims=True)
    rows, sizes = [], []
    for profile in artists.profiles:
        mine = [row_of[t] for t in profile.track_ids if t in row_of]
        if not mine:
            raise ArtistError(f"artist {profile.name!r} has no vectors in {space.label}; "
                              "re-run the step that produced them (e.g. `mess fuse apply`)")
        rows += mine
        sizes.append(len(mine))
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return ArtistVectors(_unit_rows(matrix[rows]), offsets, center)


def centring_note(artists: int, uncentred: str) -> str | None:
    """What centred scores of so few ``artists`` say (None from :data:`FEW_ARTISTS` up); ``uncentred`` names the
    switch that turns centring off ('--no-center', 'center=false')."""
    if artists >= FEW_ARTISTS:
        return None
    return (f"only {artists} artists: centring on the collection's mean makes so few look opposite whatever the "
            f"music (by --method mean two score about -1, three about -0.5); {uncentred} compares them as they are")


def _warn_if_few(vectors: ArtistVectors, method: str, warn: bool) -> None:
    """The CLI's centring note as a UserWarning (when ``warn``), pointed at the caller of the similarity function;
    an unknown ``method`` is an ArtistError first."""
    if method not in METHODS:
        raise ArtistError(f"unknown method {method!r}; choose {' or '.join(METHODS)}")
    if warn and vectors.centered and (note := centring_note(len(vectors.offsets), "center=False")):
        warnings.warn(note, UserWarning, stacklevel=3)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    from sklearn.preprocessing import normalize  # here, not at the top: the CLI starts without sklearn/scipy

    return normalize(matrix)


def similarity_matrix(vectors: ArtistVectors, method: str = "mean", *, warn: bool = True) -> np.ndarray:
    """Pairwise artist similarity, [n_artists, n_artists], 1 on the diagonal; a UserWarning where fewer than
    :data:`FEW_ARTISTS` artists are centred (:func:`centring_note`: the CLI's note), unless not ``warn`` (a caller
    that says the note its own way)."""
    _warn_if_few(vectors, method, warn)
    if method == "mean":
        means = vectors.means
        return np.clip(means @ means.T, -1.0, 1.0).astype(np.float32)
    return chamfer_matrix(vectors.vectors, vectors.offsets)


def similarity_row(vectors: ArtistVectors, index: int, method: str = "mean", *, warn: bool = True) -> np.ndarray:
    """Similarity of the artist of row ``index`` to every artist (cheaper than the full matrix; warns as
    :func:`similarity_matrix` does). ArtistError where ``index`` is no artist's row (-1 is not the last)."""
    n = len(vectors.offsets)
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or not 0 <= index < n:
        raise ArtistError(f"index must be an artist's row, 0 to {n - 1}; got {index!r}")
    _warn_if_few(vectors, method, warn)
    if method == "mean":
        means = vectors.means
        return np.clip(means @ means[index], -1.0, 1.0).astype(np.float32)
    return chamfer_row(vectors.vectors, vectors.offsets, index)


def top_k(scores: np.ndarray, index: int, k: int, keep: np.ndarray | None = None) -> list[int]:
    """Rows of the ``k`` highest scores, excluding ``index`` and rows where ``keep`` is False."""
    if k < 0:
        raise ArtistError(f"k must be 0 or more; got {k}")
    chosen: list[int] = []
    for j in np.argsort(-scores, kind="stable"):
        if len(chosen) == k:
            break
        if j != index and (keep is None or keep[j]):
            chosen.append(int(j))
    return chosen
