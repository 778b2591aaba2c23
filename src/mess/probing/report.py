"""Probe results: aspect -> layer choice, and the JSON / CSV / PNG report files."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from mess.probing.probes import FOLD_STD, ProbeScores
from mess.probing.targets import ASPECTS, TARGETS, aspect_targets
from mess.store.paths import replace_file
from mess.store.reports import report_paths

TRAINED = "trained"
RUN_COLUMNS = ("model", "run_id", "revision", "probe", "seed")  # the last columns of a probe's CSV: what was probed
SHUFFLED = "shuffled"
_ASPECT_OF = {t.name: t.aspect for t in TARGETS}


@dataclass(frozen=True)
class AspectChoice:
    """The layer that best predicts an aspect's targets, and by how much it beats the next."""

    aspect: str
    layer: str
    score: float  # mean over the aspect's targets of max(out-of-fold R^2, 0)
    runner_up: str | None
    margin: float  # score minus the runner-up layer's score (0 with a single layer)


def aspect_matrix(scores: ProbeScores) -> np.ndarray:
    """Aspect score per layer: mean over the aspect's targets of max(R^2, 0): [n_layers, len(ASPECTS)].

    A target the layer cannot predict counts as 0, however badly it extrapolates, so
    one wild target cannot sink a layer that predicts the rest of the aspect well.
    Constant (NaN) targets are ignored.
    """
    out = np.full((len(scores.layers), len(ASPECTS)), np.nan)
    for a, aspect in enumerate(ASPECTS):
        names = [TARGETS[i].name for i in aspect_targets(aspect)]
        cols = [scores.targets.index(n) for n in names if n in scores.targets]
        block = scores.r2[:, cols]
        valid = ~np.isnan(block).all(axis=0)
        if valid.any():
            out[:, a] = np.clip(block[:, valid], 0.0, None).mean(axis=1)
    return out


def choose_layers(scores: ProbeScores) -> list[AspectChoice]:
    """Best layer per aspect = highest aspect score (see :func:`aspect_matrix`); margin over the runner-up."""
    matrix = aspect_matrix(scores)
    choices = []
    for a, aspect in enumerate(ASPECTS):
        col = matrix[:, a]
        if np.isnan(col).all():
            continue
        order = np.argsort(-np.nan_to_num(col, nan=-np.inf), kind="stable")
        best = int(order[0])
        second = int(order[1]) if len(order) > 1 and not np.isnan(col[order[1]]) else None
        margin = float(col[best] - col[second]) if second is not None else 0.0
        choices.append(
            AspectChoice(
                aspect,
                scores.layers[best],
                float(col[best]),
                scores.layers[second] if second is not None else None,
                margin,
            )
        )
    return choices


@dataclass
class ProbeReport:
    """Everything one `mess probe` found, for one run and its controls."""

    model: str
    revision: str
    run_id: int
    policy: dict
    n_tracks: int
    folds: str
    probe: str
    seconds: float
    conditions: dict[str, ProbeScores]  # "trained", "shuffled", "random-init"
    notes: dict[str, str] = field(default_factory=dict)  # condition -> why it is missing or what it means
    missing: list[tuple[str, str]] = field(default_factory=list)  # tracks without targets
    probed_at: float = field(default_factory=time.time)  # its identity: the aspect map built from it records it
    tracks_digest: str | None = None  # FeatureStore.tracks_digest of the run probed: which tracks, not only how many
    seed: int = 0  # `--seed`: the shuffled control's permutation, shuffled folds, the MLP and the random-init weights

    @property
    def aspects(self) -> list[AspectChoice]:
        """The aspect -> layer choice of the trained model."""
        return choose_layers(self.conditions[TRAINED])

    def map_scores(self) -> dict[str, float]:
        """aspect -> the score the aspect map stores: the trained best less the shuffled control's best for that
        aspect (floored at 0) when that control ran, else the trained best. On few tracks shuffled targets alone
        reach R^2 near :data:`~mess.constants.ENCODED_R2` (0.27 on 5 tracks): the raw score would pass a layer
        fitting noise off as encoding the aspect."""
        control = {c.aspect: c.score for c in choose_layers(self.conditions[SHUFFLED])} \
            if SHUFFLED in self.conditions else {}
        return {c.aspect: max(0.0, c.score - max(0.0, control.get(c.aspect, 0.0))) for c in self.aspects}

    def to_dict(self) -> dict:
        """JSON-ready report."""

        def table(scores: ProbeScores, values: np.ndarray) -> dict[str, dict[str, float | None]]:
            return {
                layer: {t: score_number(values[i, j]) for j, t in enumerate(scores.targets)}
                for i, layer in enumerate(scores.layers)
            }

        conditions = {}
        for name, scores in self.conditions.items():
            agg = aspect_matrix(scores)
            conditions[name] = {
                "r2": table(scores, scores.r2),
                "r2_std": table(scores, scores.r2_std),
                "aspect_score": {
                    layer: {a: score_number(agg[i, k]) for k, a in enumerate(ASPECTS)}
                    for i, layer in enumerate(scores.layers)
                },
                "best": [vars(c) for c in choose_layers(scores)],
            }
            if scores.r2_folds is not None:  # each fold's R^2, for confidence intervals and layers compared by fold
                folds = scores.r2_folds
                conditions[name]["r2_folds"] = {
                    layer: {t: [score_number(v) for v in folds[i, :, j]] for j, t in enumerate(scores.targets)}
                    for i, layer in enumerate(scores.layers)
                }
        return {
            "model": self.model,
            "revision": self.revision,
            "run_id": self.run_id,
            "window_policy": self.policy,
            "n_tracks": self.n_tracks,
            "folds": self.folds,
            "probe": self.probe,
            "seed": self.seed,
            "seconds": round(self.seconds, 2),
            "probed_at": self.probed_at,
            "tracks_digest": self.tracks_digest,
            "metric": "out-of-fold R^2 = 1 - MSE(test fold) / Var(target over all tracks); mean and std over folds "
            f"({FOLD_STD}); "
            "aspect score = mean over the aspect's targets of max(R^2, 0)",
            "targets": [{"name": t.name, "aspect": t.aspect, "meaning": t.meaning} for t in TARGETS],
            "aspects": [vars(c) for c in self.aspects],
            "aspect_map_scores": {a: round(v, 4) for a, v in self.map_scores().items()},
            "conditions": conditions,
            "notes": self.notes,
            "missing_tracks": [{"path": p, "reason": r} for p, r in self.missing],
        }


