"""Saved ranking data, written beside a vector set's index: its augmentation, or its whole re-ranking data.

The default ranking of all layers (augmented) needs only each track's augmentation (:mod:`mess.search.augment`:
its :data:`~mess.search.augment.DBA_K` neighbours' rows, their weights and its norm: 3.6 MiB at 20,000 tracks,
10 s to build there on 2 cores; ``benchmarks/index_ranking_data.py``). So ``mess index`` saves, by default and for
all layers, that alone to ``STORE/indexes/run<id>-<spec>.augment.npz`` (:func:`save_augmentation`). Only ``mess
index --rerank`` builds and saves the whole :class:`~mess.search.rerank.Reranker` that ``--ranking reranked``
reads, to ``run<id>-<spec>.rerank.npz`` (:func:`save_reranker`): the augmentation, both neighbour lists and every
track's k-reciprocal vectors (all but the unit vectors, which are the vector set's); up to half a minute and 2.8 GiB
peak at 20,000 tracks x 5,000 dims on 2 cores (``benchmarks/rerank.py``).

Both files carry what they were computed from (:func:`_identity`, checked by :func:`_matches`): the vector set's
fingerprint (run, spec, source, track ids and contents), its ids and hashes, its preprocessor (the power exponent
included), a checksum of its unit vectors, a format number and the constants. Each is one file, replaced whole, so
a reader never meets parts of two saves.

:func:`load_reranker` answers from the re-ranking file only when all of that matches the vectors now, and otherwise
builds in memory as without it; :func:`load_augmentation` reads either file (the augmentation file first) on the same
terms. ``mess check`` reports a file that no longer matches, or cannot be read, as a stale index, and ``mess check
--repair`` deletes it (:func:`stale_ranking_data`). :func:`ranking_choice` decides which ranking a search uses: the
default's augmented ranking of all layers is used when its augmentation is saved and current, or quick to build
(:data:`IN_MEMORY_TRACKS`).
"""

from __future__ import annotations

import io
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar, cast

import numpy as np

from mess.constants import FUSED, LEARNED, NPZ_ERRORS, VectorKind
from mess.search.augment import DBA_K, Augmentation, build_augmentation
from mess.search.expansion import EXPAND_ALPHA, EXPAND_K
from mess.search.graph import NeighbourGraph
from mess.search.rerank import K1, K2, LAMBDA, Reranker, collection_reranker
from mess.search.segments import check_match
from mess.search.vectors import Norm, Preprocessor, VectorSet, VectorSpec, load_vectors
from mess.store import FeatureStore, Run, StoreError
from mess.store.paths import replace_file

if TYPE_CHECKING:
    from scipy import sparse  # imported where used, as in mess.search.rerank

T = TypeVar("T")
SUFFIX = ".rerank.npz"
AUGMENT_SUFFIX = ".augment.npz"
FORMAT = 1
AUGMENT_FORMAT = 1
# the most tracks the default builds its augmentation for unasked: 3.3 s at 10,000 x 5,000 dims on 2 cores (17 s at
# 20,000)
IN_MEMORY_TRACKS = 10_000
RANKINGS = ("auto", "plain", "augmented", "reranked")
Ranking = Literal["plain", "augmented", "reranked"]
CHECKSUM_TOLERANCE = 1e-4  # per row sum of unit vectors: float rounding on another machine, not another vector


def rerank_path(store: FeatureStore, run: Run, spec: VectorSpec) -> Path:
    """Where the re-ranking data of a run's vector set is saved (beside its index)."""
    return store.indexes_dir / f"run{run.id}-{spec.slug}{SUFFIX}"


def augment_path(store: FeatureStore, run: Run, spec: VectorSpec) -> Path:
    """Where the augmentation of a run's vector set is saved on its own (beside its index)."""
    return store.indexes_dir / f"run{run.id}-{spec.slug}{AUGMENT_SUFFIX}"


