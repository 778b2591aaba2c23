"""N concurrent `mess extract` writers on one store against one writer: throughput and corrupted tracks.

Every writer is a real process running the real CLI on the same folder of real audio
(the tests' rendered music21 pieces, or any folder given), as a user starting two
extractions by mistake would. The store lock serialises them, so N writers should take
about as long as one (the later ones find every file done), and no track may end up
with another track's vectors: each stored vector must equal the single-writer store's,
bit for bit. Prints wall time ratio, corrupted tracks (must be 0) and peak RSS.

    python benchmarks/store_concurrency.py [MUSIC_DIR] --writers 3 --model dsp
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from mess.audio.discover import find_audio
from mess.store import FeatureStore

MESS = [sys.executable, "-m", "mess.cli"]


def _run_writers(music: Path, store: Path, n: int, model: str) -> tuple[float, list[int], int]:
    """Start ``n`` writers at once; (wall seconds, exit codes, peak RSS of any writer in bytes)."""
    start = time.perf_counter()
    procs = [subprocess.Popen([*MESS, "extract", str(music), "--model", model, "--store", str(store)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(n)]
    peak = 0
    while any(p.poll() is None for p in procs):
        for p in procs:
            try:
                peak = max(peak, psutil.Process(p.pid).memory_info().rss)
            except psutil.Error:
                pass
        time.sleep(0.1)
    return time.perf_counter() - start, [p.returncode for p in procs], peak


def _vectors(store_dir: Path, model: str) -> dict[str, np.ndarray]:
    store = FeatureStore(store_dir, readonly=True)
    with store.snapshot():
        run = store.run(model)
        paths = {t.id: t.path for t in store.tracks(run)}
        out: dict[str, list[np.ndarray]] = {p: [] for p in paths.values()}
        for layer in run.layer_names:
            ids, mat = store.layer_matrix(run, layer)
            for i, row in zip(ids, mat, strict=False):
                out[paths[int(i)]].append(row)
    store.close()
    return {p: np.concatenate(v) for p, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("music", type=Path, nargs="?",
                        help="audio folder (default: the tests' rendered pieces, under $MESS_TEST_CACHE)")
    parser.add_argument("--writers", type=int, default=3)
    parser.add_argument("--model", default="dsp")
    args = parser.parse_args()
    cache = Path(os.environ.get("MESS_TEST_CACHE", Path.home() / ".cache" / "mess-test"))
    music = args.music or next((p for p in sorted(cache.glob("collection-*")) if p.is_dir()), None)
    if music is None:
        parser.error(f"give an audio folder: {cache} holds no rendered test collection (the tests render one)")
    if not find_audio([music]):
        parser.error(f"no audio files in {music}")
    work = Path(tempfile.mkdtemp(prefix="mess-concurrency-"))
    try:
        one_s, one_codes, one_peak = _run_writers(music, work / "single", 1, args.model)
        many_s, many_codes, many_peak = _run_writers(music, work / "shared", args.writers, args.model)
        want, got = _vectors(work / "single", args.model), _vectors(work / "shared", args.model)
        corrupted = sum(p not in got or not np.array_equal(got[p], v) for p, v in want.items()) + len(
            set(got) - set(want))
        check = subprocess.run([*MESS, "check", "--store", str(work / "shared")], capture_output=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{len(want)} files of {music} with {args.model}; load average {psutil.getloadavg()[0]:.1f}")
    print(f"1 writer: {one_s:.1f} s (exit {one_codes}); {args.writers} writers at once: {many_s:.1f} s "
          f"(exit {many_codes}) = {many_s / one_s:.2f}x the single writer's time")
    print(f"corrupted tracks: {corrupted} (must be 0); `mess check`: exit {check.returncode}")
    print(f"peak RSS of one writer: {max(one_peak, many_peak) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
