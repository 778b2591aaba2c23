"""Export mess's native musicnn (the wheel's real weights) as an Essentia-style msd-musicnn ONNX model.

The graph uses msd-musicnn-1's tensor names (input ``model/Placeholder`` [batch, 187, 96];
outputs ``model/Sigmoid`` and ``model/dense/BiasAdd``) plus the native port's intermediate
layers, and an Essentia-format JSON is written beside it (with the weights' ISC licence). It lets the ONNX backend be
checked against, and timed against, the native port without downloading anything.
``torch.onnx.export`` needs the ``onnx`` package (a dependency of mess).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from mess.models.musicnn import MusicnnModel
from mess.models.musicnn.network import MusicnnNetwork
from mess.models.musicnn.shapes import FRAME_LAYERS, N_FRAMES, N_MELS

INTERMEDIATE = (*FRAME_LAYERS, "mean_pool", "max_pool", "penultimate")
# the weights' licence, written in the JSON so the backend does not print the preset's (Essentia's CC BY-NC-SA)
LICENCE = "ISC (the musicnn==0.1.0 wheel's weights by Jordi Pons, exported by mess)"
OUTPUTS = ("model/Sigmoid", "model/dense/BiasAdd", *INTERMEDIATE)


class _EssentiaNames(torch.nn.Module):
    """musicnn's forward with outputs in msd-musicnn-1's order: taggram, dense pre-activation, then the rest."""

    def __init__(self, network: MusicnnNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.network(mel)
        flat = torch.stack([out["max_pool"], out["mean_pool"]], dim=2).flatten(1)
        dense = self.network.dense(self.network.bns[9](flat))
        return (out["taggram"], dense, *(out[name] for name in INTERMEDIATE))


def export_musicnn(model: MusicnnModel, path: Path) -> Path:
    """Write ``path`` (.onnx, dynamic batch) and its Essentia JSON for ``model``'s network; return ``path``."""
    if not isinstance(model.network, MusicnnNetwork):
        raise ValueError(f"only musicnn (not {model.arch}) has Essentia's msd-musicnn-1 layout")
    dynamic = {name: {0: "batch"} for name in ("model/Placeholder", *OUTPUTS)}
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and constant-folding notes
        warnings.simplefilter("ignore")
        torch.onnx.export(_EssentiaNames(model.network).eval(), (torch.zeros(2, N_FRAMES, N_MELS),), str(path),
                          dynamo=False, input_names=["model/Placeholder"], output_names=list(OUTPUTS),
                          dynamic_axes=dynamic, opset_version=17)
    path.with_suffix(".json").write_text(json.dumps({
        "name": f"{model.dataset} MusiCNN (exported by mess)", "version": "1", "license": LICENCE,
        "classes": list(model.tag_names),
        "schema": {
            "inputs": [{"name": "model/Placeholder", "type": "float", "shape": [N_FRAMES, N_MELS]}],
            "outputs": [
                {"name": "model/Sigmoid", "type": "float", "shape": [1, 50], "op": "Sigmoid",
                 "output_purpose": "predictions"},
                {"name": "model/dense/BiasAdd", "type": "float", "shape": [1, 200], "op": "fully connected",
                 "description": "embeddings", "output_purpose": ""},
            ],
        },
        "inference": {"sample_rate": 16000, "algorithm": "TensorflowPredictMusiCNN"},
    }, indent=1))
    return path
