"""Reduced-precision inference: MERT with its weights cast, other models whose forward runs on torch under
``torch.autocast`` (musicnn on a GPU; on a CPU musicnn runs on ONNX Runtime and refuses it).

Batching stays exact-length (``mess.extract.embed.embed_windows`` groups windows of
equal length, so a batch is never padded). MERT's group-norm front end and its
attention take no padding mask, so padding a short window to a batch's length
would change its vectors; exact-length grouping keeps every window's result
independent of what it was batched with. Under the window policy every window of
a track longer than one window has the full window length, so in a real collection
nearly all windows fall into one length bucket and batches stay full.

torch is imported only for reduced precision, so fp32 runs of the dsp model
(e.g. in Ray workers) do not pay its import.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np

from mess.models.base import EmbeddingModel, ModelInfo
from mess.models.registry import load_model, model_info

PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # name -> torch dtype attribute


class AutocastModel(EmbeddingModel):
    """A torch-backed model whose forward passes run under ``torch.autocast``.

    Its revision carries the precision (``<revision>+bf16``), so reduced-precision
    vectors form their own run in the store instead of mixing with fp32 ones.
    """

    def __init__(self, inner: EmbeddingModel, precision: str) -> None:
        import torch

        self.inner = inner
        self.precision = precision
        self.device = inner.device
        self.info = replace(inner.info, revision=f"{inner.info.revision}+{precision}")
        self._autocast = partial(
            torch.autocast, device_type=torch.device(self.device).type, dtype=getattr(torch, PRECISIONS[precision])
        )

    def embed(self, windows: np.ndarray) -> list[np.ndarray]:
        """See :meth:`EmbeddingModel.embed`; matmuls and convs run in the reduced dtype."""
        with self._autocast():
            return self.inner.embed(windows)

    def pool(self, segments: list[np.ndarray]) -> list[np.ndarray]:
        """The wrapped model's pooling (the default ``musicnn``'s timbre layer is not a mean)."""
        return self.inner.pool(segments)


def with_precision(model: EmbeddingModel, precision: str, device: str | None = None) -> EmbeddingModel:
    """``model`` itself for fp32; for bf16 or fp16, a MERT copy with its weights in that dtype, or another torch
    model wrapped in :class:`AutocastModel`.

    A model runs on torch when it says so (``runs_on_torch(device)``: musicnn, whose CPU default is ONNX Runtime,
    where autocast would change nothing) or else when it has a torch ``network`` (MERT). ``device``: where the
    forward will run, when not on ``model.device`` (a Ray driver checks the CPU copy it loads for its info only
    against its workers' device).

    Raises:
        ValueError: unknown precision, or a model whose forward does not run on torch (dsp, ONNX models,
            musicnn on ONNX Runtime).
    """
    _check_precision(precision)
    if precision == "fp32":
        return model
    import torch

    applies = "applies to MERT, and to musicnn on --device cuda"
    runs_on_torch = getattr(model, "runs_on_torch", None)  # musicnn: ONNX Runtime on a CPU, torch elsewhere
    if callable(runs_on_torch):
        if not runs_on_torch(device):
            raise ValueError(f"{model.info.name} does not run on torch on {device or model.device} but on ONNX "
                             f"Runtime, where --precision {precision} would change nothing; it {applies}")
    elif not isinstance(getattr(model, "network", None), torch.nn.Module):
        raise ValueError(f"{model.info.name} does not run on torch; --precision {precision} {applies}")
    cast = getattr(model, "in_dtype", None)  # MERT: its weights in the reduced dtype
    if cast is not None:
        return cast(getattr(torch, PRECISIONS[precision]), precision)
    return AutocastModel(model, precision)


def run_info(model_name: str, precision: str, device: str) -> tuple[ModelInfo, dict[str, str] | None]:
    """The info (``precision`` applied) and ``source()`` of the model workers on ``device`` load for ``model_name``,
    as :func:`with_precision` of :func:`load_model` gives them: read without loading the model where the registry can
    (:func:`mess.models.registry.model_info`; such models record no source), else from a copy loaded here on the CPU
    (an ``.onnx`` file, a plugin), which also says why a model refuses ``precision``."""
    _check_precision(precision)
    described = model_info(model_name, device)
    if described is not None and (precision == "fp32" or described[1]):
        info = described[0]
        return (info if precision == "fp32" else replace(info, revision=f"{info.revision}+{precision}")), None
    loaded = load_model(model_name)
    return with_precision(loaded, precision, device=device).info, loaded.source()


class DriverModel(EmbeddingModel):
    """A model as a Ray job's driver knows it: the info and source :func:`run_info` reads (the driver commits what
    its workers embed; it never embeds)."""

    def __init__(self, model_name: str, precision: str, device: str) -> None:
        self.info, self._source = run_info(model_name, precision, device)
        self.device = device

    def source(self) -> dict[str, str] | None:
        """The workers' model's ``source()``."""
        return self._source

    def embed(self, windows: np.ndarray) -> list[np.ndarray]:
        """Refused: the Ray workers embed with the model."""
        raise TypeError(f"{self.info.name} runs on the Ray workers, not in their driver")


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
