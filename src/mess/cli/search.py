"""`mess index`, `mess similar`, `mess evaluate`: similarity search and its evaluation."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.table import Table

from mess.cli.common import (
    console,
    emit_json,
    fail,
    failing,
    not_embedded_note,
    note,
    open_store,
    os_reason,
    plain,
    resolved_query,
    stdout,
    warn,
)
from mess.cli.options import (
    DEFAULT_STORE_PATH,
    AspectOpt,
    CutoffOpt,
    FusedOpt,
    JsonOpt,
    ModelOpt,
    StoreOpt,
    in_a_folder,
)
from mess.constants import DEFAULT_NORM, FUSED, LABEL_FIELDS, counted

if TYPE_CHECKING:
    from rich.console import JustifyMethod

    from mess.search.evaluate import Evaluation
    from mess.search.index import IndexReport
    from mess.search.query import Neighbour
    from mess.search.vectors import Norm
    from mess.store import FeatureStore, Run

_LABELS = f"{', '.join(LABEL_FIELDS[:-1])} or {LABEL_FIELDS[-1]}"
LayerOpt = Annotated[str | None, typer.Option("--layer", "-l", help="One layer (name or index, -1 = last).")]
LearnedOpt = Annotated[
    bool,
    typer.Option(
        "--learned", help="The learned head shipped for the model (trained on real soundtracks; see docs/head.md)."
    ),
]
NormOpt = Annotated[
    str,
    typer.Option(
        "--norm",
        help="Per-dimension preprocessing before L2 normalisation: auto (the default: power for all layers, zscore "
        "for one layer or aspect, center for --learned), power (signed |x|^0.25, then zscore), zscore, center or none.",
    ),
]
RankingOpt = Annotated[
    str,
    typer.Option(
        "--ranking",
        help="auto (the default: augmented for all layers, plain otherwise or when a large collection has no data "
        "saved by `mess index`), plain (cosine, expanded), augmented (database-side augmentation, then expansion; "
        "the steadiest on real soundtracks, docs/quality.md) or reranked (then k-reciprocal re-ranking). The last "
        "two are exact, and not with --match segments, --hubness or another --expand.",
    ),
]
MatchOpt = Annotated[
    str,
    typer.Option(
        "--match",
        help="mean: cosine of track vectors; segments: Chamfer "
        "similarity of the tracks' window vectors (exact, no index).",
    ),
]
ExpandOpt = Annotated[
    int | None,
    typer.Option(
        "--expand",
        min=0,
        help="Query expansion: rank by the query averaged with its N nearest tracks (alpha-QE; 0 = off; "
        "default 3 with --match mean, 0 with segments).",
    ),
]


def index_command(
    model: ModelOpt = None,
    layer: LayerOpt = None,
    aspect: AspectOpt = None,
    fused: FusedOpt = False,
    learned: LearnedOpt = False,
    kind: Annotated[
        str, typer.Option("--kind", help="auto (flat < 20k, IVF < 5M, else IVF-PQ), flat, ivf, ivfpq or hnsw.")
    ] = "auto",
    norm: NormOpt = DEFAULT_NORM,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build from scratch instead of updating.")] = False,
    rerank: Annotated[bool | None, typer.Option(
        "--rerank/--no-rerank", show_default=False,
        help="Ranking data saved beside the index (same --norm). By default the augmentation of all layers, which "
             "the default ranking reads above 10,000 tracks (about 10 s to build at 20,000); --rerank: these "
             "vectors' whole re-ranking data too, which --ranking reranked reads (up to half a minute more there); "
             "--no-rerank: neither.")] = None,
    target_recall: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Recall@10 that approximate indexes are tuned to reach.")
    ] = 0.95,
    store: StoreOpt = DEFAULT_STORE_PATH,
    as_json: JsonOpt = False,
) -> None:
    """Build or incrementally update the FAISS index of one vector set (cosine similarity), and save beside it the
    augmentation of all layers, which the default augmented ranking reads (needed above 10,000 tracks)."""
    from mess.search.ann import KINDS
    from mess.search.index import build_index
    from mess.search.vectors import VectorSpec, load_vectors, vectors_label

    if kind != "auto" and kind not in KINDS:
        fail(f"unknown index kind {kind!r}; choose auto, {', '.join(KINDS)}")
    # the lock: vectors read after a running extract; no store made where none is (a mistyped --store)
    with open_store(store, readonly=False, create=False) as fs, fs.writing("mess index"):
        run = fs.run(model)
        with failing(ValueError):
            spec = VectorSpec.from_options(layer, aspect, fused, cast("Norm", norm), learned)  # the library checks it
        vs = load_vectors(fs, run, spec)
        _, report = build_index(fs, vs, kind, rebuild=rebuild, target_recall=target_recall, rerank=rerank)
        unfused = fs.derived_missing(run, FUSED) if fused else 0
    data = {
        "model": run.model,
        "vectors": vectors_label(layer, aspect, fused, learned),
        "norm": spec.norm,  # as applied: fused vectors are never z-scored
        **report.__dict__,
        "tracks_without_fused_vectors": unfused,
        "norm_note": vs.norm_note,
    }
    if as_json:
        emit_json(data)
        return
    _print_index(report, data, unfused)


def _print_index(report: IndexReport, data: dict, unfused: int) -> None:
    """What `mess index` built or updated, where it is, and its notes."""
    recall = (
        "exact"
        if report.kind == "flat"
        else (f"{report.recall:.3f} (breadth {report.breadth})" if report.recall is not None else "not measured")
    )
    stdout.print(
        f"{report.mode} {report.kind} index of {data['model']} {data['vectors']} ({data['norm']}): "
        f"{report.n} tracks x {report.dim} dims, +{report.added} -{report.removed}, "
        f"{report.seconds:.2f} s, {report.nbytes / 2**20:.1f} MiB, recall@10 {recall}"
    )
    stdout.print(f"[dim]{plain(str(report.path))}[/]")
    for mode, what, where, nbytes in ((report.augment, "augmentation", report.augment_path, report.augment_nbytes),
                                      (report.rerank, "re-ranking data", report.rerank_path, report.rerank_nbytes)):
        if where is not None:
            stdout.print(f"{mode} {what}, {nbytes / 2**20:.1f} MiB: [dim]{plain(str(where))}[/]")
    note(report.note)
    note(data["norm_note"])
    if unfused:
        console.print(f"[yellow]{counted(unfused, 'track has', 'tracks have')} no fused vectors yet and "
                      f"{'is' if unfused == 1 else 'are'} not in the index; `mess fuse apply` adds them[/]")

def similar_command(
    query: Annotated[str, typer.Argument(help="Track id, a path or file name in the collection, or any audio file.")],
    k: Annotated[int, typer.Option("-k", min=1, help="How many tracks.")] = 10,
    model: ModelOpt = None,
    layer: LayerOpt = None,
    aspect: AspectOpt = None,
    fused: FusedOpt = False,
    learned: LearnedOpt = False,
    exclude_same_artist: Annotated[
        bool, typer.Option("--exclude-same-artist", help="Leave out the query artist's tracks.")
    ] = False,
    hubness: Annotated[
        str | None, typer.Option("--hubness", help="Re-rank against hub tracks: csls or mp (mutual proximity).")
    ] = None,
    norm: NormOpt = DEFAULT_NORM,
    match: MatchOpt = "mean",
    expand: ExpandOpt = None,
    ranking: RankingOpt = "auto",
    store: StoreOpt = DEFAULT_STORE_PATH,
    as_json: JsonOpt = False,
) -> None:
    """The tracks most similar to QUERY, with which aspects agree most."""
    from mess.search.expansion import expansion
    from mess.search.hubness import METHODS
    from mess.search.query import ENCODED_R2, aspect_layers, similar_tracks, stale_aspect_map, weak_aspects
    from mess.search.rerank_store import ranking_choice
    from mess.search.vectors import VectorSpec, load_vectors, vectors_label

    if hubness is not None and hubness not in METHODS:
        fail(f"unknown hubness reduction {hubness!r}; choose {' or '.join(METHODS)}")
    expand = expansion(match, expand)

    def found(fs: FeatureStore) -> tuple[dict, list[Neighbour], str, str]:
        """The answer, its neighbours, and the options `mess probe` and `mess extract` name the run with."""
        notes: list[str] = []
        run = fs.run(model)
        tq = resolved_query(fs, query, run)
        with failing(ValueError):
            vs = load_vectors(fs, run, VectorSpec.from_options(layer, aspect, fused, cast("Norm", norm), learned))
            chosen = ranking_choice(fs, vs, ranking, match, hubness, expand, notes.append)  # the answer says which
            results = similar_tracks(fs, run, tq, k, layer=layer, aspect=aspect, fused=fused,
                                     exclude_same_artist=exclude_same_artist, hubness=hubness,
                                     norm=cast("Norm", norm), learned=learned, match=match, expand=expand,
                                     ranking=chosen, on_note=notes.append)
        source, _ = aspect_layers(fs, run)
        answer = {"query": {"label": tq.label, "id": tq.track.id if tq.track else None, "external": tq.track is None},
                  "model": run.model, "vectors": vectors_label(layer, aspect, fused, learned), "norm": vs.spec.norm,
                  "match": match, "hubness": hubness, "expand": expand, "ranking": chosen, "why_source": source,
                  "weak_aspects": weak_aspects(fs, run),
                  "stale_aspect_map": stale_aspect_map(fs, run) if aspect or source == "aspects" else None,
                  "tracks_without_fused_vectors": fs.derived_missing(run, FUSED) if fused else 0,
                  "files_not_embedded": len(fs.unembedded(run)), "norm_note": vs.norm_note, "notes": notes}
        return answer, results, fs.model_option(run), fs.extract_options(run)

    with open_store(store) as fs:  # the query track, its neighbours and the notes from one catalog version
        answer, results, probe_as, extract_as = fs.reading(lambda: found(fs))
    if as_json:
        emit_json({**answer, "encoded_threshold": ENCODED_R2, "results": [n.to_dict() for n in results]})
        return
    _print_similar(answer, results, store, probe_as, extract_as)


def _print_similar(answer: dict, results: list[Neighbour], store: Path, probe_as: str, extract_as: str) -> None:
    """The neighbours as a table with their reasons, then which aspects were too weak to be evidence; ``probe_as``:
    what `mess probe --model` picks the run with, ``extract_as`` the options `mess extract` embeds its files with."""
    from mess.search.query import ENCODED_R2

    hubness, expand, model, weak = answer["hubness"], answer["expand"], answer["model"], answer["weak_aspects"]
    table = Table(title=plain(f"like {answer['query']['label']}  [{model}, {answer['vectors']}]"))
    for col, justify in (("#", "right"), ("id", "right"), ("track", "left"), ("score", "right")):
        table.add_column(col, justify=cast("JustifyMethod", justify))
    if hubness or expand or answer["ranking"] != "plain":
        column = {"augmented": "augmented", "reranked": "re-ranked"}.get(answer["ranking"], "expanded")
        table.add_column(hubness or column, justify="right")
    table.add_column("why")
    for rank, n in enumerate(results, start=1):
        why = "; ".join(n.reasons_text())
        row = [
            str(rank),
            str(n.track.id),
            plain(n.track.name) + (" [bold yellow](same recording)[/]" if n.recording and n.recording.same
                                   else " [bold yellow](duplicate)[/]" if n.duplicate else ""),
            f"{n.score:.3f}",
        ]
        # tight clusters differ in the 4th decimal; z: a near-copy's -2e-06 is 0.0000, not -0.0000
        row += [f"{n.adjusted:z.4f}"] if n.adjusted is not None else []
        table.add_row(*row, plain(why))
    stdout.print(table)
    if answer["norm_note"]:
        console.print(f"[yellow]note:[/] {plain(answer['norm_note'])}")
    if weak:
        console.print(
            f"[dim]not used as evidence (the probe's best R^2, less what shuffled targets reach, below {ENCODED_R2}): "
            f"{', '.join(f'{a} {r2:.2f}' for a, r2 in sorted(weak.items(), key=lambda x: -x[1]))}[/]"
        )
    note(answer["stale_aspect_map"])
    for text in answer["notes"]:
        note(text)
    if answer["why_source"] == "layers":
        console.print(f"[dim]no aspect map for {model}: 'why' compares layers; run "
                      f"`mess probe --model {plain(probe_as)}` to name aspects[/]")
    if answer["tracks_without_fused_vectors"]:
        from mess.store.fused import left_out_note

        console.print(f"[yellow]{plain(left_out_note(answer['tracks_without_fused_vectors']))}[/]")
    not_embedded_note(answer["files_not_embedded"], model, store, extract_as)


def evaluate_command(
    ctx: typer.Context,
    model: ModelOpt = None,
    label: Annotated[str, typer.Option("--label", help=f"Relevance: same {_LABELS}.")] = "artist",
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels", help="CSV with an id/path/file column and a LABEL (or 'label') column, instead of tags."
        ),
    ] = None,
    k: CutoffOpt = 10,
    norm: NormOpt = DEFAULT_NORM,
    compare: Annotated[
        bool, typer.Option("--compare", help="Also compare euclidean, dot, CSLS and mutual proximity against cosine.")
    ] = False,
    match: MatchOpt = "mean",
    expand: ExpandOpt = None,
    ranking: RankingOpt = "auto",
    plot: Annotated[
        Path | None, typer.Option("--plot", help="PNG path (default: STORE/reports/evaluate-MODEL-runID-LABEL.png, "
                                                 "with --labels evaluate-MODEL-runID-labels-FILE-LABEL.png).",
                                  parser=in_a_folder)
    ] = None,
    store: StoreOpt = DEFAULT_STORE_PATH,
    as_json: JsonOpt = False,
) -> None:
    """Retrieval quality per layer: precision@k, mAP, nDCG@k and hubness, plus a PNG."""
    from mess.search.evaluate import LabelError, evaluate, plot_file, read_label_csv

    if labels is not None and not labels.is_file():
        fail(not_a_label_file(labels))
    with failing(ValueError):
        plot = plot_file(plot) if plot is not None else None
    with open_store(store) as fs:
        run = fs.run(model)
        with failing(LabelError, ValueError):
            # --label given, not its default: a file's own 'label' column is then read as that field
            given = getattr(ctx.get_parameter_source("label"), "name", "DEFAULT") != "DEFAULT"
            label_file = read_label_csv(fs, labels, label, field_given=given) if labels is not None else None
            if label_file and (note := label_file.note()):
                console.print(f"[yellow]note:[/] {plain(note)}")
            ev = evaluate(fs, run, label, k, labels=label_file.labels if label_file else None,
                          labels_from=labels.name if labels else None,
                          norm=cast("Norm", norm), compare=compare, match=match, expand=expand, ranking=ranking)
        png, skipped, unplotted = _write_plot(ev, plot or fs.reports_dir / _plot_name(run, label, labels),
                                              asked=plot is not None)
    if as_json:
        unknown = [{"line": line, "ref": ref} for line, ref in label_file.unknown] if label_file else []
        emit_json({**ev.to_dict(), "plot": str(png) if png else None, "unknown_label_rows": unknown})
    else:
        _print_evaluation(ev, run.model, k, norm, match, png)
        _fused_left_out(ev.tracks_without_fused_vectors, run.model, store)
    if skipped:
        warn(f"{skipped}; `--plot PATH` writes it elsewhere")
    if unplotted:
        fail(unplotted)


def _write_plot(ev: Evaluation, target: Path, asked: bool) -> tuple[Path | None, str | None, str | None]:
    """The evaluation's PNG at ``target``, or None and why not: as a warning for the store's own report (a read-only
    store, say: the scores are the answer, shown anyway), as a failure for a ``--plot`` asked for."""
    from mess.search.evaluate import plot_evaluation

    try:
        return plot_evaluation(ev, target), None, None
    except OSError as exc:  # the scores are still shown: the evaluation is not lost to a full disk
        why = f"cannot write the plot {target}: {os_reason(exc, target)}"
        return (None, None, why) if asked else (None, why, None)


def _fused_left_out(count: int, model: str, store: Path) -> None:
    """Say that the fused row left out ``count`` labelled tracks without fused vectors (if any), and the fix."""
    if count:
        where = "" if store == DEFAULT_STORE_PATH else f" --store {shlex.quote(str(store))}"
        fix = f"mess fuse apply --model {model}{where}"
        missing = counted(count, "labelled track has", "labelled tracks have")
        console.print(f"[yellow]fused row left out: {missing} no fused vectors (extracted since the last apply); "
                      f"`{plain(fix)}` adds them[/]")


def not_a_label_file(path: Path) -> str:
    """Why ``path``, which is no regular file, cannot be read as a label CSV (a pipe would block the read)."""
    if path.is_dir():
        return f"{path} is a folder, not a label file (a CSV)"
    if path.exists():
        return f"{path} is a device or a pipe, not a label file (a CSV)"
    return f"no such label file: {path}"


def _plot_name(run: Run, label: str, labels: Path | None) -> str:
    """The default plot's file name: one per run and tag label, or per label file (by its name) and column."""
    from mess.store.reports import slug

    return slug(f"evaluate-{run.model}-run{run.id}-" + (f"labels-{labels.stem}-" if labels is not None else "")
                + f"{label}.png")


