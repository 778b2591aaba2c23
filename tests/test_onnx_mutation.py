"""The ONNX backend's loading, feeding and naming, in-process on tiny graphs, for mutation testing.

Expected vectors come from the graphs' own arithmetic (a mean over frames times a fixed matrix) applied to the
reference front ends of ``test_onnx_frontends``, or from ONNX Runtime run on the graph directly; names and refusals
from the fixture's own JSON and graph.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from mess.models.checkpoints import CHECKPOINTS
from mess.models.essentia import EssentiaModelError, OnnxModel
from mess.models.essentia.fetch import external_data, fetch, file_revision
from mess.models.essentia.frontends import patches
from mess.models.essentia.metadata import ModelMetadata, TensorSpec, graph_name, layer_name, read_metadata
from mess.models.essentia.presets import PRESETS, detect_preset, get_preset
from mess.models.musicnn.model import log_mel

onnx = pytest.importorskip("onnx", reason="tests build their graphs with onnx (test extra)")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from test_onnx_backend import (  # noqa: E402
    EFFNET_OUTPUTS,
    W_EMB,
    _expected_effnet,
    assert_effnet_layers,
    effnet_graph,
    free_graph,
    write_json,
)
from test_onnx_fetch import Routes, _hub_file, _hub_listing, server  # noqa: E402, F401  (the fixture)
from test_onnx_fetch import _cli as fetch_cli  # noqa: E402
from test_onnx_frontends import reference_musicnn  # noqa: E402

SR = 16000


def _tone(seconds: float, hz: float = 440.0) -> np.ndarray:
    """A 16 kHz sine with a little noise: [1, samples] float32."""
    t = np.arange(int(seconds * SR)) / SR
    noise = np.random.default_rng(1).normal(scale=0.01, size=t.size)
    return (0.5 * np.sin(2 * np.pi * hz * t) + noise).astype(np.float32)[None]


def _effnet(folder: Path, name: str = "discogs-effnet-bsdynamic-1.onnx", **graph: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = effnet_graph(folder / name, **graph)  # type: ignore[arg-type]
    write_json(path, "serving_default_melspectrogram", EFFNET_OUTPUTS, "TensorflowPredictEffnetDiscogs")
    return path


def test_a_model_in_a_folder_named_in_other_bytes_than_utf8_loads(tmp_path: Path) -> None:
    """A model in a folder named in Latin-1 ('café' as b'caf\\xe9') was refused as 'not a readable ONNX graph:
    __init__(): incompatible constructor arguments': ONNX Runtime takes a path only as UTF-8 text."""
    path = _effnet(tmp_path / os.fsdecode(b"caf\xe9 models"))
    model = OnnxModel(path)
    clip = _tone(3.0)
    activations, embedding = _expected_effnet(clip[0])
    layers = model.embed(clip)
    np.testing.assert_allclose(layers[0][0], activations, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(layers[1][0], embedding, rtol=1e-3, atol=1e-3)
    assert model.source()["path"] == str(path)


def test_external_data_beside_a_graph_in_a_folder_named_in_other_bytes_is_refused(
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Given as bytes, ONNX Runtime looks for a graph's external data in the working folder: a `weights.data` there
    (other weights) must not be read in place of the one beside the graph."""
    ascii_folder = tmp_path / "models"
    plain = _effnet(ascii_folder, "plain.onnx")
    onnx.save(onnx.load(str(plain)), str(ascii_folder / "discogs-effnet-ext.onnx"), save_as_external_data=True,
              location="weights.data")
    write_json(ascii_folder / "discogs-effnet-ext.onnx", "serving_default_melspectrogram", EFFNET_OUTPUTS,
               "TensorflowPredictEffnetDiscogs")
    folder = ascii_folder.rename(tmp_path / os.fsdecode(b"caf\xe9"))
    (tmp_path / "weights.data").write_bytes(bytes(len((folder / "weights.data").read_bytes())))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EssentiaModelError, match="^discogs-effnet-ext.onnx keeps weights in other files, which ONNX "
                                                 "Runtime cannot open from a folder not named in UTF-8"):
        OnnxModel(folder / "discogs-effnet-ext.onnx")


@pytest.mark.parametrize(("batch", "seconds", "clips"), [(4, 5.0, 2), ("batch", 20.0, 2)], ids=["fixed-4", "dynamic"])
def test_patches_past_one_run_are_fed_in_chunks(tmp_path: Path, batch: int | str, seconds: float, clips: int) -> None:
    """Six patches through a graph of batch 4 (a full run and a zero-padded one); 38 through a dynamic graph (more
    than the 32 of one run): every patch's vector is the graph's arithmetic on its own frames."""
    name = "discogs_artist_embeddings-effnet-bs4-1.onnx" if batch == 4 else "discogs-effnet-bsdynamic-1.onnx"
    model = OnnxModel(_effnet(tmp_path, name, batch=batch))
    assert model.batch == (4 if batch == 4 else 0)
    windows = np.concatenate([_tone(seconds, hz) for hz in (220.0, 1500.0)[:clips]])
    assert_effnet_layers(model.embed(windows), windows)


def test_a_window_shorter_than_a_patch_is_tiled_to_one(tmp_path: Path) -> None:
    """A 1 s window is repeated up to the shortest input of one 128-frame patch, (128 - 1) x 256 samples."""
    model = OnnxModel(_effnet(tmp_path))
    window = _tone(1.0)
    tiled = np.tile(window[0], 3)[: 127 * 256]
    activations, embedding = _expected_effnet(tiled)
    layers = model.embed(window)
    np.testing.assert_allclose(layers[0][0], activations, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(layers[1][0], embedding, rtol=1e-3, atol=1e-3)


def _sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def test_the_revision_names_the_preset_only_where_it_feeds_otherwise(tmp_path: Path) -> None:
    """The artist preset feeds as discogs-effnet does: the file's revision alone. A file whose name and metadata
    imply no preset gets the preset it was fed by in its revision."""
    path = _effnet(tmp_path)
    assert OnnxModel(path).info.revision == _sha(path)
    assert OnnxModel(path, preset="discogs-effnet-artist").info.revision == _sha(path)
    mine = effnet_graph(tmp_path / "mine.onnx")
    write_json(mine, "melspectrogram", [], algorithm="")
    model = OnnxModel(mine, preset="discogs-effnet-artist")
    assert model.info.revision == _sha(mine) + "+discogs-effnet-artist"
    assert model.info.name == "mine" and model.info.sample_rate == 16000
    assert model.source() == {"kind": "onnx", "path": str(tmp_path / "mine.onnx"), "preset": "discogs-effnet-artist",
                              "revision": _sha(mine) + "+discogs-effnet-artist"}


def test_devices_threads_and_providers(tmp_path: Path) -> None:
    path = _effnet(tmp_path)
    model = OnnxModel(path, threads=1)
    assert model.providers == ["CPUExecutionProvider"] and model.device == "cpu" and model.threads == 1
    assert model.session.get_session_options().intra_op_num_threads == 1
    assert OnnxModel(path).session.get_session_options().intra_op_num_threads == 0  # ONNX Runtime's choice
    with pytest.raises(EssentiaModelError, match=f"^no such model file: {tmp_path / 'gone.onnx'}$"):
        OnnxModel(tmp_path / "gone.onnx")
    (tmp_path / "folder.onnx").mkdir()
    (tmp_path / "folder.json").write_text(path.with_suffix(".json").read_text())
    with pytest.raises(EssentiaModelError, match=f"^no such model file: {tmp_path / 'folder.onnx'}$"):
        OnnxModel(tmp_path / "folder.onnx")
    with pytest.raises(EssentiaModelError, match="^unknown device 'tpu' for ONNX Runtime; use cpu or cuda$"):
        OnnxModel(path, device="tpu")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(EssentiaModelError, match="^--device cuda asked for, but this onnxruntime has no "
                                                     "CUDAExecutionProvider"):
            OnnxModel(path, device="cuda")


def test_layers_are_named_by_the_metadata_where_it_describes_them(tmp_path: Path) -> None:
    """Outputs found under the JSON's TF names (`serving_default_` prefix, `:0` suffix) take its description, else
    its purpose; the others keep their tensor names."""
    path = effnet_graph(tmp_path / "discogs-effnet-named.onnx")
    write_json(path, "melspectrogram", [{"name": "serving_default_activations", "output_purpose": "predictions"},
                                        {"name": "embeddings:0", "description": "Release similarity"}],
               "TensorflowPredictEffnetDiscogs")
    assert OnnxModel(path).info.layer_names == ("predictions", "release_similarity", "frames")
    write_json(path, "melspectrogram", [{"name": "activations", "description": "embeddings"},
                                        {"name": "frames"}], "TensorflowPredictEffnetDiscogs")
    assert OnnxModel(path).info.layer_names == ("embeddings", "embeddings_1", "frames")


def test_every_layer_name_is_its_own(tmp_path: Path) -> None:
    """A second output described like the first was renamed with its position, which could be a third's name."""
    path = effnet_graph(tmp_path / "discogs-effnet-named.onnx")
    write_json(path, "melspectrogram", [{"name": "activations", "description": "embeddings_2"},
                                        {"name": "frames", "description": "embeddings"}],
               "TensorflowPredictEffnetDiscogs")
    names = OnnxModel(path).info.layer_names
    assert names == ("embeddings_2", "embeddings", "embeddings_3"), names  # its position taken: the next number


def test_the_metadata_s_rate_and_licence(tmp_path: Path) -> None:
    path = effnet_graph(tmp_path / "discogs-effnet-x.onnx")
    write_json(path, "melspectrogram", [], "TensorflowPredictEffnetDiscogs", license="MIT (mine)")
    assert OnnxModel(path).info.licence == "MIT (mine)"
    write_json(path, "melspectrogram", [], "TensorflowPredictEffnetDiscogs")
    assert OnnxModel(path).info.licence.startswith("CC BY-NC-SA 4.0")
    data = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**data, "inference": {"sample_rate": 44100}}))
    with pytest.raises(EssentiaModelError, match="^discogs-effnet-x.json says 44100 Hz; preset discogs-effnet feeds "
                                                 "16000 Hz$"):
        OnnxModel(path)


