"""Probe one run of the feature store: targets, probes, controls, and the aspect map they yield."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from mess.audio.names import label_key
from mess.constants import PROBE_KINDS, counted
from mess.extract.runs import run_policy
from mess.models.registry import ModelError
from mess.probing.controls import ControlError, random_init_run, shuffled_rows
from mess.probing.probes import Folds, ProbeError, ProbeScores, make_folds, probe_layers
from mess.probing.report import TRAINED, ProbeReport
from mess.probing.target_cache import TrackTargets, track_targets
from mess.probing.targets import TARGET_NAMES
from mess.store import FeatureStore, Run, Track
from mess.store.aspects import track_set_digest

CONTROLS = ("shuffled", "random-init")
GROUP_BY = ("auto", "album", "artist", "none")  # `--group-by`: which tag folds keep together (auto: album, else artist)
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class ProbeOptions:
    """How to probe: folds, which layers, which controls, which probe."""

    folds: int = 5
    layers: Sequence[str] | None = None  # names or indices; None = all
    source: str | None = None  # where to load the architecture for random-init (default: the run's model name)
    controls: Sequence[str] = ("shuffled",)
    probe: str = "ridge"
    seed: int = 0
    workers: int = 2  # processes computing audio targets, and layers probed side by side
    device: str = "cpu"
    batch_size: int = 4
    group_by: str = "auto"  # one of GROUP_BY

    def __post_init__(self) -> None:  # one name given as a str is that name, not its letters
        if isinstance(self.layers, str):
            object.__setattr__(self, "layers", (self.layers,))
        if isinstance(self.controls, str):
            object.__setattr__(self, "controls", (self.controls,))


def probe_run(store: FeatureStore, run: Run, options: ProbeOptions = ProbeOptions(),
              on_progress: Progress | None = None) -> ProbeReport:
    """Compute (or read cached) targets, probe every selected layer, and run the controls.

    Tracks whose file changed or went since extraction, with no cached targets, are left out (``missing``).
    """
    started = time.perf_counter()
    unknown = sorted(set(options.controls) - set(CONTROLS))
    if unknown:
        raise ProbeError(f"unknown control {unknown[0]!r}; use {', '.join(CONTROLS)} or none")
    if options.probe not in PROBE_KINDS:
        raise ProbeError(f"unknown probe {options.probe!r}; use {' or '.join(PROBE_KINDS)}")
    check_group_by(options.group_by)
    if isinstance(options.folds, bool) or not isinstance(options.folds, int) or options.folds < 2:
        raise ProbeError(f"folds must be 2 or more; got {options.folds!r}")
    # one layer named twice (`--layers 0,mfcc`) is probed once: counted twice, 3 layers passed for all 4
    layers = list(dict.fromkeys(run.layer_names[run.layer_index(x)] for x in options.layers or run.layer_names))
    tracks = store.tracks(run)
    if len(tracks) < 4:
        raise ProbeError(f"{run.model} has {len(tracks)} tracks in the store; probing needs at least 4")
    n_done = 0

    def tick() -> None:
        nonlocal n_done
        n_done += 1
        if on_progress:
            on_progress("targets", n_done, len(tracks))

    targets = track_targets(store.root, tracks, run_policy(run), known=store.known_file, workers=options.workers,
                            on_track=tick)
    hashes = {t.id: t.content_hash for t in tracks}  # what the targets are of
    trained, folds = _probe(store, run, layers, targets, hashes, options, on_progress)
    conditions = {TRAINED: trained}
    notes = {}
    if "shuffled" in options.controls:
        conditions["shuffled"] = _probe(store, run, layers, targets, hashes, options, on_progress,
                                        shuffle=True)[0]
        notes["shuffled"] = f"target rows permuted (seed {options.seed}); same folds and layers"
    if "random-init" in options.controls:
        try:
            def extracted(done: int, _: float) -> None:
                if on_progress:
                    on_progress("random-init extraction", done, len(tracks))

            twin, summary = random_init_run(store, run, source=options.source, seed=options.seed,
                                            device=options.device, batch_size=options.batch_size,
                                            workers=options.workers, on_progress=extracted)
            conditions["random-init"] = _probe(store, twin, layers, targets, hashes, options, on_progress)[0]
            notes["random-init"] = (f"{twin.model} ({twin.revision}): same architecture, random weights; "
                                    f"{counted(summary.done, 'track')} embedded now, "
                                    f"{summary.skipped + summary.copies} reused")
        except (ControlError, ModelError, ImportError, OSError) as exc:
            notes["random-init"] = f"not run: {exc}"
        except ProbeError as exc:  # the twin embeds only the files on disk, which cached targets may outnumber
            notes["random-init"] = f"not run: the random-init twin's {exc}"
    return ProbeReport(model=run.model, revision=run.revision, run_id=run.id, policy=asdict(run_policy(run)),
                       n_tracks=folds.n, folds=folds.scheme, probe=options.probe,
                       seconds=time.perf_counter() - started, conditions=conditions, notes=notes,
                       missing=targets.missing, tracks_digest=track_set_digest(tracks), seed=options.seed)


def _probe(store: FeatureStore, run: Run, layers: list[str], targets: TrackTargets, hashes: dict[int, str],
           options: ProbeOptions, on_progress: Progress | None, *, shuffle: bool = False) -> tuple[ProbeScores, Folds]:
    """Probe ``layers`` of ``run`` on the tracks that have both vectors and targets (``hashes``: track id -> the
    content hash its targets are of); ProbeError when a track is removed or extracted again meanwhile."""
    by_id = {t.id: t for t in store.tracks(run)}
    # rows in content order (hash, then path), not in ids (a store grown in steps numbers otherwise): the folds' seeded
    # shuffle, the shuffled control's permutation and the MLP probe's batches go by row
    ids = np.array(sorted(np.intersect1d(targets.track_ids, np.fromiter(by_id, dtype=np.int64)).tolist(),
                          key=lambda i: by_id[i].content_key), dtype=np.int64)
    y = targets.values[np.searchsorted(targets.track_ids, ids)]
    chosen = [by_id[int(i)] for i in ids]
    if shuffle:
        y = shuffled_rows(y, options.seed)
    folds = make_folds(len(ids), fold_meta(chosen, options.group_by), options.folds, options.seed,
                       same=[t.content_hash for t in chosen], ungrouped=ungrouped(options.group_by),
                       asked=options.group_by not in ("auto", "none"))

    def loader(layer: str) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:  # rows looked up by id: a track gone meanwhile shifted every row after it
            now = {t.id: t.content_hash for t in store.tracks(run)}
            row_ids, matrix = store.layer_matrix(run, layer)
            at = np.searchsorted(row_ids, ids)
            if any(now.get(int(i)) != hashes.get(int(i)) for i in ids) \
                    or not np.array_equal(row_ids[np.minimum(at, len(row_ids) - 1)], ids):
                raise ProbeError(f"tracks of {run.model} were removed or extracted again while it was probed: "
                                 "run `mess probe` again")
            return matrix[at]
        return load

    done = 0

    def layer_done(_: str) -> None:
        nonlocal done
        done += 1
        if on_progress:
            on_progress(f"{run.model}{' (shuffled)' if shuffle else ''}", done, len(layers))

    scores = probe_layers([(name, loader(name)) for name in layers], y, TARGET_NAMES, folds, options.probe,
                          options.seed, jobs=options.workers, on_layer=layer_done)
    return scores, folds


def check_group_by(group_by: str) -> None:
    """ProbeError unless ``group_by`` is one of :data:`GROUP_BY`."""
    if group_by not in GROUP_BY:
        raise ProbeError(f"unknown --group-by {group_by!r}; use {', '.join(GROUP_BY)}")


def ungrouped(group_by: str) -> str | None:
    """What the fold scheme says of folds not grouped on purpose (``--group-by none``), else None."""
    return "not grouped (--group-by none)" if group_by == "none" else None


def fold_meta(tracks: Sequence[Track], group_by: str = "auto") -> list[tuple[str, list[str | None]]]:
    """The fields folds may be grouped by, in order of preference: album, then artist (see :func:`_artist`) for
    ``auto``; the one named; none for ``none`` (shuffled KFold, copies of a file still together)."""
    fields = {"album": [label_key("album", t.album) for t in tracks], "artist": [_artist(t) for t in tracks]}
    return [(f, fields[f]) for f in (("album", "artist") if group_by == "auto" else (group_by,)) if f in fields]


def _artist(track: Track) -> str | None:
    """A track's artist as `mess artists` groups it (main artist, any spelling; else the composer), for folds."""
    return label_key("artist", track.artist) or label_key("composer", track.composer)


