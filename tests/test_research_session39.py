"""Session 39, a researcher's walkthrough: fusion trained on a user's label file, the fusion report's row of the
default search, and the probe's spread over folds; figures checked against independent computations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mess.cli.app import app
from mess.store import FeatureStore


def _moods(store: Path, folder: Path) -> tuple[Path, dict[int, str], int]:
    """A label file of the store's dsp tracks in 4 moods (by id), with a row naming no track and a nan cell; returns
    it, the labels it gives (track id -> mood) and the line of the unknown row."""
    fs = FeatureStore(store, readonly=True)
    try:
        ids = sorted(t.id for t in fs.tracks(fs.run("dsp")))
    finally:
        fs.close()
    moods = {i: f"mood{n % 4}" for n, i in enumerate(ids[1:])}  # the first track: nan, labelled by no row
    lines = ["id,mood", f"{ids[0]},NaN", *(f"{i},{m}" for i, m in moods.items()), "99999,mood0"]
    path = folder / "moods.csv"
    path.write_text("\n".join(lines) + "\n")
    return path, moods, len(lines)


def test_fuse_train_takes_a_label_file(extracted_store: Path, tmp_path: Path,
                                       one_torch_thread: None) -> None:  # noqa: ARG001
    """`mess fuse train --labels FILE` trains on a user's labels (read as `mess evaluate --labels` reads them); the
    report holds out the file's labels, and `mess evaluate` on that file knows the fused row learned them. Before:
    "No such option: --labels"."""
    import shutil

    from mess.fusion.train import load_checkpoint

    store = tmp_path / "store"
    shutil.copytree(extracted_store, store)
    labels, moods, unknown_line = _moods(store, tmp_path)
    runner, common = CliRunner(), ["--store", str(store), "--model", "dsp"]
    train = runner.invoke(app, ["fuse", "train", *common, "--labels", str(labels), "--label", "mood",
                                "--weight-epochs", "2", "--max-epochs", "0", "--json"])
    assert train.exit_code == 0, train.output
    assert f"line {unknown_line} '99999'" in " ".join(train.output.split())  # the row naming no track, as evaluate
    summary = json.loads(train.stdout[train.stdout.index("{"):])
    result = load_checkpoint(Path(summary["checkpoint"]))
    assert result.given_labels == moods and result.config.labels_file == "moods.csv"
    split = result.split.to_json()
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(set(moods.values()))
    assert summary["labelled_tracks"] == len(moods)

    report = runner.invoke(app, ["fuse", "report", *common, "--json"])
    assert report.exit_code == 0, report.output
    held = json.loads(report.stdout)
    assert held["label"] == "moods.csv" and held["n_test_labels"] == len(split["test"])
    assert held["n_test_tracks"] == sum(m in split["test"] for m in moods.values())

    assert runner.invoke(app, ["fuse", "apply", *common]).exit_code == 0
    ev = runner.invoke(app, ["evaluate", *common, "--labels", str(labels), "--label", "mood", "--json"])
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.stdout)["fused_trained_on"] == "moods.csv"


def test_fuse_train_refuses_a_label_file_as_evaluate_does(extracted_store: Path, tmp_path: Path) -> None:
    """A track given two labels is refused naming both lines, before anything is trained or written."""
    labels, moods, _ = _moods(extracted_store, tmp_path)
    first = next(iter(moods))
    with labels.open("a") as f:
        f.write(f"{first},another\n")
    checkpoint = tmp_path / "fused.pt"
    done = CliRunner().invoke(app, ["fuse", "train", "--store", str(extracted_store), "--model", "dsp", "--labels",
                                    str(labels), "--label", "mood", "--checkpoint", str(checkpoint)])
    lines = labels.read_text().splitlines()
    at = next(n for n, line in enumerate(lines, 1) if line.startswith(f"{first},mood"))
    said = " ".join(done.output.split())
    assert done.exit_code == 1
    assert said.startswith(f"error: {labels}:{len(lines)}: track {first} ")
    assert f"labelled 'another' here and 'mood0' on line {at}" in said
    assert not checkpoint.exists()


def test_the_fusion_report_scores_the_default_search(extracted_store: Path, tmp_path: Path,
                                                     one_torch_thread: None) -> None:  # noqa: ARG001
    """The report's `default` row is what `mess similar` ranks by default (power normalisation, augmented ranking):
    its mAP and nDCG equal sklearn's on the held-out tracks as `similar_tracks` orders them. Before: no such row."""
    from sklearn.metrics import average_precision_score, ndcg_score

    from mess.fusion.data import load_layers
    from mess.fusion.report import compare, default_search
    from mess.fusion.train import FusionConfig, train_fusion
    from mess.search.query import collection_query, similar_tracks

    _, moods, _ = _moods(extracted_store, tmp_path)
    fs = FeatureStore(extracted_store, readonly=True)
    try:
        run = fs.run("dsp")
        data = load_layers(fs, run)
        config = FusionConfig(label="mood", labels_file="moods.csv", weight_epochs=1, max_epochs=0, val_frac=0,
                              test_frac=0.5, fusion_dim=4)
        result = train_fusion(data, config, given=moods)
        report = compare(result, data, 5, default_search(fs, run, data))
        held = [t.id for t in data.tracks if moods.get(t.id) in result.split.test]
        aps, ndcgs = [], []
        for i in held:
            ranked = [n.track.id for n in similar_tracks(fs, run, collection_query(fs, i), k=len(data.tracks))]
            relevant = np.array([[moods[j] == moods[i] for j in ranked if j in held]])
            order = -np.arange(relevant.shape[1])[None].astype(float)  # the ranking, best first
            aps.append(average_precision_score(relevant[0], order[0]))
            ndcgs.append(ndcg_score(relevant, order, k=5))
    finally:
        fs.close()
    row = report.score("default")
    assert "power" in row.detail and "augmented" in row.detail
    assert row.map == pytest.approx(np.mean(aps), abs=1e-4) and row.ndcg == pytest.approx(np.mean(ndcgs), abs=1e-4)
    assert [m.method for m in report.methods].index("default") == [m.method for m in report.methods].index(
        "all-layers") + 1


