"""`mess extract`: a folder of audio -> per-track, per-layer vectors in the feature store."""

from __future__ import annotations

import errno
import logging
import os
import resource
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import SimpleQueue
from typing import cast

from mess.audio.windows import WindowPolicy
from mess.extract.child import Child, stop_all
from mess.extract.decode_worker import DECODE_TIMEOUT, FileFailed, ask
from mess.extract.embed import embed_prepared
from mess.extract.plan import plan_in_background, to_embed
from mess.extract.prepare import FileRecord, Windows, describe
from mess.extract.runs import record_source, run_key
from mess.extract.writer import BackgroundWriter
from mess.models.base import EmbeddingModel
from mess.store import FeatureStore, Run, StoreError
from mess.store.paths import printable

log = logging.getLogger(__name__)

DECODE_WORKER = "mess.extract.decode_worker"
STOP_GRACE = 5.0  # seconds an idle decoder has to end by itself (removing its temp files) before it is killed

ProgressHook = Callable[[int, float], None]  # (tracks finished, audio seconds embedded)


@dataclass
class ExtractSummary:
    """What a run did: counts, failures with reasons, throughput.

    ``skipped``: files whose content had vectors before this run (unchanged, moved, retagged); ``copies``: files
    byte-identical to one embedded in this run, which share its vectors; ``moved``: files that took a catalogued
    track's id from another path (moved, renamed, swapped names: :mod:`mess.store.moves`).
    """

    done: int = 0
    skipped: int = 0
    copies: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    removed: int = 0
    moved: int = 0
    warnings: list[str] = field(default_factory=list)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def realtime_factor(self) -> float:
        """Audio seconds embedded per wall-clock second."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def handled(self) -> int:
        """Files this run is through with: embedded, skipped, copies and failed."""
        return self.done + self.skipped + self.copies + len(self.failed)


class ExtractInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped the run after it committed what it had embedded; ``summary`` counts that."""

    def __init__(self, summary: ExtractSummary) -> None:
        super().__init__("interrupted")
        self.summary = summary


@dataclass
class _Outcome:
    record: FileRecord
    windows: Windows | None = None
    error: str | None = None
    skipped: bool = False


def extract(store: FeatureStore, paths: Sequence[Path], model: EmbeddingModel, policy: WindowPolicy, *,
            batch_size: int = 4, workers: int = 2, prune_under: Sequence[Path] = (),
            on_progress: ProgressHook | None = None, wait: bool = True,
            on_wait: Callable[[str], None] | None = None,
            on_total: Callable[[float], None] | None = None) -> ExtractSummary:
    """Embed every file not yet in the store for this model/revision/policy.

    The run holds the store's write lock throughout: a second writer waits (telling
    ``on_wait``) or, with ``wait=False``, raises StoreBusy. Decoding runs in
    ``workers`` threads ahead of inference; vectors are committed by a background thread
    while the next tracks are embedded, so an interrupted run loses at most the tracks in flight and a rerun continues
    where it stopped. Files already embedded (same content hash) are skipped; any
    error in one file becomes that file's recorded failure and the run goes on. ``on_total``, when given, is called
    (from another thread) with the audio seconds the files to embed hold, read from their headers by the decoders
    (:mod:`mess.extract.plan`), unless the run ends first. ``on_progress`` is called with the files handled and the
    audio seconds committed after each file is read and after each commit (that one from the writer's thread). A path
    given twice is one file.
    """
    paths = list(dict.fromkeys(paths))  # not a copy of itself
    with store.writing("mess extract", wait=wait, on_wait=on_wait):
        return _extract(store, paths, model, policy, batch_size, workers, prune_under, on_progress, on_total)


