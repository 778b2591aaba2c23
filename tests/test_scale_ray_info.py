"""A Ray driver's model info, read without loading the model: it equals the loaded model's for every registered
backend that can be built here (`extract_ray` loaded the whole model in the driver just to read its layers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_mert import _tiny_mert_dir

from mess.models.registry import FACTORIES, INFOS, load_model
from mess.scale.gpu import run_info, with_precision

BUILT_HERE = ("dsp", "musicnn", "musicnn-msd", "musicnn-mtt", "musicnn-vgg-msd", "musicnn-vgg-mtt")  # not MERT's hub


@pytest.fixture(scope="module")
def mert_folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random MERT-shaped checkpoint, saved as MERT's hub checkpoints are."""
    return str(_tiny_mert_dir(tmp_path_factory.mktemp("mert"), stable=True, mert_style_config=True)[0])


def test_every_registry_model_has_its_info_without_its_weights() -> None:
    assert set(INFOS) == set(FACTORIES)


@pytest.mark.parametrize("name", [*BUILT_HERE, "mert folder"])
def test_the_info_a_driver_reads_is_the_loaded_model_s(name: str, mert_folder: str) -> None:
    name = mert_folder if name == "mert folder" else name
    loaded = load_model(name)
    assert run_info(name, "fp32", "cpu") == (loaded.info, loaded.source())
    assert run_info(name, "fp32", "cuda") == (loaded.info, loaded.source())  # workers' device: the same weights
    if name == "dsp":  # no torch: refused, as by the loaded model
        with pytest.raises(ValueError, match="does not run on torch") as refused:
            with_precision(loaded, "bf16", device="cuda")
        with pytest.raises(ValueError, match="does not run on torch") as too:
            run_info(name, "bf16", "cuda")
        assert str(too.value) == str(refused.value)
        return
    assert run_info(name, "bf16", "cuda") == (with_precision(loaded, "bf16", device="cuda").info, None)
    if name != mert_folder:  # musicnn runs on ONNX Runtime on a CPU: refused there, as by the loaded model
        with pytest.raises(ValueError, match="ONNX Runtime") as refused:
            with_precision(loaded, "fp16", device="cpu")
        with pytest.raises(ValueError, match="ONNX Runtime") as too:
            run_info(name, "fp16", "cpu")
        assert str(too.value) == str(refused.value)


def test_the_driver_s_info_imports_no_torch(mert_folder: str) -> None:
    """The info of musicnn and of a MERT folder, in a fresh process: torch is never imported (nor the weights read
    into a network)."""
    script = ("import sys; from mess.scale.gpu import run_info; "
              f"[run_info(n, 'fp32', 'cpu') for n in ('musicnn', 'musicnn-vgg-mtt', {mert_folder!r})]; "
              "print(sorted(m for m in ('torch', 'transformers', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
