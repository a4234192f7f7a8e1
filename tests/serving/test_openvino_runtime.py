"""The OpenVINO runtime of the CPU runner: in-process against ONNX Runtime, and behind the runner in Triton."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from serving_helpers import TINY_SHAPE, extra_entry, image_model_of

from attnserve.errors import ShapeError, UserInputError
from attnserve.repository.config import ModelConfig
from attnserve.runtimes.openvino_session import OpenVINOSession, openvino_supports
from attnserve.runtimes.session import Session, open_session


def _pixels(count: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, *shape), dtype=np.uint8)


def test_openvino_matches_onnxruntime_through_the_runtime_registry(tiny_onnx_path: Path) -> None:
    openvino = open_session("openvino", tiny_onnx_path, intra_op_threads=1, options={"precision": "fp32"})
    onnxruntime = open_session("onnxruntime", tiny_onnx_path, intra_op_threads=1, options={})
    assert isinstance(openvino, Session) and isinstance(openvino, OpenVINOSession)
    assert openvino.input_names == onnxruntime.input_names and openvino.output_names == onnxruntime.output_names
    assert openvino.execution_precision == "f32" and openvino.intra_op_threads == 1
    for batch in (1, 5):  # the batch dim stays dynamic
        pixels = _pixels(batch, TINY_SHAPE, seed=batch)
        expected = onnxruntime.run({"pixels": pixels})["logits"]
        logits = openvino.run({"pixels": pixels})["logits"]
        assert logits.shape == expected.shape == (batch, 3)
        assert np.abs(expected).max() > 0.1  # not a vacuous comparison
        np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=1e-5)


def test_outputs_are_owned_by_the_caller(tiny_onnx_path: Path) -> None:
    session = OpenVINOSession(tiny_onnx_path, intra_op_threads=1)
    first = session.run({"pixels": _pixels(2, TINY_SHAPE, seed=1)})["logits"]
    kept = first.copy()
    session.run({"pixels": _pixels(2, TINY_SHAPE, seed=2)})  # reuses OpenVINO's output buffer
    np.testing.assert_array_equal(first, kept)


@pytest.mark.skipif(not openvino_supports("bf16"), reason="this CPU has no native bf16 (AVX-512 BF16 / AMX)")
def test_bf16_precision_is_what_openvino_runs(tiny_onnx_path: Path) -> None:
    session = open_session("openvino", tiny_onnx_path, intra_op_threads=1, options={"precision": "bf16"})
    assert session.execution_precision == "bf16"  # type: ignore[attr-defined]
    pixels = _pixels(4, TINY_SHAPE)
    reference = OpenVINOSession(tiny_onnx_path, intra_op_threads=1).run({"pixels": pixels})["logits"]
    logits = session.run({"pixels": pixels})["logits"]
    assert not np.array_equal(logits, reference)  # bf16 really ran ...
    np.testing.assert_allclose(logits, reference, atol=0.1)  # ... and stayed close


def test_bad_requests_say_what_was_expected(tiny_onnx_path: Path, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="precision must be one of"):
        OpenVINOSession(tiny_onnx_path, intra_op_threads=1, precision="int4")
    with pytest.raises(UserInputError, match="not found"):
        OpenVINOSession(tmp_path / "absent.onnx", intra_op_threads=1)
    with pytest.raises(UserInputError, match="intra_op_threads"):
        OpenVINOSession(tiny_onnx_path, intra_op_threads=0)
    session = OpenVINOSession(tiny_onnx_path, intra_op_threads=1)
    with pytest.raises(ShapeError, match=r"missing inputs \['pixels'\]"):
        session.run({"image": _pixels(1, TINY_SHAPE)})


# ---------------------------------------------------------------------------------------------------------
# behind the runner, in the session's real Triton server
# ---------------------------------------------------------------------------------------------------------
OPENVINO_ENTRY = "openvino_probe"


@pytest.fixture()
def openvino_entry(triton_server, tmp_path: Path) -> Iterator[str]:
    """A tiny ViT of the shared server as an extra entry served with runtime `openvino` (parameters `runtime`,
    `precision` written like any exported entry's)."""
    precision = "bf16" if openvino_supports("bf16") else "fp32"

    def to_openvino(config: ModelConfig) -> ModelConfig:
        parameters = {key: value.string_value for key, value in config.parameters.items()}
        parameters.update({"runtime": "openvino", "precision": precision})
        return ModelConfig.model_validate({**config.model_dump(exclude={"parameters"}), "parameters": parameters})

    with extra_entry(triton_server, tmp_path, OPENVINO_ENTRY, to_openvino) as name:
        yield name


@pytest.mark.triton
def test_openvino_runtime_serves_behind_the_runner(triton_server, openvino_entry: str) -> None:
    import tritonclient.http as http

    source = image_model_of(triton_server)
    spec = triton_server.specs[source]
    pixels = _pixels(3, spec.io.input_shape, seed=7)
    client = http.InferenceServerClient(triton_server.http_url)
    try:
        config = client.get_model_config(openvino_entry)
        assert config["backend"] == "python" and config["parameters"]["runtime"]["string_value"] == "openvino"
        answers = {}
        for model in (openvino_entry, source):  # the same graph, OpenVINO vs ONNX Runtime runners
            request = http.InferInput("pixels", list(pixels.shape), "UINT8")
            request.set_data_from_numpy(pixels)
            answers[model] = client.infer(model, [request]).as_numpy("logits")
    finally:
        client.close()
    reference = open_session("onnxruntime", triton_server.onnx_paths[source], intra_op_threads=1)
    expected = reference.run({"pixels": pixels})["logits"]
    np.testing.assert_allclose(answers[source], expected, atol=1e-5)
    assert answers[openvino_entry].shape == expected.shape
    cosine = np.sum(answers[openvino_entry] * expected, axis=1) / (
        np.linalg.norm(answers[openvino_entry], axis=1) * np.linalg.norm(expected, axis=1)
    )
    assert cosine.min() > 0.99, cosine
    if openvino_supports("bf16"):  # the entry asked for bf16: its answers cannot be ONNX Runtime's fp32 ones
        assert config["parameters"]["precision"]["string_value"] == "bf16"
        assert not np.array_equal(answers[openvino_entry], expected)
