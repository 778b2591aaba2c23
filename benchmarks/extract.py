"""Extraction speed in one run: pipeline vs bare model per backend, CPU efficiency, memory, and the TF original.

Measured in one process (both sides of every ratio under the same load, whose average is printed):
  1. fp32 matmul GFLOP/s (2048 x 2048, best of 3), at the start and around each bare pass (the denominator
     of efficiency, taken next to the numerator because the load changes from minute to minute);
  2. per model: the pipeline (mess.extract.pipeline.extract: decoding processes that seek, inference,
     store writes) and the bare model on the same windows already decoded (the floor), so overhead =
     pipeline / bare - 1, over the whole run and after the first embedded file (start-up left out: the
     pipeline's rate from then on against the bare rate); with --repeats N the two passes alternate N times
     and each side's fastest is used (the median of the N paired overheads is printed beside it); time to
     the first embedded file; seconds per 3.5-min track under the default window policy; for musicnn
     models, efficiency = bare audio-s/s / 3 x GFLOP per 3 s patch / matmul GFLOP/s;
     then the --wav-models (default dsp) again on 16-bit WAV copies of the same files, which takes the
     compressed-audio decoder (Vorbis: about 1/300 CPU-s per audio-s here) out of the pipeline's cost;
  3. a 2-hour file (generated FLAC) through the pipeline in a child process: its peak RSS;
  4. the original musicnn (TensorFlow, --tf-python, e.g. /work/tfvenv/bin/python; skipped when missing):
     its extractor() on the same files (whole files, its own decoding) against our pipeline over every window
     of the same files, plus the max abs difference of its penultimate layer (patch 0, the one its extractor
     reports correctly).

With --onnx, the PyTorch port of musicnn-msd (runtime='torch') is also exported to an Essentia-named ONNX
graph and both backends embed the same pre-decoded windows: pipeline and bare timings for
each, the ONNX Runtime execution provider and thread setting, torch's thread count, and the largest
difference between their vectors.

Usage: python benchmarks/extract.py AUDIO_DIR [--models musicnn,dsp] [--limit 6] [--tf-python PATH] [--onnx]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import torch
from torch.utils.flop_counter import FlopCounterMode

from mess.audio.discover import find_audio
from mess.audio.windows import WindowPolicy
from mess.extract.embed import embed_prepared
from mess.extract.pipeline import extract
from mess.extract.prepare import decode_windows, inspect_file
from mess.models.musicnn.model import MusicnnModel, log_mel, patches
from mess.models.registry import load_model
from mess.store import FeatureStore

TYPICAL_TRACK_SECONDS = 210.0  # 3.5 minutes
PATCH_SECONDS = 3.0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_gflops(n: int = 2048, repeats: int = 3) -> float:
    """Best fp32 matmul rate over ``repeats`` products of two n x n matrices."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def gflop_per_patch(model: object) -> float | None:
    """FLOPs (convs and matmuls) of one 187-frame patch through a musicnn-family network (summed over an
    ensemble's members, such as the default ``musicnn``); None for others."""
    members = getattr(model, "members", None)
    if members is not None:
        flops = [gflop_per_patch(m) for m in members]
        return None if None in flops else sum(f for f in flops if f is not None)
    network = getattr(model, "network", None)
    if network is None or not hasattr(network, "patch_vectors"):
        return None
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        network(torch.zeros(1, 187, 96))
    return counter.get_total_flops() / 1e9


