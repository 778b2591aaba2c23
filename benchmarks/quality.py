"""Retrieval quality on real music: six games' soundtracks, label = the game (`mess demo soundtracks`).

Extracts the development set (cached in the store), then prints backend x vectors -> P@5, mAP and
nDCG@10, each with a 95% bootstrap interval over queries, plus chance. Every track is a query; its
ranking covers every other track. Nothing here is trained on the labels except the rows marked
LOGO: those pick a setting (a layer, a vector recipe, a window count) on five games and are scored
on the sixth, for each game in turn (leave one game out), so their figures come from games the choice
never saw. The window study re-uses the stored per-window vectors (no re-extraction).

The row "the default" is what `mess extract` + `mess similar` / `mess evaluate` use with no options: the
``musicnn`` model (musicnn-msd and musicnn-mtt on one log-mel, and the timbre layer: the MFCC Gaussian up to
16 kHz), all layers, power-normalised (signed fourth roots, then z-scores; the timbre layer z-scored and weighted
as 12 layers), database-side augmentation and query expansion (k = 3, alpha = 1): ``--ranking augmented``. The rows
"network layers" leave the timbre layer out: "previous default" (z-scored, query expansion: ``--norm zscore
--ranking plain``) and "the default without timbre" are the two defaults before it.
The msd and mtt rows read the same run's ``msd.*`` / ``mtt.*`` layers, which equal the single models' vectors
(a separate ``musicnn-msd`` run is used instead where the store has one).

    python benchmarks/quality.py [--data DIR] [--store DIR] [--models musicnn,dsp,musicnn-vgg-msd]
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from mess.audio.windows import WindowPolicy
from mess.datasets.soundtracks import FetchError, fetch_soundtracks
from mess.extract.runs import run_policy
from mess.models import timbre
from mess.search.augment import build_augmentation, expanded_rows
from mess.search.expansion import EXPAND_ALPHA, EXPAND_K, expand_collection, expanded_scores
from mess.search.metrics import average_precision, ndcg_at_k, precision_at_k, ranked_relevance
from mess.search.rerank import build_reranker
from mess.search.segments import chamfer_rows, group_windows
from mess.search.vectors import TIMBRE_WEIGHT, Preprocessor, block_roles
from mess.store import FeatureStore, Run, StoreError

CACHE = Path.home() / ".cache" / "mess-bench"
MODELS = ("musicnn", "dsp")
DEFAULT_ROW = "the default: musicnn, all layers with timbre, power, DBA + expanded (--ranking augmented)"
PREVIOUS_ROW = "previous default: musicnn, network layers, zscore, expanded (--norm zscore --ranking plain)"
AUGMENTED_ROW = "the default without timbre: musicnn, network layers, power, DBA + expanded"
TIMBRE_WEIGHTS = (0.0, 2.0, 4.0, 8.0, 12.0, 16.0)  # the timbre layer's weight, in layers, for LOGO
EXPANSIONS = ((1, 3.0), (2, 3.0), (3, 3.0), (5, 3.0), (8, 3.0), (3, 1.0), (5, 1.0))  # (k, alpha) for LOGO
BOOT = 2000
WINDOW_COUNTS = (1, 2, 3, 4, 8, 16)
SHAPE_PER_GAME = (10, 6)  # tracks per game in the held-out-shape study
SHAPE_RECIPES = {  # name -> (norm, ranking, with the timbre layer)
    "previous default": ("zscore", "plain", False), "without timbre (power, augmented)": ("power", "augmented", False),
    "the default (with timbre, power, augmented)": ("power", "augmented", True),
    "power, re-ranked, with timbre": ("power", "reranked", True), "zscore, augmented, with timbre": ("zscore",
                                                                                                   "augmented", True)}
PLACEMENTS = ("start", "middle", "spread")
Sim = np.ndarray  # [n, n] similarity of every track to every track


# ---------------------------------------------------------------- data


def extract_missing(store: Path, paths: list[Path], games: list[str], models: tuple[str, ...]) -> None:
    """Embed the tracks a model still lacks, shortest first and round-robin over games (interruptible)."""
    from mess.extract.pipeline import extract
    from mess.models.registry import load_model

    order = _round_robin(paths, games)
    fs = FeatureStore(store)
    try:
        for name in models:
            started = time.perf_counter()
            summary = extract(fs, order, load_model(name), WindowPolicy(), workers=1)
            print(f"extract {name}: {summary.done} embedded, {summary.skipped} cached, {len(summary.failed)} failed "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    finally:
        fs.close()


def _round_robin(paths: list[Path], games: list[str]) -> list[Path]:
    """Paths ordered so that any prefix covers every game: each game's shortest files first."""
    by_game: dict[str, list[Path]] = {}
    for path, game in zip(paths, games, strict=False):
        by_game.setdefault(game, []).append(path)
    queues = [sorted(ps, key=lambda p: p.stat().st_size) for ps in by_game.values()]
    return [q[i] for i in range(max(map(len, queues))) for q in queues if i < len(q)]


