"""Queries by new files against a store extracted with a user-supplied ``.onnx`` model.

The run is named after the file's stem, which no registry knows: `mess extract` records the file's path, preset and
revision with the run (``runs/ID/source.json``), and `mess similar FILE` and the server's uploads load the model from
there, once the file is checked against the run's revision.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from mess.audio.windows import WindowPolicy
from mess.cli.main import app
from mess.extract.pipeline import extract
from mess.models.essentia import OnnxModel
from mess.models.essentia.export import export_musicnn
from mess.models.musicnn import MusicnnModel
from mess.models.registry import load_run_model
from mess.probing.controls import ControlError, random_init_run
from mess.query import embed_query
from mess.serve.app import create_app
from mess.store import FeatureStore, Run, StoreError

pytest.importorskip("onnx", reason="tests build their graphs with onnx (test extra)")
from test_onnx_backend import EFFNET_OUTPUTS, _cli, effnet_graph, write_json  # noqa: E402


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory, rendered_collection: list[Path]) -> tuple[Path, Path]:
    """(store, model file): three rendered pieces extracted with ``mine.onnx`` (preset named, not guessed)."""
    root = tmp_path_factory.mktemp("onnx-query")
    (root / "models").mkdir()
    model = effnet_graph(root / "models" / "mine.onnx")
    write_json(model, "serving_default_melspectrogram", EFFNET_OUTPUTS, "TensorflowPredictEffnetDiscogs")
    music = root / "music"
    music.mkdir()
    for p in rendered_collection[:3]:
        (music / p.name).symlink_to(p)
    done = _cli("extract", str(music), "--model", "models/mine.onnx", "--preset", "discogs-effnet", "--store",
                str(root / "store"), "--window", "10", cwd=root)
    assert done.returncode == 0, done.stderr
    return root / "store", model


@pytest.fixture(scope="module")
def outside(extracted: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """(a WAV of the first collection track's samples, not in the collection; that track's id)."""
    with closing(FeatureStore(extracted[0], readonly=True)) as store:
        original = store.tracks(store.run("mine"))[0]
    audio, sr = sf.read(original.path, dtype="float32")
    wav = tmp_path_factory.mktemp("outside") / "other.wav"
    sf.write(wav, audio, sr, subtype="FLOAT")
    return wav, original.id


def _similar(store: Path, query: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["similar", str(query), "--model", "mine", "--store", str(store), "-k", "2",
                                      "--json"])
    return result.exit_code, result.output


def test_extract_records_where_the_model_came_from(extracted: tuple[Path, Path]) -> None:
    store_path, model = extracted
    with closing(FeatureStore(store_path, readonly=True)) as store:
        run = store.run("mine")
        assert store.model_source(run) == {"kind": "onnx", "path": str(model.resolve()), "preset": "discogs-effnet",
                                           "revision": run.revision}
        assert json.loads(store.model_source_path(run).read_text())["path"] == str(model.resolve())


def test_similar_by_an_outside_file(extracted: tuple[Path, Path], outside: tuple[Path, int], tmp_path: Path) -> None:
    """Before: "unknown model 'mine'". Now the file is embedded with the recorded model: its vectors are the
    original's, so the original comes first; a byte copy under another name is that track."""
    store_path, _ = extracted
    wav, original = outside
    code, out = _similar(store_path, wav)
    assert code == 0, out
    assert json.loads(out)["results"][0]["id"] == original
    with closing(FeatureStore(store_path, readonly=True)) as store:
        run = store.run("mine")
        query = embed_query(store, wav, run)
        assert query.track is None and query.layers is not None
        ids, matrix = store.layer_matrix(run, "embeddings")
        stored = matrix[list(ids).index(original)]
        np.testing.assert_allclose(query.layers[run.layer_index("embeddings")], stored, rtol=2e-3, atol=2e-3)
        copy = tmp_path / "renamed copy.flac"
        shutil.copyfile(store.track(original).path, copy)
        assert embed_query(store, copy, run).track.id == original


