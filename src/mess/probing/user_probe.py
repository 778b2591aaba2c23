"""Probe every layer of a run for your own targets (:mod:`mess.probing.user_targets`), with the shuffled control.

Each target is probed on the tracks that have a value for it and vectors in the run, with folds made as for the
proxy targets (:func:`mess.probing.probes.make_folds`: grouped by album, else artist, or as ``group_by`` says; copies
of a file in one fold). Numbers score out-of-fold R^2, labels out-of-fold accuracy beside two references on the same
folds: ``chance`` (:func:`~mess.probing.probes.fold_chance`) and ``ceiling`` (the share of rows whose label a training
row of their fold has: folds grouped by album cannot teach a label that follows the album).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from mess.constants import counted
from mess.extract.runs import run_policy
from mess.probing.controls import shuffled_rows
from mess.probing.probes import (
    FOLD_STD,
    Folds,
    ProbeError,
    ProbeScores,
    fold_accuracy,
    fold_ceiling,
    fold_chance,
    fold_scores,
    make_folds,
)
from mess.probing.report import SHUFFLED, TRAINED, draw_heatmap, score_number, scores_csv
from mess.probing.study import ProbeOptions, check_group_by, fold_meta, ungrouped
from mess.probing.user_targets import LABEL, NUMBER, TargetFile, UserTarget
from mess.store import FeatureStore, Run, Track
from mess.store.paths import replace_file
from mess.store.reports import located_stem, slug

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TargetInfo:
    """How one target was probed: its rows and folds, and for labels the references on those folds."""

    name: str
    kind: str  # number (score: R^2) or label (score: accuracy)
    n_tracks: int  # tracks with a value and vectors
    folds: str  # the fold scheme, or why the target was not probed
    n_classes: int | None = None
    chance: float | None = None
    ceiling: float | None = None


@dataclass
class TargetReport:
    """Every layer x target score of one run, trained and shuffled."""

    model: str
    revision: str
    run_id: int
    policy: dict
    source: str  # the CSV
    probe: str
    seed: int
    targets: list[TargetInfo]
    conditions: dict[str, ProbeScores]  # r2 holds R^2 for numbers, accuracy for labels
    seconds: float
    unknown_rows: int = 0
    probed_at: float = field(default_factory=time.time)
    # condition -> layer -> target -> its score in each fold (the folds of a target are the same for every layer, so
    # layers compare fold by fold); probed targets only
    fold_scores: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready report."""
        def table(scores: ProbeScores, values: np.ndarray) -> dict[str, dict[str, float | None]]:
            return {layer: {t: score_number(values[i, j]) for j, t in enumerate(scores.targets)}
                    for i, layer in enumerate(scores.layers)}

        return {
            "model": self.model, "revision": self.revision, "run_id": self.run_id, "window_policy": self.policy,
            "targets_file": self.source, "probe": self.probe, "seed": self.seed, "probed_at": self.probed_at,
            "seconds": round(self.seconds, 2), "unknown_rows": self.unknown_rows,
            "metric": "numbers: out-of-fold R^2 = 1 - MSE(test fold) / Var(target over its tracks); labels: "
                      f"out-of-fold accuracy; mean and std over folds ({FOLD_STD})",
            "targets": [asdict(t) for t in self.targets],
            "best": {t: {"layer": layer, "score": score_number(score)} for t, (layer, score) in self.best().items()},
            "conditions": {name: {"score": table(s, s.r2), "score_std": table(s, s.r2_std),
                                  "score_folds": {layer: {t: [score_number(v) for v in f] for t, f in row.items()}
                                                  for layer, row in self.fold_scores.get(name, {}).items()}}
                           for name, s in self.conditions.items()},
        }

    def best(self, condition: str = TRAINED) -> dict[str, tuple[str, float]]:
        """target -> (best layer, its score) under ``condition``, for the targets that were probed."""
        scores = self.conditions[condition]
        out = {}
        for j, name in enumerate(scores.targets):
            col = scores.r2[:, j]
            if not np.isnan(col).all():
                i = int(np.nanargmax(col))
                out[name] = (scores.layers[i], float(col[i]))
        return out


