"""Fusion report: held-out retrieval of fused vs the best layer, all layers and the default search; layer weights."""

from __future__ import annotations

import io
import json
import textwrap
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wilcoxon

from mess.constants import DEFAULT_NORM, FUSED, counted
from mess.fusion import evaluate
from mess.fusion.data import FusionError, LayerData
from mess.fusion.train import FusionResult, embed, initial_network
from mess.search.expansion import EXPAND_K, expand_collection, expanded_scores
from mess.search.metrics import RetrievalScores, chance_scores, ndcg_at_k, retrieval_scores
from mess.search.query import collection_query, ranked_scores
from mess.search.rerank_store import ranking_choice
from mess.search.vectors import (
    BASE_NORMS,  # the fusion report's baselines predate power
    Norm,
    Preprocessor,
    VectorSpec,
    load_vectors,
    resolved_norm,
)
from mess.store import FeatureStore, Run
from mess.store.paths import printable, replace_file

MIN_TRACKS, MIN_LABELS = 50, 5  # below either, the held-out comparison is reported as inconclusive
ALPHA = 0.05  # the verdict names a winner only when the paired Wilcoxon test is below this


@dataclass(frozen=True)
class MethodScores:
    """Held-out retrieval of one way of turning layers into a vector."""

    method: str
    detail: str
    precision: float
    map: float
    ndcg: float


@dataclass
class FusionReport:
    """Everything `mess fuse report` shows and writes."""

    model: str
    label: str
    k: int
    n_test_tracks: int
    n_test_labels: int
    methods: list[MethodScores]
    per_layer: dict[str, float]  # held-out nDCG@k of each single layer (its best normalisation)
    layer_weights: dict[str, float]
    verdict: str
    caveat: str
    wilcoxon_p: float | None
    data_hash_matches: bool
    probe: dict[str, dict[str, float | None]] | None = None  # layer -> aspect -> R^2
    probe_note: str = ""
    probe_tracks_note: str | None = None  # the probe report covers fewer tracks than the run has (attach_probe)
    training_log_note: str | None = None  # the training log describes another checkpoint (tracking.log_mismatch)
    interrupted_note: str | None = None  # the checkpoint is from a training stopped with Ctrl-C (interrupted_note)
    files: dict[str, str] = field(default_factory=dict)
    trained_copies: int = 0  # held-out recordings left out: a copy of each is in a training or validation label
    compared_with: str = "all-layers"  # the row the verdict and wilcoxon_p set fused against: "default" when scored

    def score(self, method: str) -> MethodScores:
        """The row of one method (fused, untrained, best-layer, all-layers, default, mean-vector, chance)."""
        return next(m for m in self.methods if m.method == method)

    def to_dict(self) -> dict:
        """JSON-ready report."""
        return asdict(self)


Encoder = Callable[[np.ndarray], np.ndarray]  # row indices -> unit vectors of those tracks


@dataclass(frozen=True)
class DefaultSearch:
    """How `mess similar` ranks by default (:func:`default_search`): ``scores(queries, items)``, rows of the
    :class:`LayerData` -> the ranking scores [q, n] of the items for each query; ``detail`` says which."""

    scores: Callable[[np.ndarray, np.ndarray], np.ndarray]
    detail: str


def default_search(store: FeatureStore, run: Run, data: LayerData) -> DefaultSearch:
    """The ranking `mess similar` gives a collection track by default: the all-layer vectors under the default
    normalisation (power), ranked as :func:`mess.search.rerank_store.ranking_choice` picks (augmented; plain with
    query expansion for a large collection without saved data), through the search's own code
    (:func:`mess.search.query.ranked_scores`) over the whole collection."""
    vs = load_vectors(store, run, VectorSpec.from_options(), store.tracks(run))
    ranking = ranking_choice(store, vs)
    ids = data.track_ids
    unit = vs.unit()
    expanded = expand_collection(unit, EXPAND_K) if ranking == "plain" else None

    def scores(queries: np.ndarray, items: np.ndarray) -> np.ndarray:
        cols = vs.rows(ids[items])
        if expanded is not None:  # as the plain search ranks: the better of the cosines to the query and expanded
            rows = vs.rows(ids[queries])
            return expanded_scores(unit[rows] @ unit[cols].T, expanded[rows] @ unit[cols].T)
        return np.stack([ranked_scores(store, vs, collection_query(store, int(i)), ranking)[1][cols]
                         for i in ids[queries]])

    how = f"{ranking} ranking" if ranking != "plain" else f"plain ranking, expanded ({EXPAND_K})"
    return DefaultSearch(scores, f"`mess similar`'s default: all layers ({resolved_norm('all', DEFAULT_NORM)}), "
                                 f"{how}")


