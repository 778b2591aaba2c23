"""What a Ray extraction costs beyond its work, in-process (the cluster's tests are tests/test_scale_ray.py).

The driver loaded the whole model just to read its info: it now reads the info alone, equal to the loaded model's
for every registered backend that can be built here. And on CPUs every run started an actor pool of its own (new
processes, each importing Ray Data and mess and loading the model): a Ray worker process now keeps its model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import test_scale_mutation
from test_mert import _tiny_mert_dir

from mess.models.registry import FACTORIES, INFOS, ModelError, load_model
from mess.scale import embedder
from mess.scale.gpu import run_info, with_precision
from mess.scale.ray_extract import extract_ray
from mess.store import FeatureStore

local_ray = test_scale_mutation.local_ray  # Ray Data run in this process

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


def test_a_mert_folder_hubert_cannot_run_is_refused_by_the_driver_as_by_loading(mert_folder: str,
                                                                                tmp_path: Path) -> None:
    folder = Path(shutil.copytree(mert_folder, tmp_path / "cqt"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "feature_extractor_cqt": True}))
    with pytest.raises(ModelError, match="CQT front end") as loading:
        load_model(str(folder))
    with pytest.raises(ModelError) as reading:
        run_info(str(folder), "fp32", "cpu")
    assert str(reading.value) == str(loading.value)


def test_the_driver_s_info_imports_no_torch(mert_folder: str) -> None:
    """The info of musicnn and of a MERT folder, in a fresh process, as extract_ray and `mess extract --engine ray`
    read it: torch is never imported (nor the weights read into a network)."""
    script = ("import sys; from mess.scale.gpu import run_info; from mess.cli.extract import _embedder; "
              f"[run_info(n, 'fp32', 'cpu') for n in ('musicnn', 'musicnn-vgg-mtt', {mert_folder!r})]; "
              f"_embedder({mert_folder!r}, None, 'cuda', 'ray', 'bf16'); _embedder('musicnn', None, 'cpu', 'ray', "
              "'fp32'); print(sorted(m for m in ('torch', 'transformers', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_ray_worker_keeps_its_model_from_run_to_run(local_ray: test_scale_mutation.LocalRay,
                                                      monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Two runs of two batches each, embedded by one worker (this process): the model is loaded once; a run of
    another model lets it go."""
    loads: list[str] = []
    load = embedder.load_model
    monkeypatch.setattr(embedder, "load_model", lambda name, device: loads.append(name) or load(name, device=device))
    paths = test_scale_mutation._tones(tmp_path / "music", 3, seconds=2.0)
    for run in ("a", "b"):
        got = extract_ray(FeatureStore(tmp_path / run), paths, "dsp", test_scale_mutation.POLICY, batch_size=2)
        assert (got.done, got.failed) == (3, [])
    assert loads == ["dsp"]
    extract_ray(FeatureStore(tmp_path / "c"), paths, "dsp", test_scale_mutation.POLICY, batch_size=3)
    assert loads == ["dsp", "dsp"] and [key[-1] for key in embedder._LOADED] == [3]
