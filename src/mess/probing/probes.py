"""Cross-validated linear (and optional MLP) probes: how well does each layer predict each target?

Every layer is probed for all targets at once: inside each fold the training rows are
standardised, then a multi-target ridge picks a penalty per target by exact
leave-one-group-out (leave-one-out without groups) on the training rows only (:mod:`mess.probing.ridge`: one
eigendecomposition serves every target and every penalty), so no test row ever
influences preprocessing or model selection.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GroupKFold, KFold
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from mess.constants import PROBE_KINDS
from mess.probing.ridge import fit_ridge_loo

ALPHAS = np.logspace(-2, 6, 17)
# the spread of fold scores the reports give: as scikit-learn gives it (GridSearchCV's std_test_score, its guide's
# scores.std()), so the figures compare; an interval takes the per-fold scores with ddof 1 (docs/probing.md)
FOLD_STD = "population std, ddof 0, as scikit-learn's std_test_score; per-fold scores for intervals"
MLP_HIDDEN = 256


class ProbeError(ValueError):
    """Probing inputs that cannot give a meaningful answer (too few tracks, no targets)."""


@dataclass(frozen=True)
class Folds:
    """Train/test index pairs and a sentence saying how they were formed."""

    splits: list[tuple[np.ndarray, np.ndarray]]
    scheme: str
    group_field: str | None
    groups: np.ndarray | None = None  # [n] group of each row; penalties are chosen leaving whole groups out

    @property
    def n(self) -> int:
        """Number of rows the folds cover."""
        return sum(len(test) for _, test in self.splits)


def make_folds(n: int, candidates: Sequence[tuple[str, Sequence[str | None]]], n_folds: int = 5,
               seed: int = 0, same: Sequence[str] | None = None, ungrouped: str | None = None,
               asked: bool = False) -> Folds:
    """K folds grouped by the first metadata field with at least ``n_folds`` distinct values.

    Tracks missing that field form groups of their own, so they can never pair with a
    tagged track across the split. A field whose largest group would fill more than a
    fold (a 40-track soundtrack "album" in a 70-track collection) is passed over: that
    fold would test one album against a model that never saw its kind of audio.
    Without a usable field the folds are plain shuffled K-fold. Rows with one ``same`` key (the content hash:
    copies of one file, whose vectors and targets are equal) always share a fold: a copy on the other side
    would predict its twin exactly. ``ungrouped``: why the folds are shuffled, said in the scheme, where the caller
    gave no candidates on purpose. ``asked``: the candidates were asked for (`--group-by album` or `artist`), so a
    field of 2 or more distinct values, fewer than ``n_folds``, makes one fold of each (leave one group out) rather
    than shuffled folds that put a group on both sides.
    """
    keys: list[object] = list(range(n)) if same is None else list(same)
    distinct = len(set(keys))
    copies = distinct < n
    if distinct < 4:
        raise ProbeError(f"probing needs at least 4 tracks, got {n}" if not copies else f"probing needs at least 4 "
                         f"different files, got {distinct} (the {n} tracks are copies of them)")
    n_folds = max(2, min(n_folds, distinct))
    usable = []
    for field, values in candidates:
        if sum(v is not None for v in values) == 0:
            continue
        groups = np.array([v if v is not None else f"\0track{i}" for i, v in enumerate(values)], dtype=object)
        groups = _joined(groups, keys) if copies else groups
        sizes = Counter(groups.tolist())
        if len(sizes) >= n_folds or (asked and len(sizes) >= 2):
            usable.append((max(sizes.values()) > n / min(n_folds, len(sizes)), field, groups, len(sizes)))
    kept = "; copies of one file kept in one fold" if copies else ""
    if usable:  # the first field without an oversized group, else the first field (grouped beats leaky)
        _, field, groups, n_groups = min(usable, key=lambda u: u[0])
        k = min(n_folds, n_groups)
        fewer = f", fewer than {n_folds} folds: one each" if k < n_folds else ""
        splits = list(GroupKFold(n_splits=k).split(np.zeros(n), groups=groups))
        return Folds(splits, f"GroupKFold({k}) by {field} ({n_groups} groups{fewer}){kept}", field, groups)
    untagged = all(v is None for _, values in candidates for v in values)
    reason = ungrouped or ("no artist/album tags" if untagged else "too few distinct artists/albums") + " to group by"
    unique = list(dict.fromkeys(keys))  # without copies: the rows themselves, in order
    where = {k: i for i, k in enumerate(unique)}
    row_unit = np.array([where[k] for k in keys])
    splits = [(np.flatnonzero(np.isin(row_unit, train)), np.flatnonzero(np.isin(row_unit, test)))
              for train, test in KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(np.zeros(len(unique)))]
    return Folds(splits, f"KFold({n_folds}), shuffled (seed {seed}); {reason}{kept}", None,
                 row_unit if copies else None)


def _joined(groups: np.ndarray, keys: Sequence[object]) -> np.ndarray:
    """``groups`` with every two groups that hold rows of one key merged into one (union-find over labels)."""
    parent: dict[object, object] = {}

    def root(label: object) -> object:
        while parent.get(label, label) != label:
            label = parent[label]
        return label

    first: dict[object, object] = {}
    for label, key in zip(groups.tolist(), keys, strict=True):
        a, b = root(label), root(first.setdefault(key, label))
        if a != b:
            parent[a] = b
    return np.array([root(g) for g in groups.tolist()], dtype=object)


def _fit_predict(kind: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int,
                 groups: np.ndarray | None = None) -> np.ndarray:
    """Standardise on the training rows, fit the probe, predict the test rows."""
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    if kind == "ridge":
        return fit_ridge_loo(x_train, y_train, ALPHAS, groups).predict(x_test)
    # early stopping holds out 10% of the training rows, and needs 2 of them: more share of a small fold
    mlp = MLPRegressor(hidden_layer_sizes=(MLP_HIDDEN,), alpha=1e-2, max_iter=300, early_stopping=True,
                       validation_fraction=min(0.5, max(0.1, 2.0 / len(x_train))), random_state=seed)
    y_fit = y_train[:, 0] if y_train.shape[1] == 1 else y_train
    return np.asarray(mlp.fit(x_train, y_fit).predict(x_test)).reshape(len(x_test), -1)


def fold_scores(x: np.ndarray, y: np.ndarray, folds: Folds, kind: str = "ridge", seed: int = 0) -> np.ndarray:
    """Out-of-fold R^2 of one layer for every target: float64 [n_folds, n_targets].

    R^2 of a fold is ``1 - MSE(test) / Var(target over all tracks)``: with grouped folds
    a test fold can hold a few similar tracks, and normalising by its own tiny variance
    would turn small errors into huge negative scores. The mean over folds equals the
    pooled out-of-fold R^2 when folds are of equal size. Targets constant over all
    tracks score NaN.
    """
    if kind not in PROBE_KINDS:
        raise ProbeError(f"unknown probe {kind!r}; use one of {', '.join(PROBE_KINDS)}")
    y = np.asarray(y, dtype=np.float64)
    var = y.var(axis=0)
    keep = var > 1e-12 * np.maximum(1.0, np.abs(y).max(axis=0) ** 2)
    out = np.full((len(folds.splits), y.shape[1]), np.nan)
    if not keep.any():
        return out
    yk = y[:, keep]
    for f, (train, test) in enumerate(folds.splits):
        mean, std = yk[train].mean(axis=0), yk[train].std(axis=0) + 1e-12
        scaled = (yk[train] - mean) / std  # scale-free: an MLP's loss weighs every target equally
        groups = folds.groups[train] if folds.groups is not None else None
        pred = _fit_predict(kind, x[train], scaled, x[test], seed, groups) * std + mean
        out[f, keep] = 1.0 - ((pred - yk[test]) ** 2).mean(axis=0) / var[keep]
    return out


def fold_accuracy(x: np.ndarray, classes: np.ndarray, folds: Folds, kind: str = "ridge", seed: int = 0) -> np.ndarray:
    """Out-of-fold accuracy of one layer for a label (``classes``: [n] ints): float64 [n_folds].

    The probe regresses the one-hot code of the classes of the training rows (standardised, as :func:`fold_scores`
    does) and predicts the class whose column scores highest: a ridge (or MLP) classifier. A class no training row
    has can never be predicted (see :func:`fold_ceiling`).
    """
    if kind not in PROBE_KINDS:
        raise ProbeError(f"unknown probe {kind!r}; use one of {', '.join(PROBE_KINDS)}")
    out = np.full(len(folds.splits), np.nan)
    for f, (train, test) in enumerate(folds.splits):
        seen = np.unique(classes[train])
        if len(seen) == 1:  # one class to learn: it is the prediction
            out[f] = float((classes[test] == seen[0]).mean())
            continue
        onehot = (classes[train][:, None] == seen[None, :]).astype(np.float64)
        mean, std = onehot.mean(axis=0), onehot.std(axis=0) + 1e-12
        groups = folds.groups[train] if folds.groups is not None else None
        pred = _fit_predict(kind, x[train], (onehot - mean) / std, x[test], seed, groups) * std + mean
        out[f] = float((seen[pred.argmax(axis=1)] == classes[test]).mean())
    return out


def fold_ceiling(classes: np.ndarray, folds: Folds) -> float:
    """The best out-of-fold accuracy any probe can reach: the share of rows whose class some training row of their
    fold has (folds grouped by album cannot teach a label that follows the album), mean over folds."""
    return float(np.mean([np.isin(classes[test], classes[train]).mean() for train, test in folds.splits]))


def fold_chance(classes: np.ndarray, folds: Folds) -> float:
    """The chance level, mean over folds: in each, the better of two accuracies a probe needs no vectors for, always
    answering the training rows' most frequent class (the first in sorted order of those as frequent) and guessing
    at the training rows' class frequencies (expected accuracy; on balanced classes the first can be 0)."""
    shares = []
    for train, test in folds.splits:
        values, counts = np.unique(classes[train], return_counts=True)
        guess = float(sum(c / len(train) * np.mean(classes[test] == v) for v, c in zip(values, counts, strict=True)))
        shares.append(max(float(np.mean(classes[test] == values[counts.argmax()])), guess))
    return float(np.mean(shares))