def test_a_graph_that_fails_on_the_preset_s_patches_is_one_line(tmp_path: Path) -> None:
    """A graph of free input shape fed vggish's 64 bands where it multiplies by 96 rows."""
    path = tmp_path / "free.onnx"
    free_graph(path)
    write_json(path, "melspectrogram", [], "")
    with pytest.raises(EssentiaModelError, match="^free.onnx fails on preset vggish's patches of 96 frames x 64 bands: "
                                                 "\\[ONNXRuntimeError\\]") as caught:
        OnnxModel(path, preset="vggish")
    assert "\n" not in str(caught.value)
    assert OnnxModel(path, preset="discogs-effnet").info.layer_dims == (32,)


@pytest.mark.parametrize(("stem", "algorithm", "preset"), [
    ("discogs-effnet-bsdynamic-1", "", "discogs-effnet"),
    ("discogs_artist_embeddings-effnet-bs64-1", "TensorflowPredictEffnetDiscogs", "discogs-effnet-artist"),
    ("audioset-vggish-3", "TensorflowPredictEffnetDiscogs", "vggish"),
    ("msd-musicnn-1", "", "essentia-musicnn-msd"),
    ("mine", "TensorflowPredictVGGish", "vggish"),
    ("mine", "TensorflowPredictMusiCNN", "essentia-musicnn-msd"),
    ("mine", "TensorflowPredictEffnetDiscogs", "discogs-effnet"),
])
def test_the_preset_is_told_by_the_file_name_first_then_the_algorithm(stem: str, algorithm: str, preset: str) -> None:
    metadata = ModelMetadata(Path(f"{stem}.json"), stem, (TensorSpec("x"),), (), 16000, algorithm, "")
    assert detect_preset(stem, metadata).name == preset


