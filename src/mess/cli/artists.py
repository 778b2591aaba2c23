"""`mess artists ...`: similar artists, artist matrix, per-layer discrimination, validation, hybrid weights."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Protocol, TypeVar

import typer
from rich.table import Table

from mess.cli.common import console, emit_json, fail, failing, note, open_store, plain, stdout, warn
from mess.cli.options import (
    DEFAULT_STORE_PATH,
    SEED_MAX,
    AspectOpt,
    FusedOpt,
    JsonOpt,
    ModelOpt,
    StoreOpt,
    in_a_folder,
)
from mess.constants import ARTIST_WEIGHTS_FILE, DEFAULT_MAX_TRACKS, DEFAULT_MIN_TRACKS

if TYPE_CHECKING:  # mess.artists.analysis loads the search stack (faiss): imported by the commands that run it
    from mess.artists.analysis import ArtistOptions, HybridWeights, LayerValidation, SimilarArtists
    from mess.artists.discrimination import LayerReport
    from mess.artists.profiles import ArtistSet
    from mess.store import FeatureStore, Run

LayerOpt = Annotated[
    str | None,
    typer.Option("--layer", "-l", help="Layer name or index (default: the most artist-discriminative layer)."),
]
_METHOD_HELP = "mean: cosine of mean track vectors; chamfer: symmetric set-to-set best-match similarity."
_CENTER_HELP = ("Subtract the collection mean before the cosine (fixes anisotropic layers where everything looks "
                "~0.9 similar).")
_SAVED = "; with --hybrid, as the saved weights were learned."
MethodOpt = Annotated[str, typer.Option("--method", help=_METHOD_HELP)]
CenterOpt = Annotated[bool, typer.Option("--center/--no-center", help=_CENTER_HELP)]
HybridMethodOpt = Annotated[str | None, typer.Option("--method", help=_METHOD_HELP + " Default: mean" + _SAVED)]
HybridCenterOpt = Annotated[
    bool | None, typer.Option("--center/--no-center", help=_CENTER_HELP + " Default: --center" + _SAVED)
]
MaxTracksOpt = Annotated[int, typer.Option("--max-tracks", min=1, help="Tracks representing each artist.")]
MinTracksOpt = Annotated[
    int, typer.Option("--min-tracks", min=1, help="Artists with fewer tracks are flagged low-confidence.")
]
KOpt = Annotated[int, typer.Option("-k", min=1, help="How many artists.")]
ReferenceOpt = Annotated[
    Path,
    typer.Option(
        "--reference",
        "-r",
        help="JSON map artist -> ordered list of similar artists (music-map, Last.fm, ListenBrainz shapes).",
    ),
]
TagsOpt = Annotated[Path | None, typer.Option("--tags", help="JSON map artist -> genre tags, added to file tags.")]
HybridOpt = Annotated[
    bool,
    typer.Option(
        "--hybrid",
        help="Blend audio with genre tags, collaborations and the "
        "reference map, using weights from `mess artists hybrid`.",
    ),
]
WeightsOpt = Annotated[
    str | None,
    typer.Option("--weights", help="Hybrid weights, e.g. audio=0.6,genre=0.3,collab=0.1 (implies --hybrid)."),
]


def _options(model: str | None, method: str, center: bool, max_tracks: int, min_tracks: int) -> ArtistOptions:
    from mess.artists.analysis import ArtistOptions
    from mess.artists.profiles import ArtistError

    with failing(ArtistError):
        return ArtistOptions(model, method, center, max_tracks, min_tracks)


_A = TypeVar("_A")


def _analysed(analyse: Callable[[FeatureStore], _A], store: Path) -> _A:
    """What ``analyse`` finds in the store at ``store``, read from one catalog version (the artists' tracks and their
    vectors, though an extract is committing); an ArtistError ends the command with its message."""
    from mess.artists.profiles import ArtistError

    with open_store(store) as fs, failing(ArtistError):
        return fs.reading(lambda: analyse(fs))


class _Report(Protocol):
    """A result with a JSON-ready form."""

    def to_dict(self) -> dict: ...


_R = TypeVar("_R", bound=_Report)


def _show(result: _R, as_json: bool, print_result: Callable[[_R], None]) -> None:
    """Print ``result`` as JSON (``--json``) or with ``print_result``."""
    if as_json:
        emit_json(result.to_dict())
    else:
        print_result(result)


def similar_command(
    name: Annotated[str, typer.Argument(help="Artist name (case and accents do not matter).")],
    k: KOpt = 10,
    layer: LayerOpt = None,
    aspect: AspectOpt = None,
    fused: FusedOpt = False,
    model: ModelOpt = None,
    method: HybridMethodOpt = None,
    center: HybridCenterOpt = None,
    max_tracks: MaxTracksOpt = DEFAULT_MAX_TRACKS,
    min_tracks: MinTracksOpt = DEFAULT_MIN_TRACKS,
    hide_low: Annotated[bool, typer.Option("--hide-low", help="Leave low-confidence artists out.")] = False,
    hybrid: HybridOpt = False,
    weights: WeightsOpt = None,
    reference: Annotated[
        Path | None, typer.Option("--reference", "-r", help="Reference lists for the hybrid 'reference' component.")
    ] = None,
    tags: TagsOpt = None,
    store: StoreOpt = DEFAULT_STORE_PATH,
    as_json: JsonOpt = False,
) -> None:
    """Artists that sound like NAME, with how many tracks back each artist and how sure that is
    (--hybrid: with the --method and --center the saved weights were learned with, unless passed)."""
    from mess.artists.analysis import Hybrid, SpaceChoice, similar_artists

    if not hybrid and weights is None and (reference or tags):  # they were read by nothing, silently
        fail(f"{'--reference' if reference else '--tags'} feeds the hybrid score: add --hybrid (or --weights)")
    options = _options(model, method or "mean", center is not False, max_tracks, min_tracks)
    blend = (Hybrid(weights, reference, tags, method is not None, center is not None)
             if hybrid or weights is not None else None)
    result = _analysed(lambda fs: similar_artists(fs, name, k, options, SpaceChoice(layer, aspect, fused),
                                                  hide_low=hide_low, hybrid=blend, on_note=note), store)
    _show(result, as_json, _print_similar)


def _print_similar(result: SimilarArtists) -> None:
    me, method, center = result.artist, result.options.method, result.options.center
    if me.low_confidence:
        console.print(
            f"[yellow]warning:[/] {plain(me.name)} has only {len(me.track_ids)} track(s); "
            f"treat this answer as low-confidence (confidence {me.confidence:.2f})"
        )
    table = Table(
        title=f"artists like {plain(me.name)}  \\[{result.run.model} {result.space}, {method}"
        f"{', centred' if center else ''}{', hybrid' if result.parts else ''}]"
    )
    for col in ("#", "artist", "score", "tracks", "confidence", *result.parts):
        table.add_column(col, justify="left" if col == "artist" else "right")
    for row in result.rows:
        flag = " [yellow](low)[/]" if row["low_confidence"] else ""
        table.add_row(
            str(row["rank"]),
            plain(row["artist"]) + flag,
            f"{row['score']:.3f}",
            f"{row['tracks']}/{row['total_tracks']}",
            f"{row['confidence']:.2f}",
            *(f"{v:.2f}" for v in row.get("components", {}).values()),
        )
    stdout.print(table)


def _out_in_a_folder(value: str | None) -> str | None:
    """``--out`` as given (a folder's trailing slash kept), its folder there (:func:`in_a_folder`)."""
    if value is not None:
        in_a_folder(value, made=value.endswith(("/", os.sep)))
    return value


def matrix_command(
    layer: LayerOpt = None,
    aspect: AspectOpt = None,
    fused: FusedOpt = False,
    model: ModelOpt = None,
    method: MethodOpt = "mean",
    center: CenterOpt = True,
    max_tracks: MaxTracksOpt = DEFAULT_MAX_TRACKS,
    min_tracks: MinTracksOpt = DEFAULT_MIN_TRACKS,
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            "-o",
            help="Output path prefix for .csv and .png, a .csv/.png ending dropped, or a folder to write them in "
            "(one ending in / is made, in a folder that exists) (default: "
            "STORE/reports/artists-matrix-MODEL-runID-LAYER).",
            callback=_out_in_a_folder,
        ),
    ] = None,
    store: StoreOpt = DEFAULT_STORE_PATH,
    as_json: JsonOpt = False,
) -> None:
    """Pairwise artist similarity matrix as CSV and heatmap PNG (rows clustered)."""
    from mess.artists.analysis import SpaceChoice, artist_matrix

    options = _options(model, method, center, max_tracks, min_tracks)
    target = None if out is None else Path(out)
    if target is not None and str(out).endswith(("/", os.sep)) and not target.exists():
        try:  # a folder named with its slash, not yet made (Path drops the slash: it was a prefix)
            target.mkdir()
        except OSError as exc:
            fail(f"cannot make the folder {out}: {exc.strerror or exc}")
    m = _analysed(lambda fs: artist_matrix(fs, options, SpaceChoice(layer, aspect, fused), target, on_note=note),
                  store)
    if as_json:
        emit_json({"artists": m.names, "matrix": m.matrix.round(4).tolist(), "csv": str(m.csv), "png": str(m.png),
                   "space": m.space, "method": method, "centered": center})
        return
    n = len(m.names)
    stdout.print(plain(f"{n} x {n} artist matrix [{m.run.model} {m.space}] -> {m.csv}, {m.png}"))


