"""Encoded media made in code: a random PNG/JPEG image and a short MP4 video (PyAV)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encoded_image(height: int = 40, width: int = 56, seed: int = 0, image_format: str = "PNG") -> bytes:
    """A random RGB image, encoded."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


def encoded_video(frames: int = 12, height: int = 48, width: int = 64, seed: int = 0) -> bytes:
    """A moving bright square on noise, MPEG-4 in an MP4 container."""
    import av

    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
            left = (index * 4) % (width - 12)
            image[16:28, left : left + 12] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims `width x height` pixels (a decompression bomb's header, no data)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)