@pytest.mark.parametrize(("algorithm", "said"), [("TensorflowPredict2D", "'TensorflowPredict2D'"), ("", "'missing'")])
def test_a_preset_not_told_asks_for_one(algorithm: str, said: str) -> None:
    metadata = ModelMetadata(Path("mine.json"), "mine", (TensorSpec("x"),), (), 16000, algorithm, "")
    said = f"^cannot tell which preset mine needs \\(metadata algorithm {said}\\); pass --preset, one of "
    with pytest.raises(EssentiaModelError, match=f"{said}discogs-effnet, discogs-effnet-artist, vggish, "
                                                 "essentia-musicnn-msd$"):
        detect_preset("mine", metadata)


def test_presets_feed_as_essentia_does() -> None:
    """Patch sizes and hops from Essentia's TensorflowPredict* defaults; the shortest input of one patch follows."""
    effnet, artist, vggish, msd = (get_preset(n) for n in ("discogs-effnet", "discogs-effnet-artist", "vggish",
                                                           "essentia-musicnn-msd"))
    assert (effnet.bands, effnet.frame_hop, effnet.patch_frames, effnet.patch_hop) == (96, 256, 128, 62)
    assert (vggish.bands, vggish.frame_hop, vggish.patch_frames, vggish.patch_hop) == (64, 160, 96, 96)
    assert (msd.bands, msd.frame_hop, msd.patch_frames, msd.patch_hop) == (96, 256, 187, 187)
    assert (effnet.min_samples, vggish.min_samples, msd.min_samples) == (127 * 256, 95 * 160, 186 * 256)
    assert effnet.feed == artist.feed and effnet.feed != vggish.feed and effnet.feed != msd.feed
    with pytest.raises(EssentiaModelError, match="^unknown preset 'effnet'; choose one of discogs-effnet, "
                                                 "discogs-effnet-artist, vggish, essentia-musicnn-msd$"):
        get_preset("effnet")
    assert [f.name for f in effnet.files] == ["discogs-effnet-bsdynamic-1.onnx", "discogs-effnet-bsdynamic-1.json"]
    window = _tone(1.0)
    np.testing.assert_array_equal(msd.front_end(window), log_mel(window))


