"""Validation on renders where the answer is known: the same pieces with one factor varied.

For each factor (GM instrument, tempo, transposition, velocity) two questions:

1. Targets: which aspect's proxy targets move with the factor? For every target, its
   within-piece standard deviation (only the factor varies within a piece) divided by
   its standard deviation over the *other* factor sets, which vary everything except
   this factor: the factor's movement in units of the target's background spread. An
   aspect's effect is the mean over its targets; the largest should be the intended one.
2. Layers: does a layer encode the factor itself? Features and factor values are
   centred within each piece (removing which piece it is, keeping how it was
   rendered), then probed with folds that leave whole pieces out: rank correlation
   with the true value for numeric factors, accuracy for the instrument. The floor is
   a permutation test: the 95th percentile of the same probe with the factor values
   shuffled within pieces, 20 times.

Pieces are rendered whole (four measures, never cut), so a slower tempo stretches
the same notes instead of fitting fewer of them into a fixed duration.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

import numpy as np
from scipy.stats import spearmanr
from sklearn.linear_model import RidgeClassifierCV
from sklearn.preprocessing import StandardScaler

from mess.audio.discover import content_hash
from mess.audio.windows import WindowPolicy
from mess.datasets.render import Factor, RenderedVariant, RenderSettings, render_factor_set
from mess.extract.embed import embed_file
from mess.models.base import EmbeddingModel
from mess.probing.probes import ALPHAS, Folds, ProbeError, make_folds
from mess.probing.ridge import fit_ridge_loo
from mess.probing.target_cache import track_targets
from mess.probing.targets import ASPECTS, TARGET_NAMES, TARGETS
from mess.store import Track
from mess.store.paths import replace_file
from mess.store.reports import slug

FACTORS = ("instrument", "tempo", "transpose", "velocity")
# brightness is the main perceptual dimension of timbre (Grey 1977; McAdams et al. 1995)
EXPECTED_ASPECTS = {
    "instrument": ("timbre", "brightness"),
    "tempo": ("rhythm",),
    "transpose": ("harmony",),
    "velocity": ("dynamics",),
}
CATEGORICAL = frozenset({"instrument"})
MIN_MARGIN = 0.25  # how far the best layer must beat chance
N_PERMUTATIONS = 20
LEVEL_SD_DB = 1.0  # below this, velocity renders are taken to be level-normalised
RENDER_SETTINGS = RenderSettings(max_seconds=30.0, max_measures=4)


@dataclass(frozen=True)
class FactorResult:
    """What varying one factor did to the targets, and how well each layer recovers it."""

    factor: str
    expected: tuple[str, ...]
    n_renders: int
    n_pieces: int
    target_effect: dict[str, float]  # target -> within-piece SD / SD with the factor held fixed
    aspect_effect: dict[str, float]  # aspect -> mean effect of its targets
    layer_scores: dict[str, float]  # layer -> Spearman rho (numeric factor) or accuracy (instrument)
    null_scores: dict[str, float]  # 95th percentile of the probe with factor values permuted within pieces
    metric: str  # "spearman" or "accuracy"
    chance: float  # the score of guessing (0 for Spearman, 1 / levels for accuracy)
    note: str = ""  # a caveat about the renders, when there is one

    @property
    def moved(self) -> str:
        """The aspect whose targets move most with the factor."""
        return max(self.aspect_effect, key=lambda a: np.nan_to_num(self.aspect_effect[a], nan=-np.inf))

    @property
    def best_layer(self) -> str:
        """The layer that recovers the factor best."""
        return max(self.layer_scores, key=lambda layer: np.nan_to_num(self.layer_scores[layer], nan=-np.inf))

    @property
    def aspect_found(self) -> bool:
        """The aspect that moved most is the intended one."""
        return self.moved in self.expected

    @property
    def layer_found(self) -> bool:
        """The best layer beats chance by MIN_MARGIN and its permutation null (p < 0.05)."""
        best = self.layer_scores[self.best_layer]
        return best > self.chance + MIN_MARGIN and best > self.null_scores[self.best_layer]

    def to_dict(self) -> dict:
        """JSON-ready result (NaN as null) with the verdicts."""

        def clean(d: dict[str, float]) -> dict[str, float | None]:
            return {k: None if np.isnan(v) else round(v, 4) for k, v in d.items()}

        return {
            "factor": self.factor,
            "expected": list(self.expected),
            "n_renders": self.n_renders,
            "n_pieces": self.n_pieces,
            "target_effect": clean(self.target_effect),
            "aspect_effect": clean(self.aspect_effect),
            "moved": self.moved,
            "aspect_found": self.aspect_found,
            "metric": self.metric,
            "chance": self.chance,
            "layer_scores": clean(self.layer_scores),
            "null_scores_p95": clean(self.null_scores),
            "best_layer": self.best_layer,
            "layer_found": self.layer_found,
            "note": self.note,
        }


def within_sd(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per column: root-mean-square deviation of rows from their group's mean."""
    return np.sqrt((centre_within(values, groups) ** 2).mean(axis=0))


