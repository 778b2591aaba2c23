"""use_gemm_convs on HuBERT forms it must leave alone: expected hidden states from transformers' own forward."""

from __future__ import annotations

import copy

import torch
from transformers import HubertConfig, HubertModel

from mess.models.hubert_gemm import GemmFeatureEncoder, normed_patch_conv, use_gemm_convs


def test_a_positional_conv_with_batch_norm_is_kept_and_a_second_swap_changes_nothing() -> None:
    """GemmPositionalConv has no batch norm: a HuBERT whose positional conv has one (conv_pos_batch_norm) keeps
    transformers' module, and its hidden states; swapping twice wraps nothing twice."""
    torch.manual_seed(2)
    config = HubertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                          conv_dim=(16,) * 3, conv_kernel=(10, 3, 2), conv_stride=(5, 2, 2), conv_bias=False,
                          num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, conv_pos_batch_norm=True)
    original = HubertModel(config).eval()
    swapped = use_gemm_convs(copy.deepcopy(original))
    assert type(swapped.encoder.pos_conv_embed).__name__ == "HubertPositionalConvEmbedding"
    assert isinstance(swapped.feature_extractor, GemmFeatureEncoder)
    again = use_gemm_convs(swapped)
    assert isinstance(again.feature_extractor, GemmFeatureEncoder)
    assert type(again.encoder.pos_conv_embed).__name__ == "HubertPositionalConvEmbedding"
    values = torch.randn(2, 4000)
    with torch.no_grad():
        want = original(values, output_hidden_states=True).hidden_states
        got = again(values, output_hidden_states=True).hidden_states
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)


def test_the_first_conv_s_group_norm_of_a_silent_window_is_its_bias() -> None:
    """A window of zeros: every channel's variance is 0, and GroupNorm's eps keeps the output finite (its bias)."""
    torch.manual_seed(3)
    conv = torch.nn.Conv1d(1, 8, 10, stride=5, bias=False)
    norm = torch.nn.GroupNorm(8, 8)
    with torch.no_grad():
        norm.bias.copy_(torch.randn(8))
        x = torch.zeros(2, 400)
        want = norm(conv(x[:, None])).transpose(1, 2)
        got = normed_patch_conv(x[:, :, None], conv.weight, 5, norm)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
