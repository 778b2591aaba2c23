"""The musicnn architecture (Pons & Serra, 2019) in PyTorch, loadable from its TF1 checkpoints.

Mirrors ``musicnn/models.py::build_musicnn``: a batch-normalised log-mel input feeds a
musically motivated front-end (two timbral and three temporal conv blocks, each
conv -> ReLU -> batch norm -> max over frequency), a residual 1-D conv mid-end, and a
max+mean temporal-pooling dense back-end. Tensors are [batch, channels, time(, freq)].
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mess.models.musicnn.shapes import FRAME_LAYERS, N_MELS, PATCH_LAYERS

TF_BN_EPSILON = 1e-3  # tf.compat.v1.layers.batch_normalization default


def _bn(size: int) -> nn.BatchNorm1d:
    """A batch norm with TF's default epsilon (the layout-agnostic 1-D variant suffices)."""
    return nn.BatchNorm1d(size, eps=TF_BN_EPSILON)


def _channel_bn(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """Apply a 1-D batch norm over dim 1 of a tensor of any rank."""
    return bn(x.flatten(2)).view_as(x)


def _pad_time(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Zero-pad the time axis (dim 2) of [batch, channels, time(, freq)]."""
    pad = (0, 0, before, after) if x.dim() == 4 else (before, after)
    return F.pad(x, pad)



def rising_sign(bn: nn.BatchNorm1d | nn.BatchNorm2d) -> torch.Tensor:
    """Per channel, +1 where ``bn(relu(z))`` rises with z (the norm's scale is >= 0) and -1 where it falls.

    A max over any window of ``bn(relu(z))`` is then ``bn(relu(sign * max(sign * z)))``, the same
    value to the bit (float rounding is monotonic, negation exact): a pooling layer can run before
    ReLU and batch norm, which then see only the pooled data.
    """
    if bn.running_var is None:
        raise ValueError("a batch norm without running statistics")
    return torch.where(bn.weight * torch.rsqrt(bn.running_var + bn.eps) >= 0, 1.0, -1.0)


def tf_tensor(tensors: dict[str, np.ndarray], name: str) -> torch.Tensor:
    """One TF1 checkpoint tensor as a contiguous float32 torch tensor."""
    return torch.from_numpy(np.ascontiguousarray(tensors[name], dtype=np.float32))


def tf_batch_norms(tensors: dict[str, np.ndarray], count: int) -> dict[str, torch.Tensor]:
    """State of the BatchNorm layers ``bns.0`` .. ``bns.{count - 1}`` from TF1's ``batch_normalization``,
    ``batch_normalization_1``, ... (gamma, beta, moving mean and variance)."""
    state: dict[str, torch.Tensor] = {}
    for i in range(count):
        prefix = "batch_normalization" + (f"_{i}" if i else "")
        state[f"bns.{i}.weight"] = tf_tensor(tensors, f"{prefix}/gamma")
        state[f"bns.{i}.bias"] = tf_tensor(tensors, f"{prefix}/beta")
        state[f"bns.{i}.running_mean"] = tf_tensor(tensors, f"{prefix}/moving_mean")
        state[f"bns.{i}.running_var"] = tf_tensor(tensors, f"{prefix}/moving_variance")
        state[f"bns.{i}.num_batches_tracked"] = torch.tensor(0)
    return state

class MusicnnNetwork(nn.Module):
    """musicnn with 64 mid-end filters and 200 back-end units (the MSD/MTT musicnn models)."""

    memory_format = torch.contiguous_format  # channels-last measured slower for these convs (0.89x on CPU)

    def __init__(self, num_classes: int = 50, midend_filters: int = 64, backend_units: int = 200) -> None:
        super().__init__()
        self.timbral_convs = nn.ModuleList(
            [nn.Conv2d(1, 204, (7, int(0.4 * N_MELS))), nn.Conv2d(1, 204, (7, int(0.7 * N_MELS)))]
        )
        self.temporal_convs = nn.ModuleList([nn.Conv2d(1, 51, (k, 1)) for k in (128, 64, 32)])
        frontend = 2 * 204 + 3 * 51
        self.midend_convs = nn.ModuleList(
            [nn.Conv1d(frontend, midend_filters, 7)]
            + [nn.Conv1d(midend_filters, midend_filters, 7) for _ in range(2)]
        )
        pooled = frontend + 3 * midend_filters
        self.dense = nn.Linear(2 * pooled, backend_units)
        self.output = nn.Linear(backend_units, num_classes)
        sizes = [1, 204, 204, 51, 51, 51] + [midend_filters] * 3 + [2 * pooled, backend_units]
        self.bns = nn.ModuleList([_bn(size) for size in sizes])
        self.eval()

    def forward(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run log-mel patches [batch, time, 96] through the network.

        Returns musicnn's features: frame-level ``timbral`` [b, t, 408], ``temporal``
        [b, t, 153], ``cnn1..3`` [b, t, 64]; patch-level ``mean_pool``/``max_pool`` [b, 753],
        ``penultimate`` [b, 200] and ``taggram`` (sigmoid outputs) [b, 50].
        """
        # a ModuleList yields plain Modules: name the layer types it holds
        timbral = cast(list[nn.Conv2d], list(self.timbral_convs))
        temporal = cast(list[nn.Conv2d], list(self.temporal_convs))
        bns = cast(list[nn.BatchNorm1d], list(self.bns))
        x = _channel_bn(bns[0], mel.unsqueeze(1))
        blocks = []
        for conv, bn in zip(timbral, bns[1:3], strict=False):
            blocks.append(self._frontend_block(conv, bn, _pad_time(x, 3, 3)))
        for conv, bn in zip(temporal, bns[3:6], strict=False):
            k = conv.kernel_size[0]
            blocks.append(self._frontend_block(conv, bn, _pad_time(x, (k - 1) // 2, k // 2)))
        frontend = torch.cat(blocks, dim=1)
        midend = [frontend]
        for i, (conv1d, bn) in enumerate(zip(self.midend_convs, bns[6:9], strict=False)):
            out = bn(F.relu(conv1d(_pad_time(midend[-1], 3, 3))))
            midend.append(out if i == 0 else out + midend[-1])
        features = torch.cat(midend, dim=1)
        max_pool, mean_pool = features.amax(dim=2), features.mean(dim=2)
        flat = torch.stack([max_pool, mean_pool], dim=2).flatten(1)  # TF flattens [753, 2]
        penultimate = bns[10](F.relu(self.dense(bns[9](flat))))
        return {
            "timbral": frontend[:, :408].transpose(1, 2),
            "temporal": frontend[:, 408:].transpose(1, 2),
            **{f"cnn{i}": midend[i].transpose(1, 2) for i in (1, 2, 3)},
            "mean_pool": mean_pool,
            "max_pool": max_pool,
            "penultimate": penultimate,
            "taggram": torch.sigmoid(self.output(penultimate)),
        }

    @staticmethod
    def _frontend_block(conv: nn.Conv2d, bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
        """conv -> ReLU -> batch norm -> max over the whole frequency axis: [b, c, t].

        ReLU and a batch norm are monotonic per channel (increasing where the norm's scale is
        positive, decreasing where negative), so the frequency max is taken on the raw conv
        output first (its max where the scale is >= 0, its min elsewhere) and the rest runs
        on 1/f of the data. The min is taken as ``-max`` of the conv with negated weights
        (exact in floating point), so one ``amax`` pass serves every channel: 2-5x faster than
        ``aminmax``. Same result up to float32 round-off of the conv.
        """
        bias = conv.bias
        if bias is None:
            raise ValueError("musicnn's front-end needs conv biases")
        sign = rising_sign(bn)
        peak = F.conv2d(x, conv.weight * sign[:, None, None, None]).amax(dim=3) * sign[:, None]
        return bn(F.relu(peak + bias[:, None]))

    def patch_vectors(self, mel: torch.Tensor) -> list[torch.Tensor]:
        """One vector per patch and layer, in ``FRAME_LAYERS + PATCH_LAYERS`` order (frame layers averaged)."""
        out = self.forward(mel)
        return [out[name].mean(dim=1) for name in FRAME_LAYERS] + [out[name] for name in PATCH_LAYERS]

    def load_tf_weights(self, tensors: dict[str, np.ndarray]) -> None:
        """Copy weights from a musicnn TF1 checkpoint dict (Adam slots are ignored)."""

        def get(name: str) -> torch.Tensor:
            return tf_tensor(tensors, name)

        convs = [f"timbral_convs.{i}" for i in range(2)] + [f"temporal_convs.{i}" for i in range(3)]
        convs += [f"midend_convs.{i}" for i in range(3)]
        state: dict[str, torch.Tensor] = {}
        for i, path in enumerate(convs):
            prefix = "conv2d" + (f"_{i}" if i else "")
            kernel = get(f"{prefix}/kernel").permute(3, 2, 0, 1)  # [kh,kw,in,out] -> [out,in,kh,kw]
            if path.startswith("midend"):  # full-width kernel as Conv1d: [o, 1, 7, c] -> [o, c, 7]
                kernel = kernel[:, 0].transpose(1, 2)
            state[f"{path}.weight"] = kernel
            state[f"{path}.bias"] = get(f"{prefix}/bias")
        state.update(tf_batch_norms(tensors, len(self.bns)))
        for tf_name, path in (("dense", "dense"), ("dense_1", "output")):
            state[f"{path}.weight"] = get(f"{tf_name}/kernel").T
            state[f"{path}.bias"] = get(f"{tf_name}/bias")
        self.load_state_dict(state)
