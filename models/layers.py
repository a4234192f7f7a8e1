"""Building blocks shared by the model families: uint8 input handling, pre-norm transformer blocks,
patch / conv-stem embeddings, attention rollout.

Input convention (see attnserve.spec): models take **uint8 pixels**, NCHW for images and (B, T, C, H, W)
for video, and normalise inside `forward` as `(pixels / 255 - mean) / std`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from attnserve.errors import DTypeError, ShapeError
from attnserve.models.attention import AttentionLayer
from attnserve.models.constants import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401 - re-exported


def _per_channel(values: Sequence[float], channels: int, what: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"{what} needs 1 or {channels} values (one per channel), got {len(values)}: {values}")
    return values


class PixelNormalize(nn.Module):
    """Checks a uint8 pixel batch and turns it into normalised float32.

    The shape check compares only the static per-sample dimensions, so it stays export-friendly
    (a symbolic batch dimension is never compared).

    Args:
        sample_shape: Per-sample shape without batch: (C, H, W) or (T, C, H, W).
        mean: Per-channel mean in the 0..1 scale (one value broadcasts to all channels).
        std: Per-channel std in the 0..1 scale.
    """

    def __init__(self, sample_shape: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.sample_shape = tuple(int(d) for d in sample_shape)
        if len(self.sample_shape) not in (3, 4):
            raise ValueError(f"sample_shape must be (C, H, W) or (T, C, H, W), got {self.sample_shape}")
        channels = self.sample_shape[-3]
        mean_values = _per_channel(mean, channels, "mean")
        std_values = _per_channel(std, channels, "std")
        if min(std_values) <= 0:
            raise ValueError(f"std must be positive, got {std_values}")
        broadcast = (1, channels, 1, 1) if len(self.sample_shape) == 3 else (1, 1, channels, 1, 1)
        # Folded into one multiply-add: (pixels / 255 - mean) / std = pixels * scale + shift.
        std_tensor = torch.tensor(std_values)
        self.register_buffer("mean", torch.tensor(mean_values).reshape(broadcast))
        self.register_buffer("std", std_tensor.reshape(broadcast))
        self.register_buffer("scale", (1.0 / (255.0 * std_tensor)).reshape(broadcast))
        self.register_buffer("shift", (-torch.tensor(mean_values) / std_tensor).reshape(broadcast))

    def check(self, pixels: torch.Tensor) -> None:
        """Raise `ShapeError` / `DTypeError` unless `pixels` is uint8 of shape (B, *sample_shape)."""
        expected = ("B", *self.sample_shape)
        if pixels.dim() != len(expected) or tuple(pixels.shape[1:]) != self.sample_shape:
            received = tuple(pixels.shape)
            raise ShapeError(f"expected pixels of shape {expected} (uint8), received {received}")
        if pixels.dtype != torch.uint8:
            raise DTypeError(f"expected uint8 pixels of shape {expected}, received dtype {pixels.dtype}")

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, *sample_shape) -> float32 normalised, same shape."""
        self.check(pixels)
        return pixels.to(torch.float32) * self.scale + self.shift


def standardize_per_sample(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Zero mean, unit std over all non-batch dimensions of each sample (per-clip standardisation)."""
    dims = tuple(range(1, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = (x - mean).pow(2).mean(dim=dims, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps)


class Mlp(nn.Module):
    """Transformer feed-forward: Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = AttentionLayer(dim, num_heads, qkv_bias=qkv_bias, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, D) on the fused SDPA path."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns `(x (B, N, D), attention weights (B, heads, N, N))`."""
        attended, weights = self.attn(self.norm1(x), return_attention=True)
        x = x + attended
        return x + self.mlp(self.norm2(x)), weights


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> tokens, as a strided conv.  (B, C, H, W) -> (B, D, H/p, W/p)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.reduction = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ConvStem(nn.Module):
    """`depth` 3x3 stride-2 convs (BN + ReLU), then a 1x1 projection: (B, C, H, W) -> (B, D, H/2^depth, W/2^depth).

    Xiao et al., "Early Convolutions Help Transformers See Better" (2021): a small conv stem instead of
    large patches makes small ViTs train much faster (DESIGN.md: 98.5% vs 63% on shapes).
    """

    def __init__(self, in_chans: int, embed_dim: int, depth: int = 3, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_chans
        for index in range(depth):
            out_channels = min(width * 2**index, embed_dim)
            layers += [
                nn.Conv2d(channels, out_channels, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            channels = out_channels
        layers.append(nn.Conv2d(channels, embed_dim, 1))
        self.stem = nn.Sequential(*layers)
        self.reduction = 2**depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)


def make_embedding(
    stem: str, in_chans: int, embed_dim: int, patch_size: int, stem_depth: int, stem_width: int
) -> nn.Module:
    """`stem='patch'` -> PatchEmbed(patch_size); `stem='conv'` -> ConvStem(stem_depth, stem_width)."""
    if stem == "patch":
        return PatchEmbed(in_chans, embed_dim, patch_size)
    if stem == "conv":
        return ConvStem(in_chans, embed_dim, stem_depth, stem_width)
    raise ValueError(f"unknown stem {stem!r}; expected 'patch' or 'conv'")


def grid_size(img_size: int, reduction: int, what: str = "img_size") -> int:
    """Tokens per side for an embedding that divides the side by `reduction` (must divide exactly)."""
    if img_size % reduction:
        raise ValueError(f"{what} {img_size} must be divisible by the embedding's reduction {reduction}")
    return img_size // reduction


def attention_rollout(weights_per_block: Sequence[torch.Tensor]) -> torch.Tensor:
    """Abnar & Zuidema (2020) attention rollout: heads averaged, identity added, rows renormalised, chained.

    Args:
        weights_per_block: One (B, heads, N, N) tensor per block, first block first.

    Returns:
        (B, N, N): how much each output token draws on each input token through all blocks.
    """
    rollout = None
    for weights in weights_per_block:
        averaged = weights.mean(dim=1)  # (B, N, N)
        eye = torch.eye(averaged.shape[-1], dtype=averaged.dtype, device=averaged.device)
        mixed = averaged + eye
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed if rollout is None else mixed @ rollout
    if rollout is None:
        raise ValueError("attention_rollout needs at least one block's weights")
    return rollout


def normalize_map(attention_map: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale each sample of a non-negative map (B, ...) so that its maximum is 1 (float32)."""
    attention_map = attention_map.to(torch.float32)
    peak = attention_map.flatten(1).amax(dim=1).clamp_min(eps)  # (B,)
    return attention_map / peak.reshape((-1,) + (1,) * (attention_map.dim() - 1))


def sincos_embedding(positions: int, dim: int) -> torch.Tensor:
    """Fixed sine/cosine position embedding (Vaswani et al. 2017), (positions, dim), values in [-1, 1].

    Used to initialise temporal position embeddings: at the usual 0.02 scale the frame order is nearly
    invisible at the start of training, and temporal-only models never started to learn motion.
    """
    position = torch.arange(positions, dtype=torch.float32)[:, None]  # (P, 1)
    frequencies = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10_000.0) / dim))  # (ceil(D/2),)
    embedding = torch.zeros(positions, dim)
    embedding[:, 0::2] = torch.sin(position * frequencies)
    embedding[:, 1::2] = torch.cos(position * frequencies[: dim // 2])
    return embedding


def trunc_normal_init(module: nn.Module) -> None:
    """timm-style init: truncated normal (std 0.02) for Linear weights, zero biases, unit LayerNorm."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
