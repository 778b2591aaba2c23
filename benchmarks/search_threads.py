"""Single-query search latency and FAISS's OpenMP threads: per-search toggle vs one setting per process.

mess's search used to set faiss to 1 OpenMP thread around every search of fewer than 8
queries and restore the count afterwards (process-wide and racy between threads). This
measures, in one run on the same index and queries, single-query p50/p90 latency with

* ``toggle``  - that per-search toggle (the old library behaviour),
* ``default`` - faiss's default thread count, untouched (the library now),
* ``one``     - 1 thread set once for the process (what ``mess`` and ``mess serve`` now do at start-up),

in interleaved blocks so background load hits every mode alike. Synthetic clustered unit
vectors; ends with the process's peak memory.

    python benchmarks/search_threads.py                  # 100k x 256, flat and ivf
    python benchmarks/search_threads.py --n 20000 --kinds flat
"""

from __future__ import annotations

import argparse
import resource
import time

import faiss
import numpy as np

from mess.search.ann import AnnIndex


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors around n / 500 random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 500), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.7 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def timed(ann: AnnIndex, queries: np.ndarray, mode: str, default_threads: int) -> list[float]:
    """Seconds per single-query search of each row of ``queries`` under one threading mode."""
    faiss.omp_set_num_threads(1 if mode == "one" else default_threads)
    out = []
    for q in queries:
        start = time.perf_counter()
        if mode == "toggle":
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            try:
                ann.search(q[None], 10)
            finally:
                faiss.omp_set_num_threads(threads)
        else:
            ann.search(q[None], 10)
        out.append(time.perf_counter() - start)
    faiss.omp_set_num_threads(default_threads)
    return out


def main() -> None:
    """Build each index kind, then time single queries in the three modes, interleaved."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--kinds", nargs="+", default=["flat", "ivf"])
    parser.add_argument("--queries", type=int, default=100, help="per block")
    parser.add_argument("--blocks", type=int, default=4, help="interleaved blocks per mode")
    args = parser.parse_args()
    default_threads = faiss.omp_get_max_threads()
    x = unit_vectors(args.n + args.queries, args.dim, 0)
    base, queries = x[: args.n], x[args.n :]
    print(f"{args.n} x {args.dim} unit vectors, {args.queries * args.blocks} single queries per mode, "
          f"faiss default threads {default_threads}")
    modes = ("toggle", "default", "one")
    for kind in args.kinds:
        ann = AnnIndex.build(base, np.arange(args.n), kind)
        for mode in modes:  # warm-up: first searches pay page faults and OpenMP pool start-up
            timed(ann, queries[:10], mode, default_threads)
        times: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.blocks):
            for mode in modes:
                times[mode] += timed(ann, queries, mode, default_threads)
        p50 = {m: float(np.median(t)) * 1e3 for m, t in times.items()}
        for mode in modes:
            print(f"{kind:5s} {mode:8s} p50 {p50[mode]:7.3f} ms  p90 {np.percentile(times[mode], 90) * 1e3:7.3f} ms  "
                  f"p50 / toggle {p50[mode] / p50['toggle']:.2f}x")
    print(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