def test_the_probe_std_is_the_population_std_of_its_fold_scores(extracted_store: Path, tmp_path: Path) -> None:
    """`score_std` is numpy's std of `score_folds` with ddof 0 (scikit-learn's convention for fold spread), as the
    report's `metric` now says; before, it said only "std over folds", which a reader took for the sample std."""
    from mess.probing.study import ProbeOptions
    from mess.probing.user_probe import probe_targets
    from mess.probing.user_targets import read_targets

    store = FeatureStore(extracted_store, readonly=True)
    try:
        run = store.run("dsp")
        tracks = store.tracks(run)
        rows = "".join(f"{t.id},{len(t.path) % 7},{t.artist}\n" for t in tracks)
        (tmp_path / "t.csv").write_text("id,number,composer\n" + rows)
        report = probe_targets(store, run, read_targets(store, tmp_path / "t.csv"), ProbeOptions(seed=0)).to_dict()
    finally:
        store.close()
    assert "ddof 0" in report["metric"]
    checked = 0
    for condition, scores in report["conditions"].items():
        for layer, targets in scores["score_folds"].items():
            for target, folds in targets.items():  # each rounded to 4 decimals, as the std is
                std = scores["score_std"][layer][target]
                assert std == pytest.approx(np.std(folds, ddof=0), abs=2e-4), (condition, layer, target)
                checked += np.std(folds, ddof=1) - np.std(folds, ddof=0) > 1e-3  # where the two differ
    assert checked


