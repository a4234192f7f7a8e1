"""Video transformers on uint8 clips (B, T, C, H, W).

- `TimeSformer`: divided space-time attention (Bertasius et al., "Is Space-Time Attention All You Need for
  Video Understanding?", 2021): in each block, temporal attention across the T frames at each spatial
  position, then spatial attention within each frame. Tokens come from a 3-frame tubelet (Conv3d) stem.
- `TemporalTransformer`: temporal-only attention over per-frame features (each frame embedded on its own;
  each patch position attends across time only).
- `SpatialTransformer`: spatial-only attention within each frame, frames averaged: the baseline that cannot
  see motion (no temporal position embedding, no cross-frame mixing, order-invariant mean over frames).

All three normalise with mean/std, then standardise each clip (zero mean, unit std: what made the video
transformer learn motion, docs/measured.md#video-motion), and read out through additive attention pooling, whose weights are
the explain map of `forward_with_attention`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import nn
from typing_extensions import Self

from attnserve.models.attention import AttentionLayer, AttentionPool
from attnserve.models.layers import (
    Mlp,
    PixelNormalize,
    TransformerBlock,
    grid_size,
    normalize_map,
    sincos_embedding,
    standardize_per_sample,
    trunc_normal_init,
)
from attnserve.models.registry import register_model


class VideoEmbed(nn.Module):
    """Conv stem over a clip: (B, T, C, H, W) -> tokens (B, T, gh*gw, D).

    The first conv spans `tubelet_size` frames (Conv3d, stride 1 in time, padded: T is kept); the rest are
    per-frame 3x3 stride-2 convs. `tubelet_size=1` embeds every frame on its own (no motion visible).
    """

    def __init__(
        self,
        in_chans: int,
        embed_dim: int,
        tubelet_size: int = 3,
        stem_depth: int = 3,
        stem_width: int = 32,
        first_stride: int = 2,
    ) -> None:
        super().__init__()
        if tubelet_size < 1 or tubelet_size % 2 == 0:
            raise ValueError(f"tubelet_size must be odd and >= 1 (keeps T), got {tubelet_size}")
        if stem_depth < 1:
            raise ValueError(f"stem_depth must be >= 1, got {stem_depth}")
        if first_stride not in (2, 4):
            raise ValueError(f"first_stride must be 2 (3x3 conv) or 4 (4x4 patches), got {first_stride}")
        layers: list[nn.Module] = []
        channels = in_chans
        for index in range(stem_depth):
            time_kernel = tubelet_size if index == 0 else 1
            stride = first_stride if index == 0 else 2
            kernel, padding = (3, 1) if stride == 2 else (4, 0)  # 3x3 stride 2, or non-overlapping 4x4 patches
            out_channels = min(stem_width * 2**index, embed_dim)
            layers += [
                nn.Conv3d(
                    channels,
                    out_channels,
                    (time_kernel, kernel, kernel),
                    stride=(1, stride, stride),
                    padding=(time_kernel // 2, padding, padding),
                    bias=False,
                ),
                nn.BatchNorm3d(out_channels),
                nn.ReLU(inplace=True),
            ]
            channels = out_channels
        layers.append(nn.Conv3d(channels, embed_dim, 1))
        self.stem = nn.Sequential(*layers)
        self.reduction = first_stride * 2 ** (stem_depth - 1)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = self.stem(clips.transpose(1, 2))  # (B, D, T, gh, gw)
        x = x.flatten(3).permute(0, 2, 3, 1)  # (B, T, gh*gw, D)
        return x


class DividedSpaceTimeBlock(nn.Module):
    """Pre-norm block: temporal attention, then spatial attention, then MLP, each residual.  (B, T, N, D)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop: float = 0.0) -> None:
        super().__init__()
        self.norm_time = nn.LayerNorm(dim, eps=1e-6)
        self.attn_time = AttentionLayer(dim, num_heads, proj_drop=drop)
        self.norm_space = nn.LayerNorm(dim, eps=1e-6)
        self.attn_space = AttentionLayer(dim, num_heads, proj_drop=drop)
        self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, frames, tokens, dim = x.shape
        xt = x.transpose(1, 2).reshape(-1, frames, dim)  # (B*N, T, D)
        xt = xt + self.attn_time(self.norm_time(xt))
        xs = xt.reshape(-1, tokens, frames, dim).transpose(1, 2).reshape(-1, tokens, dim)  # (B*T, N, D)
        xs = xs + self.attn_space(self.norm_space(xs))
        xs = xs + self.mlp(self.norm_mlp(xs))
        return xs.reshape(-1, frames, tokens, dim)  # (B, T, N, D)