def _metadata(tmp_path: Path, data: object) -> ModelMetadata:
    (tmp_path / "m.json").write_text(json.dumps(data))
    return read_metadata(tmp_path / "m.onnx")


def test_the_metadata_read_as_written(tmp_path: Path) -> None:
    meta = _metadata(tmp_path, {
        "name": "Mine", "licence": {"spdx": "MIT"},
        "schema": {"inputs": [{"name": "serving_default_x", "shape": [128, 96]}],
                   "outputs": [{"name": "y:0", "shape": [1, 5], "description": None, "output_purpose": "predictions"}]},
        "inference": {"sample_rate": 16000.0, "algorithm": "TensorflowPredictVGGish"}})
    assert meta.path == tmp_path / "m.json" and meta.name == "Mine"
    assert meta.inputs == (TensorSpec("serving_default_x", (128, 96)),)
    assert meta.outputs == (TensorSpec("y:0", (1, 5), "", "predictions"),)
    assert (meta.sample_rate, meta.algorithm, meta.licence) == (16000, "TensorflowPredictVGGish", '{"spdx": "MIT"}')
    assert isinstance(meta.sample_rate, int)
    bare = _metadata(tmp_path, {"schema": {"inputs": [{"name": "x"}]}, "license": "GPL"})
    assert (bare.name, bare.outputs, bare.sample_rate, bare.algorithm, bare.licence) == ("m", (), 16000, "", "GPL")
    assert (graph_name("serving_default_x:0"), graph_name("a:01"), graph_name("x_serving_default_y")) == (
        "x", "a:01", "x_serving_default_y")
    assert (layer_name("Model/Dense_1/BiasAdd:0"), layer_name("--"), layer_name("Été")) == (
        "model_dense_1_biasadd_0", "output", "t")


