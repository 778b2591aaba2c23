"""Benchmark `mess fuse train` on 5,000 synthetic but structured tracks x 13 layers x 768 (CPU).

The vectors mimic a MERT-like model: every layer encodes the artist through a basis
that drifts from layer to layer (as in a residual stream), most strongly in the middle
layers; early and late layers carry a strong nuisance factor (recording groups that cut
across artists) and every layer has noise and a common offset. The data go through a
real feature store (float16), then the fusion network is trained with its default
configuration and compared on held-out artists with the best single layer and the mean
of all layers.

    python benchmarks/fusion.py [--tracks 5000] [--threads 1]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mess.audio.windows import WindowPolicy
from mess.extract.runs import run_key
from mess.fusion.data import load_layers
from mess.fusion.report import compare
from mess.fusion.train import FusionConfig, train_fusion
from mess.models.base import ModelInfo
from mess.store import FeatureStore, TrackVectors

LIMIT_S = 600.0


def synthetic(n_tracks: int, n_layers: int, dim: int, n_artists: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(artist per track, float32 [n, n_layers, dim]) with layer-dependent artist signal and nuisance."""
    rng = np.random.default_rng(seed)
    latent, groups = 32, 40
    artist = rng.integers(0, n_artists, n_tracks)
    z = rng.normal(size=(n_artists, latent))[artist] + 0.8 * rng.normal(size=(n_tracks, latent))
    g = rng.normal(size=(groups, latent))[rng.integers(0, groups, n_tracks)] + 0.5 * rng.normal(size=(n_tracks, latent))
    depth = np.arange(n_layers)
    signal = 0.25 + 1.0 * np.exp(-(((depth - 0.55 * n_layers) / 2.5) ** 2))
    nuisance = 1.6 * np.exp(-((depth / 3.0) ** 2)) + 0.9 * np.exp(-(((depth - n_layers + 1) / 2.0) ** 2))
    x = np.empty((n_tracks, n_layers, dim), dtype=np.float32)
    a, b = rng.normal(size=(2, latent, dim)) / np.sqrt(latent)
    for layer in depth:  # like a residual stream, each layer's basis drifts a little from the last
        a = 0.95 * a + 0.31 * rng.normal(size=(latent, dim)) / np.sqrt(latent)
        b = 0.95 * b + 0.31 * rng.normal(size=(latent, dim)) / np.sqrt(latent)
        x[:, layer] = (signal[layer] * z @ a + nuisance[layer] * g @ b + 4.0 * rng.normal(size=(n_tracks, dim))
                       + 3.0 * rng.normal(size=dim))
    return artist, x


def fill_store(root: Path, artist: np.ndarray, x: np.ndarray) -> None:
    """Write the synthetic tracks into a feature store as one run of a model called 'synthetic'."""
    n_layers, dim = x.shape[1:]
    info = ModelInfo("synthetic", "bench-1", 24000, tuple(f"layer{i}" for i in range(n_layers)), (dim,) * n_layers)
    store = FeatureStore(root)
    run = store.ensure_run(run_key(info, WindowPolicy()))
    for start in range(0, len(x), 500):
        items = []
        for i in range(start, min(start + 500, len(x))):
            digest = hashlib.sha1(str(i).encode()).hexdigest()
            store.upsert_track(Path(f"/synthetic/{i:05d}.flac"), digest, 0, 0.0, {"duration": 30.0},
                               {"artist": f"artist{artist[i]:03d}", "album": None, "title": f"track {i}",
                                "genre": None, "composer": None})
            items.append(TrackVectors(digest, list(x[i]), [v[None] for v in x[i]], [0.0]))
        store.write_vectors(run, items)
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=5000)
    parser.add_argument("--layers", type=int, default=13)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--artists", type=int, default=250)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.dim < FusionConfig().fusion_dim:
        parser.error(f"--dim {args.dim}: the default fusion network needs layers of at least "
                     f"{FusionConfig().fusion_dim} dims")
    torch.set_num_threads(args.threads)

    artist, x = synthetic(args.tracks, args.layers, args.dim, args.artists, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        fill_store(Path(tmp), artist, x)
        del x
        store = FeatureStore(Path(tmp), readonly=True)
        t0 = time.perf_counter()
        data = load_layers(store, store.run("synthetic"))
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = train_fusion(data, FusionConfig(label="artist", seed=args.seed))
        t_train = time.perf_counter() - t0
        report = compare(result, data)
        store.close()

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fused, mean, best = report.score("fused"), report.score("all-layers"), report.score("best-layer")
    print(f"data: {args.tracks} tracks x {args.layers} layers x {args.dim}, {args.artists} artists; "
          f"torch threads {args.threads}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"load from store: {t_load:.1f} s; train: {t_train:.1f} s ({t_train / LIMIT_S:.2f} of the 600 s budget), "
          f"{len(result.history) - 1} epochs, best epoch {result.best_epoch}")
    print(f"held-out: {report.n_test_tracks} tracks of {report.n_test_labels} artists never trained on")
    for m in report.methods:
        print(f"  {m.method:12s} P@{report.k} {m.precision:.3f}  mAP {m.map:.3f}  "
              f"nDCG@{report.k} {m.ndcg:.3f}  ({m.detail})")
    print(f"ratio nDCG fused / mean of layers: {fused.ndcg / mean.ndcg:.3f}; fused / best layer: "
          f"{fused.ndcg / best.ndcg:.3f}; {report.verdict}")
    print("learned weights: " + " ".join(f"{w:.2f}" for w in report.layer_weights.values()))
    print(f"peak RSS: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
