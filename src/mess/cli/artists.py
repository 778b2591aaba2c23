"""`mess artists ...`: similar artists, artist matrix, per-layer discrimination, validation, hybrid weights."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from mess.artists.discrimination import LayerReport, layer_report, most_discriminative, rank_layers
from mess.artists.heatmap import cluster_order, write_csv, write_heatmap
from mess.artists.hybrid import COMPONENTS, blend, components, fit_hybrid, load_weights, parse_weights, save_weights
from mess.artists.profiles import (
    DEFAULT_MAX_TRACKS,
    DEFAULT_MIN_TRACKS,
    ArtistError,
    ArtistSet,
    Space,
    load_artists,
    load_space,
)
from mess.artists.reference import Coverage, load_reference, match_reference
from mess.artists.similarity import METHODS, artist_vectors, similarity_matrix, similarity_row, top_k
from mess.artists.validate import Metrics, evaluate, random_baseline
from mess.cli.common import DEFAULT_STORE_PATH, JsonOpt, StoreOpt, console, emit_json, fail, open_store
from mess.store import FeatureStore, Run, StoreError

WEIGHTS_FILE = "artists_hybrid.json"

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model whose vectors to use (default: the best extracted; see `mess config`)."),
]
LayerOpt = Annotated[
    str | None,
    typer.Option("--layer", "-l", help="Layer name or index (default: the most artist-discriminative layer)."),
]
AspectOpt = Annotated[str | None, typer.Option("--aspect", "-a", help="Use the layer probed for this aspect.")]
FusedOpt = Annotated[bool, typer.Option("--fused", help="Use the fused embedding (`mess fuse`).")]
MethodOpt = Annotated[
    str,
    typer.Option(
        "--method", help="mean: cosine of mean track vectors; chamfer: symmetric set-to-set best-match similarity."
    ),
]
CenterOpt = Annotated[
    bool,
    typer.Option(
        "--center/--no-center",
        help="Subtract the collection mean before the "
        "cosine (fixes anisotropic layers where everything looks ~0.9 similar).",
    ),
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


def _open(fs: FeatureStore, model: str | None, max_tracks: int, min_tracks: int) -> tuple[Run, ArtistSet]:
    """The run and its artists; says when artist names came from composer tags."""
    run = fs.run(model)
    artists = load_artists(fs, run, max_tracks=max_tracks, min_tracks=min_tracks)
    if artists.composer_fallback:
        console.print(
            f"[yellow]note:[/] {artists.composer_fallback} tracks have no artist tag; "
            "their composer is used as the artist"
        )
    if artists.unattributed:
        console.print(
            f"[yellow]note:[/] {artists.unattributed} tracks have neither artist nor composer and are left out"
        )
    return run, artists


def _layer_spaces(fs: FeatureStore, run: Run) -> list[Space]:
    return [load_space(fs, run, layer=name) for name in run.layer_names]


def _space(fs: FeatureStore, run: Run, artists: ArtistSet, layer: str | None, aspect: str | None, fused: bool) -> Space:
    """The chosen space, or the most artist-discriminative layer when none is chosen."""
    if layer is not None or aspect is not None or fused:
        return load_space(fs, run, layer=layer, aspect=aspect, fused=fused)
    space, effect = most_discriminative(artists, _layer_spaces(fs, run))
    console.print(
        f"[dim]layer {space.label}: the most artist-discriminative of {run.model} "
        f"(separation {effect:.2f}; see `mess artists discrimination`)[/]"
    )
    return space


def _check_method(method: str) -> None:
    if method not in METHODS:
        fail(f"unknown method {method!r}; choose {' or '.join(METHODS)}")


def similar_command(
    name: Annotated[str, typer.Argument(help="Artist name (case and accents do not matter).")],
    k: KOpt = 10,
    layer: LayerOpt = None,
    aspect: AspectOpt = None,
    fused: FusedOpt = False,
    model: ModelOpt = None,
    method: MethodOpt = "mean",
    center: CenterOpt = True,
    max_tracks: MaxTracksOpt = DEFAULT_MAX_TRACKS,
    min_tracks: MinTracksOpt = DEFAULT_MIN_TRACKS,
    hide_low: Annotated[bool, typer.Option("--hide-low", help="Leave low-confidence artists out.")] = False,
    hybrid: Annotated[
        bool,
        typer.Option(
            "--hybrid",
            help="Blend audio with genre tags, collaborations and the "
            "reference map, using weights from `mess artists hybrid`.",
        ),
    ] = False,
    weights: Annotated[
        str | None,
        typer.Option("--weights", help="Hybrid weights, e.g. audio=0.6,genre=0.3,collab=0.1 (implies --hybrid)."),
    ] = None,
    reference: Annotated[
        Path | None, typer.Option("--reference", "-r", help="Reference lists for the hybrid 'reference' component.")
    ] = None,
    tags: Annotated[
        Path | None, typer.Option("--tags", help="JSON map artist -> genre tags, added to file tags.")
    ] = None,
    store: StoreOpt = DEFAULT_STORE_PATH,
    as_json: JsonOpt = False,
) -> None:
    """Artists that sound like NAME, with how many tracks back each artist and how sure that is."""
    _check_method(method)
    with open_store(store) as fs:
        try:
            run, artists = _open(fs, model, max_tracks, min_tracks)
            query = artists.index(name)
            hybrid = hybrid or weights is not None
            saved = _saved_selection(fs) if hybrid and weights is None else {}
            space = _space(
                fs,
                run,
                artists,
                layer or saved.get("layer"),
                aspect or saved.get("aspect"),
                fused or bool(saved.get("fused")),
            )
            vectors = artist_vectors(artists, space, center=center)
            parts: dict[str, np.ndarray] = {}
            if hybrid:
                w = parse_weights(weights) if weights else load_weights(fs.reports_dir / WEIGHTS_FILE)
                matched = match_reference(load_reference(reference), artists)[0] if reference else None
                parts = components(
                    similarity_matrix(vectors, method), artists, matched=matched, extra_tags=_load_tags(tags)
                )
                scores = blend(parts, w)[query]
                _note_missing(w, parts)
            else:
                scores = similarity_row(vectors, query, method)
        except ArtistError as exc:
            fail(escape(str(exc)))
    keep = np.array([not p.low_confidence for p in artists.profiles]) if hide_low else None
    hits = top_k(scores, query, k, keep)
    me = artists.profiles[query]
    rows: list[dict[str, Any]] = [
        {
            "rank": r + 1,
            "artist": artists.profiles[j].name,
            "score": float(scores[j]),
            "tracks": len(artists.profiles[j].track_ids),
            "total_tracks": artists.profiles[j].total_tracks,
            "confidence": artists.profiles[j].confidence,
            "low_confidence": artists.profiles[j].low_confidence,
            **({"components": {c: float(m[query, j]) for c, m in parts.items()}} if parts else {}),
        }
        for r, j in enumerate(hits)
    ]
    header = {
        "artist": me.name,
        "tracks": len(me.track_ids),
        "confidence": me.confidence,
        "low_confidence": me.low_confidence,
        "model": run.model,
        "space": space.label,
        "method": method,
        "centered": center,
        "hybrid": bool(parts),
    }
    if as_json:
        emit_json({**header, "results": rows})
        return
    if me.low_confidence:
        console.print(
            f"[yellow]warning:[/] {escape(me.name)} has only {len(me.track_ids)} track(s); "
            f"treat this answer as low-confidence (confidence {me.confidence:.2f})"
        )
    table = Table(
        title=f"artists like {escape(me.name)}  \\[{run.model} {space.label}, {method}"
        f"{', centred' if center else ''}{', hybrid' if parts else ''}]"
    )
    for col in ("#", "artist", "score", "tracks", "confidence", *parts):
        table.add_column(col, justify="left" if col == "artist" else "right")
    for row in rows:
        flag = " [yellow](low)[/]" if row["low_confidence"] else ""
        table.add_row(
            str(row["rank"]),
            escape(row["artist"]) + flag,
            f"{row['score']:.3f}",
            f"{row['tracks']}/{row['total_tracks']}",
            f"{row['confidence']:.2f}",
            *(f"{v:.2f}" for v in row.get("components", {}).values()),
        )
    console.print(table)


def _saved_selection(fs: FeatureStore) -> dict:
    """The space the saved hybrid weights were learned on (empty when there are none)."""
    path = fs.reports_dir / WEIGHTS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("selection", {}) if path.exists() else {}
    except (json.JSONDecodeError, AttributeError):
        return {}


def _note_missing(weights: dict[str, float], parts: dict[str, np.ndarray]) -> None:
    missing = [c for c, w in weights.items() if w > 0 and c not in parts]
    if missing:
        console.print(
            f"[yellow]note:[/] no information for {', '.join(missing)} in this collection "
            "(no tags / collaborations / --reference); those weights are unused"
        )


def _load_tags(path: Path | None) -> dict[str, list[str]] | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtistError(f"no such tags file: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtistError(f"tags file {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ArtistError(f"tags file {path} must map each artist to a list of tags")
    return data


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
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Output path prefix for .csv and .png (default: STORE/reports/artists-matrix-MODEL-LAYER).",
        ),
    ] = None,
    store: StoreOpt = DEFAULT_STORE_PATH,
    as_json: JsonOpt = False,
) -> None:
    """Pairwise artist similarity matrix as CSV and heatmap PNG (rows clustered)."""
    _check_method(method)
    with open_store(store) as fs:
        try:
            run, artists = _open(fs, model, max_tracks, min_tracks)
            space = _space(fs, run, artists, layer, aspect, fused)
            sim = similarity_matrix(artist_vectors(artists, space, center=center), method)
        except ArtistError as exc:
            fail(escape(str(exc)))
        slug = re.sub(r"[^\w.-]+", "_", f"{run.model}-{space.label}").strip("_")
        prefix = out or fs.reports_dir / f"artists-matrix-{slug}"
    order = cluster_order(sim)
    names = [artists.names[i] for i in order]
    sim = sim[np.ix_(order, order)]
    csv_path, png_path = prefix.with_name(prefix.name + ".csv"), prefix.with_name(prefix.name + ".png")
    try:
        write_csv(csv_path, names, sim)
        write_heatmap(png_path, names, sim, f"{run.model} {space.label} ({method}{', centred' if center else ''})")
    except OSError as exc:
        fail(f"cannot write {prefix}: {exc}")
    if as_json:
        emit_json(
            {
                "artists": names,
                "matrix": sim.round(4).tolist(),
                "csv": str(csv_path),
                "png": str(png_path),
                "space": space.label,
                "method": method,
                "centered": center,
            }
        )
        return
    console.print(
        escape(f"{len(names)} x {len(names)} artist matrix [{run.model} {space.label}] -> {csv_path}, {png_path}")
    )


def discrimination_command(
    model: ModelOpt = None,
    method: MethodOpt = "mean",
    max_tracks: MaxTracksOpt = DEFAULT_MAX_TRACKS,
    min_tracks: MinTracksOpt = DEFAULT_MIN_TRACKS,
    store: StoreOpt = DEFAULT_STORE_PATH,
    as_json: JsonOpt = False,
) -> None:
    """Which layers tell artists apart: pair-similarity range raw vs centred, separation, verdict."""
    _check_method(method)
    with open_store(store) as fs:
        try:
            run, artists = _open(fs, model, max_tracks, min_tracks)
            spaces = _layer_spaces(fs, run)
            try:
                spaces.append(load_space(fs, run, fused=True))
            except StoreError:
                pass
            reports = rank_layers([layer_report(artists, s, method) for s in spaces])
        except ArtistError as exc:
            fail(escape(str(exc)))
    if as_json:
        emit_json(
            {
                "model": run.model,
                "artists": len(artists.profiles),
                "method": method,
                "layers": [r.to_dict() for r in reports],
            }
        )
        return
    _print_discrimination(run, artists, reports)


def _print_discrimination(run: Run, artists: ArtistSet, reports: list[LayerReport]) -> None:
    table = Table(title=f"artist discrimination per layer: {run.model}, {len(artists.profiles)} artists, best first")
    for col in ("#", "layer", "raw range", "centred range", "within/between", "separation", "silhouette", "verdict"):
        table.add_column(col, justify="left" if col in ("layer", "verdict") else "right")
    pairs = Table(title="most and least similar artist pairs (centred)")
    for col in ("layer", "most similar", "least similar"):
        pairs.add_column(col)
    style = {"useful": "green", "centre": "yellow", "useless": "bold red"}
    for rank, r in enumerate(reports, 1):
        raw = f"{r.raw.min:.2f}..{r.raw.max:.2f} ({r.raw.span:.2f})"
        table.add_row(
            str(rank),
            escape(r.label),
            f"[red]{raw}[/]" if "compressed" in r.flags else raw,
            f"{r.centered.min:.2f}..{r.centered.max:.2f} ({r.centered.span:.2f})",
            f"{r.separation.within:.2f}/{r.separation.between:.2f}",
            f"{r.separation.effect:.2f}",
            "-" if r.silhouette is None else f"{r.silhouette:.2f}",
            f"[{style[r.verdict]}]{r.verdict}[/]",
        )
        hi, lo = r.centered.highest, r.centered.lowest
        pairs.add_row(
            escape(r.label), escape(f"{hi[0]} ~ {hi[1]} {hi[2]:.2f}"), escape(f"{lo[0]} ~ {lo[1]} {lo[2]:.2f}")
        )
    console.print(table)
    console.print(pairs)
    wider = sum(r.centered.span > r.raw.span for r in reports)
    console.print(
        f"separation: same-artist minus different-artist track cosine, in SDs of the latter. "
        f"Centring widened the span on {wider}/{len(reports)} layers (median "
        f"{np.median([r.raw.span for r in reports]):.3f} raw -> {np.median([r.centered.span for r in reports]):.3f}"
        " centred). useless: no artist signal; centre: raw range compressed, keep --center (default)."
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
    _check_method(method)
    with open_store(store) as fs:
        try:
            ref = load_reference(reference)
            run, artists = _open(fs, model, max_tracks, min_tracks)
            matched, coverage = match_reference(ref, artists)
            if not matched:
                fail(
                    f"none of the {coverage.query_artists} reference artists has a listed artist in the collection "
                    f"(found {coverage.query_found} query and {coverage.listed_found} listed artists)"
                )
            spaces = _layer_spaces(fs, run)
            try:
                spaces.append(load_space(fs, run, fused=True))
            except StoreError:
                pass
            results = []
            for space in spaces:
                m = evaluate(similarity_matrix(artist_vectors(artists, space, center=center), method), matched, k)
                other = evaluate(
                    similarity_matrix(artist_vectors(artists, space, center=not center), method), matched, k
                )
                results.append((space.label, m, other.ndcg))
        except ArtistError as exc:
            fail(escape(str(exc)))
    baseline = random_baseline(len(artists.profiles), matched, k)
    if k >= len(artists.profiles) - 1:
        console.print(
            f"[yellow]note:[/] k={k} covers all {len(artists.profiles) - 1} other artists, so overlap@k "
            "and recall@k are 1 by construction; use a smaller -k (nDCG and MRR still rank)"
        )
    if as_json:
        emit_json(
            {
                "model": run.model,
                "k": k,
                "method": method,
                "centered": center,
                "coverage": _coverage_dict(coverage),
                "layers": [
                    {"layer": label, **vars(m), f"ndcg_{'raw' if center else 'centered'}": o} for label, m, o in results
                ],
                "random": vars(baseline),
            }
        )
        return
    _print_validation(run, k, center, coverage, results, baseline)


def _coverage_dict(c: Coverage) -> dict:
    return {**vars(c), "query_fraction": c.query_fraction, "listed_fraction": c.listed_fraction}


def _print_validation(
    run: Run, k: int, center: bool, coverage: Coverage, results: list[tuple[str, Metrics, float]], baseline: Metrics
) -> None:
    console.print(
        f"coverage: {coverage.query_found}/{coverage.query_artists} reference artists and "
        f"{coverage.listed_found}/{coverage.listed_artists} listed artists are in the collection; "
        f"{coverage.usable_queries} queries usable"
        + (f"; missing e.g. {escape(', '.join(coverage.missing[:5]))}" if coverage.missing else "")
    )
    other = "raw" if center else "centred"
    table = Table(
        title=f"{run.model} vs reference lists ({coverage.usable_queries} queries, "
        f"{'centred' if center else 'raw'} cosine)"
    )
    for col in ("layer", f"overlap@{k}", f"recall@{k}", f"nDCG@{k}", "MRR", f"nDCG@{k} {other}"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    best = max(range(len(results)), key=lambda i: results[i][1].ndcg)
    for i, (label, m, o) in enumerate(results):
        cells = [f"{m.overlap:.3f}", f"{m.recall:.3f}", f"{m.ndcg:.3f}", f"{m.mrr:.3f}", f"{o:.3f}"]
        table.add_row(f"[bold]{escape(label)} *[/]" if i == best else escape(label), *cells)
    table.add_row(
        "[dim]random[/]", *(f"[dim]{getattr(baseline, f):.3f}[/]" for f in ("overlap", "recall", "ndcg", "mrr")), ""
    )
    console.print(table)


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
    tags: Annotated[
        Path | None, typer.Option("--tags", help="JSON map artist -> genre tags, added to file tags.")
    ] = None,
    test_fraction: Annotated[float, typer.Option(help="Share of reference artists held out for evaluation.")] = 0.3,
    seed: Annotated[int, typer.Option(help="Seed of the train/test split.")] = 0,
    save: Annotated[
        bool,
        typer.Option(
            "--save/--no-save",
            help=f"Save weights to STORE/reports/{WEIGHTS_FILE} for `mess artists similar --hybrid`.",
        ),
    ] = True,
    store: StoreOpt = DEFAULT_STORE_PATH,
    as_json: JsonOpt = False,
) -> None:
    """Learn hybrid weights (audio, genre, collab, reference) on a train split; report held-out metrics."""
    _check_method(method)
    with open_store(store) as fs:
        try:
            ref = load_reference(reference)
            run, artists = _open(fs, model, max_tracks, min_tracks)
            matched, coverage = match_reference(ref, artists)
            space = _space(fs, run, artists, layer, aspect, fused)
            audio = similarity_matrix(artist_vectors(artists, space, center=center), method)
            fit = fit_hybrid(
                components(audio, artists, extra_tags=_load_tags(tags)),
                matched,
                k=k,
                test_fraction=test_fraction,
                seed=seed,
            )
        except ArtistError as exc:
            fail(escape(str(exc)))
        path = fs.reports_dir / WEIGHTS_FILE
        selection: dict[str, object] = (
            {"layer": space.label}
            if layer is None and aspect is None and not fused
            else {"layer": layer, "aspect": aspect, "fused": fused}
        )
        meta = {
            "model": run.model,
            "space": space.label,
            "selection": selection,
            "method": method,
            "centered": center,
            "k": k,
            "seed": seed,
            "coverage": _coverage_dict(coverage),
        }
        if save:
            try:
                save_weights(path, fit, meta)
            except OSError as exc:
                fail(f"cannot write {path}: {exc}")
    if as_json:
        emit_json({**meta, **fit.to_dict(), "saved": str(path) if save else None})
        return
    console.print(
        "learned weights: "
        + ", ".join(f"{c}={fit.weights.get(c, 0):.2f}" for c in COMPONENTS if c in fit.weights)
        + f"  (train nDCG@{k} {fit.train_ndcg:.3f} on {fit.train_queries} artists)"
    )
    table = Table(title=f"held-out reference artists ({fit.test_queries}), audio = {run.model} {space.label}")
    for col in ("scoring", f"overlap@{k}", f"recall@{k}", f"nDCG@{k}", "MRR"):
        table.add_column(col, justify="left" if col == "scoring" else "right")
    for name, m in fit.test.items():
        table.add_row(name, f"{m.overlap:.3f}", f"{m.recall:.3f}", f"{m.ndcg:.3f}", f"{m.mrr:.3f}")
    console.print(table)
    if save:
        console.print(f"saved -> {path}")


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
