"""Decoding encoded images and videos into model pixels (Pillow, PyAV), and the errors for bad payloads."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from support.media import encoded_image, encoded_video

from attnserve.errors import DataError, UserInputError
from attnserve.preprocessing import Preprocessing
from attnserve.serving.python_models.preprocess import (
    PreprocessTarget,
    decode,
    decode_image,
    decode_video,
    sample_indices,
    to_pixels,
)

RGB_32 = PreprocessTarget(kind="image", channels=3, height=32, width=32)


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_image_is_resized_to_the_target(image_format: str) -> None:
    pixels = decode_image(encoded_image(40, 56, image_format=image_format), RGB_32)
    assert pixels.shape == (3, 32, 32) and pixels.dtype == np.uint8


@pytest.mark.parametrize("resize", ["squash", "crop"])
def test_grey_target_gives_one_channel_by_the_declared_resize(resize: str) -> None:
    # left half black, right half white, 20x40: squashed to 16x16, or scaled to 16x32 and centre-cropped
    image = np.zeros((20, 40), dtype=np.uint8)
    image[:, 20:] = 255
    target = PreprocessTarget(kind="image", channels=1, height=16, width=16, preprocessing=Preprocessing(resize))
    pixels = to_pixels(Image.fromarray(image), target)
    assert pixels.shape == (1, 16, 16)
    assert pixels[0, :, :6].max() < 30 and pixels[0, :, -6:].min() > 225


def test_png_round_trip_is_exact_when_no_resize_is_needed() -> None:
    original = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(original).save(buffer, format="PNG")
    np.testing.assert_array_equal(decode_image(buffer.getvalue(), RGB_32), original.transpose(2, 0, 1))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty image payload"),
        (b"definitely not an image", "cannot decode image"),
        (encoded_image()[:200], "cannot decode image"),  # truncated PNG
    ],
)
def test_bad_image_payloads_name_the_problem(payload: bytes, message: str) -> None:
    with pytest.raises(DataError, match=message):
        decode_image(payload, RGB_32)


def test_unsupported_format_is_named() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="BMP")
    with pytest.raises(DataError, match=r"unsupported image format 'BMP'.*JPEG"):
        decode_image(buffer.getvalue(), RGB_32)


def test_video_samples_the_requested_frames() -> None:
    target = PreprocessTarget(kind="video", channels=3, height=32, width=32, frames=8)
    pixels = decode_video(encoded_video(frames=12), target)
    assert pixels.shape == (8, 3, 32, 32) and pixels.dtype == np.uint8
    assert not np.array_equal(pixels[0], pixels[-1])  # the square moved
    np.testing.assert_array_equal(decode(encoded_video(frames=12), target), pixels)


def test_corrupt_video_is_a_data_error() -> None:
    target = PreprocessTarget(kind="video", channels=3, height=32, width=32, frames=4)
    with pytest.raises(DataError, match="cannot decode video|no video stream"):
        decode_video(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64, target)


def test_sample_indices_cover_first_and_last_and_refuse_short_clips() -> None:
    assert sample_indices(12, 4).tolist() == [0, 4, 7, 11]
    with pytest.raises(DataError, match="holds 2 frames: the model needs a video of at least 4 frames"):
        sample_indices(2, 4)  # policy: refuse, never repeat frames
    with pytest.raises(DataError, match="no decodable frames"):
        sample_indices(0, 4)


def test_target_round_trips_through_config_parameters_and_rejects_bad_values() -> None:
    target = PreprocessTarget(kind="video", channels=3, height=16, width=24, frames=5)
    assert PreprocessTarget.from_parameters(target.to_parameters()) == target
    declared = PreprocessTarget(kind="image", channels=3, height=8, width=8, preprocessing=Preprocessing("letterbox"))
    assert PreprocessTarget.from_parameters(declared.to_parameters()) == declared
    assert target.output_shape == (5, 3, 16, 24)
    with pytest.raises(UserInputError, match="needs frames"):
        PreprocessTarget(kind="video", channels=3, height=16, width=16)
    with pytest.raises(UserInputError, match="channels must be 1"):
        PreprocessTarget(kind="image", channels=4, height=16, width=16)