def _print_evaluation(ev: Evaluation, model: str, k: int, norm: str, match: str, png: Path | None) -> None:
    """Scores per vector set against chance, the similarity variants when compared, and the best set."""
    table = Table(
        title=plain(
            f"{model}: {ev.relevance} retrieval, {ev.n_tracks} tracks, {ev.n_classes} labels, {ev.n_queries} "
            f"queries over {ev.n_query_labels} labels with a second track ({norm}, match {match}"
            f"{', re-ranked' if any('re-ranked' in s.metric for s in ev.sets) else ''})"
        )
    )
    for col in ("vectors", f"P@{k}", "mAP", f"nDCG@{k}", "N_k skew"):
        table.add_column(col, justify="left" if col == "vectors" else "right")
    best = ev.best()
    for s in ev.sets:
        mark = " *" if s is best else ""
        table.add_row(
            plain(s.name) + mark,
            f"{s.scores.precision:.3f}",
            f"{s.scores.map:.3f}",
            f"{s.scores.ndcg:.3f}",
            f"{s.hub.skewness:.2f}",
        )
    table.add_row(
        "[dim]chance[/]",
        f"[dim]{ev.chance.precision:.3f}[/]",
        f"[dim]{ev.chance.map:.3f}[/]",
        f"[dim]{ev.chance.ndcg:.3f}[/]",
        "",
    )
    stdout.print(table)
    note(ev.norm_note)
    note(ev.fused_note)
    for text in ev.notes:
        note(text)
    if ev.variants:
        _print_variants(ev)
    stdout.print(f"best: {plain(best.name)} (mAP {best.scores.map:.3f})" + (f"; plot -> {plain(str(png))}" if png
                                                                                else ""))
    if ev.fused_trained_on:
        trained = (f"{ev.fused_trained_on} tags" if ev.fused_trained_on in LABEL_FIELDS
                   else f"labels in {plain(ev.fused_trained_on)}")  # `mess fuse train --labels FILE`
        alike = (f", which group them as {plain(ev.labels_from)} does"
                 if ev.labels_from and ev.labels_from != ev.fused_trained_on else "")
        console.print(f"[yellow]note:[/] the fused vectors were trained on these tracks' {trained}{alike}, so "
                      "their row scores labels they learned and is not named best; `mess fuse report` "
                      "scores them on held-out labels")
    if ev.caveat:
        console.print(f"[yellow]caveat:[/] {plain(ev.caveat)}")


def _print_variants(ev: Evaluation) -> None:
    """mAP and hubness for each similarity variant, one row per vector set."""
    table = Table(title="similarity comparison (mAP, N_k skew in brackets)")
    table.add_column("vectors")
    names = ["cosine", "euclidean", "dot", "cosine+csls", "cosine+mp"]
    names = [*sorted({s.metric for s in ev.sets} - set(names)), *names]  # "cosine, expanded (3)" first when used
    for n in names:
        table.add_column(n, justify="right")
    cells: dict[str, dict[str, str]] = {}
    for s in ev.sets + ev.variants:
        key = s.metric + (f"+{s.hubness}" if s.hubness else "")
        cells.setdefault(s.name, {})[key] = f"{s.scores.map:.3f} ({s.hub.skewness:.1f})"
    for name, row in cells.items():
        table.add_row(plain(name), *[row.get(n, "") for n in names])
    stdout.print(table)


def register(app: typer.Typer) -> None:
    """Add `index`, `similar` and `evaluate` to the main CLI."""
    app.command("index")(index_command)
    app.command("similar")(similar_command)
    app.command("evaluate")(evaluate_command)