@dataclass(frozen=True)
class VideoConfig:
    """The architecture of a video transformer: what a spec's `arch_args` and `create_model` overrides set."""

    num_frames: int = 8
    """Frames T per clip."""
    img_size: int = 32
    """Side of the square frames."""
    in_chans: int = 3
    """Channels C."""
    num_classes: int = 4
    """Output classes."""
    embed_dim: int = 64
    """Token width D."""
    depth: int = 2
    """Attention blocks."""
    num_heads: int = 4
    """Heads per attention."""
    mlp_ratio: float = 2.0
    """MLP hidden width / D."""
    tubelet_size: int | None = None
    """Frames spanned by the first (Conv3d) stem conv; odd. None: the class's `default_tubelet_size`."""
    stem_depth: int = 3
    """Convs in the stem (tokens per side = img_size / (first_stride * 2**(stem_depth - 1)))."""
    stem_width: int = 32
    """Channels of the first stem conv."""
    drop_rate: float = 0.0
    """Dropout."""
    clip_standardize: bool = True
    """Standardise each clip after mean/std."""
    mean: Sequence[float] = (0.5, 0.5, 0.5)
    """Per-channel mean (0..1 scale)."""
    std: Sequence[float] = (0.25, 0.25, 0.25)
    """Per-channel std (0..1 scale)."""
    first_stride: int = 2
    """2 (first conv 3x3 stride 2) or 4 (first conv on 4x4 patches: cheaper)."""


