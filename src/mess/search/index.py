"""Collection indexes: a FAISS index of one vector set, saved beside the store and kept in sync.

An index file ``STORE/indexes/run<id>-<spec>.faiss`` is accompanied by ``.json``
(kind, tuned breadth, recall estimate, spec) and ``.npz`` (the track ids and content
hashes it holds, and the preprocessor it was built with). :func:`build_index`
compares those with the store and, when little changed since the preprocessor was fitted
(at most :data:`REBUILD_FRACTION` of the tracks it was fitted on, counted over every update since), removes and
adds only the tracks that left, arrived or whose content changed, keeping that preprocessor so old and new
vectors stay comparable. :func:`open_index` returns the
saved index when it is current, and otherwise an in-memory one (never stale). Beside the index it saves, by default,
the augmentation of all layers (what the default augmented ranking reads; seconds to build), with ``rerank`` the
vector set's whole re-ranking data too, and with ``rerank=False`` neither (:mod:`mess.search.rerank_store`).
"""

from __future__ import annotations

import io
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mess.constants import FUSED, NPZ_ERRORS
from mess.search.ann import AnnIndex, built_kind, n_lists
from mess.search.augment import build_augmentation
from mess.search.rerank import collection_reranker
from mess.search.rerank_store import (
    AUGMENT_SUFFIX,
    SUFFIX,
    augment_path,
    load_augmentation,
    read_augmentation,
    read_reranker,
    rerank_path,
    save_augmentation,
    save_reranker,
    stale_ranking_data,
)
from mess.search.vectors import MIN_FIT_TRACKS, Preprocessor, VectorSet, VectorSpec, vectors_source
from mess.store import FeatureStore, Run, StoreError
from mess.store.paths import replacing, synced

REBUILD_FRACTION = 0.25


@dataclass
class CollectionIndex:
    """An ANN index over a vector set, with the ids/hashes it holds and its preprocessor."""

    ann: AnnIndex
    prep: Preprocessor
    ids: np.ndarray
    hashes: np.ndarray
    spec: VectorSpec
    run_id: int
    requested: str = "auto"
    fitted: int = 0  # tracks the preprocessor was fitted on (the last full build)
    drift: int = 0  # tracks added, removed or changed by incremental updates since then
    source: str = ""  # what its vectors were read from beyond the tracks' contents (VectorSet.source)

    def is_current(self, vs: VectorSet) -> bool:
        """Whether it holds exactly the tracks (and contents) of ``vs``, read from the same source (layers, fused
        file, head)."""
        return (self.run_id == vs.run.id and self.spec == vs.spec and self.source == vs.source
                and len(self.ids) == len(vs.ids)
                and bool(np.array_equal(self.ids, vs.ids)) and bool(np.array_equal(self.hashes, vs.hashes)))

    def save(self, path: Path) -> None:
        """Write the index and its sidecars, all three marked with one new generation.

        All three are written and synced beside their targets first, then renamed over them one after the other:
        a write the system refuses (a full disk) leaves the saved index as it was (it left a new ``.npz`` beside
        the old index, which then matched neither save). A reader that meets files of two saves (a save killed
        between its renames, or one under way) sees two generations and :meth:`load` refuses them.
        """
        generation = uuid.uuid4().hex
        arrays = io.BytesIO()
        np.savez(arrays, allow_pickle=False, ids=self.ids, hashes=self.hashes, generation=np.array(generation),
                 **self.prep.arrays())
        with ExitStack() as later:
            npz = later.enter_context(replacing(path.with_suffix(".npz")))
            npz.write(arrays.getvalue())
            synced(npz)
            self.ann.save(path, {"run_id": self.run_id, "spec": [self.spec.kind, self.spec.name, self.spec.norm],
                                 "requested": self.requested, "n": len(self.ids), "saved_at": time.time(),
                                 "generation": generation, "fitted": self.fitted, "drift": self.drift,
                                 "source": self.source}, later=later)

    @classmethod
    def load(cls, path: Path) -> CollectionIndex | None:
        """Read a saved index; None when it is missing, damaged, or its files come from different saves."""
        try:
            ann, meta = AnnIndex.load(path)
            with np.load(path.with_suffix(".npz")) as arrays:
                ids, hashes, generation = arrays["ids"], arrays["hashes"], str(arrays["generation"])
                prep = Preprocessor.from_arrays(dict(arrays))
            kind, name, norm = meta["spec"]
            saved = cls(ann, prep, ids, hashes, VectorSpec(kind, name, norm), meta["run_id"], meta["requested"],
                        meta["fitted"], meta["drift"], str(meta.get("source", "")))
        except (*NPZ_ERRORS, RuntimeError, TypeError):  # TypeError: a description of the wrong shape
            return None
        return saved if generation == meta.get("generation") and ann.ntotal == len(ids) else None


