"""IVF-PQ at scale: bytes per vector vs recall@10, with and without re-ranking on the stored float16 vectors.

On synthetic clustered unit vectors (benchmarks/search.py's generator, dim 768 like one
MERT-95M layer), one IVF coarse quantizer is trained once and shared by IndexIVFPQ
indexes of several code sizes. For each code size and nprobe it reports recall@10
against exact search, query latency, and recall when the PQ shortlist (10 x k) is
re-ranked exactly with the float16 vectors the feature store keeps on disk: the
10M-track design (PQ codes in RAM, float16 vectors memory-mapped for re-ranking).

Usage: python benchmarks/scale_index.py [--n 200000] [--codes 48 96 192] [--nprobe 16 64]
"""

from __future__ import annotations

import argparse
import resource
import time

import faiss
import numpy as np
from search import clustered  # benchmarks/search.py, next to this script

K = 10
SHORTLIST = 10  # PQ candidates per wanted neighbour, re-ranked exactly


def recall(truth: np.ndarray, found: np.ndarray) -> float:
    return float(np.mean([len(set(t) & set(f)) / K for t, f in zip(truth, found, strict=False)]))


def rerank(stored: np.ndarray, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Exact top-k among each query's candidates, scored on the stored float16 vectors."""
    out = np.empty((len(queries), K), dtype=np.int64)
    for i, (q, cand) in enumerate(zip(queries, candidates, strict=False)):
        cand = cand[cand >= 0]
        scores = stored[cand].astype(np.float32) @ q
        out[i] = cand[np.argsort(-scores)[:K]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--codes", type=int, nargs="+", default=[48, 96, 192], help="PQ bytes per vector")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()
    data = clustered(args.n + args.queries, args.dim, seed=7)
    base, queries = data[: args.n], data[args.n :]
    stored = base.astype(np.float16)  # what the feature store holds
    exact = faiss.IndexFlatIP(args.dim)
    exact.add(base)
    _, truth = exact.search(queries, K)
    train = base[np.random.default_rng(0).choice(args.n, min(args.n, 64 * args.nlist), replace=False)]

    t = time.perf_counter()
    quantizer = faiss.IndexFlatIP(args.dim)
    faiss.Clustering(args.dim, args.nlist).train(train, quantizer)
    coarse_s = time.perf_counter() - t
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads: n={args.n:,}, dim {args.dim}, "
          f"IVF{args.nlist} (coarse k-means {coarse_s:.0f} s)")
    print(f"{'code B':>7s}{'index B/vec':>12s}{'train+add s':>12s}{'nprobe':>7s}{'recall@10':>10s}"
          f"{'+rerank':>9s}{'ms/query':>9s}")
    for m in args.codes:
        t = time.perf_counter()
        index = faiss.IndexIVFPQ(quantizer, args.dim, args.nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        index.train(train)
        index.add(base)
        build_s = time.perf_counter() - t
        per_vector = faiss.serialize_index(index).nbytes / args.n
        for nprobe in args.nprobe:
            index.nprobe = nprobe
            t = time.perf_counter()
            _, found = index.search(queries, K * SHORTLIST)
            ms = (time.perf_counter() - t) * 1e3 / args.queries
            print(f"{m:7d}{per_vector:12.1f}{build_s:12.1f}{nprobe:7d}{recall(truth, found[:, :K]):10.3f}"
                  f"{recall(truth, rerank(stored, queries, found)):9.3f}{ms:9.2f}", flush=True)
    print(f"float16 vectors for re-ranking: {stored.nbytes / args.n:.0f} B/vector (on disk, memory-mapped); "
          f"exact float32: {base.nbytes / args.n:.0f} B/vector")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
