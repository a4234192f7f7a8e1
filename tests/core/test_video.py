"""Video input policy (attnserve.video): real PyAV decoding of real encoded files; the long story video."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnserve.clients.media import video_to_tensor
from attnserve.errors import DataError, UserInputError
from attnserve.models.synthetic import MOTION_OFFSETS, encode_video, motion_story_video
from attnserve.video import (
    VideoLimits,
    change_points,
    clip_indices,
    decode_video,
    plan_timeline,
    require_frames,
    timeline_result,
)

NEEDED = "the model needs a video of at least 8 frames"


def _clip(frames: int, size: int = 32) -> bytes:
    pixels, _ = motion_story_video((("right", frames),), seed=1, size=size)
    return encode_video(pixels)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_real_clip_decodes_with_its_frame_rate() -> None:
    video = decode_video(_clip(12), needed=8)
    assert len(video.frames) == 12 and video.fps == pytest.approx(8.0) and video.seconds == pytest.approx(1.5)


@pytest.mark.parametrize("frames", [1, 2, 7])
def test_too_few_frames_are_refused_not_repeated(frames: int, tmp_path: Path) -> None:
    path = tmp_path / "short.mp4"
    path.write_bytes(_clip(frames))
    with pytest.raises(DataError, match=f"holds {frames} frames?: {NEEDED}.*not repeated"):
        video_to_tensor(path, 8, 32, 32, 3)


def test_a_png_and_a_png_renamed_mp4_are_still_images(tmp_path: Path) -> None:
    renamed = tmp_path / "holiday.mp4"
    renamed.write_bytes(_png())
    for source in (_png(), renamed):
        with pytest.raises(DataError, match="is a still image .*not a video: expected an encoded video .*8 frames"):
            video_to_tensor(source, 8, 32, 32, 3)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"", "empty video payload: expected an encoded video"),
        (b"just some text, not a video at all\n" * 20, "cannot decode video \\(\\d+ bytes; expected an encoded video"),
    ],
)
def test_empty_and_non_video_payloads_say_what_was_expected(payload: bytes, match: str) -> None:
    with pytest.raises(DataError, match=match):
        decode_video(payload, needed=8)


def test_corrupt_bytes_are_refused() -> None:
    good = _clip(16)
    corrupt = good[:48] + bytes(np.random.default_rng(0).integers(0, 256, len(good) - 48, dtype=np.uint8))
    with pytest.raises(DataError, match="cannot decode|holds no video stream|holds \\d+ frames?"):
        video = decode_video(corrupt, needed=8)
        require_frames(len(video.frames), 8)


def test_limits_on_frame_size_duration_and_bytes() -> None:
    with pytest.raises(DataError, match="frames of 32x32 exceed the limit of 100 pixels per frame"):
        decode_video(_clip(16), VideoLimits(max_frame_pixels=100))
    with pytest.raises(DataError, match="exceeds the limit of 1 s|longer than the limit of 1 s"):
        decode_video(_clip(16), VideoLimits(max_seconds=1.0))  # 2 s at 8 fps
    with pytest.raises(DataError, match="payload of \\d+ bytes exceeds the limit of 10 bytes"):
        decode_video(_clip(16), VideoLimits(max_bytes=10))


def test_limits_are_typed_settings_that_travel_as_config_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTNSERVE_VIDEO_MAX_SECONDS", "42.5")
    limits = VideoLimits()
    assert limits.max_seconds == 42.5
    assert VideoLimits.from_parameters(limits.to_parameters()) == limits


def test_timeline_windows_cover_the_video_and_refuse_windows_shorter_than_a_clip() -> None:
    segments = plan_timeline(160, 8.0, 8, window_s=1.0, stride_s=0.5)
    assert len(segments) == 39 and segments[0].start_s == 0 and segments[-1].end_s == 20.0
    assert [int(i) for i in clip_indices(segments[1], 8)] == list(range(4, 12))
    tail = plan_timeline(21, 8.0, 8, window_s=1.0, stride_s=1.0)
    assert [(s.start, s.stop) for s in tail] == [(0, 8), (8, 16), (13, 21)]  # the last one ends at the end
    whole = plan_timeline(160, 8.0, 8, window_s=0)
    assert [(s.start, s.stop) for s in whole] == [(0, 160)]
    with pytest.raises(UserInputError, match="holds 4 frames at 8 fps; the model needs at least 8"):
        plan_timeline(160, 8.0, 8, window_s=0.5)
    with pytest.raises(DataError, match="holds 5 frames"):
        plan_timeline(5, 8.0, 8)


def test_timeline_result_gives_segments_video_level_and_the_change() -> None:
    segments = plan_timeline(32, 8.0, 8, window_s=1.0, stride_s=1.0)  # 4 segments
    logits = np.array([[5.0, 0, 0, 0], [5.0, 0, 0, 0], [0, 5.0, 0, 0], [0, 5.0, 0, 0]])
    result = timeline_result(logits, segments, ("right", "left", "a", "b"), 2, 8.0)
    assert [s.label for s in result.segments] == ["right", "right", "left", "left"]
    assert result.changes_s == [2.0] == change_points(["right", "right", "left", "left"], segments)
    assert {s.label for s in result.video} == {"right", "left"} and len(result.segments[0].top_k) == 2


def test_story_video_moves_right_then_left() -> None:
    frames, labels = motion_story_video((("right", 40), ("left", 40)), seed=3)
    assert frames.shape == (80, 3, 32, 32) and frames.dtype == np.uint8
    names = list(MOTION_OFFSETS)
    assert [names[i] for i in (labels[0], labels[-1])] == ["right", "left"] and (labels == labels[0]).sum() == 40
    # the object's column (brightest-contrast column against the median background) moves right, then left
    contrast = np.abs(frames.astype(np.float32) - np.median(frames, axis=(0, 2, 3), keepdims=True)).sum(axis=(1, 2))
    column = contrast.argmax(axis=1)  # (N,)
    step = (np.diff(column.astype(float)) + 16) % 32 - 16
    assert np.median(step[:35]) > 1 and np.median(step[45:]) < -1
    with pytest.raises(ValueError, match="motions from"):
        motion_story_video((("up", 8),), seed=0)


def test_temporal_weights_are_each_frames_share_of_the_space_time_map(tmp_path: Path) -> None:
    from attnserve.clients.heatmap import temporal_weights, write_overlay
    from attnserve.clients.predictions import Prediction

    grids = np.zeros((4, 2, 2), dtype=np.float32)
    grids[1, 0, 0], grids[2] = 1.0, 0.25  # frame 1: one hot patch; frame 2: spread evenly, same total
    np.testing.assert_allclose(temporal_weights(grids), [0.0, 0.5, 0.5, 0.0])
    assert temporal_weights(grids[:1]) is None  # an image: no time axis
    pixels = np.zeros((4, 3, 16, 16), dtype=np.uint8)
    out = write_overlay(pixels, grids, Prediction("right", 0, 0.9, (), 1.0), tmp_path / "strip.png")
    width, height = Image.open(out).size
    assert width > height  # a strip of 4 frames (bar above, two rows of frames)
