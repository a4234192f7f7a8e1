"""CNN classifier with channel/spatial attention blocks (CBAM: Woo et al. 2018; SE: Hu et al. 2018).

Stages of two 3x3 conv-BN-ReLU layers with a residual connection, an attention block chosen by name
(`get_attn('cbam' | 'se' | None)`), and 2x downsampling between stages; global average pool and a linear
head. Input: uint8 pixels (B, C, H, W), normalised inside `forward`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attnserve.models.attention import CBAM, get_attn
from attnserve.models.layers import PixelNormalize, normalize_map
from attnserve.models.registry import register_model


class AttentionConvBlock(nn.Module):
    """conv-BN-ReLU, conv-BN, attention block, + shortcut, ReLU.  (B, Cin, H, W) -> (B, Cout, H/stride, W/stride)."""

    def __init__(self, in_channels: int, out_channels: int, attn: str | None, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        attn_class = get_attn(attn)
        self.attn = attn_class(out_channels) if attn_class is not None else nn.Identity()
        self.shortcut = (
            nn.Identity()
            if in_channels == out_channels and stride == 1
            else nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        )

    def forward_with_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns `(out (B, Cout, H, W), CBAM spatial map (B, 1, H, W) or None for other blocks)`."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        spatial_map = None
        if isinstance(self.attn, CBAM):
            out, spatial_map = self.attn.forward_with_map(out)
        else:
            out = self.attn(out)
        return F.relu(out + self.shortcut(x)), spatial_map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_map(x)[0]


@dataclass(frozen=True)
class CnnConfig:
    """The architecture of an attention CNN: what a spec's `arch_args` and `create_model` overrides set."""

    img_size: int = 32
    """Side of the square input."""
    in_chans: int = 3
    """Input channels C."""
    num_classes: int = 10
    """Output classes."""
    widths: Sequence[int] = (32, 64, 128)
    """Channels per stage; every stage after the first halves the resolution."""
    attn: str | None = "cbam"
    """Attention block per stage: `'cbam'`, `'se'` or None."""
    first_stride: int = 1
    """Stride of the first conv (2 halves the work of every stage on small, smooth inputs)."""
    drop_rate: float = 0.0
    """Dropout before the head."""
    mean: Sequence[float] = (0.5, 0.5, 0.5)
    """Per-channel mean (0..1 scale)."""
    std: Sequence[float] = (0.25, 0.25, 0.25)
    """Per-channel std (0..1 scale)."""


class AttentionCNN(nn.Module):
    """Residual CNN with an attention block per stage, on uint8 NCHW pixels.

    Args:
        config: The architecture (`CnnConfig`).
    """

    def __init__(self, config: CnnConfig) -> None:
        super().__init__()
        self.config = config
        if not config.widths:
            raise ValueError("widths needs at least one stage")
        self.num_classes = config.num_classes
        self.input_shape = (config.in_chans, config.img_size, config.img_size)
        self.normalize = PixelNormalize(self.input_shape, config.mean, config.std)
        self.stages = nn.ModuleList()
        channels = config.in_chans
        for index, width in enumerate(config.widths):
            self.stages.append(
                AttentionConvBlock(channels, width, config.attn, stride=config.first_stride if index == 0 else 1)
            )
            channels = width
        self.downsample = nn.MaxPool2d(2)
        self.head_drop = nn.Dropout(config.drop_rate)
        self.head = nn.Linear(channels, config.num_classes)
        self.attn_name = config.attn

    def _run_stages(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.normalize(pixels)
        last_map = None
        for index, stage in enumerate(self.stages):
            if index:
                x = self.downsample(x)  # (B, C, H/2, W/2)
            x, spatial_map = stage.forward_with_map(x)
            if spatial_map is not None:
                last_map = spatial_map
        return x, last_map

    def forward_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> feature map (B, widths[-1], h, w)."""
        return self._run_stages(pixels)[0]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Feature map (B, C', h, w) -> logits (B, num_classes) through global average pooling."""
        return self.head(self.head_drop(features.mean(dim=(2, 3))))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> logits (B, num_classes)."""
        return self.forward_head(self.forward_features(pixels))

    def forward_with_attention(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, C, H, W) -> (logits (B, num_classes), attention map (B, h, w)).

        With CBAM the map is the last CBAM spatial-attention map (h, w = that stage's resolution); with
        SE / no block (no spatial attention) it is the mean activation of the last feature map. Float32,
        each sample scaled to max 1.
        """
        features, spatial_map = self._run_stages(pixels)
        logits = self.forward_head(features)
        attention_map = spatial_map[:, 0] if spatial_map is not None else features.mean(dim=1).clamp_min(0)  # (B, h, w)
        return logits, normalize_map(attention_map)


def _cnn(defaults: dict, overrides: dict) -> AttentionCNN:
    return AttentionCNN(CnnConfig(**{**defaults, **overrides}))


@register_model
def cnn_cbam_32(**overrides) -> AttentionCNN:
    """Residual CNN with CBAM per stage on 32x32 (widths 32/64/128)."""
    return _cnn(dict(img_size=32, widths=(32, 64, 128), attn="cbam"), overrides)


@register_model
def cnn_se_32(**overrides) -> AttentionCNN:
    """Residual CNN with squeeze-and-excitation per stage on 32x32 (widths 32/64/128)."""
    return _cnn(dict(img_size=32, widths=(32, 64, 128), attn="se"), overrides)