def probed_every_layer(run: Run, report: ProbeReport) -> bool:
    """Whether the probe covered all of the run's layers (``--layers`` may pick some)."""
    return set(report.conditions[TRAINED].layers) == set(run.layer_names)


def unmapped_reason(run: Run, report: ProbeReport) -> str | None:
    """Why this probe may not replace the stored aspect map, or None when it may."""
    if not probed_every_layer(run, report):  # the best of some layers is not the best layer
        return (f"the probe covered {len(set(report.conditions[TRAINED].layers))} of {len(run.layer_names)} layers; "
                "only a probe of every layer maps aspects")
    if not report.aspects:
        return "no aspect could be mapped (every proxy target is the same on these tracks)"
    return None


def save_aspect_map(store: FeatureStore, run: Run, report: ProbeReport) -> bool:
    """Store the trained model's aspect -> (layer, score, margin) map for `mess similar --aspect`, each score beyond
    the shuffled control (:meth:`ProbeReport.map_scores`); False, and the stored map kept, when
    :func:`unmapped_reason` gives a reason not to."""
    if unmapped_reason(run, report) is not None:
        return False
    scores = report.map_scores()
    store.set_aspect_map(run, [(c.aspect, c.layer, scores[c.aspect], c.margin) for c in report.aspects],
                         n_tracks=report.n_tracks + len(report.missing),  # the run's tracks, with and without targets
                         probed_at=report.probed_at, tracks_digest=report.tracks_digest)
    return True
