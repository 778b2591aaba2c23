"""Second-order and temporal statistics of musicnn's frame-level layers on real soundtracks (issue 17 prototype).

The default vectors average each frame-level layer (timbral, temporal, cnn1..3) over the frames of a 3 s
patch. This script asks whether how those frames vary adds signal: per patch, the std over frames, the
frame covariance, the mean absolute frame-to-frame difference, the covariance of those differences and the
normalised autocorrelation at a few lags; each averaged over the patches of the same windows the default uses.

    python benchmarks/texture.py extract --data DIR --cache CACHE.npz    # once (minutes: both networks)
    python benchmarks/texture.py evaluate --data DIR --store STORE --cache CACHE.npz
    python benchmarks/texture.py cost       # seconds of the forward pass vs the statistics, 40 patches

``evaluate`` prints mAP by game (95% bootstrap interval over queries) for each statistic alone and added to
the default vectors (as extra z-scored, L2-normalised layers), with and without query expansion, paired
ratios against the default and msd penultimate, and the variant chosen by leave-one-game-out.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality as Q  # noqa: E402

from mess.audio.windows import WindowPolicy  # noqa: E402
from mess.datasets.soundtracks import fetch_soundtracks  # noqa: E402
from mess.extract.prepare import decode_windows, inspect_file  # noqa: E402
from mess.models.musicnn.model import SAMPLE_RATE, MusicnnModel, input_patches  # noqa: E402
from mess.models.musicnn.shapes import FRAME_LAYERS, N_FRAMES, N_MELS  # noqa: E402
from mess.search.expansion import EXPAND_ALPHA, EXPAND_K, expand_collection, expanded_scores  # noqa: E402
from mess.store import FeatureStore  # noqa: E402

MEMBERS = ("msd", "mtt")
LAGS = (1, 2, 4, 8, 16, 32, 64)  # frames of 16 ms
CHUNK = 8  # patches per forward pass
PCA_DIMS = 64


# ---------------------------------------------------------------- extraction


def patch_stats(x: torch.Tensor, delta_cov: bool) -> dict[str, torch.Tensor]:
    """Statistics over the frames of each patch, x [p, t, d] -> sums over the patches (divide by p later)."""
    mu = x.mean(dim=1, keepdim=True)
    c = x - mu
    t = x.shape[1]
    cov = torch.einsum("ptd,pte->de", c, c) / t
    diff = x[:, 1:] - x[:, :-1]
    var = (c * c).mean(dim=1)  # [p, d]
    ac = torch.stack([(c[:, lag:] * c[:, :-lag]).mean(dim=1) / (var + 1e-6) for lag in LAGS], dim=1)  # [p, L, d]
    out = {
        "mean": mu[:, 0].sum(0),
        "std": var.sqrt().sum(0),
        "cov": cov,
        "dabs": diff.abs().mean(dim=1).sum(0),
        "ac": ac.sum(0).flatten(),
        "outer": torch.einsum("pd,pe->de", mu[:, 0], mu[:, 0]),
    }
    if delta_cov:
        out["dcov"] = torch.einsum("ptd,pte->de", diff, diff) / (t - 1)
    return out


@torch.inference_mode()
def track_stats(members: dict[str, MusicnnModel], windows: np.ndarray) -> tuple[dict[str, np.ndarray], int]:
    """Per member and frame layer, each statistic averaged over all patches of the track's windows."""
    flat = torch.from_numpy(input_patches(windows).reshape(-1, N_FRAMES, N_MELS))
    sums: dict[str, torch.Tensor] = {}
    for name, model in members.items():
        for chunk in flat.split(CHUNK):
            out = model.network(chunk)
            for layer in FRAME_LAYERS:
                for stat, value in patch_stats(out[layer], layer.startswith("cnn")).items():
                    key, value = f"{name}.{layer}.{stat}", value.double()
                    sums[key] = sums[key] + value if key in sums else value
    return {k: (v / len(flat)).float().numpy() for k, v in sums.items()}, len(flat)


