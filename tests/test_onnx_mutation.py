"""The ONNX backend's loading, feeding and naming, in-process on tiny graphs, for mutation testing.

Expected vectors come from the graphs' own arithmetic (a mean over frames times a fixed matrix) applied to the
reference front ends of ``test_onnx_frontends``, or from ONNX Runtime run on the graph directly; names and refusals
from the fixture's own JSON and graph.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mess.models.essentia import EssentiaModelError, OnnxModel

onnx = pytest.importorskip("onnx", reason="tests build their graphs with onnx (test extra)")
from test_onnx_backend import EFFNET_OUTPUTS, _expected_effnet, effnet_graph, write_json  # noqa: E402

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