def measure_model(name: str, paths: list[Path], policy: WindowPolicy, batch_size: int, repeats: int = 1) -> dict:
    """Pipeline vs bare model for one backend, on the same files, in this process.

    With ``repeats`` > 1 the two passes alternate that many times: each side's fastest pass is reported
    (both sides alike), and the median of the paired overheads beside it.
    """
    t0 = time.perf_counter()
    model = load_model(name)
    load_s = time.perf_counter() - t0
    model.embed(np.zeros((1, model.info.sample_rate * 3), np.float32))  # warm-up (lazy init, allocator)
    sr = model.info.sample_rate
    prepared = [decode_windows(inspect_file(p), sr, policy) for p in paths]
    passes: list[tuple[float, float, list[float]]] = []  # (pipeline s, bare s, [s to the 1st file, its audio-s])
    mms: list[float] = []
    for _ in range(repeats):
        first: list[float] = []  # seconds to the first embedded file, audio seconds embedded by then

        def hook(done: int, audio_seconds: float, first: list[float] = first) -> None:
            if audio_seconds > 0 and not first:
                first.extend((time.perf_counter() - start, audio_seconds))

        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            summary = extract(
                FeatureStore(Path(tmp)), paths, model, policy, batch_size=batch_size, workers=2, on_progress=hook
            )
            pipeline_s = time.perf_counter() - start
        mm = matmul_gflops()  # the machine's rate right around the bare pass: the load changes from minute to minute
        start = time.perf_counter()
        embed_prepared(model, prepared, batch_size)
        bare_s = time.perf_counter() - start
        mms.append((mm + matmul_gflops()) / 2)
        passes.append((pipeline_s, bare_s, first))
    pipeline_s, _, first = min(passes, key=lambda p: p[0])
    bare_s = min(p[1] for p in passes)
    mm = mms[min(range(repeats), key=lambda i: passes[i][1])]
    audio_s = summary.audio_seconds
    row = {
        "model": name,
        "files": len(paths),
        "failed": len(summary.failed),
        "audio_s": audio_s,
        "load_s": load_s,
        "first_file_s": first[0] if first else float("nan"),
        "pipeline_rate": audio_s / pipeline_s,
        "bare_rate": audio_s / bare_s,
        "overhead": pipeline_s / bare_s - 1,
        "median_overhead": float(np.median([p / b - 1 for p, b, _ in passes])),
        "repeats": repeats,
        "steady_overhead": (pipeline_s - first[0]) / (audio_s - first[1]) * (audio_s / bare_s) - 1
        if first and audio_s > first[1] else float("nan"),
        "track_s": policy.analysed_seconds(TYPICAL_TRACK_SECONDS) / (audio_s / pipeline_s),
        "matmul": mm,
    }
    gflop = gflop_per_patch(model)
    if gflop is not None:
        row["gflop_patch"] = gflop
        row["efficiency"] = audio_s / bare_s / PATCH_SECONDS * gflop / mm  # the bare rate
    return row


def wav_copies(paths: list[Path], folder: Path) -> list[Path]:
    """16-bit PCM WAV copies of ``paths`` (same rate and channels): the pipeline without a costly decoder."""
    copies = []
    for i, path in enumerate(paths):
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        copies.append(folder / f"{i:02d}-{path.stem}.wav")
        sf.write(copies[-1], data, rate, subtype="PCM_16")
    return copies


