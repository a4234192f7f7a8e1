"""Helpers of the export tests: a tiny spec and a tiny SDPA classifier (imported by conftest and tests)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from attnserve.spec import IoSection, ModelSpec, ServingSection

TINY_SHAPE = (3, 16, 16)
TINY_LABELS = ("cat", "dog", "bird", "fish")
TINY_TRANSFORMER: dict[str, int] = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
)
"""The size of the tiny Hugging Face transformers the HF tests build offline (random weights)."""


def tiny_spec(**overrides: object) -> ModelSpec:
    """A small image spec (3x16x16, 4 classes, max batch 4); `overrides` are top-level fields or whole sections."""
    fields: dict[str, object] = dict(
        name="tiny",
        arch="tiny_sdpa",
        kind="image",
        io=IoSection(
            layout="NCHW", input_shape=TINY_SHAPE, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), labels=TINY_LABELS
        ),
        serving=ServingSection(max_batch_size=4, preferred_batch_sizes=(2, 4)),
    )
    fields.update(overrides)
    return ModelSpec.model_validate(fields)


class TinySdpaClassifier(nn.Module):
    """uint8 (B, 3, 16, 16) -> logits (B, 4): 4x4 patches, `depth` SDPA blocks, mean pooling."""

    def __init__(self, depth: int = 2, dim: int = 16, heads: int = 2, num_classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.heads = heads
        self.embed = nn.Conv2d(3, dim, kernel_size=4, stride=4)
        self.qkv = nn.ModuleList(nn.Linear(dim, 3 * dim) for _ in range(depth))
        self.proj = nn.ModuleList(nn.Linear(dim, dim) for _ in range(depth))
        self.head = nn.Linear(dim, num_classes)

    def forward_with_attention(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits plus the last block's mean attention weights (B, N, N), computed without SDPA."""
        x = self._embed(pixels)
        weights = torch.zeros(0)
        for qkv, proj in zip(self.qkv, self.proj):
            q, k, v = self._split(qkv(x))
            weights = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1)  # (B, h, N, N)
            x = x + proj((weights @ v).transpose(1, 2).flatten(2))
        return self.head(x.mean(dim=1)), weights.mean(dim=1)

    def _embed(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels.float() / 255.0 - 0.5) / 0.25
        return self.embed(x).flatten(2).transpose(1, 2)  # (B, N, dim)

    def _split(self, qkv_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, tokens, _ = qkv_out.shape
        q, k, v = qkv_out.view(batch, tokens, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # 3 x (B, h, N, hd)
        return q, k, v

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self._embed(pixels)
        for qkv, proj in zip(self.qkv, self.proj):
            q, k, v = self._split(qkv(x))
            x = x + proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))
        return self.head(x.mean(dim=1))