@dataclass
class Backend:
    """One model's stored vectors for the evaluated tracks: per layer, track means and windows."""

    name: str
    layers: tuple[str, ...]
    tracks: dict[str, np.ndarray]  # layer -> [n, dim]
    windows: dict[str, np.ndarray]  # layer -> [n_windows, dim]
    owner: np.ndarray  # row of the track each window belongs to
    starts: np.ndarray  # window start seconds
    revision: str  # the run's model revision (it decides the timbre layer's role)


def load_backend(fs: FeatureStore, run: Run, ids: np.ndarray) -> Backend:
    """Track and window vectors of every layer for the track ids ``ids`` (in that order)."""
    pos = {int(i): n for n, i in enumerate(ids)}
    tracks, windows = {}, {}
    owner = starts = np.empty(0)
    for layer in run.layer_names:
        tid, mat = fs.layer_matrix(run, layer)
        rows = np.array([pos.get(int(i), -1) for i in tid])
        out = np.empty((len(ids), mat.shape[1]), np.float32)
        out[rows[rows >= 0]] = mat[rows >= 0]
        tracks[layer] = out
        seg_ids, seg_starts, seg = fs.segment_matrix(run, layer)
        seg_rows = np.array([pos.get(int(i), -1) for i in seg_ids])
        keep = seg_rows >= 0
        windows[layer], owner, starts = seg[keep], seg_rows[keep], seg_starts[keep]
    return Backend(run.model, run.layer_names, tracks, windows, owner, starts, run.revision)


def split_ensemble(backends: dict[str, Backend]) -> dict[str, Backend]:
    """Add ``musicnn-msd`` / ``musicnn-mtt`` backends read from the ``musicnn`` ensemble's prefixed layers
    (the same vectors as the single models) where the store has no run of their own."""
    ensemble = backends.get("musicnn")
    if ensemble is None:
        return backends
    out = dict(backends)
    for member in ("msd", "mtt"):
        name = f"musicnn-{member}"
        if name in out:
            continue
        keep = [layer for layer in ensemble.layers if layer.startswith(f"{member}.")]
        short = tuple(layer.split(".", 1)[1] for layer in keep)
        out[name] = Backend(name, short, {s: ensemble.tracks[k] for s, k in zip(short, keep, strict=True)},
                            {s: ensemble.windows[k] for s, k in zip(short, keep, strict=True)}, ensemble.owner,
                            ensemble.starts, ensemble.revision)
    return out


# ---------------------------------------------------------------- vectors -> similarity


def unit_vectors(blocks: list[np.ndarray], norm: str = "center", names: list[tuple[str, str]] | None = None,
                 timbre_weight: float = TIMBRE_WEIGHT) -> np.ndarray:
    """The library's preprocessing (per-dimension shift, per-block L2) of concatenated layer blocks; with each
    block's (layer, run revision) ``names``, the all-layer vector's block roles (mess's timbre layer unpowered,
    weighted ``timbre_weight``)."""
    raw = np.concatenate(blocks, axis=1)
    unpowered = tuple(block_roles((layer,), "all", revision)[0][0] for layer, revision in names or ())
    weights = tuple(timbre_weight if u else 1.0 for u in unpowered)
    return Preprocessor.fit(raw, [b.shape[1] for b in blocks], norm, unpowered, weights).apply(raw)  # type: ignore[arg-type]