@dataclass(frozen=True)
class IndexReport:
    """What :func:`build_index` did."""

    path: Path
    kind: str
    mode: str  # "built", "updated" or "unchanged"
    n: int
    dim: int
    added: int
    removed: int
    breadth: int
    recall: float | None
    seconds: float
    nbytes: int  # size of the saved index file
    note: str = ""  # why the index is not of the kind asked for
    rerank: str = ""  # the re-ranking data: "built", "unchanged" or "" (not saved)
    rerank_path: Path | None = None
    rerank_nbytes: int = 0
    augment: str = ""  # the augmentation file: "built", "unchanged" or "" (not saved)
    augment_path: Path | None = None
    augment_nbytes: int = 0


def index_path(store: FeatureStore, run: Run, spec: VectorSpec) -> Path:
    """Where the index of a run's vector set is saved."""
    return store.indexes_dir / f"run{run.id}-{spec.slug}.faiss"


def build_index(store: FeatureStore, vs: VectorSet, kind: str = "auto", *, rebuild: bool = False,
                target_recall: float = 0.95, wait: bool = True, rerank: bool | None = None
                ) -> tuple[CollectionIndex, IndexReport]:
    """Create or incrementally update the saved index of a vector set, and save it under the store's write lock.

    Ranking data saved beside it (each unless the saved file is current and not ``rebuild``): with ``rerank=None``
    (the default) the augmentation file of an all-layers set (what the default ranking reads above
    :data:`~mess.search.rerank_store.IN_MEMORY_TRACKS` tracks), with ``rerank=True`` the set's whole re-ranking data
    and its augmentation file (of any set), with ``rerank=False`` neither. With ``wait=False`` a store another
    process is writing raises StoreBusy instead of waiting.
    """
    start = time.perf_counter()
    odd = indexes_blocked(store)
    if odd is not None:  # said before the build, not as mkdir's "File exists" after it
        raise StoreError(f"cannot save the index: {store.indexes_dir} is {odd}, not the folder of saved indexes; "
                         "`mess check --repair` moves it aside")
    path = index_path(store, vs.run, vs.spec)
    old = None if rebuild else CollectionIndex.load(path)
    requested = old.requested if old is not None and kind == "auto" else kind
    mode, added, removed = "built", len(vs.ids), 0
    if old is not None and old.spec == vs.spec and old.run_id == vs.run.id and old.source == vs.source:
        new_hash = dict(zip(vs.ids.tolist(), vs.hashes.tolist(), strict=False))
        old_hash = dict(zip(old.ids.tolist(), old.hashes.tolist(), strict=False))
        gone = np.array([i for i, h in old_hash.items() if new_hash.get(i) != h], dtype=np.int64)
        fresh = np.array([i for i, h in new_hash.items() if old_hash.get(i) != h], dtype=np.int64)
        wanted = built_kind(requested, len(vs.ids))  # a flat index built for too small an ivf request is current
        drift = old.drift + len(gone) + len(fresh)  # counted from the build the preprocessor was fitted at
        # and statistics it could not fit (plain cosines below MIN_FIT_TRACKS) are not kept once it can
        small = drift <= REBUILD_FRACTION * max(old.fitted, 1) and (old.fitted >= MIN_FIT_TRACKS
                                                                    or len(vs.ids) < MIN_FIT_TRACKS)
        if wanted == old.ann.kind and small and (old.ann.removable or not len(gone)):
            if old.ann.kind == "flat" and (len(gone) or len(fresh)):
                # rebuilt: as cheap as an update, and exact with the collection's own statistics, as the in-memory
                # search is (updated in place, it kept the first build's z-scores and answered otherwise)
                index = CollectionIndex(AnnIndex.build(vs.unit(), vs.ids, "flat"), vs.prep, vs.ids.copy(),
                                        vs.hashes.copy(), vs.spec, vs.run.id, requested, len(vs.ids),
                                        source=vs.source)
            else:
                if len(gone):
                    old.ann.remove(gone)
                if len(fresh):
                    old.ann.add(old.prep.apply(vs.raw[vs.rows(fresh)]), fresh)
                index = CollectionIndex(old.ann, old.prep, vs.ids.copy(), vs.hashes.copy(), vs.spec, vs.run.id,
                                        requested, old.fitted, drift, vs.source)
            mode = "updated" if len(gone) or len(fresh) else "unchanged"
            added, removed = len(fresh), len(gone)
    if mode == "built":
        ann = AnnIndex.build(vs.unit(), vs.ids, requested, target_recall=target_recall, keys=vs.hashes)
        index = CollectionIndex(ann, vs.prep, vs.ids.copy(), vs.hashes.copy(), vs.spec, vs.run.id, requested,
                                len(vs.ids), source=vs.source)
    rpath, apath = rerank_path(store, vs.run, vs.spec), augment_path(store, vs.run, vs.spec)
    augment = bool(rerank) or (rerank is None and vs.spec.kind == "all")
    saved = read_reranker(rpath, vs) if rerank and not rebuild else None
    acurrent = augment and not rebuild and read_augmentation(apath, vs) is not None
    reranker = collection_reranker(store, vs) if rerank and saved is None else None
    aug, whole = None, reranker if reranker is not None else saved
    if augment and not acurrent:  # a re-ranker's own, else one built afresh or for (or read by) searches
        aug = whole.aug if whole is not None else (
            build_augmentation(vs.unit()) if rebuild else load_augmentation(store, vs))
    rbytes = abytes = 0
    if mode != "unchanged" or reranker is not None or aug is not None:
        with store.writing("mess index", wait=wait):
            if mode != "unchanged":
                index.save(path)
            if aug is not None:
                abytes = save_augmentation(apath, vs, aug)
            if reranker is not None:
                rbytes = save_reranker(rpath, vs, reranker)
    note = "" if requested in ("auto", index.ann.kind) else (
        f"{requested} needs {2 * n_lists(len(vs.ids))} tracks to train its lists; {len(vs.ids)} got a flat index "
        "(exact)")
    report = IndexReport(path, index.ann.kind, mode, len(vs.ids), vs.raw.shape[1], added, removed,
                         index.ann.breadth, index.ann.recall, time.perf_counter() - start, path.stat().st_size, note,
                         ("unchanged" if saved is not None else "built") if rerank else "", rpath if rerank else None,
                         (rbytes or rpath.stat().st_size) if rerank else 0,
                         ("unchanged" if acurrent else "built") if augment else "", apath if augment else None,
                         (abytes or apath.stat().st_size) if augment else 0)
    return index, report