def long_file_rss(folder: Path, model: str, hours: float = 2.0) -> dict:
    """Write a ``hours``-long 16 kHz FLAC, run the pipeline on it in a child process, return its peak RSS."""
    path = folder / "long.flac"
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=16000, channels=1, subtype="PCM_16") as f:
        t = np.arange(60 * 16000) / 16000
        for minute in range(int(hours * 60)):
            f.write(
                (0.3 * np.sin(2 * np.pi * (110 + 10 * (minute % 24)) * t) + 0.02 * rng.standard_normal(t.size)).astype(
                    np.float32
                )
            )
    script = textwrap.dedent(f"""
        import json, threading, time
        from pathlib import Path
        import psutil
        from mess.audio.windows import WindowPolicy
        from mess.extract.pipeline import extract
        from mess.models.registry import load_model
        from mess.store import FeatureStore
        def hwm(pid):  # VmHWM: peak RSS since exec (getrusage's children figure includes the forked parent image)
            return int(Path(f"/proc/{{pid}}/status").read_text().split("VmHWM:")[1].split()[0]) / 1024
        def pss(pid):  # proportional set size: pages shared with this process (libraries) counted by share
            return int(Path(f"/proc/{{pid}}/smaps_rollup").read_text().split("Pss:")[1].split()[0]) / 1024
        decoder_peak = {{"rss": 0.0, "pss": 0.0}}
        def watch():  # the decoding processes' memory, sampled every 10 ms while they live
            while True:
                for child in psutil.Process().children(recursive=True):  # forked by the decoders' zygote
                    try:
                        decoder_peak["rss"] = max(decoder_peak["rss"], hwm(child.pid))
                        decoder_peak["pss"] = max(decoder_peak["pss"], pss(child.pid))
                    except (OSError, IndexError):
                        pass
                time.sleep(0.01)
        threading.Thread(target=watch, daemon=True).start()
        model = load_model({model!r})
        start = time.perf_counter()
        s = extract(FeatureStore(Path({str(folder / "store")!r})), [Path({str(path)!r})], model, WindowPolicy())
        print(json.dumps({{"done": s.done, "audio_s": s.audio_seconds, "seconds": time.perf_counter() - start,
                          "rss_mb": hwm("self"), "decoder_rss_mb": decoder_peak["rss"],
                          "decoder_pss_mb": decoder_peak["pss"]}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return {"hours": hours, **json.loads(out.stdout.strip().splitlines()[-1])}


_TF_SCRIPT = """
import json, sys, time
import numpy as np
from musicnn.extractor import extractor
out = {}
for path in sys.argv[1:]:
    start = time.perf_counter()
    _, _, feats = extractor(path, model="MSD_musicnn", extract_features=True)
    out[path] = {"seconds": time.perf_counter() - start, "penultimate0": np.asarray(feats["penultimate"])[0].tolist()}
print("RESULT " + json.dumps(out))
"""


F16_OVERFLOW_LOG_MEL = float(np.log10(65504.0 + 1))  # log-mel above this overflowed float16 in musicnn's formula


def race_tensorflow(tf_python: Path, paths: list[Path], policy: WindowPolicy, batch_size: int) -> dict | None:
    """The original musicnn (MSD) on the same files vs our pipeline; None where TF is not installed."""
    if not tf_python.is_file():
        return None
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""}
    probe = subprocess.run(
        [str(tf_python), "-c", "import tensorflow, musicnn.extractor"], env=env, capture_output=True, text=True
    )
    if probe.returncode != 0:
        return None
    warm = subprocess.run(
        [str(tf_python), "-W", "ignore", "-c", _TF_SCRIPT, str(paths[0])], env=env, capture_output=True, text=True
    )  # first run pays one-off caches; not timed
    if warm.returncode != 0:
        return None
    quiet = Path(tempfile.mkdtemp()) / "quiet.wav"  # real music at -20 dB stays inside TF's float16 input range
    audio, _ = librosa.load(paths[0], sr=16000)
    sf.write(quiet, 0.1 * audio, 16000, subtype="FLOAT")
    start = time.perf_counter()
    done = subprocess.run(
        [str(tf_python), "-W", "ignore", "-c", _TF_SCRIPT, *map(str, paths), str(quiet)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    tf = json.loads(done.stdout.split("RESULT ", 1)[1])
    tf_wall = time.perf_counter() - start - tf[str(quiet)]["seconds"]
    durations = [sf.info(str(p)).duration for p in paths]
    file_s = sum(durations)
    # TF's extractor reads every file whole: ours analyses every window too (not just the default policy's)
    whole = WindowPolicy(policy.window_seconds, max_windows=max(1, math.ceil(max(durations) / policy.window_seconds)))
    model = load_model("musicnn-msd")
    assert isinstance(model, MusicnnModel)  # its network is compared below
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        extract(FeatureStore(Path(tmp)), paths, model, whole, batch_size=batch_size, workers=2)
        ours_s = time.perf_counter() - start
    diffs, nonfinite = [], 0
    for path in [*paths, quiet]:
        ref = np.asarray(tf[str(path)]["penultimate0"], dtype=np.float32)
        audio, _ = librosa.load(path, sr=16000)  # musicnn's own input path
        first = patches(log_mel(audio[None]))[0][:1]
        # musicnn computes 10000 x mel in float16: where that overflows its input is inf and its output
        # meaningless (not always non-finite: two flare tracks gave the same finite vector); ours stays finite
        if not np.isfinite(ref).all() or (first > F16_OVERFLOW_LOG_MEL).any():
            nonfinite += 1
            continue
        with torch.inference_mode():
            ours = model.network(torch.from_numpy(first))["penultimate"][0]
        diffs.append(float(np.abs(ours.numpy() - ref).max()))
    return {
        "files": len(paths),
        "file_s": file_s,
        "tf_wall_s": tf_wall,
        "compared": len(diffs),
        "tf_rate": file_s / tf_wall,
        "ours_s": ours_s,
        "ours_rate": file_s / ours_s,
        "ratio": tf_wall / ours_s,
        "penultimate_max_diff": max(diffs) if diffs else float("nan"),
        "tf_nonfinite_files": nonfinite,
    }


def _percent(ratio: float) -> str:
    """'+7.6%', or 'n/a' where nothing was measured (the overhead after the first file of a one-file run)."""
    return "n/a" if np.isnan(ratio) else f"{100 * ratio:+.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("audio", type=Path)
    parser.add_argument("--models", "--model",
                        default="musicnn,musicnn-msd,musicnn-mtt,musicnn-vgg-msd,musicnn-vgg-mtt,dsp")
    parser.add_argument("--limit", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1,
                        help="alternate the pipeline and bare passes N times; each side's fastest pass is reported")
    parser.add_argument("--tf-python", type=Path, default=Path("/work/tfvenv/bin/python"))
    parser.add_argument("--long-hours", type=float, default=2.0, help="0 skips the long-file check")
    parser.add_argument("--wav-models", default="dsp",
                        help="models measured again on 16-bit WAV copies of the same files, where decoding is cheap "
                             "('' skips)")
    parser.add_argument("--onnx", action="store_true", help="also time the ONNX Runtime backend (musicnn-msd)")
    parser.add_argument("--onnx-threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    args = parser.parse_args()

    paths = find_audio([args.audio])[: args.limit]
    if not paths:
        parser.error(f"no audio files in {args.audio}" + (" (--limit is not positive)" if args.limit < 1 else ""))
    policy = WindowPolicy()
    load = os.getloadavg()
    mm = matmul_gflops()
    print(
        f"{len(paths)} files from {args.audio}; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        f"on {os.cpu_count()} cores; torch threads {torch.get_num_threads()}; fp32 matmul {mm:.1f} GFLOP/s"
    )
    rows = [measure_model(name, paths, policy, args.batch_size, args.repeats) for name in args.models.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        copies = wav_copies(paths, Path(tmp))
        for name in filter(None, args.wav_models.split(",")):
            row = measure_model(name, copies, policy, args.batch_size, args.repeats)
            rows.append({**row, "model": f"{name} (WAV)"})
    header = (
        f"{'model':18s}{'audio-s':>8s}{'pipeline':>10s}{'bare':>8s}{'overhead':>9s}{'median':>8s}{'after 1st':>10s}"
        f"{'load s':>8s}"
        f"{'1st file s':>11s}{'s/3.5min':>9s}{'matmul':>8s}{'GFLOP/p':>8s}{'effic.':>7s}"
    )
    print(
        header + f"   (rates in audio-s/s, each side's fastest of {args.repeats} alternated passes; median: of the "
        "paired overheads; matmul GFLOP/s around the fastest bare pass; efficiency = bare / 3 s x GFLOP per patch / "
        "matmul)"
    )
    for r in rows:
        print(
            f"{r['model']:18s}{r['audio_s']:8.0f}{r['pipeline_rate']:10.1f}{r['bare_rate']:8.1f}"
            f" {_percent(r['overhead']):>8s} {_percent(r['median_overhead']):>7s} {_percent(r['steady_overhead']):>9s}"
            f"{r['load_s']:8.2f}{r['first_file_s']:11.2f}{r['track_s']:9.2f}"
            f"{r['matmul']:8.1f}" + (f"{r['gflop_patch']:8.3f}{r['efficiency']:7.2f}" if "efficiency" in r else "")
        )
    if args.long_hours > 0:
        with tempfile.TemporaryDirectory() as tmp:
            long = long_file_rss(Path(tmp), "musicnn-msd", args.long_hours)
        print(
            f"{long['hours']:g}-hour FLAC through the musicnn-msd pipeline (child process): {long['done']} file, "
            f"{long['audio_s']:.0f} audio-s analysed in {long['seconds']:.1f} s, peak RSS {long['rss_mb']:.0f} MB "
            f"+ its decoding process {long['decoder_rss_mb']:.0f} MB RSS, {long['decoder_pss_mb']:.0f} MB "
            f"not shared with it (PSS): {long['rss_mb'] + long['decoder_pss_mb']:.0f} MB together"
        )
    race = race_tensorflow(args.tf_python, paths, policy, args.batch_size)
    if race is None:
        print(f"TensorFlow musicnn race skipped: no working TensorFlow + musicnn at {args.tf_python}")
    else:
        print(
            f"original musicnn (TF, MSD_musicnn, extractor() per file) on the same {race['files']} files "
            f"({race['file_s']:.0f} s of audio): {race['tf_rate']:.1f} file-s/s ({race['tf_wall_s']:.1f} s) vs ours "
            f"{race['ours_rate']:.1f} ({race['ours_s']:.1f} s): ours {race['ratio']:.2f}x; penultimate max abs "
            f"diff {race['penultimate_max_diff']:.2e} on {race['compared']} files incl. a -20 dB copy of the first "
            f"({race['tf_nonfinite_files']} more left out: musicnn's float16 log-mel input overflowed to inf)"
        )
    if args.onnx:
        native = MusicnnModel("MSD", runtime="torch")  # the PyTorch port (musicnn-msd itself runs on ONNX Runtime)
        prepared = [
            decode_windows(inspect_file(p), native.info.sample_rate, policy) for p in paths
        ]
        _compare_onnx(native, paths, prepared, policy, args)
    print(f"peak RSS of this process: {_peak_rss_mb():.0f} MB; load average now {os.getloadavg()[0]:.1f}")


def _compare_onnx(native, paths, prepared, policy, args) -> None:
    """Native musicnn against its ONNX export run by the ONNX backend, on the same windows, in this run."""
    import torch

    from mess.models.essentia import OnnxModel
    from mess.models.essentia.export import export_musicnn

    with tempfile.TemporaryDirectory() as tmp:
        onnx = OnnxModel(
            export_musicnn(native, Path(tmp) / f"{native.dataset.lower()}-musicnn-1.onnx"),
            preset="essentia-musicnn-msd",
            threads=args.onnx_threads,
        )
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
        ours = dict(zip(onnx.info.layer_names, onnx.embed(windows), strict=False))
        diff = max(
            float(np.abs(ours[n] - v).max())
            for n, v in zip(native.info.layer_names, native.embed(windows), strict=False)
            if n in ours
        )
    audio_s = sum(float(p.audio.size) for p in prepared) / native.info.sample_rate
    print(
        f"ONNX Runtime: providers {onnx.providers}, intra-op threads {args.onnx_threads or 'default'}; "
        f"torch threads {torch.get_num_threads()}; {os.cpu_count()} CPUs"
    )
    print(f"{'':16s}{'wall s':>8s}{'windows-s/s':>13s}")
    for key, secs in times.items():
        print(f"{key[0] + ' ' + key[1]:16s}{secs:8.2f}{audio_s / secs:13.1f}")
    print(
        f"ONNX / native bare-model speed: {times['native', 'bare'] / times['onnx', 'bare']:.2f}x; "
        f"largest vector difference {diff:.1e}"
    )


if __name__ == "__main__":
    main()
