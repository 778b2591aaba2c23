"""Vectors out of the store for research: per-track or per-segment rows with ids, paths and tags.

``npz``: one array per column (``track_id``, ``path``, tags, ``duration`` in seconds, NaN where unknown, with segments
``segment_start`` and ``segment_seconds``, the window's start and length: the policy's window, or a track no longer
than one window, whole) plus ``vectors_<layer>`` [rows, dim] float32 and ``layers``, ``model``,
``run_id``, ``revision``, ``policy`` (the run's window policy as JSON: a model extracted again with another
policy or revision has a second run), ``files_not_embedded`` (catalogued files with neither vectors nor a failure
in the run) and ``files_failed`` (files the run failed to extract, `mess info --failures`): neither is in the rows.
``parquet``: the same columns, each layer a fixed-size list<float32> column named after it (``vectors_<layer>`` where
a layer has another column's name: ``genre``, ``duration``); model, run_id, revision, policy, layer names, their
columns (``layer_columns``), files_not_embedded and files_failed in the schema metadata (``mess``, JSON).
``csv``: one row per track (or window), the same columns, then ``model``, ``run_id``, ``revision`` and ``policy`` in
every row (a CSV has no other place for them), then one column per dimension, ``<layer>_<i>`` (``fused_<i>``), each
value with the 9 significant digits that give its float32 back; NaN durations are empty cells.
With ``fused``, the one vector column is the fused vectors of `mess fuse apply` (``vectors_fused``, layers
``["fused"]``), with ``fused_checkpoint_sha256`` (the network that made them) and ``tracks_not_fused`` (tracks of the
run without one, extracted since: not in the rows).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mess.constants import FUSED
from mess.store.errors import StoreError
from mess.store.feature_store import FeatureStore
from mess.store.fused import fused_matrix
from mess.store.paths import expanded, inside_store, printable, replacing
from mess.store.records import Run

FORMATS = ("npz", "parquet", "csv")
TAGS = ("path", "content_hash", "artist", "album", "title", "genre", "composer")


@dataclass(frozen=True)
class ExportSummary:
    """What was written."""

    path: Path
    rows: int
    tracks: int
    layers: tuple[str, ...]
    segments: bool
    files_not_embedded: int = 0  # catalogued files with neither vectors nor a recorded failure: not in the rows
    files_failed: int = 0  # files the run failed to extract: not in the rows either
    tracks_not_fused: int = 0  # with fused: tracks of the run without a fused vector (extracted since fuse apply)


def export_vectors(store: FeatureStore, run: Run, out: Path, fmt: str = "npz", *, layers: Sequence[str] | None = None,
                   segments: bool = False, fused: bool = False) -> ExportSummary:
    """Write ``run``'s vectors (all layers, or ``layers`` by name or index, or with ``fused`` its fused vectors) to
    ``out`` as npz, parquet or CSV.

    Rows are tracks, or with ``segments`` the per-window vectors (``segment_start`` and ``segment_seconds``: where
    the window starts and how long it is). StoreError for
    fused vectors with layers or segments, or where the run has none (or :func:`mess.store.fused.fused_matrix`
    refuses them as another run's). The file is
    written beside ``out`` and renamed over it: a killed export leaves a previous ``out`` whole (a
    device or a pipe, such as /dev/stdout, is written into).
    """
    given, fmt = fmt, fmt.lower()  # 'NPZ' as 'npz', as the name 'out.NPZ' is
    layers = (layers,) if isinstance(layers, str) else layers  # one layer's name, not its letters
    if expanded(out).is_dir():  # its name has no extension: it was called an unknown export format ''
        example = Path(out) / f"vectors.{fmt if fmt in FORMATS else 'npz'}"
        raise StoreError(f"{out} is a folder; give the file to write, such as {example}")
    if fmt not in FORMATS:
        raise StoreError(f"unknown export format {given!r}; choose {', '.join(FORMATS[:-1])} or {FORMATS[-1]}")
    if fused and (layers or segments):
        raise StoreError("fused vectors have no layers or windows: export them without --layers and --segments")
    names = (FUSED,) if fused else tuple(dict.fromkeys(run.layer_names[run.layer_index(x)]
                                                       for x in (layers or run.layer_names)))
    out = expanded(out)
    if inside_store(out, store.root):  # 'export STORE/catalog.sqlite' overwrote the catalog
        raise StoreError(f"{out} is inside the feature store {store.root}, whose files only mess writes; "
                         "export to a path outside it")

    def read() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int, int, dict | None, int]:
        columns, vectors, missing, failed = _columns(store, run, names, segments, fused)
        fused_meta, n_tracks = (store.derived_meta(run, FUSED), len(store.tracks(run))) if fused else (None, 0)
        return columns, vectors, missing, failed, fused_meta, n_tracks

    # the fused vectors, the checkpoint that made them and the run's tracks: one version (a newer one where fuse
    # apply rewrote the set twice meanwhile)
    columns, vectors, missing, failed, fused_meta, n_tracks = store.reading(read)
    if out.parent.exists() and not out.parent.is_dir():  # mkdir said "File exists" of a file it would not replace
        raise StoreError(f"cannot write {out}: {out.parent} is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model": run.model, "run_id": run.id, "revision": run.revision, "policy": run.policy, "layers": names,
            "files_not_embedded": missing, "files_failed": failed}
    not_fused = 0
    if fused:
        not_fused = n_tracks - len(columns["track_id"])
        meta |= {"fused_checkpoint_sha256": (fused_meta or {}).get("checkpoint_sha256") or "",
                 "tracks_not_fused": not_fused}
    {"npz": _write_npz, "parquet": _write_parquet, "csv": _write_csv}[fmt](out, columns, vectors, meta)
    return ExportSummary(out, len(columns["track_id"]), len(set(columns["track_id"].tolist())), names, segments,
                         missing, failed, not_fused)


def _columns(store: FeatureStore, run: Run, names: tuple[str, ...], segments: bool,
             fused: bool) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int, int]:
    vectors: dict[str, np.ndarray] = {}
    ids = starts = None
    with store.snapshot():  # tracks and every layer from one catalog version, though an extract may be committing
        by_id = {t.id: t for t in store.tracks(run)}
        for name in names:
            if fused:
                ids, mat = fused_matrix(store, run)
            elif segments:
                ids, starts, mat = store.segment_matrix(run, name)
            else:
                ids, mat = store.layer_matrix(run, name)
            vectors[name] = mat
        missing, failed = len(store.unembedded(run)), len(store.failures(run))
    if ids is None or not len(ids):
        make = f"`mess fuse apply --model {run.model}`" if fused else "`mess extract`"
        if failed and not fused:  # "run `mess extract` first" to one who did, and whose every file failed
            raise StoreError(f"no vectors for {run.model} in {store.root}: the {failed} files extracted with it "
                             "failed; `mess info --failures` says why")
        raise StoreError(f"no {'fused ' * fused}vectors for {run.model} in {store.root}; run {make} first")
    columns: dict[str, np.ndarray] = {"track_id": ids.astype(np.int64)}
    if segments:
        columns["segment_start"] = np.asarray(starts, dtype=np.float64)
        columns["segment_seconds"] = _window_lengths(run, ids, [by_id[int(i)].duration for i in ids])
    for tag in TAGS:
        columns[tag] = np.array([getattr(by_id[int(i)], tag) or "" for i in ids], dtype=str)
    durations = (by_id[int(i)].duration for i in ids)  # 0 s is a duration: NaN only where none is known
    columns["duration"] = np.array([np.nan if d is None else d for d in durations], dtype=np.float64)
    return columns, vectors, missing, failed


def _window_lengths(run: Run, ids: np.ndarray, durations: list[float | None]) -> np.ndarray:
    """Each window's length in seconds, as the run's window policy cut it: a track of several windows, or longer
    than one, has windows of the policy's length; one no longer than a window is one window of its own length (its
    duration as the catalog has it; NaN where none is known)."""
    window = float(json.loads(run.policy)["window_seconds"])
    _, first, counts = np.unique(ids, return_index=True, return_counts=True)
    several = set(ids[first[counts > 1]].tolist())
    return np.array([window if int(i) in several or (d is not None and d > window) else
                     np.nan if d is None else d for i, d in zip(ids.tolist(), durations, strict=True)],
                    dtype=np.float64)


def _write_npz(out: Path, columns: dict[str, np.ndarray], vectors: dict[str, np.ndarray], meta: dict) -> None:
    arrays = {**columns, **{f"vectors_{n}": v for n, v in vectors.items()},
              **{k: np.array(v) for k, v in meta.items()}}
    with replacing(out) as f:  # a file object: np.savez would append .npz to other names
        np.savez(f, allow_pickle=False, **arrays)


def _write_parquet(out: Path, columns: dict[str, np.ndarray], vectors: dict[str, np.ndarray], meta: dict) -> None:
    import pyarrow as pa  # here: only the Parquet format needs pyarrow, and `mess export` to npz starts without it
    import pyarrow.parquet as pq

    # Parquet strings are UTF-8: a name that is not valid UTF-8 is written as printed (caf\xe9); npz keeps it exact
    fields = {name: pa.array([printable(v) for v in col] if col.dtype.kind == "U" else col)
              for name, col in columns.items()}
    names = []
    for name, mat in vectors.items():
        flat = pa.array(np.ascontiguousarray(mat, dtype=np.float32).ravel())
        column = name
        while column in fields:  # a layer called 'genre' replaced the tag column
            column = f"vectors_{column}"
        names.append(column)
        fields[column] = pa.FixedSizeListArray.from_arrays(flat, mat.shape[1])
    table = pa.table(fields).replace_schema_metadata({"mess": json.dumps({**meta, "layer_columns": names})})
    with replacing(out) as f:
        pq.write_table(table, f)


def _write_csv(out: Path, columns: dict[str, np.ndarray], vectors: dict[str, np.ndarray], meta: dict) -> None:
    import csv
    import io

    run = {k: meta[k] for k in ("model", "run_id", "revision", "policy")} | (
        {"fused_checkpoint_sha256": meta["fused_checkpoint_sha256"]} if "fused_checkpoint_sha256" in meta else {})
    header = [*columns, *run, *(f"{name}_{i}" for name, mat in vectors.items() for i in range(mat.shape[1]))]
    with replacing(out) as f:
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        writer = csv.writer(text)
        writer.writerow(header)
        cells = [[printable(v) for v in col] if col.dtype.kind == "U" else
                 ["" if np.isnan(v) else repr(float(v)) for v in col] if col.dtype.kind == "f" else col.tolist()
                 for col in columns.values()]
        fixed = [str(v) for v in run.values()]
        for r in range(len(columns["track_id"])):
            numbers = (f"{v:.9g}" for mat in vectors.values() for v in mat[r].tolist())
            writer.writerow([*(c[r] for c in cells), *fixed, *numbers])
        text.flush()
        text.detach()  # the file is replacing()'s to close
