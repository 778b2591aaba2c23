"""`mess index` with each choice of ranking data: none (--no-rerank), the augmentation (the default), all (--rerank).

Writes a synthetic store per size (5 layers x 1,000 dims = 5,000 dims of all layers, tracks around 200 centres
plus noise: timing only, not real music), then per choice deletes STORE/indexes and runs `mess index --norm power`
in a fresh process, reporting its wall time, its peak resident memory and the size of each file it saved.

    python benchmarks/index_ranking_data.py                        # 2,000, 5,000 and 10,000 tracks
    python benchmarks/index_ranking_data.py --sizes 20000          # about 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mess.audio.windows import WindowPolicy
from mess.extract.runs import run_key
from mess.models.base import ModelInfo
from mess.store import FeatureStore, TrackVectors

LAYERS, DIM = 5, 1000
CHOICES = {"none": ["--no-rerank"], "augmentation": [], "rerank": ["--rerank"]}
# runs `mess index` and prints the process's peak RSS (KiB on Linux) to stderr, whether it exits or returns
RUN = ("import resource, sys\nfrom mess.cli.main import main\ntry:\n    main()\nfinally:\n"
       "    print('peak', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")


def make_store(root: Path, n: int) -> None:
    """``n`` synthetic tracks of one run "synthetic" in a new store at ``root``."""
    info = ModelInfo("synthetic", "0", 24000, tuple(f"layer_{i}" for i in range(LAYERS)), (DIM,) * LAYERS)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((200, LAYERS, DIM)).astype(np.float32)
    store = FeatureStore(root)
    try:
        run = store.ensure_run(run_key(info, WindowPolicy()))
        for first in range(0, n, 256):
            batch = []
            for i in range(first, min(first + 256, n)):
                digest = f"{i:032x}"
                store.upsert_track(root / f"music/a{i % 50}/t{i}.flac", digest, 1000, 0.0, {"duration": 60.0},
                                   {"artist": f"a{i % 50}", "album": None, "title": f"t{i}", "genre": None,
                                    "composer": None})
                v = centres[i % 200] + 0.5 * rng.standard_normal((LAYERS, DIM)).astype(np.float32)
                batch.append(TrackVectors(digest, list(v), [x[None] for x in v], [0.0]))
            store.write_vectors(run, batch)
    finally:
        store.close()


def index_once(root: Path, extra: list[str]) -> tuple[float, float, dict[str, int]]:
    """Wall seconds and peak RSS (MiB) of one `mess index` from scratch, and the sizes of the files it saved."""
    shutil.rmtree(root / "indexes", ignore_errors=True)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", RUN, "index", "--model", "synthetic", "--norm", "power", *extra,
                          "--store", str(root), "--json"], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    peak = int(next(line.split()[1] for line in out.stderr.splitlines() if line.startswith("peak "))) / 1024
    files = {p.name.split(".", 1)[1]: p.stat().st_size for p in (root / "indexes").iterdir()}
    return wall, peak, files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 10000])
    args = parser.parse_args()
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "store"
            make_store(root, n)
            for name, extra in CHOICES.items():
                wall, peak, files = index_once(root, extra)
                saved = ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in sorted(files.items())
                                  if k in ("augment.npz", "rerank.npz"))
                print(f"{n:>6} tracks  {name:<12}  {wall:6.2f} s  peak {peak:6.0f} MiB  {saved or '-'}", flush=True)


if __name__ == "__main__":
    main()
