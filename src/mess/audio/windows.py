"""Full-context windowing policy: how a track becomes model-sized windows."""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from mess.constants import DEFAULT_MAX_WINDOWS, DEFAULT_WINDOW_SECONDS

if TYPE_CHECKING:  # numpy is imported where windows are cut: `mess extract --help` shows the bounds without it
    import numpy as np


@dataclass(frozen=True)
class WindowPolicy:
    """How tracks are cut into windows; recorded with every vector it produced.

    Tracks no longer than ``window_seconds`` are one window of their own length
    (no padding). Longer tracks get ``ceil(duration / window)`` full-length windows,
    evenly spaced from start to end (at most ``max_windows``, so a 2-hour file costs
    a bounded amount), whose per-layer vectors are kept per segment and averaged
    per track. Windows are full-context: the model sees each whole window at once.
    The default, 4 windows of 30 s, was chosen from the quality/cost curve on real
    soundtracks (docs/quality.md): the default vectors score the same as with 16.
    """

    window_seconds: float = DEFAULT_WINDOW_SECONDS
    max_windows: int = DEFAULT_MAX_WINDOWS
    min_seconds: float = 1.0
    max_decode_seconds: float = 4 * 3600.0

    def __post_init__(self) -> None:
        count = self.max_windows  # 4.0 is 4 windows and 30 is 30.0 seconds: one JSON, so one run, per policy
        if isinstance(count, bool) or not isinstance(count, numbers.Real) or not float(count).is_integer():
            raise ValueError(f"invalid window policy: {self} (max_windows is a whole number)")
        object.__setattr__(self, "max_windows", int(count))
        for name in ("window_seconds", "min_seconds", "max_decode_seconds"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if not 0 < self.window_seconds < math.inf or self.max_windows < 1 or self.min_seconds <= 0:
            raise ValueError(f"invalid window policy: {self}")

    def starts(self, n_samples: int, sample_rate: int) -> tuple[np.ndarray, int]:
        """Window start offsets (samples) and the common window length for a track."""
        import numpy as np

        win = int(round(self.window_seconds * sample_rate))
        if n_samples <= win:
            return np.zeros(1, dtype=np.int64), n_samples
        count = min(self.max_windows, int(np.ceil(n_samples / win)))
        return np.linspace(0, n_samples - win, count).round().astype(np.int64), win

    def analysed_seconds(self, duration: float) -> float:
        """Seconds of audio the policy analyses in a track of ``duration`` seconds (window overlaps counted).

        Examples:
            >>> WindowPolicy().analysed_seconds(210.0)
            120.0
            >>> WindowPolicy(max_windows=16).analysed_seconds(7200.0)
            480.0
        """
        if duration <= self.window_seconds:
            return duration
        return min(self.max_windows, math.ceil(duration / self.window_seconds)) * self.window_seconds

    def cut(self, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (starts in seconds, windows [n, length]) for a mono signal."""
        import numpy as np

        starts, length = self.starts(audio.size, sample_rate)
        windows = np.stack([audio[s : s + length] for s in starts])
        return starts / sample_rate, windows

    def to_json(self) -> str:
        """Canonical JSON, used as the policy's identity in the store."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WindowPolicy:
        """Inverse of :meth:`to_json`."""
        return cls(**json.loads(text))
