"""The ONNX backend on real weights: mess's musicnn (the wheel's MSD checkpoint) exported with Essentia's names.

``export_musicnn`` runs ``torch.onnx.export`` with msd-musicnn-1's tensor names (input
``model/Placeholder`` [batch, 187, 96]; outputs ``model/Sigmoid`` and ``model/dense/BiasAdd``)
plus the native port's intermediate layers, and writes an Essentia-format JSON beside it.
The ONNX backend then runs that file with its own preset code and must reproduce the
native backend's vectors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mess.audio.decode import load_audio
from mess.models.essentia import OnnxModel
from mess.models.essentia.export import INTERMEDIATE, export_musicnn
from mess.models.musicnn import MusicnnModel
from mess.models.musicnn.model import MIN_SAMPLES


@pytest.fixture(scope="module")
def native() -> MusicnnModel:
    pytest.importorskip("musicnn", reason="the musicnn wheel holds the weights: pip install --no-deps musicnn==0.1.0")
    return MusicnnModel("MSD")


@pytest.fixture(scope="module")
def exported(native: MusicnnModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """msd-musicnn-1.onnx + .json exported from the native network's real weights."""
    pytest.importorskip("onnx", reason="torch.onnx.export needs onnx (test extra)")
    return export_musicnn(native, tmp_path_factory.mktemp("essentia") / "msd-musicnn-1.onnx")


@pytest.fixture(scope="module")
def backend(exported: Path) -> OnnxModel:
    return OnnxModel(exported)


def _assert_same_vectors(onnx: OnnxModel, native: MusicnnModel, windows: np.ndarray) -> None:
    ours = dict(zip(onnx.info.layer_names, onnx.embed(windows), strict=False))
    theirs = dict(zip(native.info.layer_names, native.embed(windows), strict=False))
    assert set(INTERMEDIATE) <= set(ours)
    for name in INTERMEDIATE:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(ours["predictions"], theirs["taggram"], rtol=1e-4, atol=1e-6)


def test_backend_reads_preset_layers_and_licence(backend: OnnxModel, native: MusicnnModel) -> None:
    assert backend.preset.name == "essentia-musicnn-msd"
    assert backend.info.layer_names[:2] == ("predictions", "embeddings")
    dims = dict(zip(backend.info.layer_names, backend.info.layer_dims, strict=False))
    assert dims["embeddings"] == 200 and dims["predictions"] == 50
    assert dims["timbral"] == dict(zip(native.info.layer_names, native.info.layer_dims, strict=False))["timbral"]
    assert backend.preset.min_samples == MIN_SAMPLES
    # mess's export of the musicnn wheel's weights is under their licence (ISC), not Essentia's CC BY-NC-SA
    assert backend.info.licence.startswith("ISC") and "CC BY-NC" not in backend.info.licence
    assert backend.providers == ["CPUExecutionProvider"]


def test_onnx_equals_native_on_rendered_audio(backend: OnnxModel, native: MusicnnModel,
                                              rendered_collection: list[Path]) -> None:
    audio = [load_audio(p, 16000, max_seconds=12.0) for p in rendered_collection[::5][:3]]
    length = min(len(a) for a in audio)
    _assert_same_vectors(backend, native, np.stack([a[:length] for a in audio]))


def test_onnx_equals_native_on_real_audio(backend: OnnxModel, native: MusicnnModel,
                                          wesnoth_tracks: list[Path]) -> None:
    windows = np.stack([load_audio(p, 16000, max_seconds=30.0)[-16000 * 12:] for p in wesnoth_tracks[:2]])
    _assert_same_vectors(backend, native, windows)


def test_short_window_is_repeat_padded_like_native(backend: OnnxModel, native: MusicnnModel,
                                                   rendered_collection: list[Path]) -> None:
    short = load_audio(rendered_collection[0], 16000, max_seconds=1.5)[None]
    _assert_same_vectors(backend, native, short)
