"""Detections drawn on the user's own image: labelled boxes with Pillow (`attnserve infer --boxes OUT.png`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

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