def discrimination_command(
    model: ModelOpt = None,
    method: MethodOpt = "mean",
    max_tracks: MaxTracksOpt = DEFAULT_MAX_TRACKS,
    min_tracks: MinTracksOpt = DEFAULT_MIN_TRACKS,
    store: StoreOpt = DEFAULT_STORE_PATH,
    as_json: JsonOpt = False,
) -> None:
    """Which layers tell artists apart: pair-similarity range raw vs centred, separation, verdict."""
    from mess.artists.analysis import discrimination

    options = _options(model, method, True, max_tracks, min_tracks)
    run, artists, reports = _analysed(lambda fs: discrimination(fs, options, on_note=note), store)
    if not all(math.isfinite(r.separation.within) for r in reports):  # within needs two tracks of one artist
        note("no artist has two tracks, so same-artist similarity and separation are n/a (null in JSON) and no "
             "layer can be judged by them")
    if as_json:
        emit_json({"model": run.model, "artists": len(artists.profiles), "method": method,
                   "layers": [r.to_dict() for r in reports]})
        return
    _print_discrimination(run, artists, reports)


def _number(value: float) -> str:
    """``value`` to 2 decimals, or n/a when it could not be measured (NaN)."""
    return f"{value:.2f}" if math.isfinite(value) else "n/a"