def block_names(backends: list[Backend], layers: list[tuple[int, str]]) -> list[tuple[str, str]]:
    """Each chosen (backend, layer) block as (layer, its run's revision), what :func:`unit_vectors` reads."""
    return [(layer, backends[b].revision) for b, layer in layers]


def mean_sim(backends: list[Backend], layers: list[tuple[int, str]], norm: str = "center", expand: int = 0,
             alpha: float = EXPAND_ALPHA) -> Sim:
    """Cosine of track vectors over the chosen (backend, layer) blocks, each block equally weighted (the timbre
    layer as the all-layer vector weighs it); with
    ``expand`` > 0, of each query expanded with its nearest tracks (the library's alpha-QE) against the tracks."""
    x = unit_vectors([backends[b].tracks[layer] for b, layer in layers], norm, block_names(backends, layers))
    return expanded_scores(x @ x.T, expand_collection(x, expand, alpha) @ x.T) if expand else x @ x.T


def augmented_sim(backends: list[Backend], layers: list[tuple[int, str]], norm: str = "power",
                  timbre_weight: float = TIMBRE_WEIGHT) -> Sim:
    """The library's augmented ranking (`--ranking augmented`: DBA, expansion) of every track against every track,
    with the all-layer vector's block roles (the timbre layer's weight ``timbre_weight``)."""
    blocks = [backends[b].tracks[layer] for b, layer in layers]
    return ranked(unit_vectors(blocks, norm, block_names(backends, layers), timbre_weight), "augmented")


def reranked_sim(backends: list[Backend], layers: list[tuple[int, str]], norm: str = "power") -> Sim:
    """The library's re-ranking (`--ranking reranked`: DBA, expansion, k-reciprocal) of every track against every
    track, with the all-layer vector's block roles."""
    blocks = [backends[b].tracks[layer] for b, layer in layers]
    return ranked(unit_vectors(blocks, norm, block_names(backends, layers)), "reranked")


def segment_sim(backends: list[Backend], layers: list[tuple[int, str]], norm: str = "center") -> Sim:
    """Chamfer similarity of window vectors (one backend; the preprocessor is fitted on track vectors)."""
    b = backends[layers[0][0]]
    track_raw = np.concatenate([b.tracks[layer] for _, layer in layers], axis=1)
    seg_raw = np.concatenate([b.windows[layer] for _, layer in layers], axis=1)
    dims = [b.tracks[layer].shape[1] for _, layer in layers]
    prep = Preprocessor.fit(track_raw, dims, norm)  # type: ignore[arg-type]
    n = len(track_raw)
    seg = group_windows(np.arange(n), b.owner, prep.apply(seg_raw))
    return chamfer_rows(seg, np.arange(n))


def all_layers(backends: list[Backend], *which: int) -> list[tuple[int, str]]:
    """(backend, layer) pairs of every layer of the given backends."""
    return [(b, layer) for b in which for layer in backends[b].layers]


def network_layers(backends: list[Backend], which: int) -> list[tuple[int, str]]:
    """(backend, layer) pairs of a backend's layers but the timbre layer (the musicnn networks' own)."""
    return [(which, layer) for layer in backends[which].layers if layer != timbre.LAYER]


# ---------------------------------------------------------------- metrics


@dataclass
class PerQuery:
    """Per-query P@5, AP and nDCG@10 for one similarity, and the query rows they belong to."""

    p5: np.ndarray
    ap: np.ndarray
    ndcg: np.ndarray
    rows: np.ndarray


def per_query(sim: Sim, labels: np.ndarray, rows: np.ndarray | None = None,
              items: np.ndarray | None = None) -> PerQuery:
    """Scores of the queries ``rows`` (default all) ranking the tracks ``items`` (default all).

    A query whose label no other item shares is left out: it has nothing to find.
    """
    rows = np.arange(len(labels)) if rows is None else rows
    items = np.arange(len(labels)) if items is None else items
    _, inverse, counts = np.unique(labels[items], return_inverse=True, return_counts=True)
    shared = set(labels[items][counts[inverse] >= 2].tolist())
    rows = rows[np.isin(labels[rows], list(shared))]
    local = np.searchsorted(items, rows)
    rel = ranked_relevance(sim[np.ix_(rows, items)], labels[rows], labels[items], local)
    return PerQuery(precision_at_k(rel, 5), average_precision(rel), ndcg_at_k(rel, 10), rows)


