"""What row checksums cost: summing rows when they are written, verifying them when they are read.

Writes N synthetic tracks (default 100,000 x one 2509-dim layer, one segment each)
through FeatureStore.write_vectors, then reports:
  * CRC-32 and BLAKE2b-64 per row (the write side's extra work, and the choice between them);
  * the read path's extra step (checksums.expected + checksums.changed over every track
    row) against the unverified loads it adds to: layer_matrix (one layer's float32
    matrix) and read_vectors (the vector set `mess similar` memoises), timed after the
    checksums are set to NULL (rows from an older mess are read unverified); each figure
    the fastest of --repeats;
  * `mess check`'s full scan (full_check), the fastest of --repeats too.

Usage: python benchmarks/store_checksums.py [--tracks 100000] [--dim 2509] [--repeats 5]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mess.search.vectors import VectorSpec, read_vectors
from mess.store import FeatureStore, RunKey, TrackVectors
from mess.store.check import full_check
from mess.store.checksums import changed, expected


def fastest(fn: Callable[[], object], repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=2509)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore(Path(tmp))
        run = store.ensure_run(RunKey("synthetic", "0", "{}", 22050, ("0",), (args.dim,)))
        write_s = 0.0
        for first in range(0, args.tracks, 1000):
            vecs = rng.standard_normal((min(1000, args.tracks - first), args.dim), dtype=np.float32)
            batch = [TrackVectors(f"{first + i:032x}", [v], [v[None]], [0.0]) for i, v in enumerate(vecs)]
            start = time.perf_counter()
            store.write_vectors(run, batch)
            write_s += time.perf_counter() - start
        with store.db:
            store.db.executemany("INSERT INTO tracks (path, content_hash, size, mtime, added_at) "
                                 "VALUES (?, ?, 0, 0, 0)",
                                 [(f"/music/{i}.flac", f"{i:032x}") for i in range(args.tracks)])
        rows = np.asarray(store.row_file(run, "track", 0).read())
        crc_s = fastest(lambda: [zlib.crc32(r.data) for r in rows], args.repeats)
        blake_s = fastest(lambda: [hashlib.blake2b(r.data, digest_size=8).digest() for r in rows], 2)
        catalog = store.db.execute("SELECT track_row, checksums FROM vectors ORDER BY track_row").fetchall()
        starts, counts = np.array([r[0] for r in catalog]), np.ones(len(catalog), dtype=np.int64)

        def verify() -> None:
            assert not changed(rows, starts, counts, expected([r[1] for r in catalog], "track", 0, 1)).any()

        verify_s = fastest(verify, args.repeats)
        check_s = fastest(lambda: full_check(store), args.repeats)
        with store.db:  # as an older mess wrote them: read unverified
            store.db.execute("UPDATE vectors SET checksums=NULL")
        matrix_s = fastest(lambda: store.layer_matrix(run, 0), args.repeats)
        vectors_s = fastest(lambda: read_vectors(store, run, VectorSpec("layer", "0")), args.repeats)
        store.close()
    n = args.tracks
    print(f"{n} tracks x {args.dim} dims float16 ({args.dim * 2} bytes a row); write_vectors {write_s:.1f} s in all")
    print(f"summing a row: CRC-32 {crc_s / n * 1e6:.2f} us, BLAKE2b-64 {blake_s / n * 1e6:.2f} us")
    print(f"verifying {n} track rows (the read path's extra step): {verify_s:.3f} s; unverified loads: "
          f"layer_matrix {matrix_s:.3f} s (+{verify_s / matrix_s:.1%}), "
          f"read_vectors {vectors_s:.3f} s (+{verify_s / vectors_s:.1%})")
    print(f"full_check (mess check): {check_s:.2f} s")


if __name__ == "__main__":
    main()