def _params() -> np.ndarray:
    """The format and the constants re-ranking data is computed with: data saved with others is not used."""
    return np.array([FORMAT, DBA_K, K1, K2, EXPAND_K, EXPAND_ALPHA, LAMBDA], dtype=np.float64)


def _augment_params() -> np.ndarray:
    """The format and the constants an augmentation file is computed with (another length than :func:`_params`, so
    neither file passes for the other)."""
    return np.array([AUGMENT_FORMAT, DBA_K, EXPAND_ALPHA], dtype=np.float64)


def _checksum(unit: np.ndarray) -> np.ndarray:
    """Each unit vector's sum: changes with any vector the fingerprint could not see change."""
    return unit.sum(axis=1, dtype=np.float64)


def _identity(vs: VectorSet, unit: np.ndarray, params: np.ndarray) -> dict[str, np.ndarray]:
    """What saved data was computed from (checked by :func:`_matches`): the constants, the vector set's fingerprint,
    run, spec, source, ids, hashes, preprocessor and a checksum of its unit vectors ``unit``."""
    return {"params": params, "fingerprint": np.array(vs.fingerprint), "run_id": np.array(vs.run.id),
            "spec": np.array([vs.spec.kind, vs.spec.name, vs.spec.norm]), "source": np.array(vs.source),
            "ids": vs.ids, "hashes": vs.hashes, "checksum": _checksum(unit),
            **{f"prep_{k}": v for k, v in vs.prep.arrays().items()}}


def _matches(f: np.lib.npyio.NpzFile, vs: VectorSet, params: np.ndarray) -> bool:
    """Whether the saved data in ``f`` was computed from exactly ``vs`` (fingerprint, ids, hashes, preprocessor, unit
    vectors) with the constants ``params``; KeyError, ValueError... for a damaged file."""
    return (str(f["fingerprint"]) == vs.fingerprint and np.array_equal(f["params"], params)
            and np.array_equal(f["ids"], vs.ids) and np.array_equal(f["hashes"], vs.hashes)
            and _same_prep(Preprocessor.from_arrays({k[5:]: f[k] for k in f.files if k[:5] == "prep_"}), vs.prep)
            and bool(np.allclose(f["checksum"], _checksum(vs.unit()), rtol=0, atol=CHECKSUM_TOLERANCE)))


def _write(path: Path, arrays: dict[str, np.ndarray]) -> int:
    """Write ``arrays`` to ``path`` as one .npz, replaced whole; its size in bytes."""
    out = io.BytesIO()
    np.savez(out, allow_pickle=False, **arrays)
    data = out.getvalue()
    replace_file(path, data)
    return len(data)


def _aug_arrays(aug: Augmentation) -> dict[str, np.ndarray]:
    return {"aug_rows": aug.rows, "aug_weights": aug.weights, "aug_norms": aug.norms}


def _read_aug(f: np.lib.npyio.NpzFile) -> Augmentation:
    return Augmentation(f["aug_rows"], f["aug_weights"], f["aug_norms"])


def save_reranker(path: Path, vs: VectorSet, r: Reranker) -> int:
    """Write ``r`` (made by :func:`collection_reranker` from ``vs``) to ``path``, replaced whole; its size in
    bytes."""
    if r.lam != LAMBDA or r.k2 != K2 or len(r.unit) != len(vs.ids):
        raise ValueError("only the re-ranker of the vector set with the default constants is saved")
    return _write(path, {
        **_identity(vs, r.unit, _params()), **_aug_arrays(r.aug), "top_rows": r.top.rows, "top_scores": r.top.scores,
        "top_lowest": r.top.lowest, "qe_rows": r.qe_rows, "qe_scores": r.qe_scores,
        **_csr_arrays("recip", r.recip), **_csr_arrays("recip0", r.recip0)})


