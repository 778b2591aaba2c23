"""Feature-store cost per track at scale: bytes on disk and the driver's commit rate.

Writes N synthetic tracks shaped like a model's output (MERT-95M by default: 13 layers
x 768, 7 segments = a 3.5-min track under 30 s windows) through the real
FeatureStore API (upsert_track + write_vectors in commits of --write-every tracks,
as the Ray driver does), then reports:
  * bytes per track: track vectors, segment vectors, catalog (SQLite);
  * commit rate (tracks/s): the ceiling of one driver writing one store;
  * reading one layer's matrix back (layer_matrix), in GB/s;
  * projections to 1M and 10M tracks.

Usage: python benchmarks/scale_store.py [--tracks 5000] [--layers 13] [--dim 768] [--segments 7]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from mess.audio.windows import WindowPolicy
from mess.extract.runs import run_key
from mess.models.base import ModelInfo
from mess.store import FeatureStore, TrackVectors


def folder_bytes(folder: Path, pattern: str) -> int:
    return sum(f.stat().st_size for f in folder.rglob(pattern) if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=5000)
    parser.add_argument("--layers", type=int, default=13)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--segments", type=int, default=7)
    parser.add_argument("--write-every", type=int, default=16)
    args = parser.parse_args()
    info = ModelInfo(
        "synthetic", "0", 24000, tuple(f"layer_{i}" for i in range(args.layers)), (args.dim,) * args.layers
    )
    rng = np.random.default_rng(0)
    segments = rng.standard_normal((args.segments, args.dim)).astype(np.float32)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = FeatureStore(root)
        run = store.ensure_run(run_key(info, WindowPolicy()))
        start = time.perf_counter()
        for first in range(0, args.tracks, args.write_every):
            batch = []
            for i in range(first, min(first + args.write_every, args.tracks)):
                digest = f"{i:032x}"
                store.upsert_track(
                    root / f"music/artist{i % 500}/track{i}.flac",
                    digest,
                    8_000_000,
                    0.0,
                    {"duration": 210.0, "sample_rate": 44100, "channels": 2},
                    {
                        "artist": f"artist{i % 500}",
                        "album": f"album{i % 2000}",
                        "title": f"track {i}",
                        "genre": None,
                        "composer": None,
                    },
                )
                batch.append(
                    TrackVectors(
                        digest,
                        [segments.mean(0)] * args.layers,
                        [segments] * args.layers,
                        [30.0 * s for s in range(args.segments)],
                    )
                )
            store.write_vectors(run, batch)
        write_s = time.perf_counter() - start
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        track_b = folder_bytes(root / "runs", "track/*.f16") / args.tracks
        seg_b = folder_bytes(root / "runs", "segment/*.f16") / args.tracks
        cat_b = folder_bytes(root, "catalog.sqlite*") / args.tracks
        start = time.perf_counter()
        _, mat = store.layer_matrix(run, 0)
        read_s = time.perf_counter() - start
        store.close()

    total = track_b + seg_b + cat_b
    print(
        f"{args.tracks} tracks x {args.layers} layers x {args.dim} dims, {args.segments} segments/track, "
        f"commits of {args.write_every}"
    )
    print(
        f"bytes per track: track vectors {track_b:,.0f}, segments {seg_b:,.0f}, catalog {cat_b:,.0f}, "
        f"total {total:,.0f}"
    )
    for n in (1_000_000, 10_000_000):
        print(
            f"  {n:>10,} tracks: track vectors {track_b * n / 1e9:,.1f} GB, segments {seg_b * n / 1e9:,.1f} GB, "
            f"catalog {cat_b * n / 1e9:,.1f} GB"
        )
    print(
        f"commit rate (one driver, one store): {args.tracks / write_s:,.0f} tracks/s "
        f"({(track_b + seg_b) * args.tracks / write_s / 1e6:,.0f} MB/s of vectors)"
    )
    print(f"layer_matrix read of one layer: {mat.nbytes / read_s / 1e9:.2f} GB/s (float32 out)")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