def probe_targets(store: FeatureStore, run: Run, targets: TargetFile, options: ProbeOptions = ProbeOptions(),
                  on_progress: Progress | None = None) -> TargetReport:
    """Probe ``options.layers`` (default all) of ``run`` for every target of ``targets``; the shuffled control when
    ``options.controls`` has it (random-init is refused: ProbeError)."""
    started = time.perf_counter()
    check_group_by(options.group_by)
    if set(options.controls) - {SHUFFLED}:
        raise ProbeError("your own targets are probed with the shuffled control or none: random-init is for the "
                         "proxy targets (leave out --targets)")
    layers = list(dict.fromkeys(run.layer_names[run.layer_index(x)] for x in options.layers or run.layer_names))
    tracks = sorted(store.tracks(run), key=lambda t: t.content_key)  # rows in content order, as the proxy probe's
    plans = [_plan(t, tracks, options) for t in targets.targets]
    conditions = [TRAINED] + ([SHUFFLED] if SHUFFLED in options.controls else [])
    ids_all = np.array([t.id for t in tracks], dtype=np.int64)

    def score_layer(name: str) -> dict[str, list[np.ndarray | None]]:
        row_ids, matrix = store.layer_matrix(run, name)
        x_all = matrix[np.searchsorted(row_ids, ids_all)]
        if not np.array_equal(row_ids[np.minimum(np.searchsorted(row_ids, ids_all), len(row_ids) - 1)], ids_all):
            raise ProbeError(f"tracks of {run.model} were removed or extracted again while it was probed: run "
                             "`mess probe` again")
        out: dict[str, list[np.ndarray | None]] = {c: [None] * len(plans) for c in conditions}  # per target
        for j, plan in enumerate(plans):
            if isinstance(plan, str):
                continue
            rows, y, folds = plan
            for c in conditions:
                values = shuffled_rows(y, options.seed) if c == SHUFFLED else y
                if targets.targets[j].kind == NUMBER:
                    per_fold = fold_scores(x_all[rows], values[:, None], folds, options.probe, options.seed)[:, 0]
                else:
                    per_fold = fold_accuracy(x_all[rows], values, folds, options.probe, options.seed)
                out[c][j] = per_fold
        return out

    results: dict[str, dict[str, list[np.ndarray | None]]] = {}
    # single-threaded BLAS around the pool (the limit is the process's): layers side by side, as probe_layers runs them
    with threadpool_limits(limits=1), ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
        for name, result in zip(layers, pool.map(score_layer, layers), strict=True):
            results[name] = result
            if on_progress:
                on_progress(run.model, len(results), len(layers))
    names = tuple(t.name for t in targets.targets)
    scores = {c: ProbeScores(tuple(layers), names, *_summary([results[n][c] for n in layers])) for c in conditions}
    per_fold = {c: {n: {t: [float(v) for v in f] for t, f in zip(names, results[n][c], strict=True) if f is not None}
                    for n in layers} for c in conditions}
    infos = [TargetInfo(t.name, t.kind, _valued(t, tracks), f"not probed: {p}") if isinstance(p, str) else _info(t, p)
             for t, p in zip(targets.targets, plans, strict=True)]
    return TargetReport(run.model, run.revision, run.id, asdict(run_policy(run)), str(targets.path), options.probe,
                        options.seed, infos, scores, time.perf_counter() - started, len(targets.unknown),
                        fold_scores=per_fold)


