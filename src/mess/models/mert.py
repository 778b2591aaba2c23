"""MERT (m-a-p/MERT-v1-95M / 330M) on transformers' built-in HubertModel, no remote code.

MERT checkpoints use HuBERT's parameter names, so the weights load strictly into
``HubertModel`` built from a ``HubertConfig`` translated from MERT's config.json.
The positional conv's ``weight_g``/``weight_v`` are renamed to weight-norm
parametrizations by ``from_pretrained``. The model card licence is CC BY-NC 4.0.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import cast

import numpy as np
import torch
from safetensors import SafetensorError
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

from mess.models.base import EmbeddingModel
from mess.models.hubert_gemm import use_gemm_convs
from mess.models.mert_config import MERT_RATE, _local_revision, check_hubert_shaped, mert_info, read_config

log = logging.getLogger(__name__)

_NOT_CONFIG = ("model_type", "auto_map", "architectures", "_name_or_path", "transformers_version", "torch_dtype")



def hubert_config(mert_config: dict) -> HubertConfig:
    """Translate a MERT (or HuBERT) config.json dict to a HubertConfig for inference."""
    check_hubert_shaped(mert_config)
    fields = {k: v for k, v in mert_config.items() if k not in _NOT_CONFIG}
    fields["mask_time_prob"] = max(float(fields.get("mask_time_prob", 0.05)), 0.05)  # keeps masked_spec_embed expected
    fields["tie_last_hidden_states"] = True  # last hidden state after the final LayerNorm (stable-LN 330M)
    return HubertConfig(**fields)


class MertModel(EmbeddingModel):
    """All hidden states of a MERT-shaped HubertModel, mean-pooled over time per window."""

    def __init__(self, network: HubertModel, processor: Wav2Vec2FeatureExtractor, name: str, revision: str,
                 device: str = "cpu") -> None:
        if torch.device(device).type == "cuda":  # cuDNN runs HuBERT's 1-d convs off the tensor cores
            use_gemm_convs(network)
        self.network = network.eval().to(device)
        self.processor = processor
        self.device = device
        self.info = mert_info(name, revision, int(processor.sampling_rate), network.config.num_hidden_layers,
                              network.config.hidden_size)

    @classmethod
    def from_pretrained(cls, source: str, *, revision: str | None = None, name: str | None = None,
                        device: str = "cpu", local_files_only: bool = False) -> MertModel:
        """Load from a hub repo id (at ``revision``; from the local hub cache alone with ``local_files_only``) or a
        local folder; never runs remote code."""
        try:
            source.encode()
        except UnicodeEncodeError:  # a folder named in other bytes: transformers and safetensors take UTF-8 paths only
            raise ValueError("its path is not UTF-8 text, which transformers cannot open; rename the folder") from None
        config = hubert_config(read_config(source, revision, local_files_only))
        # transformers takes revision=None as the repo's default branch, though its annotation says str
        try:
            loaded = HubertModel.from_pretrained(
                source, config=config, revision=revision,  # type: ignore[arg-type]
                trust_remote_code=False, local_files_only=local_files_only, ignore_mismatched_sizes=True,
                output_loading_info=True)
        except (RuntimeError, SafetensorError) as exc:  # torch's and safetensors' own for a file cut short: a traceback
            why = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise ValueError(f"its weights cannot be read ({why}); is the weights file whole?") from exc
        network, loading = cast(tuple[HubertModel, dict], loaded)  # output_loading_info: with what went where
        _check_weights(loading)
        try:
            processor = Wav2Vec2FeatureExtractor.from_pretrained(
                source, revision=revision, trust_remote_code=False,  # type: ignore[arg-type]
                local_files_only=local_files_only)
        except OSError as exc:
            if (Path(source) / "preprocessor_config.json").is_file():  # its rate, unread: MERT's 24 kHz may be wrong
                raise ValueError(f"cannot read its preprocessor_config.json ({' '.join(str(exc).split())})") from exc
            log.warning("%s has no preprocessor_config.json; using MERT's (24 kHz, normalised)", source)
            processor = Wav2Vec2FeatureExtractor(sampling_rate=MERT_RATE, do_normalize=True, return_attention_mask=True)
        label = name or Path(source).name.lower()
        return cls(network, processor, label, revision or _local_revision(source), device)

    def in_dtype(self, dtype: torch.dtype, label: str) -> MertModel:
        """A copy with its weights in ``dtype`` (bf16 or fp16; cheaper than autocast, which re-casts weights and
        runs norms in fp32), as its own run: its revision ends in ``+label``."""
        network = copy.deepcopy(self.network).to(dtype)
        return MertModel(network, self.processor, self.info.name, f"{self.info.revision}+{label}", self.device)

    @torch.inference_mode()
    def embed(self, windows: np.ndarray) -> list[np.ndarray]:
        """Per-layer time-averaged hidden states for a batch of equal-length windows."""
        values = torch.as_tensor(np.asarray(windows, dtype=np.float32)).to(self.device)
        if self.processor.do_normalize:  # Wav2Vec2FeatureExtractor's per-window normalisation, on the device
            mean = values.mean(dim=1, keepdim=True)
            values = (values - mean) / torch.sqrt(values.var(dim=1, unbiased=False, keepdim=True) + 1e-7)
        out = self.network(values.to(self.network.dtype), output_hidden_states=True)
        return [h.mean(dim=1, dtype=torch.float32).cpu().numpy() for h in out.hidden_states]


def _check_weights(loading: dict) -> None:
    """Raise ValueError when the checkpoint did not fill the network: transformers initialises what it lacks (another
    architecture's weights, or shapes its config.json does not give) at random, and warns in a log."""
    missing = sorted(set(loading["missing_keys"]) - {"masked_spec_embed"})  # used only to mask in training
    mismatched = sorted(str(m[0]) if isinstance(m, tuple) else str(m) for m in loading["mismatched_keys"])
    if mismatched:
        raise ValueError(f"{len(mismatched)} of its weights have other shapes than its config.json gives (such as "
                         f"{mismatched[0]}); is config.json the checkpoint's own?")
    if missing:
        raise ValueError(f"{len(missing)} of a MERT-shaped HubertModel's weights are not in the checkpoint "
                         f"(such as {missing[0]}); is it a MERT or HuBERT checkpoint?")
