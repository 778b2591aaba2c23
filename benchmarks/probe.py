"""Probe speed: all layers x all targets for tracks of a 13 x 768 model, vs. sklearn on the same work.

    python benchmarks/probe.py [--tracks 300] [--layers 13] [--dim 768] [--baseline-threads 1]

Synthetic layer vectors with real-shaped targets: 22 targets driven by a few latent
factors with target-specific noise (from almost noise-free to pure noise), layers
mixing the factors in different proportions. Prints wall time of the full probe
(ours: one eigendecomposition per layer and fold, exact LOO alpha per target), of
sklearn's multi-output RidgeCV(alpha_per_target=True) per layer and fold, and of the
naive per-target cross_val_score loop, each run once over every layer and target (no
extrapolation), the speed-up ratios, whether the scores agree, and peak RSS. Ours runs
each layer with one BLAS thread; the baselines get ``--baseline-threads`` (1 by default:
on busy shared cores sklearn with 2 BLAS threads was several times slower than with 1).
Also measures audio target extraction throughput, 1 vs. 2 worker processes.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from mess.audio.windows import WindowPolicy
from mess.probing.probes import ALPHAS, Folds, fold_scores, make_folds, probe_layers
from mess.probing.target_cache import track_targets
from mess.probing.targets import SAMPLE_RATE, TARGET_NAMES
from mess.store import Track


def synthetic(n: int, n_layers: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    factors = rng.standard_normal((n, 8))
    y = factors @ rng.standard_normal((8, len(TARGET_NAMES))) * np.linspace(2.0, 0.0, len(TARGET_NAMES))
    y += rng.standard_normal(y.shape)
    layers = np.empty((n, n_layers, dim), np.float32)
    for i in range(n_layers):
        weight = np.exp(-((np.arange(8) - 8 * i / n_layers) ** 2) / 8)[:, None]
        layers[:, i] = factors @ (weight * rng.standard_normal((8, dim))) + rng.standard_normal((n, dim))
    albums = [f"album{i // 10}" for i in range(n)]
    return layers, y, albums


def naive_seconds(layers: np.ndarray, y: np.ndarray, folds: Folds, n_layers: int, n_targets: int) -> float:
    """Per layer, per target: cross_val_score over a StandardScaler + RidgeCV pipeline."""
    started = time.perf_counter()
    for i in range(n_layers):
        for t in range(n_targets):
            model = make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS))
            cross_val_score(model, layers[:, i], y[:, t], cv=folds.splits, scoring="r2")
    return time.perf_counter() - started


def sklearn_multi_seconds(layers: np.ndarray, y: np.ndarray, folds: Folds, n_layers: int) -> tuple[float, np.ndarray]:
    """Per layer and fold: one multi-output RidgeCV(alpha_per_target=True); returns time and fold R^2 of layer 0."""
    started = time.perf_counter()
    scores = []
    for i in range(n_layers):
        for train, test in folds.splits:
            model = make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS, alpha_per_target=True))
            pred = model.fit(layers[train, i], y[train]).predict(layers[test, i])
            if i == 0:
                scores.append(1 - ((pred - y[test]) ** 2).mean(axis=0) / y.var(axis=0))
    return time.perf_counter() - started, np.mean(scores, axis=0)


def target_throughput(n_tracks: int, seconds: float, workers: int) -> float:
    """Audio seconds of targets computed per wall second, on synthetic harmonic tracks."""
    rng = np.random.default_rng(1)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    with tempfile.TemporaryDirectory() as tmp:
        tracks = []
        for i in range(n_tracks):
            notes = 440 * 2 ** (rng.integers(-12, 12, size=int(seconds * 2)) / 12)
            f0 = np.repeat(notes, t.size // notes.size + 1)[: t.size]
            y = np.asarray(sum(np.sin(2 * np.pi * k * np.cumsum(f0) / SAMPLE_RATE) / k for k in range(1, 6)))
            path = Path(tmp) / f"{i}.wav"
            sf.write(path, (0.2 * y).astype(np.float32), SAMPLE_RATE)
            tracks.append(Track(i, str(path), f"h{i}", seconds, None, None, None, None, None))
        started = time.perf_counter()
        track_targets(Path(tmp), tracks, WindowPolicy(), workers=workers)
        return n_tracks * seconds / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=300)
    parser.add_argument("--layers", type=int, default=13)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--baseline-threads", type=int, default=1, help="BLAS threads for the sklearn baselines "
                        "(0: the library's default)")
    parser.add_argument("--audio-tracks", type=int, default=16, help="tracks for the target throughput test")
    args = parser.parse_args()

    layers, y, albums = synthetic(args.tracks, args.layers, args.dim)
    folds = make_folds(args.tracks, [("album", albums)], n_folds=5)
    n_targets = len(TARGET_NAMES)
    print(f"{args.tracks} tracks x {args.layers} layers x {args.dim} dims x {n_targets} targets, {folds.scheme}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; sklearn BLAS threads: "
          f"{args.baseline_threads or 'default'}")

    started = time.perf_counter()
    def layer(i: int) -> Callable[[], np.ndarray]:
        return lambda: layers[:, i]

    ours = probe_layers([(str(i), layer(i)) for i in range(args.layers)], y, TARGET_NAMES, folds)
    ours_s = time.perf_counter() - started
    print(f"ours (all layers, all targets):            {ours_s:8.1f} s")

    with threadpool_limits(args.baseline_threads or None):
        multi_s, multi_r2 = sklearn_multi_seconds(layers, y, folds, args.layers)
        print(f"sklearn RidgeCV multi-output, all layers:  {multi_s:8.1f} s")
        naive_s = naive_seconds(layers, y, folds, args.layers, n_targets)
    print(f"naive per-target loop, all layers/targets: {naive_s:8.1f} s")
    # sklearn's RidgeCV picks penalties by leave-one-out; ours leaves whole albums out (more work, no
    # album-mates vouching for each other). Its leave-one-out path must give sklearn's numbers exactly.
    loo = fold_scores(layers[:, 0], y, replace(folds, groups=None)).mean(axis=0)
    agree = np.nanmax(np.abs(loo - multi_r2))
    print(f"speed-up vs sklearn multi-output: {multi_s / ours_s:.1f}x; vs naive loop: {naive_s / ours_s:.1f}x; "
          f"max |R^2 difference| of our leave-one-out path vs sklearn (layer 0): {agree:.2e}")
    print(f"best layer R^2 range: {np.nanmax(ours.r2, axis=0).min():.2f} .. {np.nanmax(ours.r2):.2f}")
    print(f"peak RSS (probing): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")

    if args.audio_tracks:
        one = target_throughput(args.audio_tracks, 30.0, workers=1)
        cold = target_throughput(args.audio_tracks, 30.0, workers=2)
        warm = target_throughput(args.audio_tracks, 30.0, workers=2)  # worker processes already started
        print(f"audio targets, {args.audio_tracks} x 30 s tracks: {one:.0f} audio-s/s with 1 process; with 2: "
              f"{cold:.0f} (incl. worker start-up), {warm:.0f} warm ({warm / one:.2f}x)")
    print(f"load average at the end (1/5/15 min): {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
