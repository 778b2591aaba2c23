"""What the session-33 walkthrough found and left to the files' owners: each a message that misled (a traceback, a
figure named for another, a command that fails as advised, a negative zero)."""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from test_session33_walkthrough import ENCODED, beyond_shuffled

from conftest import mess_here
from mess.store import FeatureStore


@pytest.fixture(scope="module")
def fresh(extracted_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the rendered collection's store (dsp and musicnn-msd), never probed: read only."""
    root = tmp_path_factory.mktemp("left-fresh") / "store"
    shutil.copytree(extracted_store, root)
    return root


@pytest.fixture(scope="module")
def probed(extracted_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the store with its dsp run probed (an aspect map stored)."""
    root = tmp_path_factory.mktemp("left-probed") / "store"
    shutil.copytree(extracted_store, root)
    out = mess_here("probe", "--model", "dsp", "--store", str(root))
    assert out.returncode == 0, out.stderr
    return root


@pytest.fixture
def one_file(rendered_collection: list[Path], tmp_path: Path) -> Path:
    """A folder holding one rendered piece."""
    folder = tmp_path / "music"
    folder.mkdir()
    shutil.copy(rendered_collection[0], folder)
    return folder


@pytest.mark.parametrize("device", ["cuda:0", "mps"])
def test_extract_on_a_device_torch_lacks_is_one_line(device: str, one_file: Path, tmp_path: Path) -> None:
    """`mess extract DIR --model musicnn-msd --device cuda:0` (or mps) on a CPU-only torch ended in torch's traceback
    ('Torch not compiled with CUDA enabled', 'PyTorch is not linked with support for mps devices'): only plain
    `cuda` was checked. It is now one line naming the device, as `mess probe --control random-init` says it."""
    import torch

    if torch.cuda.is_available() if device.startswith("cuda") else torch.backends.mps.is_available():
        pytest.skip(f"{device} is there on this machine")
    out = mess_here("extract", str(one_file), "--model", "musicnn-msd", "--device", device,
                    "--store", str(tmp_path / "store"))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert len(lines) == 1 and f"--device {device} asked for, but" in lines[0], out.stderr


def test_similar_names_the_weak_aspects_figure_for_what_it_is(probed: Path) -> None:
    """`mess similar` said 'not used as evidence (probe R^2 below 0.3): rhythm 0.27': the figure is the best R^2
    less what shuffled targets reach, as `mess similar --aspect` words it."""
    report = json.loads((probed / "reports" / "probe-dsp-run1.json").read_text())
    weak = {a: s for a, (s, _) in beyond_shuffled(report).items() if s < ENCODED}
    assert weak, "the rendered collection's probe maps some aspect as not encoded"
    out = mess_here("similar", "1", "--model", "dsp", "--store", str(probed))
    assert out.returncode == 0, out.stderr
    said = " ".join(out.stderr.split())
    listed = ", ".join(f"{a} {s:.2f}" for a, s in sorted(weak.items(), key=lambda x: -x[1]))
    assert (f"not used as evidence (the probe's best R^2, less what shuffled targets reach, below {ENCODED}): "
            f"{listed}") in said, said


def test_the_pages_weak_aspect_tooltip_names_its_figure(fresh: Path) -> None:
    """The page's weak-aspect chip said 'the probe predicts X from this model with R² 0.27': the figure is the R²
    less what shuffled targets reach (docs/serve.md)."""
    from fastapi.testclient import TestClient

    from mess.serve.app import create_app

    with TestClient(base_url="http://127.0.0.1", app=create_app(fresh)) as client:
        page = client.get("/app.js")
    assert page.status_code == 200
    chip = re.search(r'"chip weak"\);\s*chip\.title = (.*?);\n', page.text, re.S)
    assert chip and "less what shuffled targets reach" in chip[1] and "R² ${r2" not in chip[1], chip



def test_similar_without_an_aspect_map_names_the_probe_of_its_model(fresh: Path) -> None:
    """`no aspect map for dsp: 'why' compares layers; run `mess probe` to name aspects`: `mess probe` alone probes
    the default model, not dsp. It names the model, as the store picks the run (`--model dsp`)."""
    with closing(FeatureStore(fresh, readonly=True)) as store:
        assert store.run().model != "dsp"  # the plain `mess probe` would probe another model
        option = store.model_option(store.run("dsp"))
    out = mess_here("similar", "1", "--model", "dsp", "--store", str(fresh))
    assert out.returncode == 0, out.stderr
    said = " ".join(out.stderr.split())
    assert f"run `mess probe --model {option}` to name aspects" in said, said


@pytest.fixture
def onnx_store(rendered_collection: list[Path], tmp_path: Path) -> tuple[Path, Path, Path]:
    """(store, model file, a folder of files catalogued by a dsp run only): two rendered pieces extracted with
    ``models/mine.onnx`` (a small graph shaped as Essentia's export, given by a relative path), a third with dsp."""
    pytest.importorskip("onnx", reason="the test builds its graph with onnx (test extra)")
    from test_onnx_backend import EFFNET_OUTPUTS, effnet_graph, write_json

    (tmp_path / "models").mkdir()
    model = effnet_graph(tmp_path / "models" / "mine.onnx")
    write_json(model, "serving_default_melspectrogram", EFFNET_OUTPUTS, "TensorflowPredictEffnetDiscogs")
    music, later = tmp_path / "music", tmp_path / "later"
    for folder, pieces in ((music, rendered_collection[:2]), (later, rendered_collection[2:3])):
        folder.mkdir()
        for p in pieces:
            shutil.copy(p, folder)
    store = tmp_path / "store"
    done = mess_here("extract", "music", "--model", "models/mine.onnx", "--preset", "discogs-effnet", "--store",
                     str(store), "--window", "10", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = mess_here("extract", str(later), "--model", "dsp", "--store", str(store))
    assert done.returncode == 0, done.stderr
    return store, model, later


def _advised(text: str) -> list[str]:
    """The `mess extract FOLDER ...` command a message advises, as words."""
    command = re.search(r"`mess extract FOLDER ([^`]*)`", " ".join(text.split()))
    assert command, text
    return shlex.split(command[1])


def test_advice_for_files_an_onnx_run_lacks_is_a_command_that_embeds_them(onnx_store: tuple[Path, Path, Path]
                                                                           ) -> None:
    """For a run made from a model file, `mess check` and `mess similar` advised "`mess extract --model mine`",
    which fails ('unknown model'), and named no FOLDER, which `mess extract` needs. The advice is now the
    command that works: run on the folder, it embeds the files and the check has nothing left to say."""
    store, model, later = onnx_store
    check = mess_here("check", "--store", str(store))
    assert check.returncode == 0, check.stderr
    options = _advised(check.stdout.strip().splitlines()[-1])
    assert options[:2] == ["--model", str(model.resolve())], options
    similar = mess_here("similar", "1", "--model", "mine", "--store", str(store))
    assert similar.returncode == 0, similar.stderr
    assert _advised(similar.stderr) == options
    done = mess_here("extract", str(later), *options, "--store", str(store))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    with closing(FeatureStore(store, readonly=True)) as fs:
        mine = fs.run("mine")
        assert fs.unembedded(mine) == [] and len(fs.runs()) == 2  # the same run, not a new one
    again = mess_here("check", "--json", "--store", str(store))
    assert not [p for p in json.loads(again.stdout)["problems"] if p["run"] == mine.id], again.stdout


def test_evaluate_counts_its_labels_and_queries_one_way(fresh: Path, tmp_path: Path) -> None:
    """`mess evaluate` on 7 labelled tracks titled its table '4 classes, 5 queries' and its caveat said '5 queries
    over 2 labels': labels of one track count as classes in the title but cannot be queried. The title now says
    how many labels have a second track, in the caveat's words."""
    with closing(FeatureStore(fresh, readonly=True)) as fs:
        ids = [t.id for t in fs.tracks(fs.run("dsp"))][:7]
    labels = dict(zip(ids, ["a", "a", "a", "b", "b", "c", "d"], strict=True))
    path = tmp_path / "labels.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([("id", "label"), *labels.items()])
    sizes = {label: list(labels.values()).count(label) for label in set(labels.values())}
    shared = [label for label, n in sizes.items() if n > 1]
    queries = sum(sizes[label] for label in shared)
    out = mess_here("evaluate", "--model", "dsp", "--labels", str(path), "--plot", str(tmp_path / "e.png"),
                    "--store", str(fresh), env={"COLUMNS": "250"})
    assert out.returncode == 0, out.stderr
    said = " ".join((out.stdout + out.stderr).split())
    over = f"{queries} queries over {len(shared)} labels"
    assert (f"{len(labels)} tracks, {len(sizes)} labels, {over} with a second track") in said, said
    assert f"caveat: {over}: too few" in said, said


def test_a_copys_re_ranked_score_is_no_negative_zero(rendered_collection: list[Path], tmp_path: Path) -> None:
    """`mess similar --ranking reranked` printed -0.0000 for a track's copy (the walkthrough's MP3 of the seed). Of
    an exact copy, the Jaccard distance of two tracks with the same k-reciprocal neighbours is 0, but its float sums
    left ~1e-16, a score of minus that: it is 0 now, the best a re-ranked score can be. A near copy (the same
    samples decoded from a WAV: -2e-06) shows as 0.0000 in the table, not -0.0000."""
    import soundfile as sf

    from mess.search.rerank import build_reranker
    from mess.search.vectors import VectorSpec, load_vectors

    music = tmp_path / "music"
    music.mkdir()
    for p in rendered_collection[:6]:
        shutil.copy(p, music)
    audio, rate = sf.read(rendered_collection[0], dtype="float32")
    sf.write(music / "copy.wav", audio, rate, subtype="FLOAT")  # the same samples in other bytes
    store = tmp_path / "store"
    assert mess_here("extract", str(music), "--model", "dsp", "--store", str(store)).returncode == 0
    with closing(FeatureStore(store, readonly=True)) as fs:
        run = fs.run("dsp")
        by_name = {Path(t.path).name: t.id for t in fs.tracks(run)}
        unit = load_vectors(fs, run, VectorSpec.from_options(), fs.tracks(run)).unit()
    exact = np.concatenate([unit, unit[:1]])  # track 0 twice: same vector, same neighbours
    scores = build_reranker(exact).rows(np.array([0]))[0]
    assert scores[-1] == 0.0 and not np.signbit(scores[-1]), scores[-1]
    seed, copy = by_name[rendered_collection[0].name], by_name["copy.wav"]
    args = ["similar", str(seed), "--model", "dsp", "--ranking", "reranked", "-k", "3", "--store", str(store)]
    top = json.loads(mess_here(*args, "--json").stdout)["results"][0]
    assert top["id"] == copy and round(top["adjusted"], 4) == 0.0, top
    shown = mess_here(*args, env={"COLUMNS": "200"})
    row = next(line for line in shown.stdout.splitlines() if "copy" in line)
    assert shown.returncode == 0 and "0.0000" in row and "-0.0000" not in row, shown.stdout


def test_the_server_says_which_models_have_a_learned_head(fresh: Path) -> None:
    """`?learned=true` under a model without a head answered 'no learned head ships for dsp with these layers';
    the CLI's `--learned` says what to do: it names the models heads ship for (the package's head files)."""
    from fastapi.testclient import TestClient

    from mess.models.head import HEADS_DIR
    from mess.serve.app import create_app

    shipped = sorted(p.stem for p in HEADS_DIR.glob("*.npz"))
    assert shipped and "dsp" not in shipped
    with TestClient(base_url="http://127.0.0.1", app=create_app(fresh)) as client:
        answer = client.get("/api/tracks/1/similar", params={"model": "dsp", "learned": "true"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"] == f"no learned head for dsp; heads ship for {', '.join(shipped)}", answer.text


def test_a_track_an_onnx_run_lacks_is_answered_with_the_command_that_embeds_it(onnx_store: tuple[Path, Path, Path]
                                                                              ) -> None:
    """`mess similar` of a collection track the model-file run has no vectors for advised "`mess extract --model
    mine` on its folder", which fails ('unknown model'); it now names the folder and the options that embed it into
    that run, and following it answers the query."""
    store, model, later = onnx_store
    with closing(FeatureStore(store, readonly=True)) as fs:
        track = next(t for t in fs.tracks() if Path(t.path).parent == later.resolve())
    asked = mess_here("similar", str(track.id), "--model", "mine", "--store", str(store))
    assert asked.returncode == 1, asked.stdout
    command = re.search(r"run `mess extract ([^`]*)` first", " ".join(asked.stderr.split()))
    assert command, asked.stderr
    words = shlex.split(command[1])
    assert words[0] == str(later.resolve()) and words[1:3] == ["--model", str(model.resolve())], words
    done = mess_here("extract", *words, "--store", str(store))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    again = mess_here("similar", str(track.id), "--model", "mine", "--store", str(store))
    assert again.returncode == 0, again.stderr
