"""Retrieval evaluation: how well each layer (and the all-layer / fused vectors) finds same-label tracks.

Every labelled track whose label has at least one other track is a query; the
ranking covers all other labelled tracks. Reported per vector set: precision@k,
mAP, nDCG@k and the k-occurrence skewness of its k-NN graph, next to the chance
level of random rankings. With ``compare``, cosine is set against euclidean and dot
similarity and against CSLS / mutual-proximity hubness reduction.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from mess.audio.names import label_key
from mess.constants import DEFAULT_NORM, FUSED, LABEL_FIELDS, LEARNED, counted
from mess.search.ann import exact_knn
from mess.search.augment import expanded_rows
from mess.search.counts import whole_count
from mess.search.expansion import expand_collection, expanded_scores, expansion
from mess.search.hubness import HubnessReducer, HubnessStats, hubness_stats
from mess.search.metrics import (
    RetrievalScores,
    average_precision,
    chance_scores,
    ndcg_at_k,
    precision_at_k,
    ranking,
)
from mess.search.rerank_store import Ranking, check_ranking, load_augmentation, load_reranker, ranking_choice
from mess.search.segments import chamfer_rows, check_match, read_segments
from mess.search.vectors import Norm, VectorSet, VectorSpec, fused_norm, has_learned_head, load_vectors
from mess.store import FeatureStore, Run, StoreError, Track
from mess.store.consistent import one_state
from mess.store.fused import fused_run_problem
from mess.store.paths import replace_file

MAX_QUERIES = 5000
MIN_QUERIES, MIN_LABELS = 50, 5  # below either, the ranking of vector sets is reported as inconclusive (as fusion's)
CHUNK = 512
VARIANTS = (("cosine", None), ("euclidean", None), ("dot", None), ("cosine", "csls"), ("cosine", "mp"))


class LabelError(ValueError):
    """Labels that cannot be used (bad CSV, too few labelled tracks)."""


@dataclass(frozen=True)
class SetScore:
    """Quality of one vector set under one similarity."""

    name: str
    kind: str
    metric: str
    hubness: str | None
    scores: RetrievalScores
    hub: HubnessStats


@dataclass
class Evaluation:
    """Everything ``mess evaluate`` reports; ``labels_from`` names the label file when the labels are not tags."""

    model: str
    label: str
    k: int
    norm: str
    n_tracks: int
    n_queries: int
    n_classes: int
    chance: RetrievalScores
    sets: list[SetScore]
    variants: list[SetScore] = field(default_factory=list)
    tracks_without_fused_vectors: int = 0  # labelled tracks without them: the fused row is then left out
    labels_from: str | None = None
    n_query_labels: int = 0  # labels with at least two tracks (the queries' labels)
    norm_note: str = ""  # when ``norm`` fell back to plain cosine (too few tracks to fit it)
    fused_trained_on: str | None = None  # the tag the fused network was trained on, when it (or a label file that
    # groups the tracks alike) is the one scored
    fused_note: str = ""  # why stored fused vectors were left out (made for another run of the model)
    notes: list[str] = field(default_factory=list)  # sets ranked plain by default (large, no saved augmentation)

    @property
    def relevance(self) -> str:
        """What counts as relevant, for titles: 'same-artist', or 'same-label (moods.csv)' for a label file."""
        return f"same-label ({self.labels_from})" if self.labels_from else f"same-{self.label}"

    def best(self) -> SetScore:
        """The vector set with the highest mAP, leaving out fused vectors trained on the labels scored (their
        training labels are among the queries: not a fair comparison) unless they are the only set."""
        fair = [s for s in self.sets if not (self.fused_trained_on and s.kind == FUSED)] or self.sets
        return max(fair, key=lambda s: s.scores.map)

    @property
    def caveat(self) -> str | None:
        """A sentence when too few queries or labels back the scores for the best set to mean anything, else None."""
        if self.n_queries >= MIN_QUERIES and self.n_query_labels >= MIN_LABELS:
            return None
        return (f"{self.n_queries} queries over {self.n_query_labels} labels: too few to conclude which vectors "
                f"retrieve best (want >= {MIN_QUERIES} queries and >= {MIN_LABELS} labels)")

    def to_dict(self) -> dict:
        """JSON-ready form, with the :attr:`caveat`."""
        return {**asdict(self), "caveat": self.caveat}


@dataclass(frozen=True)
class LabelFile:
    """Labels read from a CSV: track id -> label, and the (line, reference) of each row naming no track."""

    labels: dict[int, str]
    unknown: list[tuple[int, str]]
    column: str  # how rows name tracks: id, path or file

    def note(self, shown: int = 3) -> str:
        """One line naming the rows left out (empty when none)."""
        if not self.unknown:
            return ""
        listed = ", ".join(f"line {line} {ref!r}" for line, ref in self.unknown[:shown])
        more = ", ..." if len(self.unknown) > shown else ""
        hint = " (a path matches only the file's path in the store; a 'file' column matches file names)"
        rows = counted(len(self.unknown), "label row names an unknown track and was",
                       "label rows name unknown tracks and were")
        return (f"{rows} left out: {listed}{more}"
                + (hint if self.column == "path" else ""))


_MATCHES = {"id": "an id matches the track of that id in the store (or a file name no other track has)",
            "path": "a path matches only the file's path in the store", "file": "a file name matches a track's file"}


def read_label_csv(store: FeatureStore, path: str | Path, field: str, *, field_given: bool = True) -> LabelFile:
    """Labels from a CSV with an ``id`` (or ``track_id``, as `mess export` names it), ``path`` or ``file`` column and
    a ``field`` or ``label`` one (artist and
    composer labels by :func:`~mess.audio.names.label_key`, as from tags: a ``field`` column, or a ``label`` one
    when ``field_given``; the default field does not make a file's own ``label`` column artist credits, whose
    'Ambient; Dark' and 'Ambient; Bright' would be one label).

    A ``path`` matches only the file at that path; an id, or a file name shared by no other track, as
    :meth:`FeatureStore.track` finds it. An empty label cell, or ``nan`` (any case), labels no track. Rows naming no
    track are left out (listed); a file name several tracks
    share, a track given two labels, a row whose cells do not match the header and an unclosed quote are refused
    (LabelError, naming the line), and so is a file none of whose labelled rows names a track.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            first = f.readline()
            f.seek(0)
            # commas, else what the header separates with: Excel in many locales saves ';', a spreadsheet copy tabs
            # (looked for outside quoted cells: '"id";"artist, main"' is separated by ';')
            unquoted = re.sub(r'"[^"]*"', "", first)
            delimiter = next((d for d in (",", ";", "\t") if d in unquoted), ",")
            reader = csv.DictReader(f, delimiter=delimiter, strict=True)
            try:  # each record with the line it starts on (blank lines and cells quoted over lines counted)
                rows = [(reader.line_num - _line_breaks(row), row) for row in reader]
            except csv.Error as exc:  # e.g. a quote never closed; line_num counts the lines before the record
                raise LabelError(f"{path}:{reader.line_num + 1}: not valid CSV ({exc})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"cannot read label file {path}: {exc}") from exc
    header = [c for c in reader.fieldnames or () if c is not None]
    named = {c.strip().casefold(): c for c in reversed(header)}  # 'ID', ' label ': the first of each name
    ref_name = next((c for c in ("id", "track_id", "path", "file") if c in named), None)
    label_col = named.get(field.strip().casefold(), named.get("label"))
    if ref_name is None or label_col is None:
        raise LabelError(
            f"{path} needs an id, path or file column and a {field!r} or 'label' column; "
            f"it has {sorted(header) or 'no header'}"
        )
    ref_col, ref_kind = named[ref_name], "id" if ref_name == "track_id" else ref_name
    if not rows:
        raise LabelError(f"{path} has a header and no rows: no labels")
    # artists and composers as in tags (the main artist, spelled any way): from their own column, or any when asked
    key_field = field if field_given or label_col.strip().casefold() == field.strip().casefold() else "label"
    labels: dict[int, tuple[str, str, int]] = {}  # track id -> (label, as written, the line that gave it)
    unknown: list[tuple[int, str]] = []
    for line, row in rows:
        if None in row or None in row.values():  # a row with more or fewer cells than the header
            cells = len(row) - 1 + len(row[None]) if None in row else sum(v is not None for v in row.values())
            raise LabelError(f"{path}:{line}: {cells} cells where the header has {len(reader.fieldnames or ())}")
        ref, value = (row.get(ref_col) or "").strip(), (row.get(label_col) or "").strip()
        label = label_key(key_field, value) if value.casefold() != "nan" else ""  # nan: numpy's missing value
        if not label:  # an unlabelled track (an empty cell or nan, as `mess probe --targets` reads them)
            continue
        if not ref:  # a label for no track: left out, and said so as any row naming no track is
            unknown.append((line, ref))
            continue
        try:
            track = store.track_at(ref) if ref_kind == "path" else store.find(ref)
        except StoreError as exc:  # a file name several tracks share
            raise LabelError(f"{path}:{line}: {exc}") from exc
        if track is None:
            unknown.append((line, ref))
            continue
        before, written, at = labels.setdefault(track.id, (label, value, line))
        if before != label:
            raise LabelError(f"{path}:{line}: track {track.id} ({track.name}) is labelled {value!r} here and "
                             f"{written!r} on line {at}")
    if unknown and not labels:  # every labelled row names no track: not 'only 0 labelled track(s)' later
        listed = ", ".join(f"line {n} {given!r}" for n, given in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        raise LabelError(f"{path}: none of its {counted(len(unknown), 'labelled row')} names a track in this store "
                         f"({listed}); {_MATCHES[ref_kind]}")
    return LabelFile({tid: label for tid, (label, _, _) in labels.items()}, unknown, ref_kind)


def _line_breaks(row: dict) -> int:
    """Line breaks inside a CSV record's cells (a quoted cell may span lines)."""
    cells = [v for k, v in row.items() if k is not None] + list(row.get(None) or ())
    return sum(c.count("\n") for c in cells if isinstance(c, str))


def track_labels(tracks: Sequence[Track], field: str, overrides: dict[int, str] | None = None) -> dict[int, str]:
    """Track id -> label from tags (``field``; artists by :func:`~mess.audio.names.label_key`), or only from
    ``overrides`` when given."""
    if overrides is not None:
        return dict(overrides)
    if field not in LABEL_FIELDS:
        raise LabelError(f"unknown label {field!r}; choose one of {', '.join(LABEL_FIELDS)} or pass a CSV")
    return {t.id: v for t in tracks if (v := label_key(field, t.label(field)))}


@one_state
def evaluate(
    store: FeatureStore,
    run: Run,
    field: str,
    k: int = 10,
    *,
    labels: dict[int, str] | None = None,
    labels_from: str | None = None,
    norm: Norm = DEFAULT_NORM,
    compare: bool = False,
    seed: int = 0,
    match: str = "mean",
    expand: int | None = None,
    ranking: str = "auto",
) -> Evaluation:
    """Score every layer, all layers together, and the fused vectors and learned head (when present)
    by retrieval of same-label tracks. ``labels`` (from ``labels_from``, a file name) replace the ``field`` tags.

    ``match="segments"`` scores track pairs by Chamfer similarity of their window vectors instead of the cosine of
    their means (fused vectors, which have no windows, are then left out). Fused vectors are also left out when
    some labelled tracks have none (extracted since `mess fuse apply`): ``tracks_without_fused_vectors`` counts
    them; and when they were made for another run of the model (``fused_note`` says why). ``expand`` > 0 ranks
    with alpha-query expansion over that many neighbours (:mod:`mess.search.expansion`; cosine sets only; None =
    the default, 3 for mean matching). ``ranking`` ranks each set as ``mess similar`` does (plain, augmented or
    re-ranked over the whole collection; "auto": as :func:`mess.search.rerank_store.ranking_choice` decides for
    each set, a set ranked plain for its size noted in ``notes``).
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:  # numpy: 'expected non-negative'
        raise ValueError(f"seed must be a whole number, 0 or more; got {seed!r}")
    k = whole_count(k, "k", "results", 1)
    check_ranking(ranking, match, None, expand)
    if check_match(match) == "segments" and expand:  # Chamfer rows have no expanded query: it was ignored
        raise ValueError("--match segments has no query expansion: leave out --expand")
    asked_expand, expand = expand, expansion(match, expand)
    notes: list[str] = []
    tracks = store.tracks(run)
    by_label = track_labels(tracks, field, labels)
    if by_label and not by_label.keys() & {t.id for t in tracks}:  # not 'only 0 labelled track(s)': say why
        first = next(iter(by_label))
        kind = ", a str: a track's id is an int" if isinstance(first, str) else ""
        raise LabelError(f"none of the {len(by_label)} labelled ids is a track of this store with {run.model} vectors "
                         f"(e.g. {first!r}{kind}); label tracks by their ids, as store.tracks() gives them")
    content = {t.id: t.content_key for t in tracks}
    specs = [VectorSpec.from_options(layer=name, norm=norm) for name in run.layer_names]
    specs.append(VectorSpec.from_options(norm=norm))
    fused_meta = store.derived_meta(run, FUSED)
    fused_note = fused_run_problem(store, run, fused_meta) if match == "mean" else None
    if fused_meta is not None and match == "mean" and fused_note is None:
        specs.append(VectorSpec(FUSED, "", fused_norm(norm)))
    if has_learned_head(run):
        specs.append(VectorSpec(LEARNED, "", norm))
    sets: list[SetScore] = []
    variants: list[SetScore] = []
    ids: np.ndarray | None = None
    labels_arr: np.ndarray | None = None
    queries: np.ndarray | None = None
    unfused = 0
    norm_note = ""
    for spec in specs:
        vs = load_vectors(store, run, spec, tracks)
        norm_note = norm_note or vs.norm_note
        keep = _content_rows(vs.ids, by_label, content)
        if ids is None:
            ids = vs.ids[keep]
            if copies := sum(int(i) in by_label for i in vs.ids) - len(keep):
                notes.append(f"{copies} byte-identical {'copy' if copies == 1 else 'copies'} of labelled tracks "
                             "left out (each recording counted once)")
            labels_arr, queries = _setup(np.array([by_label[int(i)] for i in ids]), seed)
        elif not np.array_equal(vs.ids[keep], ids):  # only derived (fused) vectors can miss tracks the layers have
            unfused = len(ids) - len(keep)  # rows over other tracks would not be comparable: left out
            continue
        assert labels_arr is not None and queries is not None  # set with ids
        unit = vs.unit()[keep]
        name = spec.name or ("all layers" if spec.kind == "all" else spec.kind)
        if match == "segments":
            seg = read_segments(store, vs, ids)
            sets.append(
                _score(
                    name, spec.kind, "chamfer", None, partial(chamfer_rows, seg), labels_arr, queries, k
                )
            )
        elif (chosen := ranking_choice(store, vs, ranking, match, None, asked_expand, notes.append)) != "plain":
            metric = "cosine, re-ranked (DBA + k-reciprocal)" if chosen == "reranked" else "cosine, augmented (DBA)"
            sets.append(_score(name, spec.kind, metric, None, _exact(store, vs, chosen, keep), labels_arr, queries, k))
        else:
            metric = f"cosine, expanded ({expand})" if expand else "cosine"
            # expanded as `mess similar` does: from the nearest tracks of the whole collection, labelled or not
            expanded = expand_collection(vs.unit(), expand)[keep] if expand else None
            sets.append(_score(name, spec.kind, metric, None, _cosine(unit, expanded), labels_arr, queries, k))
        if compare:
            shifted = vs.prep.shift(vs.raw[keep])
            for metric, hub in VARIANTS if expand else VARIANTS[1:]:  # the variants are not expanded: nor is their base
                fn = _similarity(metric, hub, unit, shifted, k)
                variants.append(_score(name, spec.kind, metric, hub, fn, labels_arr, queries, k))
    if labels_arr is None or queries is None:
        raise LabelError("no vector set to evaluate")
    chance = chance_scores(labels_arr[queries], labels_arr, queries, k, seed=seed)
    return Evaluation(
        run.model, field, k, norm, len(labels_arr), len(queries), len(set(labels_arr.tolist())), chance, sets, variants,
        unfused,
        labels_from,
        len(set(labels_arr[queries].tolist())),
        norm_note,
        # only when the fused row is scored: left out (segments, tracks without fused vectors) it crowns nothing
        _learned(fused_meta, field, by_label, tracks, labels is not None) if any(s.kind == FUSED for s in sets)
        else None,
        f"fused row left out: {fused_note}" if fused_note else "",
        notes,
    )


def label_grouping(pairs: Iterable[tuple[str, str | None]]) -> str:
    """SHA-256 of how (content hash, label) pairs group the recordings (label names aside; unlabelled ones left
    out): two label sources that group them alike have one grouping."""
    groups: dict[str, set[str]] = {}
    for content_hash, label in pairs:
        if label:
            groups.setdefault(label, set()).add(content_hash)
    return hashlib.sha256(json.dumps(sorted(sorted(g) for g in groups.values())).encode()).hexdigest()


def _learned(fused_meta: dict | None, field: str, by_label: dict[int, str], tracks: Sequence[Track],
             from_file: bool) -> str | None:
    """What the fused network was trained on when the labels scored are what it learned: its tag, or a label file
    that groups its tracks as the tag does (every one tagged, one tag value per file label and back); for a network
    trained on a label file (`fuse train --labels`), that file's name when the labels scored group the recordings
    as it did; else None."""
    trained = fused_meta.get("label") if fused_meta else None
    if fused_meta is not None and fused_meta.get("labels_file"):
        hashes = {t.id: t.content_hash for t in tracks}
        scored = label_grouping((hashes[i], label) for i, label in by_label.items() if i in hashes)
        return fused_meta["labels_file"] if scored == fused_meta.get("label_grouping") else None
    if trained is None or not from_file:
        return trained if trained == field else None
    tags = {t.id: label_key(trained, t.label(trained)) for t in tracks if t.id in by_label}
    pairs = {(by_label[i], tag) for i, tag in tags.items()}
    alike = len({a for a, _ in pairs}) == len(pairs) == len({b for _, b in pairs})
    return trained if tags and alike and None not in tags.values() else None


def _content_rows(set_ids: np.ndarray, by_label: dict[int, str], content: dict[int, tuple[str, str]]) -> np.ndarray:
    """Rows of a vector set's labelled tracks, in content order (hash, then path): a store that grew in steps numbers a
    collection otherwise than one extraction of it all (:attr:`Track.content_key`), and the query
    sample, the chance rankings and ties go by row. Of byte-identical copies (one content hash) only the first
    counts: a copy ranked first at cosine 1 was a correct hit its query got for free."""
    rows = sorted((r for r, i in enumerate(set_ids.tolist()) if i in by_label), key=lambda r: content[int(set_ids[r])])
    hashes = [content[int(set_ids[r])][0] for r in rows]
    return np.array([r for n, r in enumerate(rows) if n == 0 or hashes[n] != hashes[n - 1]], dtype=np.int64)


def _setup(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels per item and the query rows (items whose label occurs at least twice, sampled above MAX_QUERIES)."""
    if len(labels) < 2:
        raise LabelError(f"only {len(labels)} labelled track(s); need at least 2 sharing a label")
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if len(counts) < 2:  # every track relevant to every query: every score 1.000, chance too
        raise LabelError(f"every labelled track has the same label ({str(labels[0])!r}); retrieval needs at least 2 "
                         "labels")
    queries = np.flatnonzero(counts[inverse] >= 2)
    if not len(queries):
        raise LabelError("no label is shared by two tracks; nothing to retrieve")
    if len(queries) > MAX_QUERIES:
        queries = np.sort(np.random.default_rng(seed).choice(queries, MAX_QUERIES, replace=False))
    return labels, queries


SimFn = Callable[[np.ndarray], np.ndarray]


def _cosine(unit: np.ndarray, expanded: np.ndarray | None = None) -> SimFn:
    """Cosine rows, or with ``expanded`` queries (one per row of ``unit``) the better of the two scores."""
    if expanded is None:
        return lambda rows: unit[rows] @ unit.T
    return lambda rows: expanded_scores(unit[rows] @ unit.T, expanded[rows] @ unit.T)


def _exact(store: FeatureStore, vs: VectorSet, ranking: Ranking, rows: np.ndarray) -> SimFn:
    """Augmented or re-ranked scores of labelled rows (``rows`` of the set) against the labelled rows, over the
    whole collection's neighbour data, as ``mess similar`` ranks."""
    if ranking == "reranked":
        reranker = load_reranker(store, vs)
        return lambda sub: reranker.rows(rows[sub])[:, rows]
    aug = load_augmentation(store, vs)
    return lambda sub: expanded_rows(vs.unit(), aug, rows[sub])[:, rows]


def _similarity(metric: str, hub: str | None, unit: np.ndarray, shifted: np.ndarray, k: int) -> SimFn:
    """Similarity rows for a metric (on preprocessed vectors) or a hubness-reduced cosine."""
    if metric == "dot":
        return lambda rows: shifted[rows] @ shifted.T
    if metric == "euclidean":
        sq = (shifted**2).sum(axis=1)
        return lambda rows: 2 * shifted[rows] @ shifted.T - sq[rows, None] - sq[None, :]
    if hub is None and metric == "cosine":
        return _cosine(unit)
    if hub is None:
        raise ValueError(f"unknown similarity metric {metric!r}")
    reducer = HubnessReducer(hub, unit, lambda v, kk: exact_knn(unit, v, kk), k=k)
    stats = reducer.stats(unit, np.arange(len(unit)))

    def rescored(rows: np.ndarray) -> np.ndarray:
        sub = type(stats)(stats.r[rows], stats.mu[rows], stats.sd[rows])
        return reducer.rescore(unit[rows] @ unit.T, sub, stats)

    return rescored


def _score(
    name: str, kind: str, metric: str, hub: str | None, sim: SimFn, labels: np.ndarray, queries: np.ndarray, k: int
) -> SetScore:
    """Metrics and k-occurrence hubness of one similarity, computed in query chunks."""
    p, ap, nd, top = [], [], [], []
    for start in range(0, len(queries), CHUNK):
        rows = queries[start : start + CHUNK]
        scores = np.asarray(sim(rows), dtype=np.float64)
        order = ranking(scores, rows)  # sorted once: for the metrics and for the hubness lists
        rel = labels[order] == labels[rows][:, None]
        p.append(precision_at_k(rel, k))
        ap.append(average_precision(rel))
        nd.append(ndcg_at_k(rel, k))
        top.append(order[:, :k])
    summary = RetrievalScores(
        k, float(np.concatenate(p).mean()), float(np.concatenate(ap).mean()), float(np.concatenate(nd).mean())
    )
    return SetScore(name, kind, metric, hub, summary, hubness_stats(np.concatenate(top), len(labels)))


def plot_file(path: Path) -> Path:
    """``path`` as :func:`plot_evaluation` saves it: with .png added when it has no suffix (matplotlib added it
    unsaid), unless it is a device or a pipe (/dev/stdout gets the PNG itself); ValueError for a suffix matplotlib
    cannot write (found before, not after, the evaluation)."""
    from matplotlib.figure import Figure

    if not path.suffix:
        return path if path.exists() and not (path.is_file() or path.is_dir()) else path.with_name(path.name + ".png")
    kinds = Figure().canvas.get_supported_filetypes()
    if path.suffix[1:].lower() not in kinds:
        raise ValueError(f"cannot plot to {path}: use one of .{', .'.join(sorted(kinds))}")
    return path


def plot_evaluation(ev: Evaluation, path: str | Path) -> Path:
    """PNG of precision@k, mAP and nDCG@k per layer, with all-layers, fused and chance as reference lines."""
    path = Path(path)
    from matplotlib.figure import Figure  # no pyplot: the process's backend stays the caller's

    layers = [s for s in ev.sets if s.kind == "layer"]
    x = np.arange(len(layers))
    fig = Figure(figsize=(max(6.0, 0.5 * len(layers) + 3), 4.2))
    ax = fig.subplots()
    for attr, label, colour in (
        ("precision", f"P@{ev.k}", "tab:blue"),
        ("map", "mAP", "tab:orange"),
        ("ndcg", f"nDCG@{ev.k}", "tab:green"),
    ):
        ax.plot(x, [getattr(s.scores, attr) for s in layers], marker="o", color=colour, label=label)
    colours: dict[str, str] = {FUSED: "tab:red", LEARNED: "tab:brown"}
    for s, style in ((s, "--") for s in ev.sets if s.kind != "layer"):
        ax.axhline(
            s.scores.map,
            color=colours.get(s.kind, "tab:purple"),
            ls=style,
            label=f"{s.name} mAP {s.scores.map:.2f}",
        )
    ax.axhline(ev.chance.map, color="grey", ls=":", label=f"chance mAP {ev.chance.map:.2f}")
    ax.set_xticks(x, [s.name for s in layers], rotation=45 if len(layers) > 6 else 0, ha="right")
    ax.set_ylim(0, 1)
    ax.set_xlabel("layer")
    ax.set_ylabel("retrieval quality")
    ax.set_title(f"{ev.model}: {ev.relevance} retrieval ({ev.n_tracks} tracks, {ev.n_classes} labels)")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = plot_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = io.BytesIO()  # whole before it is written: a pipe cannot be seeked, a file is replaced whole
    fig.savefig(image, dpi=120, format=path.suffix[1:].lower() or "png")
    replace_file(path, image.getvalue())
    return path