def _print_discrimination(run: Run, artists: ArtistSet, reports: list[LayerReport]) -> None:
    import numpy as np

    table = Table(title=f"artist discrimination per layer: {run.model}, {len(artists.profiles)} artists, best first")
    for col in ("#", "layer", "raw range", "centred range", "within/between", "separation", "silhouette", "verdict"):
        table.add_column(col, justify="left" if col in ("layer", "verdict") else "right")
    pairs = Table(title="most and least similar artist pairs (centred)")
    for col in ("layer", "most similar", "least similar"):
        pairs.add_column(col)
    style = {"useful": "green", "centre": "yellow", "useless": "bold red", "unknown": "dim"}
    for rank, r in enumerate(reports, 1):
        raw = f"{r.raw.min:.2f}..{r.raw.max:.2f} ({r.raw.span:.2f})"
        table.add_row(
            str(rank),
            plain(r.label),
            f"[red]{raw}[/]" if "compressed" in r.flags else raw,
            f"{r.centered.min:.2f}..{r.centered.max:.2f} ({r.centered.span:.2f})",
            f"{_number(r.separation.within)}/{_number(r.separation.between)}",
            _number(r.separation.effect),
            "-" if r.silhouette is None else f"{r.silhouette:.2f}",
            f"[{style[r.verdict]}]{r.verdict}[/]",
        )
        hi, lo = r.centered.highest, r.centered.lowest
        pairs.add_row(
            plain(r.label), plain(f"{hi[0]} ~ {hi[1]} {hi[2]:.2f}"), plain(f"{lo[0]} ~ {lo[1]} {lo[2]:.2f}")
        )
    stdout.print(table)
    stdout.print(pairs)
    wider = sum(r.centered.span > r.raw.span for r in reports)
    console.print(
        f"separation: same-artist minus different-artist track cosine, in SDs of the latter. "
        f"Centring widened the span on {wider}/{len(reports)} layers (median "
        f"{np.median([r.raw.span for r in reports]):.3f} raw -> {np.median([r.centered.span for r in reports]):.3f}"
        " centred). useless: no artist signal; centre: raw range compressed, keep --center (default); unknown: no "
        "separation to judge by."
    )