def chance(labels: np.ndarray, seed: int = 0, repeats: int = 50) -> PerQuery:
    """The same scores for random rankings, averaged over ``repeats`` per query."""
    rng = np.random.default_rng(seed)
    runs = [per_query(rng.random((len(labels), len(labels))), labels) for _ in range(repeats)]
    p5, ap, ndcg = (np.mean([getattr(r, f) for r in runs], axis=0) for f in ("p5", "ap", "ndcg"))
    return PerQuery(p5, ap, ndcg, runs[0].rows)


def boot_ci(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean over queries."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (BOOT, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def ratio_ci(a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """mean(a) / mean(b) with a 95% paired bootstrap interval (the same queries resampled for both)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (BOOT, len(a)))
    ratios = a[idx].mean(axis=1) / np.maximum(b[idx].mean(axis=1), 1e-12)
    return float(a.mean() / b.mean()), float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


# ---------------------------------------------------------------- leave one game out


def logo(candidates: dict[str, Sim], labels: np.ndarray) -> tuple[PerQuery, list[str]]:
    """Pick the candidate with the best mAP on five games, score it on the sixth; pooled over the six folds.

    Within a fold the choice sees only the other games' tracks (queries and rankings); the held-out
    game's queries then rank every track, as in the fixed rows.
    """
    parts: list[PerQuery] = []
    picks: list[str] = []
    for game in np.unique(labels):
        train = np.flatnonzero(labels != game)
        best = max(candidates, key=lambda c: per_query(candidates[c], labels, train, train).ap.mean())
        parts.append(per_query(candidates[best], labels, np.flatnonzero(labels == game)))
        picks.append(f"{game}:{best}")
    order = np.argsort(np.concatenate([p.rows for p in parts]))
    pooled = PerQuery(*(np.concatenate([getattr(p, f) for p in parts])[order] for f in ("p5", "ap", "ndcg", "rows")))
    return pooled, picks


# ---------------------------------------------------------------- window study


def window_subset(b: Backend, count: int, placement: str) -> Backend:
    """The backend as if each track had been analysed with ``count`` of its stored windows only."""
    keep = []
    for row in range(len(next(iter(b.tracks.values())))):
        own = np.flatnonzero(b.owner == row)
        own = own[np.argsort(b.starts[own], kind="stable")]
        n = min(count, len(own))
        if placement == "start":
            pick = own[:n]
        elif placement == "middle":
            first = (len(own) - n) // 2
            pick = own[first:first + n]
        else:
            pick = own[np.unique(np.linspace(0, len(own) - 1, n).round().astype(int))]
        keep.append(pick)
    sel = np.concatenate(keep)
    tracks = {layer: np.stack([b.windows[layer][k].mean(axis=0) for k in keep]) for layer in b.layers}
    return Backend(b.name, b.layers, tracks, {layer: w[sel] for layer, w in b.windows.items()}, b.owner[sel],
                   b.starts[sel], b.revision)


def window_study(b: Backend, labels: np.ndarray, durations: np.ndarray, policy: WindowPolicy,
                 norm: str = "center", expand: int = 0) -> dict[tuple[int, str], Sim]:
    """Print mAP (95% CI) against seconds analysed per track for each window count (up to the stored policy's
    maximum) and placement."""
    window_s = policy.window_seconds
    print(f"\nwindow policy ({b.name}, network layers, {norm}, expansion {expand}, mean of the chosen {window_s:.0f} s "
          f"windows; the store holds at most {policy.max_windows} per track):")
    print(f"{'windows':>8} {'s/track':>8}  " + "  ".join(f"{p:>22}" for p in PLACEMENTS))
    sims: dict[tuple[int, str], Sim] = {}
    for count in [c for c in WINDOW_COUNTS if c <= policy.max_windows]:
        cells = []
        for placement in PLACEMENTS:
            sub = window_subset(b, count, placement)
            sims[(count, placement)] = mean_sim([sub], network_layers([sub], 0), norm, expand)
            ap = per_query(sims[(count, placement)], labels).ap
            lo, hi = boot_ci(ap)
            cells.append(f"{ap.mean():.3f} [{lo:.3f}, {hi:.3f}]")
        seconds = np.minimum(durations, count * window_s).mean()
        print(f"{count:>8} {seconds:>8.0f}  " + "  ".join(f"{c:>22}" for c in cells))
    return sims


