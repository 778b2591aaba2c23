"""MERT loading and embedding in-process on a tiny random-weights MERT-shaped HubertModel, for mutation testing.

Expected values come from transformers' HubertModel run directly on the saved network, from numpy (the feature
extractor's normalisation written from its definition) and from the fixture's own files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_mert import _tiny_mert_dir

from mess.models.registry import ModelError, load_model


@pytest.mark.parametrize("mert_style", [True, False], ids=["pytorch_model.bin", "model.safetensors"])
def test_a_folder_whose_weights_file_is_cut_short_is_one_model_error(tmp_path: Path, mert_style: bool) -> None:
    """A weights file cut short (a download stopped, a disk full) ended `mess extract --model DIR` in a traceback:
    torch's RuntimeError 'PytorchStreamReader failed reading zip archive' or safetensors' SafetensorError."""
    folder, _ = _tiny_mert_dir(tmp_path, stable=False, mert_style_config=mert_style)
    weights = folder / ("pytorch_model.bin" if mert_style else "model.safetensors")
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelError, match=f"^cannot load {tmp_path} as a MERT-shaped model: its weights cannot be "
                                         "read \\(.+\\); is the weights file whole\\?$"):
        load_model(str(folder))
