"""Attention layers: multi-head scaled dot-product, additive (Bahdanau), squeeze-and-excitation, CBAM.

- `AttentionLayer`: Vaswani et al., "Attention Is All You Need" (2017), the seed's layer: Q/K/V
  projections, softmax(QK^T / sqrt(d_k)) V, optional return of the attention weights. The default path
  runs `F.scaled_dot_product_attention` (fused; exports to the ONNX `Attention` op at opset 23); the
  weights path writes the softmax out, because fused kernels never materialise the probabilities.
- `AdditiveAttention`: Bahdanau et al., "Neural Machine Translation by Jointly Learning to Align and
  Translate" (2015): score = v^T tanh(W_q q + W_k k).
- `SqueezeExcite`: Hu et al., "Squeeze-and-Excitation Networks" (2018).
- `CBAM`: Woo et al., "CBAM: Convolutional Block Attention Module" (2018): channel then spatial attention.

`get_attn('se' | 'cbam' | None)` picks a channel-attention block by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class AttentionLayer(nn.Module):
    """Multi-head scaled dot-product attention with separate Q/K/V projections.

    Args:
        dim: Model width D (input and output features).
        num_heads: Number of heads; `dim` must be divisible by it.
        qkv_bias: Bias in the Q/K/V projections.
        attn_drop: Dropout on the attention probabilities (training only).
        proj_drop: Dropout after the output projection (training only).
    """

    def __init__(
        self, dim: int, num_heads: int = 8, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.out_proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        return x.reshape(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)  # (B, heads, N, head_dim)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend from `query` to `key`/`value` (self-attention when both are None).

        Args:
            query: (B, Nq, D).
            key: (B, Nk, D); defaults to `query`.
            value: (B, Nk, D); defaults to `key`.
            return_attention: Also return the softmax weights (slower, unfused path).

        Returns:
            The output (B, Nq, D), or `(output, weights)` with weights (B, heads, Nq, Nk) whose rows sum to 1.
        """
        key = query if key is None else key
        value = key if value is None else value
        batch, query_tokens, dim = query.shape
        q = self._split_heads(self.q_proj(query))  # (B, heads, Nq, head_dim)
        k = self._split_heads(self.k_proj(key))  # (B, heads, Nk, head_dim)
        v = self._split_heads(self.v_proj(value))  # (B, heads, Nk, head_dim)
        dropout_p = self.attn_drop if self.training else 0.0
        weights = None
        if return_attention:
            weights = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)  # (B, heads, Nq, Nk)
            context = F.dropout(weights, dropout_p, self.training) @ v  # (B, heads, Nq, head_dim)
        else:
            context = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # (B, heads, Nq, head_dim)
        context = context.transpose(1, 2).reshape(batch, query_tokens, dim)  # (B, Nq, D)
        out = self.proj_drop(self.out_proj(context))
        return (out, weights) if weights is not None else out


class AdditiveAttention(nn.Module):
    """Additive (Bahdanau) attention: score(q, k) = v^T tanh(W_q q + W_k k), softmax over keys.

    Args:
        query_dim: Features of the query.
        key_dim: Features of the keys.
        hidden_dim: Width of the tanh layer.
    """

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int = 64) -> None:
        super().__init__()
        self.query_proj = nn.Linear(query_dim, hidden_dim, bias=False)
        self.key_proj = nn.Linear(key_dim, hidden_dim, bias=True)
        self.score = nn.Linear(hidden_dim, 1, bias=False)

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted sum of `values` by the query's additive scores against `keys`.

        Args:
            query: (B, Dq) or (B, Nq, Dq).
            keys: (B, Nk, Dk).
            values: (B, Nk, Dv); defaults to `keys`.

        Returns:
            `(context, weights)`: context (B, Dv) or (B, Nq, Dv); weights (B, Nk) or (B, Nq, Nk), rows sum to 1.
        """
        values = keys if values is None else values
        single_query = query.dim() == 2
        if single_query:
            query = query.unsqueeze(1)  # (B, 1, Dq)
        hidden = torch.tanh(self.query_proj(query).unsqueeze(2) + self.key_proj(keys).unsqueeze(1))  # (B, Nq, Nk, H)
        weights = torch.softmax(self.score(hidden).squeeze(-1), dim=-1)  # (B, Nq, Nk)
        context = weights @ values  # (B, Nq, Dv)
        if single_query:
            return context.squeeze(1), weights.squeeze(1)
        return context, weights


class AttentionPool(nn.Module):
    """Pools a sequence (B, N, D) to (B, D) with additive attention from a learned query."""

    def __init__(self, dim: int, hidden_dim: int = 64) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, dim))
        self.attention = AdditiveAttention(dim, dim, hidden_dim)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns `(pooled (B, D), weights (B, N))`."""
        query = self.query.expand(tokens.shape[0], -1)  # (B, D)
        return self.attention(query, tokens)


def _reduced_channels(channels: int, reduction: int, min_channels: int = 4) -> int:
    return max(min_channels, channels // reduction)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: channel gates from globally average-pooled features.

    Args:
        channels: Channels C of the (B, C, H, W) input.
        reduction: Bottleneck ratio of the gating MLP.
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = _reduced_channels(channels, reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W), each channel scaled by a gate in (0, 1)."""
        gate = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(gate))))
        return x * gate


class ChannelAttention(nn.Module):
    """CBAM channel attention: a shared MLP over average- and max-pooled features."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = _reduced_channels(channels, reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> channel gates (B, C, 1, 1) in (0, 1)."""
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        peak = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return torch.sigmoid(avg + peak)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: a k x k conv over channel-wise mean and max maps."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> spatial gates (B, 1, H, W) in (0, 1)."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)  # (B, 2, H, W)
        return torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel attention, then spatial attention.

    Args:
        channels: Channels C of the (B, C, H, W) input.
        reduction: Bottleneck ratio of the channel MLP.
        kernel_size: Kernel of the spatial-attention conv.
    """

    def __init__(self, channels: int, reduction: int = 8, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward_with_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns `(refined (B, C, H, W), spatial map (B, 1, H, W))`."""
        x = x * self.channel(x)
        spatial_map = self.spatial(x)
        return x * spatial_map, spatial_map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return self.forward_with_map(x)[0]


_ATTN_BLOCKS: dict[str, Callable[..., nn.Module]] = {"se": SqueezeExcite, "cbam": CBAM}


def get_attn(name: str | None) -> Callable[..., nn.Module] | None:
    """The channel-attention block class for a name: `'se'`, `'cbam'`, or None/`'none'` for no block.

    Raises:
        ValueError: For any other name (the message lists the known ones).
    """
    if name is None or name == "none":
        return None
    if name not in _ATTN_BLOCKS:
        raise ValueError(f"unknown attention block {name!r}; expected one of {sorted(_ATTN_BLOCKS)} or None")
    return _ATTN_BLOCKS[name]
