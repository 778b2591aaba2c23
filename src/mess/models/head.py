"""A learned head over a model's layers: a pure NumPy transform shipped as a small ``.npz`` file.

The head maps a track's concatenated raw layer vectors ``x`` [n, sum(layer_dims)] to a
short vector: per-dimension standardisation (``mean``, ``scale``; each layer's block
also divided by the square root of its width, so every layer carries equal variance),
then a linear projection ``proj``, then an optional residual ReLU layer
(``y = h + relu(h @ w1 + b1) @ w2``). Training lives in :mod:`mess.fusion.head`; this
module only applies and stores heads, so search can use them without importing fusion.

A head trained for a model ships as ``mess/models/heads/<model>.npz`` together with
the hash of its training data and its leave-one-game-out metrics (``meta``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from mess.constants import NPZ_ERRORS

HEADS_DIR = Path(__file__).with_name("heads")


class HeadError(ValueError):
    """A head file that cannot be read, or one trained for other layers."""


@dataclass(frozen=True)
class Head:
    """Standardise, project, optional residual ReLU layer; ``meta`` records training data and metrics."""

    model: str
    layer_names: tuple[str, ...]
    layer_dims: tuple[int, ...]
    mean: np.ndarray  # [D]
    scale: np.ndarray  # [D], includes the per-layer 1/sqrt(width)
    proj: np.ndarray  # [D, d]
    w1: np.ndarray | None = None  # [d, hidden]
    b1: np.ndarray | None = None  # [hidden]
    w2: np.ndarray | None = None  # [hidden, d]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        total = sum(self.layer_dims)
        if len(self.layer_names) != len(self.layer_dims):
            raise HeadError(f"{len(self.layer_names)} layer names but {len(self.layer_dims)} layer sizes")
        if self.mean.shape != (total,) or self.scale.shape != (total,) or self.proj.shape[0] != total:
            raise HeadError(f"head arrays do not match the layer sizes (total {total})")
        if (self.w1 is None) != (self.w2 is None) or (self.w1 is None) != (self.b1 is None):
            raise HeadError("a residual layer needs w1, b1 and w2 together")

    @property
    def dim(self) -> int:
        """Size of the output vectors."""
        return int(self.proj.shape[1])

    def check(self, model: str, layer_names: tuple[str, ...], layer_dims: tuple[int, ...]) -> None:
        """Raise HeadError unless the head was trained on exactly these layers."""
        if (model, tuple(layer_names), tuple(layer_dims)) != (self.model, self.layer_names, self.layer_dims):
            raise HeadError(f"the learned head was trained on {self.model} layers {list(self.layer_names)}; "
                            f"this run is {model} with {list(layer_names)}")

    def standardise(self, x: np.ndarray) -> np.ndarray:
        """Per-dimension standardised input, float32 [n, D]."""
        return ((np.atleast_2d(np.asarray(x, dtype=np.float32)) - self.mean) / self.scale).astype(np.float32)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Head output [n, dim] for raw concatenated layer vectors ``x`` [n, D] (or one vector [D])."""
        h = self.standardise(x) @ self.proj
        if self.w1 is not None and self.b1 is not None and self.w2 is not None:
            h = h + np.maximum(h @ self.w1 + self.b1, 0.0) @ self.w2
        return h.astype(np.float32)

    def save(self, path: Path) -> Path:
        """Write the head as an ``.npz`` (float32 arrays plus JSON metadata)."""
        arrays = {"mean": self.mean, "scale": self.scale, "proj": self.proj}
        if self.w1 is not None and self.b1 is not None and self.w2 is not None:
            arrays.update(w1=self.w1, b1=self.b1, w2=self.w2)
        info = {"model": self.model, "layer_names": list(self.layer_names), "layer_dims": list(self.layer_dims),
                "meta": self.meta}
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            np.savez_compressed(f, allow_pickle=False, info=np.array(json.dumps(info)),
                                **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})
        return path

    @classmethod
    def load(cls, path: Path) -> Head:
        """Read a head written by :meth:`save`; HeadError when the file is missing or malformed."""
        try:
            with np.load(path, allow_pickle=False) as data:
                info = json.loads(str(data["info"]))
                arrays = {k: data[k] for k in data.files if k != "info"}
            return cls(info["model"], tuple(info["layer_names"]), tuple(int(d) for d in info["layer_dims"]),
                       arrays["mean"], arrays["scale"], arrays["proj"], arrays.get("w1"), arrays.get("b1"),
                       arrays.get("w2"), info.get("meta", {}))
        except NPZ_ERRORS as exc:
            raise HeadError(f"cannot read learned head {path}: {exc}") from exc


def shipped_head_path(model: str) -> Path:
    """Where the head shipped for ``model`` lives (it may not exist)."""
    return HEADS_DIR / f"{model}.npz"


@cache
def shipped_head(model: str) -> Head:
    """The head shipped in the package for ``model``; HeadError naming the models that have one."""
    path = shipped_head_path(model)
    if not path.is_file():
        have = sorted(p.stem for p in HEADS_DIR.glob("*.npz"))
        raise HeadError(f"no learned head for {model}; heads ship for {', '.join(have) or 'no model'}")
    return Head.load(path)