def save_augmentation(path: Path, vs: VectorSet, aug: Augmentation) -> int:
    """Write ``aug`` (the augmentation of ``vs``'s unit vectors, :func:`build_augmentation`) to ``path`` on its own,
    replaced whole; its size in bytes."""
    if len(aug.norms) != len(vs.ids):
        raise ValueError("only the augmentation of the vector set's own tracks is saved")
    return _write(path, {**_identity(vs, vs.unit(), _augment_params()), **_aug_arrays(aug)})


def _csr_arrays(name: str, m: sparse.csr_matrix) -> dict[str, np.ndarray]:
    return {f"{name}_data": m.data, f"{name}_indices": m.indices, f"{name}_indptr": m.indptr}


def read_reranker(path: Path, vs: VectorSet) -> Reranker | None:
    """The re-ranker saved at ``path`` when it was computed from exactly ``vs`` (fingerprint, ids, hashes,
    preprocessor, unit vectors) with today's constants; None when it is missing, damaged or from anything else."""
    try:
        with np.load(path) as f:
            if not _matches(f, vs, _params()):
                return None
            n = len(vs.ids)
            r = Reranker(vs.unit(), _read_aug(f), NeighbourGraph(f["top_rows"], f["top_scores"], f["top_lowest"]),
                         f["qe_rows"], f["qe_scores"], _csr(f, "recip", n), _csr(f, "recip0", n), LAMBDA, K2)
    except (*NPZ_ERRORS, TypeError, IndexError):  # TypeError, IndexError: arrays of the wrong kind or shape
        return None
    return r if _consistent(r) else None


def read_augmentation(path: Path, vs: VectorSet) -> Augmentation | None:
    """The augmentation saved at ``path`` (:func:`save_augmentation`) when it was computed from exactly ``vs`` with
    today's constants (the checks of :func:`read_reranker`); None when it is missing, damaged or from anything
    else."""
    try:
        with np.load(path) as f:
            if not _matches(f, vs, _augment_params()):
                return None
            aug = _read_aug(f)
    except (*NPZ_ERRORS, TypeError, IndexError):
        return None
    return aug if _consistent_augmentation(aug, len(vs.ids)) else None


def _same_prep(a: Preprocessor, b: Preprocessor) -> bool:
    """The same preprocessing: blocks, power and block roles exactly, statistics up to float rounding."""
    return (a.blocks == b.blocks and a.power == b.power and a.unpowered == b.unpowered and a.weights == b.weights
            and a.mean.shape == b.mean.shape
            and a.scale.shape == b.scale.shape and bool(np.allclose(a.mean, b.mean, rtol=1e-5, atol=1e-6))
            and bool(np.allclose(a.scale, b.scale, rtol=1e-5, atol=1e-6)))


def _csr(f: np.lib.npyio.NpzFile, name: str, n: int) -> sparse.csr_matrix:
    from scipy import sparse
    m = sparse.csr_matrix((f[f"{name}_data"], f[f"{name}_indices"], f[f"{name}_indptr"]), shape=(n, n))
    m.check_format(full_check=True)  # ValueError for indices out of range or out of order
    return m


def _consistent_lists(n: int, lists: tuple[tuple[int, np.ndarray, np.ndarray], ...]) -> bool:
    """Neighbour lists (their k, rows, values) of the shapes, kinds and ranges a collection of ``n`` tracks has."""
    for k, rows, values in lists:
        if rows.shape != (n, max(0, min(k, n - 1))) or values.shape != rows.shape or rows.dtype.kind != "i":
            return False
        if not _finite(values):
            return False
        if rows.size and not 0 <= rows.min() <= rows.max() < n:
            return False
    return True


def _finite(v: np.ndarray) -> bool:
    return v.dtype.kind == "f" and bool(np.isfinite(v).all())


def _consistent_augmentation(aug: Augmentation, n: int) -> bool:
    """An augmentation of ``n`` tracks: :data:`DBA_K` neighbours each, positive finite norms."""
    return (_consistent_lists(n, ((DBA_K, aug.rows, aug.weights),)) and aug.norms.shape == (n,)
            and _finite(aug.norms) and bool((aug.norms > 0).all()))