def _layers(data: LayerData, index: int | None, norm: Norm) -> Encoder:
    """One layer, or all layers (None: per-layer normalised, so cosine = mean of per-layer cosines).

    Normalisation statistics come from all tracks (no labels involved).
    """
    raw, blocks = data.x, data.run.layer_dims
    if index is not None:
        start = sum(blocks[:index])
        raw, blocks = data.x[:, start:start + blocks[index]], (blocks[index],)
    prep = Preprocessor.fit(raw, blocks, norm)
    return lambda rows: prep.apply(raw[rows])


def _mean_vector(data: LayerData, norm: Norm) -> Encoder:
    """Mean of the (centred or z-scored) layer vectors, L2-normalised; layers must share one size."""
    prep = Preprocessor.fit(data.x, (data.x.shape[1],), norm)
    n_layers, dim = len(data.run.layer_dims), data.run.layer_dims[0]

    def encode(rows: np.ndarray) -> np.ndarray:
        mean = prep.shift(data.x[rows]).reshape(len(rows), n_layers, dim).mean(axis=1)
        return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    return encode


def _pick(candidates: dict[str, Encoder], labels: np.ndarray, rows: np.ndarray, k: int) -> str:
    """The candidate with the best nDCG@k among ``rows`` (selection never sees test labels)."""
    return max(candidates, key=lambda name: evaluate.scores(candidates[name](rows), labels[rows], k).ndcg)


def compare(result: FusionResult, data: LayerData, k: int = 10, default: DefaultSearch | None = None) -> FusionReport:
    """Score fused vectors and the baselines on the held-out (test) labels of ``result``; the verdict and its paired
    Wilcoxon test set fused against ``default`` when given (what `mess similar` ranks by), else all-layers.

    Baselines: the untrained network (same seed), the best single layer and the
    equal-weight combination of all layers (mean of per-layer cosines, as
    `mess similar` searched by default before power normalisation), with ``default`` (:func:`default_search`) the
    ranking `mess similar` gives by default now (its ranking of the held-out tracks among themselves) and, when
    layers share a size, the mean layer vector. Layer and normalisation of a baseline are chosen on the
    training and validation labels, never on the test labels. Tracks of held-out
    labels query each other, each recording once (byte-identical copies left out), and none whose copy is tagged
    with a training or validation label (``trained_copies`` counts them; the caveat says so).
    """
    if tuple(data.run.layer_names) != result.layer_names:
        raise FusionError(f"checkpoint layers {list(result.layer_names)} are not {data.run.model}'s "
                          f"{list(data.run.layer_names)}")
    labels = result.labels(data)
    seen = data.recordings(np.concatenate([result.split.rows(labels, "train"), result.split.rows(labels, "val")]))
    known = {data.tracks[r].content_hash for r in seen}  # a copy tagged with a trained label: never held out
    held = data.recordings(result.split.rows(labels, "test"))  # each recording once, as `mess evaluate` counts it
    test = np.array([r for r in held if data.tracks[r].content_hash not in known], dtype=np.intp)
    if len(set(labels[test])) < 2:
        raise FusionError("fewer than 2 held-out labels are left in the store; retrain with `mess fuse train`")
    names, dims = data.run.layer_names, data.run.layer_dims
    untrained = initial_network(result.config, dims, torch.from_numpy(data.x))
    dim = result.network.project.out_features
    encoders: dict[str, tuple[Encoder, str]] = {
        FUSED: (lambda rows: embed(result.network, data.x[rows]), f"learned, {dim}-d"),
        "untrained": (lambda rows: embed(untrained, data.x[rows]), "same network before training (PCA projection)")}
    singles = {f"{name} ({norm})": _layers(data, i, norm) for i, name in enumerate(names) for norm in BASE_NORMS}
    best = _pick(singles, labels, seen, k)
    encoders["best-layer"] = (singles[best], f"{best}, chosen on training labels")
    alls: dict[str, Encoder] = {norm: _layers(data, None, norm) for norm in BASE_NORMS}
    norm = _pick(alls, labels, seen, k)
    encoders["all-layers"] = (alls[norm], f"mean of per-layer cosines ({norm})")
    if len(set(dims)) == 1:
        means: dict[str, Encoder] = {n: _mean_vector(data, n) for n in BASE_NORMS}
        norm = _pick(means, labels, seen, k)
        encoders["mean-vector"] = (means[norm], f"mean of layer vectors ({norm})")

    lab = labels[test].astype(str)
    units = {name: enc(test) for name, (enc, _) in encoders.items()}
    methods = [MethodScores(name, detail, *_rounded(evaluate.scores(units[name], lab, k)))
               for name, (_, detail) in encoders.items()]
    fused_q = evaluate.ndcg_per_query(units[FUSED], lab, k)
    base_q = evaluate.ndcg_per_query(units["all-layers"], lab, k)
    if default is not None:  # after all-layers: the search it became, and the one the verdict is about
        searched = evaluate.ranked(lambda queries: default.scores(test[queries], test), lab)
        methods.insert([m.method for m in methods].index("all-layers") + 1,
                       MethodScores("default", default.detail, *_rounded(retrieval_scores(searched, k))))
        base_q = ndcg_at_k(searched, k)  # the same queries, in the same order, as fused_q
    methods.append(MethodScores("chance", "random ranking",
                                *_rounded(chance_scores(lab, lab, np.arange(len(test)), k))))
    per_layer = {name: round(max(evaluate.scores(singles[f"{name} ({n})"](test), lab, k).ndcg for n in BASE_NORMS), 4)
                 for name in names}
    p = float(wilcoxon(fused_q, base_q).pvalue) if np.any(fused_q != base_q) and len(fused_q) > 1 else None
    same_data = data.data_hash(result.config.label, result.given_labels) == result.data_hash
    report = FusionReport(result.model, result.config.labels_name, k, len(test), len(set(lab)), methods, per_layer,
                          result.layer_weights(data.x), "", "", p, same_data, trained_copies=len(held) - len(test),
                          compared_with="all-layers" if default is None else "default")
    report.verdict, report.caveat = _verdict(report)
    report.interrupted_note = interrupted_note(result)
    return report