def effect_sizes(sets: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per factor set and target: within-piece SD / SD of the target over the *other* factor sets.

    Within a piece only the factor varies, so the numerator is what the factor does;
    the other sets vary every other factor while holding this one fixed, so the
    denominator is the target's background spread. Needs at least two sets.
    """
    if len(sets) < 2:
        raise ProbeError("effect sizes need at least two factor sets (the others are the reference)")
    out = {}
    for factor, (values, pieces) in sets.items():
        background = np.concatenate([v for f, (v, _) in sets.items() if f != factor]).std(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[factor] = np.where(background > 0, within_sd(values, pieces) / background, np.nan)
    return out


def centre_within(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Subtract each group's mean from its rows."""
    out = np.asarray(values, dtype=np.float64).copy()
    for g in np.unique(groups):
        out[groups == g] -= out[groups == g].mean(axis=0)
    return out


def factor_probe(x: np.ndarray, values: np.ndarray, groups: np.ndarray, folds: Folds, categorical: bool) -> float:
    """Leave-pieces-out recovery of the factor from within-piece-centred features.

    Numeric factors: Spearman correlation between the ridge prediction and the true
    value inside each held-out piece (does the layer put the renders in factor order?),
    averaged over folds. Instrument: accuracy of a ridge classifier.
    """
    xc = centre_within(x, groups)
    scores, hits = [], 0
    for train, test in folds.splits:
        scaler = StandardScaler().fit(xc[train])
        x_train, x_test = scaler.transform(xc[train]), scaler.transform(xc[test])
        if categorical:
            clf = RidgeClassifierCV(alphas=ALPHAS).fit(x_train, values[train])
            hits += int((clf.predict(x_test) == values[test]).sum())
        else:
            pred = fit_ridge_loo(x_train, values[train, None], ALPHAS).predict(x_test)[:, 0]
            rho = spearmanr(pred, values[test]).statistic if np.ptp(pred) > 0 else 0.0
            scores.append(float(np.nan_to_num(rho)))
    return hits / len(values) if categorical else float(np.mean(scores))


def shuffle_within(values: np.ndarray, groups: np.ndarray, seed: int = 0) -> np.ndarray:
    """Factor values permuted inside each group (the design stays balanced, the link is broken)."""
    rng = np.random.default_rng(seed)
    out = values.copy()
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        out[idx] = values[rng.permutation(idx)]
    return out


def _targets(variants: Sequence[RenderedVariant], policy: WindowPolicy, cache_root: Path, workers: int) -> np.ndarray:
    tracks = [
        Track(i, str(v.path), content_hash(v.path), None, None, None, None, None, None) for i, v in enumerate(variants)
    ]
    targets = track_targets(cache_root, tracks, policy, workers=workers)
    if targets.missing:
        raise ProbeError(f"cannot compute targets: {targets.missing[0][1]}")
    return targets.values


def _layer_scores(
    variants: Sequence[RenderedVariant], model: EmbeddingModel, policy: WindowPolicy, seed: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Leave-pieces-out factor probe of every layer, and its permutation null (95th percentile)."""
    factor = variants[0].factor
    pieces = np.array([v.piece.corpus_path for v in variants])
    values = np.array([v.value for v in variants])
    if factor == "tempo":
        values = np.log2(values)  # tempo scales act multiplicatively
    folds = make_folds(len(variants), [("piece", pieces.tolist())], n_folds=len(set(pieces.tolist())), seed=seed)
    vectors = [embed_file(v.path, model, policy).layers for v in variants]
    shuffles = [shuffle_within(values, pieces, seed + k) for k in range(N_PERMUTATIONS)]
    scores, null = {}, {}
    for i, layer in enumerate(model.info.layer_names):
        x = np.stack([vec[i] for vec in vectors])
        scores[layer] = factor_probe(x, values, pieces, folds, factor in CATEGORICAL)
        null[layer] = float(
            np.percentile([factor_probe(x, s, pieces, folds, factor in CATEGORICAL) for s in shuffles], 95)
        )
    return scores, null


def _render_note(factor: str, values: np.ndarray, pieces: np.ndarray) -> str:
    """Flag velocity renders whose level does not change (normalised audio): dynamics then rests on side effects."""
    level_sd = float(within_sd(values[:, [TARGET_NAMES.index("loudness")]], pieces)[0])
    if factor == "velocity" and level_sd < LEVEL_SD_DB:
        return (
            f"the renders' level barely changes with velocity ({level_sd:.2f} dB within-piece SD): they are "
            "normalised, so dynamics can only move through attack shape and noise floor"
        )
    return ""


def study(
    factor_sets: Mapping[str, Sequence[RenderedVariant]],
    model: EmbeddingModel,
    policy: WindowPolicy,
    cache_root: Path,
    *,
    workers: int = 2,
    seed: int = 0,
    on_step: Callable[[str], None] | None = None,
) -> list[FactorResult]:
    """Effect of each factor on the targets, and each layer's recovery of each factor."""
    pieces = {f: np.array([v.piece.corpus_path for v in vs]) for f, vs in factor_sets.items()}
    values = {}
    for factor, variants in factor_sets.items():
        values[factor] = _targets(variants, policy, cache_root, workers)
        if on_step:
            on_step(f"targets {factor}")
    effects = effect_sizes({f: (values[f], pieces[f]) for f in factor_sets})
    results = []
    for factor, variants in factor_sets.items():
        scores, null = _layer_scores(variants, model, policy, seed)
        effect = effects[factor]
        aspect_effect = {
            a: float(np.nanmean([effect[i] for i, t in enumerate(TARGETS) if t.aspect == a])) for a in ASPECTS
        }
        levels = len({v.value for v in variants})
        categorical = factor in CATEGORICAL
        results.append(
            FactorResult(
                factor,
                EXPECTED_ASPECTS[factor],
                len(variants),
                len(set(pieces[factor].tolist())),
                {t: float(e) for t, e in zip(TARGET_NAMES, effect, strict=False)},
                aspect_effect,
                scores,
                null,
                "accuracy" if categorical else "spearman",
                1.0 / levels if categorical else 0.0,
                _render_note(factor, values[factor], pieces[factor]),
            )
        )
        if on_step:
            on_step(f"layers {factor}")
    return results


def validate(
    out_dir: Path,
    model: EmbeddingModel,
    *,
    factors: Sequence[str] = FACTORS,
    n_pieces: int = 4,
    levels: dict[str, Sequence[float]] | None = None,
    policy: WindowPolicy = WindowPolicy(),
    workers: int = 2,
    seed: int = 0,
    on_step: Callable[[str], None] | None = None,
) -> list[FactorResult]:
    """Render each factor set under ``out_dir`` (reusing earlier renders) and study them together (``seed``: the
    within-piece permutations of the null scores)."""
    chosen = [f for f in factors if _is_factor(f)]
    if len(chosen) < len(factors):
        unknown = next(f for f in factors if not _is_factor(f))
        raise ProbeError(f"unknown factor {unknown!r}; use {', '.join(FACTORS)}")
    if len(set(chosen)) < 2:
        raise ProbeError("give at least two factors: each factor's effect is measured against the others")
    sets: dict[str, list[RenderedVariant]] = {}
    for factor in chosen:
        sets[factor] = render_factor_set(out_dir, factor, n_pieces, (levels or {}).get(factor), RENDER_SETTINGS)
        if on_step:
            on_step(f"render {factor}")
    return study(sets, model, policy, out_dir, workers=workers, seed=seed, on_step=on_step)


def write_validation(folder: Path, model: EmbeddingModel, pieces: int, results: Sequence[FactorResult],
                     seed: int = 0) -> dict:
    """Write the results (of :func:`validate` with ``seed``) as ``folder/probe-validate-<model>.json``, replaced whole
    (an interrupted write leaves the one before); returns what was written plus its ``file``."""
    payload = {"model": model.info.name, "revision": model.info.revision, "pieces": pieces, "seed": seed,
               "factors": [r.to_dict() for r in results]}
    path = folder / f"probe-validate-{slug(model.info.name)}.json"
    replace_file(path, json.dumps(payload, indent=2).encode())
    return {**payload, "file": str(path)}


def _is_factor(name: str) -> TypeGuard[Factor]:
    """Whether ``name`` is one of :data:`FACTORS`."""
    return name in FACTORS
