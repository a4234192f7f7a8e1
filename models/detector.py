"""A dense attention detector: a ViT over conv-stem tokens with a CenterNet head.

Zhou et al., "Objects as Points" (2019): every output cell predicts a per-class centre heatmap, the box size
and the sub-cell offset of a centre; decoding keeps the heatmap's local maxima (a 3x3 max-pool: the NMS of
this design), the top `max_detections` over classes, and turns them into boxes. Here the features come from
a small transformer: a conv stem reduces the input 8x into tokens, learned position embeddings are added,
pre-norm blocks attend over all tokens (every cell sees the whole scene), and the tokens are upsampled 2x and
added to the stem's stride-4 features before the head (a one-level FPN: stride 4 keeps boxes precise).

Why not DETR: its bipartite matching converges slowly (the original trains 500 epochs), which a 10-minute
CPU budget cannot hold; a dense head learns from every cell at once (docs/detection.md has the runs).

`forward` returns the decoded, fixed-size candidates the served graph outputs: `boxes` (B, K, 4) as
`[x0, y0, x1, y1]` in model-input pixels, `scores` (B, K) and `classes` (B, K) int64, best first; thresholds
and the mapping to the original image are the post-processing step's. Training uses `forward_heads`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attnserve.models.layers import PixelNormalize, TransformerBlock, trunc_normal_init
from attnserve.models.registry import register_model

OUTPUT_STRIDE = 4
TOKEN_STRIDE = 8


def _conv(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


@dataclass(frozen=True)
class DetectorConfig:
    """The architecture of the detector: what a spec's `arch_args` and `create_model` overrides set."""

    img_size: Sequence[int] = (64, 96)
    """(H, W) of the input; both divisible by 8."""
    in_chans: int = 3
    """Input channels."""
    num_classes: int = 3
    """Object classes (no background class: the heatmap's sigmoid says "nothing")."""
    embed_dim: int = 64
    """Token width D."""
    depth: int = 3
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads."""
    mlp_ratio: float = 2.0
    """MLP hidden width / D."""
    stem_width: int = 24
    """Channels of the first stem conv (stride 2); the second (stride 4) has twice as many."""
    max_detections: int = 32
    """K, the fixed number of candidates `forward` returns per image."""
    mean: Sequence[float] = (0.5, 0.5, 0.5)
    """Per-channel mean (0..1 scale)."""
    std: Sequence[float] = (0.29, 0.29, 0.29)
    """Per-channel std (0..1 scale)."""


class CenterDetector(nn.Module):
    """ViT + CenterNet head on uint8 NCHW pixels of a non-square `img_size` (H, W).

    Args:
        config: The architecture (`DetectorConfig`).
    """

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        self.config = config
        height, width = int(config.img_size[0]), int(config.img_size[1])
        if height % TOKEN_STRIDE or width % TOKEN_STRIDE:
            raise ValueError(f"img_size must be divisible by {TOKEN_STRIDE}, got {height}x{width}")
        self.num_classes, self.max_detections = config.num_classes, config.max_detections
        self.input_shape = (config.in_chans, height, width)
        self.normalize = PixelNormalize(self.input_shape, config.mean, config.std)
        self.stem4 = nn.Sequential(
            _conv(config.in_chans, config.stem_width, 2), _conv(config.stem_width, 2 * config.stem_width, 2)
        )
        self.stem8 = nn.Sequential(
            _conv(2 * config.stem_width, 2 * config.stem_width, 2),
            nn.Conv2d(2 * config.stem_width, config.embed_dim, 1),
        )
        self.grid = (height // TOKEN_STRIDE, width // TOKEN_STRIDE)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], config.embed_dim))
        self.blocks = nn.ModuleList(
            TransformerBlock(config.embed_dim, config.num_heads, config.mlp_ratio) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.embed_dim, eps=1e-6)
        self.lateral = nn.Conv2d(2 * config.stem_width, config.embed_dim, 1)
        self.neck = _conv(config.embed_dim, config.embed_dim, 1)
        self.head = nn.Conv2d(config.embed_dim, config.num_classes + 4, 1)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(trunc_normal_init)
        with torch.no_grad():  # heatmap prior 0.01 (focal-loss init): the first steps are not swamped by negatives
            nn.init.constant_(self.head.bias[: config.num_classes], -4.6)  # type: ignore[index]

    def forward_heads(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """uint8 (B, C, H, W) -> heatmap logits (B, K, h, w), log box size in cells (B, 2, h, w) as (w, h),
        centre offset in cells (B, 2, h, w) as (x, y), at stride 4."""
        x = self.normalize(pixels)
        fine = self.stem4(x)  # (B, 2*S, H/4, W/4)
        tokens = self.stem8(fine).flatten(2).transpose(1, 2) + self.pos_embed  # (B, N, D)
        for block in self.blocks:
            tokens = block(tokens)
        coarse = self.norm(tokens).transpose(1, 2).reshape(x.shape[0], -1, *self.grid)  # (B, D, H/8, W/8)
        features = F.interpolate(coarse, scale_factor=2.0, mode="nearest") + self.lateral(fine)
        out = self.head(self.neck(features))  # (B, K + 4, H/4, W/4)
        classes = self.num_classes
        return out[:, :classes], out[:, classes : classes + 2], out[:, classes + 2 :].sigmoid()

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """uint8 (B, C, H, W) -> boxes (B, K, 4) in input pixels, scores (B, K), classes (B, K) int64."""
        heat_logits, log_size, offset = self.forward_heads(pixels)
        return decode(heat_logits, log_size, offset, self.max_detections)


def decode(
    heat_logits: torch.Tensor, log_size: torch.Tensor, offset: torch.Tensor, max_detections: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CenterNet decoding: local maxima of the heatmap (3x3), top `max_detections`, boxes in input pixels."""
    batch, classes, height, width = heat_logits.shape
    heat = heat_logits.sigmoid()
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat).to(heat.dtype)
    scores, index = peaks.reshape(batch, -1).topk(max_detections, dim=1)  # (B, K) over classes x cells
    labels = torch.div(index, height * width, rounding_mode="floor")
    cell = index - labels * (height * width)
    ys = torch.div(cell, width, rounding_mode="floor")
    xs = cell - ys * width
    size = log_size.reshape(batch, 2, -1).gather(2, cell[:, None].expand(-1, 2, -1)).exp()  # (B, 2, K)
    shift = offset.reshape(batch, 2, -1).gather(2, cell[:, None].expand(-1, 2, -1))
    centre_x = (xs.to(heat.dtype) + shift[:, 0]) * OUTPUT_STRIDE
    centre_y = (ys.to(heat.dtype) + shift[:, 1]) * OUTPUT_STRIDE
    half_w, half_h = size[:, 0] * (OUTPUT_STRIDE / 2), size[:, 1] * (OUTPUT_STRIDE / 2)
    boxes = torch.stack([centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], dim=2)
    return boxes, scores, labels