def test_upload_to_the_server(extracted: tuple[Path, Path], outside: tuple[Path, int]) -> None:
    """Before: 503 "unknown model 'mine'". Now 200; with the model file gone, 503 saying so (without the path)."""
    (store_path, model), (wav, original) = extracted, outside

    def upload() -> httpx.Response:
        return client.post("/api/similar/upload", params={"k": 2, "model": "mine"},
                           files={"file": ("other.wav", wav.read_bytes(), "audio/wav")})

    with TestClient(base_url="http://127.0.0.1", app=create_app(store_path, embed_timeout=300)) as client:
        answer = upload()
        assert answer.status_code == 200, answer.text
        assert answer.json()["query"]["external"] is True and answer.json()["results"][0]["id"] == original
    with TestClient(base_url="http://127.0.0.1", app=create_app(store_path, embed_timeout=300)) as client, \
            _set_aside(model):
        model.unlink()
        refused = upload()
    assert refused.status_code == 503 and "which is gone; the model file is needed" in refused.json()["detail"]
    assert str(model.parent) not in refused.json()["detail"]


@contextmanager
def _set_aside(path: Path) -> Iterator[Path]:
    """``path``'s bytes kept while the block changes or removes it, put back after."""
    kept = path.read_bytes()
    try:
        yield path
    finally:
        path.write_bytes(kept)


def _one_line_error(store: Path, query: Path) -> str:
    code, out = _similar(store, query)
    assert code == 1 and "Traceback" not in out, out
    return " ".join(out.split())


def test_model_file_gone_names_where_it_was(extracted: tuple[Path, Path], outside: tuple[Path, int]) -> None:
    store_path, model = extracted
    with _set_aside(model):
        model.unlink()
        message = _one_line_error(store_path, outside[0])
    assert f"mine was extracted with the model file {model.resolve()}, which is gone" in message
    assert "the model file is needed to embed new files" in message


def test_model_file_replaced_asks_to_re_extract(extracted: tuple[Path, Path], outside: tuple[Path, int]) -> None:
    store_path, model = extracted
    with _set_aside(model):
        effnet_graph(model, batch=8)  # another graph, same name: another SHA-256
        message = _one_line_error(store_path, outside[0])
    assert f"the model file {model.resolve()} has changed since the collection was extracted with it" in message
    assert "re-extract the collection" in message


