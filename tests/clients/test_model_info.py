"""ModelInfo parsing of both protocols' JSON and client-side input validation (no server needed)."""

from __future__ import annotations

import numpy as np
import pytest

from attnserve.clients.model_info import ModelInfo
from attnserve.errors import DTypeError, ShapeError, UserInputError

GRPC_METADATA = {
    "name": "vit",
    "versions": ["1"],
    "platform": "python",
    "inputs": [{"name": "pixels", "datatype": "UINT8", "shape": ["-1", "3", "32", "32"]}],
    "outputs": [{"name": "logits", "datatype": "FP32", "shape": ["-1", "10"]}],
}
GRPC_CONFIG = {
    "config": {
        "name": "vit",
        "max_batch_size": 8,
        "dynamic_batching": {},
        "input": [{"name": "pixels", "data_type": "TYPE_UINT8", "format": "FORMAT_NCHW", "dims": ["3", "32", "32"]}],
        "output": [{"name": "logits", "data_type": "TYPE_FP32", "dims": ["10"], "label_filename": "labels.txt"}],
    }
}


def test_grpc_json_is_parsed_into_shapes_layout_and_labels() -> None:
    info = ModelInfo.from_server(GRPC_METADATA, GRPC_CONFIG)
    assert info.input().shape == (-1, 3, 32, 32)
    assert info.max_batch_size == 8 and info.layout == "NCHW" and info.dynamic_batching
    assert info.image_size == (32, 32) and info.channels == 3
    assert info.output().labelled


def test_video_layout_comes_from_rank() -> None:
    metadata = {**GRPC_METADATA, "inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [-1, 8, 3, 16, 16]}]}
    config = {"max_batch_size": 4, "input": [{"name": "pixels", "dims": [8, 3, 16, 16]}], "output": []}
    info = ModelInfo.from_server(metadata, config)
    assert info.layout == "NTCHW" and info.frames == 8 and info.channels == 3


@pytest.mark.parametrize(
    ("inputs", "error", "message"),
    [
        ({"pixels": np.zeros((1, 3, 32, 32), np.float32)}, DTypeError, r"expected dtype uint8 \(UINT8\), got float32"),
        (
            {"pixels": np.zeros((1, 3, 16, 16), np.uint8)},
            ShapeError,
            r"expected shape \[N, 3, 32, 32\], got \[1, 3, 16, 16\]",
        ),
        ({"pixels": np.zeros((3, 32, 32), np.uint8)}, ShapeError, r"rank 4"),
        ({"pixels": np.zeros((9, 3, 32, 32), np.uint8)}, ShapeError, r"1\.\.8 \(max_batch_size\), got 9"),
        ({"image": np.zeros((1, 3, 32, 32), np.uint8)}, UserInputError, r"takes inputs \['pixels'\], got \['image'\]"),
    ],
)
def test_bad_inputs_fail_before_sending(inputs: dict, error: type, message: str) -> None:
    info = ModelInfo.from_server(GRPC_METADATA, GRPC_CONFIG)
    with pytest.raises(error, match=message):
        info.validate_inputs(inputs)


def test_the_spec_parameter_name_is_the_repository_layers() -> None:
    from attnserve.clients import model_info
    from attnserve.repository import config

    assert model_info.SPEC_PARAMETER == config.SPEC_PARAMETER
