"""The one interface every embedding model implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

FILE_REVISION = "sha256:"  # how the revision of a model made from a file (.onnx) starts: its hash follows


@dataclass(frozen=True)
class ModelInfo:
    """What identifies a model's vectors: name, weights revision, input rate, layers."""

    name: str
    revision: str
    sample_rate: int
    layer_names: tuple[str, ...]
    layer_dims: tuple[int, ...]
    licence: str = ""
    band_hz: float = 0.0  # the highest frequency its layers read (0: half the sample rate); a file below it is warned


class EmbeddingModel(ABC):
    """A pretrained model that maps mono audio windows to one vector per layer."""

    info: ModelInfo
    device: str = "cpu"

    def source(self) -> dict[str, str] | None:
        """Plain data to load this model again where its run's name cannot (an ``.onnx`` file, whose run is named
        after its stem), which `mess extract` records with the run; None when the name is enough."""
        return None

    def pool(self, segments: list[np.ndarray]) -> list[np.ndarray]:
        """A track's vector per layer from its windows' vectors (one [windows, dim] array per layer): the mean,
        unless a layer's vectors are not to be averaged (the musicnn ensemble's timbre layer)."""
        return [s.mean(axis=0) for s in segments]

    @abstractmethod
    def embed(self, windows: np.ndarray) -> list[np.ndarray]:
        """Embed a batch of equal-length mono windows.

        Windows are at least the window policy's minimum (1 s) long; a model whose input needs more pads them
        itself (musicnn repeats a window up to its 3 s patch).

        Args:
            windows: float32 array [batch, samples] at ``info.sample_rate``.

        Returns:
            One float32 array per layer, each [batch, layer_dim], in ``info.layer_names`` order.
        """
