"""`--engine ray` vs `--engine local` on the same files, plus the CPU decode rate that feeds a GPU.

In one run, on the same files and model:
  1. local: mess.extract.pipeline.extract (threaded decode, in-process model);
  2. ray: mess.scale.ray_extract.extract_ray on a local Ray cluster of --cpus CPUs
     (its start-up is reported apart), then a rerun with nothing left to embed
     (the catalogue pass alone: the cost of resuming);
  3. the largest difference between the two stores' vectors (0 = identical);
  4. decode + resample + window per file on one core at 24 kHz (MERT's rate): the
     CPU work each track costs before any GPU sees it.

Usage: python benchmarks/ray_extract.py AUDIO_DIR [--model dsp] [--limit 32] [--batch-size 4] [--cpus 2]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import ray

from mess.audio.discover import find_audio
from mess.audio.windows import WindowPolicy
from mess.extract.pipeline import extract
from mess.extract.prepare import decode_windows, inspect_file
from mess.models.registry import load_model
from mess.scale.ray_extract import extract_ray
from mess.store import FeatureStore


def vectors_by_path(store: FeatureStore, model: str) -> dict[str, list[np.ndarray]]:
    """path -> per layer, its track vector then its segment vectors."""
    run = store.run(model)
    paths = {t.id: t.path for t in store.tracks(run)}
    out: dict[str, list[np.ndarray]] = defaultdict(list)
    for layer in range(len(run.layer_names)):
        ids, mat = store.layer_matrix(run, layer)
        seg_ids, _, segs = store.segment_matrix(run, layer)
        for tid, row in zip(ids, mat, strict=False):
            out[paths[tid]] += [row, segs[seg_ids == tid]]
    return out


def max_difference(a: dict[str, list[np.ndarray]], b: dict[str, list[np.ndarray]]) -> float:
    """Largest |difference| between two stores' vectors (both must hold the same paths)."""
    assert a.keys() == b.keys(), "the two engines embedded different files"
    return max(float(np.abs(x - y).max()) for path in a for x, y in zip(a[path], b[path], strict=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("audio", type=Path)
    parser.add_argument("--model", default="dsp")
    parser.add_argument("--limit", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    paths = find_audio([args.audio])[: args.limit]
    policy = WindowPolicy(window_seconds=args.window)
    model = load_model(args.model)

    with tempfile.TemporaryDirectory() as tmp:
        local_store, ray_store = FeatureStore(Path(tmp) / "local"), FeatureStore(Path(tmp) / "ray")
        local = extract(local_store, paths, model, policy, batch_size=args.batch_size, workers=args.cpus)
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False)  # a new cluster, never one found
        start_s = time.perf_counter() - t0
        remote = extract_ray(ray_store, paths, args.model, policy, batch_size=args.batch_size)
        rerun = extract_ray(ray_store, paths, args.model, policy, batch_size=args.batch_size)
        ray.shutdown()
        diff = max_difference(vectors_by_path(local_store, model.info.name),
                              vectors_by_path(ray_store, model.info.name))

    t0 = time.perf_counter()
    decoded = [decode_windows(inspect_file(p), 24000, policy) for p in paths]
    decode_s = time.perf_counter() - t0
    audio_s = sum(d.audio.size for d in decoded) / 24000

    print(f"model {model.info.name}, {len(paths)} tracks, {local.audio_seconds:.0f} audio-s embedded, "
          f"batch {args.batch_size}, {args.cpus} CPUs, failed local/ray {len(local.failed)}/{len(remote.failed)}")
    print(f"{'':22s}{'wall s':>8s}{'audio-s/s':>11s}")
    print(f"{'local':22s}{local.wall_seconds:8.2f}{local.realtime_factor:11.1f}")
    print(f"{'ray (cluster up)':22s}{remote.wall_seconds:8.2f}{remote.realtime_factor:11.1f}")
    print(f"{'ray rerun (resume)':22s}{rerun.wall_seconds:8.2f}{'-':>11s}   {rerun.skipped} skipped")
    print(f"ray / local wall: {remote.wall_seconds / local.wall_seconds:.2f}x (+ {start_s:.1f} s to start the cluster)")
    print(f"largest vector difference ray vs local: {diff:g}")
    print(f"decode + resample to 24 kHz + window, one core: {decode_s / len(paths) * 1e3:.0f} ms per track, "
          f"{audio_s / decode_s:.0f} audio-s/s")
    print(f"peak RSS (driver): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