def test_damaged_record_is_one_line(extracted: tuple[Path, Path], outside: tuple[Path, int],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A path not absolute is damage too: it was looked up from the working directory (here, where the file is)."""
    store_path, _ = extracted
    with closing(FeatureStore(store_path, readonly=True)) as store:
        record = store.model_source_path(store.run("mine"))
    relative = {**json.loads(record.read_text()), "path": "models/mine.onnx"}
    monkeypatch.chdir(store_path.parent)
    for damage in (b'{"path": ', b"[1, 2]", json.dumps({"kind": "onnx", "path": "x.onnx"}).encode(),
                   json.dumps(relative).encode()):
        with _set_aside(record):
            record.write_bytes(damage)
            message = _one_line_error(store_path, outside[0])
        assert "damaged" in message and "run `mess extract` with the model file again" in message, message


def _upload(client: TestClient, wav: Path, model: str) -> httpx.Response:
    return client.post("/api/similar/upload", params={"k": 2, "model": model},
                       files={"file": ("other.wav", wav.read_bytes(), "audio/wav")})


def test_a_folder_named_like_the_run_is_not_its_model(extracted: tuple[Path, Path], outside: tuple[Path, int],
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: with a folder ``mine`` in the working directory the run's name was taken for a model folder ("mine
    holds no model (no config.json)", 503 from the server). The run's record names its model: the folder is not
    looked at."""
    (store_path, _), (wav, original) = extracted, outside
    (tmp_path / "mine").mkdir()
    monkeypatch.chdir(tmp_path)
    code, out = _similar(store_path, wav)
    assert code == 0, out
    assert json.loads(out)["results"][0]["id"] == original
    with TestClient(base_url="http://127.0.0.1", app=create_app(store_path, embed_timeout=300)) as client:
        answer = _upload(client, wav, "mine")
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"][0]["id"] == original


def test_a_store_without_the_record_says_to_extract_once_more(extracted: tuple[Path, Path],
                                                               outside: tuple[Path, int]) -> None:
    """A store extracted before the record existed. Before: "unknown model 'mine'; choose one of dsp, ...", as if
    the user had misspelt it. Doing what the message says records the file and embeds nothing again."""
    (store_path, model), (wav, original) = extracted, outside
    with closing(FeatureStore(store_path, readonly=True)) as store:
        record = store.model_source_path(store.run("mine"))
    with _set_aside(record):
        record.unlink()
        message = _one_line_error(store_path, wav)
        assert ("mine was extracted with a model file (mine.onnx) before mess recorded where such files are; to "
                "embed new files with it, run `mess extract` with that file once more, with the options the run was "
                "made with (--preset, --window, --max-windows; `mess info` lists its windows)") in message
        again = _cli("extract", str(store_path.parent / "music"), "--model", str(model), "--preset", "discogs-effnet",
                     "--store", str(store_path), "--window", "10", cwd=store_path.parent)
        assert again.returncode == 0 and "0 embedded, 3 unchanged" in again.stderr, again.stderr
        code, out = _similar(store_path, wav)
    assert code == 0 and json.loads(out)["results"][0]["id"] == original, out


def test_upload_with_a_damaged_record_is_503_in_one_line(extracted: tuple[Path, Path],
                                                         outside: tuple[Path, int]) -> None:
    """Every fault of the record or its file is the server's, not the upload's: 503 with one line naming what is
    wrong and what to do, and no server path. Before: malformed JSON or values not strings went through the
    StoreError handler as a 400, the others as a 503."""
    (store_path, model), (wav, _) = extracted, outside
    with closing(FeatureStore(store_path, readonly=True)) as store:
        run = store.run("mine")
        record = store.model_source_path(run)
    good = json.loads(record.read_text())
    damaged = "run `mess extract` with the model file again to record it anew"
    records = [(b'{"path": ', damaged), (b"[1, 2]", damaged), (json.dumps({**good, "preset": 3}).encode(), damaged),
               (json.dumps({"kind": "onnx", "path": good["path"]}).encode(), damaged),
               (json.dumps({**good, "path": "models/mine.onnx"}).encode(), damaged)]
    with TestClient(base_url="http://127.0.0.1", app=create_app(store_path, embed_timeout=300)) as client:
        answers = []
        with _set_aside(record):
            for text, expected in records:
                record.write_bytes(text)
                answers.append((_upload(client, wav, "mine"), expected))
        with _set_aside(model):
            model.unlink()
            answers.append((_upload(client, wav, "mine"), "mine was extracted with the model file mine.onnx, "
                                                          "which is gone; the model file is needed"))
            effnet_graph(model, batch=8)
            answers.append((_upload(client, wav, "mine"), "the model file mine.onnx has changed since the "
                                                          "collection was extracted with it"))
    for answer, expected in answers:
        detail = answer.json()["detail"]
        assert answer.status_code == 503 and expected in detail, (answer.status_code, detail)
        assert "\n" not in detail and str(store_path.parent) not in detail, detail


def test_a_damaged_record_in_a_store_named_in_other_bytes_than_utf8_is_503(extracted: tuple[Path, Path],
                                                                            outside: tuple[Path, int],
                                                                            tmp_path: Path) -> None:
    """The 503's message names the store by its folder's name: one that is not UTF-8 could not be sent as JSON."""
    (store_path, _), (wav, _) = extracted, outside
    odd = tmp_path / os.fsdecode(b"st\xff")
    shutil.copytree(store_path, odd)
    with closing(FeatureStore(odd, readonly=True)) as store:
        store.model_source_path(store.run("mine")).write_bytes(b"[1, 2]")
    with TestClient(base_url="http://127.0.0.1", app=create_app(odd, embed_timeout=300)) as client:
        answer = _upload(client, wav, "mine")
    detail = answer.json()["detail"]
    assert answer.status_code == 503 and "in the store at st\\xff," in detail, (answer.status_code, detail)


def _samples_of(track: Path, wav: Path) -> Path:
    """``wav``: ``track``'s samples in a file of other bytes (embedded as an outside file, not found by its hash)."""
    audio, sr = sf.read(track, dtype="float32")
    sf.write(wav, audio, sr, subtype="FLOAT")
    return wav


@pytest.fixture(scope="module")
def registry_named(tmp_path_factory: pytest.TempPathFactory, rendered_collection: list[Path]) -> tuple[Path, Run, Run]:
    """(store, ONNX run, native run): three rendered pieces extracted with musicnn's real weights exported as
    ``musicnn-msd.onnx`` (through the library, as a store made before `mess extract` refused that name), then with
    the registry's ``musicnn-msd``: two runs of one name, made by two networks."""
    pytest.importorskip("musicnn", reason="the musicnn wheel holds the weights: pip install --no-deps musicnn==0.1.0")
    root = tmp_path_factory.mktemp("registry-named")
    native = MusicnnModel("MSD")
    (root / "models").mkdir()
    model = export_musicnn(native, root / "models" / "musicnn-msd.onnx")
    policy = WindowPolicy(window_seconds=10.0)
    with closing(FeatureStore(root / "store")) as store:
        assert not extract(store, rendered_collection[:3], OnnxModel(model), policy).failed
        assert not extract(store, rendered_collection[:3], native, policy).failed
        onnx_run, native_run = store.runs()
    assert onnx_run.model == native_run.model == "musicnn-msd" and onnx_run.revision.startswith("sha256:")
    return root / "store", onnx_run, native_run


def test_the_record_wins_over_a_registry_model_of_the_same_name(registry_named: tuple[Path, Run, Run],
                                                                tmp_path: Path) -> None:
    """Before: the ONNX run's queries loaded the registry's musicnn-msd ("musicnn-msd is now revision musicnn-0.1.0
    but the store holds sha256:..."). Now each run embeds a new file with its own network: a file of a collection
    track's samples (other bytes) gets that track's stored vectors of the run asked for, by the CLI and the server."""
    store_path, onnx_run, native_run = registry_named
    with closing(FeatureStore(store_path, readonly=True)) as store:
        first = store.tracks(onnx_run)[0]
        copy = _samples_of(Path(first.path), tmp_path / "copy.wav")
        for run in (onnx_run, native_run):
            query = embed_query(store, copy, run)
            assert query.track is None and query.layers is not None
            ids, matrix = store.layer_matrix(run, "penultimate")
            np.testing.assert_allclose(query.layers[run.layer_index("penultimate")], matrix[list(ids).index(first.id)],
                                       rtol=2e-3, atol=2e-3)
    result = CliRunner().invoke(app, ["similar", str(copy), "--model", f"musicnn-msd@{onnx_run.id}", "--store",
                                      str(store_path), "-k", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["results"][0]["id"] == first.id
    with TestClient(base_url="http://127.0.0.1", app=create_app(store_path, embed_timeout=300)) as client:
        answer = _upload(client, copy, f"musicnn-msd@{onnx_run.id}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"][0]["id"] == first.id


def test_extract_refuses_a_model_file_named_like_a_registry_model(registry_named: tuple[Path, Run, Run],
                                                                   rendered_collection: list[Path],
                                                                   tmp_path: Path) -> None:
    """Before: `mess extract --model musicnn-msd.onnx` made a run named musicnn-msd that `mess info` showed as another
    revision of the registry's model and `--model musicnn-msd` could answer from. Now refused before the store is
    opened, in any case of the letters, with what to do."""
    models = registry_named[0].parent / "models"
    (tmp_path / "MusicNN.onnx").symlink_to(models / "musicnn-msd.onnx")
    (tmp_path / "MusicNN.json").symlink_to(models / "musicnn-msd.json")
    for file, stem in ((models / "musicnn-msd.onnx", "musicnn-msd"), (tmp_path / "MusicNN.onnx", "MusicNN")):
        result = CliRunner().invoke(app, ["extract", str(rendered_collection[0]), "--model", str(file), "--store",
                                          str(tmp_path / "store")])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert (f"{stem}.onnx: a run is named after its model file, and {stem} is a registry model's name, so its "
                f"vectors would pass for that model's; rename the file (say, my-{stem}.onnx, with its .json) and run "
                "again") in " ".join(result.output.split())
        assert not (tmp_path / "store").exists()


def test_a_registry_named_run_without_the_record_is_not_given_that_model(registry_named: tuple[Path, Run, Run],
                                                                         tmp_path: Path) -> None:
    """A store extracted with musicnn-msd.onnx before the record existed. Before: the registry's musicnn-msd was
    loaded and failed the revision check ("re-extract the collection", which would need the file renamed)."""
    store_path, onnx_run, _ = registry_named
    with closing(FeatureStore(store_path, readonly=True)) as store:
        wav = _samples_of(Path(store.tracks(onnx_run)[0].path), tmp_path / "other.wav")
        record = store.model_source_path(onnx_run)
    with _set_aside(record):
        record.unlink()
        result = CliRunner().invoke(app, ["similar", str(wav), "--model", f"musicnn-msd@{onnx_run.id}", "--store",
                                          str(store_path)])
    message = " ".join(result.output.split())
    assert result.exit_code == 1 and "Traceback" not in message, message
    assert ("musicnn-msd was extracted with a model file (musicnn-msd.onnx) before mess recorded where such files "
            "are, and musicnn-msd is a registry model's name: rename the file (say, my-musicnn-msd.onnx, with its "
            ".json) and run `mess extract` with it, for a run of its own that can embed new files") in message


def test_no_random_init_twin_for_a_run_made_from_a_model_file(registry_named: tuple[Path, Run, Run]) -> None:
    """Before: the ONNX run's random-init control loaded the registry's musicnn-msd by the run's name, re-initialised
    that network and extracted it as the file's twin."""
    store_path, onnx_run, _ = registry_named
    with closing(FeatureStore(store_path)) as store, \
            pytest.raises(ControlError, match="musicnn-msd was extracted with a model file .*no random-init"):
        random_init_run(store, onnx_run)
    with closing(FeatureStore(store_path, readonly=True)) as store:
        assert len(store.runs()) == 2


def test_one_file_fed_two_ways_makes_two_runs(rendered_collection: list[Path], tmp_path: Path) -> None:
    """Before: a file whose graph takes any frame count, extracted with ``--preset discogs-effnet`` and then with
    ``--preset essentia-musicnn-msd`` (another front end and patching), joined one run (one revision: the file's hash):
    the second preset's vectors were skipped as "already embedded" and its record replaced the first's. Now a preset
    other than the file's own names itself in the revision; one that feeds the file the same way joins its run."""
    from test_onnx_backend import W_EMB, _graph, helper

    model = _graph(tmp_path / "flex.onnx", "melspectrogram", ["batch", "frames", 96],
                   {"axes": np.array([1], np.int64), "w_emb": W_EMB},
                   [("embeddings", "", ["batch", 32])],
                   [helper.make_node("ReduceMean", ["melspectrogram", "axes"], ["pooled"], keepdims=0),
                    helper.make_node("MatMul", ["pooled", "w_emb"], ["embeddings"])])
    write_json(model, "serving_default_melspectrogram", EFFNET_OUTPUTS[1:], "TensorflowPredictEffnetDiscogs")
    policy = WindowPolicy(window_seconds=10.0)
    pieces = rendered_collection[:2]
    with closing(FeatureStore(tmp_path / "store")) as store:
        for preset in ("discogs-effnet", "essentia-musicnn-msd", "discogs-effnet-artist"):
            summary = extract(store, pieces, OnnxModel(model, preset=preset), policy)
            assert not summary.failed
        own, other = sorted(store.runs(), key=lambda r: r.revision)
        assert len(store.runs()) == 2  # discogs-effnet-artist fed it as discogs-effnet did: the same run
        assert other.revision == f"{own.revision}+essentia-musicnn-msd" and "+" not in own.revision
        assert store.model_source(own)["preset"] == "discogs-effnet-artist"
        assert store.model_source(other)["preset"] == "essentia-musicnn-msd"
        first, second = (store.layer_matrix(run, "embeddings")[1] for run in (own, other))
        assert first.shape == second.shape == (2, 32) and not np.allclose(first, second, atol=1e-3)
        track = store.tracks(own)[0]
        copy = _samples_of(Path(track.path), tmp_path / "copy.wav")
        for run in (own, other):  # a query by a file is embedded with the run's own preset
            query = embed_query(store, copy, run)
            ids, matrix = store.layer_matrix(run, "embeddings")
            assert query.layers is not None
            np.testing.assert_allclose(query.layers[0], matrix[list(ids).index(track.id)], rtol=2e-3, atol=2e-3)
    write_json(model, "serving_default_melspectrogram", EFFNET_OUTPUTS[1:], "TensorflowPredictMusiCNN")
    with closing(FeatureStore(tmp_path / "store", readonly=True)) as store:  # the file's own preset is now the other
        with pytest.raises(StoreError, match=r"is now revision .*\+discogs-effnet-artist.*was its \.json changed"):
            embed_query(store, copy, own)


def test_a_model_file_given_by_a_link_is_loaded_again_by_the_link(outside: tuple[Path, int], tmp_path: Path,
                                                                   rendered_collection: list[Path]) -> None:
    """A model file given by a link (models/mine-link.onnx -> blobs/blob.onnx, its JSON beside the link, where mess
    reads it) extracted, but its record named the file linked to, whose folder has no JSON: `mess similar FILE` then
    failed with "no metadata for blob.onnx". The record keeps the path the model was read by."""
    (tmp_path / "blobs").mkdir()
    (tmp_path / "models").mkdir()
    blob = effnet_graph(tmp_path / "blobs" / "blob.onnx")
    link = tmp_path / "models" / "mine-link.onnx"
    link.symlink_to(blob)
    write_json(link, "serving_default_melspectrogram", EFFNET_OUTPUTS, "TensorflowPredictEffnetDiscogs")
    done = _cli("extract", str(rendered_collection[0]), "--model", "models/mine-link.onnx", "--preset",
                "discogs-effnet", "--store", str(tmp_path / "store"), "--window", "10", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with closing(FeatureStore(tmp_path / "store", readonly=True)) as store:
        run = store.run("mine-link")
        query = embed_query(store, outside[0], run)
        assert store.model_source(run)["path"] == str(link)
    assert query.track is None and query.layers is not None


def test_a_model_path_through_a_link_and_dotdot_is_recorded_as_the_system_reads_it(tmp_path: Path,
                                                                                  outside: tuple[Path, int]) -> None:
    """models/../mine.onnx, models a link to shelf/models: the system opens shelf/mine.onnx. A record with '..'
    folded away by name (tmp/mine.onnx, no such file) would name another file than the one extracted."""
    (tmp_path / "shelf" / "models").mkdir(parents=True)
    model = effnet_graph(tmp_path / "shelf" / "mine.onnx")
    write_json(model, "serving_default_melspectrogram", EFFNET_OUTPUTS, "TensorflowPredictEffnetDiscogs")
    (tmp_path / "models").symlink_to(tmp_path / "shelf" / "models")
    given = OnnxModel(tmp_path / "models" / ".." / "mine.onnx", preset="discogs-effnet")
    again = load_run_model(given.info.name, given.info.revision, given.source())
    assert again.info.revision == given.info.revision and Path(again.source()["path"]).samefile(model)