def interrupted_note(result: FusionResult) -> str | None:
    """A one-line note for a checkpoint saved by a training stopped with Ctrl-C; None for one that ran to its end."""
    if result.interrupted_at is None:
        return None
    return (f"the checkpoint is from a training interrupted at epoch {result.interrupted_at} (best epoch "
            f"{result.best_epoch}); `mess fuse train` again trains to the end")


def _rounded(s: RetrievalScores) -> tuple[float, float, float]:
    return round(s.precision, 4), round(s.map, 4), round(s.ndcg, 4)


def _verdict(report: FusionReport) -> tuple[str, str]:
    """The one-line verdict on fused against ``report.compared_with`` (`mess similar`'s default ranking when
    scored, else the mean of all layers), following the paired test, and the caveat."""
    fused, base, best = report.score(FUSED), report.score(report.compared_with), report.score("best-layer")
    p = report.wilcoxon_p
    if p is not None and p < ALPHA and fused.ndcg != base.ndcg:
        outcome = "beats" if fused.ndcg > base.ndcg else "is worse than"
    elif p is None and fused.ndcg == base.ndcg:  # the same nDCG on every query
        outcome = "ties with"
    else:
        outcome = "is not significantly different from"
    test = f", paired Wilcoxon p={p:.3g}" if p is not None else ""
    against, also = "the mean of all layers", ""
    if report.compared_with == "default":
        mean = report.score("all-layers").ndcg
        against, also = "`mess similar`'s default ranking", f"; mean of all layers: {mean:.3f}"
    verdict = (f"fused {outcome} {against} on held-out nDCG@{report.k} "
               f"({fused.ndcg:.3f} vs {base.ndcg:.3f}{test}){also}; best single layer: {best.ndcg:.3f}")
    caveat = ""
    if report.n_test_tracks < MIN_TRACKS or report.n_test_labels < MIN_LABELS:
        caveat = (f"held-out split holds n={report.n_test_tracks} tracks of {report.n_test_labels} labels: "
                  f"too small to conclude anything (want >= {MIN_TRACKS} tracks and >= {MIN_LABELS} labels)")
    if report.trained_copies:
        caveat = "; ".join(filter(None, [caveat, f"{counted(report.trained_copies, 'held-out track')} left out: a "
                                         "byte-identical copy of each is tagged with a label trained on"]))
    if not report.data_hash_matches:
        caveat = "; ".join(filter(None, [caveat, "the store changed since training (data hash differs)"]))
    return verdict, caveat


def attach_probe(report: FusionReport, store: FeatureStore, run: Run) -> None:
    """Add per-layer, per-aspect probe R^2 from `mess probe`'s ridge JSON report of ``run``, or say why there is
    none; note (``probe_tracks_note``) when that probe saw fewer tracks than the run has now."""
    from mess.store.reports import report_paths

    path = report_paths(store.reports_dir, report.model, run.id, "ridge")["json"]
    probe = f"`mess probe --model {run.model if store.run(run.model).id == run.id else f'{run.model}@{run.id}'}`"
    if not path.exists():
        report.probe_note = f"no probe report ({path.name}); run {probe} to compare"
        return
    try:
        saved = json.loads(path.read_text())
        trained = saved["conditions"]["trained"]
        table = trained.get("aspect_score") or trained["aspect_r2"]
        report.probe = {layer: dict(table.get(layer, {})) for layer in report.layer_weights}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        report.probe_note = f"probe report {path.name} has no per-layer aspect R^2 ({exc!r})"
        return
    report.probe_note = f"probe R^2 per aspect (mean over its targets, clipped at 0) from {path.name}"
    counted = saved.get("n_tracks")  # the tracks with targets; missing_tracks: those without
    probed = counted + len(saved.get("missing_tracks") or []) if isinstance(counted, int) else None
    if probed is not None and probed < (now := len(store.tracks(run))):
        report.probe_tracks_note = (f"the probe report {path.name} is from a probe of {probed} tracks; "
                                    f"{run.model} run {run.id} has {now} now: rerun {probe}")


