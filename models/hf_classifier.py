"""A Hugging Face `*ForImageClassification` model behind the project's contract: uint8 pixels in, logits out.

Training (`attnserve train --from-hf`) fine-tunes it and `export --hf` exports it, so the normalisation the
model was fine-tuned with is the one served.
"""

from __future__ import annotations

import torch
from torch import nn


class HFImageClassifier(nn.Module):
    """uint8 pixels `(B, C, H, W)` -> logits `(B, num_classes)` around a `*ForImageClassification` model."""

    def __init__(self, hf_model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.hf_model = hf_model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        pixel_values = (pixels.float() / 255.0 - self.mean) / self.std  # (B, C, H, W)
        return self.hf_model(pixel_values=pixel_values).logits
