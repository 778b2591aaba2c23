"""`mess extract --engine ray`: the local extraction pipeline expressed with Ray Data.

Two streaming Ray Data passes, reusing the local pipeline's pieces:

1. catalogue: ``inspect_file`` (hash, probe, tags) on CPU tasks; the driver upserts
   each file into the catalog and keeps only content not yet embedded in this run
   (workers never touch SQLite);
2. embed: ``decode_windows`` on CPU tasks -> ``embed_prepared`` -> rows streamed back to the driver, which
   commits them with ``FeatureStore.write_vectors`` every ``write_every`` tracks.

On CPUs the model runs in the decoding tasks themselves (:func:`mess.scale.embedder.embed_batch`): each Ray worker
process loads it once and keeps it, so a run, and every later run of the same driver, starts no process of its own.
With ``device="cuda"`` an actor pool embeds (a GPU and a model per actor), fed by the CPU tasks.
Writes are idempotent per (run, content hash) and crash-safe, so a killed job rerun
continues where it stopped. Ray Data's defaults make the job survive worker deaths:
CPU tasks are retried without limit, actors restarted without limit and their batches retried.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import ray
import ray.data
from ray.exceptions import RayError

from mess.audio.windows import WindowPolicy
from mess.constants import port_problem
from mess.extract.decode_worker import DECODE_TIMEOUT
from mess.extract.pipeline import ExtractSummary, prune
from mess.extract.runs import record_source, run_key
from mess.models.base import ModelInfo
from mess.scale.embedder import Embedder, embed_batch, split_row
from mess.scale.gpu import run_info
from mess.scale.stderr import dropping
from mess.scale.tasks import decode_row, inspect_row
from mess.store import FeatureStore, Run, TrackVectors
from mess.store.paths import printable

log = logging.getLogger(__name__)

ROWS_PER_BLOCK = 2  # files per Ray Data block: small blocks stream results to the driver steadily
MAX_BLOCKS = 200_000  # beyond this, split the collection into several jobs (one per store shard)
FLUSH_SECONDS = 2.0  # also commit pending vectors this often, whatever their number
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours the task names in its messages
# a traceback's last line: "mess.scale.embedder.ModelMismatch: ..." or "ValueError: ..." (not "\tpid: 12")
_RAISED = re.compile(r"^((?:[A-Za-z_]\w*\.)+[A-Za-z_]\w*|[A-Za-z_]\w*(?:Error|Exception)): (.+)$", re.M)
_CLASS = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")  # "StopIteration", "mess.scale.embedder.ModelMismatch"


_TOKEN_SETUP = "ray._private.authentication.authentication_token_setup"  # the logger of Ray's note on tokens
# Ray core's ERROR line on every job ('Actor ... has constructor arguments in the object store and max_restarts > 0.
# If the arguments ... are lost, the actor restart will fail. See .../issues/53727'), printed once per driver on its
# stderr and kept in its log (python-core-driver-*.log). Ray Data hands each actor its map function by object
# reference and restarts actors without limit, the job's fault tolerance: neither can change here without losing
# the restarts, the line names nothing a user can do, and Ray has no setting for it alone (RAY_BACKEND_LOG_LEVEL
# hides every error and prints a line of its own). It is written by Ray's C++ logger to descriptor 2: dropped there.
_RESTART_NOTE = b"has constructor arguments in the object store and max_restarts > 0"


class ScaleError(Exception):
    """The Ray cluster cannot run the job (unreachable, no GPUs); the message says why."""


class _OffTheConsole(logging.Filter):
    """Ray Data's report of a failed job (the driver's traceback, 'please open an issue on the Ray project'), marked
    for its console handler to drop (records with ``hide``); Ray Data's log file, ray-data.log, keeps it. The job's
    failure is said in one line (:func:`job_failure`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.hide = True
        return True


def extract_ray(store: FeatureStore, paths: Sequence[Path], model_name: str, policy: WindowPolicy, *,
                batch_size: int = 4, device: str = "cpu", address: str | None = None, precision: str = "fp32",
                actors: int | None = None, write_every: int = 16, info: ModelInfo | None = None,
                source: dict[str, str] | None = None, prune_under: Sequence[Path] = (),
                decode_timeout: float = DECODE_TIMEOUT) -> ExtractSummary:
    """Embed every file not yet in the store for this model/revision/policy, on a Ray cluster.

    Args:
        model_name: registry name or model folder; every node must resolve it to the same weights.
        batch_size: windows per forward pass (also tracks per actor call).
        device: "cpu" (the model runs in the CPU tasks) or "cuda" (inference actors, one GPU each).
        address: Ray cluster address ("auto", "ray://head:10001"); None joins the Ray
            instance already initialised in this process, or starts a local one.
        precision: fp32, bf16 or fp16 (autocast; see :mod:`mess.scale.gpu`).
        actors: inference actors, or on CPUs tasks embedding at once; default one per GPU, or one per CPU of the
            cluster.
        write_every: tracks per store commit (or every FLUSH_SECONDS); a killed driver loses at
            most these plus the in-flight ones.
        info: the model's info (with precision applied) when the caller already loaded it.
        source: the loaded model's ``source()``, recorded with the run (with ``info``).
        prune_under: forget catalogued files under these folders that are no longer on disk, once every file is
            catalogued (a moved file has taken its track's row then), as the local pipeline does
            (:func:`mess.extract.pipeline.prune`).
        decode_timeout: seconds one file's inspection or decoding may take; its decoding process is then stopped
            and the file recorded as failed, as in the local pipeline.

    Raises:
        ScaleError: the cluster cannot be reached or has no GPU for ``device="cuda"``, or the job failed inside Ray
            (a worker with other weights, actors that keep dying): one line naming the cause
            (:func:`job_failure`); what was committed before stays.
    """
    started = time.perf_counter()
    paths = list(dict.fromkeys(paths))  # a path given twice is one file, not a copy of itself
    owned = _connect(address)
    report, off_the_console = logging.getLogger("ray.data.exceptions"), _OffTheConsole()
    report.addFilter(off_the_console)
    stack = contextlib.ExitStack()
    stack.enter_context(_cluster_messages_on_stderr())  # left after ray.shutdown: its thread prints until then
    stack.enter_context(_ray_data_notes_in_its_log())
    stack.enter_context(dropping(_RESTART_NOTE))  # the cluster's processes started (by _connect), none will be
    try:
        default_actors = _default_actors(device)  # before any file is read: a cuda run needs GPUs, however many actors
        if info is None:  # what the workers' model says of itself, read without loading it where the registry can
            info, source = run_info(model_name, precision, device)
        run = store.ensure_run(run_key(info, policy))
        store.cut_past_catalog()  # rows a killed write or reclaim left past the catalog's last
        record_source(store, run, source)
        summary = ExtractSummary()
        copies: dict[str, list[str]] = {}  # the paths counted as copies of each hash to embed, failed with it
        todo = _catalogue(store, run, paths, summary, decode_timeout, copies)
        if prune_under:  # after cataloguing: a moved file has taken its track's row by then, and is not forgotten
            summary.removed = prune(store, paths, prune_under)
        if todo:  # no more actors than blocks: an actor past them loads its model for nothing (Ray Data warns)
            n_actors = min(_blocks(len(todo)), actors or default_actors)
            rows = _embedded(todo, model_name, info, policy, batch_size, device, precision, n_actors, decode_timeout)
            _commit(store, run, rows, write_every, summary, copies)
    except RayError as exc:  # its message is the worker's whole traceback
        raise ScaleError(f"the Ray job failed: {job_failure(exc)}") from None
    finally:
        report.removeFilter(off_the_console)
        if owned:
            ray.shutdown()
        stack.close()
    summary.wall_seconds = time.perf_counter() - started
    return summary


@contextlib.contextmanager
def _cluster_messages_on_stderr() -> Iterator[None]:
    """Ray's driver prints what its cluster reports of the job ('(raylet) Task ... failed. There are infinite retries
    remaining, so the task will be retried. Error: Traceback ...', the worker's whole traceback) on stdout, where
    mess's results go, from a thread of its own (``listen_error_messages`` in ray._private.worker; no setting turns
    it off). Meanwhile each such message goes to stderr in one line (:func:`_one_line`); a worker's output passes
    as before. Where that private function is gone (another Ray), Ray prints as it does."""
    from ray._private import worker

    original = getattr(worker, "print_to_stdstream", None)
    if original is None:
        yield
        return

    def print_to_stdstream(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet":
            original(data, ignore_prefix=ignore_prefix)
            return
        for message in data.get("lines", []):
            print(f"ray: {_one_line(message)}", file=sys.stderr, flush=True)

    worker.print_to_stdstream = print_to_stdstream
    try:
        yield
    finally:
        worker.print_to_stdstream = original


@contextlib.contextmanager
def _ray_data_notes_in_its_log() -> Iterator[None]:
    """Ray Data logs each dataset's plan and, where stdout is no terminal, its progress every few seconds at INFO on
    the console (some 20 lines a job, between mess's own). Meanwhile its console handlers show warnings and errors
    only; ray-data.log in the session's log folder keeps everything."""
    console = [h for h in logging.getLogger("ray.data").handlers
               if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    levels = [h.level for h in console]
    for handler in console:
        handler.setLevel(max(handler.level, logging.WARNING))
    try:
        yield
    finally:
        for handler, level in zip(console, levels, strict=True):
            handler.setLevel(level)


class _NotTheTokenNote(logging.Filter):
    """Drops Ray's note that the local cluster it starts has token authentication (the secure default, 'Set
    RAY_AUTH_MODE=disabled to opt out'): that cluster is mess's own, for this job only. Its warning that
    authentication is off stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def _one_line(message: str) -> str:
    """A message of Ray's cluster in one printable line: its words before any traceback, then the error the traceback
    names (:func:`_named`)."""
    text = _ANSI.sub("", message)
    head, _, trace = text.partition("Traceback (most recent call last):")
    said = " ".join([*head.split(), *([named] if trace and (named := _named(trace)) else [])])
    return printable(said or " ".join(text.split()))


def job_failure(exc: RayError) -> str:
    """Why a Ray job failed, in one printable line: the error a worker raised ('a worker loaded dsp revision ...
    (ModelMismatch)'), the last one its traceback names that is not Ray's own; else Ray's first line."""
    cause = getattr(exc, "cause", None)  # a task's error, where it came back whole
    if isinstance(cause, Exception) and not isinstance(cause, RayError):
        return _said(type(cause).__name__, str(cause))
    text = _ANSI.sub("", str(exc))
    named = _named(text)
    if named is None:
        return printable(next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__))
    return named


def _named(text: str) -> str | None:
    """The error a traceback in ``text`` names last, Ray's own left out where another is named, as
    :func:`_said` says it; None where it names none."""
    raised = _raised(text)
    ours = [r for r in raised if not r[0].startswith("ray.")] or raised
    return _said(*ours[-1]) if ours else None


def _said(name: str, message: str) -> str:
    """An error in one printable line: its message's first line and its class, 'other weights (ModelMismatch)'."""
    first = next((line.strip() for line in message.splitlines() if line.strip()), "")
    return printable(f"{first} ({name.rsplit('.', 1)[-1]})" if first else name.rsplit(".", 1)[-1])


def _raised(text: str) -> list[tuple[str, str]]:
    """The errors ``text`` names, in order, as (class, message): a line "a.b.C: ..." or "NameError: ..." anywhere,
    and whatever the line that ends a traceback's frames names ("StopIteration: ...", or a class alone)."""
    raised: list[tuple[str, str]] = []
    in_frames = False
    for line in text.splitlines():
        if not line.strip():  # Ray's messages space a traceback's lines
            continue
        if line.startswith("  "):  # a frame ('  File "x.py", line 3, in f'), its source, its carets
            in_frames = in_frames or line.startswith("  File ")
            continue
        name, _, message = line.partition(": ")
        if (match := _RAISED.fullmatch(line)) is not None:
            raised.append((match[1], match[2]))
        elif in_frames and _CLASS.fullmatch(name):
            raised.append((name, message))
        in_frames = False
    return raised


def _failed(store: FeatureStore, run: Run, content_hash: str, path: str, error: str, summary: ExtractSummary) -> None:
    """Record a file that failed, as the local pipeline does (its reason and name printable, logged)."""
    reason = printable(error)
    summary.failed.append((printable(path), reason))
    store.record_failure(run, content_hash, path, reason)
    log.warning(reason)


def _connect(address: str | None) -> bool:
    """Join the cluster at ``address`` (or at ``RAY_ADDRESS``; else start a local one, never joining whatever
    cluster Ray's address file last named: a stale one hung the run); True when this call started Ray. The workers'
    output stays in their log files (a failed worker's traceback printed above mess's line naming its error)."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    _check_reachable(address)
    token_setup, quiet = logging.getLogger(_TOKEN_SETUP), _NotTheTokenNote()
    token_setup.addFilter(quiet)
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ScaleError(f"cannot reach a Ray cluster at {address!r}: {exc}") from exc
    finally:
        token_setup.removeFilter(quiet)
    return True


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail in seconds, not after Ray's minute of retries, when a HOST:PORT address does not answer."""
    if address is None or address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()):
        raise ScaleError(f"Ray address {address!r} is not auto, local, HOST:PORT or ray://HOST:PORT")
    if (problem := port_problem(int(port))) is not None:
        raise ScaleError(f"Ray address {address!r}: {problem}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ScaleError(f"cannot reach a Ray cluster at {address!r}: {exc.strerror or exc}") from exc


def _default_actors(device: str) -> int:
    """One inference actor per GPU of the cluster for cuda (ScaleError when it has none), else one per CPU."""
    resources = ray.cluster_resources()
    if device.startswith("cuda"):
        gpus = int(resources.get("GPU", 0))
        if gpus == 0:
            raise ScaleError("--device cuda asked for, but the Ray cluster has no GPUs")
        return gpus
    return max(1, int(resources.get("CPU", 1)))


def _blocks(items: int) -> int:
    """How many blocks :func:`_dataset` cuts ``items`` rows into."""
    return max(1, min(-(-items // ROWS_PER_BLOCK), MAX_BLOCKS))


def _dataset(items: list[dict[str, Any]]) -> ray.data.Dataset:
    """Items as a dataset of ROWS_PER_BLOCK-row blocks (a block is one CPU task's work)."""
    return ray.data.from_items(items, override_num_blocks=_blocks(len(items)))


def _catalogue(store: FeatureStore, run: Run, paths: Sequence[Path], summary: ExtractSummary,
               timeout: float, copies: dict[str, list[str]]) -> list[dict[str, str | float]]:
    """Catalogue every file; return (path, hash, stamp, size, duration, sample rate) of the content this run still
    has to embed. A byte-identical copy of such content is counted as a copy, its path added to ``copies``.

    Ray Data hands the inspected files back as its tasks finish; they are catalogued in the order of ``paths``
    (:func:`_in_order`), so new tracks are numbered in the input order, as by the local engine.
    """
    since, items = time.time(), []
    for path in paths:
        known = store.known_file(path)
        items.append({"path": str(path), "known_hash": known[0] if known else "",
                      "known_stamp": known[1] if known else ""})
    todo: list[dict[str, str | float]] = []
    queued: set[str] = set()
    inspected = _dataset(items).map(inspect_row, num_cpus=1, fn_kwargs={"timeout": timeout})  # type: ignore[arg-type]
    for row in _in_order(inspected.iter_rows(), [item["path"] for item in items]):
        if row["error"]:  # recorded by path, as the local pipeline records a file it could not read
            _failed(store, run, "", row["path"], row["error"], summary)
            continue
        rec = json.loads(row["record"])
        summary.moved += store.catalogue_file(Path(row["path"]), rec["hash"], rec["size"], rec["mtime"], rec["info"],
                                              rec["tags"], stamp=rec["stamp"], since=since)[1]
        if rec["hash"] in queued:
            summary.copies += 1
            copies.setdefault(rec["hash"], []).append(row["path"])
        elif store.has_vectors(run, rec["hash"]):
            summary.skipped += 1
        else:
            queued.add(rec["hash"])
            todo.append({"path": row["path"], "hash": rec["hash"], "stamp": rec["stamp"], "size": rec["size"],
                         "duration": float(rec["info"].get("duration") or 0.0),
                         "sample_rate": int(rec["info"].get("sample_rate") or 0)})
    summary.moved += store.settle_moves(paths, since)
    return todo


def _in_order(rows: Iterable[dict[str, Any]], paths: Sequence[str]) -> Iterator[dict[str, Any]]:
    """``rows`` (one per path, as ``row["path"]``, in any order) in the order of ``paths``: each as soon as the rows
    of the paths before it have come, so a killed driver has catalogued a prefix of the input."""
    place = {path: n for n, path in enumerate(paths)}
    waiting: dict[int, dict[str, Any]] = {}
    following = 0
    for row in rows:
        waiting[place[row["path"]]] = row
        while following in waiting:
            yield waiting.pop(following)
            following += 1
    yield from (waiting[n] for n in sorted(waiting))  # after a row that never came (none should): the rest, in order


def _embedded(todo: list[dict[str, str | float]], model_name: str, info: ModelInfo, policy: WindowPolicy,
              batch_size: int, device: str, precision: str, actors: int, timeout: float) -> ray.data.Dataset:
    """The streaming dataset of embedded tracks: decoded on CPU tasks, embedded by ``actors`` GPU actors, or on CPUs
    in those tasks, at most ``actors`` at once."""
    decoded = _dataset(todo).map(
        decode_row, num_cpus=1,  # type: ignore[arg-type]  # ray's stubs do not model fn_kwargs
        fn_kwargs={"sample_rate": info.sample_rate, "policy": policy.to_json(), "band_hz": info.band_hz,
                   "timeout": timeout})
    model = {"model_name": model_name, "device": device, "precision": precision, "revision": info.revision,
             "batch_size": batch_size}
    if device.startswith("cuda"):  # a GPU and a model per actor, fed by the CPU tasks above
        return decoded.map_batches(Embedder, batch_size=batch_size, batch_format="numpy", num_cpus=1, num_gpus=1,
                                   compute=ray.data.ActorPoolStrategy(size=actors), fn_constructor_kwargs=model)
    # CPUs: tasks, fused with decoding, on the job's Ray workers, each keeping its model for later batches and runs
    return decoded.map_batches(embed_batch,  # type: ignore[arg-type]  # ray's stubs do not model fn_kwargs
                               batch_size=batch_size, batch_format="numpy", num_cpus=1, num_gpus=0,
                               compute=ray.data.TaskPoolStrategy(size=actors), fn_kwargs=model)


def _commit(store: FeatureStore, run: Run, rows: ray.data.Dataset, write_every: int, summary: ExtractSummary,
            copies: dict[str, list[str]]) -> None:
    """Drain the dataset into the store, committing every ``write_every`` tracks or FLUSH_SECONDS (each hash once).
    A track that failed (decoding, the model) fails with its ``copies``, each named, no longer counted as copies."""
    pending: list[TrackVectors] = []
    seen: set[str] = set()
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal last_flush
        store.write_vectors(run, pending)
        summary.done += len(pending)
        pending.clear()
        last_flush = time.monotonic()

    for row in rows.iter_rows():
        if row["hash"] in seen:  # a retried task's output delivered twice
            continue
        seen.add(row["hash"])
        if row["duration"] >= 0:  # a truncated file: its header claimed another length (as the local pipeline)
            store.set_duration(row["hash"], float(row["duration"]))
        if row["warnings"]:
            summary.warnings += row["warnings"].split("\n")
        if row["error"]:
            _failed(store, run, row["hash"], row["path"], row["error"], summary)
            for copy in copies.pop(row["hash"], []):  # as in the local pipeline: the reason names the copy
                summary.copies -= 1
                _failed(store, run, row["hash"], copy, row["error"].replace(row["path"], copy), summary)
            continue
        pending.append(split_row(row, run.layer_dims))
        summary.audio_seconds += row["samples"] / run.sample_rate
        if len(pending) >= write_every or time.monotonic() - last_flush >= FLUSH_SECONDS:
            flush()
    flush()