def plot(report: FusionReport, path: Path) -> None:
    """PNG: learned layer weights (left) next to probe R^2 per layer and aspect (right)."""
    from matplotlib.figure import Figure  # no pyplot: the process's backend stays the caller's

    names = list(report.layer_weights)
    y = np.arange(len(names))
    fig = Figure(figsize=(11, 0.35 * len(names) + 2))
    left, right = fig.subplots(1, 2, sharey=True)
    left.barh(y, list(report.layer_weights.values()), color="tab:blue")
    left.axvline(1 / len(names), color="grey", linestyle=":", label="uniform")
    left.set(yticks=y, yticklabels=names, xlabel="mean softmax weight",
             title=f"learned layer weights ({report.model}, label={report.label})")
    left.invert_yaxis()
    left.legend(loc="lower right", fontsize=8)
    if report.probe:
        aspects = sorted({a for row in report.probe.values() for a in row})
        grid = np.array([[np.nan if report.probe[n].get(a) is None else report.probe[n][a] for a in aspects]
                         for n in names], dtype=float)
        image = right.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):
                right.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                           color="black" if value > 0.6 else "white")
        right.set_xticks(range(len(aspects)), aspects, rotation=30, ha="right")
        right.set_title("probe R^2 per aspect (mess probe)")
        fig.colorbar(image, ax=right, fraction=0.04)
    else:
        right.text(0.5, 0.5, textwrap.fill(report.probe_note, 45), ha="center", va="center", transform=right.transAxes)
        right.set_axis_off()
    fig.tight_layout()
    png = io.BytesIO()  # whole before it is written: the file is replaced whole
    fig.savefig(png, dpi=120, format="png")
    replace_file(path, png.getvalue())


def markdown(report: FusionReport) -> str:
    """The report as a Markdown page."""
    lines = [f"# Layer fusion: {report.model} (label = {report.label})", "", report.verdict, ""]
    if report.caveat:
        lines += [f"**Caveat:** {report.caveat}", ""]
    for text in (report.training_log_note, report.interrupted_note, report.probe_tracks_note):
        if text:
            lines += [f"**Note:** {text}", ""]
    lines += [f"Held-out labels (never trained on): {report.n_test_labels}, tracks: {report.n_test_tracks}.", "",
              f"| method | what | P@{report.k} | mAP | nDCG@{report.k} |", "|---|---|---|---|---|"]
    lines += [f"| {m.method} | {m.detail} | {m.precision:.3f} | {m.map:.3f} | {m.ndcg:.3f} |" for m in report.methods]
    lines += ["", f"| layer | learned weight | held-out nDCG@{report.k} alone | strongest probe aspect (R^2) |",
              "|---|---|---|---|"]
    for name, weight in report.layer_weights.items():
        aspects = {a: v for a, v in (report.probe or {}).get(name, {}).items() if v is not None}
        top = max(aspects, key=aspects.__getitem__) if aspects else None
        probe = f"{top} ({aspects[top]:.2f})" if top else "-"
        lines.append(f"| {name} | {weight:.3f} | {report.per_layer[name]:.3f} | {probe} |")
    lines += ["", report.probe_note, ""]
    if "png" in report.files:
        lines += [f"![layer weights]({Path(report.files['png']).name})", ""]
    return "\n".join(lines)


def write_report(report: FusionReport, folder: str | Path, name: str) -> dict[str, str]:
    """Write ``name``.json / .md / .png into ``folder`` (`mess fuse report`: the checkpoint's
    :func:`mess.store.reports.fusion_stem`, so two checkpoints' reports never overwrite each other); returns
    their paths. Each file is replaced whole: an interrupted write leaves the one before, or none."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / name
    report.files = {ext: str(stem.with_suffix(f".{ext}")) for ext in ("json", "md", "png")}
    plot(report, Path(report.files["png"]))
    replace_file(Path(report.files["md"]), printable(markdown(report)).encode())  # a note's caf\xe9.pt named so
    replace_file(Path(report.files["json"]), json.dumps(report.to_dict(), indent=2).encode())
    return report.files