def open_index(store: FeatureStore, vs: VectorSet) -> CollectionIndex:
    """The saved index when it matches ``vs`` exactly, else an exact in-memory one.

    Memoised until the catalog or the saved index file changes (see :meth:`FeatureStore.cached`).
    The in-memory fallback is flat: it builds instantly and is exact; run
    :func:`build_index` (``mess index``) for approximate search on large collections.
    """
    path = index_path(store, vs.run, vs.spec)
    return store.cached(("index", str(path), _saved_at(path), vs.fingerprint), lambda: _open_index(path, vs))


def _saved_at(path: Path) -> tuple[tuple[int, int] | None, ...]:
    """(mtime, size) of a saved index's three files (None for one that cannot be found: missing, or STORE/indexes
    not a folder): changes with every save."""
    stamps: list[tuple[int, int] | None] = []
    for p in (path, path.with_suffix(".json"), path.with_suffix(".npz")):
        try:
            st = p.stat()
            stamps.append((st.st_mtime_ns, st.st_size))
        except OSError:  # the in-memory index answers; `mess index` says what stops a save
            stamps.append(None)
    return tuple(stamps)


def _open_index(path: Path, vs: VectorSet) -> CollectionIndex:
    saved = CollectionIndex.load(path) if path.exists() else None
    if saved is not None and saved.is_current(vs):
        return saved
    ann = AnnIndex.build(vs.unit(), vs.ids, "flat")
    return CollectionIndex(ann, vs.prep, vs.ids.copy(), vs.hashes.copy(), vs.spec, vs.run.id, source=vs.source)


def stale_indexes(store: FeatureStore) -> list[Path]:
    """Saved indexes that no longer match the store: their run is gone, their tracks' contents changed, or their
    vectors are no longer what the spec reads (an aspect probed onto another layer, fused vectors applied again);
    and the sidecars of an index file that is missing (:func:`_orphan_sidecars`).

    A stale index is never used for answers (:func:`open_index` checks it against the
    vectors first), but it is dead weight on disk; ``mess check --repair`` deletes it. Saved ranking data (re-ranking
    data, augmentation files) that no longer matches its vectors (:func:`mess.search.rerank_store.stale_ranking_data`)
    is listed too.
    """
    return index_states(store)[0]


def indexes_blocked(store: FeatureStore) -> str | None:
    """What stands where the folder of saved indexes belongs ('a file', ...), so that no index can be saved; None
    for a folder, or nothing (the first save makes it)."""
    folder = store.indexes_dir
    if folder.is_dir() or not (folder.exists() or folder.is_symlink()):
        return None
    return "a broken symbolic link" if not folder.exists() else "a file"


def index_states(store: FeatureStore) -> tuple[list[Path], list[BehindIndex]]:
    """(:func:`stale_indexes`, the saved indexes of the runs answers read (the one each model's name picks) that lack
    tracks added since they were built), reading each saved index once."""
    saved = _saved_indexes(store)
    stale = [path for path, old, _ in saved if old] + _orphan_sidecars(store) + stale_ranking_data(store)
    return stale, [behind for _, _, behind in saved if behind is not None and behind.missing
                   and store.run(behind.run.model).id == behind.run.id]