# ---------------------------------------------------------------- report


def row(name: str, q: PerQuery) -> str:
    """One table row: each metric with its 95% interval."""
    cells = [f"{v.mean():.3f} [{lo:.3f}, {hi:.3f}]" for v in (q.p5, q.ap, q.ndcg) for lo, hi in [boot_ci(v)]]
    return f"| {name} | " + " | ".join(cells) + " |"


def recipes(backends: dict[str, Backend]) -> dict[str, Callable[[], Sim]]:
    """The fixed (untrained) vector recipes measured, by name; backends missing from the store are left out."""
    order = list(backends)
    bs = list(backends.values())
    out: dict[str, Callable[[], Sim]] = {}
    if "dsp" in backends:
        d = order.index("dsp")
        out["dsp, all layers"] = lambda: mean_sim(bs, all_layers(bs, d))
        out["dsp, all layers, zscore"] = lambda: mean_sim(bs, all_layers(bs, d), "zscore")
    if "musicnn" in backends:
        e = order.index("musicnn")
        net = network_layers(bs, e)
        out["musicnn (msd+mtt) network layers"] = lambda: mean_sim(bs, net)
        out["musicnn (msd+mtt) network layers, zscore"] = lambda: mean_sim(bs, net, "zscore")
        out[PREVIOUS_ROW] = lambda: mean_sim(bs, net, "zscore", EXPAND_K, EXPAND_ALPHA)
        out[AUGMENTED_ROW] = lambda: augmented_sim(bs, net)
        if timbre.LAYER in backends["musicnn"].layers:
            out["musicnn timbre layer alone, zscore"] = lambda: mean_sim(bs, [(e, timbre.LAYER)], "zscore")
            out["musicnn all layers with timbre, power, expanded (--ranking plain)"] = lambda: mean_sim(
                bs, all_layers(bs, e), "power", EXPAND_K)
            out["musicnn all layers with timbre, zscore, augmented (--norm zscore)"] = lambda: augmented_sim(
                bs, all_layers(bs, e), "zscore")
            out[DEFAULT_ROW] = lambda: augmented_sim(bs, all_layers(bs, e))
            out["musicnn all layers with timbre, power, re-ranked (--ranking reranked)"] = lambda: reranked_sim(
                bs, all_layers(bs, e))
    musicnn = [m for m in order if m.startswith("musicnn-")]
    for model in musicnn:
        m, short = order.index(model), model.removeprefix("musicnn-")
        last = "penultimate" if "penultimate" in backends[model].layers else backends[model].layers[-2]
        out[f"{short} {last}"] = partial(mean_sim, bs, [(m, last)])
        if "mean_pool" in backends[model].layers:
            out[f"{short} mean_pool"] = partial(mean_sim, bs, [(m, "mean_pool")])
        out[f"{short} all layers"] = partial(mean_sim, bs, all_layers(bs, m))
        out[f"{short} all layers, zscore"] = partial(mean_sim, bs, all_layers(bs, m), "zscore")
        out[f"{short} all layers, zscore, expanded"] = partial(mean_sim, bs, all_layers(bs, m), "zscore", EXPAND_K)
        if model in ("musicnn-msd", "musicnn-mtt"):
            out[f"{short} all layers, segments"] = partial(segment_sim, bs, all_layers(bs, m))
    combos = {"msd+mtt": [m for m in ("musicnn-msd", "musicnn-mtt") if m in backends and "musicnn" not in backends]}
    if len(musicnn) > 2:
        combos["4 musicnn backends"] = musicnn
    for name, models in combos.items():
        if len(models) < 2:
            continue
        idx = [order.index(m) for m in models]
        out[f"{name} all layers, zscore"] = partial(mean_sim, bs, all_layers(bs, *idx), "zscore")
        out[f"{name} all layers, zscore, expanded"] = partial(mean_sim, bs, all_layers(bs, *idx), "zscore", EXPAND_K)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=CACHE / "soundtracks")
    parser.add_argument("--store", type=Path, default=CACHE / "soundtracks-store")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--no-extract", action="store_true", help="Evaluate only the tracks already extracted.")
    parser.add_argument("--draws", type=int, default=300,
                        help="Sub-collections per shape in the held-out-shape study (0 skips it).")
    args = parser.parse_args()
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    started = time.perf_counter()
    try:  # no apt-get, no store, a model the store lacks: one line, not a traceback
        tracks = fetch_soundtracks(args.data)
        if not args.no_extract:
            extract_missing(args.store, [t.path for t in tracks], [t.game for t in tracks], models)
        game_of = {str(t.path.resolve()): t for t in tracks}
        fs = FeatureStore(args.store, readonly=True)
        try:
            runs = {m: fs.run(m) for m in models}
            have = [{t.id for t in fs.tracks(r) if t.path in game_of} for r in runs.values()]
            ids = np.array(sorted(set.intersection(*have)), dtype=np.int64)
            by_id = {t.id: t for t in fs.tracks()}
            backends = split_ensemble({m: load_backend(fs, r, ids) for m, r in runs.items()})
            policy = run_policy(next(iter(runs.values())))
        finally:
            fs.close()
    except (FetchError, StoreError) as exc:
        parser.error(str(exc))
    meta = [game_of[by_id[int(i)].path] for i in ids]
    labels = np.array([t.game for t in meta])
    durations = np.array([t.duration for t in meta])
    composers = np.array([t.artist or "" for t in meta])
    games = ", ".join(f"{g} {n}" for g, n in zip(*np.unique(labels, return_counts=True), strict=False))
    print(f"{len(ids)} tracks of {len(tracks)} with vectors from {', '.join(models)}; per game: {games}")
    report(backends, labels, durations, policy, args.draws, composers)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n{time.perf_counter() - started:.0f} s, peak RSS {peak:.0f} MiB")


