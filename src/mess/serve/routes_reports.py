"""Report endpoints: the probe report (which layer encodes which aspect) and, when enabled, indexing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse

from mess.constants import DEFAULT_NORM
from mess.search.ann import KINDS
from mess.search.index import build_index
from mess.search.vectors import load_vectors, vectors_label
from mess.serve.errors import without_paths
from mess.serve.routes_search import NormParam
from mess.serve.routes_tracks import Aspect, Fused, Layer, Learned, Model
from mess.serve.state import ServeState, get_state, vector_spec
from mess.store import StoreBusy
from mess.store.paths import printable
from mess.store.reports import report_paths

router = APIRouter(prefix="/api")
State = Annotated[ServeState, Depends(get_state)]
Probe = Annotated[Literal["ridge", "mlp"], Query(description="Which probe's report: ridge or mlp.")]


def _report_file(state: ServeState, model: str | None, probe: str, ext: str) -> tuple[str, Path]:
    with state.lock:
        run = state.run(model)
        option = state.store.model_option(run)
    path = report_paths(state.store.reports_dir, run.model, run.id, probe)[ext]
    if not path.is_file():
        raise HTTPException(404, f"no {probe} probe report for {run.model}; run `mess probe --model {option}`")
    return run.model, path


@router.get("/probe", summary="Probe report: how well each layer encodes each musical aspect")
def probe_report(state: State, model: Model = None, probe: Probe = "ridge") -> dict:
    """The JSON written by `mess probe` (per layer and aspect scores, the chosen layer per aspect)."""
    name, path = _report_file(state, model, probe, "json")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(500, f"the probe report of {name} is not valid JSON ({exc}); re-run `mess probe`") from None
    return _without_paths(report)


def _without_paths(report: dict) -> dict:
    """The report with the files it left out (changed or removed since extraction) named by file name, and paths in
    its notes by their last part: answers never show where the server keeps its files (the full paths were served)."""
    out = dict(report)
    if isinstance(report.get("missing_tracks"), list):
        out["missing_tracks"] = [_file_named(entry) for entry in report["missing_tracks"]]
    if isinstance(report.get("notes"), dict):
        out["notes"] = {key: without_paths(str(text)) for key, text in report["notes"].items()}
    return out


def _file_named(entry: object) -> object:
    """One left-out file ``{"path": ..., "reason": "PATH: ..."}`` with its path cut to the file's name."""
    if not isinstance(entry, dict):
        return entry
    full = str(entry.get("path", ""))
    name = printable(Path(full).name)
    reason = str(entry.get("reason", ""))
    return {**entry, "path": name, "reason": without_paths(reason.replace(full, name) if full else reason)}


@router.get("/probe/heatmap.png", summary="Probe heatmap image", response_class=FileResponse)
def probe_heatmap(state: State, model: Model = None, probe: Probe = "ridge") -> FileResponse:
    """The layers x targets R^2 heatmap PNG written by `mess probe`."""
    _, path = _report_file(state, model, probe, "png")
    return FileResponse(path, media_type="image/png")


@router.post("/index", summary="Build or update a FAISS index (only with --allow-indexing)",
             responses={403: {"description": "Indexing is disabled"}})
def index(state: State, request: Request, model: Model = None, layer: Layer = None, aspect: Aspect = None,
          fused: Fused = False, learned: Learned = False,
          kind: Annotated[str, Query(description="auto, flat, ivf, ivfpq or hnsw.")] = "auto",
          norm: NormParam = DEFAULT_NORM,
          rerank: Annotated[bool | None, Query(
              description="Ranking data saved beside the index: left out, the augmentation of all layers (what the "
                          "default ranking reads); true, the whole re-ranking data too (what ranking=reranked "
                          "reads); false, neither.")] = None,
          rebuild: Annotated[bool, Query(description="Build from scratch instead of updating (the index and the "
                                                     "ranking data), as `mess index --rebuild`.")] = False,
          target_recall: Annotated[float, Query(ge=0.0, le=1.0, description="Recall@10 that approximate indexes are "
                                                                           "tuned to reach.")] = 0.95) -> dict:
    """Write the index of one vector set under STORE/indexes (the server is read-only otherwise); a request body is a
    400 (it was ignored: ``{"layer": "mfcc"}`` indexed the default vectors)."""
    if not state.allow_indexing:
        raise HTTPException(403, "indexing is disabled; start the server with `mess serve --allow-indexing`")
    if request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers:
        raise HTTPException(400, "/api/index takes no request body; give its parameters in the query "
                                 "(/api/index?layer=mfcc&kind=flat)")
    if kind != "auto" and kind not in KINDS:
        raise HTTPException(400, f"unknown index kind {kind!r}; choose auto, {', '.join(KINDS)}")
    with state.lock:
        run = state.run(model)
        spec = vector_spec(state.store, run, layer, aspect, fused, learned, norm)
        try:
            with state.store.writing("mess serve: index", wait=False):  # no extract commits between read and save
                vs = load_vectors(state.store, run, spec)
                _, report = build_index(state.store, vs, kind, rebuild=rebuild, target_recall=target_recall,
                                        wait=False, rerank=rerank)
        except StoreBusy as exc:  # the store named by its folder's name, as every answer names it
            busy = printable(str(exc).replace(str(state.store.root), state.store.root.name))
            raise HTTPException(503, busy, headers={"Retry-After": "30"}) from None
    return {"model": run.model, "vectors": vectors_label(layer, aspect, fused, learned), "norm": vs.spec.norm,
            "norm_note": vs.norm_note, "kind": report.kind,
            "mode": report.mode, "tracks": report.n, "added": report.added, "removed": report.removed,
            "recall": report.recall, "seconds": round(report.seconds, 3), "file": report.path.name,
            "note": report.note or None, "rerank": report.rerank, "augment": report.augment,
            "augment_file": report.augment_path.name if report.augment_path else None,
            "augment_bytes": report.augment_nbytes,
            "rerank_file": report.rerank_path.name if report.rerank_path else None,
            "rerank_bytes": report.rerank_nbytes}
