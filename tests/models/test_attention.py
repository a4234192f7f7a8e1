"""Attention layers: the SDPA layer against the seed's formula, weights, additive attention, SE, CBAM."""

from __future__ import annotations

import math

import pytest
import torch

from attnserve.models.attention import CBAM, AdditiveAttention, AttentionLayer, AttentionPool, SqueezeExcite, get_attn


def _naive_attention(layer: AttentionLayer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The seed's formula written out: per head softmax(Q K^T / sqrt(d_k)) V, heads concatenated, projected."""
    batch, tokens, dim = x.shape
    heads, d_k = layer.num_heads, dim // layer.num_heads
    q, k, v = layer.q_proj(x), layer.k_proj(x), layer.v_proj(x)
    outputs, weights = [], []
    for head in range(heads):
        cols = slice(head * d_k, (head + 1) * d_k)
        scores = q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(d_k)  # (B, N, N)
        probabilities = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
        probabilities = probabilities / probabilities.sum(dim=-1, keepdim=True)
        outputs.append(probabilities @ v[..., cols])
        weights.append(probabilities)
    return layer.out_proj(torch.cat(outputs, dim=-1)), torch.stack(weights, dim=1)


@pytest.fixture(scope="module")
def layer() -> AttentionLayer:
    torch.manual_seed(0)
    return AttentionLayer(dim=24, num_heads=3).eval()


def test_sdpa_path_equals_naive_formula(layer: AttentionLayer) -> None:
    x = torch.randn(2, 7, 24)
    expected, _ = _naive_attention(layer, x)
    fused = layer(x)
    assert fused.shape == (2, 7, 24)
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=1e-5)


def test_weights_path_equals_naive_and_rows_sum_to_one(layer: AttentionLayer) -> None:
    x = torch.randn(2, 7, 24)
    expected_out, expected_weights = _naive_attention(layer, x)
    out, weights = layer(x, return_attention=True)
    assert weights.shape == (2, 3, 7, 7)
    torch.testing.assert_close(out, expected_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights, expected_weights, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(2, 3, 7))
    assert (weights >= 0).all()


def test_cross_attention_shapes(layer: AttentionLayer) -> None:
    query, memory = torch.randn(2, 3, 24), torch.randn(2, 9, 24)
    out, weights = layer(query, memory, return_attention=True)
    assert out.shape == (2, 3, 24) and weights.shape == (2, 3, 3, 9)
    torch.testing.assert_close(layer(query, memory), out, atol=1e-5, rtol=1e-5)


def test_dim_not_divisible_by_heads_is_rejected() -> None:
    with pytest.raises(ValueError, match="divisible"):
        AttentionLayer(dim=10, num_heads=3)


def test_additive_attention_shapes_weights_and_gradients() -> None:
    torch.manual_seed(0)
    attention = AdditiveAttention(query_dim=5, key_dim=6, hidden_dim=8)
    query = torch.randn(2, 5, requires_grad=True)
    keys = torch.randn(2, 9, 6, requires_grad=True)
    values = torch.randn(2, 9, 4, requires_grad=True)
    context, weights = attention(query, keys, values)
    assert context.shape == (2, 4) and weights.shape == (2, 9)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(2))
    torch.testing.assert_close(context, torch.einsum("bn,bnd->bd", weights, values))
    context.square().sum().backward()
    for tensor in (query, keys, values, *attention.parameters()):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0
    many_context, many_weights = attention(torch.randn(2, 3, 5), keys)
    assert many_context.shape == (2, 3, 6) and many_weights.shape == (2, 3, 9)


def test_attention_pool_weights_follow_keys() -> None:
    torch.manual_seed(0)
    pool = AttentionPool(dim=6, hidden_dim=6)
    tokens = torch.randn(3, 5, 6)
    pooled, weights = pool(tokens)
    assert pooled.shape == (3, 6) and weights.shape == (3, 5)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(3))


@pytest.mark.parametrize("block_class", [SqueezeExcite, CBAM])
def test_channel_attention_blocks_keep_shape_and_pass_gradients(block_class: type) -> None:
    torch.manual_seed(0)
    block = block_class(16)
    x = torch.randn(2, 16, 6, 5, requires_grad=True)
    out = block(x)
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(parameter.grad is not None for parameter in block.parameters())


def test_cbam_map_is_a_gate_and_refines_input() -> None:
    torch.manual_seed(0)
    block = CBAM(8)
    x = torch.randn(2, 8, 5, 7)
    refined, spatial_map = block.forward_with_map(x)
    assert spatial_map.shape == (2, 1, 5, 7)
    assert ((spatial_map > 0) & (spatial_map < 1)).all()
    torch.testing.assert_close(refined, x * block.channel(x) * spatial_map)


def test_get_attn_factory() -> None:
    assert get_attn("se") is SqueezeExcite
    assert get_attn("cbam") is CBAM
    assert get_attn(None) is None and get_attn("none") is None
    with pytest.raises(ValueError, match="cbam"):
        get_attn("eca")
