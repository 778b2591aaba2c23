"""Picking one run of a model extracted twice (``--model NAME@RUN_ID``, ``run:RUN_ID``), through the CLI and the API,
on a real store: synthetic audio extracted with the dsp model under two window policies."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import mutagen.flac
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from mess.audio.discover import find_audio
from mess.audio.windows import WindowPolicy
from mess.cli.main import app
from mess.extract.pipeline import extract
from mess.models.dsp import DspModel
from mess.serve.app import create_app
from mess.store import FeatureStore, Run

SR = 22050
ALL, SOME = 12, 8  # files in run 1 (the one in use) and in run 2
runner = CliRunner()


def _tone(f0: float, seconds: float = 3.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * f0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * f0 / 90 * t))).astype(np.float32)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Run, Run]:
    """12 tagged files (4 artists) extracted with dsp (run 1, the one in use), then 8 with 1 s windows (run 2)."""
    root = tmp_path_factory.mktemp("runs")
    (root / "music").mkdir()
    for i in range(ALL):
        path = root / "music" / f"tone{i}.flac"
        sf.write(path, _tone(110.0 * (i + 1)), SR)
        tags = mutagen.flac.FLAC(path)
        tags.update({"artist": f"Artist {i % 4}", "title": f"tone {i}"})
        tags.save()
    with closing(FeatureStore(root / "store")) as store:
        files = find_audio([root / "music"])
        assert not extract(store, files, DspModel(), WindowPolicy()).failed
        assert not extract(store, files[:SOME], DspModel(), WindowPolicy(window_seconds=1.0)).failed
        first, second = store.runs()
        assert store.run("dsp").id == first.id
    return root / "store", first, second


def _cli(*args: str) -> tuple[int, str]:
    out = runner.invoke(app, list(args), env={"COLUMNS": "300"})
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception
    return out.exit_code, out.output


def test_a_run_is_picked_by_name_and_id_or_by_id(two_runs: tuple[Path, Run, Run]) -> None:
    """`FeatureStore.run` took the run covering the most tracks whatever was asked: no command could use another."""
    root, first, second = two_runs
    with closing(FeatureStore(root, readonly=True)) as store:
        assert [store.run(m).id for m in ("dsp", f"dsp@{second.id}", f"run:{second.id}", f"dsp@{first.id}")] == [
            first.id, second.id, second.id, first.id]
        assert len(store.tracks(store.run(f"dsp@{second.id}"))) == SOME
        # `mess extract --model DSP` stores a dsp run; every other command said "no vectors for model 'DSP'"
        assert [store.run(m).id for m in ("DSP", f"Dsp@{second.id}")] == [first.id, second.id]


def test_info_names_the_runs_and_how_to_pick_them(two_runs: tuple[Path, Run, Run]) -> None:
    root, first, second = two_runs
    code, output = _cli("info", "--store", str(root))
    assert code == 0 and f"--model NAME@RUN (here dsp@{second.id}; run:RUN also does)" in " ".join(output.split())
    code, output = _cli("info", "--store", str(root), "--json")
    assert [(r["id"], r["select"], r["in_use"]) for r in json.loads(output)["runs"]] == [
        (first.id, f"dsp@{first.id}", True), (second.id, f"dsp@{second.id}", False)]


@pytest.mark.parametrize("how", ["dsp@{id}", "run:{id}"])
def test_similar_and_index_answer_from_the_run_picked(two_runs: tuple[Path, Run, Run], how: str) -> None:
    root, first, second = two_runs
    with closing(FeatureStore(root, readonly=True)) as store:
        in_second = {t.id for t in store.tracks(second)}
    code, output = _cli("similar", "1", "-k", "20", "--store", str(root), "--json", "-m", how.format(id=second.id))
    assert code == 0, output
    assert {r["id"] for r in json.loads(output)["results"]} == in_second - {1}
    code, output = _cli("similar", "1", "-k", "20", "--store", str(root), "--json", "-m", "dsp")
    assert len(json.loads(output)["results"]) == ALL - 1  # the run in use: every file
    code, output = _cli("index", "--store", str(root), "--json", "-m", how.format(id=second.id))
    assert code == 0, output
    report = json.loads(output)
    assert (report["n"], Path(report["path"]).name.startswith(f"run{second.id}-")) == (SOME, True)


@pytest.mark.parametrize(("model", "message"), [
    ("dsp@99", "no run 99 in this store; its runs: dsp@1, dsp@2 (see `mess info`)"),
    ("musicnn@1", "run 1 is a dsp run, not musicnn's; musicnn has no run in this store"),
    ("dsp@x", "'dsp@x' names no model of this store and is no run choice: pick a run as NAME@RUN_ID"),
    ("@2", "'@2' names no model of this store and is no run choice"),
    ("run:", "'run:' names no model of this store and is no run choice"),
    pytest.param("run:" + "9" * 5000, "names no model of this store and is no run choice",  # was int()'s traceback
                 id="run:<5000 digits>"),
])
def test_a_bad_run_choice_is_one_clear_line(two_runs: tuple[Path, Run, Run], model: str, message: str) -> None:
    root, _, _ = two_runs
    for command in (["similar", "1"], ["index"], ["export", str(root.parent / "out.npz")]):
        code, output = _cli(*command, "--store", str(root), "-m", model)
        assert code == 1 and message in " ".join(output.split()) and "Traceback" not in output, output


@pytest.fixture(scope="module")
def client(two_runs: tuple[Path, Run, Run]) -> Iterator[TestClient]:
    with TestClient(base_url="http://127.0.0.1", app=create_app(two_runs[0])) as c:
        yield c


def test_the_api_model_parameter_picks_a_run(client: TestClient, two_runs: tuple[Path, Run, Run]) -> None:
    _, first, second = two_runs
    picked = {"model": f"dsp@{second.id}"}
    listed = client.get("/api/tracks", params=picked).json()["items"]
    assert len(listed) == SOME and len(client.get("/api/tracks", params={"model": "dsp"}).json()["items"]) == ALL
    results = client.get("/api/tracks/1/similar", params={**picked, "k": 20}).json()["results"]
    assert {r["id"] for r in results} == {t["id"] for t in listed} - {1}
    assert len(client.get("/api/map", params=picked).json()["points"]) == SOME
    for model, status in (("dsp@99", 404), ("dsp@x", 404), ("musicnn@1", 404)):
        response = client.get("/api/tracks/1/similar", params={"model": model})
        assert response.status_code == status and "run" in response.json()["detail"], response.text


def test_a_server_started_on_one_run_answers_from_it(two_runs: tuple[Path, Run, Run]) -> None:
    root, _, second = two_runs
    with TestClient(base_url="http://127.0.0.1", app=create_app(root, f"run:{second.id}")) as c:
        assert c.get("/api/health").json()["default_model"] == f"dsp@{second.id}"
        assert len(c.get("/api/tracks/1/similar", params={"k": 20}).json()["results"]) == SOME - 1
    code, output = _cli("serve", "--store", str(root), "-m", "dsp@99")
    assert code == 1 and "no run 99 in this store" in output


def test_export_of_a_picked_run_says_it_was_picked(two_runs: tuple[Path, Run, Run]) -> None:
    """The note called every exported run 'the one covering the most tracks', a run picked by --model too."""
    root, first, second = two_runs
    out = root.parent / "picked.npz"
    code, output = _cli("export", str(out), "--store", str(root), "-m", f"run:{second.id}")
    said = " ".join(output.split())
    assert code == 0 and f"exported run {second.id}," in said, output
    assert f"as --model dsp@{second.id} picked (the name alone picks run {first.id})" in said
    assert "covering the most tracks" not in said and int(np.load(out)["run_id"]) == second.id


def test_evaluate_plots_each_run_apart(two_runs: tuple[Path, Run, Run]) -> None:
    """Both runs of dsp wrote STORE/reports/evaluate-dsp-artist.png: the second plot replaced the first run's."""
    root, first, second = two_runs
    plots = []
    for run in (first, second):
        code, output = _cli("evaluate", "--store", str(root), "-m", f"dsp@{run.id}", "--label", "artist")
        assert code == 0, output
        plots.append(root / "reports" / f"evaluate-dsp-run{run.id}-artist.png")
    assert all(p.is_file() for p in plots)


