"""Video input: decode once (PyAV), check against limits and the model's needs, sample clips, plan a timeline.

Torch-free and Triton-free: the Python client (`clients/media.py`), the server's `NAME_preprocess` and
`NAME_timeline` python-backend models and the tests all call these functions, so a video is refused (or
accepted) the same way everywhere.

Policy (refuse, never pad): a video model taking T frames needs a video of at least T decoded frames.
Frames are never repeated to fill a clip: a 1-frame or 2-frame clip, a still image (PNG/JPEG, also when
renamed `.mp4`), a file that is not a video, corrupt bytes, and videos beyond `VideoLimits` (bytes, frame
size, duration, frame count) raise `DataError` with what was expected and what arrived; servers turn it
into 400 / INVALID_ARGUMENT.

Sampling (as Hugging Face's video processors and our training clips): T indices spread uniformly over the
clip, first and last frame included (`numpy.linspace(0, n - 1, T).round()`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, PositiveFloat, PositiveInt
from pydantic_settings import BaseSettings, SettingsConfigDict

from attnserve.errors import DataError, UserInputError
from attnserve.preprocessing import DEFAULT_PREPROCESSING, MAX_PAYLOAD_BYTES, Preprocessing, sample_frame_indices

if TYPE_CHECKING:
    from PIL import Image as PILImage

STILL_IMAGE_DEMUXERS = frozenset({"image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe"})
"""FFmpeg demuxers that read a single still image (a PNG renamed `.mp4` opens as `png_pipe`)."""

VIDEO_FORMATS_HINT = "an encoded video (MP4, MKV, WebM, AVI, MOV or animated GIF)"


class VideoLimits(BaseSettings):
    """What one video request may hold (env `ATTNSERVE_VIDEO_MAX_SECONDS`, ...); enforced before decoding
    where the container says it, and again while decoding."""

    model_config = SettingsConfigDict(env_prefix="ATTNSERVE_VIDEO_", extra="ignore", frozen=True)

    max_bytes: PositiveInt = MAX_PAYLOAD_BYTES
    max_seconds: PositiveFloat = 600.0
    max_frames: PositiveInt = 20_000
    max_frame_pixels: PositiveInt = 1920 * 1080
    """Width x height of one frame (Full HD by default)."""

    def to_parameters(self) -> dict[str, str]:
        """As Triton config parameters (strings), prefixed `video_`."""
        return {f"video_{key}": str(value) for key, value in self.model_dump().items()}

    @classmethod
    def from_parameters(cls, parameters: dict[str, str]) -> VideoLimits:
        """Back from `to_parameters` (missing keys keep their defaults)."""
        values = {key: parameters[f"video_{key}"] for key in cls.model_fields if f"video_{key}" in parameters}
        return cls.model_validate(values)


@dataclass(frozen=True)
class DecodedVideo:
    """Every decoded frame of one video (RGB PIL images) and its frame rate."""

    frames: list[PILImage.Image]
    fps: float

    @property
    def seconds(self) -> float:
        return len(self.frames) / self.fps


def _describe(size: int, source: str | None) -> str:
    return source if source else f"{size} bytes"


def _check_container(container: object, limits: VideoLimits, where: str, needed: int) -> object:
    """The video stream, after the checks the container's header allows (no frame decoded yet)."""
    format_name = getattr(container, "format").name  # noqa: B009 - PyAV attribute
    if set(format_name.split(",")) & STILL_IMAGE_DEMUXERS:
        raise DataError(
            f"{where} is a still image ({format_name}), not a video: expected {VIDEO_FORMATS_HINT} "
            f"with at least {needed} frames"
        )
    streams = getattr(container, "streams").video  # noqa: B009
    if not streams:
        raise DataError(f"{where} holds no video stream: expected {VIDEO_FORMATS_HINT}")
    stream = streams[0]
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > limits.max_frame_pixels:
        raise DataError(
            f"{where}: frames of {width}x{height} exceed the limit of {limits.max_frame_pixels} pixels per frame"
        )
    declared = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
    if declared is not None and declared > limits.max_seconds:
        raise DataError(f"{where}: {declared:.1f} s exceeds the limit of {limits.max_seconds:g} s")
    return stream


