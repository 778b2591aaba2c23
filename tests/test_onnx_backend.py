"""The ONNX backend on tiny EffNet- and VGGish-shaped graphs built here with ``onnx.helper``.

Each graph averages its input patch over frames and multiplies by a fixed random matrix,
so the expected vectors follow from the front end alone (computed by the reference in
``test_onnx_frontends``) and each test can tell a wrong front end, hop or batching apart.
"""

from __future__ import annotations

import json
import subprocess
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from conftest import mess_here
from mess.audio.decode import load_audio
from mess.models.essentia import EssentiaModelError, OnnxModel
from mess.models.essentia.fetch import file_revision
from mess.models.registry import ModelError, load_model, load_run_model
from mess.store import FeatureStore

onnx = pytest.importorskip("onnx", reason="tests build their graphs with onnx (test extra)")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from test_onnx_frontends import reference_musicnn, reference_vggish  # noqa: E402

RNG = np.random.default_rng(0)
W_EMB = RNG.normal(size=(96, 32)).astype(np.float32)
W_ACT = RNG.normal(size=(32, 5)).astype(np.float32)
W_VGG = RNG.normal(size=(64, 16)).astype(np.float32)


def _graph(path: Path, input_name: str, input_shape: list, weights: dict[str, np.ndarray],
           outputs: list[tuple[str, str, list]], nodes: list) -> Path:
    inits = [numpy_helper.from_array(w, name) for name, w in weights.items()]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, _, shape in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def effnet_graph(path: Path, batch: int | str = "batch", input_name: str = "melspectrogram") -> Path:
    """melspectrogram [batch, 128, 96] -> embeddings (mean over frames @ W), activations (sigmoid), frames."""
    nodes = [
        helper.make_node("ReduceMean", [input_name, "axes"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w_emb"], ["embeddings"]),
        helper.make_node("MatMul", ["embeddings", "w_act"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["activations"]),
        helper.make_node("MatMul", [input_name, "w_emb"], ["frames"]),
    ]
    weights = {"axes": np.array([1], np.int64), "w_emb": W_EMB, "w_act": W_ACT}
    outputs = [("activations", "", [batch, 5]), ("embeddings", "", [batch, 32]), ("frames", "", [batch, 128, 32])]
    return _graph(path, input_name, [batch, 128, 96], weights, outputs, nodes)


def vggish_graph(path: Path, shape: list | None = None) -> Path:
    """model/Placeholder [batch, 96, 64] -> model/vggish/embeddings (mean over frames @ W)."""
    nodes = [helper.make_node("ReduceMean", ["model/Placeholder", "axes"], ["pooled"], keepdims=0),
             helper.make_node("MatMul", ["pooled", "w"], ["model/vggish/embeddings"])]
    return _graph(path, "model/Placeholder", shape or ["batch", 96, 64], {"axes": np.array([1], np.int64), "w": W_VGG},
                  [("model/vggish/embeddings", "", ["batch", 16])], nodes)


def free_graph(path: Path, weights: np.ndarray = W_EMB, *, declared: bool = True) -> Path:
    """melspectrogram [batch, frames, bands] -> embeddings (mean over frames @ ``weights``), of free input shape;
    with ``declared=False`` neither the input nor the output declares a shape (ONNX Runtime lists it as [])."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["melspectrogram", "axes"], ["pooled"], keepdims=0),
         helper.make_node("MatMul", ["pooled", "w"], ["embeddings"])], "free",
        [helper.make_tensor_value_info("melspectrogram", TensorProto.FLOAT,
                                       ["batch", "frames", "bands"] if declared else None)],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT,
                                       ["batch", weights.shape[1]] if declared else None)],
        [numpy_helper.from_array(np.array([1], np.int64), "axes"), numpy_helper.from_array(weights, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def write_json(model: Path, input_name: str, outputs: list[dict], algorithm: str, **extra: object) -> None:
    model.with_suffix(".json").write_text(json.dumps({
        "name": model.stem, "schema": {"inputs": [{"name": input_name, "type": "float"}], "outputs": outputs},
        "inference": {"sample_rate": 16000, "algorithm": algorithm}, **extra}))


EFFNET_OUTPUTS = [{"name": "PartitionedCall:0", "output_purpose": "predictions", "description": "activations"},
                  {"name": "PartitionedCall:1", "output_purpose": "", "description": "embeddings"}]


@pytest.fixture()
def effnet(tmp_path: Path) -> Path:
    """discogs-effnet-bsdynamic-1.onnx shaped like Essentia's export, with TF names in its JSON."""
    path = effnet_graph(tmp_path / "discogs-effnet-bsdynamic-1.onnx")
    write_json(path, "serving_default_melspectrogram", EFFNET_OUTPUTS, "TensorflowPredictEffnetDiscogs")
    return path


@pytest.fixture()
def vggish(tmp_path: Path) -> Path:
    path = vggish_graph(tmp_path / "audioset-vggish-3.onnx")
    write_json(path, "model/Placeholder", [{"name": "model/vggish/embeddings", "description": "embeddings"}],
               "TensorflowPredictVGGish")
    return path


@pytest.fixture(scope="module")
def clips(rendered_collection: list[Path]) -> np.ndarray:
    """Two 5 s rendered clips at 16 kHz."""
    return np.stack([load_audio(p, 16000, max_seconds=5.0)[:80000] for p in rendered_collection[:2]])


def _expected_effnet(window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Activations and embeddings (= frame-output averages) from the reference front end, 128-frame patches every 62."""
    mel = reference_musicnn(window.astype(np.float64))
    pooled = np.array([mel[s : s + 128].mean(axis=0) for s in range(0, len(mel) - 128 + 1, 62)])
    return (1 / (1 + np.exp(-(pooled @ W_EMB @ W_ACT)))).mean(axis=0), (pooled @ W_EMB).mean(axis=0)


def assert_effnet_layers(layers: list[np.ndarray], windows: np.ndarray) -> None:
    """Each window's row of effnet_graph's three layers is the graph's arithmetic on its own front end."""
    for row, window in enumerate(windows):
        activations, embedding = _expected_effnet(window)
        np.testing.assert_allclose(layers[0][row], activations, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(layers[1][row], embedding, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(layers[2][row], embedding, rtol=1e-3, atol=1e-3)


def test_effnet_front_end_patching_and_layers(effnet: Path, clips: np.ndarray) -> None:
    model = OnnxModel(effnet)
    assert model.preset.name == "discogs-effnet"
    assert model.info.layer_names == ("activations", "embeddings", "frames")
    assert model.info.layer_dims == (5, 32, 32)
    assert model.preset.min_samples == 127 * 256 and model.info.sample_rate == 16000
    assert model.info.revision.startswith("sha256:")
    assert_effnet_layers(model.embed(clips), clips)


def test_vggish_front_end_and_96_frame_patches(vggish: Path, clips: np.ndarray) -> None:
    model = OnnxModel(vggish)
    assert (model.preset.name, model.info.layer_names, model.info.layer_dims) == ("vggish", ("embeddings",), (16,))
    assert "Apache 2.0" in model.info.licence
    ours = model.embed(clips)[0]
    for row, window in enumerate(clips):
        mel = reference_vggish(window.astype(np.float64))
        pooled = np.array([mel[s : s + 96].mean(axis=0) for s in range(0, len(mel) - 96 + 1, 96)])
        np.testing.assert_allclose(ours[row], (pooled @ W_VGG).mean(axis=0), rtol=1e-3, atol=1e-3)


def test_batching_does_not_change_vectors(effnet: Path, tmp_path: Path, clips: np.ndarray) -> None:
    """Dynamic batch in chunks, a fixed batch of 64 (zero-padded) and one window at a time agree."""
    fixed = effnet_graph(tmp_path / "discogs_artist_embeddings-effnet-bs64-1.onnx", batch=64)
    write_json(fixed, "serving_default_melspectrogram", EFFNET_OUTPUTS, "TensorflowPredictEffnetDiscogs")
    dynamic, padded = OnnxModel(effnet), OnnxModel(fixed)
    assert (dynamic.batch, padded.batch, padded.preset.name) == (0, 64, "discogs-effnet-artist")
    together = dynamic.embed(clips)
    alone = [dynamic.embed(w[None]) for w in clips]
    for i, layer in enumerate(padded.embed(clips)):
        np.testing.assert_allclose(layer, together[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.concatenate([a[i] for a in alone]), together[i], rtol=1e-5, atol=1e-6)


def test_preset_flag_overrides_detection(tmp_path: Path, clips: np.ndarray) -> None:
    path = effnet_graph(tmp_path / "my-model.onnx")
    write_json(path, "melspectrogram", [], algorithm="")
    with pytest.raises(EssentiaModelError, match="pass --preset"):
        OnnxModel(path)
    assert load_model(str(path), preset="discogs-effnet").info.layer_dims == (5, 32, 32)
    with pytest.raises(EssentiaModelError, match="preset vggish feeds \\[batch, 96 frames, 64 bands\\]"):
        OnnxModel(path, preset="vggish")
    with pytest.raises(EssentiaModelError, match="unknown preset 'effnet'; choose one of discogs-effnet, "):
        OnnxModel(path, preset="effnet")
    with pytest.raises(ModelError, match="--preset applies to .onnx model files, not to 'dsp'"):
        load_model("dsp", preset="vggish")


def test_input_found_under_tf2onnx_names(tmp_path: Path, clips: np.ndarray) -> None:
    path = effnet_graph(tmp_path / "discogs-effnet-y.onnx", input_name="melspectrogram:0")
    write_json(path, "serving_default_melspectrogram", EFFNET_OUTPUTS, "TensorflowPredictEffnetDiscogs")
    model = OnnxModel(path)
    assert model.input_name == "melspectrogram:0"
    np.testing.assert_allclose(model.embed(clips[:1])[1][0], _expected_effnet(clips[0])[1], rtol=1e-3, atol=1e-3)


def test_wrong_input_name(tmp_path: Path) -> None:
    path = effnet_graph(tmp_path / "discogs-effnet-x.onnx", input_name="spectrogram")
    write_json(path, "serving_default_melspectrogram", EFFNET_OUTPUTS, "TensorflowPredictEffnetDiscogs")
    with pytest.raises(EssentiaModelError, match="input 'serving_default_melspectrogram' is not an input of the "
                                                 "graph \\(it has 'spectrogram'\\)"):
        OnnxModel(path)


def test_wrong_rank(tmp_path: Path) -> None:
    path = vggish_graph(tmp_path / "audioset-vggish-3.onnx", shape=["batch", 1, 96, 64])
    write_json(path, "model/Placeholder", [], "TensorflowPredictVGGish")
    with pytest.raises(EssentiaModelError, match="has shape \\['batch', 1, 96, 64\\]"):
        OnnxModel(path)


@pytest.mark.parametrize(("inputs", "said"), [
    ([("melspectrogram", TensorProto.DOUBLE)], "input 'melspectrogram' takes tensor\\(double\\); preset "
                                               "discogs-effnet feeds tensor\\(float\\)"),
    ([("melspectrogram", TensorProto.FLOAT), ("other", TensorProto.FLOAT)],
     "the graph needs inputs besides 'melspectrogram' \\('other'\\)"),
])
def test_inputs_mess_cannot_feed_are_refused_at_load(tmp_path: Path, inputs: list, said: str) -> None:
    """A graph taking doubles ended `mess extract` in ONNX Runtime's InvalidArgument traceback; one needing a second
    input in "Required inputs (['other']) are missing", naming no file."""
    path = tmp_path / "odd.onnx"
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["melspectrogram", "axes"], ["pooled"], keepdims=0)], "odd",
        [helper.make_tensor_value_info(name, kind, ["batch", 128, 96]) for name, kind in inputs],
        [helper.make_tensor_value_info("pooled", inputs[0][1], ["batch", 96])],
        [numpy_helper.from_array(np.array([1], np.int64), "axes")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    write_json(path, "melspectrogram", [], "TensorflowPredictEffnetDiscogs")
    with pytest.raises(EssentiaModelError, match=f"^odd.onnx: {said}"):
        OnnxModel(path, preset="discogs-effnet")


@pytest.mark.parametrize("batch", ["batch", 4])
def test_an_output_not_one_row_per_patch_is_refused_at_load(tmp_path: Path, batch: int | str) -> None:
    """An output of one row whatever the batch (here a constant beside the embeddings) loaded, since the load ran one
    patch; then every file failed with "cannot reshape array of size 32 into shape (2,3,newaxis)"."""
    path = tmp_path / "odd.onnx"
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["melspectrogram", "axes"], ["pooled"], keepdims=0),
         helper.make_node("Identity", ["bias"], ["constant"])], "odd",
        [helper.make_tensor_value_info("melspectrogram", TensorProto.FLOAT, [batch, 128, 96])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [batch, 96]),
         helper.make_tensor_value_info("constant", TensorProto.FLOAT, [1, 32])],
        [numpy_helper.from_array(np.array([1], np.int64), "axes"), numpy_helper.from_array(W_EMB[:1], "bias")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    write_json(path, "melspectrogram", [], "TensorflowPredictEffnetDiscogs")
    with pytest.raises(EssentiaModelError, match=f"^odd.onnx: output 'constant' has 1 rows for a batch of "
                                                 f"{2 if batch == 'batch' else 4} patches; every output must have one "
                                                 "row per patch"):
        OnnxModel(path, preset="discogs-effnet")


def test_a_graph_of_free_shape_that_fails_on_the_presets_patches_is_one_line(tmp_path: Path,
                                                                            rendered_collection: list[Path]) -> None:
    """An input of free shape passes the shape check; fed another preset's patches (vggish's 64 bands to a graph
    that multiplies by 96 rows), ONNX Runtime's Fail ended `mess extract` in a traceback, after an error log line."""
    path = tmp_path / "discogs-effnet-free.onnx"
    free_graph(path)
    write_json(path, "melspectrogram", [], "TensorflowPredictEffnetDiscogs")
    assert OnnxModel(path).info.layer_dims == (32,)  # its own preset's 96 bands
    done = _cli("extract", str(rendered_collection[0]), "--model", str(path), "--preset", "vggish", "--store",
                str(tmp_path / "s"), cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: discogs-effnet-free.onnx fails on preset vggish's patches of 96 frames x 64 "
                                  "bands: [ONNXRuntimeError]"), done.stderr


def test_weights_in_an_external_data_file_are_part_of_the_revision(tmp_path: Path, clips: np.ndarray) -> None:
    """A graph keeping its weights in an external data file (as ONNX files over 2 GB must) had the revision of the
    graph file alone: other weights written into the data file made other vectors under the stored run's revision,
    so `mess extract` skipped every file as unchanged and queries compared the new vectors with the old."""
    plain = effnet_graph(tmp_path / "plain.onnx")
    path = tmp_path / "discogs-effnet-ext.onnx"
    onnx.save(onnx.load(str(plain)), str(path), save_as_external_data=True, location="weights.data")
    write_json(path, "serving_default_melspectrogram", EFFNET_OUTPUTS, "TensorflowPredictEffnetDiscogs")
    before = OnnxModel(path)
    assert before.info.revision != file_revision(plain)
    data = tmp_path / "weights.data"
    assert data.read_bytes() == W_EMB.tobytes()  # w_emb alone is large enough to go there
    data.write_bytes((-W_EMB).tobytes())  # other weights, the graph file unchanged
    after = OnnxModel(path)
    assert not np.allclose(before.embed(clips[:1])[1], after.embed(clips[:1])[1])
    assert after.info.revision != before.info.revision
    with pytest.raises(ModelError, match="has changed since the collection was extracted with it"):
        load_run_model(before.info.name, before.info.revision, before.source())


def test_an_output_of_no_values_is_refused_at_load(tmp_path: Path) -> None:
    """An output of width 0 beside the embeddings loaded; extraction then stopped with "cannot reshape array of size
    0 into shape (0); the catalog references rows the file lacks: run `mess check --repair`", a store not damaged."""
    path = tmp_path / "odd.onnx"
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["melspectrogram", "axes"], ["pooled"], keepdims=0),
         helper.make_node("Slice", ["pooled", "zero", "zero", "axes"], ["empty"])], "odd",
        [helper.make_tensor_value_info("melspectrogram", TensorProto.FLOAT, ["batch", 128, 96])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 96]),
         helper.make_tensor_value_info("empty", TensorProto.FLOAT, ["batch", 0])],
        [numpy_helper.from_array(np.array([1], np.int64), "axes"), numpy_helper.from_array(np.array([0], np.int64),
                                                                                           "zero")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    write_json(path, "melspectrogram", [], "TensorflowPredictEffnetDiscogs")
    with pytest.raises(EssentiaModelError, match="^odd.onnx: output 'empty' has no values \\(shape \\[2, 0\\]\\): "
                                                 "it cannot be a layer$"):
        OnnxModel(path, preset="discogs-effnet")


def test_missing_json_and_corrupt_file(effnet: Path) -> None:
    effnet.with_suffix(".json").rename(effnet.with_name("elsewhere.json"))
    with pytest.raises(EssentiaModelError, match="no metadata for discogs-effnet-bsdynamic-1.onnx: expected"):
        OnnxModel(effnet)
    effnet.with_name("elsewhere.json").rename(effnet.with_suffix(".json"))
    effnet.write_bytes(effnet.read_bytes()[: len(effnet.read_bytes()) // 3])
    with pytest.raises(EssentiaModelError, match="is not a readable ONNX graph"):
        OnnxModel(effnet)


@pytest.mark.parametrize(("inference", "said"), [
    ({"sample_rate": None}, "inference.sample_rate is null, not a whole number of Hz"),
    ({"sample_rate": "16k"}, 'inference.sample_rate is "16k", not a whole number of Hz'),
    (["TensorflowPredictEffnetDiscogs"], "its inference is not an object"),
])
def test_malformed_inference_in_the_json_is_one_line(effnet: Path, inference: object, said: str) -> None:
    """An inference field that is a list, or a sample rate of null, ended in a traceback (AttributeError, TypeError);
    "16k" in "invalid literal for int()", naming no file."""
    data = json.loads(effnet.with_suffix(".json").read_text())
    effnet.with_suffix(".json").write_text(json.dumps({**data, "inference": inference}))
    with pytest.raises(EssentiaModelError, match=f"discogs-effnet-bsdynamic-1.json is not Essentia model metadata "
                                                 f"\\({said}\\)"):
        load_model(str(effnet))


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``mess ARGS`` run in ``cwd`` in this process: what the command says and writes is the point, not a process."""
    return mess_here(*args, cwd=cwd)


def test_extract_end_to_end_prints_licence(effnet: Path, rendered_collection: list[Path], tmp_path: Path) -> None:
    """`mess extract DIR --model FILE.onnx --preset discogs-effnet` fills a store; the licence is printed."""
    music = tmp_path / "music"
    music.mkdir()
    for p in rendered_collection[:2]:
        (music / p.name).symlink_to(p)
    done = _cli("extract", str(music), "--model", str(effnet), "--preset", "discogs-effnet", "--store",
                str(tmp_path / "store"), "--window", "10", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "licence: discogs-effnet-bsdynamic-1: CC BY-NC-SA 4.0" in " ".join(done.stderr.split())
    assert "2 embedded" in done.stderr
    with closing(FeatureStore(tmp_path / "store", readonly=True)) as store:
        run = store.run("discogs-effnet-bsdynamic-1")
        assert run.layer_names == ("activations", "embeddings", "frames") and len(store.tracks(run)) == 2


def test_extract_bad_model_is_one_line(tmp_path: Path, rendered_collection: list[Path]) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a graph")
    write_json(broken, "melspectrogram", [], "TensorflowPredictEffnetDiscogs")
    done = _cli("extract", str(rendered_collection[0]), "--model", str(broken), "--store", str(tmp_path / "s"),
                cwd=tmp_path)
    assert done.returncode == 1
    assert "broken.onnx is not a readable ONNX graph" in done.stderr and "Traceback" not in done.stderr
    ray = _cli("extract", str(rendered_collection[0]), "--model", str(broken), "--preset", "vggish", "--engine", "ray",
               "--store", str(tmp_path / "s"), cwd=tmp_path)
    assert ray.returncode == 1 and "--preset is not passed on to Ray workers" in " ".join(ray.stderr.split())
