"""librosa's filter banks, computed by librosa once and kept beside the exported graphs, so that later processes
read them without importing librosa (with scipy.signal and numba, about 1.8 s of CPU in every process)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from functools import lru_cache
from importlib.metadata import version

import numpy as np

from mess.models.musicnn.runtime import cache_dir, cached_file


def _kept(name: str, shape: tuple[int, int], compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The float32 bank ``compute()`` makes, read from the cache file ``name`` once it is kept there; a damaged
    copy (not an array, another shape or dtype, not finite) is computed and kept again."""
    path = cache_dir() / f"{name}-librosa-{version('librosa')}.npy"
    for _ in range(2):  # a damaged copy is removed, then written again
        with contextlib.suppress(OSError, ValueError):
            bank = np.load(io.BytesIO(cached_file(path, lambda out: np.save(out, compute()))))
            if bank.shape == shape and bank.dtype == np.float32 and np.isfinite(bank).all():
                return bank
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    return compute()  # an unusable cache folder


@lru_cache(maxsize=8)
def mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmax: float | None = None) -> np.ndarray:
    """librosa's Slaney mel filter bank ``filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmax=fmax)``:
    [n_mels, n_fft // 2 + 1] float32."""

    def compute() -> np.ndarray:
        import librosa

        return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmax=fmax)

    band = "" if fmax is None else f"-fmax{fmax:g}"
    return _kept(f"mel-{sample_rate}-{n_fft}-{n_mels}{band}", (n_mels, n_fft // 2 + 1), compute)


@lru_cache(maxsize=4)
def chroma_basis(sample_rate: int, n_fft: int) -> np.ndarray:
    """librosa's chroma filter bank at A440, ``filters.chroma(sr=sample_rate, n_fft=n_fft, tuning=0.0)``:
    [12, n_fft // 2 + 1] float32."""

    def compute() -> np.ndarray:
        import librosa

        return librosa.filters.chroma(sr=sample_rate, n_fft=n_fft, tuning=0.0)

    return _kept(f"chroma-{sample_rate}-{n_fft}-tuning0", (12, n_fft // 2 + 1), compute)