def extract(data: Path, out: Path, save_every: int = 8) -> None:
    """Decode the default policy's windows of every track, run both networks, save the statistics.

    Tracks go shortest first, round-robin over games, and the cache is rewritten every ``save_every``
    tracks, so an interrupted run still leaves every game covered.
    """
    tracks = fetch_soundtracks(data)
    order = Q._round_robin([t.path for t in tracks], [t.game for t in tracks])
    tracks = sorted(tracks, key=lambda t: order.index(t.path))
    members = {m: MusicnnModel(m.upper()) for m in MEMBERS}
    policy = WindowPolicy()
    rows: dict[str, list[np.ndarray]] = {}
    paths, seconds, patches = [], [], []
    started = time.perf_counter()
    for n, track in enumerate(tracks):
        t0 = time.perf_counter()
        win = decode_windows(inspect_file(track.path), SAMPLE_RATE, policy)
        stats, count = track_stats(members, win.audio)
        for key, value in stats.items():
            rows.setdefault(key, []).append(value)
        paths.append(str(track.path.resolve()))
        seconds.append(time.perf_counter() - t0)
        patches.append(count)
        print(f"{n + 1}/{len(tracks)} {track.path.name}: {count} patches, {seconds[-1]:.1f} s", flush=True)
        if (n + 1) % save_every == 0 or n + 1 == len(tracks):
            arrays = {k: np.stack(v) for k, v in rows.items()}
            np.savez(out, allow_pickle=False, paths=np.array(paths), seconds=np.array(seconds),
                     patches=np.array(patches), **arrays)
    print(f"saved {out} ({time.perf_counter() - started:.0f} s)")


def stat_seconds(members: dict[str, MusicnnModel], patches: int = 40, repeats: int = 5) -> dict[str, float]:
    """Best-of-``repeats`` seconds for ``patches`` patches (a 2-minute track) through both networks: the forward
    pass, every statistic of this script on its frame layers, and only the timbral/temporal frame covariances
    (the one family that helped; timed on the same stored outputs, so the contrast survives a busy machine)."""

    def cov_only(out: dict[str, torch.Tensor]) -> None:
        for layer in ("timbral", "temporal"):
            c = out[layer] - out[layer].mean(dim=1, keepdim=True)
            torch.einsum("ptd,pte->de", c, c)

    def all_stats(out: dict[str, torch.Tensor]) -> None:
        for layer in FRAME_LAYERS:
            patch_stats(out[layer], layer.startswith("cnn"))

    flat = torch.randn(patches, N_FRAMES, N_MELS)

    def best(work: Callable[[], object]) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            with torch.inference_mode():
                work()
            times.append(time.perf_counter() - t0)
        return min(times)

    with torch.inference_mode():
        outs = [model.network(chunk) for model in members.values() for chunk in flat.split(CHUNK)]

    def each(stats: Callable[[dict[str, torch.Tensor]], None]) -> None:
        for out in outs:
            stats(out)
    return {
        "forward": best(lambda: [model.network(chunk) for model in members.values() for chunk in flat.split(CHUNK)]),
        "all statistics": best(lambda: each(all_stats)),
        "timbral/temporal covariance": best(lambda: each(cov_only)),
    }


# ---------------------------------------------------------------- features from the cache


def upper(mats: np.ndarray) -> np.ndarray:
    """Upper triangles (diagonal included) of [n, d, d] as [n, d(d+1)/2]."""
    i, j = np.triu_indices(mats.shape[1])
    return mats[:, i, j]


def corr(cov: np.ndarray) -> np.ndarray:
    """Correlation matrices of covariances [n, d, d], off-diagonal upper triangles."""
    s = np.sqrt(np.maximum(np.einsum("ndd->nd", cov), 1e-8))
    r = cov / s[:, :, None] / s[:, None, :]
    i, j = np.triu_indices(cov.shape[1], 1)
    return r[:, i, j]


