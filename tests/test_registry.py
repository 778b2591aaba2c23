"""The model registry: built-in names, plugins found through installed distributions, clear errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from mess.models.dsp import DspModel
from mess.models.registry import MODEL_NAMES, ModelError, load_model, model_factories

PLUGIN = textwrap.dedent('''
    import numpy as np

    from mess.models.base import EmbeddingModel, ModelInfo


    class PeakModel(EmbeddingModel):
        def __init__(self, device: str) -> None:
            self.device = device
            self.info = ModelInfo("toy-peak", "1", 16000, ("peak",), (1,))

        def embed(self, windows: np.ndarray) -> list[np.ndarray]:
            return [np.abs(windows).max(axis=1, keepdims=True).astype(np.float32)]


    def load(device: str) -> EmbeddingModel:
        return PeakModel(device)
''')


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed distribution (module + dist-info on sys.path) declaring three ``mess.models`` entry points."""
    (tmp_path / "toy_mess_plugin.py").write_text(PLUGIN)
    info = tmp_path / "toy_mess_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-mess-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[mess.models]\nToy-Peak = toy_mess_plugin:load\nbroken = toy_mess_plugin:missing\ndsp = toy_mess_plugin:load\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_plugin_model_loads_by_name_on_the_asked_device(plugin: Path) -> None:
    model = load_model("toy-peak", device="cuda")
    assert (model.info.name, model.device) == ("toy-peak", "cuda")
    windows = np.array([[0.0, -0.75, 0.25], [0.5, 0.0, 0.0]], dtype=np.float32)
    assert model.embed(windows)[0].ravel().tolist() == [0.75, 0.5]


def test_a_plugin_cannot_replace_a_built_in_model(plugin: Path) -> None:
    assert isinstance(load_model("dsp"), DspModel)


def test_a_broken_plugin_is_named_in_a_model_error(plugin: Path) -> None:
    with pytest.raises(ModelError, match=r"cannot load model plugin 'broken' \(toy_mess_plugin:missing\)"):
        load_model("broken")


def test_a_plugin_whose_module_fails_to_import_is_named_in_a_model_error(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin module with a syntax error (or one raising as it is imported) ended `mess extract` in a traceback
    through importlib; an ImportError or a missing name was already one line naming the plugin."""
    (tmp_path / "bad_mess_plugin.py").write_text("def load(device:\n")
    info = tmp_path / "bad_mess_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-mess-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mess.models]\nbad = bad_mess_plugin:load\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelError, match=r"^cannot load model plugin 'bad' \(bad_mess_plugin:load\): SyntaxError: "):
        load_model("bad")


def test_unknown_names_list_every_known_model(plugin: Path) -> None:
    with pytest.raises(ModelError) as err:
        load_model("no-such-model")
    message = str(err.value)
    assert "\n" not in message and message.startswith("unknown model 'no-such-model'; choose one of ")
    for name in (*MODEL_NAMES, "toy-peak", "broken"):
        assert name in message


def test_an_empty_name_or_a_folder_without_a_model_is_a_model_error(tmp_path: Path) -> None:
    """'--model ""' read as the current folder, and a folder without a model, failed in the loader with
    'config.json: No such file' instead of saying which model was asked for."""
    with pytest.raises(ModelError, match="unknown model ''"):
        load_model("")
    with pytest.raises(ModelError, match=f"{tmp_path} holds no model"):
        load_model(str(tmp_path))


def test_a_folder_of_an_onnx_preset_names_its_model_file(tmp_path: Path) -> None:
    """`mess models fetch vggish DIR` fills DIR with the .onnx and its .json; `--model DIR` then said the folder
    "holds no model" and to name "a folder saved by `mess models fetch`", which it is."""
    (tmp_path / "audioset-vggish-3.onnx").write_bytes(b"graph")
    (tmp_path / "audioset-vggish-3.json").write_text("{}")
    with pytest.raises(ModelError, match=f"^{tmp_path} holds no MERT checkpoint \\(no config.json\\) but an ONNX "
                                         f"model: pass the file, --model {tmp_path}/audioset-vggish-3.onnx$"):
        load_model(str(tmp_path))


def test_plugins_are_seen_only_while_installed() -> None:
    assert "toy-peak" not in model_factories()
    with pytest.raises(ModelError, match="unknown model 'toy-peak'"):
        load_model("toy-peak")


def test_each_built_in_name_loads_the_model_it_names() -> None:
    pytest.importorskip("musicnn.configuration", reason="pip install --no-deps musicnn==0.1.0")
    for name in MODEL_NAMES:
        if not name.startswith("mert-"):  # MERT weights come from the network (tests/test_mert.py pins them)
            assert load_model(name.upper()).info.name == name


def test_every_model_takes_the_torch_devices_and_refuses_others(plugin: Path) -> None:
    """The dsp model runs on no device and took any name; a plugin was handed whatever was typed."""
    for device in ("cpu", "cuda", "cuda:1", "mps"):
        assert load_model("dsp", device=device).info.name == "dsp"
    for name in ("dsp", "toy-peak", "musicnn"):
        for device in ("tpu", "CUDA", "cuda:", "cuda:x", ""):
            with pytest.raises(ModelError, match=f"^unknown device '{device}'; use cpu, cuda, cuda:N or mps$"):
                load_model(name, device=device)