@dataclass(frozen=True)
class ProbeScores:
    """Per layer x target out-of-fold R^2: mean and standard deviation over folds, and where known each fold's."""

    layers: tuple[str, ...]
    targets: tuple[str, ...]
    r2: np.ndarray  # [n_layers, n_targets]
    r2_std: np.ndarray  # [n_layers, n_targets]: FOLD_STD
    r2_folds: np.ndarray | None = None  # [n_layers, n_folds, n_targets]: the folds are the same for every layer


def probe_layers(layers: Sequence[tuple[str, Callable[[], np.ndarray]]], y: np.ndarray, target_names: Sequence[str],
                 folds: Folds, kind: str = "ridge", seed: int = 0, jobs: int = 2,
                 on_layer: Callable[[str], None] | None = None) -> ProbeScores:
    """Probe every layer for all targets, ``jobs`` layers at a time.

    Layers are loaded lazily in the calling thread (at most ``jobs`` + 1 in memory) and
    probed in worker threads, each with single-threaded BLAS: dense eigensolvers scale
    poorly across threads, and running independent layers side by side keeps every
    core busy even on a loaded machine.
    """
    results: dict[str, np.ndarray] = {}
    with threadpool_limits(limits=1), ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        pending: deque[tuple[str, Future[np.ndarray]]] = deque()
        for name, load in layers:
            pending.append((name, pool.submit(fold_scores, load(), y, folds, kind, seed)))
            while len(pending) >= max(1, jobs) or (pending and pending[0][1].done()):
                done, future = pending.popleft()
                results[done] = future.result()
                if on_layer:
                    on_layer(done)
        for done, future in pending:
            results[done] = future.result()
            if on_layer:
                on_layer(done)
    names = tuple(n for n, _ in layers)
    per_fold = np.array([results[n] for n in names])
    return ProbeScores(names, tuple(target_names), per_fold.mean(axis=1), per_fold.std(axis=1, ddof=0), per_fold)