@dataclass(frozen=True)
class BehindIndex:
    """A saved index whose tracks are all current but that lacks tracks added since it was built: answers pass it by
    for an exact index built in memory on every search, until `mess index` adds them."""

    path: Path
    run: Run
    spec: VectorSpec
    missing: int  # tracks of its vector set not in it
    tracks: int  # tracks of its vector set


def _saved_indexes(store: FeatureStore) -> list[tuple[Path, bool, BehindIndex | None]]:
    """Each saved index: whether it is stale (see :func:`stale_indexes`) and, for one that is not, what it lacks of
    its vector set (None when that set cannot be read: damaged fused vectors, which `mess check` names)."""
    runs = {run.id: run for run in store.runs()}
    found: list[tuple[Path, bool, BehindIndex | None]] = []
    for path in sorted(store.indexes_dir.glob("run*.faiss")) if store.indexes_dir.exists() else []:
        saved = _saved_tracks(path)
        run = runs.get(saved.run_id) if saved is not None else None
        if saved is None or run is None or saved.source != _source(store, run, saved.spec):
            found.append((path, True, None))
            continue
        current = {t.id: t.content_hash for t in store.tracks(run)}
        held = dict(zip(saved.ids.tolist(), saved.hashes.tolist(), strict=False))
        if any(current.get(i) != h for i, h in held.items()):
            found.append((path, True, None))
            continue
        try:
            if saved.spec.kind == FUSED:  # its vector set: the tracks with fused vectors
                with_fused = set(store.derived_matrix(run, FUSED)[0].tolist())
                current = {i: h for i, h in current.items() if i in with_fused}
        except StoreError:
            found.append((path, False, None))
            continue
        found.append((path, False, BehindIndex(path, run, saved.spec, len(current.keys() - held.keys()), len(current))))
    return found


@dataclass(frozen=True)
class _SavedTracks:
    """What a saved index holds and was built from, read without the index itself."""

    run_id: int
    spec: VectorSpec
    source: str
    ids: np.ndarray
    hashes: np.ndarray


def _saved_tracks(path: Path) -> _SavedTracks | None:
    """The tracks a saved index holds, checked as :meth:`CollectionIndex.load` checks them (its file summed, not
    read into memory: `mess check` held every index in memory to compare its track ids); None when it would load
    none."""
    try:
        meta = AnnIndex.described(path)
        with np.load(path.with_suffix(".npz")) as arrays:
            ids, hashes, generation = arrays["ids"], arrays["hashes"], str(arrays["generation"])
        kind, name, norm = meta["spec"]
        saved = _SavedTracks(meta["run_id"], VectorSpec(kind, name, norm), str(meta.get("source", "")), ids,
                             hashes)
    except (*NPZ_ERRORS, RuntimeError, TypeError):
        return None
    return saved if generation == meta.get("generation") and meta.get("n", len(ids)) == len(ids) else None


def _orphan_sidecars(store: FeatureStore) -> list[Path]:
    """An index's ``.npz`` or ``.json`` without its ``.faiss``: a first save cut short after the ``.npz`` (the track
    ids and hashes it holds, 128 MB at a million tracks), or an index file deleted by hand."""
    if not store.indexes_dir.is_dir():
        return []
    found = [*store.indexes_dir.glob("run*.npz"), *store.indexes_dir.glob("run*.json")]
    return sorted(p for p in found
                  if not p.name.endswith((SUFFIX, AUGMENT_SUFFIX)) and not p.with_suffix(".faiss").exists())


def _source(store: FeatureStore, run: Run, spec: VectorSpec) -> str | None:
    """:func:`vectors_source`, None when the spec reads nothing now (its aspect is gone from the map, say)."""
    try:
        return vectors_source(store, run, spec)
    except StoreError:
        return None


def delete_index(path: Path) -> str:
    """Remove a saved index and its sidecars (or saved ranking data, one file); what was done, one line. A folder
    standing where one of them belongs is renamed aside (``NAME.<ns>.not-an-index``), nothing in it deleted."""
    one = path.name.endswith((SUFFIX, AUGMENT_SUFFIX))
    aside = []
    for p in (path,) if one else (path, path.with_suffix(".json"), path.with_suffix(".npz")):
        if p.is_dir() and not p.is_symlink():
            aside.append(p.rename(p.with_name(f"{p.name}.{time.time_ns()}.not-an-index")).name)
        else:
            p.unlink(missing_ok=True)
    moved = f"; moved the folder{'s' * (len(aside) > 1)} standing in its place aside to {', '.join(aside)}"
    return f"deleted stale index {path.name}" + (moved if aside else "")
