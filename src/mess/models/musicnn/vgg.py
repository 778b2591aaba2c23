"""musicnn's VGG baseline (``musicnn/models.py::vgg``) in PyTorch, loadable from its TF1 checkpoints.

Five blocks of 3x3 conv (128 filters, 'same') -> ReLU -> batch norm -> max-pool over a
batch-normalised log-mel patch [187 frames, 96 bands]; the pools shrink it to
92x48, 46x24, 23x12, 11x6 and 2x1, and a dense layer maps the flattened last pool (256)
to 50 tags. Tensors are [batch, channels, time, freq] inside.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mess.models.musicnn.network import TF_BN_EPSILON, rising_sign, tf_batch_norms, tf_tensor
from mess.models.musicnn.shapes import VGG_LAYERS

VGG_POOLS = ((4, 1), (2, 2), (2, 2), (2, 2), (4, 4))  # TF pool sizes; strides are (2, 2) except the last (4, 4)


class VggNetwork(nn.Module):
    """musicnn's VGG: 5 conv blocks of ``filters`` channels, then a dense layer on the flat last pool."""

    # oneDNN runs the 128 -> 128 3x3 convs 1.33x faster on this layout (CPU, same outputs to 6e-6 relative)
    memory_format = torch.channels_last

    def __init__(self, num_classes: int = 50, filters: int = 128) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(1 if i == 0 else filters, filters, 3, padding=1) for i in range(5)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(1 if i == 0 else filters, eps=TF_BN_EPSILON) for i in range(6)])
        self.pools = nn.ModuleList([nn.MaxPool2d(size, stride=(4, 4) if size == (4, 4) else (2, 2))
                                    for size in VGG_POOLS])
        self.output = nn.Linear(2 * filters, num_classes)
        self.eval()

    def forward(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run log-mel patches [batch, 187, 96]; return TF's features.

        ``pool1..pool4`` are maps [b, time, freq, channels] (TF's layout), ``pool5`` the
        flattened last pool [b, 256] in TF's (time, freq, channel) order, ``taggram`` the
        sigmoid outputs [b, 50].
        """
        # a ModuleList yields plain Modules: name the layer types it holds
        convs = cast(list[nn.Conv2d], list(self.convs))
        bns = cast(list[nn.BatchNorm2d], list(self.bns))
        x = bns[0](mel.unsqueeze(1))
        maps = []
        for conv, bn, pool in zip(convs, bns[1:], self.pools, strict=False):
            # pool(bn(relu(conv(x)))), with the pool first: ReLU and the norm see 1/4 to 1/16 of the data
            sign = rising_sign(bn)
            bias = None if conv.bias is None else conv.bias * sign
            flipped = F.conv2d(x, conv.weight * sign[:, None, None, None], bias, padding=1)
            x = bn(F.relu(pool(flipped) * sign[:, None, None]))
            maps.append(x)
        flat = maps[-1].permute(0, 2, 3, 1).flatten(1)
        return {
            **{f"pool{i + 1}": m.permute(0, 2, 3, 1) for i, m in enumerate(maps[:-1])},
            "pool5": flat,
            "taggram": torch.sigmoid(self.output(flat)),
        }

    def patch_vectors(self, mel: torch.Tensor) -> list[torch.Tensor]:
        """One vector per patch and layer, in :data:`VGG_LAYERS` order: pools 1-4 averaged over time and freq."""
        out = self.forward(mel)
        return [out[name].mean(dim=(1, 2)) if name in VGG_LAYERS[:4] else out[name] for name in VGG_LAYERS]

    def load_tf_weights(self, tensors: dict[str, np.ndarray]) -> None:
        """Copy weights from a musicnn VGG TF1 checkpoint dict (Adam slots are ignored)."""

        def get(name: str) -> torch.Tensor:
            return tf_tensor(tensors, name)

        state: dict[str, torch.Tensor] = {}
        for i in range(5):
            state[f"convs.{i}.weight"] = get(f"{i + 1}CNN/kernel").permute(3, 2, 0, 1)  # [kh,kw,in,out] -> [o,i,kh,kw]
            state[f"convs.{i}.bias"] = get(f"{i + 1}CNN/bias")
        state.update(tf_batch_norms(tensors, 6))
        state["output.weight"] = get("dense/kernel").T
        state["output.bias"] = get("dense/bias")
        self.load_state_dict(state)
