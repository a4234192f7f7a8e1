"""Offline datasets generated in code (numpy only, deterministic with a seed).

- `digits_arrays`: scikit-learn's `load_digits` (1,797 real handwritten 8x8 digits), upsampled to 32x32.
- `shapes_arrays`: procedural shapes (circle, square, triangle, cross) with random colours, size,
  position, rotation and noise.
- `motion_arrays`: procedural clips of one object drifting along a row. Classes differ only in the ORDER
  of the frames: `right` visits offsets 0,1,...,7 (times a random speed), `left` the negatives,
  `right_and_back` visits 0,2,4,6,7,5,3,1 (out fast and back), `left_and_back` the negatives. Positions
  wrap around the frame (a torus) and the start is uniform, so every single frame is distributed alike
  in all classes (no frame reveals the label), and even the unordered set of frames is distributed alike
  (a bag-of-frames model stays at chance). Only temporal order tells the classes apart.

All arrays are uint8: images (N, C, H, W), clips (N, T, C, H, W); labels int64 (N,).
"""

from __future__ import annotations

import io
from typing import BinaryIO

import numpy as np

MOTION_OFFSETS = {
    "right": np.arange(8, dtype=np.float64),
    "left": -np.arange(8, dtype=np.float64),
    "right_and_back": np.array([0, 2, 4, 6, 7, 5, 3, 1], dtype=np.float64),
    "left_and_back": -np.array([0, 2, 4, 6, 7, 5, 3, 1], dtype=np.float64),
}
"""Offsets (in units of the clip's speed) of the object at each of the 8 frames, per motion class."""


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)