def _frame_rate(stream: object, frames: int, last_time: float | None) -> float:
    rate = getattr(stream, "average_rate", None) or getattr(stream, "guessed_rate", None)
    if rate and float(rate) > 0:
        return float(rate)
    if last_time and frames > 1:
        return (frames - 1) / last_time
    return 1.0


def decode_video(
    payload: bytes, limits: VideoLimits | None = None, *, needed: int = 1, source: str | None = None
) -> DecodedVideo:
    """Decode every frame of an encoded video, enforcing `limits` and refusing what is not a video.

    Args:
        payload: the encoded bytes.
        limits: size/duration limits (default `VideoLimits()`).
        needed: frames the model takes (named in the refusal of a still image; the count itself is checked
            by `require_frames`).
        source: a file name for messages (default: the byte count).

    Raises:
        DataError: empty, too large, a still image, not a video, corrupt, or beyond a limit.
    """
    import av

    limits = limits or VideoLimits()
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise DataError(f"expected encoded video bytes, got {type(payload).__name__}")
    where = _describe(len(payload), source)
    if len(payload) == 0:
        raise DataError(f"empty video payload: expected {VIDEO_FORMATS_HINT}")
    if len(payload) > limits.max_bytes:
        raise DataError(f"video payload of {len(payload)} bytes exceeds the limit of {limits.max_bytes} bytes")
    frames: list[PILImage.Image] = []
    last_time: float | None = None
    try:
        with av.open(io.BytesIO(bytes(payload)), mode="r") as container:
            stream = _check_container(container, limits, where, needed)
            for frame in container.decode(stream):
                if not isinstance(frame, av.VideoFrame):
                    continue
                last_time = frame.time
                if len(frames) >= limits.max_frames or (last_time or 0.0) > limits.max_seconds:
                    raise DataError(
                        f"{where}: longer than the limit of {limits.max_seconds:g} s / {limits.max_frames} frames"
                    )
                frames.append(frame.to_image())
    except DataError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, OSError, EOFError) as exc:
        raise DataError(f"cannot decode video ({where}; expected {VIDEO_FORMATS_HINT}): {exc}") from exc
    return DecodedVideo(frames=frames, fps=_frame_rate(stream, len(frames), last_time))


def require_frames(available: int, needed: int, what: str = "the video") -> None:
    """Refuse fewer than `needed` frames (frames are never repeated to fill a clip).

    Raises:
        DataError: `available < needed`, with both numbers.
    """
    if available < 1:
        raise DataError(f"{what} holds no decodable frames: the model needs a video of at least {needed} frames")
    if available < needed:
        raise DataError(
            f"{what} holds {available} frame{'s' if available != 1 else ''}: the model needs a video of at least "
            f"{needed} frames (frames are not repeated to fill a clip)"
        )


def sample_indices(available: int, wanted: int, preprocessing: Preprocessing = DEFAULT_PREPROCESSING) -> np.ndarray:
    """`wanted` frame indices over `available` frames, by the model's declared frame sampling (`uniform`:
    evenly spaced, first and last included; `attnserve.preprocessing.sample_frame_indices`).

    Raises:
        DataError: fewer than `wanted` frames are available (see the module's policy).
    """
    require_frames(available, wanted)
    return sample_frame_indices(available, wanted, preprocessing)


@dataclass(frozen=True)
class Segment:
    """One clip of a timeline: frames `[start, stop)` of the decoded video and their times in seconds."""

    start: int
    stop: int
    start_s: float
    end_s: float