def score_number(value: float) -> float | None:
    """A score as a report writes it: rounded to 4 decimals, None for NaN (JSON has no NaN)."""
    return None if np.isnan(value) else round(float(value), 4)


class Probed(Protocol):
    """What a probe's CSV reads of its report (:class:`ProbeReport`, or your own targets' report)."""

    model: str
    run_id: int
    revision: str
    probe: str
    seed: int
    conditions: dict[str, ProbeScores]


def scores_csv(report: Probed, column: str, of: Mapping[str, str], score: str) -> bytes:
    """A probe's long-format CSV: condition, layer, target, ``column`` (each target's entry in ``of``),
    ``<score>_mean``, ``<score>_std``, then :data:`RUN_COLUMNS` on every row, so the rows of several probes
    concatenated stay apart."""
    rows = io.StringIO(newline="")
    writer = csv.writer(rows)
    writer.writerow(["condition", "layer", "target", column, f"{score}_mean", f"{score}_std", *RUN_COLUMNS])
    run = [getattr(report, name) for name in RUN_COLUMNS]
    for name, scores in report.conditions.items():
        for i, layer in enumerate(scores.layers):
            for j, target in enumerate(scores.targets):
                writer.writerow([name, layer, target, of[target], score_number(scores.r2[i, j]),
                                 score_number(scores.r2_std[i, j]), *run])
    return rows.getvalue().encode()


def write_report(report: ProbeReport, folder: str | Path, *, partial: bool = False) -> dict[str, Path]:
    """Write the JSON report, a long-format CSV and a heatmap PNG, each atomically; returns their paths.

    ``partial``: the probe covered only some layers; its files get names of their own, so the report of every
    layer (which the server and fusion read) is kept.
    """
    folder = Path(folder)
    paths = report_paths(folder, report.model, report.run_id, report.probe, partial=partial)
    folder.mkdir(parents=True, exist_ok=True)
    replace_file(paths["csv"], scores_csv(report, "aspect", _ASPECT_OF, "r2"))
    heatmap(report, paths["png"])
    replace_file(paths["json"], json.dumps(report.to_dict(), indent=2).encode())  # last: what the server reads
    return paths


def heatmap(report: ProbeReport, path: Path) -> None:
    """Layers x targets R^2, one panel per condition, targets grouped by aspect."""
    draw_heatmap(report.model, report.conditions, _ASPECT_OF, f"{report.n_tracks} tracks, {report.folds}", path,
                 label="R^2 (clipped to [-1, 1])", score="out-of-fold R^2")


def draw_heatmap(model: str, conditions: dict[str, ProbeScores], group_of: dict[str, str], subtitle: str,
                 path: Path, *, label: str = "score (R^2 or accuracy; clipped to [-1, 1])",
                 score: str = "out-of-fold score") -> None:
    """Layers x targets scores, one panel per condition, targets grouped under ``group_of[target]``."""
    from matplotlib.figure import Figure  # no pyplot: the process's backend stays the caller's

    names = list(conditions)
    first = conditions[TRAINED]
    width = max(8.0, 0.42 * len(first.targets) + 2.5)
    heights = [0.3 * len(conditions[n].layers) + 0.9 for n in names]
    fig = Figure(figsize=(width, sum(heights) + 1.6), layout="constrained")
    axes = fig.subplots(len(names), 1, squeeze=False, gridspec_kw={"height_ratios": heights})
    image = None
    for row, (ax, name) in enumerate(zip(axes[:, 0], names, strict=False)):
        scores = conditions[name]
        image = ax.imshow(scores.r2, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_yticks(range(len(scores.layers)), scores.layers, fontsize=8)
        ax.set_xticks(
            range(len(scores.targets)),
            scores.targets if row == len(names) - 1 else [],
            rotation=60,
            ha="right",
            fontsize=8,
        )
        for i in range(len(scores.layers)):
            for j in range(len(scores.targets)):
                if not np.isnan(scores.r2[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{scores.r2[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=5.5,
                        color="white" if abs(scores.r2[i, j]) > 0.6 else "black",
                    )
        groups = [group_of[t] for t in scores.targets]
        starts = [k for k in range(len(groups)) if k == 0 or groups[k] != groups[k - 1]]
        for k in starts[1:]:
            ax.axvline(k - 0.5, color="black", linewidth=1.2)
        top = ax.secondary_xaxis("top")
        ends = starts[1:] + [len(groups)]
        top.set_xticks(
            [(a + b - 1) / 2 for a, b in zip(starts, ends, strict=False)], [groups[k] for k in starts], fontsize=8
        )
        top.tick_params(length=0)
        ax.set_title(f"{model} - {name}: {score} ({subtitle})", fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes[:, 0].tolist(), shrink=0.8, label=label)
    png = io.BytesIO()
    fig.savefig(png, dpi=120, format="png")
    replace_file(path, png.getvalue())