def _resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) float -> (N, size, size) float, bilinear with align_corners=False (as torch's interpolate)."""
    height, width = images.shape[1:]

    def axis_weights(source: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        coords = (np.arange(size) + 0.5) * source / size - 0.5
        coords = np.clip(coords, 0, source - 1)
        low = np.floor(coords).astype(int)
        high = np.minimum(low + 1, source - 1)
        return low, high, coords - low

    y0, y1, wy = axis_weights(height)
    x0, x1, wx = axis_weights(width)
    rows = images[:, y0] * (1 - wy)[None, :, None] + images[:, y1] * wy[None, :, None]  # (N, size, W)
    return rows[:, :, x0] * (1 - wx)[None, None, :] + rows[:, :, x1] * wx[None, None, :]  # (N, size, size)


def digits_arrays(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 scikit-learn digits as uint8 (N, 1, size, size) (ink bright on black) and labels (N,)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float64) / 16.0  # (N, 8, 8) in 0..1
    upsampled = _resize_bilinear(images, size)  # (N, size, size)
    return _to_uint8(upsampled)[:, None], digits.target.astype(np.int64)


def _shape_masks(kind: np.ndarray, u: np.ndarray, v: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Boolean masks (N, H, W) of each sample's shape in its rotated, centred coordinates (u, v)."""
    r = radius[:, None, None]
    circle = u**2 + v**2 <= r**2
    square = np.maximum(np.abs(u), np.abs(v)) <= 0.8 * r
    # Equilateral triangle: inside the three half-planes whose normals point at 90, 210 and 330 degrees.
    triangle = np.ones_like(circle)
    for angle in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
        triangle &= u * np.cos(angle) + v * np.sin(angle) <= 0.5 * r
    arm = 0.3 * r
    cross = ((np.abs(u) <= arm) & (np.abs(v) <= r)) | ((np.abs(v) <= arm) & (np.abs(u) <= r))
    kinds = kind[:, None, None]
    return np.where(kinds == 0, circle, np.where(kinds == 1, square, np.where(kinds == 2, triangle, cross)))


def _colours(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Background and foreground RGB colours (count, 3) in 0..1 that differ by >= 0.35 per channel."""
    background = rng.uniform(0.0, 1.0, (count, 3))
    step = rng.uniform(0.35, 0.65, (count, 3))
    foreground = np.where(background > 0.5, background - step, background + step)
    return background, np.clip(foreground, 0.0, 1.0)


CHUNK_SIZE = 128
"""Procedural samples are drawn in chunks, each from its own generator seeded by (seed, chunk index): the
first n samples of a set do not depend on its size, and a few samples are cheap to draw."""


def _chunked(generate_chunk, count: int, seed: int, size: int, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    chunk_size = max(4, CHUNK_SIZE * 32 * 32 // (size * size))  # same pixels per chunk at any image size
    pixel_chunks, label_chunks = [], []
    for chunk_index, _start in enumerate(range(0, max(count, 0), chunk_size)):
        rng = np.random.default_rng([seed, chunk_index])
        pixels, labels = generate_chunk(rng, chunk_size, size=size, **kwargs)  # whole chunks, trimmed below
        pixel_chunks.append(pixels)
        label_chunks.append(labels)
    if not pixel_chunks:
        raise ValueError(f"count must be >= 1, got {count}")
    return np.concatenate(pixel_chunks)[:count], np.concatenate(label_chunks)[:count]


def shapes_arrays(count: int, seed: int, size: int = 32, noise_std: float = 0.06) -> tuple[np.ndarray, np.ndarray]:
    """Procedural shapes: uint8 (count, 3, size, size) and labels (count,) in 0..3 (circle, square, triangle, cross)."""
    return _chunked(_shapes_chunk, count, seed, size=size, noise_std=noise_std)


def _shapes_chunk(rng: np.random.Generator, count: int, size: int, noise_std: float) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 4, count)
    radius = rng.uniform(0.2, 0.4, count) * size
    centre = rng.uniform(0.0, 1.0, (count, 2)) * (size - 2 * radius[:, None]) + radius[:, None]
    angle = rng.uniform(0, 2 * np.pi, count)
    grid = np.arange(size) + 0.5
    dy = grid[None, :, None] - centre[:, 1, None, None]  # (N, H, 1)
    dx = grid[None, None, :] - centre[:, 0, None, None]  # (N, 1, W)
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u, v = dx * cos + dy * sin, -dx * sin + dy * cos  # (N, H, W) rotated coordinates
    mask = _shape_masks(labels, u, v, radius)[:, None]  # (N, 1, H, W)
    background, foreground = _colours(rng, count)
    images = np.where(mask, foreground[:, :, None, None], background[:, :, None, None])  # (N, 3, H, W)
    images = images + rng.normal(0.0, noise_std, images.shape)
    return _to_uint8(images), labels.astype(np.int64)


def motion_arrays(
    count: int, seed: int, frames: int = 8, size: int = 32, noise_std: float = 0.06
) -> tuple[np.ndarray, np.ndarray]:
    """Procedural motion clips: uint8 (count, frames, 3, size, size) and labels (count,) (order of MOTION_OFFSETS).

    One disk or square per clip moves along a row with a random speed (1.5..3 px per step); the start is
    uniform and positions wrap around, so no single frame (nor the set of frames) depends on the label.
    """
    if frames != len(MOTION_OFFSETS["right"]):
        raise ValueError(f"motion clips have {len(MOTION_OFFSETS['right'])} frames, got frames={frames}")
    return _chunked(_motion_chunk, count, seed, size=size, noise_std=noise_std)


def _motion_chunk(rng: np.random.Generator, count: int, size: int, noise_std: float) -> tuple[np.ndarray, np.ndarray]:
    offsets_by_class = np.stack(list(MOTION_OFFSETS.values()))  # (classes, 8)
    labels = rng.integers(0, len(offsets_by_class), count)
    speed = rng.uniform(1.5, 3.0, count)
    start_x = rng.uniform(0, size, count)
    row_y = rng.uniform(0.2, 0.8, count) * size
    radius = rng.uniform(3.0, 5.0, count)
    is_square = rng.random(count) < 0.5
    background, foreground = _colours(rng, count)

    x = (start_x[:, None] + speed[:, None] * offsets_by_class[labels]).astype(np.float32)  # (N, T) centre x
    grid = np.arange(size, dtype=np.float32) + 0.5
    dx = grid[None, None, None, :] - x[:, :, None, None]  # (N, T, 1, W)
    dx = (dx + size / 2) % size - size / 2  # wrap around: distance on the torus
    dy = grid[None, None, :, None] - row_y[:, None, None, None].astype(np.float32)  # (N, 1, H, 1)
    r = radius[:, None, None, None].astype(np.float32)
    disk = dx**2 + dy**2 <= r**2
    square = np.maximum(np.abs(dx), np.abs(dy)) <= 0.85 * r
    mask = np.where(is_square[:, None, None, None], square, disk)[:, :, None]  # (N, T, 1, H, W)
    foreground, background = foreground.astype(np.float32), background.astype(np.float32)
    clips = np.where(mask, foreground[:, None, :, None, None], background[:, None, :, None, None])  # (N, T, 3, H, W)
    clips += rng.standard_normal(clips.shape, dtype=np.float32) * np.float32(noise_std)
    return _to_uint8(clips), labels.astype(np.int64)


STORY_MOTIONS = ("right", "left")
"""Motions a long story video can hold: steady drifts (the `*_and_back` classes only exist as 8-frame clips)."""


def motion_story_video(
    story: tuple[tuple[str, int], ...],
    seed: int,
    size: int = 32,
    speed: float = 2.25,
    noise_std: float = 0.06,
) -> tuple[np.ndarray, np.ndarray]:
    """A long video with a known story: one object drifting, its direction changing between chapters.

    Each frame is drawn like a frame of `motion_arrays` (same object, colours, noise and wrap-around), so any
    8 consecutive frames of one chapter look like a training clip of that chapter's class.

    Args:
        story: `(motion, frames)` chapters in order, e.g. `(("right", 80), ("left", 80))`; motions from
            `STORY_MOTIONS`.
        seed: random seed (object, colours, start, noise).
        size: frame side in pixels.
        speed: pixels per frame (training clips use 1.5..3).
        noise_std: per-pixel noise (0..1 scale), as in training.

    Returns:
        `(frames, labels)`: uint8 (N, 3, size, size) and, per frame, the index of its chapter's motion in
        `MOTION_OFFSETS` (int64 (N,)).
    """
    names = list(MOTION_OFFSETS)
    if not story or any(motion not in STORY_MOTIONS or count < 1 for motion, count in story):
        raise ValueError(f"story needs (motion, frames >= 1) chapters with motions from {STORY_MOTIONS}, got {story}")
    rng = np.random.default_rng(seed)
    steps = np.concatenate([np.full(count, 1.0 if motion == "right" else -1.0) for motion, count in story])
    labels = np.concatenate([np.full(count, names.index(motion), dtype=np.int64) for motion, count in story])
    # the step INTO frame i is the direction of frame i's chapter; frame 0 sits at the start
    x = (rng.uniform(0, size) + speed * np.concatenate([[0.0], np.cumsum(steps[1:])])).astype(np.float32)  # (N,)
    row_y, radius = rng.uniform(0.2, 0.8) * size, rng.uniform(3.0, 5.0)
    background, foreground = (c[0].astype(np.float32) for c in _colours(rng, 1))
    grid = np.arange(size, dtype=np.float32) + 0.5
    dx = (grid[None, None, :] - x[:, None, None] + size / 2) % size - size / 2  # (N, 1, W) on the torus
    dy = grid[None, :, None] - np.float32(row_y)  # (1, H, 1)
    if rng.random() < 0.5:
        mask = np.maximum(np.abs(dx), np.abs(dy)) <= 0.85 * radius  # (N, H, W) square
    else:
        mask = dx**2 + dy**2 <= radius**2  # (N, H, W) disk
    frames = np.where(mask[:, None], foreground[None, :, None, None], background[None, :, None, None])
    frames = frames + rng.standard_normal(frames.shape, dtype=np.float32) * np.float32(noise_std)
    return _to_uint8(frames), labels


def write_h264(frames: np.ndarray, target: str | BinaryIO, fps: int = 8, container_format: str | None = None) -> None:
    """Write uint8 (N, C, H, W) frames (C = 1 or 3, H and W even) as near-lossless H.264 (crf 10, yuv420p).

    Args:
        frames: The clip, uint8 (N, C, H, W).
        target: A file path (the container from its suffix unless `container_format` says) or a binary stream.
        fps: Frames per second.
        container_format: The container ("mp4", ...); needed for a stream.
    """
    import av

    with av.open(target, mode="w", format=container_format) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[3], frames.shape[2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "10"}  # near-lossless: small synthetic frames survive compression
        for frame_chw in frames:
            rgb = np.repeat(frame_chw, 3, axis=0) if frame_chw.shape[0] == 1 else frame_chw
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb.transpose(1, 2, 0)), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def encode_video(frames: np.ndarray, fps: int = 8, container_format: str = "mp4") -> bytes:
    """uint8 (N, C, H, W) frames (C = 1 or 3, H and W even) -> near-lossless H.264 bytes (crf 10, yuv420p)."""
    buffer = io.BytesIO()
    write_h264(frames, buffer, fps, container_format)
    return buffer.getvalue()