def _summary(per_layer: list[list[np.ndarray | None]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over folds [layers, targets] of per-fold scores (NaN for a target not probed; the std as
    :data:`~mess.probing.probes.FOLD_STD` says)."""
    def stat(f: np.ndarray | None, how: Callable[[np.ndarray], float]) -> float:
        return np.nan if f is None else how(f)

    return (np.array([[stat(f, np.mean) for f in row] for row in per_layer], dtype=np.float64),
            np.array([[stat(f, lambda v: float(np.std(v, ddof=0))) for f in row] for row in per_layer],
                     dtype=np.float64))


Plan = tuple[np.ndarray, np.ndarray, Folds]  # rows (into the run's tracks in content order), values, folds


def _plan(target: UserTarget, tracks: list[Track], options: ProbeOptions) -> Plan | str:
    """The rows of ``target`` (those of ``tracks``, the run's, with a value), its values (labels as class numbers in
    sorted order) and folds; else why it is not probed: no track of the run has a value, too few do (the folds'
    ProbeError), or every one has the same label (a constant number scores NaN in :func:`fold_scores`)."""
    rows = np.array([i for i, t in enumerate(tracks) if t.id in target.values], dtype=np.intp)
    if not target.values:
        return "no value (every cell of the column is empty or nan)"
    if not len(rows):
        return f"none of the {counted(len(target.values), 'track')} with a value has vectors in this run"
    if target.kind == LABEL and len({target.values[tracks[i].id] for i in rows}) < 2:
        return "every track has one label"
    chosen = [tracks[i] for i in rows]
    raw = [target.values[t.id] for t in chosen]
    if target.kind == LABEL:
        classes = sorted(set(map(str, raw)))
        y = np.array([classes.index(str(v)) for v in raw], dtype=np.int64)
    else:
        y = np.array(raw, dtype=np.float64)
    try:
        folds = make_folds(len(rows), fold_meta(chosen, options.group_by), options.folds, options.seed,
                           same=[t.content_hash for t in chosen], ungrouped=ungrouped(options.group_by),
                           asked=options.group_by not in ("auto", "none"))
    except ProbeError as exc:  # too few tracks for this target: the others are still probed
        return str(exc)
    return rows, y, folds


def _valued(target: UserTarget, tracks: list[Track]) -> int:
    """How many of the run's ``tracks`` have a value of ``target`` (also when it is not probed)."""
    return sum(t.id in target.values for t in tracks)


def _info(target: UserTarget, plan: Plan) -> TargetInfo:
    rows, y, folds = plan
    if target.kind == NUMBER:
        return TargetInfo(target.name, NUMBER, len(rows), folds.scheme)
    return TargetInfo(target.name, LABEL, len(rows), folds.scheme, int(len(np.unique(y))),
                      round(fold_chance(y, folds), 4), round(fold_ceiling(y, folds), 4))


def target_report_paths(folder: Path, report: TargetReport) -> dict[str, Path]:
    """``probe-MODEL-runN[-mlp]-targets-STEM-HASH.{json,csv,png}`` beside the proxy probe's: named after the CSV, and
    after where it is (:func:`~mess.store.reports.located_stem`, relative to the store, ``folder``'s parent), so the
    reports of ``a/genre.csv`` and ``b/genre.csv`` do not replace each other, and one file's keep their name."""
    stem = f"probe-{slug(report.model)}-run{report.run_id}" + ("" if report.probe == "ridge" else f"-{report.probe}")
    named = located_stem(folder.parent, Path(report.source))
    return {ext: folder / f"{stem}-targets-{named}.{ext}" for ext in ("json", "csv", "png")}


def write_target_report(report: TargetReport, folder: Path) -> dict[str, Path]:
    """Write the JSON report, a long-format CSV (condition, layer, target, kind, score_mean, score_std, then
    :data:`~mess.probing.report.RUN_COLUMNS`) and a
    heatmap PNG beside the proxy probe's reports, each replaced whole; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = target_report_paths(folder, report)
    kinds = {t.name: t.kind for t in report.targets}
    replace_file(paths["csv"], scores_csv(report, "kind", kinds, "score"))
    draw_heatmap(report.model, report.conditions, {t: f"{k} ({'R^2' if k == NUMBER else 'accuracy'})"
                                                   for t, k in kinds.items()},
                 f"{Path(report.source).stem}, {report.probe} probe, seed {report.seed}", paths["png"])
    replace_file(paths["json"], json.dumps(report.to_dict(), indent=2).encode())
    return paths
