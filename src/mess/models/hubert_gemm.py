"""HuBERT's convolutions as matrix products in (batch, time, channels) layout: same weights, same function.

On a GPU, cuDNN runs the 1-d convolutions of HuBERT's waveform encoder (7 strided
layers) and of its positional embedding (kernel 128, 16 groups) in bf16 with
legacy, non-tensor-core kernels and layout transposes: on an H200 they took more
than half of MERT-95M's forward time (``benchmarks/gpu_extract.py --variants``).
Written as matrix products over strided views of channels-last activations, the
same arithmetic runs on the tensor cores. :func:`use_gemm_convs` swaps the modules
in place; parameters (and so ``state_dict`` keys) are shared with the originals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers.models.hubert.modeling_hubert import (
    HubertFeatureEncoder,
    HubertModel,
    HubertPositionalConvEmbedding,
)

_IM2COL_WIDTH = 128  # a layer whose kernel x input channels is at most this copies its patches (the first, Cin = 1)
_BLOCK = 16  # time steps per block of the positional conv's block-Toeplitz products


def strided_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int) -> torch.Tensor:
    """``conv1d`` without padding on channels-last input: x [B, L, Cin], weight [Cout, Cin, k] -> [B, L', Cout]."""
    batch, length, c_in = x.shape
    c_out, _, k = weight.shape
    out_len = (length - k) // stride + 1
    if k * c_in <= _IM2COL_WIDTH:  # few taps x channels: copy the patches, one product
        patches = x.unfold(1, k, stride)[:, :out_len].reshape(batch, out_len, c_in * k)
        return F.linear(patches, weight.reshape(c_out, c_in * k), bias)
    # Row t of the [B, M, stride * Cin] view holds input steps t*stride .. t*stride + stride - 1, so output t is the
    # sum over q of row t + q times the taps q*stride .. q*stride + stride - 1: ceil(k / stride) products, no copy.
    phases = -(-k // stride)
    rows = out_len + phases - 1
    needed = rows * stride
    x = F.pad(x, (0, 0, 0, needed - length)) if needed > length else x[:, :needed].contiguous()
    view = x.view(batch, rows, stride * c_in)  # each product below reads a [B * rows, n * Cin] view of it, no copy
    out: torch.Tensor | None = None
    for q in range(phases):
        taps = weight[:, :, q * stride : min(k, (q + 1) * stride)]  # [Cout, Cin, n]
        n = taps.shape[2]
        part = F.linear(view[:, :, : n * c_in], taps.permute(0, 2, 1).reshape(c_out, n * c_in))[:, q : q + out_len]
        out = part if out is None else out + part
    assert out is not None  # k >= 1
    return out if bias is None else out + bias


def grouped_same_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> torch.Tensor:
    """HuBERT's positional conv (padding k // 2, the extra last step of an even k dropped) on channels-last input:
    x [B, L, C], weight [C, C / groups, k] -> [B, L, C].

    Time is cut into blocks of ``_BLOCK`` steps: output block b is the sum over q of input block b + q times a
    block-Toeplitz matrix of the taps, so the conv is ceil((k + _BLOCK - 1) / _BLOCK) batched products per group
    (about 1.1x its multiply-adds) and its k-fold patches are never copied.
    """
    batch, length, channels = x.shape
    k = weight.shape[2]
    per_group = channels // groups
    width = _BLOCK * per_group
    n_q = -(-(k + _BLOCK - 1) // _BLOCK)
    out_blocks = -(-length // _BLOCK)
    in_blocks = out_blocks + n_q - 1
    # [groups, B, in_blocks * _BLOCK, per_group], zero outside the input (the conv's padding and the block tail)
    padded = x.new_zeros(groups, batch, in_blocks * _BLOCK, per_group)
    padded[:, :, k // 2 : k // 2 + length] = x.view(batch, length, groups, per_group).permute(2, 0, 1, 3)
    blocks = padded.view(groups, batch * in_blocks, width)
    products = torch.bmm(blocks, toeplitz_taps(weight, groups, n_q))  # [groups, B * in_blocks, n_q * width]
    products = products.view(groups, batch, in_blocks, n_q, width)
    out = products[:, :, :out_blocks, 0].clone()
    for q in range(1, n_q):
        out += products[:, :, q : q + out_blocks, q]
    out = out.view(groups, batch, out_blocks * _BLOCK, per_group)[:, :, :length]
    out = out.permute(1, 2, 0, 3).reshape(batch, length, channels)
    return out if bias is None else out + bias


def toeplitz_taps(weight: torch.Tensor, groups: int, n_q: int) -> torch.Tensor:
    """[groups, _BLOCK * Cin, n_q * _BLOCK * Cout]: column block q maps an input block to its share of the output
    block q blocks before it (tap j = q * _BLOCK + input step - output step, zero outside 0..k-1)."""
    c_out, per_group, k = weight.shape
    q = torch.arange(n_q, device=weight.device)[:, None, None]
    step_in = torch.arange(_BLOCK, device=weight.device)[None, :, None]
    step_out = torch.arange(_BLOCK, device=weight.device)[None, None, :]
    tap = q * _BLOCK + step_in - step_out  # [n_q, in step, out step]
    valid = (tap >= 0) & (tap < k)
    w = weight.view(groups, c_out // groups, per_group, k)[..., tap.clamp(0, k - 1)] * valid  # [g, o, i, q, si, so]
    return w.permute(0, 4, 2, 3, 5, 1).reshape(groups, _BLOCK * per_group, n_q * _BLOCK * (c_out // groups))


class GemmFeatureEncoder(nn.Module):
    """``HubertFeatureEncoder`` (group- or layer-normed) on the same conv layers, computed channels-last."""

    def __init__(self, encoder: HubertFeatureEncoder) -> None:
        super().__init__()
        self.conv_layers: Sequence[Any] = encoder.conv_layers

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        """[B, samples] -> [B, C, frames], as the original returns it (a transposed view here)."""
        x = input_values[:, :, None]
        for layer in self.conv_layers:
            conv, norm = layer.conv, getattr(layer, "layer_norm", None)
            if (isinstance(norm, nn.GroupNorm) and norm.num_groups == conv.out_channels
                    and conv.in_channels * conv.kernel_size[0] <= _IM2COL_WIDTH):  # one group per channel
                x = normed_patch_conv(x, conv.weight, conv.stride[0], norm)
            else:
                x = strided_conv(x, conv.weight, conv.bias, conv.stride[0])
                if isinstance(norm, nn.GroupNorm):
                    x = F.group_norm(x.transpose(1, 2), norm.num_groups, norm.weight, norm.bias, norm.eps)
                    x = x.transpose(1, 2)
                elif isinstance(norm, nn.LayerNorm):
                    x = norm(x)
            x = layer.activation(x)
        return x.transpose(1, 2)


def normed_patch_conv(x: torch.Tensor, weight: torch.Tensor, stride: int, norm: nn.GroupNorm) -> torch.Tensor:
    """A conv followed by a GroupNorm of one group per channel (HuBERT's first layer), as one product per window:
    x [B, L, Cin] -> [B, L', Cout].

    Each output channel's mean and variance over time follow from the patches' mean and covariance, so the
    normalisation folds into per-window weights and the largest activation of the network is written once, not
    read back for statistics and rewritten normalised. The conv's bias, removed by the normalisation, drops out.
    """
    batch, length, c_in = x.shape
    c_out, _, k = weight.shape
    out_len = (length - k) // stride + 1
    patches = x.unfold(1, k, stride)[:, :out_len].reshape(batch, out_len, c_in * k)
    w = weight.reshape(c_out, c_in * k).float()
    exact = patches.float()
    mean = exact.mean(dim=1)  # [B, K]
    cov = torch.bmm(exact.transpose(1, 2), exact) / out_len - mean[:, :, None] * mean[:, None, :]
    var = torch.einsum("ck,bkl,cl->bc", w, cov, w).clamp_min(0)
    scale = norm.weight.float() * torch.rsqrt(var + norm.eps)  # [B, Cout]
    shift = norm.bias.float() - (mean @ w.T) * scale
    folded = torch.cat([w.T[None] * scale[:, None], shift[:, None]], dim=1)  # [B, K + 1, Cout]; the last row: shift
    ones = patches.new_ones(batch, out_len, 1)
    return torch.bmm(torch.cat([patches, ones], dim=2), folded.to(patches.dtype))


class GemmPositionalConv(nn.Module):
    """``HubertPositionalConvEmbedding`` (weight-normed, no batch norm) on the same conv, computed channels-last."""

    def __init__(self, embedding: HubertPositionalConvEmbedding) -> None:
        super().__init__()
        self.conv: nn.Conv1d = embedding.conv
        self.activation: nn.Module = embedding.activation

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """[B, L, C] -> [B, L, C]."""
        conv = self.conv
        return self.activation(grouped_same_conv(hidden_states, conv.weight, conv.bias, conv.groups))


def use_gemm_convs(network: HubertModel) -> HubertModel:
    """Swap a HubertModel's feature encoder and positional conv for their matrix-product forms, in place."""
    encoder = network.feature_extractor
    if not isinstance(encoder, GemmFeatureEncoder) and all(
        hasattr(layer, "conv") and hasattr(layer, "activation") for layer in encoder.conv_layers
    ):
        network.set_submodule("feature_extractor", GemmFeatureEncoder(encoder))
    embedding = network.encoder.pos_conv_embed
    if not isinstance(embedding, GemmPositionalConv) and getattr(embedding, "batch_norm", None) is None:
        network.set_submodule("encoder.pos_conv_embed", GemmPositionalConv(embedding))
    return network