def _consistent(r: Reranker) -> bool:
    """Arrays of the shapes, kinds and ranges a re-ranker of ``len(r.unit)`` tracks has."""
    n = len(r.unit)
    return (_consistent_augmentation(r.aug, n)
            and _consistent_lists(n, ((K1, r.top.rows, r.top.scores), (EXPAND_K, r.qe_rows, r.qe_scores)))
            and r.top.lowest.shape == (n,) and all(_finite(v) for v in (r.top.lowest, r.recip.data, r.recip0.data)))


def load_reranker(store: FeatureStore, vs: VectorSet, on_note: Callable[[str], None] | None = None) -> Reranker:
    """The re-ranker of a vector set: the saved one when it matches ``vs`` exactly (:func:`saved_reranker`), else
    built in memory (and then, on a collection of more than :data:`IN_MEMORY_TRACKS` tracks, ``on_note`` hears that
    `mess index --rerank` saves it). Memoised until its tracks or contents change."""
    saved = saved_reranker(store, vs)
    if saved is not None:
        return saved
    return store.cached(("reranker", vs.fingerprint), lambda: _built(store, vs, on_note))


def _read_memoised(store: FeatureStore, vs: VectorSet, path: Path, name: str,
                   read: Callable[[Path, VectorSet], T | None]) -> T | None:
    """``read(path, vs)``, memoised while the file stays the same (inode, size, modification time: a file that
    `mess index` writes later is read then); None without a file."""
    try:
        stat = path.stat()
    except OSError:
        return None
    stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    return store.cached((name, vs.fingerprint, stamp), lambda: read(path, vs))


def saved_reranker(store: FeatureStore, vs: VectorSet) -> Reranker | None:
    """The saved re-ranker of ``vs`` when it is current, else None; memoised while its file stays the same."""
    return _read_memoised(store, vs, rerank_path(store, vs.run, vs.spec), "saved reranker", read_reranker)


def saved_augmentation(store: FeatureStore, vs: VectorSet) -> Augmentation | None:
    """The saved augmentation of ``vs`` when current: its own file's (:func:`augment_path`), else the saved
    re-ranking data's; None when neither is. Memoised while the files stay the same."""
    aug = _read_memoised(store, vs, augment_path(store, vs.run, vs.spec), "saved augmentation", read_augmentation)
    if aug is not None:
        return aug
    saved = saved_reranker(store, vs)
    return None if saved is None else saved.aug


def _built(store: FeatureStore, vs: VectorSet, on_note: Callable[[str], None] | None) -> Reranker:
    if on_note is not None and len(vs.ids) > IN_MEMORY_TRACKS:
        on_note(f"re-ranking data for {len(vs.ids)} tracks was computed in memory, which takes tens of seconds at "
                f"this size; `{index_hint(vs)} --rerank` saves it for later commands")
    return collection_reranker(store, vs)


def check_ranking(ranking: str, match: str = "mean", hubness: str | None = None, expand: int | None = None) -> None:
    """ValueError (one line) for an unknown ranking, or options an augmented or re-ranked one cannot combine with."""
    if ranking not in RANKINGS:
        raise ValueError(f"unknown ranking {ranking!r}; choose one of {', '.join(RANKINGS)}")
    if ranking in ("augmented", "reranked"):
        if check_match(match) != "mean":
            raise ValueError(f"--ranking {ranking} works on track vectors: use it with --match mean, not segments")
        if hubness:
            raise ValueError(f"--ranking {ranking} and --hubness are two re-rankings: choose one")
        if expand not in (None, EXPAND_K):
            raise ValueError(f"--ranking {ranking} expands queries itself (with {EXPAND_K} tracks): leave out --expand")


