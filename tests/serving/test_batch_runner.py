"""The CPU runner's batch logic on a real ONNX Runtime session: one result per request, bad ones alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from serving_helpers import TINY_SHAPE

from attnserve.errors import (
    DataError,
    DTypeError,
    RuntimeFailure,
    ShapeError,
    UnknownModelError,
    UnknownRuntimeError,
    UserInputError,
)
from attnserve.runtimes.session import Session, intra_op_threads_for, open_session
from attnserve.serving.python_models.batch_runner import TensorSpec, run_requests

INPUTS = [TensorSpec("pixels", np.dtype(np.uint8), TINY_SHAPE)]
OUTPUTS = [TensorSpec("logits", np.dtype(np.float32), (3,))]


def _pixels(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, *TINY_SHAPE), dtype=np.uint8)


def test_session_satisfies_the_protocol(tiny_onnx_path: Path) -> None:
    session = open_session("onnxruntime", tiny_onnx_path, intra_op_threads=1)
    assert isinstance(session, Session)
    assert session.input_names == ("pixels",) and session.output_names == ("logits",)


def test_batched_results_equal_per_request_runs_and_bad_requests_fail_alone(tiny_onnx_path: Path) -> None:
    session = open_session("onnxruntime", tiny_onnx_path, intra_op_threads=1)
    good = [{"pixels": _pixels(1, 1)}, {"pixels": _pixels(3, 2)}, {"pixels": _pixels(2, 3)}]
    requests = [
        good[0],
        {"pixels": _pixels(1, 4).astype(np.float32)},  # wrong dtype
        good[1],
        {"pixels": np.zeros((1, 3, 4, 4), dtype=np.uint8)},  # wrong shape
        DataError("could not read the request"),
        good[2],
    ]
    results = run_requests(session.run, requests, INPUTS, OUTPUTS)
    assert len(results) == len(requests)
    assert isinstance(results[1], DTypeError) and "expected dtype uint8" in str(results[1])
    assert isinstance(results[3], ShapeError) and "(batch, 3, 8, 8)" in str(results[3])
    assert isinstance(results[4], DataError)
    for position, request in zip((0, 2, 5), good, strict=True):
        alone = session.run(dict(request))["logits"]
        assert results[position]["logits"].shape == alone.shape
        np.testing.assert_allclose(results[position]["logits"], alone, rtol=1e-5, atol=1e-5)


def test_a_runtime_failure_fails_every_request_of_the_batch_with_the_reason() -> None:
    def broken_run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise MemoryError("out of memory")

    results = run_requests(broken_run, [{"pixels": _pixels(1, 0)}, {"pixels": _pixels(1, 1)}], INPUTS, OUTPUTS)
    assert all(isinstance(r, RuntimeFailure) and "MemoryError: out of memory" in str(r) for r in results)


def test_unknown_runtime_and_missing_file_are_user_errors(tmp_path: Path, tiny_onnx_path: Path) -> None:
    # regression: a runtime name is not a model name ("unknown model 'tensorflow'" misled)
    with pytest.raises(
        UnknownRuntimeError, match=r"unknown runtime 'tensorflow'; known runtimes: onnxruntime, openvino"
    ):
        open_session("tensorflow", tiny_onnx_path, intra_op_threads=1)
    assert not issubclass(UnknownRuntimeError, UnknownModelError) and issubclass(UnknownRuntimeError, UserInputError)
    with pytest.raises(UserInputError, match="not found"):
        open_session("onnxruntime", tmp_path / "missing.onnx", intra_op_threads=1)


def test_intra_op_threads_share_the_cores_between_instances() -> None:
    assert intra_op_threads_for(1, cores=8) == 8
    assert intra_op_threads_for(3, cores=8) == 2
    assert intra_op_threads_for(4, cores=2) == 1
