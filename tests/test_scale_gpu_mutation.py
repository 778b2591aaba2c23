"""AutocastModel's contract with the model it wraps, on a small torch model built here (no weights to load)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mess.models.base import EmbeddingModel, ModelInfo
from mess.scale.gpu import AutocastModel, with_precision


class _TorchModel(EmbeddingModel):
    """One linear layer on torch; records the autocast state its forward ran under; pools by the maximum."""

    def __init__(self, device: str = "cpu") -> None:
        torch.manual_seed(0)
        self.network = torch.nn.Linear(8, 4)
        self.device = device
        self.info = ModelInfo("tiny", "r1", 16000, ("out",), (4,))
        self.seen: list[tuple[bool, torch.dtype]] = []

    def embed(self, windows: np.ndarray) -> list[np.ndarray]:
        self.seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        with torch.no_grad():
            out = self.network(torch.from_numpy(windows[:, :8]))
        return [out.float().numpy()]

    def pool(self, segments: list[np.ndarray]) -> list[np.ndarray]:
        return [s.max(axis=0) for s in segments]


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_the_forward_runs_under_autocast_in_the_named_dtype(precision: str, dtype: torch.dtype) -> None:
    inner = _TorchModel()
    half = with_precision(inner, precision)
    assert isinstance(half, AutocastModel) and half.info.revision == f"r1+{precision}"
    windows = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    got = half.embed(windows)
    assert inner.seen == [(True, dtype)]
    want = windows[:, :8] @ inner.network.weight.detach().numpy().T + inner.network.bias.detach().numpy()
    assert got[0].shape == (3, 4) and not np.array_equal(got[0], want), "the matmul ran in the reduced dtype"
    np.testing.assert_allclose(got[0], want, rtol=0.05, atol=0.05)
    assert not torch.is_autocast_enabled("cpu"), "autocast ends with the call"


def test_the_wrapper_pools_as_its_model_does_and_keeps_its_device() -> None:
    """The musicnn pair's timbre layer is not a mean: the wrapper must not fall back to the base class's mean."""
    inner = _TorchModel(device="cuda:1")
    half = AutocastModel(inner, "bf16")
    assert half.device == "cuda:1"
    segments = [np.array([[1.0, 5.0], [3.0, -2.0], [2.0, 0.0]], dtype=np.float32)]
    pooled = half.pool(segments)
    np.testing.assert_array_equal(pooled[0], np.array([3.0, 5.0], dtype=np.float32))


def test_a_model_with_neither_runs_on_torch_nor_a_network_is_refused_in_one_line() -> None:
    inner = _TorchModel()
    del inner.network
    with pytest.raises(ValueError, match=r"^tiny does not run on torch; --precision fp16 applies to MERT") as refused:
        with_precision(inner, "fp16")
    assert "\n" not in str(refused.value)
