"""Folders of synthetic tones: test collections whose every file differs, written in a few milliseconds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf


def write_tones(folder: Path, n: int, *, seconds: float, sr: int, wave: Callable[[int, np.ndarray], np.ndarray],
                name: str = "tone{:02d}.wav", first: int = 0) -> list[Path]:
    """``n`` float32 WAV files ``name.format(i)``, i from ``first``, in ``folder`` (made if missing), file i holding
    ``wave(i, t)`` for t the sample times in seconds; their paths in order."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    paths = []
    for i in range(first, first + n):
        paths.append(folder / name.format(i))
        sf.write(paths[-1], wave(i, t).astype(np.float32), sr)
    return paths
