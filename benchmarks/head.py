"""The learned head against fixed vectors and linear baselines, leave-one-game-out, on real soundtracks.

    PYTHONPATH=src python benchmarks/head.py --store /work/data/st-store --label album

Every track of the store's run that carries the label (default: album = the game in
`mess demo soundtracks`) is a query once, ranking all the other labelled tracks. Each
layer and all layers need no training. The PCA start, LDA and the learned head are
trained once per held-out label on the others, and that label's tracks are the queries,
so every trained figure comes from a game the method never saw. ``--baseline-model dsp``
scores the dsp run's all-layer vectors on the same tracks (matched by content). Prints
mAP, P@5 and nDCG@10 with 95% bootstrap intervals over queries, the paired mAP ratios of
each method to musicnn's penultimate layer and to dsp, and of the learned head to each
method, chance, time and peak memory.
``--write PATH`` then fits the trained method with the best leave-one-out mAP (PCA start,
LDA or the learned head) on every labelled track and saves it with the data hash and its
leave-one-out figures (how the shipped head was made).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mess.fusion.head import HeadConfig, HeadData, fit_head, lda_head, load_head_data, pca_head
from mess.fusion.head_eval import QueryScores, Trainer, bootstrap, score_fixed, score_logo
from mess.models.head import Head
from mess.search.evaluate import read_label_csv, track_labels
from mess.search.metrics import chance_scores
from mess.store import FeatureStore, Run, StoreError


def main() -> None:
    """Parse options, score every method, print the table, optionally write the head."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", type=Path, default=Path("/work/data/st-store"))
    ap.add_argument("--model", default="musicnn-msd")
    ap.add_argument("--baseline-model", default="dsp", help="Run whose all-layer vectors are the second baseline.")
    ap.add_argument("--label", default="album", help="Tag that names the soundtrack (or the CSV's column).")
    ap.add_argument("--labels", type=Path, default=None, help="Label CSV instead of tags.")
    ap.add_argument("--reference", default="penultimate", help="Layer the ratios are taken against.")
    ap.add_argument("--config", default="{}", help="JSON overrides of HeadConfig, e.g. '{\"hidden\": 64}'.")
    ap.add_argument("--variants", default="[]", help="JSON list of HeadConfig overrides scored as extra rows.")
    ap.add_argument("--write", type=Path, default=None, help="Train on everything and save the head here.")
    args = ap.parse_args()
    torch.set_num_threads(1)
    config = replace(HeadConfig(), **json.loads(args.config))
    start = time.perf_counter()
    try:
        store = FeatureStore(args.store, readonly=True)
        run = store.run(args.model)
    except StoreError as exc:  # no store there, or no run of the model: one line, not a traceback
        ap.error(str(exc))
    tracks = store.tracks(run)
    if args.labels:
        label_file = read_label_csv(store, args.labels, args.label)
        if label_file.note():
            print(label_file.note())
        labels = label_file.labels
    else:
        labels = track_labels(tracks, args.label)
    labels = _with_baseline(store, args.baseline_model, run, labels)
    data = load_head_data(store, run, labels)
    offsets = np.cumsum((0,) + run.layer_dims)
    results = [score_fixed(name, data.x[:, offsets[i]:offsets[i + 1]], (run.layer_dims[i],), data.labels)
               for i, name in enumerate(run.layer_names)]
    results.append(score_fixed("all layers", data.x, run.layer_dims, data.labels))
    base = _baseline(store, args.baseline_model, data.hashes, data.labels)
    results += [base] if base is not None else []
    trainers: dict[str, Trainer] = {"PCA start": lambda d, r: pca_head(d, r, config.dims),
                                    "LDA": lambda d, r: lda_head(d, r, config.dims),
                                    "learned head": lambda d, r: fit_head(d, r, config)}
    for extra in json.loads(args.variants):
        variant = replace(config, **extra)
        results.append(score_logo(f"head {json.dumps(extra)} (LOGO)", data, lambda d, r: fit_head(d, r, variant)))
    trained = {name: score_logo(f"{name} (LOGO)", data, fn) for name, fn in trainers.items()}
    results += list(trained.values())
    seconds = time.perf_counter() - start
    ref = next(r for r in results if r.name == run.layer_names[run.layer_index(args.reference)])
    _print(results, ref, base, data.labels, len(set(data.labels.tolist())), config)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n{len(data.labels)} tracks, {len(data.seg_row)} windows; {seconds:.1f} s, peak RSS {peak:.0f} MiB")
    if args.write is not None:
        best = max(trained, key=lambda name: trained[name].ap.mean())
        others = [ref, next(r for r in results if r.name == "all layers")] + ([base] if base else [])
        _write(args.write, trainers[best](data, np.arange(len(data.labels))), data, trained, best, others)


