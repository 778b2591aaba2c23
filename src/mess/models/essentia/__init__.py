"""Essentia's published models (Discogs-EffNet, VGGish, MusiCNN) in ONNX form, run with ONNX Runtime."""

from mess.models.essentia.metadata import EssentiaModelError
from mess.models.essentia.model import OnnxModel
from mess.models.essentia.presets import PRESETS

__all__ = ["PRESETS", "EssentiaModelError", "OnnxModel"]