def _extract(store: FeatureStore, paths: Sequence[Path], model: EmbeddingModel, policy: WindowPolicy,
             batch_size: int, workers: int, prune_under: Sequence[Path],
             on_progress: ProgressHook | None, on_total: Callable[[float], None] | None) -> ExtractSummary:
    started, since = time.perf_counter(), time.time()
    run = store.ensure_run(run_key(model.info, policy))
    store.cut_past_catalog()  # rows a killed write or reclaim left past the catalog's last
    record_source(store, run, model.source())
    summary = ExtractSummary()
    pending: list[Windows] = []
    embedded: set[str] = set()  # content hashes this run embeds: a later file with one is a byte-identical copy
    copies: dict[str, list[FileRecord]] = {}  # the copies counted of each, failed with it if the model fails on it

    def committed(tracks: int, audio_seconds: float) -> None:  # in the writer's thread
        summary.done += tracks
        summary.audio_seconds += audio_seconds
        if on_progress:  # now, not when the next file has been read (after the next group's inference)
            on_progress(summary.handled, summary.audio_seconds)

    writer = BackgroundWriter(store, run, committed)
    try:
        try:
            for outcome in _prepared(store, run, paths, model, policy, workers, on_total, since, summary):
                if (outcome.skipped or outcome.windows is not None) and outcome.record.content_hash in embedded:
                    summary.copies += 1  # decoded too when inspected before the first one's vectors were written
                    copies.setdefault(outcome.record.content_hash, []).append(outcome.record)
                elif outcome.skipped:
                    summary.skipped += 1
                elif outcome.error is not None:
                    _fail(store, run, outcome.record, outcome.error, summary)
                elif outcome.windows is not None:
                    pending.append(outcome.windows)
                    embedded.add(outcome.record.content_hash)
                    summary.warnings += outcome.windows.warnings
                if sum(w.audio.shape[0] for w in pending) >= batch_size:
                    _embed(store, run, model, pending, batch_size, summary, writer, embedded, copies)
                    pending = []
                if on_progress:
                    on_progress(summary.handled, summary.audio_seconds)
            _embed(store, run, model, pending, batch_size, summary, writer, embedded, copies)
        finally:
            writer.close()  # commits what was embedded, also when the run is interrupted
    except KeyboardInterrupt as exc:  # after writer.close(): the summary counts every commit
        summary.wall_seconds = time.perf_counter() - started
        raise ExtractInterrupted(summary) from exc
    summary.moved += store.settle_moves(paths, since)
    if prune_under:  # once every file is catalogued: a moved file has taken its track's row, and is not forgotten
        summary.removed = prune(store, paths, prune_under)
    summary.wall_seconds = time.perf_counter() - started
    if on_progress:
        on_progress(summary.handled, summary.audio_seconds)
    return summary


def _prepared(store: FeatureStore, run: Run, paths: Sequence[Path], model: EmbeddingModel, policy: WindowPolicy,
              workers: int, on_total: Callable[[float], None] | None, since: float,
              summary: ExtractSummary) -> Iterator[_Outcome]:
    """Inspect and decode files in ``workers`` child processes, yielding in order, at most 2*workers ahead.

    Each decoding thread drives one child (:mod:`mess.extract.decode_worker`): decoders run in parallel
    whether or not they release the GIL (PyAV mostly does not), and a file that crashes or hangs a decoder
    costs only its child, which the next file replaces; the file is recorded as failed, naming how. The same
    children read the headers for ``on_total``. Files are catalogued here, as they are yielded (:func:`_catalogued`).
    """
    info = model.info
    idle: SimpleQueue[Child] = SimpleQueue()
    children = [Child(DECODE_WORKER, warm=True) for _ in range(max(1, workers))]
    for child in children:
        idle.put(child)
    stop_plan = plan_in_background(idle, to_embed(store, paths, info, policy), policy, on_total) if on_total else None

    def work(path: Path) -> _Outcome:
        record: FileRecord | None = None
        child = idle.get()
        try:
            record = cast(FileRecord, ask(child, path, ("inspect", path, store.known_file(path)), DECODE_TIMEOUT))
            if store.has_vectors(run, record.content_hash):
                return _Outcome(record, skipped=True)
            decode = ("decode", record, info.sample_rate, policy, info.band_hz)
            return _Outcome(record, cast(Windows, ask(child, path, decode, DECODE_TIMEOUT)))
        except FileFailed as exc:
            return _Outcome(record or _unread(path), error=str(exc))
        except StoreError:
            raise
        except OSError as exc:  # from starting a decoder (a file's own errors come back as the decoder's replies)
            raise _no_decoder(exc) from None
        except Exception as exc:  # noqa: BLE001 -- one file's fault must not end the run
            return _Outcome(record or _unread(path), error=f"{path}: {describe(exc)}")
        finally:
            idle.put(child)

    try:
        with ThreadPoolExecutor(max_workers=len(children), thread_name_prefix="mess-decode") as pool:
            queue: deque[Future[_Outcome]] = deque()
            todo = iter(paths)
            for path in todo:
                queue.append(pool.submit(work, path))
                if len(queue) >= 2 * len(children):
                    break
            while queue:
                future = queue.popleft()
                nxt = next(todo, None)
                if nxt is not None:
                    queue.append(pool.submit(work, nxt))
                yield _catalogued(store, future.result(), since, summary)
    finally:
        if stop_plan is not None:
            stop_plan()
        stop_all(children, STOP_GRACE)


def _catalogued(store: FeatureStore, outcome: _Outcome, since: float, summary: ExtractSummary) -> _Outcome:
    """Catalogue a file that was read, in the order of the paths: a new file's id is the next one, so ids follow the
    input order (the sorted walk), not the order in which the decoders finished; a truncated file's decoded length
    replaces its header's. A file inspected but not yet catalogued when the run is killed is inspected again. Its id
    follows its recording from path to path (a run started at ``since``; counted in ``summary.moved``)."""
    record = outcome.record
    if not record.content_hash:  # never read
        return outcome
    try:
        summary.moved += store.catalogue_file(record.path, record.content_hash, record.size, record.mtime, record.info,
                                              record.tags, stamp=record.stamp, since=since)[1]
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001 -- one file's fault (a tag SQLite cannot store) must not end the run
        return _Outcome(_unread(record.path), error=f"{record.path}: {describe(exc)}")
    if outcome.windows is not None and outcome.windows.duration is not None:  # its header claimed another length
        store.set_duration(record.content_hash, outcome.windows.duration)
    return outcome


