"""`--device cuda:N` for ONNX models: the CUDA execution provider on GPU N, as torch models take cuda:N.

There is no GPU here: what is tested is the provider list ONNX Runtime is given (its documented form, a
(name, options) pair with ``device_id``) and the one-line refusal where this onnxruntime has no CUDA provider.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf
from typer.testing import CliRunner

from mess.models.essentia import EssentiaModelError, OnnxModel
from mess.models.essentia.model import session_providers
from mess.models.registry import load_model

pytest.importorskip("onnx", reason="the test builds its graph with onnx (test extra)")
from test_onnx_backend import EFFNET_OUTPUTS, effnet_graph, write_json  # noqa: E402

NO_CUDA = "CUDAExecutionProvider" not in ort.get_available_providers()


def _effnet(folder: Path) -> Path:
    path = effnet_graph(folder / "discogs-effnet-bsdynamic-1.onnx")
    write_json(path, "serving_default_melspectrogram", EFFNET_OUTPUTS, "TensorflowPredictEffnetDiscogs")
    return path


def test_cuda_n_puts_the_cuda_provider_on_gpu_n_before_the_cpu() -> None:
    """ONNX Runtime takes a provider with options as (name, {option: value}); the CUDA provider's GPU is its
    ``device_id`` (onnxruntime's CUDA execution provider docs). The CPU provider stays, for the operators CUDA lacks."""
    assert session_providers("cuda:1") == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert session_providers("cuda:0") == [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    assert session_providers("cuda") == [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    assert session_providers("cpu") == ["CPUExecutionProvider"]
    for device in ("mps", "cuda:", "cuda:x", "gpu:1", "cuda:1 "):
        with pytest.raises(EssentiaModelError, match=f"^unknown device {device!r} for ONNX Runtime"):
            session_providers(device)


@pytest.mark.skipif(not NO_CUDA, reason="this onnxruntime has a CUDA provider: the refusal cannot be seen")
def test_cuda_n_without_a_cuda_onnxruntime_is_the_same_clear_refusal_as_cuda(tmp_path: Path) -> None:
    """`--device cuda:1` was refused for ONNX models as an unknown device ('use cpu or cuda') though torch models
    take it; it now reaches the check every CUDA device meets, which names what is missing."""
    path = _effnet(tmp_path)
    for device in ("cuda", "cuda:1"):
        with pytest.raises(EssentiaModelError, match=f"^--device {device} asked for, but this onnxruntime has no "
                                                     r"CUDAExecutionProvider \(install onnxruntime-gpu\)$"):
            load_model(str(path), device=device)
    assert OnnxModel(path, device="cpu").providers == ["CPUExecutionProvider"]


@pytest.mark.skipif(not NO_CUDA, reason="this onnxruntime has a CUDA provider: the refusal cannot be seen")
def test_mess_extract_with_an_onnx_model_on_cuda_1_says_so_in_one_line(tmp_path: Path) -> None:
    from mess.cli.main import app

    (tmp_path / "models").mkdir()
    (tmp_path / "music").mkdir()
    sf.write(tmp_path / "music" / "tone.wav", np.full(16000, 0.1, np.float32), 16000)
    path = _effnet(tmp_path / "models")
    out = CliRunner().invoke(app, ["extract", str(tmp_path / "music"), "--model", str(path), "--device", "cuda:1",
                                   "--store", str(tmp_path / "store")], env={"COLUMNS": "400"})
    assert out.exit_code == 1 and "Traceback" not in out.output, out.output
    assert out.output.strip().splitlines()[-1] == ("error: --device cuda:1 asked for, but this onnxruntime has no "
                                                   "CUDAExecutionProvider (install onnxruntime-gpu)")
