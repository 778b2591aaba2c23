"""A researcher's probe: your own targets (`mess probe --targets FILE.csv`), the seed in the report, on real renders."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from mess.cli import probe as probe_cli
from mess.extract.runs import run_policy
from mess.probing.probes import ALPHAS, fold_accuracy, fold_ceiling, fold_chance, make_folds
from mess.probing.target_cache import track_targets
from mess.probing.targets import TARGET_NAMES
from mess.store import FeatureStore

app = typer.Typer()
probe_cli.register(app)
runner = CliRunner()


@pytest.fixture(scope="module")
def store_copy(extracted_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy: probing writes targets and reports."""
    target = tmp_path_factory.mktemp("researcher") / "store"
    shutil.copytree(extracted_store, target)
    return target


def _write(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _probe(*args: str) -> dict:
    result = runner.invoke(app, ["probe", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_own_number_targets_score_as_the_proxy_probe_scores_the_same_column(store_copy: Path, tmp_path: Path) -> None:
    """A CSV column holding the proxy target `loudness` (the cached values, by path) is scored on every layer exactly
    as the proxy probe scores it: the rows of the file meet the right vectors. Its labels (the album) get the
    ceiling the definition gives (grouped by album, no album is ever in its own training folds: 0), a row naming
    no track is counted, and the report and its files name the run, the file and the seed."""
    proxy = _probe("--model", "dsp", "--store", str(store_copy), "--seed", "3")
    assert proxy["seed"] == 3  # the report names the seed its shuffled control (and folds, MLP) came from
    store = FeatureStore(store_copy, readonly=True)
    run = store.run("dsp")
    tracks = store.tracks(run)
    cached = track_targets(store.root, tracks, run_policy(run), workers=1)
    loud = cached.values[:, TARGET_NAMES.index("loudness")]
    by_id = {t.id: t for t in tracks}
    rows = [[by_id[int(i)].path, repr(float(v)), by_id[int(i)].album, "render", k if k < 3 else ""]
            for k, (i, v) in enumerate(zip(cached.track_ids, loud, strict=True))]
    own = _write(tmp_path / "mine.csv", ["path", "level", "work", "source", "sparse"],
                 [*rows[::-1], ["/no/such.flac", "1.0", "x", "y", "1"]])
    report = _probe("--model", "dsp", "--store", str(store_copy), "--seed", "3", "--targets", str(own))
    assert report["seed"] == 3 and report["run_id"] == run.id and report["revision"] == run.revision
    assert report["targets_file"] == str(own) and report["unknown_rows"] == 1
    level = {layer: row["level"] for layer, row in report["conditions"]["trained"]["score"].items()}
    assert level == {layer: row["loudness"] for layer, row in proxy["conditions"]["trained"]["r2"].items()}
    info = {t["name"]: t for t in report["targets"]}
    assert info["level"]["kind"] == "number" and info["level"]["n_tracks"] == len(tracks)
    assert info["work"]["kind"] == "label" and info["work"]["n_classes"] == len({t.album for t in tracks})
    assert "by album" in info["work"]["folds"] and info["work"]["ceiling"] == 0.0
    # one label on every track is no target (accuracy 1.00 said nothing), as a constant number scores nothing
    assert info["source"]["folds"] == "not probed: every track has one label"
    assert {row["source"] for row in report["conditions"]["trained"]["score"].values()} == {None}
    # a column of 3 values is too few to probe: said of it, and the other columns are still probed
    assert info["sparse"]["folds"] == "not probed: probing needs at least 4 tracks, got 3"
    files = {k: Path(v) for k, v in report["files"].items()}
    assert files["json"].name.startswith(f"probe-dsp-run{run.id}-targets-mine-")
    assert json.loads(files["json"].read_text())["conditions"] == report["conditions"]
    with files["csv"].open() as f:
        long = list(csv.DictReader(f))
    assert len(long) == 2 * len(run.layer_names) * 4  # trained and shuffled x layers x targets
    assert {r["kind"] for r in long if r["target"] == "work"} == {"label"}
    # rows of several probes concatenated stay apart: each names its run, probe and seed
    assert {(r["model"], r["run_id"], r["revision"], r["probe"], r["seed"]) for r in long} == \
        {("dsp", str(run.id), run.revision, "ridge", "3")}
    with Path(proxy["files"]["csv"]).open() as f:
        assert {(r["model"], r["run_id"], r["seed"]) for r in csv.DictReader(f)} == {("dsp", str(run.id), "3")}
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = _probe("--model", "dsp", "--store", str(store_copy), "--seed", "3", "--targets", str(own))
    assert again["conditions"] == report["conditions"]  # the same command, the same numbers


def test_label_accuracy_is_a_ridge_classifier_on_the_one_hot_labels(extracted_store: Path) -> None:
    """Without groups the label probe is scikit-learn's RidgeCV (leave-one-out penalty per class column) on the
    standardised one-hot code of the training labels, predicting the highest column; chance and ceiling follow
    their definitions on the same folds."""
    store = FeatureStore(extracted_store, readonly=True)
    run = store.run("dsp")
    ids, x = store.layer_matrix(run, "mfcc")
    composers = sorted({t.composer for t in store.tracks(run)})
    by_id = {t.id: t for t in store.tracks(run)}
    classes = np.array([composers.index(by_id[int(i)].composer) for i in ids])
    folds = make_folds(len(ids), [], 4, seed=1)
    assert folds.groups is None and "KFold(4)" in folds.scheme
    expected, ceiling, majority = [], [], []
    for train, test in KFold(4, shuffle=True, random_state=1).split(x):
        seen = np.unique(classes[train])
        onehot = (classes[train][:, None] == seen).astype(float)
        scaler = StandardScaler().fit(x[train])
        fit = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(scaler.transform(x[train]),
                                                                 (onehot - onehot.mean(0)) / onehot.std(0))
        predicted = seen[(fit.predict(scaler.transform(x[test])) * onehot.std(0) + onehot.mean(0)).argmax(1)]
        expected.append(np.mean(predicted == classes[test]))
        ceiling.append(np.mean([c in seen for c in classes[test]]))
        counts = np.bincount(classes[train], minlength=len(composers))
        guess = sum(counts[c] / len(train) * np.mean(classes[test] == c) for c in range(len(composers)))
        majority.append(max(np.mean(classes[test] == counts.argmax()), guess))
    np.testing.assert_allclose(fold_accuracy(x, classes, folds), expected)
    assert fold_ceiling(classes, folds) == pytest.approx(np.mean(ceiling))
    assert fold_chance(classes, folds) == pytest.approx(np.mean(majority))


def test_a_label_that_follows_the_folds_groups_is_said_unlearnable(store_copy: Path, tmp_path: Path) -> None:
    store = FeatureStore(store_copy, readonly=True)
    rows = [[t.id, t.album, t.composer] for t in store.tracks(store.run("dsp"))]
    own = _write(tmp_path / "works.csv", ["id", "work", "composer"], rows)
    result = runner.invoke(app, ["probe", "-m", "dsp", "-s", str(store_copy), "--targets", str(own),
                                 "--control", "none"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "work: only 0% of its tracks have a label that a training track of their fold has" in text
    assert "composer: only" not in text
    assert "works.csv" in text and "Traceback" not in text
    # the folds may split otherwise: not grouped (copies still together), or by artist (4 composers: 4 folds), whose
    # albums (pieces) are theirs alone: never in their own training folds either
    for group_by, scheme in (("none", "KFold(5), shuffled (seed 0); not grouped (--group-by none)"),
                             ("artist", "GroupKFold(4) by artist (4 groups)")):
        report = _probe("-m", "dsp", "-s", str(store_copy), "--targets", str(own), "--control", "none",
                        "--group-by", group_by, "--layers", "mfcc", "--folds", "5" if group_by == "none" else "4")
        work = next(t for t in report["targets"] if t["name"] == "work")
        assert work["folds"] == scheme and (work["ceiling"] > 0) == (group_by == "none"), work
    result = runner.invoke(app, ["probe", "-m", "dsp", "-s", str(store_copy), "--targets", str(own),
                                 "--group-by", "genre"])
    assert result.exit_code == 1 and "unknown --group-by 'genre'; use auto, album, artist, none" in result.output


@pytest.mark.parametrize(("header", "rows", "extra", "message"), [
    (["id", "tempo"], [["1", "90"], ["1", "120"]], [], "works.csv:3: track 1"),
    (["name", "tempo"], [["1", "90"]], [], "needs an id, path or file column"),
    (["id"], [["1"]], [], "needs an id, path or file column"),
    (["id", "tempo"], [["1", "inf"]], [], "works.csv:2: tempo 'inf' is not a finite number"),
    (["id", "tempo"], [["1", "90", "x"]], [], "works.csv:2: 3 cells where the header has 2"),
    (["id", "tempo"], [["999", "90"]], [], "no row gives a target of a track in this store"),
    (["id", "tempo"], [["1", "90"]], ["--control", "random-init"], "shuffled control or none"),
])
def test_a_bad_targets_file_is_a_one_line_error_naming_it(store_copy: Path, tmp_path: Path, header: list[str],
                                                          rows: list[list[str]], extra: list[str],
                                                          message: str) -> None:
    own = _write(tmp_path / "works.csv", header, rows)
    result = runner.invoke(app, ["probe", "-m", "dsp", "-s", str(store_copy), "--targets", str(own), *extra])
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output


def test_a_missing_targets_file_is_named(store_copy: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["probe", "-m", "dsp", "-s", str(store_copy), "--targets", str(tmp_path / "x.csv")])
    assert result.exit_code == 1 and "x.csv: no such file" in " ".join(result.output.split())
    result = runner.invoke(app, ["probe", "-m", "dsp", "-s", str(store_copy), "--targets", str(tmp_path)])
    assert result.exit_code == 1 and f"{tmp_path}: a folder (--targets takes a CSV" in " ".join(result.output.split())


@pytest.mark.parametrize("segments", [False, True])
def test_a_csv_export_holds_what_the_npz_holds(extracted_store: Path, tmp_path: Path, segments: bool) -> None:
    """`mess export v.csv` (a format a spreadsheet and pandas read) was refused: now every id, path, tag, duration,
    the run (model, run id, revision, window policy) and every vector value, as float32, equal the npz export's."""
    from mess.cli.main import app as main_app

    per = ["--segments"] if segments else []
    for name in ("v.csv", "v.npz"):
        out = CliRunner().invoke(main_app, ["export", str(tmp_path / name), "-m", "musicnn-msd", "-s",
                                            str(extracted_store), "-l", "cnn2,taggram", *per])
        assert out.exit_code == 0, out.output
    npz = np.load(tmp_path / "v.npz")
    with (tmp_path / "v.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(npz["track_id"])
    for key in ("track_id", "path", "content_hash", "artist", "album", "title", "composer", "model", "run_id",
                "revision", "policy", *(["segment_start"] if segments else [])):
        want = npz[key].tolist() if npz[key].ndim else [npz[key].item()] * len(rows)
        assert [type(w)(r[key]) for r, w in zip(rows, want, strict=True)] == want, key
    np.testing.assert_array_equal([float(r["duration"]) for r in rows], npz["duration"])
    for layer in npz["layers"].tolist():
        dims = npz[f"vectors_{layer}"].shape[1]
        got = np.array([[r[f"{layer}_{i}"] for i in range(dims)] for r in rows], dtype=np.float32)
        np.testing.assert_array_equal(got, npz[f"vectors_{layer}"])


def test_a_spreadsheets_semicolon_file_with_decimal_commas_gives_numbers(extracted_store: Path, tmp_path: Path) -> None:
    """Excel in many locales saves ';' and decimal commas (with a byte-order mark): '0,3' made the whole column a
    label, probed for accuracy. Now it is the number 0.3; in a comma-separated file '0,3' stays text."""
    from mess.probing.user_targets import read_targets

    store = FeatureStore(extracted_store, readonly=True)
    tracks = store.tracks(store.run("dsp"))[:6]
    energy = [f"{k},{k + 1}" for k in range(6)]  # 0,1 .. 5,6
    lines = ["File;Energy;Mood", *(f"{Path(t.path).name};{e};{'calm' if k % 2 else 'busy'}"
                                   for k, (t, e) in enumerate(zip(tracks, energy, strict=True)))]
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode())
    found = {t.name: t for t in read_targets(store, tmp_path / "excel.csv").targets}
    assert found["Energy"].kind == "number" and found["Mood"].kind == "label"
    assert found["Energy"].values == {t.id: float(e.replace(",", ".")) for t, e in zip(tracks, energy, strict=True)}
    _write(tmp_path / "plain.csv", ["file", "energy"], [[Path(t.path).name, e] for t, e in zip(tracks, energy,
                                                                                                strict=True)])
    assert read_targets(store, tmp_path / "plain.csv").targets[0].kind == "label"


def test_a_table_made_from_mess_exports_csv_names_its_tracks_by_track_id(extracted_store: Path,
                                                                          tmp_path: Path) -> None:
    """`mess export v.csv` names the id column track_id: a researcher's table built on it (track_id, path and a
    computed column) was refused for having no id column. track_id names tracks; path, there too, is no target."""
    from mess.cli.main import app as main_app
    from mess.probing.user_targets import read_targets

    out = CliRunner().invoke(main_app, ["export", str(tmp_path / "v.csv"), "-m", "dsp", "-s", str(extracted_store),
                                        "-l", "rhythm"])
    assert out.exit_code == 0, out.output
    with (tmp_path / "v.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    level = {int(r["track_id"]): float(r["rhythm_0"]) * 2 for r in rows}  # a column computed from the export
    _write(tmp_path / "mine.csv", ["track_id", "path", "level"],
           [[r["track_id"], r["path"], level[int(r["track_id"])]] for r in rows])
    found = read_targets(FeatureStore(extracted_store, readonly=True), tmp_path / "mine.csv")
    assert found.column == "id" and [t.name for t in found.targets] == ["level"]
    assert found.targets[0].values == level


def test_an_aspect_every_layer_scores_zero_names_no_best_layer(store_copy: Path) -> None:
    """dsp's rhythm layer alone predicts no texture target (aspect score 0.00, computed by the probe on the renders):
    the table said its best layer was 'rhythm' (the first of a tie of zeros), reading as 'rhythm encodes texture'."""
    report = _probe("-m", "dsp", "-s", str(store_copy), "--layers", "rhythm", "--control", "none")
    assert report["conditions"]["trained"]["aspect_score"]["rhythm"]["texture"] == 0.0
    assert report["conditions"]["trained"]["aspect_score"]["rhythm"]["rhythm"] > 0
    result = runner.invoke(app, ["probe", "-m", "dsp", "-s", str(store_copy), "--layers", "rhythm", "--control",
                                 "none"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 3}
    assert "none (every layer 0)" in lines["texture"] and "rhythm" not in lines["texture"]
    assert "rhythm" in lines["rhythm"].split("│")[2]  # a layer that scores above 0 is named
