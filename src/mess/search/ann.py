"""FAISS nearest-neighbour indexes over unit vectors, keyed by track id.

Vectors are L2-normalised before they get here, so cosine similarity is the
inner product. Four index kinds:

* ``flat``  - exact ``IndexFlatIP`` (inside ``IndexIDMap2`` for ids); the default
  below :data:`FLAT_MAX` vectors, where exact search takes a few milliseconds.
* ``ivf``   - ``IndexIVFFlat`` (exact coarse quantizer: an approximate one misfiles
  vectors into lists that are never probed); the default up to :data:`IVFPQ_MIN`
  vectors. Uses the L2 metric, which ranks unit vectors exactly like cosine
  (``|q - x|^2 = 2 - 2 cos``) and is faiss' best-trained k-means path.
* ``ivfpq`` - ``IndexIVFPQ`` with one byte per 4 dimensions (1/16 of the memory of
  float32), the default for very large sets; lossy, so its recall is lower.
* ``hnsw``  - ``IndexHNSWFlat`` (by flag): lowest latency, slow to build, and faiss
  cannot delete from it, so removals rebuild it.

IVF kinds train k-means on a sample of :data:`TRAIN_PER_LIST` vectors per list
(the sample grows like sqrt(n), so k-means costs O(n) like adding, not O(n^1.5)); every vector is then added.
Approximate kinds tune their search breadth (``nprobe`` / ``efSearch``) at build
time: the smallest value whose recall@10 against exact search reaches the target,
measured with a sample of the vectors held out of the index while tuning (so the
estimate holds for new audio, not only for tracks already indexed).
"""

from __future__ import annotations

import json
import math
import zlib
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from mess.store.paths import replacing, synced

if TYPE_CHECKING:
    import faiss  # imported where used: a store's health and an exact search need no faiss

KINDS = ("flat", "ivf", "ivfpq", "hnsw")
FLAT_MAX = 20_000
IVFPQ_MIN = 5_000_000
HNSW_M = 32
TUNE_QUERIES = 256
TRAIN_PER_LIST = 39  # k-means sample per IVF list, the low end of faiss' guidance (39..256 points per centroid)
_READ_CHUNK = 1 << 24  # bytes of an index file summed at a time
KMEANS_ITERATIONS = 10  # faiss' default is 25; 10 gave the same recall at every nprobe at 100k (docs/search.md)
_BREADTHS = {"ivf": (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512),
             "hnsw": (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)}
_BREADTHS["ivfpq"] = _BREADTHS["ivf"]


def choose_kind(n: int) -> str:
    """The index kind used for ``n`` vectors when none is asked for."""
    if n < FLAT_MAX:
        return "flat"
    return "ivf" if n < IVFPQ_MIN else "ivfpq"


def built_kind(kind: str, n: int) -> str:
    """The kind :meth:`AnnIndex.build` gives ``n`` vectors asked for ``kind``: flat when IVF has too few to train."""
    kind = choose_kind(n) if kind == "auto" else kind
    return "flat" if kind in ("ivf", "ivfpq") and n < 2 * n_lists(n) else kind