def test_artist_matrices_of_two_runs_are_written_apart(two_runs: tuple[Path, Run, Run]) -> None:
    """Both runs of dsp wrote STORE/reports/artists-matrix-dsp-mfcc.csv/.png: the second replaced the first run's."""
    root, first, second = two_runs
    written = []
    for run in (first, second):
        out = runner.invoke(app, ["artists", "matrix", "--store", str(root), "-m", f"dsp@{run.id}", "-l", "mfcc",
                                  "--json"])
        assert out.exit_code == 0, out.output
        written.append(json.loads(out.stdout)["csv"])  # notes (4 artists centred) go to stderr
    assert [Path(p).name for p in written] == [f"artists-matrix-dsp-run{r.id}-mfcc.csv" for r in (first, second)]
    assert all(Path(p).is_file() for p in written)


def test_each_run_keeps_its_own_fusion_network(two_runs: tuple[Path, Run, Run], tmp_path: Path) -> None:
    """Both runs of dsp were trained into STORE/fusion/dsp.pt: training the second replaced the first run's network,
    so `fuse apply` of the first then refused it ('trained on dsp run 2')."""
    root, first, second = two_runs
    copy = tmp_path / "store"
    shutil.copytree(root, copy)
    for run in (first, second):
        code, output = _cli("fuse", "train", "--store", str(copy), "-m", f"dsp@{run.id}", "--label", "artist",
                            "--weight-epochs", "2", "--max-epochs", "0", "--threads", "1", "--json")
        assert code == 0, output
        assert Path(json.loads(output)["checkpoint"]) == copy / "fusion" / f"dsp-run{run.id}.pt"
    for run in (first, second):
        code, output = _cli("fuse", "apply", "--store", str(copy), "-m", f"dsp@{run.id}", "--json")
        assert code == 0, output
        assert Path(json.loads(output)["checkpoint"]).name == f"dsp-run{run.id}.pt"
    older = copy / "fusion" / "dsp.pt"  # where an older mess saved every run's network: still found
    for suffix in (".pt", ".json"):
        (copy / "fusion" / f"dsp-run{first.id}{suffix}").rename(older.with_suffix(suffix))
    code, output = _cli("fuse", "apply", "--store", str(copy), "-m", f"dsp@{first.id}", "--json")
    assert code == 0 and Path(json.loads(output)["checkpoint"]) == older, output