def ranked(x: np.ndarray, ranking: str) -> Sim:
    """Every track of unit vectors ``x`` against every track by one of the library's rankings."""
    if ranking == "plain":
        return expanded_scores(x @ x.T, expand_collection(x, EXPAND_K, EXPAND_ALPHA) @ x.T)
    if ranking == "augmented":
        return expanded_rows(x, build_augmentation(x), np.arange(len(x)))
    return build_reranker(x).rows(np.arange(len(x)))


def draw_per_game(rng: np.random.Generator, labels: np.ndarray, per_game: int) -> np.ndarray:
    """Rows of a sub-collection: ``per_game`` random tracks of each game (all of a smaller game's)."""
    rows = [rng.choice(np.flatnonzero(labels == g), min(per_game, int((labels == g).sum())), replace=False)
            for g in np.unique(labels)]
    return np.sort(np.concatenate(rows))


def shape_study(backends: dict[str, Backend], labels: np.ndarray, draws: int, seed: int = 0) -> None:
    """The default against the previous defaults and other rankings on sub-collections shaped like the held-back
    check set (85 tracks over 8 games: about 10 per game), each draw's preprocessing fitted on the draw alone."""
    bs = list(backends.values())
    e = list(backends).index("musicnn")
    layer_sets = {False: network_layers(bs, e), True: all_layers(bs, e)}
    print(f"\nsub-collections shaped like a held-out set ({draws} draws each; mean ratio vs the previous default "
          "[95% interval of the mean], 2.5-97.5% of single draws, share of draws better):")
    for per_game in SHAPE_PER_GAME:
        rng = np.random.default_rng(seed)
        maps: dict[str, list[float]] = {name: [] for name in SHAPE_RECIPES}
        for _ in range(draws):
            rows = draw_per_game(rng, labels, per_game)
            for name, (norm, ranking, with_timbre) in SHAPE_RECIPES.items():
                layers = layer_sets[with_timbre]
                x = unit_vectors([bs[b].tracks[layer][rows] for b, layer in layers], norm, block_names(bs, layers))
                maps[name].append(float(per_query(ranked(x, ranking), labels[rows]).ap.mean()))
        base = np.array(maps["previous default"])
        print(f"  {per_game} per game ({len(rows)} tracks):")
        for name, values in maps.items():
            ratio = np.array(values) / base
            lo, hi = boot_ci(ratio, seed)
            print(f"    {name}: mAP {np.mean(values):.3f}, x{ratio.mean():.3f} [{lo:.3f}, {hi:.3f}], "
                  f"{np.percentile(ratio, 2.5):.3f}-{np.percentile(ratio, 97.5):.3f}, "
                  f"better in {100 * np.mean(ratio > 1 + 1e-12):.0f}%")


