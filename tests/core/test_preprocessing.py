"""The one preprocessing (`attnserve.preprocessing`): resize modes, channel order, limits, and its place in the spec."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from attnserve.errors import DataError, UserInputError
from attnserve.preprocessing import (
    MAX_IMAGE_PIXELS,
    Preprocessing,
    frame_to_chw,
    open_image_bytes,
    sample_frame_indices,
    to_chw,
)
from attnserve.spec import IoSection, ModelSpec


def _edge_square(height: int = 64, width: int = 256) -> Image.Image:
    """A wide grey image with a white square touching its left edge (the issue's 256x64 case)."""
    pixels = np.full((height, width), 60, dtype=np.uint8)
    pixels[8:56, 0:48] = 255
    return Image.fromarray(pixels)


def test_squash_keeps_a_square_at_the_edge_and_crop_cuts_it_away() -> None:
    squashed = to_chw(_edge_square(), 1, 32, 32, Preprocessing(resize="squash"))
    cropped = to_chw(_edge_square(), 1, 32, 32, Preprocessing(resize="crop"))
    assert squashed.shape == cropped.shape == (1, 32, 32)
    assert squashed[0, 16, :4].min() > 200  # the square is in the input's left columns
    assert cropped.max() < 100  # the centre crop holds background only


def test_letterbox_keeps_the_whole_image_and_pads_with_the_pad_value() -> None:
    boxed = to_chw(_edge_square(), 1, 32, 32, Preprocessing(resize="letterbox", pad_value=7))
    assert boxed.shape == (1, 32, 32)
    assert (boxed[0, :12] == 7).all() and (boxed[0, -12:] == 7).all()  # 256x64 -> 32x8, centred
    assert boxed[0, 14:18, :2].min() > 200  # the square survives at the left


def test_default_is_squash_rgb_and_a_square_image_of_the_model_size_is_unchanged() -> None:
    original = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert Preprocessing() == Preprocessing(resize="squash", channel_order="rgb")
    np.testing.assert_array_equal(to_chw(Image.fromarray(original), 3, 32, 32), original.transpose(2, 0, 1))
    bgr = to_chw(Image.fromarray(original), 3, 32, 32, Preprocessing(channel_order="bgr"))
    np.testing.assert_array_equal(bgr, original.transpose(2, 0, 1)[::-1])


def test_frames_take_the_same_transform_from_pil_numpy_or_pyav() -> None:
    import av

    rgb = np.random.default_rng(1).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    expected = to_chw(Image.fromarray(rgb), 3, 16, 16)
    np.testing.assert_array_equal(frame_to_chw(rgb, 3, 16, 16), expected)
    np.testing.assert_array_equal(frame_to_chw(av.VideoFrame.from_ndarray(rgb, format="rgb24"), 3, 16, 16), expected)
    assert sample_frame_indices(12, 4).tolist() == [0, 4, 7, 11]


def test_parameters_and_spec_json_round_trip_and_old_specs_get_the_default() -> None:
    declared = Preprocessing(resize="letterbox", channel_order="bgr", interpolation="bicubic", pad_value=114)
    assert Preprocessing.from_parameters(declared.to_parameters()) == declared
    assert Preprocessing.from_parameters({}) == Preprocessing()
    io = IoSection(
        layout="NCHW", input_shape=(3, 8, 8), mean=(0.5,) * 3, std=(0.5,) * 3, labels=("a", "b"), preprocessing=declared
    )
    spec = ModelSpec(name="m", arch="a", kind="image", io=io)
    assert ModelSpec.model_validate_json(spec.model_dump_json()).io.preprocessing == declared
    old = spec.model_dump(mode="json")
    del old["io"]["preprocessing"]  # a spec.json written before the field existed
    assert ModelSpec.model_validate(old).io.preprocessing == Preprocessing()
    with pytest.raises(ValueError, match="resize"):
        ModelSpec.model_validate({**old, "io": {**old["io"], "preprocessing": {"resize": "stretch"}}})
    with pytest.raises(UserInputError, match="resize"):
        Preprocessing(resize="stretch")  # type: ignore[arg-type]


def test_decoding_limits_are_named_and_messages_hold_no_object_reprs() -> None:
    with pytest.raises(DataError, match="not a recognised image format") as refused:
        open_image_bytes(b"definitely not an image")
    assert "BytesIO" not in str(refused.value) and "0x" not in str(refused.value)
    side = int(MAX_IMAGE_PIXELS**0.5) + 16
    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, format="PNG")  # small file, too many pixels
    with pytest.raises(DataError, match=f"exceeds the limit of {MAX_IMAGE_PIXELS} pixels"):
        open_image_bytes(buffer.getvalue(), ("PNG",))
    with pytest.raises(DataError, match="expected one of"):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, format="BMP")
        open_image_bytes(buffer.getvalue(), ("JPEG", "PNG"))


def test_centre_crop_fields_are_checked_and_no_resize_refuses_another_size() -> None:
    from attnserve.preprocessing import Preprocessing, to_chw

    with pytest.raises(UserInputError, match="center_crop"):
        Preprocessing(resize="shortest_edge", shortest_edge=40)
    with pytest.raises(UserInputError, match="shortest_edge"):
        Preprocessing(resize="squash", shortest_edge=40, center_crop=True)
    with pytest.raises(UserInputError, match="resize_height"):
        Preprocessing(resize_height=40, resize_width=40)
    image = Image.new("RGB", (40, 20), (200, 10, 10))
    with pytest.raises(DataError, match="32x32"):
        to_chw(image, 3, 32, 32, Preprocessing(resize="none"))
    cropped = to_chw(image, 3, 32, 32, Preprocessing(resize="none", center_crop=True))  # 40x20 -> zero rows
    assert cropped.shape == (3, 32, 32) and cropped[0, 0].max() == 0 and cropped[0, 16].min() == 200
