"""Model names -> loaded EmbeddingModel instances."""

from __future__ import annotations

from pathlib import Path

from mess.models.base import EmbeddingModel

MODEL_NAMES = ("mert-v1-95m", "mert-v1-330m", "musicnn-msd", "musicnn-mtt", "dsp",
               "musicnn-vgg-msd", "musicnn-vgg-mtt")


class ModelError(Exception):
    """A model that cannot be loaded; the message says what to do."""


def load_model(name: str, device: str = "cpu", preset: str | None = None) -> EmbeddingModel:
    """Load a model by registry name, an Essentia-style ``.onnx`` file (``preset`` names its front end; detected
    when None), or a MERT-shaped HubertModel from a local folder."""
    key = name.lower()
    if key.endswith(".onnx"):
        from mess.models.essentia import OnnxModel

        return OnnxModel(Path(name), preset=preset, device=device)
    if preset is not None:
        raise ModelError(f"--preset applies to .onnx model files, not to {name!r}")
    if key == "dsp":
        from mess.models.dsp import DspModel

        return DspModel()
    if key.startswith("musicnn-"):
        from mess.models.musicnn import MusicnnModel

        arch, _, dataset = key.removeprefix("musicnn-").rpartition("-")
        return MusicnnModel(dataset=dataset.upper(), device=device, arch=arch or "musicnn")
    from mess.models.mert import CHECKPOINTS, MertModel

    if key in CHECKPOINTS:
        ckpt = CHECKPOINTS[key]
        try:
            return MertModel.from_pretrained(ckpt.repo, revision=ckpt.revision, name=key, device=device)
        except OSError as exc:
            raise ModelError(f"cannot fetch {ckpt.repo}@{ckpt.revision[:8]} from the Hugging Face hub ({exc}). "
                             "Without network, download it elsewhere and pass the folder path as --model.") from exc
    if Path(name).expanduser().is_dir():  # named by its folder, so queries by file load it again, offline
        folder = str(Path(name).expanduser().resolve())
        return MertModel.from_pretrained(folder, name=folder, device=device)
    raise ModelError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}, a local model folder "
                     "or a .onnx file")
