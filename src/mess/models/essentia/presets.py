"""Named presets for Essentia's ONNX models: front end, patching, licence and the files to fetch.

Parameters come from Essentia's ``TensorflowPredict{EffnetDiscogs,VGGish,MusiCNN}``:
EffNet-Discogs takes 128-frame MusiCNN-input patches every 62 frames (its default hop),
VGGish 96-frame patches without overlap (``patchHopSize=96``). ``essentia-musicnn-msd``
feeds musicnn's own front end (``mess.models.musicnn.model.log_mel``, which the native port
uses) in non-overlapping 187-frame patches, so that the same weights give the same vectors
through either backend.

Pinned digests are the published SHA-256 of each file where one was found; where none
was, the byte size shown by essentia.upf.edu's listing (16 May 2023) is pinned instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mess.models.essentia.frontends import (
    MUSICNN_BANDS,
    MUSICNN_HOP,
    VGGISH_BANDS,
    VGGISH_HOP,
    tensorflow_input_musicnn,
    tensorflow_input_vggish,
)
from mess.models.essentia.metadata import EssentiaModelError, ModelMetadata

MTG_LICENCE = "CC BY-NC-SA 4.0 (Essentia models by MTG-UPF): non-commercial use only, proprietary licence on request"
VGGISH_LICENCE = "Apache 2.0 (Google's AudioSet VGGish weights, converted by Essentia; see essentia.upf.edu/models)"
_ESSENTIA = "https://essentia.upf.edu/models/feature-extractors"


@dataclass(frozen=True)
class PinnedFile:
    """One file of a preset: where it is published and its pinned SHA-256 and/or byte size."""

    url: str
    sha256: str | None = None
    size: int | None = None

    @property
    def name(self) -> str:
        """The file name (last URL component)."""
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Preset:
    """How to feed one family of Essentia models and where to get its files."""

    name: str
    front_end: Callable[[np.ndarray], np.ndarray]
    bands: int
    frame_hop: int
    patch_frames: int
    patch_hop: int
    licence: str
    stems: tuple[str, ...]
    algorithms: tuple[str, ...]
    files: tuple[PinnedFile, ...]

    @property
    def min_samples(self) -> int:
        """Shortest 16 kHz input that gives one whole patch (shorter windows are repeat-padded)."""
        return (self.patch_frames - 1) * self.frame_hop

    @property
    def feed(self) -> tuple[object, ...]:
        """What the network is given: front end, bands, hops and patching (presets equal in it give equal vectors)."""
        return self.front_end, self.bands, self.frame_hop, self.patch_frames, self.patch_hop


def _musicnn_log_mel(windows: np.ndarray) -> np.ndarray:
    from mess.models.musicnn.model import log_mel

    return log_mel(windows)


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("discogs-effnet", tensorflow_input_musicnn, MUSICNN_BANDS, MUSICNN_HOP, 128, 62, MTG_LICENCE,
           ("discogs-effnet",), ("TensorflowPredictEffnetDiscogs",),
           (PinnedFile(f"{_ESSENTIA}/discogs-effnet/discogs-effnet-bsdynamic-1.onnx",
                       sha256="a280825b334797cf677939db8cd5762c0392aedd0ca6415dbc1cd083f045e43c", size=18027718),
            PinnedFile(f"{_ESSENTIA}/discogs-effnet/discogs-effnet-bsdynamic-1.json", size=14986))),
    Preset("discogs-effnet-artist", tensorflow_input_musicnn, MUSICNN_BANDS, MUSICNN_HOP, 128, 62, MTG_LICENCE,
           ("discogs_artist_embeddings-effnet",), (),
           (PinnedFile(f"{_ESSENTIA}/discogs-effnet/discogs_artist_embeddings-effnet-bs64-1.onnx", size=18621951),
            PinnedFile(f"{_ESSENTIA}/discogs-effnet/discogs_artist_embeddings-effnet-bs64-1.json", size=2194))),
    Preset("vggish", tensorflow_input_vggish, VGGISH_BANDS, VGGISH_HOP, 96, 96, VGGISH_LICENCE,
           ("audioset-vggish",), ("TensorflowPredictVGGish",),
           (PinnedFile(f"{_ESSENTIA}/vggish/audioset-vggish-3.onnx",
                       sha256="b0b7db5247b20b8db66aae82bdfb4a298d38a34df200dd19b2de355227c8dd49"),
            PinnedFile(f"{_ESSENTIA}/vggish/audioset-vggish-3.json"))),
    Preset("essentia-musicnn-msd", _musicnn_log_mel, MUSICNN_BANDS, MUSICNN_HOP, 187, 187, MTG_LICENCE,
           ("msd-musicnn",), ("TensorflowPredictMusiCNN",),
           (PinnedFile(f"{_ESSENTIA}/musicnn/msd-musicnn-1.onnx",
                       sha256="49668ffec47e52e94b96f45930bb46a28a1368d4bdfb5c05378fa834aca616e1"),
            PinnedFile(f"{_ESSENTIA}/musicnn/msd-musicnn-1.json",
                       sha256="8e6b3b509f0610c0e65dce467fd459d6777509388eaddb13ed138d8ac1341ffe"))),
)}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; unknown names raise :class:`EssentiaModelError` listing the choices."""
    if name not in PRESETS:
        raise EssentiaModelError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def detect_preset(stem: str, metadata: ModelMetadata) -> Preset:
    """The preset of a model file: by its file-name stem (longest match), else by the metadata's algorithm."""
    by_stem = [(len(s), p) for p in PRESETS.values() for s in p.stems if stem.startswith(s)]
    if by_stem:
        return max(by_stem, key=lambda item: item[0])[1]
    for preset in PRESETS.values():
        if metadata.algorithm in preset.algorithms:
            return preset
    raise EssentiaModelError(f"cannot tell which preset {stem} needs (metadata algorithm "
                             f"{metadata.algorithm or 'missing'!r}); pass --preset, one of {', '.join(PRESETS)}")
