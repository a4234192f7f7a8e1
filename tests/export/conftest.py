"""Session-scoped fixtures of the export tests: the tiny classifier and one exported graph."""

from __future__ import annotations

from pathlib import Path

import pytest
from export_fixtures import TinySdpaClassifier, tiny_spec


@pytest.fixture(scope="session")
def tiny_model() -> TinySdpaClassifier:
    return TinySdpaClassifier().eval()


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_model: TinySdpaClassifier) -> Path:
    """The tiny classifier exported once (opset 23) for tests that need any valid graph."""
    from attnserve.export.torch2onnx import export_onnx

    onnx_path = tmp_path_factory.mktemp("tiny_onnx") / "model.onnx"
    export_onnx(tiny_model, tiny_spec(), onnx_path, opset=23)
    return onnx_path