def timbre_study(backends: dict[str, Backend], labels: np.ndarray, scores: dict[str, PerQuery]) -> None:
    """The timbre layer's weight in the default (power, augmented) chosen by leave-one-game-out, and its effect per
    game: the evidence for :data:`mess.search.vectors.TIMBRE_WEIGHT`."""
    bs = list(backends.values())
    layers = all_layers(bs, list(backends).index("musicnn"))
    sims = {f"w{w:g}": augmented_sim(bs, layers, timbre_weight=w) for w in TIMBRE_WEIGHTS}
    print(f"\ntimbre layer's weight (in layers) beside the 18 network layers, power, augmented (w0 = the default "
          f"without timbre; the library uses w{TIMBRE_WEIGHT:g}):")
    base = per_query(sims["w0"], labels)
    for name, sim in sims.items():
        q = per_query(sim, labels)
        r, lo, hi = ratio_ci(q.ap, base.ap)
        print(f"  {name}: mAP {q.ap.mean():.3f}, x{r:.3f} [{lo:.3f}, {hi:.3f}] vs w0")
    q, picks = logo(sims, labels)
    r, lo, hi = ratio_ci(q.ap, base.ap)
    print(row("timbre weight chosen by LOGO", q))
    print(f"  x{r:.3f} [{lo:.3f}, {hi:.3f}] vs w0; picks: {' '.join(picks)}")
    scores["timbre weight chosen by LOGO"] = q
    default = per_query(sims[f"w{TIMBRE_WEIGHT:g}"], labels)
    games = np.unique(labels)
    print("  per game, the default minus w0: " + ", ".join(
        f"{g} {default.ap[labels[default.rows] == g].mean() - base.ap[labels[base.rows] == g].mean():+.3f}"
        for g in games))
    rng = np.random.default_rng(0)
    sums = np.array([[default.ap[labels[default.rows] == g].sum(), base.ap[labels[base.rows] == g].sum()]
                     for g in games])
    picks_g = rng.integers(0, len(games), (BOOT, len(games)))
    ratios = sums[picks_g, 0].sum(axis=1) / sums[picks_g, 1].sum(axis=1)
    print(f"  games resampled (whole games, {BOOT} resamples): 95% [{np.percentile(ratios, 2.5):.3f}, "
          f"{np.percentile(ratios, 97.5):.3f}]")


def composer_study(sims: dict[str, Sim], composers: np.ndarray) -> None:
    """The rankings of the default's vectors by a finer label than the game: the tracks' own artist tags (tagged
    tracks only, queries and items), each against the previous default."""
    tagged = np.flatnonzero(composers != "")
    scores = {name: per_query(sim, composers, tagged, tagged) for name, sim in sims.items()
              if name == PREVIOUS_ROW or name.startswith(("musicnn all layers", "the default", "musicnn timbre"))}
    base = scores[PREVIOUS_ROW]
    if not len(base.ap):  # no two tracks share an artist tag: nothing to score (a mean of nothing is NaN)
        print("\nby composer: no two tracks share an artist tag; not scored")
        return
    print(f"\nby composer (artist tag; {len(tagged)} tagged tracks, {len(set(composers[tagged]))} composers, "
          f"{len(base.ap)} queries; paired ratio vs the previous default):")
    for name, q in scores.items():
        r, lo, hi = ratio_ci(q.ap, base.ap)
        print(f"  {name}: mAP {q.ap.mean():.3f}, x{r:.3f} [{lo:.3f}, {hi:.3f}]")


