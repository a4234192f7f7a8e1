"""Detections drawn on the user's own image with Pillow: labelled boxes (`attnserve infer --boxes OUT.png`) and, for
DETR-style detectors, each detection's cross-attention map under its box (`attnserve infer --explain OUT.png`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from attnserve.boxes import BoxMapping
from attnserve.detection import Detection

PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))


def draw_detections(image: Image.Image, detections: Sequence[Detection], labels: Sequence[str] = ()) -> Image.Image:
    """A copy of `image` (RGB) with each box outlined and captioned `label score`; one colour per label.

    Args:
        image: The original image (boxes are in its pixels).
        detections: `{label, score, box}` records (`TritonClient.detect`).
        labels: The model's labels, to give each label the same colour in every picture (default: by order met).
    """
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    order = list(labels)
    width = max(1, round(max(canvas.size) / 200))
    for detection in detections:
        if detection["label"] not in order:
            order.append(detection["label"])
        colour = PALETTE[order.index(detection["label"]) % len(PALETTE)]
        x0, y0, x1, y1 = detection["box"]
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=colour, width=width)
        caption = f"{detection['label']} {detection['score']:.2f}"
        left, top, right, bottom = draw.textbbox((x0, y0), caption)
        lift = bottom - top + 2 if top - (bottom - top + 2) >= 0 else -width  # above the box, or inside at the top
        draw.rectangle((left, top - lift, right + 2, bottom - lift), fill=colour)
        draw.text((x0 + 1, y0 - lift), caption, fill=(255, 255, 255))
    return canvas


def write_detections(source: Path, detections: Sequence[Detection], out_path: Path, labels: Sequence[str] = ()) -> Path:
    """Draw `detections` on the image file `source` and save it as `out_path` (PNG or any format Pillow writes)."""
    with Image.open(source) as image:
        drawn = draw_detections(image, detections, labels)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    drawn.save(out_path)
    return out_path


MAX_PANELS = 6


def attention_on_original(attention: np.ndarray, mapping: BoxMapping, input_size: tuple[int, int]) -> np.ndarray:
    """A (gh, gw) map over the model's input frame, resized to the input (H, W) and carried into the original
    image's pixels through the box mapping (the same geometry as the boxes): (H0, W0), values kept."""
    height, width = input_size
    frame = np.asarray(
        Image.fromarray(np.asarray(attention, np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR)
    )
    xs = ((np.arange(mapping.original_width) + 0.5) / mapping.scale_x + mapping.offset_x).astype(np.int64)
    ys = ((np.arange(mapping.original_height) + 0.5) / mapping.scale_y + mapping.offset_y).astype(np.int64)
    return frame[ys.clip(0, height - 1)][:, xs.clip(0, width - 1)]


def write_detection_attention(source: Path, detections: Sequence[Detection], maps: np.ndarray, mapping: BoxMapping,
                              input_size: tuple[int, int], out_path: Path, labels: Sequence[str] = ()) -> Path:  # fmt: skip
    """One panel per detection (at most `MAX_PANELS`), side by side: the original image, red where that
    detection's object query attended most (its cross-attention map, min-max scaled), its labelled box on top."""
    with Image.open(source) as opened:
        image = opened.convert("RGB")
    panels = []
    for detection, attention in list(zip(detections, maps, strict=True))[:MAX_PANELS]:
        weight = attention_on_original(attention, mapping, input_size)
        # min-max: the regions a query preferred stand out; a uniform map (no preference) tints nothing
        span = max(float(weight.max() - weight.min()), 1e-12)
        weight = ((weight - weight.min()) / span)[..., None] * 0.7  # (H0, W0, 1)
        tinted = np.asarray(image, np.float32) * (1 - weight) + np.array([255.0, 0.0, 0.0]) * weight
        panels.append(draw_detections(Image.fromarray(tinted.round().astype(np.uint8)), [detection], labels))
    panels = panels or [image]
    strip = Image.new("RGB", (sum(panel.width for panel in panels), image.height))
    for index, panel in enumerate(panels):
        strip.paste(panel, (index * image.width, 0))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(out_path)
    return out_path
