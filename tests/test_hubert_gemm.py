"""HuBERT's convolutions as matrix products (the GPU path of MertModel) against torch's own convolutions, on the CPU."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F
from transformers import HubertConfig, HubertModel

from mess.models import hubert_gemm
from mess.models.hubert_gemm import (
    GemmFeatureEncoder,
    GemmPositionalConv,
    grouped_same_conv,
    strided_conv,
    use_gemm_convs,
)


@pytest.mark.parametrize(
    ("c_in", "kernel", "stride", "length"),
    [(1, 10, 5, 1003), (24, 3, 2, 101), (48, 3, 2, 101), (48, 3, 2, 100), (80, 2, 2, 77), (48, 7, 3, 64),
     (40, 4, 1, 30)],
)
def test_strided_conv_is_conv1d_whether_it_copies_patches_or_not(c_in: int, kernel: int, stride: int,
                                                                 length: int) -> None:
    torch.manual_seed(kernel * 100 + c_in)
    assert (kernel * c_in <= hubert_gemm._IM2COL_WIDTH) == (c_in < 40), "both ways are covered"
    x = torch.randn(3, c_in, length)
    weight, bias = torch.randn(8, c_in, kernel), torch.randn(8)
    want = F.conv1d(x, weight, bias, stride=stride)
    got = strided_conv(x.transpose(1, 2).contiguous(), weight, bias, stride)
    assert got.shape == (3, want.shape[2], 8)
    torch.testing.assert_close(got.transpose(1, 2), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", [16, 15, 3])
@pytest.mark.parametrize("block", [16, 5, 1])
def test_grouped_same_conv_is_huberts_padded_grouped_conv(kernel: int, block: int,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hubert_gemm, "_BLOCK", block)
    torch.manual_seed(kernel)
    x = torch.randn(5, 50, 32)
    weight, bias = torch.randn(32, 8, kernel), torch.randn(32)
    want = F.conv1d(x.transpose(1, 2), weight, bias, padding=kernel // 2, groups=4)[:, :, :50]  # even k: last dropped
    torch.testing.assert_close(grouped_same_conv(x, weight, bias, 4), want.transpose(1, 2), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("norm", ["group", "layer"])  # MERT-95M's encoder, and MERT-330M's (stable layer norm)
def test_a_hubert_model_with_gemm_convs_gives_the_same_hidden_states(norm: str) -> None:
    torch.manual_seed(1)
    config = HubertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                          conv_dim=(64,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
                          conv_bias=norm == "layer", feat_extract_norm=norm, do_stable_layer_norm=norm == "layer",
                          num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    network = HubertModel(config).eval()
    fast = use_gemm_convs(copy.deepcopy(network))
    assert isinstance(fast.feature_extractor, GemmFeatureEncoder)
    assert isinstance(fast.encoder.pos_conv_embed, GemmPositionalConv)
    assert use_gemm_convs(fast).feature_extractor is fast.feature_extractor, "swapping twice changes nothing"
    assert fast.state_dict().keys() == network.state_dict().keys(), "checkpoints load into either"
    x = torch.randn(2, 24000 + 17)
    with torch.inference_mode():
        want = network(x, output_hidden_states=True).hidden_states
        got = fast(x, output_hidden_states=True).hidden_states
    assert len(got) == len(want) == 3
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_a_group_norm_over_several_channels_is_computed_as_torch_does() -> None:
    """HuBERT builds one group per channel; any other grouping takes torch's own group norm."""
    torch.manual_seed(2)
    config = HubertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                          conv_dim=(16,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4)
    network = HubertModel(config).eval()
    norm = torch.nn.GroupNorm(4, 16)
    torch.nn.init.normal_(norm.weight)
    network.feature_extractor.conv_layers[0].layer_norm = norm
    fast = use_gemm_convs(copy.deepcopy(network))
    x = torch.randn(2, 8000)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x).last_hidden_state, network(x).last_hidden_state, rtol=1e-4, atol=1e-4)
