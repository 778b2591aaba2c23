"""musicnn music-tagging CNNs, ported to PyTorch and loaded from the original TF1 checkpoints."""

from mess.models.musicnn.model import MusicnnModel

__all__ = ["MusicnnModel"]
