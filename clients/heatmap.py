"""Attention heatmaps over their image (or over each frame of a video, as a strip under a bar of each frame's
temporal weight), written as PNG (matplotlib Agg)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from attnserve.clients.predictions import Prediction
from attnserve.errors import ShapeError


def attention_grid(attention_map: np.ndarray) -> np.ndarray:
    """The map as (frames, h, w): 2-D maps get one frame; flat square-length maps are reshaped."""
    values = np.asarray(attention_map, dtype=np.float32)
    if values.ndim == 1:
        side = math.isqrt(values.size)
        if side * side != values.size:
            raise ShapeError(f"expected a square attention map, got {values.size} values (shape {values.shape})")
        values = values.reshape(side, side)
    if values.ndim == 2:
        values = values[None]
    if values.ndim != 3:
        raise ShapeError(f"expected an attention map of shape (h, w) or (frames, h, w), got {values.shape}")
    return values


def upsample(grid: np.ndarray, height: int, width: int, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Bilinear resize of one (h, w) map to (height, width), scaled to 0..1 (over `value_range`, default its own)."""
    from PIL import Image

    low, high = value_range if value_range is not None else (float(grid.min()), float(grid.max()))
    scaled = (grid - low) / (high - low) if high > low else np.zeros_like(grid)
    image = Image.fromarray(scaled.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image)


def temporal_weights(attention_map: np.ndarray) -> np.ndarray | None:
    """Per-frame share of a video's space-time attention (sums to 1), or None for a single map.

    The video models' map is one attention distribution over all (frame, patch) tokens, scaled by a single
    maximum, so each frame's sum is its share of the attention: where in time the model looked.
    """
    grids = attention_grid(attention_map)
    if grids.shape[0] < 2:
        return None
    sums = np.clip(grids, 0, None).reshape(grids.shape[0], -1).sum(axis=1).astype(np.float64)
    total = float(sums.sum())
    return sums / total if total > 0 else np.full(grids.shape[0], 1.0 / grids.shape[0])


def write_overlay(pixels: np.ndarray, attention_map: np.ndarray, prediction: Prediction, path: Path) -> Path:
    """Write the image(s) with the attention heatmap overlaid.

    Args:
        pixels: uint8 (C, H, W) image or (T, C, H, W) video, as sent to the model.
        attention_map: (h, w), (frames, h, w) or a flat square map.
        prediction: its label and score go in the title.
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = pixels[None] if pixels.ndim == 3 else pixels  # (T, C, H, W)
    grids = attention_grid(attention_map)
    count = frames.shape[0]
    weights = temporal_weights(grids) if grids.shape[0] == count else None
    # Rows: the temporal weights (videos), the input as sent (so the eye can find the object), the input
    # under the map.
    bar_rows = 1 if weights is not None else 0
    figure = plt.figure(figsize=(2.6 * count, 5.4 + 1.6 * bar_rows))
    layout = figure.add_gridspec(2 + bar_rows, count, height_ratios=[0.6] * bar_rows + [1, 1])
    if weights is not None:
        bar = figure.add_subplot(layout[0, :])
        bar.bar(np.arange(count), weights, color="tab:orange")
        bar.set_xlim(-0.5, count - 0.5)
        bar.set_xticks(np.arange(count), [f"frame {i}" for i in range(count)], fontsize=7)
        bar.set_ylabel("temporal weight", fontsize=8)
        bar.tick_params(axis="y", labelsize=7)
    # a video's frames share one colour scale: a frame the model hardly looked at stays dark
    value_range = (float(grids.min()), float(grids.max())) if weights is not None else None
    for index in range(count):
        frame = frames[index].transpose(1, 2, 0)  # (H, W, C)
        grey = frame.shape[-1] == 1
        shown = frame[..., 0] if grey else frame
        grid = grids[min(grids.shape[0] - 1, index * grids.shape[0] // count)]
        top, bottom = figure.add_subplot(layout[bar_rows, index]), figure.add_subplot(layout[bar_rows + 1, index])
        top.imshow(shown, cmap="gray" if grey else None)
        bottom.imshow(shown, cmap="gray" if grey else None)
        heat = upsample(grid, frame.shape[0], frame.shape[1], value_range)
        bottom.imshow(heat, cmap="inferno", alpha=0.5, vmin=0.0, vmax=1.0)  # no per-image colour stretch
        for axis in (top, bottom):
            axis.set_axis_off()
        top.set_title(f"frame {index}" if count > 1 else "input", fontsize=8)
        bottom.set_title("attention" if weights is None else f"attention {weights[index]:.0%}", fontsize=8)
    figure.suptitle(f"{prediction.label} ({prediction.score:.1%})", fontsize=10)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
