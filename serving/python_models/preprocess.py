"""Decode encoded images (JPEG/PNG, Pillow) and videos (PyAV) into the uint8 pixels a model takes.

Plain functions, importable without Triton: the `preprocess_model` shim calls them per request, and tests
call them in-process to check that the server's pipeline gives the label the model gives on the same pixels.

Resizing, channel order and frame sampling are the model's declared `Preprocessing`, applied by
`attnserve.preprocessing.to_chw` (the one transform training and the client use too). Videos: `attnserve.video`
decodes every frame (within `VideoLimits`) and refuses what is not enough video (fewer frames than the model
takes, a still image, a non-video file); `frames` of them are sampled and each is treated like an image.
Output layouts: image (C, H, W), video (T, C, H, W). Size limits are shared with the client.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from attnserve.errors import DataError, UserInputError
from attnserve.preprocessing import Preprocessing, check_payload_size, open_image_bytes, to_chw
from attnserve.video import VideoLimits, sample_indices
from attnserve.video import decode_video as decode_video_frames

IMAGE_FORMATS = ("JPEG", "PNG")


@dataclass(frozen=True)
class PreprocessTarget:
    """What one model wants: `kind` image|video, channels (1 = grey, 3 = RGB), size, frames for video, and
    the model's declared `preprocessing`."""

    kind: str
    channels: int
    height: int
    width: int
    frames: int | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    def __post_init__(self) -> None:
        if self.kind not in ("image", "video", "detection"):
            raise UserInputError(f"kind must be 'image', 'video' or 'detection', got {self.kind!r}")
        if self.channels not in (1, 3):
            raise UserInputError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels}")
        if self.height < 1 or self.width < 1:
            raise UserInputError(f"height and width must be positive, got {self.height}x{self.width}")
        if self.kind == "video" and (self.frames is None or self.frames < 1):
            raise UserInputError(f"a video target needs frames >= 1, got {self.frames}")

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the pixels: (C, H, W) or (T, C, H, W)."""
        image_shape = (self.channels, self.height, self.width)
        return (self.frames or 1, *image_shape) if self.kind == "video" else image_shape

    def to_parameters(self) -> dict[str, str]:
        """As Triton config parameters (strings)."""
        parameters = {
            "kind": self.kind,
            "channels": str(self.channels),
            "height": str(self.height),
            "width": str(self.width),
        }
        if self.frames is not None:
            parameters["frames"] = str(self.frames)
        return {**parameters, **self.preprocessing.to_parameters()}

    @classmethod
    def from_parameters(cls, parameters: dict[str, str]) -> PreprocessTarget:
        """Back from `to_parameters` (what the python-backend model reads from its config)."""
        try:
            return cls(
                kind=parameters["kind"],
                channels=int(parameters["channels"]),
                height=int(parameters["height"]),
                width=int(parameters["width"]),
                frames=int(parameters["frames"]) if "frames" in parameters else None,
                preprocessing=Preprocessing.from_parameters(parameters),
            )
        except (KeyError, ValueError) as exc:
            raise UserInputError(
                f"preprocess parameters need kind, channels, height, width (and frames for video); got {parameters}"
            ) from exc


def to_pixels(image: Image.Image, target: PreprocessTarget) -> np.ndarray:
    """A decoded image or frame -> uint8 (C, H, W) for `target`, by the model's declared preprocessing."""
    return to_chw(image, target.channels, target.height, target.width, target.preprocessing)


def _check_payload(payload: bytes, what: str) -> None:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise DataError(f"expected encoded {what} bytes, got {type(payload).__name__}")
    if len(payload) == 0:
        raise DataError(f"empty {what} payload: expected encoded {what} bytes")
    check_payload_size(len(payload), what)


def decode_image(payload: bytes, target: PreprocessTarget) -> np.ndarray:
    """Encoded JPEG/PNG bytes -> uint8 (C, H, W) for `target`.

    Raises:
        DataError: empty, undecodable, truncated, too large, or not JPEG/PNG (the message names which).
    """
    return decode_image_with_size(payload, target)[0]


def decode_image_with_size(payload: bytes, target: PreprocessTarget) -> tuple[np.ndarray, np.ndarray]:
    """Encoded JPEG/PNG bytes -> (uint8 (C, H, W) for `target`, the original `[width, height]` as int32).

    Detection pipelines pass the original size on, so boxes map back to the pixels the user sent.

    Raises:
        DataError: as `decode_image`.
    """
    _check_payload(payload, "image")
    image = open_image_bytes(bytes(payload), IMAGE_FORMATS)
    return to_pixels(image, target), np.array([image.width, image.height], dtype=np.int32)


def decode_video(payload: bytes, target: PreprocessTarget, limits: VideoLimits | None = None) -> np.ndarray:
    """Encoded video bytes (any container/codec PyAV reads) -> uint8 (T, C, H, W) for `target`.

    Decoding, limits and the frame-count policy are `attnserve.video`'s (refuse, never repeat frames).

    Raises:
        DataError: empty, not a video (a still image too), corrupt, beyond `limits`, or fewer frames than
            `target.frames`.
    """
    if target.kind != "video" or target.frames is None:
        raise UserInputError(f"decode_video needs a video target, got {target}")
    video = decode_video_frames(payload, limits, needed=target.frames)
    chosen = sample_indices(len(video.frames), target.frames, target.preprocessing)
    return np.stack([to_pixels(video.frames[index], target) for index in chosen])  # (T, C, H, W)


def decode(payload: bytes, target: PreprocessTarget, limits: VideoLimits | None = None) -> np.ndarray:
    """Dispatch on `target.kind`: `decode_image` or `decode_video`."""
    return decode_video(payload, target, limits) if target.kind == "video" else decode_image(payload, target)