def _no_decoder(exc: OSError) -> OSError:
    """The error that ends a run whose decoder process the system refused to start (too many open files or
    processes): the machine's limit, so no file is recorded as failed for it; what was embedded is committed."""
    limit = ""
    if exc.errno == errno.EMFILE:
        limit = f"; this process may open {resource.getrlimit(resource.RLIMIT_NOFILE)[0]} files: `ulimit -n`"
    return OSError(exc.errno, f"cannot start a decoder process ({exc.strerror}{limit}); the files embedded so far "
                   "are kept: raise the limit (or pass fewer --workers) and run `mess extract` again")


def _unread(path: Path) -> FileRecord:
    """The record of a file that failed before it could be inspected."""
    return FileRecord(path, "", 0, 0.0, {}, {})


def _embed(store: FeatureStore, run: Run, model: EmbeddingModel, pending: list[Windows], batch_size: int,
           summary: ExtractSummary, writer: BackgroundWriter, embedded: set[str],
           copies: dict[str, list[FileRecord]]) -> None:
    """Embed a group of tracks (one by one if the group fails) and hand their vectors to the writer. A track the
    model fails on fails with the copies of it counted so far; a later copy is no longer one (it is tried itself)."""
    if not pending:
        return
    try:
        vectors = embed_prepared(model, pending, batch_size)
    except Exception as exc:  # noqa: BLE001 -- isolate the file that makes the model fail
        if len(pending) == 1:
            record = pending[0].record
            embedded.discard(record.content_hash)
            _fail(store, run, record, f"{record.path}: model failed ({describe(exc)})", summary)
            for copy in copies.pop(record.content_hash, []):
                summary.copies -= 1
                _fail(store, run, copy, f"{copy.path}: model failed ({describe(exc)})", summary)
        else:
            for single in pending:
                _embed(store, run, model, [single], batch_size, summary, writer, embedded, copies)
        return
    # embed_windows already refused non-finite output (a failure above)
    writer.submit(vectors, sum(p.audio.size for p in pending) / model.info.sample_rate)


def _fail(store: FeatureStore, run: Run, record: FileRecord, reason: str, summary: ExtractSummary) -> None:
    reason = printable(reason)
    summary.failed.append((printable(str(record.path)), reason))
    store.record_failure(run, record.content_hash, str(record.path), reason)
    log.warning(reason)


def prune(store: FeatureStore, paths: Sequence[Path], roots: Sequence[Path]) -> int:
    """Forget catalogued files under ``roots`` (or that a root names) that are no longer on disk (and failures of
    files never read there), then the recorded extraction folders gone from disk that hold no track left.

    A file the folder walk passes over (one in a hidden folder, named on the command line once) is still on disk
    and is kept.
    """
    present = {str(p) for p in paths}
    named = {os.path.realpath(r.expanduser()) for r in roots}  # a root that is a link loop: no error
    prefixes = tuple(r + "/" for r in named)

    def under(path: str) -> bool:  # a root is a folder, or a file (a link's target) that may be gone
        return path.startswith(prefixes) or path in named

    real: dict[Path, Path] = {}
    gone = [p for p in store.all_paths() if under(p) and p not in present and _gone(p, Path.is_file, real)]
    store.forget_unread([p for p in store.unread_paths() if under(p) and _gone(p, Path.exists, real)])
    removed = store.remove_tracks(gone)
    store.forget_gone_roots()  # a folder given to an extraction once, gone now with its tracks
    return removed


def missing_files(store: FeatureStore) -> list[str]:
    """Catalogued paths no longer on disk (moved, renamed, deleted or replaced by a link), by id: they answer searches
    until `mess extract --prune` forgets them."""
    real: dict[Path, Path] = {}
    return [p for p in store.all_paths() if _gone(p, Path.is_file, real)]


def _gone(path: str, there: Callable[[Path], bool], real: dict[Path, Path]) -> bool:
    """Whether ``path`` is no longer ``there``, or now leads elsewhere (the file, or a folder above it, was replaced by
    a symbolic link: files are catalogued by their real paths, so the walk catalogues the link's target, and the entry
    of ``path`` kept the vectors of what it held before, in every answer, unnamed); one that cannot be looked at (in a
    folder now unreadable) is kept. ``real`` keeps the real path of each folder looked at, for the next call."""
    try:
        here = Path(path)
        if not there(here) or here.is_symlink():
            return True
        folder = here.parent
        if folder not in real:  # one resolve per folder, not per file: 50 us a path, 5 s for 100,000 tracks
            real[folder] = folder.resolve()
        return real[folder] != folder
    except (OSError, RuntimeError):  # RuntimeError: a link loop on the way (Python 3.11)
        return False
