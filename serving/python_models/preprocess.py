"""Decode encoded images (JPEG/PNG, Pillow) and videos (PyAV) into the uint8 pixels a model takes.

Plain functions, importable without Triton: the `preprocess_model` shim calls them per request, and tests
call them in-process to check that the server's pipeline gives the label the model gives on the same pixels.

Resizing: scale so the image covers `height x width` (aspect kept, bilinear), then crop the centre.
Videos: `attnserve.video` decodes every frame (within `VideoLimits`), refuses fewer frames than the model
takes, and takes `frames` indices spread evenly over them (first and last included); each is treated like an
image. Output layouts: image (C, H, W), video (T, C, H, W).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from attnserve.errors import DataError, UserInputError
from attnserve.video import VideoLimits, sample_indices
from attnserve.video import decode_video as decode_video_frames

IMAGE_FORMATS = ("JPEG", "PNG")
MAX_IMAGE_PIXELS = 40_000_000
"""Larger images are refused before decoding (decompression bombs)."""
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class PreprocessTarget:
    """What one model wants: `kind` image|video, channels (1 = grey, 3 = RGB), size, and frames for video."""

    kind: str
    channels: int
    height: int
    width: int
    frames: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("image", "video"):
            raise UserInputError(f"kind must be 'image' or 'video', got {self.kind!r}")
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
        return image_shape if self.kind == "image" else (self.frames or 1, *image_shape)

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
        return parameters

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
            )
        except (KeyError, ValueError) as exc:
            raise UserInputError(
                f"preprocess parameters need kind, channels, height, width (and frames for video); got {parameters}"
            ) from exc


def fit_and_crop(image: Image.Image, target: PreprocessTarget) -> np.ndarray:
    """Resize to cover the target (aspect kept) and crop the centre: uint8 (C, H, W)."""
    image = image.convert("L" if target.channels == 1 else "RGB")
    scale = max(target.height / image.height, target.width / image.width)
    resized_size = (max(target.width, round(image.width * scale)), max(target.height, round(image.height * scale)))
    if resized_size != image.size:
        image = image.resize(resized_size, Image.Resampling.BILINEAR)
    left = (image.width - target.width) // 2
    top = (image.height - target.height) // 2
    image = image.crop((left, top, left + target.width, top + target.height))
    pixels = np.asarray(image, dtype=np.uint8)  # (H, W) or (H, W, C)
    if pixels.ndim == 2:
        pixels = pixels[None]  # (1, H, W)
    else:
        pixels = pixels.transpose(2, 0, 1)  # (C, H, W)
    return np.ascontiguousarray(pixels)


def _check_payload(payload: bytes, what: str) -> None:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise DataError(f"expected encoded {what} bytes, got {type(payload).__name__}")
    if len(payload) == 0:
        raise DataError(f"empty {what} payload: expected encoded {what} bytes")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise DataError(f"{what} payload of {len(payload)} bytes exceeds the limit of {MAX_PAYLOAD_BYTES}")


def decode_image(payload: bytes, target: PreprocessTarget) -> np.ndarray:
    """Encoded JPEG/PNG bytes -> uint8 (C, H, W) for `target`.

    Raises:
        DataError: empty, undecodable, truncated, too large, or not JPEG/PNG (the message names which).
    """
    _check_payload(payload, "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(bytes(payload)))
            if image.format not in IMAGE_FORMATS:
                raise DataError(f"unsupported image format {image.format!r}: expected one of {list(IMAGE_FORMATS)}")
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise DataError(f"image of {image.width}x{image.height} pixels exceeds the limit of {MAX_IMAGE_PIXELS}")
            image.load()  # decode now: truncated data fails here, not later
    except DataError:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ) as exc:  # Pillow raises the latter at 2x its own pixel limit
        raise DataError(f"cannot decode image ({len(payload)} bytes; expected JPEG or PNG): {exc}") from exc
    return fit_and_crop(image, target)


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
    chosen = sample_indices(len(video.frames), target.frames)
    return np.stack([fit_and_crop(video.frames[index], target) for index in chosen])  # (T, C, H, W)


def decode(payload: bytes, target: PreprocessTarget, limits: VideoLimits | None = None) -> np.ndarray:
    """Dispatch on `target.kind`: `decode_image` or `decode_video`."""
    return decode_image(payload, target) if target.kind == "image" else decode_video(payload, target, limits)
