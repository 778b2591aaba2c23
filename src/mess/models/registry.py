"""Model names -> loaded EmbeddingModel instances."""

from __future__ import annotations

from pathlib import Path

from mess.models.base import EmbeddingModel

MODEL_NAMES = ("mert-v1-95m", "mert-v1-330m", "musicnn-msd", "musicnn-mtt", "dsp",
               "musicnn-vgg-msd", "musicnn-vgg-mtt")


class ModelError(Exception):
    """A model that cannot be loaded; the message says what to do."""


def load_model(name: str, device: str = "cpu") -> EmbeddingModel:
    """Load a model by registry name, or a MERT-shaped HubertModel from a local folder."""
    key = name.lower()
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
    if Path(name).expanduser().is_dir():
        return MertModel.from_pretrained(str(Path(name).expanduser().resolve()), device=device)
    raise ModelError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)} or a local model folder")
