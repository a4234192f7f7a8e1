"""The CPU runner's threads and spinning knobs travel spec -> config.pbtxt -> runtime view -> ONNX Runtime session."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnserve.errors import UserInputError


def test_spinning_off_reaches_the_onnx_runtime_session(tiny_onnx_path: Path) -> None:
    from attnserve.runtimes.session import open_session

    spinning = open_session("onnxruntime", tiny_onnx_path, intra_op_threads=1, options={})
    still = open_session("onnxruntime", tiny_onnx_path, intra_op_threads=1, options={"allow_spinning": "0"})
    entry = "session.intra_op.allow_spinning"
    assert spinning._session.get_session_options().get_session_config_entry(entry) == "1"
    assert still._session.get_session_options().get_session_config_entry(entry) == "0"
    with pytest.raises(UserInputError, match="allow_spinning"):
        open_session("onnxruntime", tiny_onnx_path, intra_op_threads=1, options={"allow_spinning": "sometimes"})


def test_tuned_threads_and_spinning_survive_the_runtime_view(tmp_path: Path, tiny_onnx_path: Path) -> None:
    from serving_helpers import tiny_spec

    from attnserve.repository.config import read_config
    from attnserve.repository.entries import write_model_entry
    from attnserve.serving.runtime_view import build_runtime_repository

    repository = tmp_path / "model_repository"
    write_model_entry(
        tiny_spec()
        .replace(name="tuned")
        .with_serving(instance_count=2)
        .with_runtime(intra_op_threads=3, allow_spinning=False),
        tiny_onnx_path,
        repository,
    )
    write_model_entry(tiny_spec().replace(name="auto").with_serving(instance_count=2), tiny_onnx_path, repository)
    view, _, _ = build_runtime_repository(repository, tmp_path / "view")
    tuned, auto = read_config(view / "tuned").parameters, read_config(view / "auto").parameters
    assert tuned["intra_op_threads"].string_value == "3" and tuned["allow_spinning"].string_value == "0"
    assert int(auto["intra_op_threads"].string_value) >= 1 and auto["allow_spinning"].string_value == "1"