@pytest.mark.parametrize(("data", "said"), [
    ({"schema": {"inputs": []}}, "lists no inputs in schema.inputs$"),
    ({"schema": {}}, "is not Essentia model metadata \\(needs schema.inputs\\): KeyError\\('inputs'\\)$"),
    ({"schema": {"inputs": [{"name": "x"}]}, "inference": {"sample_rate": True}},
     "is not Essentia model metadata \\(inference.sample_rate is true, not a whole number of Hz\\)$"),
    ({"schema": {"inputs": [{"name": "x"}]}, "inference": {"sample_rate": 16000.5}},
     "is not Essentia model metadata \\(inference.sample_rate is 16000.5, not a whole number of Hz\\)$"),
])
def test_metadata_that_cannot_be_used_is_one_line(tmp_path: Path, data: object, said: str) -> None:
    with pytest.raises(EssentiaModelError, match=f"^{tmp_path / 'm.json'} {said}"):
        _metadata(tmp_path, data)


def test_patches_of_exactly_one_and_of_too_few_frames() -> None:
    """Frames enough for one patch and no more make one patch; one frame fewer is refused."""
    features = np.random.default_rng(2).normal(size=(2, 128, 96))
    out = patches(features, 128, 62)
    assert out.shape == (2, 1, 128, 96)
    np.testing.assert_array_equal(out[:, 0], features)
    more = patches(np.arange(2 * 300 * 3.0).reshape(2, 300, 3), 128, 62)
    assert more.shape == (2, 3, 128, 3)
    np.testing.assert_array_equal(more[1, 2], np.arange(2 * 300 * 3.0).reshape(2, 300, 3)[1, 124:252])
    with pytest.raises(ValueError, match="^127 frames are fewer than one 128-frame patch$"):
        patches(features[:, :127], 128, 62)


def test_external_data_of_constants_and_subgraphs_is_part_of_the_revision(tmp_path: Path) -> None:
    """Tensors kept outside the graph file as a Constant node's value, and inside an If node's branch, each in a data
    file of its own: changing either changes the revision."""
    big = np.arange(4096, dtype=np.float32)
    branch = helper.make_graph([helper.make_node("Constant", [], ["inner"], value=numpy_helper.from_array(big * 2,
                                                                                                        "v2"))],
                               "then", [], [helper.make_tensor_value_info("inner", TensorProto.FLOAT, [4096])])
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["outer"], value=numpy_helper.from_array(big, "v1")),
         helper.make_node("If", ["cond"], ["picked"], then_branch=branch, else_branch=branch),
         helper.make_node("Add", ["outer", "picked"], ["y"])], "consts",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4096])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "consts.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0,
              convert_attribute=True)
    data = sorted(p for p in tmp_path.iterdir() if p != path)
    assert [f.name for f in data] == ["v1", "v2"]  # named after the tensors (both branches hold v2)
    assert external_data(path) == data
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(sess.run(None, {"cond": np.array(True)})[0], big * 3)
    seen = {file_revision(path)}
    for f in data:
        f.write_bytes(f.read_bytes()[::-1])
        seen.add(file_revision(path))
    assert len(seen) == 3
    assert file_revision(path).startswith("sha256:") and len(file_revision(path)) == 7 + 16
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a graph")
    assert external_data(junk) == []
    assert file_revision(junk) == "sha256:" + hashlib.sha256(b"not a graph").hexdigest()[:16]