def plan_timeline(
    frame_count: int, fps: float, frames: int, window_s: float | None = None, stride_s: float | None = None
) -> list[Segment]:
    """Sliding windows over a video of `frame_count` frames at `fps`.

    Args:
        frame_count: decoded frames.
        fps: frames per second.
        frames: frames the model takes per clip (each window is sampled down to this many).
        window_s: window length; `None` = `frames / fps` (the model's clip at the video's own rate);
            `0` = the whole video as one clip.
        stride_s: step between window starts; `None` = half the window.

    Returns:
        Windows from the start; when the last one stops short of the end, one more ends at the last frame.

    Raises:
        DataError: the video holds fewer than `frames` frames.
        UserInputError: a window holding fewer than `frames` frames, or a non-positive stride.
    """
    require_frames(frame_count, frames)
    if window_s is not None and window_s < 0:
        raise UserInputError(f"window_s must be >= 0 (0 = the whole video), got {window_s}")
    window = frame_count if window_s == 0 else (frames if window_s is None else round(window_s * fps))
    if window < frames:
        raise UserInputError(
            f"a window of {window_s:g} s holds {window} frames at {fps:g} fps; the model needs at least {frames}: "
            f"use window_s >= {frames / fps:.3g}"
        )
    window = min(window, frame_count)
    stride = max(1, window // 2) if stride_s is None else round(stride_s * fps)
    if stride < 1:
        raise UserInputError(f"stride_s must be at least one frame (1/{fps:g} s), got {stride_s}")
    starts = list(range(0, frame_count - window + 1, stride))
    if starts[-1] + window < frame_count:
        starts.append(frame_count - window)
    return [Segment(s, s + window, s / fps, (s + window) / fps) for s in starts]


def clip_indices(segment: Segment, frames: int, preprocessing: Preprocessing = DEFAULT_PREPROCESSING) -> np.ndarray:
    """The `frames` indices (into the whole video) sampled over one segment as the model declares."""
    return segment.start + sample_indices(segment.stop - segment.start, frames, preprocessing)


def change_points(labels: list[str], segments: list[Segment]) -> list[float]:
    """Times where the segment label changes: the midpoint between the centres of the two segments."""
    times = []
    for index in range(1, len(labels)):
        if labels[index] != labels[index - 1]:
            before, after = segments[index - 1], segments[index]
            times.append((before.start_s + before.end_s + after.start_s + after.end_s) / 4)
    return times


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, classes) logits (float64)."""
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class LabelScore(BaseModel):
    """One label and its probability."""

    model_config = ConfigDict(frozen=True)

    label: str
    score: float


class TimelineSegment(BaseModel):
    """One window of the timeline: its span in seconds and its top-k labels."""

    model_config = ConfigDict(frozen=True)

    start_s: float
    end_s: float
    top_k: list[LabelScore]

    @property
    def label(self) -> str:
        return self.top_k[0].label


class Timeline(BaseModel):
    """The answer of `NAME_timeline` (JSON on the wire, parsed by the client)."""

    model_config = ConfigDict(frozen=True)

    fps: float
    seconds: float
    segments: list[TimelineSegment]
    video: list[LabelScore]
    """Video-level top-k: the mean of the segments' probabilities."""
    changes_s: list[float]
    """Where the segments' top label changes (midpoint between the two segments' centres)."""
    clips_per_request: int = 0
    """How many clips each BLS request to the classifier carried."""
    timings_s: dict[str, float] = {}
    """Server-side seconds per step: `decode`, `resize` (frames, once each), `classify` (the BLS requests)."""


def top_k(probabilities: np.ndarray, labels: tuple[str, ...] | list[str], k: int) -> list[LabelScore]:
    """The `k` best labels of one probability vector."""
    order = np.argsort(-probabilities)[: max(1, min(k, len(labels)))]
    return [LabelScore(label=labels[i], score=round(float(probabilities[i]), 6)) for i in order]


def timeline_result(
    logits: np.ndarray, segments: list[Segment], labels: tuple[str, ...] | list[str], k: int, fps: float
) -> Timeline:
    """The timeline answer: per-segment top-k, the video-level top-k (mean of segment probabilities), changes.

    Args:
        logits: (segments, classes).
        segments: the planned windows, in order.
        labels: class names.
        k: how many labels per segment and for the video.
        fps: the video's frame rate (reported).
    """
    probabilities = softmax(logits)  # (S, classes)
    rows = [
        TimelineSegment(start_s=round(s.start_s, 4), end_s=round(s.end_s, 4), top_k=top_k(p, labels, k))
        for s, p in zip(segments, probabilities, strict=True)
    ]
    return Timeline(
        fps=round(fps, 4),
        seconds=round(max(s.end_s for s in segments), 4),
        segments=rows,
        video=top_k(probabilities.mean(axis=0), labels, k),
        changes_s=[round(t, 4) for t in change_points([row.label for row in rows], segments)],
    )