def n_lists(n: int) -> int:
    """Number of IVF lists: the power of two nearest to 4 * sqrt(n), at least 16 and, from 32 vectors, at most
    n / 2, so that every collection of 32 or more can train its lists (two vectors each)."""
    nearest = 2 ** round(math.log2(4 * math.sqrt(max(n, 1))))
    return max(16, min(nearest, 2 ** int(math.log2(max(n, 2) // 2))))


def pq_subquantizers(dim: int) -> int:
    """PQ code size in bytes: the largest divisor of ``dim`` giving >= 4 dims per sub-vector."""
    return max(m for m in range(1, dim // 4 + 1) if dim % m == 0) if dim >= 4 else 1


def exact_knn(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner products (BLAS through faiss): (scores, row indices)."""
    import faiss
    return faiss.knn(np.ascontiguousarray(queries, dtype=np.float32),
                     np.ascontiguousarray(base, dtype=np.float32), k, metric=faiss.METRIC_INNER_PRODUCT)


@dataclass
class AnnIndex:
    """A faiss index of unit vectors with int64 ids and its tuned search breadth."""

    index: faiss.Index
    kind: str
    breadth: int = 0
    recall: float | None = None

    @classmethod
    def build(cls, vectors: np.ndarray, ids: np.ndarray, kind: str = "auto", *,
              target_recall: float = 0.95, seed: int = 0, keys: np.ndarray | None = None) -> AnnIndex:
        """Train (when needed), add and tune an index over unit ``vectors`` labelled with ``ids``.

        ``keys`` (one per row, e.g. content hashes) put the rows in their order first: the training sample, k-means'
        starts, the tuning queries and HNSW's graph go by row, and track ids follow the order a store committed
        tracks in, which varies from one extraction of a collection to the next."""
        if keys is not None:
            order = np.argsort(np.asarray(keys), kind="stable")
            vectors, ids = np.asarray(vectors)[order], np.asarray(ids)[order]
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        if kind != "auto" and kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; choose auto or one of {', '.join(KINDS)}")
        kind = built_kind(kind, n)  # flat: too few vectors to train the coarse quantizer
        ann = cls(_new_index(kind, dim, n), kind)
        rng = np.random.default_rng(seed)
        if not ann.index.is_trained:
            ann.index.train(vectors[np.sort(rng.choice(n, min(n, TRAIN_PER_LIST * n_lists(n)), replace=False))])
        ids = np.asarray(ids, dtype=np.int64)
        held = np.zeros(n, dtype=bool)
        if kind != "flat":
            held[rng.choice(n, min(TUNE_QUERIES, n // 4), replace=False)] = True
        ann.add(vectors[~held], ids[~held])
        ann.tune(vectors[~held], ids[~held], vectors[held], target_recall)
        ann.add(vectors[held], ids[held])
        return ann

    @property
    def ntotal(self) -> int:
        """Number of indexed vectors."""
        return int(self.index.ntotal)

    @property
    def removable(self) -> bool:
        """Whether vectors can be deleted in place (not HNSW)."""
        return self.kind != "hnsw"

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add unit vectors under their ids."""
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> int:
        """Delete vectors by id; returns how many were removed."""
        if not len(ids):
            return 0
        if not self.removable:
            raise ValueError("faiss cannot delete from an HNSW index; rebuild it")
        return int(self.index.remove_ids(np.asarray(ids, dtype=np.int64)))

    def search(self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None,
               breadth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (cosine similarities, ids) per query row; ids in ``exclude`` (held or not) are never returned.

        An approximate index searches ``breadth`` (default: the tuned one) lists or candidates, and more, doubling,
        while a row found fewer than k (the lists probed held too few, or mostly excluded tracks), up to every list
        (IVF) or every vector (HNSW). Missing results (fewer than k candidates even then) have id -1.
        """
        import faiss
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(k, self.ntotal))
        breadth = breadth or self.breadth
        excluded = 0 if exclude is None else len(np.unique(exclude))
        if exclude is not None and self.kind != "flat" and self.ntotal - excluded < k:  # count the ones it holds
            excluded = int(np.isin(np.unique(exclude), self._ids()).sum())
        wanted = min(k, self.ntotal - excluded)
        while True:
            params = self._params(breadth, exclude)
            dist, ids = self.index.search(queries, k, params=params)  # faiss's threads: the application's choice
            if self.kind == "flat" or breadth >= self._widest or (ids >= 0).sum(axis=1).min() >= wanted:
                break
            breadth = min(2 * max(breadth, 1), self._widest)
        if self.index.metric_type == faiss.METRIC_L2:
            dist = 1.0 - dist / 2.0
        return dist, ids

    @property
    def _widest(self) -> int:
        """The breadth that searches every list (IVF) or as many candidates as vectors (HNSW)."""
        return int(self.index.nlist) if self.kind in ("ivf", "ivfpq") else max(self.ntotal, 1)

    def _ids(self) -> np.ndarray:
        """The ids the index holds (read from every list of an IVF index)."""
        import faiss
        if self.kind not in ("ivf", "ivfpq"):
            return faiss.vector_to_array(self.index.id_map)
        lists = self.index.invlists
        held = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                for i in range(self.index.nlist) if lists.list_size(i)]
        return np.concatenate(held) if held else np.zeros(0, np.int64)

    def tune(self, base: np.ndarray, base_ids: np.ndarray, queries: np.ndarray, target_recall: float,
             k: int = 10) -> None:
        """Pick the smallest search breadth whose recall@k reaches ``target_recall``.

        ``queries`` are vectors not (yet) in the index, so the estimate holds for
        new audio; ``base``/``base_ids`` are exactly what the index holds.
        """
        if self.kind == "flat" or not len(queries):
            self.breadth, self.recall = 0, 1.0 if self.kind == "flat" else None
            return
        k = min(k, len(base))
        truth = base_ids[exact_knn(base, queries, k)[1]]
        limit = self.index.nlist if self.kind in ("ivf", "ivfpq") else max(_BREADTHS["hnsw"])
        for breadth in (b for b in _BREADTHS[self.kind] if b <= limit):
            self.breadth = breadth
            self.recall = recall_at_k(truth, self.search(queries, k, breadth=breadth)[1], k)
            if self.recall >= target_recall:
                return

    def save(self, path: Path, extra: dict | None = None, *, later: ExitStack | None = None) -> None:
        """Write the index (``path``) and its kind/breadth/recall plus ``extra`` (``path`` with ``.json``).

        Each file is replaced whole (written beside it, synced, then renamed); the JSON records the index file's size
        and CRC-32, so :meth:`load` refuses an index file that is not the one its JSON describes. The index is written
        through to the file, summed as it goes (serialised first, then copied to bytes, it was held three times).
        With ``later``, both are renamed only when the caller closes it, after the caller's other files are written:
        a write the system refuses (a full disk) then leaves every file as it was.
        """
        import faiss
        size, crc = 0, 0

        with ExitStack() as own:
            stack = own if later is None else later
            f = stack.enter_context(replacing(path))

            def write(chunk: bytes) -> None:
                nonlocal size, crc
                f.write(chunk)
                size, crc = size + len(chunk), zlib.crc32(chunk, crc)

            faiss.write_index(self.index, faiss.PyCallbackIOWriter(write))
            meta = {**(extra or {}), "kind": self.kind, "breadth": self.breadth, "recall": self.recall,
                    "bytes": size, "crc32": crc}
            description = stack.enter_context(replacing(path.with_suffix(".json")))
            description.write(json.dumps(meta).encode())
            synced(f)
            synced(description)

    @classmethod
    def load(cls, path: Path) -> tuple[AnnIndex, dict]:
        """Read an index written by :meth:`save`; returns it and the saved metadata.

        Raises ValueError when the index file is not the one the JSON describes (a save cut short, or another
        process replacing it meanwhile). The file is read twice through one descriptor, summed in chunks, then
        read into the index, so memory holds the index once (read whole, then deserialised, it held it three times).
        """
        import faiss
        with path.open("rb") as f:
            meta = _verified(path, f)
            f.seek(0)
            index = faiss.read_index(faiss.PyCallbackIOReader(f.read))
        return cls(index, meta["kind"], meta["breadth"], meta["recall"]), meta

    @staticmethod
    def described(path: Path) -> dict:
        """The saved metadata of the index at ``path``, its file summed in chunks but not read into memory
        (ValueError as :meth:`load`)."""
        with path.open("rb") as f:
            return _verified(path, f)

    def nbytes(self) -> int:
        """Serialised size of the index in bytes (a close proxy for its memory)."""
        import faiss
        return int(faiss.serialize_index(self.index).nbytes)

    def _params(self, breadth: int, exclude: np.ndarray | None) -> faiss.SearchParameters | None:
        import faiss
        sel = None
        if exclude is not None and len(exclude):
            sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.asarray(exclude, dtype=np.int64)))
        if self.kind in ("ivf", "ivfpq"):
            params = faiss.SearchParametersIVF(nprobe=breadth or 1)
        elif self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=breadth or 64)
        else:
            params = faiss.SearchParameters()
        if sel is not None:
            params.sel = sel
            params._sel = sel  # keep the selector alive as long as the params
        return params


def _verified(path: Path, f: BinaryIO) -> dict:
    """The JSON beside the index file ``path`` once the file's bytes, read from ``f``, are the ones it describes
    (size and CRC-32); ValueError otherwise."""
    meta = json.loads(path.with_suffix(".json").read_text())
    if not isinstance(meta, dict):
        raise ValueError(f"{path.with_suffix('.json').name} holds no index description")
    size, crc = 0, 0
    while chunk := f.read(_READ_CHUNK):
        size, crc = size + len(chunk), zlib.crc32(chunk, crc)
    if size != meta.get("bytes") or crc != meta.get("crc32"):
        raise ValueError(f"{path.name} does not match {path.with_suffix('.json').name}")
    return meta


def _new_index(kind: str, dim: int, n: int) -> faiss.Index:
    import faiss
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 80
        return faiss.IndexIDMap2(hnsw)
    codec = "Flat" if kind == "ivf" else f"PQ{pq_subquantizers(dim)}"
    index = faiss.index_factory(dim, f"IVF{n_lists(n)},{codec}", faiss.METRIC_L2)
    index.cp.min_points_per_centroid = 1  # small sets train on all n >= 2 * nlist vectors; the warning is noise
    index.cp.niter = KMEANS_ITERATIONS
    if kind == "ivfpq":
        index.pq.cp.min_points_per_centroid = 1
        index.do_polysemous_training = False  # only serves polysemous (Hamming) search, which we never use
    return index


def recall_at_k(truth: np.ndarray, found: np.ndarray, k: int, exclude: np.ndarray | None = None) -> float:
    """Mean fraction of each query's true top-k ids found in its top-k results.

    ``exclude`` holds one id per query (its own) to drop from both lists first.
    """
    hits = 0
    for i, (t, f) in enumerate(zip(truth, found, strict=False)):
        own = None if exclude is None else exclude[i]
        want = [x for x in t if x != own][:k]
        got = [x for x in f if x != own and x >= 0][:k]
        hits += len(set(want) & set(got))
    return hits / (k * len(truth))
