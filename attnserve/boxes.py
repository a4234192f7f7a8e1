"""Boxes between a model's input and the user's original image: the inverse of `attnserve.preprocessing`.

A detector answers boxes in its input's pixel frame (H x W after `to_chw`); a user wants them in the pixels of
the image they sent. `BoxMapping.for_image` reads the model's `Preprocessing` and the original size and gives
the affine map that `to_chw`'s resize applied, exactly as `preprocessing._resize` computes it (same rounding of
the resized size, same centring offsets), so a box drawn on the original lands where the model saw it:

- `squash`: x scales by W0 / W and y by H0 / H (each axis on its own);
- `letterbox`: the image was scaled to (w, h) inside W x W and pasted at ((W - w) // 2, (H - h) // 2): remove
  the padding offset, then scale by W0 / w and H0 / h; boxes in the padding clip to the image's border;
- `crop`: the image was scaled to cover (w, h) and cropped at ((w - W) // 2, (h - H) // 2): add that offset
  back, then scale; a box cut by the crop stays cut (the model never saw the rest).

Coordinates are continuous pixel-corner coordinates (Pillow's convention: the image spans [0, W0] x [0, H0]);
boxes are `[x0, y0, x1, y1]`. numpy only, no torch: the served post-processing step imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnserve.errors import UserInputError
from attnserve.preprocessing import Preprocessing


@dataclass(frozen=True)
class BoxMapping:
    """The affine map from model-input pixels to original pixels: `original = (input - offset) * scale`.

    Attributes:
        scale_x: Original pixels per input pixel, horizontally.
        scale_y: Original pixels per input pixel, vertically.
        offset_x: Input-frame x where the original's left edge lies (letterbox > 0, crop < 0, squash 0).
        offset_y: Input-frame y where the original's top edge lies.
        original_width: W0, to clip the mapped boxes.
        original_height: H0.
    """

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    original_width: int
    original_height: int

    @classmethod
    def for_image(
        cls,
        original_width: int,
        original_height: int,
        input_width: int,
        input_height: int,
        preprocessing: Preprocessing,
    ) -> BoxMapping:
        """The map for an original of `original_width` x `original_height` fed to a model taking
        `input_width` x `input_height` through `preprocessing` (the spec's).

        Raises:
            UserInputError: For a non-positive size.
        """
        sizes = (original_width, original_height, input_width, input_height)
        if min(sizes) < 1:
            raise UserInputError(f"box mapping needs positive sizes (original W, H, input W, H), got {sizes}")
        if preprocessing.resize == "squash":
            return cls(original_width / input_width, original_height / input_height, 0.0, 0.0,
                       original_width, original_height)  # fmt: skip
        if preprocessing.resize == "crop":
            scale = max(input_height / original_height, input_width / original_width)
            width = max(input_width, round(original_width * scale))
            height = max(input_height, round(original_height * scale))
            offset_x, offset_y = -((width - input_width) // 2), -((height - input_height) // 2)
        else:  # letterbox
            scale = min(input_height / original_height, input_width / original_width)
            width = min(input_width, max(1, round(original_width * scale)))
            height = min(input_height, max(1, round(original_height * scale)))
            offset_x, offset_y = (input_width - width) // 2, (input_height - height) // 2
        return cls(original_width / width, original_height / height, float(offset_x), float(offset_y),
                   original_width, original_height)  # fmt: skip

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Input-frame boxes (N, 4) `[x0, y0, x1, y1]` -> original pixels, clipped to the image (float64)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        mapped = np.empty_like(boxes)
        mapped[:, 0::2] = (boxes[:, 0::2] - self.offset_x) * self.scale_x
        mapped[:, 1::2] = (boxes[:, 1::2] - self.offset_y) * self.scale_y
        mapped[:, 0::2] = mapped[:, 0::2].clip(0.0, self.original_width)
        mapped[:, 1::2] = mapped[:, 1::2].clip(0.0, self.original_height)
        return mapped

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Original-pixel boxes (N, 4) -> the model-input frame (not clipped): the forward map, for targets."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        mapped = np.empty_like(boxes)
        mapped[:, 0::2] = boxes[:, 0::2] / self.scale_x + self.offset_x
        mapped[:, 1::2] = boxes[:, 1::2] / self.scale_y + self.offset_y
        return mapped