def logm(cov: np.ndarray, shrink: float = 1e-3) -> np.ndarray:
    """Matrix logarithm of SPD matrices [n, d, d] (log-Euclidean), shrunk towards the scaled identity."""
    d = cov.shape[1]
    eye = np.eye(d) * (np.einsum("ndd->n", cov) / d)[:, None, None]
    w, v = np.linalg.eigh(cov + shrink * eye)
    return np.einsum("nik,nk,njk->nij", v, np.log(np.maximum(w, 1e-12)), v)


def sqrtm(cov: np.ndarray) -> np.ndarray:
    """Matrix square root of PSD matrices [n, d, d]."""
    w, v = np.linalg.eigh(cov)
    return np.einsum("nik,nk,njk->nij", v, np.sqrt(np.maximum(w, 0)), v)


def pca_basis(cache: dict[str, np.ndarray], key: str, dims: int = PCA_DIMS) -> np.ndarray:
    """Top principal axes [d, dims] of the collection's frames for ``member.layer`` (unsupervised).

    Total frame covariance = mean within-patch covariance + covariance of the patch means around the
    collection mean (from each track's mean of patch-mean outer products).
    """
    mean = cache[f"{key}.mean"].mean(0)
    total = cache[f"{key}.cov"].mean(0) + cache[f"{key}.outer"].mean(0) - np.outer(mean, mean)
    w, v = np.linalg.eigh(total)
    return v[:, np.argsort(-w)[:dims]]


