"""Study (issue 17): basic-pitch's note, onset and contour posteriorgrams over the default's windows, cached.

Spotify's basic-pitch (Apache-2.0) ships a small ONNX transcription network in its wheel. The wheel is unpacked,
never installed: ``pip download basic-pitch==0.4.0 --no-deps -d /tmp/wt2bp`` then unzip it, and pass
``--onnx .../basic_pitch/saved_models/icassp_2022/nmp.onnx``. Each track's windows are mess's own (inspect_file,
decode_windows with ``WindowPolicy()``: at most four 30 s windows, evenly spread), decoded at basic-pitch's 22,050 Hz;
each window is framed as basic-pitch's ``run_inference`` frames a file (2 s inputs overlapping by 30 frames, the
first half-overlap zero-padded, the overlaps trimmed). The posteriorgrams (86 frames/s; note 88, onset 88, contour
264 bins) are cached as uint8 (x255) per track, with the window starts. Prints the network's CPU time per analysed
second (one ONNX Runtime thread; the machine is shared, so it is a figure measured under load).

    nice -n 5 python benchmarks/studies/basic_pitch_posteriors.py --data DIR --onnx nmp.onnx --cache /tmp/wt2/bp
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from mess.audio.windows import WindowPolicy
from mess.extract.prepare import decode_windows, inspect_file

RATE = 22050  # basic_pitch.constants.AUDIO_SAMPLE_RATE
HOP = 256  # FFT_HOP
FPS = RATE // HOP  # ANNOTATIONS_FPS (86)
INPUT = RATE * 2 - HOP  # AUDIO_N_SAMPLES (43,844)
OVERLAP_FRAMES = 30  # run_inference's n_overlapping_frames
OUTPUTS = {"note": "StatefulPartitionedCall:1", "onset": "StatefulPartitionedCall:2",
           "contour": "StatefulPartitionedCall:0"}


def session(path: Path) -> ort.InferenceSession:
    """The wheel's network on one CPU thread."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def posteriorgrams(net: ort.InferenceSession, audio: np.ndarray) -> dict[str, np.ndarray]:
    """One mono window at 22,050 Hz -> note [T, 88], onset [T, 88], contour [T, 264], as run_inference computes
    them for a file holding just this window (T = floor(len * 86 / 22050))."""
    overlap = OVERLAP_FRAMES * HOP
    hop = INPUT - overlap
    padded = np.concatenate([np.zeros(overlap // 2, np.float32), audio.astype(np.float32)])
    chunks = [padded[i:i + INPUT] for i in range(0, len(padded), hop)]
    batch = np.stack([np.pad(c, (0, INPUT - len(c))) for c in chunks])[:, :, None]
    out = net.run(list(OUTPUTS.values()), {"serving_default_input_2:0": batch})
    frames = int(np.floor(len(audio) * (FPS / RATE)))
    half = OVERLAP_FRAMES // 2
    return {name: o[:, half:-half, :].reshape(-1, o.shape[2])[:frames] for name, o in zip(OUTPUTS, out, strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="The soundtracks folder (its manifest.csv).")
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    with open(args.data / "manifest.csv", newline="") as f:
        paths = [Path(r["path"]) for r in csv.DictReader(f)]
    net = session(args.onnx)
    audio_s = cpu_s = 0.0
    started = time.perf_counter()
    for n, path in enumerate(paths, 1):
        target = args.cache / f"{path.parent.name}__{path.stem}.npz"
        if target.exists():
            continue
        windows = decode_windows(inspect_file(path, arriving=False), RATE, WindowPolicy())
        cpu = time.process_time()
        grams = [posteriorgrams(net, w) for w in windows.audio]
        cpu_s += time.process_time() - cpu
        audio_s += windows.audio.size / RATE
        arrays: dict[str, Any] = {k: np.stack([np.round(g[k] * 255) for g in grams]).astype(np.uint8) for k in OUTPUTS}
        np.savez_compressed(target, starts=windows.starts, **arrays)
        if n % 10 == 0:
            print(f"{n}/{len(paths)} tracks, {time.perf_counter() - started:.0f} s", flush=True)
    if audio_s:
        print(f"network: {cpu_s:.1f} CPU s for {audio_s:.0f} s of audio = {1000 * cpu_s / audio_s:.2f} ms per analysed "
              f"second (one ONNX Runtime thread, shared machine: measured under load)")
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