def test_group_by_artist_with_fewer_artists_than_folds_leaves_one_artist_out(extracted_store: Path,
                                                                               tmp_path: Path) -> None:
    """`mess probe --targets --group-by artist` on 4 artists and 5 folds fell back to shuffled KFold: every artist on
    both sides of a split, so a label that follows the artist scored 1.00, the leak the option was asked to
    prevent. Now one fold per artist; the ceiling of that label is then 0 (no artist teaches another's era)."""
    from mess.probing.study import ProbeOptions
    from mess.probing.user_probe import probe_targets
    from mess.probing.user_targets import read_targets

    store = FeatureStore(extracted_store, readonly=True)
    try:
        run = store.run("dsp")
        tracks = store.tracks(run)
        (tmp_path / "t.csv").write_text("id,who\n" + "".join(f"{t.id},{t.artist.lower()}\n" for t in tracks))
        report = probe_targets(store, run, read_targets(store, tmp_path / "t.csv"),
                               ProbeOptions(seed=0, group_by="artist", controls=()))
    finally:
        store.close()
    artists = {t.artist for t in tracks}
    assert 2 <= len(artists) < 5  # fewer artists than the default 5 folds: the case
    info = report.targets[0]
    assert info.folds.startswith(f"GroupKFold({len(artists)}) by artist"), info.folds
    assert info.ceiling == 0.0  # each fold's artist (its label) is in no training fold


def test_a_label_file_names_tracks_by_track_id_as_export_and_probe_do(extracted_store: Path, tmp_path: Path) -> None:
    """`mess export` names the id column `track_id` and `mess probe --targets` reads it; `mess evaluate --labels` (and
    `mess fuse train --labels`) refused such a file: "needs an id, path or file column"."""
    from mess.search.evaluate import read_label_csv

    labels, moods, _ = _moods(extracted_store, tmp_path)
    labels.write_text(labels.read_text().replace("id,mood", "Track_ID,mood", 1))
    store = FeatureStore(extracted_store, readonly=True)
    try:
        read = read_label_csv(store, labels, "mood")
    finally:
        store.close()
    assert read.labels == moods and read.column == "id" and [ref for _, ref in read.unknown] == ["99999"]


def test_the_artist_hybrid_says_when_too_few_artists_are_held_out(extracted_store: Path, tmp_path: Path) -> None:
    """`mess artists hybrid` on 4 reference artists held 1 out and reported its scores and weights with no word that
    one artist concludes nothing (the fusion report and `mess evaluate` say so of small held-out parts)."""
    from mess.artists.hybrid import fit_hybrid

    composers = ["Bach", "Haydn", "Mozart", "Palestrina"]
    (tmp_path / "similar.json").write_text(json.dumps({c: [o for o in composers if o != c] for c in composers}))
    done = CliRunner().invoke(app, ["artists", "hybrid", "--reference", str(tmp_path / "similar.json"), "--store",
                                    str(extracted_store), "--model", "dsp", "--no-save", "--json"])
    assert done.exit_code == 0, done.output
    fit = json.loads(done.stdout[done.stdout.index("{"):])
    assert fit["test_queries"] == round(0.3 * len(composers))
    assert fit["caveat"].startswith(f"the held-out split holds {fit['test_queries']} reference artist: too few")

    rng = np.random.default_rng(0)  # 20 artists in 4 scenes: 6 held out, enough to say nothing
    scene = np.repeat(np.arange(4), 5)
    audio = (scene[:, None] == scene[None, :]) + 0.1 * rng.random((20, 20))
    matched = {a: [b for b in range(20) if scene[b] == scene[a] and b != a] for a in range(20)}
    big = fit_hybrid({"audio": (audio + audio.T) / 2}, matched, k=4)
    assert big.test_queries == 6 and big.caveat is None


def test_artist_validation_says_when_too_few_reference_artists_back_it(extracted_store: Path,
                                                                        tmp_path: Path) -> None:
    """`mess artists validate` on 4 reference artists starred a best layer with no word that 4 queries conclude
    nothing."""
    composers = ["Bach", "Haydn", "Mozart", "Palestrina"]
    (tmp_path / "similar.json").write_text(json.dumps({c: [o for o in composers if o != c] for c in composers}))
    done = CliRunner().invoke(app, ["artists", "validate", "--reference", str(tmp_path / "similar.json"), "--store",
                                    str(extracted_store), "--model", "dsp", "-k", "2", "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout[done.stdout.index("{"):])
    assert report["coverage"]["usable_queries"] == len(composers)
    assert report["caveat"].startswith(f"{len(composers)} reference artists with a list in the collection: too few")
