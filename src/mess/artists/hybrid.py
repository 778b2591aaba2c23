"""Hybrid artist similarity: a weighted blend of audio, genre tags, collaborations and reference lists.

Every component is an artist x artist matrix rescaled to [0, 1] off the diagonal,
so weights are comparable. Weights are learned by coordinate ascent on mean
nDCG@k over a training split of the reference artists and reported on the
held-out split, next to audio alone and every component alone.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mess.artists.credits import collaboration_similarity, track_credits
from mess.artists.profiles import ArtistError, ArtistSet
from mess.artists.validate import MIN_QUERIES, Metrics, evaluate
from mess.audio.names import credit_key, name_key
from mess.constants import ARTIST_WEIGHTS_FILE
from mess.store.paths import replace_file

COMPONENTS = ("audio", "genre", "collab", "reference")
WEIGHTS_FILE = ARTIST_WEIGHTS_FILE  # learned weights, in the store's reports folder
WEIGHT_GRID = np.linspace(0.0, 1.0, 11)
MAX_PASSES = 10
_TAG_SPLIT = re.compile(r"\s*[;,/|]\s*")


def _tag_set(text: str) -> set[str]:
    """The genre tags in one tag value ("Rock; Folk " -> {"rock", "folk"}), compared without case or padding."""
    return {t.casefold() for t in _TAG_SPLIT.split(text.strip()) if t}


def genre_similarity(artists: ArtistSet, extra_tags: dict[str, list[str]] | None = None) -> np.ndarray:
    """Jaccard similarity of artist genre-tag sets (track genre tags plus ``extra_tags``)."""
    from sklearn.preprocessing import MultiLabelBinarizer  # here, not at the top: the CLI starts without sklearn/scipy

    tags: list[set[str]] = [set() for _ in artists.profiles]
    for track in artists.tracks.values():
        row = artists.row_of(track)
        if row is not None and track.genre:
            tags[row] |= _tag_set(track.genre)
    by_name = {name_key(n): i for i, n in enumerate(artists.names)}
    for name, extra in (extra_tags or {}).items():
        if name_key(name) in by_name:
            tags[by_name[name_key(name)]] |= set().union(*(_tag_set(str(t)) for t in extra))
    onehot = MultiLabelBinarizer(sparse_output=True).fit_transform(tags).astype(np.float32)
    inter = np.asarray((onehot @ onehot.T).todense())
    sizes = np.asarray(onehot.sum(axis=1)).ravel()
    union = sizes[:, None] + sizes[None, :] - inter
    sim = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    np.fill_diagonal(sim, 1.0)
    return sim.astype(np.float32)


def collab_similarity(artists: ArtistSet) -> np.ndarray:
    """Collaboration-graph similarity from 'feat.' / multi-artist credits of every track (its composer credit when
    it has no artist tag, as the composer is then its artist: :func:`mess.artists.profiles.artist_of`)."""
    known = frozenset(name_key(n) for n in artists.names)
    credits = [track_credits(t.artist if credit_key(t.artist) else t.composer, t.title, known)
               for t in artists.tracks.values()]
    return collaboration_similarity(artists.names, [c for c in credits if len(c) > 1])


def reference_similarity(matched: dict[int, list[int]], n: int, *, reverse_only: bool = False) -> np.ndarray:
    """Similarity implied by reference lists: list position p of L gives (L - p) / L.

    ``sim[a, b]`` takes the larger of 'a lists b' and 'b lists a'. With
    ``reverse_only`` only 'b lists a' counts, so row a never uses a's own list: the
    form used when a's list is the answer being evaluated.
    """
    listed = np.zeros((n, n), dtype=np.float32)
    for q, relevant in matched.items():
        listed[q, relevant] = (len(relevant) - np.arange(len(relevant))) / len(relevant)
    sim = listed.T.copy() if reverse_only else np.maximum(listed, listed.T)
    np.fill_diagonal(sim, 1.0)
    return sim


def rescale(sim: np.ndarray) -> np.ndarray | None:
    """Min-max rescale off-diagonal values to [0, 1]; None when they are all equal (no information)."""
    off = ~np.eye(len(sim), dtype=bool)
    lo, hi = float(sim[off].min()), float(sim[off].max())
    if hi - lo < 1e-9:
        return None
    out = ((sim - lo) / (hi - lo)).astype(np.float32)
    np.fill_diagonal(out, 1.0)
    return out


def components(
    audio: np.ndarray,
    artists: ArtistSet,
    *,
    matched: dict[int, list[int]] | None = None,
    extra_tags: dict[str, list[str]] | None = None,
) -> dict[str, np.ndarray]:
    """The informative, rescaled components available for this collection (audio always first)."""
    raw = {"audio": audio, "genre": genre_similarity(artists, extra_tags), "collab": collab_similarity(artists)}
    if matched:
        raw["reference"] = reference_similarity(matched, len(artists.profiles))
    scaled = {name: rescale(sim) for name, sim in raw.items()}
    if scaled["audio"] is None and len(audio) == 2:  # any layer: one pair has one similarity
        raise ArtistError("the hybrid rescales each component over the artist pairs, and 2 artists make only one "
                          "pair; compare them without --hybrid / --weights")
    if scaled["audio"] is None:
        raise ArtistError("audio similarity is constant across artists; choose another layer")
    return {name: sim for name, sim in scaled.items() if sim is not None}


def blend(parts: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """Weighted sum of components (missing components or weights count as 0); ArtistError for a weight of no
    component (a misspelt name) or one that is not a finite number."""
    unknown = sorted(set(weights) - set(COMPONENTS))
    if unknown:
        raise ArtistError(f"unknown component {unknown[0]!r}; choose from {', '.join(COMPONENTS)}")
    if not all(math.isfinite(w) for w in weights.values()):
        raise ArtistError(f"weights must be finite numbers; got {weights}")
    first = next(iter(parts.values()))
    out = np.zeros_like(first)
    for name, sim in parts.items():
        if weights.get(name, 0.0):
            out += weights[name] * sim
    return out


def parse_weights(text: str) -> dict[str, float]:
    """'audio=0.6,genre=0.3,collab=0.1' -> normalised weights; unknown names are an error."""
    weights = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = item.partition("=")
        if name.strip() not in COMPONENTS:
            raise ArtistError(f"unknown component {name.strip()!r}; choose from {', '.join(COMPONENTS)}")
        if name.strip() in weights:
            raise ArtistError(f"weight {name.strip()!r} given twice")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise ArtistError(f"weight {item!r} is not NAME=NUMBER") from None
    return _normalised(weights)


def _normalised(weights: dict[str, float]) -> dict[str, float]:
    if not all(math.isfinite(w) and w >= 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ArtistError("weights must be finite, non-negative numbers with a positive sum")
    total = sum(weights.values())
    if math.isinf(total):  # finite weights whose sum overflows: scaled to the largest first
        top = max(weights.values())
        weights = {name: w / top for name, w in weights.items()}
        total = sum(weights.values())
    return {name: w / total for name, w in weights.items()}


def learn_weights(
    parts: dict[str, np.ndarray], matched: dict[int, list[int]], queries: Iterable[int], k: int = 10
) -> tuple[dict[str, float], float]:
    """Coordinate ascent over a 0.1 grid maximising mean nDCG@k on ``queries``: (weights, nDCG)."""
    queries = list(queries)

    def score(weights: dict[str, float]) -> float:
        return evaluate(blend(parts, weights), matched, k, queries).ndcg

    weights = {name: 1.0 / len(parts) for name in parts}
    best = score(weights)
    for _ in range(MAX_PASSES):
        improved = False
        for name in parts:
            for value in WEIGHT_GRID:
                trial = dict(weights, **{name: float(value)})
                if sum(trial.values()) <= 0:
                    continue
                trial = _normalised(trial)
                trial_score = score(trial)
                if trial_score > best + 1e-9:
                    weights, best, improved = trial, trial_score, True
        if not improved:
            break
    return {name: round(w, 4) for name, w in weights.items()}, best


@dataclass(frozen=True)
class HybridFit:
    """Learned weights and held-out metrics of the hybrid and of each component alone."""

    weights: dict[str, float]
    train_queries: int
    test_queries: int
    train_ndcg: float
    test: dict[str, Metrics]  # 'hybrid', 'equal', and one entry per component

    @property
    def caveat(self) -> str | None:
        """A sentence when too few held-out reference artists back the comparison of scorings, else None."""
        if self.test_queries >= MIN_QUERIES:
            return None
        held = f"{self.test_queries} reference artist" + ("" if self.test_queries == 1 else "s")
        return (f"the held-out split holds {held}: too few to conclude which scoring is best, or that the learned "
                f"weights carry over (want >= {MIN_QUERIES}: more reference artists in the collection, or a "
                "larger --test-fraction)")

    def to_dict(self) -> dict:
        """JSON-ready form, with the :attr:`caveat`."""
        return {**asdict(self), "test": {name: asdict(m) for name, m in self.test.items()}, "caveat": self.caveat}


def fit_hybrid(
    base: dict[str, np.ndarray],
    matched: dict[int, list[int]],
    *,
    k: int = 10,
    test_fraction: float = 0.3,
    seed: int = 0,
) -> HybridFit:
    """Split reference artists, learn weights on the training part, evaluate on the rest.

    ``base`` holds the non-reference components (:func:`components` without
    ``matched``). The reference component is rebuilt from the training lists only
    and read in reverse ('who lists this artist'), so no query's own list, and no
    held-out list, ever feeds its score.
    """
    queries = sorted(matched)
    if len(queries) < 2:
        raise ArtistError(
            f"learning weights needs at least 2 reference artists in the collection, found {len(queries)}"
        )
    if not 0.0 < test_fraction < 1.0:
        raise ArtistError("test fraction must be between 0 and 1")
    order = np.random.default_rng(seed).permutation(queries)
    n_test = min(max(1, round(test_fraction * len(queries))), len(queries) - 1)
    test, train = sorted(order[:n_test].tolist()), sorted(order[n_test:].tolist())
    parts = dict(base)
    ref = rescale(
        reference_similarity({q: matched[q] for q in train}, len(next(iter(base.values()))), reverse_only=True)
    )
    if ref is not None:
        parts["reference"] = ref
    weights, train_ndcg = learn_weights(parts, matched, train, k)
    results = {
        "hybrid": evaluate(blend(parts, weights), matched, k, test),
        "equal": evaluate(blend(parts, dict.fromkeys(parts, 1.0 / len(parts))), matched, k, test),
    }
    results.update({name: evaluate(sim, matched, k, test) for name, sim in parts.items()})
    return HybridFit(weights, len(train), len(test), train_ndcg, results)


def save_weights(path: Path, fit: HybridFit, meta: dict) -> None:
    """Write learned weights and their held-out evaluation as JSON, replacing the file whole (an interrupted write
    leaves the weights before)."""
    replace_file(path, json.dumps({**meta, **fit.to_dict()}, indent=2).encode("utf-8"))


def load_weights(path: str | Path) -> dict[str, float]:
    """Weights saved by :func:`save_weights`; a missing or malformed file is an ArtistError."""
    path = Path(path)
    try:
        weights = json.loads(path.read_text(encoding="utf-8"))["weights"]
    except FileNotFoundError:
        raise ArtistError(
            f"no learned weights at {path}; run `mess artists hybrid --reference FILE` "
            "or pass --weights audio=...,genre=..."
        ) from None
    except OSError as exc:  # a folder of that name, or a file this user may not read
        raise ArtistError(f"cannot read weights file {path} ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError) as exc:  # ValueError: not JSON, or not UTF-8
        raise ArtistError(f"malformed weights file {path} ({exc})") from None
    if not isinstance(weights, dict):
        raise ArtistError(f"malformed weights file {path} (its weights are not an object of NAME: NUMBER)")
    return parse_weights(",".join(f"{k}={v}" for k, v in weights.items()))