def report(backends: dict[str, Backend], labels: np.ndarray, durations: np.ndarray, policy: WindowPolicy,
           draws: int = 0, composers: np.ndarray | None = None) -> None:
    """Print the quality table, the LOGO choices, the paired ratios against the baselines, the held-out-shape study,
    the rankings by composer (``composers``: each track's artist tag, "" where it has none) and the window study."""
    sims = {name: make() for name, make in recipes(backends).items()}
    scores = {name: per_query(s, labels) for name, s in sims.items()}
    print("\n| vectors | P@5 | mAP | nDCG@10 |\n|---|---|---|---|")
    print(row("chance", chance(labels)))
    for name, q in scores.items():
        print(row(name, q))
    if "musicnn-msd" in backends:
        b = list(backends).index("musicnn-msd")
        bs = list(backends.values())
        layer_sims = {layer: mean_sim(bs, [(b, layer)]) for layer in backends["musicnn-msd"].layers}
        q, picks = logo(layer_sims, labels)
        print(row("msd, one layer chosen by LOGO", q))
        print(f"  picks: {' '.join(picks)}")
        scores["msd, one layer chosen by LOGO"] = q
    if "musicnn-msd" in backends:
        b = list(backends).index("musicnn-msd")
        bs = list(backends.values())
        layers = all_layers(bs, b)
        settings = {f"k{k} a{a:g}": mean_sim(bs, layers, "zscore", k, a) for k, a in EXPANSIONS}
        q, picks = logo({"none": mean_sim(bs, layers, "zscore"), **settings}, labels)
        print(row("msd all layers, zscore, expansion chosen by LOGO", q))
        print(f"  picks: {' '.join(picks)}")
        scores["msd all layers, zscore, expansion chosen by LOGO"] = q
    q, picks = logo(sims, labels)
    print(row("recipe chosen by LOGO among the rows above", q))
    print(f"  picks: {' '.join(picks)}")
    scores["recipe chosen by LOGO"] = q
    base = {n: scores[n] for n in ("msd penultimate", "dsp, all layers", "msd all layers") if n in scores}
    if "musicnn" in backends and timbre.LAYER in backends["musicnn"].layers:
        timbre_study(backends, labels, scores)
    for previous in (p for p in (PREVIOUS_ROW, AUGMENTED_ROW) if p in scores):
        print(f"\n{previous}: mAP {scores[previous].ap.mean():.3f}")
        for name in (n for n in scores if n != previous and any(w in n for w in ("power", "augmented", "re-ranked",
                                                                                   "timbre"))):
            r, lo, hi = ratio_ci(scores[name].ap, scores[previous].ap)
            print(f"  {name}: mAP {scores[name].ap.mean():.3f}, x{r:.3f} [{lo:.3f}, {hi:.3f}] vs it")
    print("\nmAP ratios, paired bootstrap 95% interval over queries:")
    for name in [n for n in scores if n not in base]:
        print(f"  {name}: " + ", ".join(
            f"x{r:.2f} [{lo:.2f}, {hi:.2f}] vs {bn}" for bn, bq in base.items()
            for r, lo, hi in [ratio_ci(scores[name].ap, bq.ap)]))
    if "musicnn" in backends and draws:
        shape_study(backends, labels, draws)
    if PREVIOUS_ROW in sims and composers is not None:
        composer_study(sims, composers)
    if "musicnn" in backends:  # the default vectors, ranked as the previous default (the study was measured so)
        wins = window_study(backends["musicnn"], labels, durations, policy, "zscore", EXPAND_K)
    elif "musicnn-msd" in backends:
        wins = window_study(backends["musicnn-msd"], labels, durations, policy)
    if "musicnn" in backends or "musicnn-msd" in backends:
        q, picks = logo({f"{c}x{p}": s for (c, p), s in wins.items()}, labels)
        print(row("window policy chosen by LOGO", q))
        print(f"  picks: {' '.join(picks)}")


if __name__ == "__main__":
    main()
