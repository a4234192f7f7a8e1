"""torch -> ONNX: symbolic batch, fused Attention at opset 23, decomposed at 18, fallback with both reasons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from export_fixtures import TinySdpaClassifier, tiny_spec
from torch import nn

from attnserve.errors import ExportError, ShapeError
from attnserve.export.onnx_graph import count_attention_nodes, op_histogram
from attnserve.export.torch2onnx import export_onnx
from attnserve.export.verify import verify_onnx


def test_opset23_has_one_attention_node_per_block_and_symbolic_batch(tiny_onnx: Path) -> None:
    report = json.loads(tiny_onnx.with_suffix(".export.json").read_text())
    assert report["exporter"] == "dynamo" and report["batch_dim"] == "batch"
    assert report["attention_nodes"] == 2 == count_attention_nodes(tiny_onnx)  # depth 2
    assert report["stages"][0]["status"] == "ok"


def test_opset18_decomposes_attention(tmp_path: Path, tiny_model: TinySdpaClassifier) -> None:
    report = export_onnx(tiny_model, tiny_spec(), tmp_path / "m18.onnx", opset=18)
    assert report.opset == 18 and report.attention_nodes == 0
    assert report.op_histogram.get("Softmax", 0) >= 2 and "Attention" not in op_histogram(report.onnx_path)
    assert verify_onnx(report.onnx_path, tiny_model, tiny_spec()).ok


class DataDependentBranch(nn.Module):
    """A Python branch on tensor values: torch.export refuses it, TorchScript tracing bakes it in."""

    def __init__(self, fail_tracing: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fail_tracing = fail_tracing
        self.linear = nn.Linear(3 * 16 * 16, 4)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.fail_tracing and torch.jit.is_tracing():
            raise RuntimeError("this model cannot be traced")
        x = pixels.float().flatten(1) / 255.0
        if x.mean() > -1.0:  # always true, but only knowable from the data
            x = x * 2.0
        return self.linear(x)


def test_dynamo_failure_falls_back_to_torchscript_with_the_reason(tmp_path: Path) -> None:
    model = DataDependentBranch().eval()
    report = export_onnx(model, tiny_spec(), tmp_path / "fallback.onnx", opset=23)
    assert report.exporter == "torchscript" and report.opset == 20
    assert [(s.stage, s.status) for s in report.stages] == [
        ("torch2onnx.dynamo", "failed"),
        ("torch2onnx.torchscript", "ok"),
    ]
    assert report.stages[0].reason  # the dynamo error, recorded
    assert report.batch_dim == "batch"
    assert verify_onnx(report.onnx_path, model, tiny_spec()).ok


def test_both_exporters_failing_raise_with_both_reasons(tmp_path: Path) -> None:
    with pytest.raises(ExportError) as caught:
        export_onnx(DataDependentBranch(fail_tracing=True).eval(), tiny_spec(), tmp_path / "x.onnx")
    message = str(caught.value)
    assert "torch2onnx.dynamo" in message and "torch2onnx.torchscript" in message
    assert "cannot be traced" in message


def test_wrong_output_count_is_a_shape_error(tmp_path: Path, tiny_model: TinySdpaClassifier) -> None:
    with pytest.raises(ShapeError, match="returns 1 output"):
        export_onnx(tiny_model, tiny_spec(), tmp_path / "x.onnx", output_names=("logits", "attention_map"))
    with pytest.raises(ShapeError, match="example_batch"):
        export_onnx(tiny_model, tiny_spec(), tmp_path / "x.onnx", example_batch=1)
