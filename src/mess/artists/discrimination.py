"""Per-layer discrimination: does a layer tell artists apart, or is everything ~0.9 similar?"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mess.artists.profiles import ArtistError, ArtistSet, Space
from mess.artists.similarity import ArtistVectors, artist_vectors, similarity_matrix

COMPRESSED_SPAN = 0.1  # raw artist similarities spanning less than this carry little ranking contrast
COMPRESSED_FLOOR = 0.5  # ... as do layers where even the least similar artists are this similar
MIN_SEPARATION = 0.5  # within- vs between-artist effect size below this: no artist signal
SILHOUETTE_SAMPLE = 2000


@dataclass(frozen=True)
class PairStats:
    """Distribution of artist-pair similarities (off the diagonal)."""

    min: float
    max: float
    span: float
    mean: float
    highest: tuple[str, str, float]
    lowest: tuple[str, str, float]


@dataclass(frozen=True)
class Separation:
    """Track-pair cosines within one artist vs between artists, and their effect size."""

    within: float
    between: float
    effect: float  # (within - between) / std(between); NaN when no artist has 2 tracks


@dataclass(frozen=True)
class LayerReport:
    """How well one layer separates the collection's artists, raw and mean-centred."""

    label: str
    raw: PairStats
    centered: PairStats
    raw_separation: Separation
    separation: Separation
    silhouette: float | None
    flags: tuple[str, ...]

    @property
    def verdict(self) -> str:
        """One-word summary: useful, centre (compressed but separates), useless, or unknown (no separation to judge
        by: no artist has two tracks)."""
        if "no-evidence" in self.flags:
            return "unknown"
        if "no-artist-signal" in self.flags:
            return "useless"
        return "centre" if "compressed" in self.flags else "useful"

    def to_dict(self) -> dict:
        """JSON-ready form, verdict included."""
        return {**asdict(self), "verdict": self.verdict}


def pair_stats(sim: np.ndarray, names: list[str]) -> PairStats:
    """Min / max / span / mean of the upper triangle, with the extreme pairs named."""
    upper_i, upper_j = np.triu_indices(len(names), k=1)
    values = sim[upper_i, upper_j].astype(np.float64)
    hi, lo = int(values.argmax()), int(values.argmin())
    return PairStats(
        min=float(values[lo]), max=float(values[hi]), span=float(values[hi] - values[lo]), mean=float(values.mean()),
        highest=(names[upper_i[hi]], names[upper_j[hi]], float(values[hi])),
        lowest=(names[upper_i[lo]], names[upper_j[lo]], float(values[lo])))


def separation(vectors: ArtistVectors) -> Separation:
    """Mean cosine of same-artist vs different-artist track pairs, and Cohen's d between them.

    Computed exactly from sums of dot products (the between-artist moments come
    from the [dim x dim] Gram matrix), so it costs ``O(M dim^2)``, not ``O(M^2)``.
    """
    x = vectors.vectors.astype(np.float64)
    m = len(x)
    bounds = np.append(vectors.offsets, m)
    sq_norms = (x * x).sum(axis=1)
    total = float(x.sum(axis=0) @ x.sum(axis=0) - sq_norms.sum())
    total_sq = float(np.square(x.T @ x).sum() - np.square(sq_norms).sum())
    within = within_sq = 0.0
    n_within = 0
    for a, b in zip(bounds[:-1], bounds[1:], strict=False):
        block = x[a:b] @ x[a:b].T
        within += float(block.sum() - np.trace(block))
        within_sq += float(np.square(block).sum() - np.square(np.diag(block)).sum())
        n_within += (b - a) * (b - a - 1)
    n_between = m * (m - 1) - n_within
    mean_between = (total - within) / n_between
    std_between = np.sqrt(max((total_sq - within_sq) / n_between - mean_between**2, 0.0))
    if n_within == 0:
        return Separation(float("nan"), float(mean_between), float("nan"))
    mean_within = within / n_within
    effect = (mean_within - mean_between) / std_between if std_between > 0 else float("nan")
    return Separation(float(mean_within), float(mean_between), float(effect))


def _silhouette(vectors: ArtistVectors) -> float | None:
    """Cosine silhouette of tracks labelled by artist (sampled above 2000 tracks)."""
    from sklearn.metrics import silhouette_score  # here, not at the top: the CLI starts without sklearn/scipy

    labels = np.repeat(np.arange(len(vectors.offsets)), np.diff(np.append(vectors.offsets, len(vectors.vectors))))
    if not 2 <= len(vectors.offsets) < len(labels):
        return None
    sample = SILHOUETTE_SAMPLE if len(labels) > SILHOUETTE_SAMPLE else None
    return float(silhouette_score(vectors.vectors, labels, metric="cosine", sample_size=sample, random_state=0))


def layer_report(artists: ArtistSet, space: Space, method: str = "mean") -> LayerReport:
    """Discrimination of one space: raw and centred pair statistics, separation, flags."""
    names = artists.names
    raw_vectors = artist_vectors(artists, space, center=False)
    vectors = artist_vectors(artists, space, center=True)
    raw = pair_stats(similarity_matrix(raw_vectors, method), names)
    centered = pair_stats(similarity_matrix(vectors, method, warn=False), names)  # beside the raw: no switch to name
    sep = separation(vectors)
    flags = []
    if raw.span < COMPRESSED_SPAN or raw.min > COMPRESSED_FLOOR:
        flags.append("compressed")
    if not np.isfinite(sep.effect):  # no artist with 2 tracks (or every between pair alike): nothing to judge by
        flags.append("no-evidence")
    elif sep.effect < MIN_SEPARATION:
        flags.append("no-artist-signal")
    return LayerReport(space.label, raw, centered, separation(raw_vectors), sep, _silhouette(vectors), tuple(flags))


def rank_layers(reports: list[LayerReport]) -> list[LayerReport]:
    """Most artist-discriminative first (by centred separation; NaN last)."""
    return sorted(reports, key=lambda r: -r.separation.effect if np.isfinite(r.separation.effect) else np.inf)


def most_discriminative(artists: ArtistSet, spaces: list[Space]) -> tuple[Space, float]:
    """The space whose centred tracks separate artists best, with its effect size."""
    if not spaces:
        raise ArtistError("no spaces to compare: pass at least one (load_space of a layer, aspect or fused)")
    scored = [(separation(artist_vectors(artists, s, center=True)).effect, i) for i, s in enumerate(spaces)]
    effect, best = max(scored, key=lambda e: (np.nan_to_num(e[0], nan=-np.inf), -e[1]))
    return spaces[best], float(effect)
