"""The client refuses what the server would refuse, with the same limits and a message without object reprs."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from attnserve.clients.media import image_to_tensor
from attnserve.errors import DataError
from attnserve.preprocessing import MAX_IMAGE_PIXELS


def test_an_image_over_the_servers_pixel_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    side = int(MAX_IMAGE_PIXELS**0.5) + 8
    path = tmp_path / "huge.png"
    Image.new("L", (side, side)).save(path)  # a small file that decodes to too many pixels
    with pytest.raises(DataError, match=f"exceeds the limit of {MAX_IMAGE_PIXELS} pixels"):
        image_to_tensor(path, 32, 32, 3)


def test_undecodable_bytes_name_the_problem_without_a_repr() -> None:
    with pytest.raises(DataError) as refused:
        image_to_tensor(b"not an image at all", 32, 32, 3)
    assert "not a recognised image format" in str(refused.value)
    assert "BytesIO" not in str(refused.value) and "0x" not in str(refused.value)
