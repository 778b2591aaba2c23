"""export_musicnn beyond test_onnx_musicnn: the JSON written beside the graph, and archs it cannot export."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from mess.models.essentia.export import export_musicnn
from mess.models.musicnn import MusicnnModel


def test_only_the_musicnn_arch_has_essentia_s_layout(tmp_path: Path) -> None:
    pytest.importorskip("musicnn", reason="the musicnn wheel holds the weights: pip install --no-deps musicnn==0.1.0")
    with pytest.raises(ValueError, match="^only musicnn \\(not vgg\\) has Essentia's msd-musicnn-1 layout$"):
        export_musicnn(MusicnnModel("MTT", arch="vgg"), tmp_path / "x.onnx")
    assert not list(tmp_path.iterdir())


def test_the_json_names_the_tensors_and_the_weights_licence(tmp_path: Path) -> None:
    pytest.importorskip("musicnn", reason="the musicnn wheel holds the weights: pip install --no-deps musicnn==0.1.0")
    pytest.importorskip("onnx", reason="torch.onnx.export needs onnx (test extra)")
    import onnx

    native = MusicnnModel("MTT")
    with warnings.catch_warnings(record=True) as shown:  # the TorchScript exporter's notes are not the user's
        warnings.simplefilter("always")
        path = export_musicnn(native, tmp_path / "mtt-musicnn.onnx")
    assert not shown, [str(w.message) for w in shown]
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["name"] == "MTT MusiCNN (exported by mess)" and meta["license"].startswith("ISC")
    assert meta["classes"] == list(native.tag_names) and len(meta["classes"]) == 50
    assert meta["inference"] == {"sample_rate": 16000, "algorithm": "TensorflowPredictMusiCNN"}
    assert meta["schema"]["inputs"] == [{"name": "model/Placeholder", "type": "float", "shape": [187, 96]}]
    assert [o["name"] for o in meta["schema"]["outputs"]] == ["model/Sigmoid", "model/dense/BiasAdd"]
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["model/Placeholder"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a free batch axis
    assert [o.name for o in graph.output][:2] == ["model/Sigmoid", "model/dense/BiasAdd"]
    widths = [graph.output[i].type.tensor_type.shape.dim[1].dim_value for i in range(2)]
    assert [o["shape"] for o in meta["schema"]["outputs"]] == [[1, widths[0]], [1, widths[1]]] == [[1, 50], [1, 200]]
