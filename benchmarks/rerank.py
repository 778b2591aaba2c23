"""Re-ranking data build: mess.search.rerank against its previous implementation (benchmarks/rerank_baseline.py).

On synthetic clustered unit vectors (benchmarks/search.py's generator: tracks around centres of
500, varying in a shared 48-d subspace, so neighbourhoods are realistic; not real music), per
collection size it times, for the current build ("new") and the frozen old one ("old", up to
``--old-max`` tracks; it is the slower by far):

* graph: the DBA cosine graph alone (:func:`~mess.search.graph.neighbour_graph`);
* build: the whole re-ranker from the unit vectors (:func:`~mess.search.rerank.build_reranker`, its
  graph included: the new build reuses the cosines it holds for the graph, the old one built on the graph);
* rows / outside: one query that is a collection track (``Reranker.rows``) and one from outside
  (``Reranker.outside``), the best of 3 x ``--queries`` calls;
* peak: the peak resident memory of the process that built it (a fork of the one holding the data).

Each build runs in its own forked process so its peak memory is its own. Then old and new are compared
on the same queries: the largest difference of re-ranked scores and how many queries rank every track
in the same order (exactly, and up to ties: tracks whose old scores differ by less than 1e-5 may swap).
With ``--blocks`` the new build uses row blocks (as beyond :data:`~mess.search.graph.GRAM_BYTES`).

    python benchmarks/rerank.py                                  # 2k, 5k, 10k tracks x 5,000 dims
    python benchmarks/rerank.py --sizes 20000 --old-max 20000    # about 5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import rerank_baseline as old  # benchmarks/rerank_baseline.py, next to this script
from search import clustered  # benchmarks/search.py, next to this script

from mess.search import graph, rerank

SAMPLE = 100  # collection rows whose re-ranked scores old and new are compared on
TIE = 1e-5  # old scores this close may swap places in an order still called the same


@dataclass(frozen=True)
class Run:
    """One build's timings (seconds), peak memory (MiB) and re-ranked scores of the compared queries."""

    graph_s: float
    build_s: float
    rows_s: float
    outside_s: float
    peak_mib: float
    rows: np.ndarray  # [SAMPLE, n]
    outside: np.ndarray  # [queries, n]
    top_rows: np.ndarray  # [n, K1]: each track's neighbour list under the expanded augmented scores
    top_scores: np.ndarray  # [n, K1]


def best_time(call: Callable[[], object], times: int) -> float:
    """The shortest wall time of ``times`` calls (on a shared machine, the least disturbed)."""
    spent = []
    for _ in range(times):
        start = time.perf_counter()
        call()
        spent.append(time.perf_counter() - start)
    return min(spent)


def build(which: str, unit: np.ndarray, queries: np.ndarray, blocks: bool) -> Run:
    """Build the ``which`` ("old" or "new") re-ranker of ``unit``, time it and its queries (in a forked child)."""
    if blocks:
        graph.GRAM_BYTES = 0
    lib = old if which == "old" else rerank
    neighbour_graph = old.neighbour_graph if which == "old" else graph.neighbour_graph
    start = time.perf_counter()
    g = neighbour_graph(unit, lib.DBA_K)
    graph_s = time.perf_counter() - start
    start = time.perf_counter()
    reranker: old.Reranker | rerank.Reranker
    if which == "old":
        reranker = old._reranker(unit, old.Augmentation.from_graph(unit, g), old.K1, old.K2, old.LAMBDA)
        build_s = graph_s + time.perf_counter() - start
    else:
        reranker = rerank.build_reranker(unit)
        build_s = time.perf_counter() - start
    rows = np.linspace(0, len(unit) - 1, min(SAMPLE, len(unit))).astype(np.int64)
    rows_s = best_time(lambda: reranker.rows(rows[:1]), 3 * len(queries))

    def outside_once() -> object:  # the new re-ranker remembers its last answers: each timed call a fresh one
        getattr(reranker, "answered", {}).clear()
        return reranker.outside(queries[:1])

    outside_s = best_time(outside_once, 3 * len(queries))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return Run(graph_s, build_s, rows_s, outside_s, peak, reranker.rows(rows), reranker.outside(queries),
               reranker.top.rows, reranker.top.scores)


def in_child(which: str, unit: np.ndarray, queries: np.ndarray, blocks: bool) -> Run:
    """:func:`build` in a forked process (it inherits the data instead of receiving it)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        return pool.submit(build, which, unit, queries, blocks).result()


def same_order(before: np.ndarray, after: np.ndarray, tie: float = 0.0) -> int:
    """How many rows ``after`` [m, n] orders as ``before`` does: in ``after``'s order, ``before``'s scores never
    rise by more than ``tie``."""
    order = np.argsort(-after, axis=1, kind="stable")
    ranked = np.take_along_axis(before, order, axis=1)
    return int((np.diff(ranked, axis=1) <= tie).all(axis=1).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 10000], help="tracks")
    parser.add_argument("--dim", type=int, default=5000)
    parser.add_argument("--old-max", type=int, default=10000, help="largest size the old build is timed at")
    parser.add_argument("--queries", type=int, default=5, help="outside queries (and timed queries)")
    parser.add_argument("--blocks", action="store_true", help="new build in row blocks, never the whole matrix")
    args = parser.parse_args()
    mode = "in row blocks" if args.blocks else f"holding n x n scores up to {graph.GRAM_BYTES >> 20} MiB"
    print(f"synthetic clustered unit vectors (not music), dim {args.dim}; new build {mode}")
    print(f"{'tracks':>7} {'':>5} {'graph s':>8} {'build s':>8} {'rows ms':>8} {'outside ms':>10}"
          f" {'peak MiB':>9}")
    for n in args.sizes:
        data = clustered(n + args.queries, args.dim, seed=n)
        unit, queries = data[:n], data[n:]
        runs = {"new": in_child("new", unit, queries, args.blocks)}
        if n <= args.old_max:
            runs["old"] = in_child("old", unit, queries, False)
        for which, run in runs.items():
            print(f"{n:>7} {which:>5} {run.graph_s:>8.2f} {run.build_s:>8.2f} {1e3 * run.rows_s:>8.1f}"
                  f" {1e3 * run.outside_s:>10.1f} {run.peak_mib:>9.0f}")
        if "old" not in runs:
            continue
        new, base = runs["new"], runs["old"]
        print(f"{n:>7} {'x':>5} {base.graph_s / new.graph_s:>8.1f} {base.build_s / new.build_s:>8.1f}"
              f" {base.rows_s / new.rows_s:>8.1f} {base.outside_s / new.outside_s:>10.1f}   (old / new)")
        differ = (base.top_rows != new.top_rows).any(axis=1)
        gap = float(np.abs(base.top_scores - new.top_scores)[differ].max()) if differ.any() else 0.0
        print(f"{'':>13} neighbour lists: the same in {n - int(differ.sum())}/{n} tracks; where not, the scores"
              f" position by position within {gap:.1e} (ties at float32 rounding)")
        for name, before, after in (("rows", base.rows, new.rows), ("outside", base.outside, new.outside)):
            print(f"{'':>13} {name}: max |new - old| {np.abs(after - before).max():.1e}; same order"
                  f" {same_order(before, after)}/{len(before)} exactly, {same_order(before, after, TIE)}/{len(before)}"
                  f" up to ties of {TIE:g}")


if __name__ == "__main__":
    main()