class _VideoBase(nn.Module):
    """Shared input handling: uint8 check, mean/std, per-clip standardisation, stem, pooling head.

    Subclasses add their attention body in `_build_body` (called between the shared modules and the weight
    init, so every architecture keeps its parameter order) and implement `_pooled`.

    Args:
        config: The architecture (`VideoConfig`).
        **body_options: Options of the subclass's body (`_build_body`), e.g. `frame_tokens`.
    """

    default_tubelet_size: ClassVar[int] = 1

    def __init__(self, config: VideoConfig, **body_options: Any) -> None:
        super().__init__()
        self.config = config
        tubelet = self.default_tubelet_size if config.tubelet_size is None else config.tubelet_size
        self.num_classes = config.num_classes
        self.num_frames = num_frames = config.num_frames
        embed_dim = config.embed_dim
        self.input_shape = (num_frames, config.in_chans, config.img_size, config.img_size)
        self.normalize = PixelNormalize(self.input_shape, config.mean, config.std)
        self.clip_standardize = config.clip_standardize
        self.embed = VideoEmbed(
            config.in_chans, embed_dim, tubelet, config.stem_depth, config.stem_width, config.first_stride
        )
        self.grid = grid_size(config.img_size, self.embed.reduction)
        self.num_patches = self.grid * self.grid
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.pool = AttentionPool(embed_dim, hidden_dim=embed_dim)
        self.head_drop = nn.Dropout(config.drop_rate)
        self.head = nn.Linear(embed_dim, config.num_classes)
        self._build_body(config, **body_options)
        self.apply(trunc_normal_init)
        pos_time = getattr(self, "pos_time", None)
        if pos_time is not None:
            with torch.no_grad():  # frame order must be visible from the start (see sincos_embedding)
                pos_time.copy_(sincos_embedding(num_frames, embed_dim).reshape(pos_time.shape))

    @classmethod
    def from_overrides(cls, **overrides: Any) -> Self:
        """Build from keyword arguments (a spec's `arch_args`): `VideoConfig` fields, then body options.

        Raises:
            TypeError: an argument that is neither a config field nor an option of this class's body.
        """
        names = {config_field.name for config_field in fields(VideoConfig)}
        config = VideoConfig(**{key: value for key, value in overrides.items() if key in names})
        return cls(config, **{key: value for key, value in overrides.items() if key not in names})

    def _build_body(self, body: VideoConfig) -> None:
        """Add the position embeddings and attention blocks (trunc-normal init follows)."""
        raise NotImplementedError

    def _add_space_time_positions(self, body: VideoConfig, blocks: Iterable[nn.Module]) -> None:
        """Learned spatial positions (1, 1, N, D), sin-cos temporal ones (1, T, 1, D), then the `blocks`."""
        self.pos_space = nn.Parameter(torch.zeros(1, 1, self.num_patches, body.embed_dim))
        self.pos_time = nn.Parameter(torch.zeros(1, body.num_frames, 1, body.embed_dim))
        self.blocks = nn.ModuleList(blocks)
        nn.init.trunc_normal_(self.pos_space, std=0.02)

    def _embed(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.normalize(pixels)  # (B, T, C, H, W) float32
        if self.clip_standardize:
            x = standardize_per_sample(x)
        return self.embed(x)  # (B, T, N, D)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, D) -> logits (B, num_classes)."""
        return self.head(self.head_drop(features))

    def forward_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, T, C, H, W) -> pooled clip features (B, D)."""
        return self._pooled(pixels)[0]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, T, C, H, W) -> logits (B, num_classes), fused attention."""
        return self.forward_head(self.forward_features(pixels))

    def forward_with_attention(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, T, C, H, W) -> (logits (B, num_classes), per-frame map (B, T, gh, gw)), map float32, max 1."""
        pooled, attention_map = self._pooled(pixels)
        return self.forward_head(pooled), normalize_map(attention_map)

    def _pooled(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class TimeSformer(_VideoBase):
    """Divided space-time attention on a 3-frame tubelet stem.

    Args: those of `_VideoBase` (default `tubelet_size=3`; `depth` counts divided space-time blocks).

    `forward_with_attention`'s map is the attention-pooling weight of each (frame, patch) token.
    """

    default_tubelet_size: ClassVar[int] = 3

    def _build_body(self, body: VideoConfig) -> None:
        blocks = (
            DividedSpaceTimeBlock(body.embed_dim, body.num_heads, body.mlp_ratio, body.drop_rate)
            for _ in range(body.depth)
        )
        self._add_space_time_positions(body, blocks)

    def _pooled(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._embed(pixels) + self.pos_space + self.pos_time  # (B, T, N, D)
        for block in self.blocks:
            x = block(x)
        frames = x.shape[1]
        x = self.norm(x.flatten(1, 2))  # (B, T*N, D)
        pooled, weights = self.pool(x)  # (B, D), (B, T*N)
        return pooled, weights.reshape(-1, frames, self.grid, self.grid)  # (B, T, gh, gw)


class TemporalTransformer(_VideoBase):
    """Temporal-only attention: each frame is embedded on its own (no temporal mixing in the stem), and each
    patch position attends only across the T frames at that position (no attention between positions).

    Motion shows as a token's features changing over time (an object moving inside the token's receptive
    field); weights are shared by all positions, which generalises where one projection per position
    (flattening the frame) memorised the training clips.

    Args: as `TimeSformer` (default `tubelet_size=1`: per-frame features only), plus `frame_tokens`:
    `'position'` (above) or `'frame'` (one token per frame: the frame's token grid flattened and projected).

    `forward_with_attention`'s map is the attention-pooling weight of each (frame, patch) token; with
    `frame_tokens='frame'` each frame's pooling weight broadcast over its (gh, gw) grid.
    """

    def _build_body(self, body: VideoConfig, frame_tokens: str = "position") -> None:
        if frame_tokens not in ("position", "frame", "keypoints"):
            raise ValueError(f"frame_tokens must be 'position', 'frame' or 'keypoints', got {frame_tokens!r}")
        self.frame_tokens = frame_tokens
        dim = body.embed_dim
        # 'frame': one token per frame, its grid flattened by a linear projection (positions survive).
        self.frame_proj = nn.Linear(self.num_patches * dim, dim) if frame_tokens == "frame" else None
        # 'keypoints': one token per frame from a spatial softmax per channel (Levine et al. 2016): each
        # channel's expected position, on the circle (cos, sin) per axis so that wrap-around stays smooth.
        self.keypoint_proj = nn.Linear(4 * dim, dim) if frame_tokens == "keypoints" else None
        angles = 2 * torch.pi * (torch.arange(self.grid, dtype=torch.float32) + 0.5) / self.grid
        grid_y, grid_x = torch.meshgrid(angles, angles, indexing="ij")
        circle = torch.stack([grid_x.cos(), grid_x.sin(), grid_y.cos(), grid_y.sin()], dim=-1).reshape(-1, 4)  # (N, 4)
        self.register_buffer("circle_coords", circle, persistent=False)
        blocks = (TransformerBlock(dim, body.num_heads, body.mlp_ratio, drop=body.drop_rate) for _ in range(body.depth))
        self._add_space_time_positions(body, blocks)

    def _pooled(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._embed(pixels) + self.pos_space + self.pos_time  # (B, T, N, D)
        frames, tokens, dim = x.shape[1], x.shape[2], x.shape[3]
        if self.keypoint_proj is not None:
            spatial_weights = torch.softmax(x, dim=2)  # (B, T, N, D): per channel, a distribution over positions
            keypoints = torch.einsum("btnd,nc->btdc", spatial_weights, self.circle_coords)  # (B, T, D, 4)
            x = self.keypoint_proj(keypoints.flatten(2)) + self.pos_time[:, :, 0]  # (B, T, D)
            for block in self.blocks:
                x = block(x)
            pooled, _ = self.pool(self.norm(x))  # (B, D)
            return pooled, spatial_weights.mean(dim=-1).reshape(-1, frames, self.grid, self.grid)  # (B, T, gh, gw)
        if self.frame_proj is not None:
            x = self.frame_proj(x.flatten(2))  # (B, T, D): one token per frame
            for block in self.blocks:
                x = block(x)
            pooled, weights = self.pool(self.norm(x))  # (B, D), (B, T)
            return pooled, weights[:, :, None, None].expand(-1, -1, self.grid, self.grid)  # (B, T, gh, gw)
        x = x.transpose(1, 2).reshape(-1, frames, dim)  # (B*N, T, D): one sequence over time per position
        for block in self.blocks:
            x = block(x)
        x = self.norm(x.reshape(-1, tokens, frames, dim).transpose(1, 2).flatten(1, 2))  # (B, T*N, D)
        pooled, weights = self.pool(x)  # (B, D), (B, T*N)
        return pooled, weights.reshape(-1, frames, self.grid, self.grid)  # (B, T, gh, gw)


class SpatialTransformer(_VideoBase):
    """Spatial-only attention within each frame; frame features averaged (order-invariant, motion-blind).

    Args: as `TimeSformer` (default `tubelet_size=1`; a larger tubelet would let motion leak in).

    `forward_with_attention`'s map is each frame's own attention-pooling weights over its patches.
    """

    def _build_body(self, body: VideoConfig) -> None:
        # Spatial positions only: a temporal position embedding would tell frames apart and leak order.
        self.pos_space = nn.Parameter(torch.zeros(1, self.num_patches, body.embed_dim))
        self.blocks = nn.ModuleList(
            TransformerBlock(body.embed_dim, body.num_heads, body.mlp_ratio, drop=body.drop_rate)
            for _ in range(body.depth)
        )
        nn.init.trunc_normal_(self.pos_space, std=0.02)

    def _pooled(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._embed(pixels)  # (B, T, N, D)
        frames, tokens, dim = x.shape[1], x.shape[2], x.shape[3]
        x = x.reshape(-1, tokens, dim) + self.pos_space  # (B*T, N, D)
        for block in self.blocks:
            x = block(x)
        per_frame, weights = self.pool(self.norm(x))  # (B*T, D), (B*T, N)
        pooled = per_frame.reshape(-1, frames, dim).mean(dim=1)  # (B, D)
        return pooled, weights.reshape(-1, frames, self.grid, self.grid)  # (B, T, gh, gw)


@register_model
def timesformer_divided_8x32(**overrides) -> TimeSformer:
    """Divided space-time attention, 8 frames of 32x32, 3-frame tubelet stem, dim 64, depth 2."""
    return TimeSformer.from_overrides(**overrides)


@register_model
def temporal_transformer_8x32(**overrides) -> TemporalTransformer:
    """Temporal-only attention over per-frame features, 8 frames of 32x32, dim 64, depth 2."""
    return TemporalTransformer.from_overrides(**overrides)


@register_model
def spatial_transformer_8x32(**overrides) -> SpatialTransformer:
    """Spatial-only attention per frame, frames averaged, 8 frames of 32x32, dim 64, depth 2."""
    return SpatialTransformer.from_overrides(**overrides)