@pytest.mark.parametrize(("axes", "keep", "rank"), [([1, 2], 0, 1), ([1], 1, 3)], ids=["rank-1", "rank-3-kept"])
def test_an_output_of_one_value_per_patch_is_refused_and_one_of_frames_averaged(tmp_path: Path, axes: list[int],
                                                                                keep: int, rank: int) -> None:
    """[batch] (one number per patch) cannot be a layer; [batch, 1, 96] (ReduceMean keeping its axis) is one of
    frames, averaged over its one step: the mean band energy of each patch."""
    path = tmp_path / "odd.onnx"
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["melspectrogram", "axes"], ["pooled"], keepdims=keep)], "odd",
        [helper.make_tensor_value_info("melspectrogram", TensorProto.FLOAT, ["batch", 128, 96])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch"] + [None] * (rank - 1))],
        [numpy_helper.from_array(np.array(axes, np.int64), "axes")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    write_json(path, "melspectrogram", [], "TensorflowPredictEffnetDiscogs")
    if rank == 1:
        with pytest.raises(EssentiaModelError, match="^odd.onnx: output 'pooled' of rank 1 cannot be a layer "
                                                     "\\(expected \\[batch, dim\\] or \\[batch, time, dim\\]\\)$"):
            OnnxModel(path, preset="discogs-effnet")
        return
    model = OnnxModel(path, preset="discogs-effnet")
    assert model.info.layer_dims == (96,)
    mel = reference_musicnn(_tone(5.0)[0].astype(np.float64))
    expected = np.mean([mel[s : s + 128].mean(axis=0) for s in range(0, len(mel) - 128 + 1, 62)], axis=0)
    np.testing.assert_allclose(model.embed(_tone(5.0))[0][0], expected, rtol=1e-3, atol=1e-3)


def test_onnx_runtime_s_own_log_stays_quiet(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A graph failing on the preset's patches: the one-line error is all; ONNX Runtime's log printed its own error
    line on the process's stderr before it."""
    path = tmp_path / "free.onnx"
    free_graph(path)
    write_json(path, "melspectrogram", [], "")
    capfd.readouterr()
    with pytest.raises(EssentiaModelError, match="fails on preset vggish"):
        OnnxModel(path, preset="vggish")
    assert capfd.readouterr().err == ""


def test_a_model_named_from_the_home_folder_as_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--model ~/models/x.onnx` quoted (the shell left the tilde): the home folder's file, recorded absolute."""
    path = _effnet(tmp_path / "models")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path / "models")
    model = OnnxModel("~/models/discogs-effnet-bsdynamic-1.onnx")  # type: ignore[arg-type]
    assert model.source()["path"] == str(path) and model.info.name == "discogs-effnet-bsdynamic-1"
    relative = OnnxModel("discogs-effnet-bsdynamic-1.onnx")  # type: ignore[arg-type]
    assert relative.source()["path"] == str(path)


@pytest.mark.parametrize(("output", "said"), [
    ("constant", "output 'odd' has 1 rows for a batch of 2 patches; every output must have one row per patch"),
    ("empty", "output 'odd' has no values \\(shape \\[2, 128, 0\\]\\): it cannot be a layer"),
])
def test_an_output_of_frames_not_one_row_per_patch_or_of_no_values_is_refused(tmp_path: Path, output: str,
                                                                             said: str) -> None:
    """As for [batch, dim] outputs: a [1, time, dim] constant beside the embeddings, a [batch, time, 0] slice."""
    path = tmp_path / "odd.onnx"
    odd = (helper.make_node("Identity", ["bias"], ["odd"]) if output == "constant" else
           helper.make_node("Slice", ["frames", "zero", "zero", "two"], ["odd"]))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["melspectrogram", "w"], ["frames"]), odd], "odd",
        [helper.make_tensor_value_info("melspectrogram", TensorProto.FLOAT, ["batch", 128, 96])],
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["batch", 128, 32]),
         helper.make_tensor_value_info("odd", TensorProto.FLOAT, [None, None, None])],
        [numpy_helper.from_array(W_EMB, "w"), numpy_helper.from_array(np.ones((1, 4, 32), np.float32), "bias"),
         numpy_helper.from_array(np.array([0], np.int64), "zero"), numpy_helper.from_array(np.array([2], np.int64),
                                                                                           "two")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    write_json(path, "melspectrogram", [], "TensorflowPredictEffnetDiscogs")
    with pytest.raises(EssentiaModelError, match=f"^odd.onnx: {said}$"):
        OnnxModel(path, preset="discogs-effnet")


def test_a_graph_whose_input_declares_no_shape_is_fed_the_preset_s_patches(tmp_path: Path) -> None:
    """An input of undeclared rank (legal ONNX; ONNX Runtime lists its shape as []) was refused as "has shape [];
    preset discogs-effnet feeds [batch, 128 frames, 96 bands]", though it takes those patches. A graph that cannot
    take them still fails at load, in one line."""
    def graph(path: Path, weights: np.ndarray) -> Path:
        free_graph(path, weights, declared=False)
        write_json(path, "melspectrogram", [], "")
        return path

    model = OnnxModel(graph(tmp_path / "unshaped.onnx", W_EMB), preset="discogs-effnet")
    assert model.batch == 0 and model.info.layer_dims == (32,)
    np.testing.assert_allclose(model.embed(_tone(5.0))[0][0], _expected_effnet(_tone(5.0)[0])[1], rtol=1e-3,
                               atol=1e-3)
    with pytest.raises(EssentiaModelError, match="^narrow.onnx fails on preset discogs-effnet's patches of 128 "
                                                 "frames x 96 bands: "):
        OnnxModel(graph(tmp_path / "narrow.onnx", W_EMB[:64]), preset="discogs-effnet")


def test_fetch_into_a_folder_named_from_home_keeps_files_that_match_their_pins(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`mess models fetch discogs-effnet-artist ~/models` with both files there at their pinned sizes: nothing is
    downloaded (no network here) and the files are where the tilde says."""
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = tmp_path / "models"
    folder.mkdir()
    files = PRESETS["discogs-effnet-artist"].files
    for pinned in files:
        assert pinned.sha256 is None and pinned.size is not None  # size-pinned: a file of that size passes
        (folder / pinned.name).write_bytes(bytes(pinned.size))
    assert fetch("discogs-effnet-artist", "~/models") == [folder / f.name for f in files]  # type: ignore[arg-type]


def test_a_mert_fetch_lists_every_file_it_moved_into_place(server: tuple[str, Routes],  # noqa: F811
                                                           tmp_path: Path) -> None:
    """`mess models fetch mert-v1-95m DIR` against a local stand-in for the hub lists (on stdout: the command's result,
    for a script to read) each file it placed, nested ones too, and not the hub client's .cache."""
    endpoint, routes = server
    ckpt = CHECKPOINTS["mert-v1-95m"]
    files = {"config.json": b'{"hidden_size": 768}', "model.safetensors": bytes(1000), "sub/extra.json": b"{}",
             "sub/deeper/more.json": b"[]"}
    routes[f"/api/models/{ckpt.repo}/tree/{ckpt.revision}"] = _hub_listing(files)
    for name, body in files.items():
        routes[f"/{ckpt.repo}/resolve/{ckpt.revision}/{name}"] = _hub_file(body, ckpt.revision)
    folder = tmp_path / "mert"
    done = fetch_cli("mert-v1-95m", str(folder), HF_ENDPOINT=endpoint, HF_HUB_OFFLINE="0",
                     HF_HOME=str(tmp_path / "hf-home"))
    assert done.returncode == 0, done.stderr
    listed = sorted(line.split(" ", 1)[1] for line in done.stdout.splitlines() if line.startswith("ok "))
    assert listed == sorted(str(folder / name) for name in files)
    assert "ok " not in done.stderr and f"--model {folder}" in done.stdout
    assert {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} == set(files)