def _with_baseline(store: FeatureStore, model: str, run: Run, labels: dict[int, str]) -> dict[int, str]:
    """Only the labelled tracks that the baseline run has vectors for too (all of them when it is absent)."""
    if model not in {r.model for r in store.runs()}:
        return labels
    have = {t.content_hash for t in store.tracks(store.run(model))}
    by_id = {t.id: t.content_hash for t in store.tracks(run)}
    return {i: lab for i, lab in labels.items() if by_id.get(i) in have}


def _baseline(store: FeatureStore, model: str, hashes: np.ndarray, labels: np.ndarray) -> QueryScores | None:
    """All-layer vectors of another run on the same tracks (None when the store lacks the run or some track)."""
    if model not in {r.model for r in store.runs()}:
        return None
    run = store.run(model)
    mats = [store.layer_matrix(run, i) for i in range(len(run.layer_names))]
    row_of_id = {int(i): r for r, i in enumerate(mats[0][0])}
    row_of_hash = {t.content_hash: row_of_id.get(t.id) for t in store.tracks(run)}
    rows = [r for h in hashes if (r := row_of_hash.get(h)) is not None]
    if len(rows) < len(hashes):
        return None
    return score_fixed(f"{model}, all layers", np.hstack([m for _, m in mats])[rows], run.layer_dims, labels)


def _print(results: list[QueryScores], ref: QueryScores, base: QueryScores | None, labels: np.ndarray,
           n_labels: int, config: HeadConfig) -> None:
    rows = np.arange(len(labels))
    chance = chance_scores(labels, labels, rows, 5)
    chance10 = chance_scores(labels, labels, rows, 10)
    print(f"{n_labels} labels; head config {json.dumps(config.__dict__)}")
    head = next(r for r in results if r.name == "learned head (LOGO)")
    cols = ["vectors", "mAP", "P@5", "nDCG@10", f"mAP / {ref.name}"] + ([f"mAP / {base.name}"] if base else [])
    print(" | ".join(cols + ["head mAP / this"]))
    for r in results:
        cells = [r.name, str(bootstrap(r.ap)), str(bootstrap(r.precision)), str(bootstrap(r.ndcg)),
                 str(bootstrap(r.ap, ref.ap))] + ([str(bootstrap(r.ap, base.ap))] if base else [])
        cells.append(str(bootstrap(head.ap, r.ap)))
        print(" | ".join(cells))
    print(f"chance | {chance.map:.3f} | {chance.precision:.3f} | {chance10.ndcg:.3f}")


def _write(path: Path, head: Head, data: HeadData, trained: dict[str, QueryScores], best: str,
           others: list[QueryScores]) -> None:
    """Save ``head`` (``best`` method, fitted on every track) with the data hash and its leave-one-out figures."""
    logo = trained[best]
    metrics = {"queries": len(logo.ap), "labels": sorted(set(data.labels.tolist())),
               "map": bootstrap(logo.ap).__dict__, "p@5": bootstrap(logo.precision).__dict__,
               "ndcg@10": bootstrap(logo.ndcg).__dict__,
               "map_ratio": {o.name: bootstrap(logo.ap, o.ap).__dict__ for o in others},
               "chosen_from": {name: float(t.ap.mean()) for name, t in trained.items()}}
    meta = {**head.meta, "data_hash": data.data_hash(), "tracks": len(data.labels), "leave_one_label_out": metrics}
    replace(head, meta=meta).save(path)
    print(f"{best} (best leave-one-out mAP) -> {path} ({path.stat().st_size / 1024:.0f} KiB), "
          f"data hash {meta['data_hash'][:12]}")


if __name__ == "__main__":
    main()
