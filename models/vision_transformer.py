"""Vision Transformer: Dosovitskiy et al., "An Image is Worth 16x16 Words" (2021).

Tokens come from non-overlapping patches (`stem='patch'`) or a small conv stem (`stem='conv'`, three
stride-2 convs: much faster to train from scratch on small images), a CLS token and learned position
embeddings are added, pre-norm blocks run on the fused SDPA path, and the head reads the CLS token.
Input: uint8 pixels (B, C, H, W), normalised inside `forward`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from attnserve.models.layers import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PixelNormalize,
    TransformerBlock,
    attention_rollout,
    grid_size,
    make_embedding,
    normalize_map,
    trunc_normal_init,
)
from attnserve.models.registry import register_model


@dataclass(frozen=True)
class VitConfig:
    """The architecture of a ViT classifier: what a spec's `arch_args` and `create_model` overrides set."""

    img_size: int = 224
    """Side of the square input."""
    in_chans: int = 3
    """Input channels C."""
    num_classes: int = 1000
    """Output classes."""
    patch_size: int = 16
    """Patch side for `stem='patch'`."""
    embed_dim: int = 192
    """Token width D."""
    depth: int = 12
    """Number of transformer blocks."""
    num_heads: int = 3
    """Attention heads per block."""
    mlp_ratio: float = 4.0
    """MLP hidden width / D."""
    stem: str = "patch"
    """`'patch'` (PatchEmbed) or `'conv'` (ConvStem, reduction 2**stem_depth)."""
    stem_depth: int = 3
    """Stride-2 convs in the conv stem."""
    stem_width: int = 32
    """Channels of the first stem conv (doubling per conv, capped at D)."""
    drop_rate: float = 0.0
    """Dropout in blocks and before the head."""
    mean: Sequence[float] = IMAGENET_MEAN
    """Per-channel mean (0..1 scale)."""
    std: Sequence[float] = IMAGENET_STD
    """Per-channel std (0..1 scale)."""


class VisionTransformer(nn.Module):
    """ViT classifier on uint8 NCHW pixels.

    Args:
        config: The architecture (`VitConfig`).
    """

    def __init__(self, config: VitConfig) -> None:
        super().__init__()
        self.config = config
        self.num_classes = config.num_classes
        self.input_shape = (config.in_chans, config.img_size, config.img_size)
        self.normalize = PixelNormalize(self.input_shape, config.mean, config.std)
        self.patch_embed = make_embedding(
            config.stem, config.in_chans, config.embed_dim, config.patch_size, config.stem_depth, config.stem_width
        )
        self.grid = grid_size(config.img_size, self.patch_embed.reduction)
        num_patches = self.grid * self.grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, config.embed_dim))
        self.blocks = nn.ModuleList(
            TransformerBlock(config.embed_dim, config.num_heads, config.mlp_ratio, drop=config.drop_rate)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(config.drop_rate)
        self.head = nn.Linear(config.embed_dim, config.num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(trunc_normal_init)

    def _tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(self.normalize(pixels))  # (B, D, gh, gw)
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, D)
        return torch.cat([cls, x], dim=1) + self.pos_embed  # (B, 1 + N, D)

    def forward_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> normalised tokens (B, 1 + N, D), CLS first."""
        x = self._tokens(pixels)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Tokens (B, 1 + N, D) -> logits (B, num_classes) from the CLS token."""
        return self.head(self.head_drop(features[:, 0]))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> logits (B, num_classes), fused attention."""
        return self.forward_head(self.forward_features(pixels))

    def forward_with_attention(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, C, H, W) -> (logits (B, num_classes), CLS-to-patch attention rollout (B, gh, gw)).

        The map is float32, each sample scaled to max 1; the logits equal `forward`'s within float tolerance.
        """
        x = self._tokens(pixels)
        weights_per_block = []
        for block in self.blocks:
            x, weights = block.forward_with_attention(x)
            weights_per_block.append(weights)
        logits = self.forward_head(self.norm(x))
        rollout = attention_rollout(weights_per_block)  # (B, 1 + N, 1 + N)
        cls_to_patches = rollout[:, 0, 1:].reshape(-1, self.grid, self.grid)  # (B, gh, gw)
        return logits, normalize_map(cls_to_patches)


def _vit(defaults: dict, overrides: dict) -> VisionTransformer:
    return VisionTransformer(VitConfig(**{**defaults, **overrides}))


@register_model
def vit_tiny_patch16_224(**overrides) -> VisionTransformer:
    """ViT-Tiny/16 at 224x224 (dim 192, depth 12, heads 3), ImageNet mean/std: the benchmark model."""
    return _vit(dict(img_size=224, patch_size=16, embed_dim=192, depth=12, num_heads=3), overrides)


@register_model
def vit_small_patch16_224(**overrides) -> VisionTransformer:
    """ViT-Small/16 at 224x224 (dim 384, depth 12, heads 6)."""
    return _vit(dict(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6), overrides)


_SMALL_32 = dict(
    img_size=32, num_classes=10, embed_dim=128, depth=4, num_heads=4, mlp_ratio=2.0, mean=(0.5,) * 3, std=(0.25,) * 3
)
"""The small 32x32 ViTs' shared size (dim 128, depth 4, heads 4); each adds its stem."""


@register_model
def vit_patch4_32(**overrides) -> VisionTransformer:
    """Plain small ViT on 32x32 (4x4 patches, dim 128, depth 4, heads 4): the slow-to-train baseline."""
    return _vit(dict(_SMALL_32, patch_size=4), overrides)


@register_model
def vit_convstem_32(**overrides) -> VisionTransformer:
    """Small ViT on 32x32 with a 3-conv stem (4x4 tokens, dim 128, depth 4, heads 4)."""
    return _vit(dict(_SMALL_32, stem="conv", stem_depth=3, stem_width=32), overrides)
