"""Procedural detection scenes: several shapes of a few classes on a noisy, non-square canvas, with their boxes.

A scene is drawn at any size (`render`), so the same layout can be written as a large non-square PNG or JPEG
(what a user sends) and drawn small for training. Layouts are drawn in a unit frame (fractions of the canvas)
and scaled, so the boxes of a scene drawn at W x H are exact in that canvas's pixels. Objects may overlap
partly (IoU at most `MAX_IOU` with every earlier one; a later shape occludes an earlier one); some scenes
hold no object at all. Numpy + Pillow, no torch: tests and the demo write files with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from attnserve.catalogue import DETECTION_LABELS

MAX_OBJECTS = 5
EMPTY_FRACTION = 0.05
"""Share of scenes with no object (an empty scene must answer an empty list)."""
MAX_IOU = 0.3
MIN_SIDE, MAX_SIDE = 0.14, 0.42
"""Object side as a fraction of the canvas height."""
NOISE_STD = 10.0
FILE_SIZES: tuple[tuple[int, int], ...] = ((192, 128), (240, 160), (150, 100), (288, 192))
"""(width, height) of held-out scene files: non-square, larger than the detector's 96x64 input, in turn."""
FILE_SEED = 777_001
"""Seed of the held-out scene files (training and its held-out set draw from other seeds)."""
JPEG_QUALITY = 95


@dataclass(frozen=True)
class SceneObject:
    """One shape: class index into `DETECTION_LABELS`, box in unit coordinates `(x0, y0, x1, y1)`, RGB colour."""

    label: int
    box: tuple[float, float, float, float]
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    """A layout (objects, background colour, noise seed), drawable at any size."""

    objects: tuple[SceneObject, ...]
    background: tuple[int, int, int]
    noise_seed: int

    def boxes(self, width: int, height: int) -> np.ndarray:
        """Boxes (N, 4) `[x0, y0, x1, y1]` in the pixels of a `width` x `height` drawing."""
        scale = np.array([width, height, width, height], dtype=np.float64)
        return np.array([obj.box for obj in self.objects], dtype=np.float64).reshape(-1, 4) * scale

    def labels(self) -> np.ndarray:
        """Class indices (N,)."""
        return np.array([obj.label for obj in self.objects], dtype=np.int64)


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x0, y0 = np.maximum(box[0], others[:, 0]), np.maximum(box[1], others[:, 1])
    x1, y1 = np.minimum(box[2], others[:, 2]), np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    return inter / (area + (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1]) - inter)


def random_scene(rng: np.random.Generator, aspect: float = 1.5) -> Scene:
    """A random layout for a canvas `aspect` = width / height (0 to `MAX_OBJECTS` shapes)."""
    count = 0 if rng.random() < EMPTY_FRACTION else int(rng.integers(1, MAX_OBJECTS + 1))
    background = tuple(int(v) for v in rng.integers(0, 90, 3))
    objects: list[SceneObject] = []
    boxes = np.zeros((0, 4))
    for _ in range(count * 10):  # rejection sampling of overlaps
        if len(objects) == count:
            break
        side_h = rng.uniform(MIN_SIDE, MAX_SIDE)
        side_w = side_h * rng.uniform(0.75, 1.33) / aspect
        x0, y0 = rng.uniform(0, 1 - side_w), rng.uniform(0, 1 - side_h)
        box = np.array([x0, y0, x0 + side_w, y0 + side_h])
        if len(boxes) and _iou(box, boxes).max() > MAX_IOU:
            continue
        colour = tuple(int(v) for v in rng.integers(130, 256, 3))
        objects.append(SceneObject(int(rng.integers(len(DETECTION_LABELS))), tuple(box.tolist()), colour))  # type: ignore[arg-type]
        boxes = np.vstack([boxes, box])
    return Scene(tuple(objects), background, int(rng.integers(2**31)))  # type: ignore[arg-type]


def render(scene: Scene, width: int, height: int) -> Image.Image:
    """Draw `scene` as an RGB image of `width` x `height` (shapes fill their boxes exactly, then noise)."""
    image = Image.new("RGB", (width, height), scene.background)
    draw = ImageDraw.Draw(image)
    for obj, (x0, y0, x1, y1) in zip(scene.objects, scene.boxes(width, height), strict=True):
        # Pillow's shapes include their last pixel: x1 - 1 keeps the filled area inside [x0, x1).
        corners = (x0, y0, x1 - 1, y1 - 1)
        name = DETECTION_LABELS[obj.label]
        if name == "circle":
            draw.ellipse(corners, fill=obj.colour)
        elif name == "square":
            draw.rectangle(corners, fill=obj.colour)
        else:
            draw.polygon([(x0, y1 - 1), (x1 - 1, y1 - 1), ((x0 + x1 - 1) / 2, y0)], fill=obj.colour)
    noise = np.random.default_rng(scene.noise_seed).normal(0.0, NOISE_STD, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8))


def make_scenes(count: int, seed: int, aspect: float = 1.5) -> list[Scene]:
    """`count` random layouts from `seed` (the same seed gives the same scenes)."""
    rng = np.random.default_rng(seed)
    return [random_scene(rng, aspect) for _ in range(count)]


def render_batch(scenes: list[Scene], width: int, height: int) -> np.ndarray:
    """Scenes drawn at the model's input size: uint8 (N, 3, height, width)."""
    return np.stack([np.asarray(render(scene, width, height)).transpose(2, 0, 1) for scene in scenes])


def coco_ground_truth(scenes: list[Scene], sizes: list[tuple[int, int]]) -> dict[str, Any]:
    """COCO-format ground truth of `scenes` drawn at `sizes` ((width, height) each): image ids are indices."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, (scene, (width, height)) in enumerate(zip(scenes, sizes, strict=True)):
        images.append({"id": image_id, "width": width, "height": height})
        for box, label in zip(scene.boxes(width, height), scene.labels(), strict=True):
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})  # fmt: skip
    categories = [{"id": index, "name": name} for index, name in enumerate(DETECTION_LABELS)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_scene_files(
    out_dir: Path, count: int, seed: int = FILE_SEED, sizes: tuple[tuple[int, int], ...] = FILE_SIZES
) -> tuple[list[Path], dict[str, Any]]:
    """Held-out scenes as the files a user sends: `scene_I.jpg` / `scene_I.png` in turn, sizes in turn.

    Args:
        out_dir: Folder for the files (created).
        count: Number of scenes.
        seed: Layout seed.
        sizes: (width, height) of the files, used in turn.

    Returns:
        The files and their COCO ground truth in each file's own pixels (image id = index in the list).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    scenes = make_scenes(count, seed)
    file_sizes = [sizes[index % len(sizes)] for index in range(count)]
    files = []
    for index, (scene, (width, height)) in enumerate(zip(scenes, file_sizes, strict=True)):
        path = out_dir / f"scene_{index}.{'png' if index % 2 else 'jpg'}"
        render(scene, width, height).save(path, **({"quality": JPEG_QUALITY} if path.suffix == ".jpg" else {}))
        files.append(path)
    return files, coco_ground_truth(scenes, file_sizes)
