"""Regression: a bad request that reaches the CPU runner is the caller's error, answered with HTTP 400 / gRPC
INVALID_ARGUMENT (it was Triton's default, INTERNAL / 500), and the server keeps serving.

Triton checks names, dtypes and fixed dims itself; a request reaches the runner with a shape the model cannot
take when the entry's config leaves a dim variable (-1) that the model fixes. The runner checks it against
the model's own input dims.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from serving_helpers import extra_entry, image_model_of
from tritonclient.utils import InferenceServerException

from attnserve.repository.config import ModelConfig

pytestmark = pytest.mark.triton
VARIABLE_ENTRY = "runner_variable_dims"
INVALID = {"http": "400", "grpc": "StatusCode.INVALID_ARGUMENT"}


def _variable_dims(config: ModelConfig) -> ModelConfig:
    """The same entry with height and width left variable in the config (the ONNX graph fixes them)."""
    pixels = config.input[0]
    variable = pixels.model_copy(update={"dims": (*pixels.dims[:-2], -1, -1)})
    return config.model_copy(update={"input": (variable, *config.input[1:])})


@pytest.fixture(scope="module")
def variable_entry(triton_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with extra_entry(triton_server, tmp_path_factory.mktemp("variable"), VARIABLE_ENTRY, _variable_dims) as name:
        yield name


def _infer(protocol: str, triton_server: Any, pixels: np.ndarray) -> np.ndarray:
    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(triton_server.http_url if protocol == "http" else triton_server.grpc_url)
    try:
        request = module.InferInput("pixels", list(pixels.shape), "UINT8")
        request.set_data_from_numpy(pixels)
        return client.infer(VARIABLE_ENTRY, [request]).as_numpy("logits")
    finally:
        client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_shape_the_model_cannot_take_is_invalid_argument(
    triton_server: Any, variable_entry: str, protocol: str
) -> None:
    spec = triton_server.specs[image_model_of(triton_server)]  # the model the extra entry serves
    channels, height, width = spec.io.input_shape
    wrong = np.zeros((1, channels, height + 4, width), dtype=np.uint8)
    with pytest.raises(InferenceServerException) as refused:
        _infer(protocol, triton_server, wrong)
    assert refused.value.status() == INVALID[protocol], refused.value
    message = refused.value.message()
    assert f"expected shape (batch, {channels}, {height}, {width})" in message and str(wrong.shape) in message
    # the server keeps serving: the right shape is answered by the same entry
    right = np.zeros((2, channels, height, width), dtype=np.uint8)
    assert _infer(protocol, triton_server, right).shape == (2, spec.num_classes)
