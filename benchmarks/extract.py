"""End-to-end `mess extract` throughput against the bare model and a naive baseline.

Three measurements on the same files, in one run:
  1. pipeline: mess.extract.pipeline.extract (threaded decode overlapped with inference, store writes);
  2. bare model: model.embed on the same windows, already decoded and cut (the floor);
  3. naive: librosa.load (+ its resampler) per file, then one window per forward pass, sequentially.

With --onnx (and --model musicnn-msd or musicnn-mtt), the native musicnn is also exported to an
Essentia-named ONNX graph (needs the onnx package, test extra) and both backends embed the same
pre-decoded windows: pipeline and bare timings for each, the ONNX Runtime execution provider and
thread setting, torch's thread count, and the largest difference between their vectors.

Usage: python benchmarks/extract.py AUDIO_DIR [--model musicnn-msd] [--limit 24] [--batch-size 4] [--onnx]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import librosa
import numpy as np

from mess.audio.discover import find_audio
from mess.audio.windows import WindowPolicy
from mess.extract.embed import embed_prepared
from mess.extract.pipeline import extract
from mess.extract.prepare import decode_windows, inspect_file
from mess.models.registry import load_model
from mess.store import FeatureStore


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("audio", type=Path)
    parser.add_argument("--model", default="musicnn-msd")
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--onnx", action="store_true", help="also time the ONNX Runtime backend (musicnn only)")
    parser.add_argument("--onnx-threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    args = parser.parse_args()

    paths = find_audio([args.audio])[: args.limit]
    model = load_model(args.model)
    policy = WindowPolicy(window_seconds=args.window)
    sr = model.info.sample_rate
    model.embed(np.zeros((1, sr * 3), np.float32))  # warm-up (lazy init, allocator)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = extract(FeatureStore(Path(tmp)), paths, model, policy, batch_size=args.batch_size, workers=2)
        pipeline_s = time.perf_counter() - t0
    audio_s = summary.audio_seconds

    prepared = [decode_windows(inspect_file(p), sr, policy, model.info.min_samples) for p in paths]
    t0 = time.perf_counter()
    embed_prepared(model, prepared, args.batch_size)
    bare_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    for path in paths:
        y, _ = librosa.load(path, sr=sr, mono=True)
        _, windows = policy.cut(y, sr)
        for w in windows:
            model.embed(w[None])
    naive_s = time.perf_counter() - t0

    print(f"model {model.info.name}, {len(paths)} tracks, {audio_s:.0f} audio-s, batch {args.batch_size}, "
          f"window {args.window:g} s, failed {len(summary.failed)}")
    print(f"{'':12s}{'wall s':>8s}{'audio-s/s':>11s}")
    for name, secs in (("pipeline", pipeline_s), ("bare model", bare_s), ("naive", naive_s)):
        print(f"{name:12s}{secs:8.2f}{audio_s / secs:11.1f}")
    print(f"pipeline overhead over bare model: {100 * (pipeline_s / bare_s - 1):+.1f}%")
    print(f"speed-up over naive sequential: {naive_s / pipeline_s:.2f}x")
    if args.onnx:
        _compare_onnx(model, paths, prepared, policy, args)
    print(f"peak RSS: {_peak_rss_mb():.0f} MB")


def _compare_onnx(native, paths, prepared, policy, args) -> None:
    """Native musicnn against its ONNX export run by the ONNX backend, on the same windows, in this run."""
    import torch

    from mess.models.essentia import OnnxModel
    from mess.models.essentia.export import export_musicnn

    with tempfile.TemporaryDirectory() as tmp:
        onnx = OnnxModel(export_musicnn(native, Path(tmp) / f"{native.dataset.lower()}-musicnn-1.onnx"),
                         preset="essentia-musicnn-msd", threads=args.onnx_threads)
        onnx.embed(np.zeros((1, native.info.sample_rate * 3), np.float32))
        times = {}
        for name, m in (("native", native), ("onnx", onnx)):
            with tempfile.TemporaryDirectory() as store:
                t0 = time.perf_counter()
                extract(FeatureStore(Path(store)), paths, m, policy, batch_size=args.batch_size, workers=2)
                times[name, "pipeline"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            embed_prepared(m, prepared, args.batch_size)
            times[name, "bare"] = time.perf_counter() - t0
        windows = prepared[0].audio[: args.batch_size]
        ours = dict(zip(onnx.info.layer_names, onnx.embed(windows)))
        diff = max(float(np.abs(ours[n] - v).max()) for n, v in zip(native.info.layer_names, native.embed(windows))
                   if n in ours)
    audio_s = sum(float(p.audio.size) for p in prepared) / native.info.sample_rate
    print(f"ONNX Runtime: providers {onnx.providers}, intra-op threads {args.onnx_threads or 'default'}; "
          f"torch threads {torch.get_num_threads()}; {os.cpu_count()} CPUs")
    print(f"{'':16s}{'wall s':>8s}{'windows-s/s':>13s}")
    for key, secs in times.items():
        print(f"{key[0] + ' ' + key[1]:16s}{secs:8.2f}{audio_s / secs:13.1f}")
    print(f"ONNX / native bare-model speed: {times['native', 'bare'] / times['onnx', 'bare']:.2f}x; "
          f"largest vector difference {diff:.1e}")


if __name__ == "__main__":
    main()