def heads_targets(
    boxes: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], num_classes: int, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training targets at stride 4 for input boxes (per image (N, 4) in input pixels) and labels (N,).

    Returns:
        heatmap (B, K, h, w) with an elliptic Gaussian per object (sigma = side / 6), log size (B, 2, h, w),
        offset (B, 2, h, w) and the centre-cell mask (B, h, w) where size and offset are supervised.
    """
    grid_h, grid_w = height // OUTPUT_STRIDE, width // OUTPUT_STRIDE
    count = len(boxes)
    heat = torch.zeros(count, num_classes, grid_h, grid_w)
    size, shift = torch.zeros(count, 2, grid_h, grid_w), torch.zeros(count, 2, grid_h, grid_w)
    mask = torch.zeros(count, grid_h, grid_w, dtype=torch.bool)
    ys, xs = torch.arange(grid_h, dtype=torch.float32)[:, None], torch.arange(grid_w, dtype=torch.float32)[None]
    for image, (image_boxes, image_labels) in enumerate(zip(boxes, labels, strict=True)):
        for box, label in zip((image_boxes / OUTPUT_STRIDE).tolist(), image_labels.tolist(), strict=True):
            centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            box_w, box_h = max(box[2] - box[0], 1e-3), max(box[3] - box[1], 1e-3)
            cell_x, cell_y = min(int(centre_x), grid_w - 1), min(int(centre_y), grid_h - 1)
            sigma_x, sigma_y = max(box_w / 6, 0.5), max(box_h / 6, 0.5)
            blob = torch.exp(-((xs - cell_x) ** 2) / (2 * sigma_x**2) - (ys - cell_y) ** 2 / (2 * sigma_y**2))
            heat[image, label] = torch.maximum(heat[image, label], blob)
            size[image, :, cell_y, cell_x] = torch.tensor([box_w, box_h]).log()
            shift[image, :, cell_y, cell_x] = torch.tensor([centre_x - cell_x, centre_y - cell_y])
            mask[image, cell_y, cell_x] = True
    return heat, size, shift, mask


def detection_loss(
    heads: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss on the heatmap + L1 on log size and offset at centre cells."""
    heat_logits, log_size, offset = heads
    heat_target, size_target, offset_target, mask = targets
    heat = heat_logits.sigmoid().clamp(1e-4, 1 - 1e-4)
    positive = heat_target.eq(1.0).float()
    positive_loss = -(torch.log(heat) * (1 - heat) ** 2 * positive).sum()
    negative_loss = -(torch.log(1 - heat) * heat**2 * (1 - heat_target) ** 4 * (1 - positive)).sum()
    objects = positive.sum().clamp(min=1.0)
    weight = mask[:, None].float()
    size_loss = (F.l1_loss(log_size, size_target, reduction="none") * weight).sum() / objects
    offset_loss = (F.l1_loss(offset, offset_target, reduction="none") * weight).sum() / objects
    return (positive_loss + negative_loss) / objects + size_loss + offset_loss


@register_model
def vit_centernet(**kwargs: object) -> CenterDetector:
    """The project's detector: 64x96 input, dim 64, depth 3, 8x12 tokens, stride-4 CenterNet head."""
    return CenterDetector(DetectorConfig(**kwargs))  # type: ignore[arg-type]