def validate_command(
    reference: ReferenceOpt,
    k: KOpt = 10,
    model: ModelOpt = None,
    method: MethodOpt = "mean",
    center: CenterOpt = True,
    max_tracks: MaxTracksOpt = DEFAULT_MAX_TRACKS,
    min_tracks: MinTracksOpt = DEFAULT_MIN_TRACKS,
    store: StoreOpt = DEFAULT_STORE_PATH,
    as_json: JsonOpt = False,
) -> None:
    """Score every layer's similar-artist rankings against reference lists (overlap, recall, nDCG @k, MRR)."""
    from mess.artists.analysis import validate_layers

    options = _options(model, method, center, max_tracks, min_tracks)
    result = _analysed(lambda fs: validate_layers(fs, reference, k, options, on_note=note), store)
    for text in result.notes:
        note(text)
    _show(result, as_json, _print_validation)


def _print_validation(result: LayerValidation) -> None:
    coverage, k, center = result.coverage, result.k, result.options.center
    stdout.print(
        f"coverage: {coverage.query_found}/{coverage.query_artists} reference artists and "
        f"{coverage.listed_found}/{coverage.listed_artists} listed artists are in the collection; "
        f"{coverage.usable_queries} queries usable"
        + (f"; missing e.g. {plain(', '.join(coverage.missing[:5]))}" if coverage.missing else "")
    )
    other = "raw" if center else "centred"
    table = Table(
        title=f"{result.run.model} vs reference lists ({coverage.usable_queries} queries, "
        f"{'centred' if center else 'raw'} cosine)"
    )
    for col in ("layer", f"overlap@{k}", f"recall@{k}", f"nDCG@{k}", "MRR", f"nDCG@{k} {other}"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    best = max(range(len(result.layers)), key=lambda i: result.layers[i][1].ndcg)
    for i, (label, m, o) in enumerate(result.layers):
        cells = [f"{m.overlap:.3f}", f"{m.recall:.3f}", f"{m.ndcg:.3f}", f"{m.mrr:.3f}", f"{o:.3f}"]
        table.add_row(f"[bold]{plain(label)} *[/]" if i == best else plain(label), *cells)
    table.add_row(
        "[dim]random[/]", *(f"[dim]{getattr(result.baseline, f):.3f}[/]" for f in ("overlap", "recall", "ndcg", "mrr")),
        "",
    )
    stdout.print(table)
    if result.caveat:
        console.print(f"[yellow]caveat:[/] {plain(result.caveat)}")


def hybrid_command(
    reference: ReferenceOpt,
    k: KOpt = 10,
    layer: LayerOpt = None,
    aspect: AspectOpt = None,
    fused: FusedOpt = False,
    model: ModelOpt = None,
    method: MethodOpt = "mean",
    center: CenterOpt = True,
    max_tracks: MaxTracksOpt = DEFAULT_MAX_TRACKS,
    min_tracks: MinTracksOpt = DEFAULT_MIN_TRACKS,
    tags: TagsOpt = None,
    test_fraction: Annotated[float, typer.Option(help="Share of reference artists held out for evaluation.")] = 0.3,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Seed of the train/test split.")] = 0,
    save: Annotated[
        bool,
        typer.Option(
            "--save/--no-save",
            help=f"Save weights to STORE/reports/{ARTIST_WEIGHTS_FILE} for `mess artists similar --hybrid`.",
        ),
    ] = True,
    store: StoreOpt = DEFAULT_STORE_PATH,
    as_json: JsonOpt = False,
) -> None:
    """Learn hybrid weights (audio, genre, collab, reference) on a train split; report held-out metrics."""
    from mess.artists.analysis import SpaceChoice, learn_hybrid

    options = _options(model, method, center, max_tracks, min_tracks)
    result = _analysed(lambda fs: learn_hybrid(fs, reference, k, options, SpaceChoice(layer, aspect, fused),
                                               tags=tags, test_fraction=test_fraction, seed=seed, save=save,
                                               on_note=note), store)
    _show(result, as_json, _print_hybrid)
    if result.unsaved:
        warn(f"{result.unsaved}: these weights were not saved, so `mess artists similar --hybrid` cannot use them "
             "(learn them on a writable store to save them; --no-save skips saving)")


def _print_hybrid(result: HybridWeights) -> None:
    from mess.artists.hybrid import COMPONENTS

    fit, k = result.fit, result.meta["k"]
    stdout.print(
        "learned weights: "
        + ", ".join(f"{c}={fit.weights.get(c, 0):.2f}" for c in COMPONENTS if c in fit.weights)
        + f"  (train nDCG@{k} {fit.train_ndcg:.3f} on {fit.train_queries} artists)"
    )
    table = Table(title=f"held-out reference artists ({fit.test_queries}), audio = {result.meta['model']} "
                        f"{result.meta['space']}")
    for col in ("scoring", f"overlap@{k}", f"recall@{k}", f"nDCG@{k}", "MRR"):
        table.add_column(col, justify="left" if col == "scoring" else "right")
    for name, m in fit.test.items():
        table.add_row(name, f"{m.overlap:.3f}", f"{m.recall:.3f}", f"{m.ndcg:.3f}", f"{m.mrr:.3f}")
    stdout.print(table)
    why = {"genre": "the genre tags, of the tracks and --tags, set no pair of artists apart",
           "collab": "no collaborations in the credits"}
    if left := [c for c in COMPONENTS if c not in fit.weights]:  # a component with no information is not fitted
        note("left out of the blend, with no information in this collection: "
             + "; ".join(f"{c} ({why.get(c, 'every pair of artists scores the same')})" for c in left))
    if fit.caveat:
        console.print(f"[yellow]caveat:[/] {plain(fit.caveat)}")
    if result.saved:
        console.print(f"saved -> {result.saved}")


def register(app: typer.Typer) -> None:
    """Add the `artists` command group to the main CLI."""
    group = typer.Typer(
        help="Artist similarity: similar artists, artist matrix, layer discrimination, "
        "validation against reference lists, hybrid scoring.",
        no_args_is_help=True,
    )
    group.command("similar")(similar_command)
    group.command("matrix")(matrix_command)
    group.command("discrimination")(discrimination_command)
    group.command("validate")(validate_command)
    group.command("hybrid")(hybrid_command)
    app.add_typer(group, name="artists")
