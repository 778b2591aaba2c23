"""musicnn trained on MSD and on MagnaTagATune, run on the same log-mel patches: one run with both models' layers.

The two trainings hear the same input (16 kHz, 96-band log-mel, 3 s patches) but learned different
tag vocabularies, and on real soundtracks their layers together retrieve better than either alone
(docs/quality.md). The log-mel is computed once; layer names are prefixed ``msd.`` and ``mtt.``, and
each layer's vectors equal those of ``musicnn-msd`` / ``musicnn-mtt`` for the same windows, up to the resampling:
the ensemble takes 44.1 kHz windows, for its last layer, ``timbre`` (:mod:`mess.models.timbre`: the MFCC
Gaussian up to 16 kHz, which musicnn does not hear), and resamples them to 16 kHz for the two networks.
"""

from __future__ import annotations

import numpy as np
import soxr

from mess.models import filters, timbre
from mess.models.base import EmbeddingModel, ModelInfo
from mess.models.musicnn.model import MusicnnModel, input_patches, musicnn_info

MEMBERS = ("MSD", "MTT")


def ensemble_info() -> ModelInfo:
    """The ensemble's info (its members' layers, then the timbre layer), without reading their weights."""
    members = [musicnn_info(dataset) for dataset in MEMBERS]
    return ModelInfo(
        name="musicnn",
        revision=f"{members[0].revision}+{timbre.REVISION}",
        sample_rate=timbre.SAMPLE_RATE,
        layer_names=(*(f"{d.lower()}.{n}" for d, m in zip(MEMBERS, members, strict=True) for n in m.layer_names),
                     timbre.LAYER),
        layer_dims=(*(d for m in members for d in m.layer_dims), timbre.DIM),
        licence=members[0].licence,
        band_hz=timbre.F_MAX,
    )


class MusicnnEnsemble(EmbeddingModel):
    """musicnn-msd and musicnn-mtt side by side, then the timbre layer; ``info.layer_names`` = ``msd.<layer>``,
    ``mtt.<layer>``, ``timbre``."""

    def __init__(self, device: str = "cpu", runtime: str = "onnxruntime") -> None:
        """``runtime``: as for :class:`MusicnnModel` (ONNX Runtime on a CPU by default, PyTorch elsewhere)."""
        self.device = device
        self.members = tuple(MusicnnModel(dataset, device=device, runtime=runtime) for dataset in MEMBERS)
        self.info = ensemble_info()
        self.member_rate = self.members[0].info.sample_rate

    def runs_on_torch(self, device: str | None = None) -> bool:
        """Whether every member runs on PyTorch (see :meth:`MusicnnModel.runs_on_torch`)."""
        return all(member.runs_on_torch(device) for member in self.members)

    def embed(self, windows: np.ndarray) -> list[np.ndarray]:
        """See :meth:`EmbeddingModel.embed`: every member's layers, from one log-mel computation of the windows
        resampled to 16 kHz (soxr, high quality, each window alone), then the timbre layer of the 44.1 kHz windows."""
        windows = np.atleast_2d(np.asarray(windows, dtype=np.float32))
        low = soxr.resample(windows.T, self.info.sample_rate, self.member_rate, quality="HQ").T
        batch = input_patches(np.ascontiguousarray(low))
        layers = [vectors for member in self.members for vectors in member.embed_patches(batch)]
        basis = filters.mel_basis(timbre.SAMPLE_RATE, timbre.N_FFT, timbre.N_MELS, timbre.F_MAX)
        return [*layers, timbre.window_vectors(windows, basis)]

    def pool(self, segments: list[np.ndarray]) -> list[np.ndarray]:
        """See :meth:`EmbeddingModel.pool`: the networks' layers averaged, the timbre layer's Gaussian of all the
        analysed frames (:func:`mess.models.timbre.pool`)."""
        return [*super().pool(segments[:-1]), timbre.pool(segments[-1])]
