"""musicnn trained on MSD and on MagnaTagATune, run on the same log-mel patches: one run with both models' layers.

The two trainings hear the same input (16 kHz, 96-band log-mel, 3 s patches) but learned different
tag vocabularies, and on real soundtracks their layers together retrieve better than either alone
(docs/quality.md). The log-mel is computed once; layer names are prefixed ``msd.`` and ``mtt.``, and
each layer's vectors equal those of ``musicnn-msd`` / ``musicnn-mtt`` for the same windows.
"""

from __future__ import annotations

import numpy as np

from mess.models.base import EmbeddingModel, ModelInfo
from mess.models.musicnn.model import MusicnnModel, input_patches

MEMBERS = ("MSD", "MTT")


class MusicnnEnsemble(EmbeddingModel):
    """musicnn-msd and musicnn-mtt side by side; ``info.layer_names`` = ``msd.<layer>`` then ``mtt.<layer>``."""

    def __init__(self, device: str = "cpu", runtime: str = "onnxruntime") -> None:
        """``runtime``: as for :class:`MusicnnModel` (ONNX Runtime on a CPU by default, PyTorch elsewhere)."""
        self.device = device
        self.members = tuple(MusicnnModel(dataset, device=device, runtime=runtime) for dataset in MEMBERS)
        first = self.members[0].info
        self.info = ModelInfo(
            name="musicnn",
            revision=first.revision,
            sample_rate=first.sample_rate,
            layer_names=tuple(f"{m.dataset.lower()}.{n}" for m in self.members for n in m.info.layer_names),
            layer_dims=tuple(d for m in self.members for d in m.info.layer_dims),
            licence=first.licence,
        )

    def runs_on_torch(self, device: str | None = None) -> bool:
        """Whether every member runs on PyTorch (see :meth:`MusicnnModel.runs_on_torch`)."""
        return all(member.runs_on_torch(device) for member in self.members)

    def embed(self, windows: np.ndarray) -> list[np.ndarray]:
        """See :meth:`EmbeddingModel.embed`: every member's layers, from one log-mel computation."""
        batch = input_patches(windows)
        return [vectors for member in self.members for vectors in member.embed_patches(batch)]