def families(cache: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Each statistic as a list of layer blocks [n, dim] (one block per member and layer)."""
    out: dict[str, list[np.ndarray]] = {}
    cnn = ("cnn1", "cnn2", "cnn3")
    big = ("timbral", "temporal")

    def blocks(layers: tuple[str, ...], make: Callable[[str], np.ndarray]) -> list[np.ndarray]:
        return [make(f"{m}.{layer}").astype(np.float64) for m in MEMBERS for layer in layers]

    out["mean (recomputed default frame layers)"] = blocks(FRAME_LAYERS, lambda k: cache[f"{k}.mean"])
    out["std"] = blocks(FRAME_LAYERS, lambda k: cache[f"{k}.std"])
    out["dabs"] = blocks(FRAME_LAYERS, lambda k: cache[f"{k}.dabs"])
    out["dabs / std"] = blocks(FRAME_LAYERS, lambda k: cache[f"{k}.dabs"] / (cache[f"{k}.std"] + 1e-3))
    out["autocorr"] = blocks(FRAME_LAYERS, lambda k: cache[f"{k}.ac"])
    out["autocorr cnn"] = blocks(cnn, lambda k: cache[f"{k}.ac"])
    out["cov cnn"] = blocks(cnn, lambda k: upper(cache[f"{k}.cov"]))
    out["cov cnn, sqrtm"] = blocks(cnn, lambda k: upper(sqrtm(cache[f"{k}.cov"])))
    out["cov cnn, logm"] = blocks(cnn, lambda k: upper(logm(cache[f"{k}.cov"])))
    out["corr cnn"] = blocks(cnn, lambda k: corr(cache[f"{k}.cov"]))
    out["delta cov cnn, logm"] = blocks(cnn, lambda k: upper(logm(cache[f"{k}.dcov"])))
    bases = {(f"{m}.{layer}", k): pca_basis(cache, f"{m}.{layer}", k) for m in MEMBERS for layer in big
             for k in (32, 64, 128)}

    def projected(key: str, dims: int = PCA_DIMS) -> np.ndarray:
        basis = bases[(key, dims)]
        return basis.T @ cache[f"{key}.cov"] @ basis

    out["cov pca64 timbral/temporal, logm"] = blocks(big, lambda k: upper(logm(projected(k))))
    out["corr pca64 timbral/temporal"] = blocks(big, lambda k: corr(projected(k)))
    out["cov all layers, logm"] = out["cov cnn, logm"] + out["cov pca64 timbral/temporal, logm"]
    out["cov pca64 timbral/temporal, raw"] = blocks(big, lambda k: upper(projected(k)))
    out["cov pca32 timbral/temporal, logm"] = blocks(big, lambda k: upper(logm(projected(k, 32))))
    out["cov pca128 timbral/temporal, logm"] = blocks(big, lambda k: upper(logm(projected(k, 128))))
    out["cov pca64 timbral, logm"] = blocks(("timbral",), lambda k: upper(logm(projected(k))))
    out["cov pca64 temporal, logm"] = blocks(("temporal",), lambda k: upper(logm(projected(k))))
    return out


# ---------------------------------------------------------------- evaluation


def load(data: Path, store: Path, cache_path: Path) -> tuple[Q.Backend, np.ndarray, dict[str, np.ndarray]]:
    """The default vectors, labels and cached statistics for the tracks both hold, in one order."""
    tracks = fetch_soundtracks(data)
    game_of = {str(t.path.resolve()): t.game for t in tracks}
    cache = dict(np.load(cache_path))
    fs = FeatureStore(store, readonly=True)
    try:
        run = fs.run("musicnn")
        by_path = {t.path: t.id for t in fs.tracks(run) if t.path in game_of}
        paths = [str(p) for p in cache["paths"] if str(p) in by_path]
        ids = np.array([by_path[p] for p in paths], dtype=np.int64)
        backend = Q.load_backend(fs, run, ids)
    finally:
        fs.close()
    row = {str(p): i for i, p in enumerate(cache["paths"])}
    take = np.array([row[p] for p in paths])
    cache = {k: v[take] for k, v in cache.items()}
    return backend, np.array([game_of[p] for p in paths]), cache


def unit(blocks: list[np.ndarray]) -> np.ndarray:
    """The default preprocessing when this study was run (zscore: per-dimension z-score on the collection, L2 per
    block, concatenated)."""
    return Q.unit_vectors([b.astype(np.float32) for b in blocks], "zscore")


def sim(x: np.ndarray, expand: bool) -> np.ndarray:
    """Cosine similarity, or the library's expanded ranking scores (k = 3, alpha = 1, max rule)."""
    return expanded_scores(x @ x.T, expand_collection(x, EXPAND_K, EXPAND_ALPHA) @ x.T) if expand else x @ x.T


def combined(default: np.ndarray, extra: np.ndarray, n_default: int, n_extra: int, weight: float) -> np.ndarray:
    """Default blocks and extra blocks side by side; ``weight`` = total weight of the extra family relative to
    equal weight per block (1.0 = every block counts the same, as the default does)."""
    w = np.sqrt(weight)  # cosine of concatenated unit blocks = weighted mean of block cosines (squared scale)
    x = np.concatenate([default, w * extra], axis=1)
    return x / np.sqrt(n_default + weight * n_extra)


def evaluate(data: Path, store: Path, cache_path: Path) -> None:
    """Print the table, the paired ratios and the LOGO choices."""
    backend, labels, cache = load(data, store, cache_path)
    print(f"{len(labels)} tracks; extraction {cache['seconds'].mean():.2f} s/track "
          f"(decode + both networks + statistics), {cache['patches'].mean():.1f} patches/track")
    blocks = [backend.tracks[layer] for layer in backend.layers]
    default = unit(blocks)
    n_def = len(blocks)
    check = np.concatenate([backend.tracks[f"{m}.{layer}"] for m in MEMBERS for layer in FRAME_LAYERS], axis=1)
    mine = np.concatenate(families(cache)["mean (recomputed default frame layers)"], axis=1)
    print(f"recomputed frame-layer means vs store: max abs diff {np.abs(check - mine).max():.2e} "
          f"(scale {np.abs(check).mean():.2e})")
    fixed = {"the default (expanded)": sim(default, True), "the default, plain": sim(default, False),
             "msd penultimate": Q.mean_sim([backend], [(0, "msd.penultimate")])}
    scores = {name: Q.per_query(s, labels) for name, s in fixed.items()}
    base, pen = scores["the default (expanded)"].ap, scores["msd penultimate"].ap

    def cell(ap: np.ndarray) -> str:
        lo, hi = Q.boot_ci(ap)
        return f"{ap.mean():.3f} [{lo:.3f}, {hi:.3f}]"

    def ratio(ap: np.ndarray, to: np.ndarray) -> str:
        r, lo, hi = Q.ratio_ci(ap, to)
        return f"x{r:.3f} [{lo:.3f}, {hi:.3f}]"

    print("\n| vectors | mAP | vs the default | vs msd penultimate |\n|---|---|---|---|")
    for name, q in scores.items():
        print(f"| {name} | {cell(q.ap)} | {ratio(q.ap, base)} | {ratio(q.ap, pen)} |")
    candidates: dict[str, np.ndarray] = {"the default (expanded)": fixed["the default (expanded)"]}
    print("\nmAP by statistic (blocks = member x layer); 'default +' adds them as extra layers, each block weighted "
          "w times a default layer; ratios are paired, of the expanded 'default +' column, vs the default (expanded)")
    print("\n| statistic | blocks | dims | alone | alone, expanded | default + (w 1), plain "
          "| default + (w 1), expanded | w 0.5, expanded | w 2, expanded | ratio w 1 | ratio w 2 |\n|" + "---|" * 11)
    for name, fam in families(cache).items():
        extra = unit(fam)
        aps = [Q.per_query(sim(extra, e), labels).ap for e in (False, True)]
        mixed = {}
        for weight in (1.0, 0.5, 2.0):
            x = combined(default, extra, n_def, len(fam), weight)
            mixed[weight] = Q.per_query(candidates.setdefault(f"default + {name} (w {weight:g})", sim(x, True)),
                                        labels).ap
        plain = Q.per_query(sim(combined(default, extra, n_def, len(fam), 1.0), False), labels).ap
        print(f"| {name} | {len(fam)} | {extra.shape[1]} | {cell(aps[0])} | {cell(aps[1])} | {cell(plain)} "
              f"| {cell(mixed[1.0])} | {cell(mixed[0.5])} | {cell(mixed[2.0])} | {ratio(mixed[1.0], base)} "
              f"| {ratio(mixed[2.0], base)} |", flush=True)
    q, picks = Q.logo(candidates, labels)
    print(f"\nLOGO over the default and every expanded 'default + statistic' variant (3 weights): mAP {cell(q.ap)}, "
          f"{ratio(q.ap, base)} vs the default, {ratio(q.ap, pen)} vs msd penultimate")
    print("  picks: " + "; ".join(picks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("extract", "evaluate", "cost"))
    parser.add_argument("--data", type=Path, default=Q.CACHE / "soundtracks")
    parser.add_argument("--store", type=Path, default=Q.CACHE / "soundtracks-store")
    parser.add_argument("--cache", type=Path, default=Q.CACHE / "texture.npz")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.step == "evaluate" and not args.cache.is_file():
        parser.error(f"no statistics at {args.cache}: run `texture.py extract` (with the same --cache) first")
    torch.set_num_threads(args.threads)
    if args.step == "extract":
        extract(args.data, args.cache)
    elif args.step == "cost":
        for name, seconds in stat_seconds({m: MusicnnModel(m.upper()) for m in MEMBERS}).items():
            print(f"40 patches (a 2-minute track), both networks, {args.threads} thread(s): {name} {seconds:.2f} s")
    else:
        evaluate(args.data, args.store, args.cache)


if __name__ == "__main__":
    main()
