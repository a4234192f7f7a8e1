"""Client-side media decoding: images and videos to the uint8 tensors a served model takes.

Images: the model's declared preprocessing (`attnserve.preprocessing.to_chw`, the transform training and the
served pipeline apply too; the client reads it from the served spec), channels first (C, H, W).
Videos: decode with PyAV (`attnserve.video`: refuses fewer frames than the model takes, still images, non-video
files, as the server does), sample `frames` indices as declared, each frame as an image -> (T, C, H, W).
Size limits (bytes, pixels) are the server's (`attnserve.preprocessing`), checked before sending.
No normalisation: models take uint8 pixels and normalise inside their graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from attnserve.errors import DataError, DTypeError, ShapeError
from attnserve.preprocessing import (
    DEFAULT_PREPROCESSING,
    Preprocessing,
    check_image_size,
    check_payload_size,
    frame_to_chw,
    open_image_bytes,
    to_chw,
)
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
    check_payload_size(path.stat().st_size, f"file {path}")  # before reading: the server's limit
    return path.read_bytes()


def open_image(source: ImageSource) -> PILImage.Image:
    """Decode any `ImageSource` into a PIL image (encoded data under the server's size limits)."""
    from PIL import Image

    if isinstance(source, Image.Image):
        check_image_size(source.width, source.height)
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
        check_image_size(source.shape[1], source.shape[0], "image array")
        return Image.fromarray(source)
    data = read_bytes(source)
    return open_image_bytes(data, where=_describe(source))


def image_to_tensor(
    source: ImageSource, height: int, width: int, channels: int, preprocessing: Preprocessing = DEFAULT_PREPROCESSING
) -> np.ndarray:
    """Decode and transform by the model's `preprocessing` to uint8 (channels, height, width).

    An array already of shape (channels, height, width) is the model input itself and passes unchanged.
    """
    if isinstance(source, np.ndarray) and source.shape == (channels, height, width):
        if source.dtype != np.uint8:
            raise DTypeError(f"expected a uint8 image array, got dtype {source.dtype}")
        return np.ascontiguousarray(source)
    return to_chw(open_image(source), channels, height, width, preprocessing)


def read_video_frames(
    source: str | Path | bytes,
    frames: int,
    preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
    limits: VideoLimits | None = None,
) -> list[Any]:
    """Decode a video and return `frames` PIL images sampled as declared.

    The checks are `attnserve.video`'s, the same as the server's: fewer frames than `frames` (never repeated),
    a still image (also renamed `.mp4`), a non-video file, corrupt bytes or a video beyond `limits` raise
    `DataError`.
    """
    data = read_bytes(source)
    video = decode_video(data, limits, needed=frames, source=None if isinstance(source, bytes) else str(source))
    return [video.frames[i] for i in sample_indices(len(video.frames), frames, preprocessing)]


def video_to_tensor(
    source: str | Path | bytes,
    frames: int,
    height: int,
    width: int,
    channels: int,
    preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
) -> np.ndarray:
    """Decode, sample and transform a video to uint8 (frames, channels, height, width)."""
    chosen = read_video_frames(source, frames, preprocessing)
    return np.stack([frame_to_chw(frame, channels, height, width, preprocessing) for frame in chosen])


def _describe(source: str | Path | bytes) -> str:
    return f"{len(source)} bytes" if isinstance(source, bytes) else str(source)
