"""One preprocessing: one non-square image file becomes the same model input in training, in the Python
client and in the served `_pipeline`, byte for byte, and gets the same top-1 from all three."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.triton

MODEL = "vit_shapes"


def _edge_square_png(path: Path) -> Path:
    """256x64 RGB: noise, a red square touching the left edge (the crop of old cut it away)."""
    rng = np.random.default_rng(14)
    pixels = rng.integers(0, 120, (64, 256, 3), dtype=np.uint8)
    pixels[8:56, 0:48] = (230, 20, 20)
    Image.fromarray(pixels).save(path)
    return path


def _served_preprocess(triton_server, spec, payload: bytes) -> np.ndarray:
    """The pixels the served `NAME_preprocess` (the pipeline's first step) makes of `payload`."""
    import tritonclient.http as httpclient

    array = np.array([payload], dtype=np.object_).reshape(1, 1)
    tensor = httpclient.InferInput(spec.kind, [1, 1], "BYTES")
    tensor.set_data_from_numpy(array)
    client = httpclient.InferenceServerClient(triton_server.http_url)
    try:
        return client.infer(spec.preprocess_name, [tensor]).as_numpy("pixels")[0]
    finally:
        client.close()


def test_training_client_and_pipeline_see_the_same_bytes_and_answer_alike(triton_server, tmp_path: Path) -> None:
    from attnserve.clients.client import TritonClient
    from attnserve.clients.settings import ClientSettings
    from attnserve.models.data import load_dataset

    spec = triton_server.specs[MODEL]
    data = tmp_path / "data"
    for label in ("left", "right"):  # the loader wants 2 classes with a held-out file each
        (data / label).mkdir(parents=True)
        for index in range(3):
            _edge_square_png(data / label / f"{index}.png")
    image_path = data / "left" / "0.png"
    training = load_dataset(MODEL, data_dir=data).train_pixels[0].numpy()  # (C, H, W) uint8

    with TritonClient(ClientSettings(url=triton_server.http_url, protocol="http")) as client:
        info = client.model_info(MODEL)
        client_pixels = client.pixels_for(info, [image_path])[0]
        served_pixels = _served_preprocess(triton_server, spec, image_path.read_bytes())
        assert training.shape == client_pixels.shape == served_pixels.shape == spec.io.input_shape
        assert training.dtype == client_pixels.dtype == served_pixels.dtype == np.uint8
        assert training.tobytes() == client_pixels.tobytes() == served_pixels.tobytes()
        assert training[0, spec.height // 2, :2].min() > 150  # the red square is in the input (squash, no crop)

        logits = client.infer(MODEL, {"pixels": training[None]}, outputs=["logits"])["logits"][0]
        from_training = spec.io.labels[int(np.argmax(logits))]
        from_client = client.classify(MODEL, [image_path], top_k=1)[0].label
        from_pipeline = client.classify_encoded(spec.pipeline_name, [image_path], top_k=1)[0].label
    assert from_training == from_client == from_pipeline