def ranking_choice(store: FeatureStore, vs: VectorSet, ranking: str = "auto", match: str = "mean",
                   hubness: str | None = None, expand: int | None = None,
                   on_note: Callable[[str], None] | None = None) -> Ranking:
    """The ranking a search of ``vs`` uses. "plain", "augmented" or "reranked" as asked (ValueError, one line, for
    options they do not combine with); "auto" (the default): augmented for all layers together when no other
    ranking was asked for (mean matching, no hubness, the default expansion) and its data needs no long build
    (saved and current, or at most :data:`IN_MEMORY_TRACKS` tracks), else plain (``on_note`` hears why when the
    size was the reason). One layer or aspect ranks plain: augmentation was measured on all layers only."""
    check_ranking(ranking, match, hubness, expand)
    if ranking != "auto":
        return cast("Ranking", ranking)
    if vs.spec.kind != "all" or match != "mean" or hubness or expand not in (None, EXPAND_K):
        return "plain"
    if len(vs.ids) <= IN_MEMORY_TRACKS or saved_augmentation(store, vs) is not None:
        return "augmented"
    if on_note is not None:
        on_note(f"plain ranking: the augmented ranking of {len(vs.ids)} tracks needs data that takes tens of seconds "
                f"to build at this size; `{index_hint(vs)}` saves it, and later commands use it")
    return "plain"


def load_augmentation(store: FeatureStore, vs: VectorSet) -> Augmentation:
    """The database-side augmentation of a vector set: the saved one when current (its own file, or the saved
    re-ranking data's: :func:`saved_augmentation`), else built in memory
    (:func:`mess.search.augment.build_augmentation`) and memoised until its tracks or contents change."""
    saved = saved_augmentation(store, vs)
    if saved is not None:
        return saved
    return store.cached(("augmentation", vs.fingerprint), lambda: build_augmentation(vs.unit()))


def index_hint(vs: VectorSet) -> str:
    """The `mess index` command of ``vs``: it saves the augmentation of all layers (add ``--rerank`` for the whole
    re-ranking data)."""
    return index_command(vs.run, vs.spec)


def index_command(run: Run, spec: VectorSpec) -> str:
    """The `mess index` command that builds or updates the index of a run's vector set ``spec``."""
    option = {"layer": f" --layer {shlex.quote(spec.name)}", "aspect": f" --aspect {shlex.quote(spec.name)}",
              FUSED: " --fused", LEARNED: " --learned"}.get(spec.kind, "")
    return f"mess index --model {shlex.quote(run.model)}{option} --norm {spec.norm}"


def stale_ranking_data(store: FeatureStore) -> list[Path]:
    """Saved ranking data (re-ranking data, augmentation files) no longer used for answers: unreadable or damaged,
    its run gone, or computed from other vectors than the spec reads now (tracks added, removed or changed, another
    preprocessing)."""
    runs = {run.id: run for run in store.runs()}
    if not store.indexes_dir.is_dir():
        return []
    found = sorted([*store.indexes_dir.glob(f"run*{SUFFIX}"), *store.indexes_dir.glob(f"run*{AUGMENT_SUFFIX}")])
    return [path for path in found if not _current(store, path, runs)]


def _current(store: FeatureStore, path: Path, runs: dict[int, Run]) -> bool:
    augmentation = path.name.endswith(AUGMENT_SUFFIX)
    try:
        with np.load(path) as f:
            run_id = int(f["run_id"])
            kind, name, norm = (str(s) for s in f["spec"])
    except (*NPZ_ERRORS, TypeError):
        return False
    run = runs.get(run_id)
    spec = VectorSpec(cast("VectorKind", kind), name, cast("Norm", norm))
    where = augment_path if augmentation else rerank_path
    if run is None or where(store, run, spec).name != path.name:  # another set's data under this name
        return False
    try:
        vs = load_vectors(store, run, spec)
    except (StoreError, ValueError):  # its aspect gone from the map, fused vectors of another run...
        return False
    return (read_augmentation(path, vs) if augmentation else read_reranker(path, vs)) is not None
