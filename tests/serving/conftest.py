"""Fixtures of the serving tests: the tiny ONNX classifier and a repository holding it."""

from __future__ import annotations

from pathlib import Path

import pytest
from serving_helpers import tiny_spec, write_tiny_onnx


@pytest.fixture(scope="session")
def tiny_onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_onnx(tmp_path_factory.mktemp("tiny_onnx") / "tiny.onnx")


@pytest.fixture()
def tiny_repository(tmp_path: Path, tiny_onnx_path: Path) -> Path:
    """A repository with `tiny` (ONNX), `tiny_trt` (a TensorRT entry with a fake plan) and tiny's pipeline."""
    from attnserve.repository.entries import write_model_entry, write_trt_entry
    from attnserve.serving.pipelines import write_pipeline_entries

    repository = tmp_path / "model_repository"
    spec = tiny_spec()
    write_model_entry(spec, tiny_onnx_path, repository)
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not a real engine: the CPU view never loads it")
    write_trt_entry(spec, plan, repository)
    write_pipeline_entries(spec, repository)
    return repository