def test_each_run_keeps_its_own_fusion_report(two_runs: tuple[Path, Run, Run], tmp_path: Path) -> None:
    """`mess fuse report` of either run of dsp wrote STORE/reports/fusion-dsp.json/.md/.png: the second run's report
    replaced the first's."""
    root, first, second = two_runs
    copy = tmp_path / "store"
    shutil.copytree(root, copy)
    written = []
    for run in (first, second):
        picked = ["--store", str(copy), "-m", f"dsp@{run.id}"]
        code, output = _cli("fuse", "train", *picked, "--label", "artist", "--weight-epochs", "2", "--max-epochs",
                            "0", "--threads", "1", "--json")
        assert code == 0, output
        code, output = _cli("fuse", "report", *picked, "-k", "3", "--json")
        assert code == 0, output
        written.append(Path(json.loads(output)["files"]["json"]))
    for path, run in zip(written, (first, second), strict=True):
        assert path.name.startswith(f"fusion-dsp-run{run.id}-"), path
    assert len(set(written)) == 2 and all(p.is_file() for p in written)  # named after each run's own checkpoint


def test_the_default_model_setting_refuses_a_run_choice_in_words(two_runs: tuple[Path, Run, Run]) -> None:
    """`mess config default-model dsp@2` said 'no vectors for model 'dsp@2'', as if dsp were not extracted."""
    root, _, second = two_runs
    code, output = _cli("config", "default-model", f"dsp@{second.id}", "--store", str(root))
    assert code == 1 and (f"default-model is a model, not one run: pick 'dsp@{second.id}' per command with --model "
                          f"dsp@{second.id}") in " ".join(output.split()), output
    # a run that is not in the store: advising `--model dsp@99` per command sent the user to another error
    code, output = _cli("config", "default-model", "dsp@99", "--store", str(root))
    assert code == 1 and "no run 99 in this store" in output and "per command" not in output, output
