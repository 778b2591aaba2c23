"""Similarity-search benchmark: mess's FAISS indexes vs exact FAISS flat search and brute-force NumPy.

For each collection size, on synthetic clustered unit vectors (dim 768 by default),
reports per index kind: build time (train + add + recall tuning), index size,
single-query p50/p99 latency, recall@10 against exact search on held-out queries,
and two speed-ups measured in the same run, so like is compared with like:

* "x flat": FAISS's exact ``IndexFlatIP`` (kind ``flat``, built at every size) over the
  kind, i.e. what an approximate index buys over exact search in the same library;
* "x NumPy": brute-force NumPy (``X @ q`` + ``argpartition``, the faster of one and
  all BLAS threads) over the kind; the flat row's value compares two exact searches.

Latency and recall use the same single-query calls; sizes above 100k time the exact
searches (flat, NumPy) on a subset of the queries (printed). Ends with peak memory.

    python benchmarks/search.py                       # 10k, 100k, 1M
    python benchmarks/search.py --sizes 1000000 --kinds flat
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from mess.search.ann import KINDS, AnnIndex, choose_kind, exact_knn, recall_at_k

K = 10


def clustered(n: int, dim: int, seed: int, cluster_size: int = 500, local_dim: int = 48) -> np.ndarray:
    """Unit vectors around n / 500 random centres, varying in a shared low-dim subspace plus noise.

    Per coordinate, centres have variance 1, the local variation 0.5 and the noise 0.04:
    clusters overlap partly (same-cluster cosine about 0.65, across clusters about 0),
    and within a cluster the neighbours are decided by the 48-d local variation (like
    tracks of one style differing along a few musical factors), so the top-10 is not
    simply "the cluster".
    """
    rng = np.random.default_rng(seed)
    n_clusters = max(1, n // cluster_size)
    centres = rng.standard_normal((n_clusters, dim), dtype=np.float32)
    basis = rng.standard_normal((local_dim, dim), dtype=np.float32) * np.float32(np.sqrt(0.5 / local_dim))
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        chunk = centres[rng.integers(n_clusters, size=m)]
        chunk += rng.standard_normal((m, local_dim), dtype=np.float32) @ basis
        chunk += 0.2 * rng.standard_normal((m, dim), dtype=np.float32)
        faiss.normalize_L2(chunk)
        out[start:start + m] = chunk
    return out


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def latencies(fn, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Milliseconds per single-query call, and each call's top-k ids."""
    out = np.empty(len(queries))
    found = np.empty((len(queries), K), dtype=np.int64)
    for i, q in enumerate(queries):
        t = time.perf_counter()
        found[i] = np.ravel(fn(q))[:K]
        out[i] = (time.perf_counter() - t) * 1e3
    return out, found


def numpy_top_k(base: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Brute-force top-k by inner product in plain NumPy."""
    scores = base @ q
    top = np.argpartition(-scores, K)[:K]
    return top[np.argsort(-scores[top])]


def bench_size(n: int, dim: int, kinds: list[str], n_queries: int, seed: int) -> dict:
    """All measurements for one collection size."""
    t = time.perf_counter()
    data = clustered(n + n_queries, dim, seed)
    base, queries = data[:n], data[n:]
    ids = np.arange(n, dtype=np.int64)
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    _, truth = exact_knn(base, queries, K)
    exact_batch_ms = (time.perf_counter() - t) * 1e3 / n_queries
    n_exact = len(queries) if n <= 100_000 else min(len(queries), 50)  # exact search is slow at 1M
    np_lat, _ = latencies(lambda q: numpy_top_k(base, q), queries[:n_exact])
    with threadpool_limits(1):  # the faster of 1 and all BLAS threads is the baseline (busy cores punish 2)
        np_lat = min(np_lat, latencies(lambda q: numpy_top_k(base, q), queries[:n_exact])[0], key=np.median)
    numpy_p50 = float(np.median(np_lat))
    measured: list[dict[str, object]] = []
    result = {"n": n, "dim": dim, "queries": n_queries, "exact_queries": n_exact, "auto_kind": choose_kind(n),
              "generate_s": round(gen_s, 1), "exact_batched_ms_per_query": round(exact_batch_ms, 3),
              "numpy_p50_ms": round(numpy_p50, 3), "kinds": measured}
    print(f"n={n:,}: numpy brute force p50 {numpy_p50:.2f} ms on {n_exact} queries", flush=True)
    flat_p50: float | None = None
    for kind in kinds:
        t = time.perf_counter()
        ann = AnnIndex.build(base, ids, kind)
        build_s = time.perf_counter() - t
        timed = queries[:n_exact] if ann.kind == "flat" else queries
        lat, found = latencies(lambda q, search=ann.search: search(q, K)[1], timed)
        p50 = float(np.median(lat))
        flat_p50 = p50 if ann.kind == "flat" else flat_p50
        row = {"kind": ann.kind, "build_s": round(build_s, 2), "breadth": ann.breadth,
               "tuned_recall": None if ann.recall is None else round(ann.recall, 4), "queries": len(timed),
               "recall@10": round(recall_at_k(truth[: len(timed)], found, K), 4),
               "p50_ms": round(p50, 4), "p99_ms": round(float(np.percentile(lat, 99)), 4),
               "index_mb": round(ann.nbytes() / 2**20, 1),
               "speedup_vs_flat": round(flat_p50 / p50, 1) if flat_p50 else None,
               "speedup_vs_numpy": round(numpy_p50 / p50, 1),
               "peak_rss_gib_so_far": round(peak_rss_gib(), 2)}
        measured.append(row)
        print(f"  {row}", flush=True)
        del ann
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="largest size that also builds HNSW")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, help="index kinds to build at every size "
                        "(default: flat and ivf, plus hnsw up to --hnsw-max, else ivfpq); flat first, "
                        "as the other kinds' exact baseline")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, dim {args.dim}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    results = []
    for n in args.sizes:
        kinds = ["flat", "ivf"] + (["hnsw"] if n <= args.hnsw_max else ["ivfpq"])
        kinds = sorted(args.kinds, key=lambda k: k != "flat") if args.kinds else kinds
        results.append(bench_size(n, args.dim, kinds, args.queries, seed=n))
    peak_gb = peak_rss_gib()
    print(f"peak RSS {peak_gb:.2f} GiB, load average {os.getloadavg()[0]:.1f}")
    print("\n| n | kind | build s | queries | p50 ms | p99 ms | recall@10 | x flat | x NumPy | index MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for res in results:
        for row in res["kinds"]:
            print(f"| {res['n']:,} | {row['kind']} (breadth {row['breadth']}) | {row['build_s']} | {row['queries']} "
                  f"| {row['p50_ms']} | {row['p99_ms']} | {row['recall@10']} | {row['speedup_vs_flat'] or '-'} "
                  f"| {row['speedup_vs_numpy']} | {row['index_mb']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "peak_rss_gib": round(peak_gb, 2)}, f, indent=2)


if __name__ == "__main__":
    main()
