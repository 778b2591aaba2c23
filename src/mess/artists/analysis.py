"""One call per artist question, as `mess artists` asks it: similar artists, the artist matrix,
per-layer discrimination, validation against reference lists, and learned hybrid weights.

Each call reads a run's artists and the vector space asked for (or the most artist-discriminative
layer); what the user should know on the way (composer tags used as artists, the layer chosen)
goes to ``on_note`` as plain text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mess.artists.discrimination import LayerReport, layer_report, most_discriminative, rank_layers
from mess.artists.heatmap import cluster_order, write_csv, write_heatmap
from mess.artists.hybrid import (
    WEIGHTS_FILE,
    HybridFit,
    blend,
    components,
    fit_hybrid,
    load_weights,
    parse_weights,
    save_weights,
)
from mess.artists.profiles import (
    DEFAULT_MAX_TRACKS,
    DEFAULT_MIN_TRACKS,
    ArtistError,
    ArtistProfile,
    ArtistSet,
    Space,
    in_space,
    load_artists,
    load_space,
)
from mess.artists.reference import Coverage, load_reference, match_reference, read_json
from mess.artists.similarity import (
    FEW_ARTISTS,  # noqa: F401 -- where callers of this module found it before it moved
    METHODS,
    artist_vectors,
    centring_note,
    similarity_matrix,
    similarity_row,
    top_k,
)
from mess.artists.validate import MIN_QUERIES, Metrics, evaluate, random_baseline
from mess.constants import FUSED, counted
from mess.search.query import stale_aspect_map
from mess.store import FeatureStore, Run, StoreError
from mess.store.fused import fused_run_problem, left_out_note
from mess.store.paths import is_device_or_pipe
from mess.store.reports import slug

Note = Callable[[str], None]


def _ignore(_: str) -> None:
    pass


@dataclass(frozen=True)
class ArtistOptions:
    """How artists are represented and compared (the options every artist command shares)."""

    model: str | None = None
    method: str = "mean"
    center: bool = True
    max_tracks: int = DEFAULT_MAX_TRACKS
    min_tracks: int = DEFAULT_MIN_TRACKS

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ArtistError(f"unknown method {self.method!r}; choose {' or '.join(METHODS)}")
        if self.min_tracks > self.max_tracks:  # an artist has at most max_tracks tracks: every one would be low
            raise ArtistError(f"--min-tracks ({self.min_tracks}) is larger than --max-tracks ({self.max_tracks}); "
                              "an artist is represented by at most --max-tracks tracks")


@dataclass(frozen=True)
class SpaceChoice:
    """The vectors to compare artists in; none given = the most artist-discriminative layer."""

    layer: str | None = None
    aspect: str | None = None
    fused: bool = False

    @property
    def given(self) -> bool:
        """Whether a layer, an aspect or the fused vectors were asked for."""
        return self.layer is not None or self.aspect is not None or self.fused


def open_artists(store: FeatureStore, options: ArtistOptions, on_note: Note = _ignore) -> tuple[Run, ArtistSet]:
    """The run and its artists; notes when artist names came from composer tags or tracks were left out."""
    run = store.run(options.model)
    artists = load_artists(store, run, max_tracks=options.max_tracks, min_tracks=options.min_tracks)
    if artists.composer_fallback:
        on_note(f"{counted(artists.composer_fallback, 'track has', 'tracks have')} no artist tag; their composer "
                "is used as the artist")
    if artists.unattributed:
        on_note(f"{counted(artists.unattributed, 'track has', 'tracks have')} neither artist nor composer (or only "
                f"one like 'Various Artists') and {'is' if artists.unattributed == 1 else 'are'} left out")
    return run, artists


def every_space(store: FeatureStore, run: Run, on_note: Note = _ignore) -> list[Space]:
    """Every layer of the run, then its fused vectors when `mess fuse apply` wrote some for this run (a note says
    why stored ones made for another run of the model are left out)."""
    spaces = [load_space(store, run, layer=name) for name in run.layer_names]
    meta = store.derived_meta(run, FUSED)
    problem = fused_run_problem(store, run, meta)
    if problem is not None:
        on_note(f"fused vectors left out: {problem}")
    elif meta is not None:
        try:
            fused = load_space(store, run, fused=True)
        except StoreError:
            return spaces
        missing = len(store.tracks(run)) - len(fused.track_ids)  # its rows would not be comparable: left out
        if missing:
            on_note(f"fused row left out: {counted(missing, 'track has', 'tracks have')} no fused vectors yet; "
                    "`mess fuse apply` adds them")
        else:
            spaces.append(fused)
    return spaces


def space_artists(artists: ArtistSet, space: Space, options: ArtistOptions, on_note: Note = _ignore) -> ArtistSet:
    """``artists`` as represented by their tracks with a vector in ``space`` (:func:`in_space`); how many tracks
    have none (tracks extracted since `mess fuse apply`, for the fused vectors) is said through ``on_note``, and so
    is centring fewer than :data:`FEW_ARTISTS` artists."""
    kept, missing = in_space(artists, space, max_tracks=options.max_tracks, min_tracks=options.min_tracks)
    if missing:
        on_note(left_out_note(missing, space.label))
    kept = enough_artists(kept, space)
    if options.center and (note := centring_note(len(kept.profiles), "--no-center")):
        on_note(note)
    return kept


def enough_artists(artists: ArtistSet, space: Space) -> ArtistSet:
    """``artists`` (those with vectors in ``space``); an ArtistError when fewer than 2, what similarity needs."""
    if len(artists.profiles) < 2:
        raise ArtistError(f"artist similarity needs at least 2 artists; {len(artists.profiles)} have {space.label} "
                          "vectors (`mess fuse apply` adds the tracks extracted since it ran)")
    return artists


def choose_space(store: FeatureStore, run: Run, artists: ArtistSet, choice: SpaceChoice,
                 on_note: Note = _ignore) -> Space:
    """The chosen space, or the most artist-discriminative layer (said through ``on_note``) when none is chosen; an
    aspect read from a map probed on fewer tracks than the run has now is said through ``on_note`` too."""
    if choice.given:
        space = load_space(store, run, layer=choice.layer, aspect=choice.aspect, fused=choice.fused)
        stale = stale_aspect_map(store, run) if choice.aspect is not None else None
        if stale:
            on_note(stale)
        return space
    space, effect = most_discriminative(artists, [load_space(store, run, layer=name) for name in run.layer_names])
    if np.isfinite(effect):
        on_note(f"layer {space.label}: the most artist-discriminative of {run.model} "
                f"(separation {effect:.2f}; see `mess artists discrimination`)")
    else:  # separation compares an artist's tracks with each other: it needs an artist with two
        on_note(f"layer {space.label} of {run.model}: no artist has two tracks to measure which layer separates "
                "artists best; choose one with --layer or --aspect")
    return space


def _similarity(artists: ArtistSet, space: Space, options: ArtistOptions, center: bool | None = None) -> np.ndarray:
    """The artists' similarity matrix in ``space``; the centring note is :func:`space_artists`' (``on_note``)."""
    vectors = artist_vectors(artists, space, center=options.center if center is None else center)
    return similarity_matrix(vectors, options.method, warn=False)


@dataclass(frozen=True)
class SimilarArtists:
    """The artists most like one artist, in one space (``parts``: the hybrid's components, when blended)."""

    run: Run
    artist: ArtistProfile
    space: str
    options: ArtistOptions
    rows: list[dict]
    parts: tuple[str, ...] = ()
    left_out: int = 0  # tracks without vectors in the space (extracted since `mess fuse apply`)

    def to_dict(self) -> dict:
        """JSON-ready form: the query artist, how it was compared, and the ranked rows."""
        return {"artist": self.artist.name, "tracks": len(self.artist.track_ids), "confidence": self.artist.confidence,
                "low_confidence": self.artist.low_confidence, "model": self.run.model, "space": self.space,
                "method": self.options.method, "centered": self.options.center, "hybrid": bool(self.parts),
                "tracks_without_fused_vectors": self.left_out, "results": self.rows}


@dataclass(frozen=True)
class Hybrid:
    """How to blend audio with other evidence: explicit ``weights`` text, else the saved weights."""

    weights: str | None = None
    reference: Path | dict[str, list[str]] | None = None  # a file, or its content as parse_reference gives it
    tags: Path | dict[str, list[str]] | None = None  # a file, or its content as parse_tags gives it
    method_given: bool = False  # --method / --center passed: kept even when the saved weights used others
    center_given: bool = False


def similar_artists(store: FeatureStore, name: str, k: int, options: ArtistOptions, choice: SpaceChoice, *,
                    hide_low: bool = False, hybrid: Hybrid | None = None, on_note: Note = _ignore) -> SimilarArtists:
    """The ``k`` artists most similar to ``name``; with ``hybrid``, audio blended with tags, collaborations
    and reference lists (in the space the saved weights were learned on, unless one is chosen)."""
    run, artists = open_artists(store, options, on_note)
    query = artists.index(name)
    if hybrid is not None and hybrid.weights is None:
        options = saved_comparison(store, options, hybrid, on_note)
        if not choice.given:
            saved = saved_selection(store, run, on_note)
            choice = SpaceChoice(saved.get("layer"), saved.get("aspect"), bool(saved.get("fused")))
    space = choose_space(store, run, artists, choice, on_note)
    everyone, artists = artists, space_artists(artists, space, options, on_note)
    query = row_in_space(artists, everyone.profiles[query].name, space)
    parts: dict[str, np.ndarray] = {}
    if hybrid is not None:
        scores, parts = blended_row(store, artists, space, options, hybrid, query, on_note)
    else:
        scores = similarity_row(artist_vectors(artists, space, center=options.center), query, options.method,
                                warn=False)  # the centring note is space_artists' (on_note)
    keep = np.array([not p.low_confidence for p in artists.profiles]) if hide_low else None
    rows = [_row(artists.profiles[j], r + 1, float(scores[j]), {c: float(m[query, j]) for c, m in parts.items()})
            for r, j in enumerate(top_k(scores, query, k, keep))]
    if not rows:  # every other artist hidden: an empty table said nothing
        on_note(all_hidden(len(artists.profiles) - 1, options.min_tracks))
    return SimilarArtists(run, artists.profiles[query], space.label, options, rows, tuple(parts),
                          len(everyone.tracks) - len(artists.tracks))


def all_hidden(others: int, min_tracks: int) -> str:
    """The note of a --hide-low answer that left out all ``others`` artists."""
    return f"--hide-low left out every other artist ({others}): each has fewer than --min-tracks {min_tracks} tracks"


def blended_row(store: FeatureStore, artists: ArtistSet, space: Space, options: ArtistOptions, hybrid: Hybrid,
                query: int, on_note: Note = _ignore) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The hybrid scores of artist ``query`` against every artist (audio in ``space`` blended with tags,
    collaborations and reference lists by ``hybrid``'s weights, else the saved ones), and each component's matrix;
    weights on components this collection has no information of are said through ``on_note``, an ArtistError when
    every weight is."""
    weights = (parse_weights(hybrid.weights) if hybrid.weights is not None
               else load_weights(store.reports_dir / WEIGHTS_FILE))
    reference = load_reference(hybrid.reference) if isinstance(hybrid.reference, Path) else hybrid.reference
    matched = match_reference(reference, artists)[0] if reference is not None else None
    parts = components(_similarity(artists, space, options), artists, matched=matched,
                       extra_tags=load_tags(hybrid.tags) if isinstance(hybrid.tags, Path) else hybrid.tags)
    missing = [c for c, w in weights.items() if w > 0 and c not in parts]
    if not any(weights.get(c, 0.0) > 0 for c in parts):  # every artist would score 0, ranked by name
        raise ArtistError(f"the weights are all on {', '.join(missing)}, of which this collection has no "
                          "information (no tags / collaborations / --reference), so every artist would score "
                          f"0; give weight to {' or '.join(parts)}")
    if missing:
        on_note(f"no information for {', '.join(missing)} in this collection "
                "(no tags / collaborations / --reference); those weights are unused")
    return blend(parts, weights)[query], parts


def row_in_space(artists: ArtistSet, name: str, space: Space) -> int:
    """The row of the artist ``name`` in ``artists`` (those with vectors in ``space``); an ArtistError when none of
    its tracks has one."""
    try:
        return artists.index(name)
    except ArtistError:
        raise ArtistError(f"{name} has no {space.label} vectors yet (its tracks were extracted after "
                          "`mess fuse apply` ran); `mess fuse apply` adds them") from None


def _row(profile: ArtistProfile, rank: int, score: float, parts: dict[str, float]) -> dict:
    return {"rank": rank, "artist": profile.name, "score": score, "tracks": len(profile.track_ids),
            "total_tracks": profile.total_tracks, "confidence": profile.confidence,
            "low_confidence": profile.low_confidence, **({"components": parts} if parts else {})}


def _saved_meta(store: FeatureStore) -> dict:
    """What the saved hybrid weights were learned on (empty when there are none or the file is malformed)."""
    path = store.reports_dir / WEIGHTS_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, ValueError):  # ValueError: not JSON, or not UTF-8 (load_weights says which)
        return {}
    return saved if isinstance(saved, dict) else {}


def saved_comparison(store: FeatureStore, options: ArtistOptions, hybrid: Hybrid,
                     on_note: Note = _ignore) -> ArtistOptions:
    """``options`` with the method and centring the saved hybrid weights were learned with, for those the user did
    not pass; one passed that differs from the saved one is kept and said through ``on_note``."""
    saved = _saved_meta(store)
    method, center = saved.get("method"), saved.get("centered")
    if method not in METHODS or method == options.method:
        method = None
    if not isinstance(center, bool) or center == options.center:
        center = None
    if method is not None and hybrid.method_given:
        on_note(f"the saved hybrid weights were learned with --method {method}; using --method {options.method} "
                "as asked, so the audio component is not the one they were learned on")
        method = None
    if center is not None and hybrid.center_given:
        on_note(f"the saved hybrid weights were learned {'with' if center else 'without'} centring; using "
                f"{'--center' if options.center else '--no-center'} as asked, so the audio component is not the "
                "one they were learned on")
        center = None
    return replace(options, method=options.method if method is None else method,
                   center=options.center if center is None else center)


def saved_selection(store: FeatureStore, run: Run, on_note: Note = _ignore) -> dict:
    """The space the saved hybrid weights were learned on (empty when there are none, or when they were learned on
    another model than ``run``'s: its layers are not this model's, said through ``on_note``; so is another run of
    the model, whose layers are); an ArtistError when its layer or aspect is not a name or its fused not true/false."""
    saved = _saved_meta(store)
    selection, model, run_id = saved.get("selection", {}), saved.get("model", run.model), saved.get("run_id", run.id)
    if model != run.model:
        on_note(f"the saved weights were learned on {model} ({saved.get('space')}); the audio component here is "
                f"{run.model}'s (pass --model {model} to use theirs)")
        return {}
    if run_id != run.id:
        on_note(f"the saved weights were learned on {model} run {run_id}; the audio component here is run {run.id}'s "
                f"(pass --model {model}@{run_id} to use theirs)")
    if not isinstance(selection, dict):
        return {}
    if not all(isinstance(selection.get(k), str | None) for k in ("layer", "aspect")) \
            or not isinstance(selection.get("fused"), bool | None):
        raise ArtistError(f"malformed weights file {store.reports_dir / WEIGHTS_FILE} (its selection's layer and "
                          "aspect are not names, or its fused is not true or false)")
    return selection


def load_tags(path: Path | None) -> dict[str, list[str]] | None:
    """A JSON map artist -> genre tags (None without a path); ArtistError when it is missing or malformed."""
    return None if path is None else parse_tags(read_json(path, "tags"), f"tags file {path}")


def parse_tags(data: object, what: str = "tags") -> dict[str, list[str]]:
    """``data`` as a map artist -> genre tags; ArtistError, naming it as ``what``, when it is not one."""
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(t, str) for t in v)
                                             for v in data.values()):
        raise ArtistError(f"{what} must map each artist to a list of tags (strings)")
    return data


@dataclass(frozen=True)
class ArtistMatrix:
    """Pairwise artist similarity, rows and columns in cluster order, and the files it was written to."""

    run: Run
    space: str
    names: list[str]
    matrix: np.ndarray
    csv: Path
    png: Path


def artist_matrix(store: FeatureStore, options: ArtistOptions, choice: SpaceChoice, out: Path | None = None,
                  on_note: Note = _ignore) -> ArtistMatrix:
    """The artist similarity matrix, clustered, as CSV and heatmap PNG at ``out`` + .csv / .png
    (default: STORE/reports/artists-matrix-MODEL-runID-SPACE)."""
    run, artists = open_artists(store, options, on_note)
    space = choose_space(store, run, artists, choice, on_note)
    artists = space_artists(artists, space, options, on_note)
    sim = _similarity(artists, space, options)
    name = f"artists-matrix-{slug(f'{run.model}-run{run.id}-{space.label}').strip('_')}"
    prefix = _matrix_prefix(out, store.reports_dir, name)
    order = cluster_order(sim)
    names = [artists.names[i] for i in order]
    sim = sim[np.ix_(order, order)]
    csv_path, png_path = prefix.with_name(prefix.name + ".csv"), prefix.with_name(prefix.name + ".png")
    try:
        write_csv(csv_path, names, sim)
        unfit = write_heatmap(png_path, names, sim,
                              f"{run.model} {space.label} ({options.method}{', centred' if options.center else ''})")
    except OSError as exc:
        elsewhere = "; `--out PATH` writes them elsewhere" if out is None else ""
        raise ArtistError(f"cannot write {exc.filename or prefix}: {exc.strerror or exc}{elsewhere}") from None
    if unfit:
        on_note(f"no installed font draws {len(unfit)} characters of the artist names ({unfit[:10]}): the heatmap "
                "shows them as boxes (a font such as Noto Sans CJK draws Japanese, Korean and Chinese); the CSV has "
                "them")
    return ArtistMatrix(run, space.label, names, sim, csv_path, png_path)


def _matrix_prefix(out: Path | None, reports: Path, name: str) -> Path:
    """Where the matrix's .csv and .png go: ``out`` as a prefix (a .csv/.png ending dropped: -o heat.png gives
    heat.png and heat.csv), ``name`` inside ``out`` when it is a folder, ``name`` in ``reports`` by default."""
    if out is None:
        return reports / name
    if out.is_dir():
        return out / name
    if is_device_or_pipe(out):  # /dev/full.csv would be a new file in /dev, not the device
        raise ArtistError(f"cannot write the matrix to {out}: the output is two files (PREFIX.csv and PREFIX.png), "
                          "so give a path prefix or a folder, not a device or a pipe")
    return out.with_suffix("") if out.suffix.lower() in (".csv", ".png") else out


def discrimination(store: FeatureStore, options: ArtistOptions,
                   on_note: Note = _ignore) -> tuple[Run, ArtistSet, list[LayerReport]]:
    """How well every layer (and the fused vectors) tells artists apart, best first."""
    run, artists = open_artists(store, options, on_note)
    reports = [layer_report(artists, space, options.method) for space in every_space(store, run, on_note)]
    return run, artists, rank_layers(reports)


@dataclass(frozen=True)
class LayerValidation:
    """Every space's similar-artist rankings scored against reference lists, and a random baseline."""

    run: Run
    k: int
    options: ArtistOptions
    n_artists: int
    coverage: Coverage
    layers: list[tuple[str, Metrics, float]]  # space, metrics, nDCG with the other centring
    baseline: Metrics
    notes: list[str] = field(default_factory=list)

    @property
    def caveat(self) -> str | None:
        """A sentence when too few reference artists (queries) back the comparison of layers, else None."""
        n = self.coverage.usable_queries
        if n >= MIN_QUERIES:
            return None
        return (f"{n} reference artist{'' if n == 1 else 's'} with a list in the collection: too few to conclude "
                f"which layer agrees best with the lists (want >= {MIN_QUERIES})")

    def to_dict(self) -> dict:
        """JSON-ready form, with the :attr:`caveat`."""
        other = f"ndcg_{'raw' if self.options.center else 'centered'}"
        return {"model": self.run.model, "k": self.k, "method": self.options.method,
                "centered": self.options.center, "coverage": self.coverage.to_dict(),
                "layers": [{"layer": label, **vars(m), other: o} for label, m, o in self.layers],
                "random": vars(self.baseline), "caveat": self.caveat}


def validate_layers(store: FeatureStore, reference: Path, k: int, options: ArtistOptions,
                    on_note: Note = _ignore) -> LayerValidation:
    """Score every layer's (and the fused vectors') similar artists against reference lists at ``k``; centring
    fewer than :data:`FEW_ARTISTS` artists is said through ``on_note``, as by the other artist analyses."""
    ref = load_reference(reference)
    run, artists = open_artists(store, options, on_note)
    matched, coverage = match_reference(ref, artists)
    if not matched:
        raise ArtistError(f"none of the {coverage.query_artists} reference artists has a listed artist in the "
                          f"collection (found {coverage.query_found} query and {coverage.listed_found} listed artists)")
    if options.center and (note := centring_note(len(artists.profiles), "--no-center")):
        on_note(note)
    layers = [(space.label, evaluate(_similarity(artists, space, options), matched, k),
               evaluate(_similarity(artists, space, options, center=not options.center), matched, k).ndcg)
              for space in every_space(store, run, on_note)]
    n = len(artists.profiles)
    return LayerValidation(run, k, options, n, coverage, layers, random_baseline(n, matched, k), _whole_k(k, n))


def _whole_k(k: int, n: int) -> list[str]:
    """The note for a ``k`` that takes every other one of ``n`` artists (none otherwise)."""
    return [f"k={k} covers all {n - 1} other artists, so overlap@k and recall@k are 1 by construction; "
            "use a smaller -k (nDCG and MRR still rank)"] if k >= n - 1 else []


@dataclass(frozen=True)
class HybridWeights:
    """Learned hybrid weights, what they were learned on (``meta``), where they were saved, and why they were not
    (``unsaved``: the store's folder refused the file, a read-only store say; the scores stand)."""

    meta: dict
    fit: HybridFit
    saved: Path | None
    unsaved: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {**self.meta, **self.fit.to_dict(), "saved": str(self.saved) if self.saved else None}


def learn_hybrid(store: FeatureStore, reference: Path, k: int, options: ArtistOptions, choice: SpaceChoice, *,
                 tags: Path | None = None, test_fraction: float = 0.3, seed: int = 0, save: bool = True,
                 on_note: Note = _ignore) -> HybridWeights:
    """Learn hybrid weights (audio, genre, collab, reference) on a train split of the reference artists;
    with ``save``, write them to STORE/reports/artists_hybrid.json for :func:`similar_artists`."""
    ref = load_reference(reference)
    run, artists = open_artists(store, options, on_note)
    space = choose_space(store, run, artists, choice, on_note)
    artists = space_artists(artists, space, options, on_note)
    matched, coverage = match_reference(ref, artists)
    parts = components(_similarity(artists, space, options), artists, extra_tags=load_tags(tags))
    fit = fit_hybrid(parts, matched, k=k, test_fraction=test_fraction, seed=seed)
    for note in _whole_k(k, len(artists.profiles)):  # as validate says it: the table's @k scores tell nothing then
        on_note(note)
    selection: dict[str, str | bool | None] = ({"layer": space.label} if not choice.given
                 else {"layer": choice.layer, "aspect": choice.aspect, "fused": choice.fused})
    meta = {"model": run.model, "run_id": run.id, "space": space.label, "selection": selection,
            "method": options.method, "centered": options.center, "k": k, "seed": seed, "coverage": coverage.to_dict()}
    path = store.reports_dir / WEIGHTS_FILE
    if save:
        try:
            save_weights(path, fit, meta)
        except OSError as exc:
            return HybridWeights(meta, fit, None, f"cannot write {path}: {exc.strerror or exc}")
    return HybridWeights(meta, fit, path if save else None)
