"""Client-side media decoding: images and videos to the uint8 tensors a served model takes.

Images: resize the shorter side to the model's input size, centre-crop, channels first (C, H, W).
Videos: decode with PyAV (`attnserve.video`: refuses fewer frames than the model takes, still images, non-video
files), sample `frames` indices evenly over the clip, each frame as an image -> (T, C, H, W).
No normalisation: models take uint8 pixels and normalise inside their graph.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from attnserve.errors import DataError, DTypeError, ShapeError
from attnserve.video import VideoLimits, decode_video, sample_indices

if TYPE_CHECKING:
    from PIL import Image as PILImage

ImageSource = Union[str, Path, bytes, "PILImage.Image", np.ndarray]
"""A file path, encoded bytes, a PIL image, or a uint8 array ((C,H,W) of the model's size, (H,W,C) or (H,W))."""

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".gif", ".m4v"})


def is_video_path(path: str | Path) -> bool:
    """True when the file name looks like a video (by suffix)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def read_bytes(source: str | Path | bytes) -> bytes:
    """The encoded bytes of a path or bytes."""
    if isinstance(source, bytes):
        return source
    path = Path(source)
    if not path.is_file():
        raise DataError(f"expected an image/video file, got {str(path)!r} (no such file)")
    return path.read_bytes()


def open_image(source: ImageSource) -> PILImage.Image:
    """Decode any `ImageSource` into a PIL image."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8:
            raise DTypeError(f"expected a uint8 image array, got dtype {source.dtype}")
        if source.ndim == 3 and source.shape[0] in (1, 3) and source.shape[-1] not in (1, 3):
            source = np.moveaxis(source, 0, -1)  # CHW -> HWC
        if source.ndim == 3 and source.shape[-1] == 1:
            source = source[..., 0]
        if source.ndim not in (2, 3):
            raise ShapeError(f"expected an image array (H,W), (H,W,C) or (C,H,W), got shape {source.shape}")
        return Image.fromarray(source)
    data = read_bytes(source)
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        where = f"{source!s}" if not isinstance(source, bytes) else f"{len(data)} bytes"
        raise DataError(f"expected an encoded image (PNG, JPEG, ...), could not decode {where}: {exc}") from exc
    return image


def image_to_tensor(source: ImageSource, height: int, width: int, channels: int) -> np.ndarray:
    """Resize (shorter side) + centre-crop to (height, width); return uint8 (channels, height, width)."""
    if isinstance(source, np.ndarray) and source.shape == (channels, height, width):
        if source.dtype != np.uint8:
            raise DTypeError(f"expected a uint8 image array, got dtype {source.dtype}")
        return np.ascontiguousarray(source)
    from PIL import Image

    image = open_image(source).convert("L" if channels == 1 else "RGB")
    scale = max(height / image.height, width / image.width)
    resized_w, resized_h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    image = image.resize((resized_w, resized_h), Image.BILINEAR)
    left, top = (resized_w - width) // 2, (resized_h - height) // 2
    image = image.crop((left, top, left + width, top + height))
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def read_video_frames(source: str | Path | bytes, frames: int, limits: VideoLimits | None = None) -> list[Any]:
    """Decode a video and return `frames` PIL images sampled evenly over it.

    The checks are `attnserve.video`'s, the same as the server's: fewer frames than `frames`, a still image
    (also renamed `.mp4`), a non-video file, corrupt bytes or a video beyond `limits` raise `DataError`.
    """
    data = read_bytes(source)
    video = decode_video(data, limits, needed=frames, source=None if isinstance(source, bytes) else str(source))
    return [video.frames[i] for i in sample_indices(len(video.frames), frames)]


def video_to_tensor(source: str | Path | bytes, frames: int, height: int, width: int, channels: int) -> np.ndarray:
    """Decode, sample and resize a video to uint8 (frames, channels, height, width)."""
    return np.stack([image_to_tensor(f, height, width, channels) for f in read_video_frames(source, frames)])
