"""verify_onnx fails loudly: it names every failing output, and ~0 references never pass."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from export_fixtures import TinySdpaClassifier, tiny_spec
from torch import nn

from attnserve.errors import ParityError
from attnserve.export.torch2onnx import export_onnx
from attnserve.export.verify import verify_onnx


class WithMap(nn.Module):
    """Two outputs: logits and an attention map, optionally perturbed / scaled after export."""

    def __init__(self, base: TinySdpaClassifier, logits_scale: float = 1.0, map_offset: float = 0.0) -> None:
        super().__init__()
        self.base, self.logits_scale, self.map_offset = base, logits_scale, map_offset

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, weights = self.base.forward_with_attention(pixels)
        return logits * self.logits_scale, weights + self.map_offset


@pytest.fixture(scope="module")
def two_output_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_model: TinySdpaClassifier) -> Path:
    onnx_path = tmp_path_factory.mktemp("two") / "explain.onnx"
    export_onnx(WithMap(tiny_model), tiny_spec(), onnx_path, output_names=("logits", "attention_map"))
    return onnx_path


def test_parity_passes_at_1_2_and_max(tiny_onnx: Path, tiny_model: TinySdpaClassifier) -> None:
    report = verify_onnx(tiny_onnx, tiny_model, tiny_spec())
    assert report.ok, report.failures
    assert report.checker.status == "ok" and report.symbolic_batch and report.batch_sizes == [1, 2, 4]
    assert {(p.output, p.batch_size) for p in report.outputs} == {("logits", b) for b in (1, 2, 4)}
    assert all(p.reference_max_abs > 0.01 and p.max_abs_diff < 1e-4 for p in report.outputs)
    assert tiny_onnx.with_suffix(".parity.json").is_file()


def test_every_failing_output_is_named(two_output_onnx: Path, tiny_model: TinySdpaClassifier) -> None:
    wrong = WithMap(tiny_model, logits_scale=1.5, map_offset=0.25)  # both outputs now differ from the graph
    report = verify_onnx(two_output_onnx, wrong, tiny_spec(), batch_sizes=(1, 2))
    assert not report.ok
    failing = {(p.output, p.batch_size) for p in report.outputs if not p.ok}
    assert failing == {("logits", 1), ("logits", 2), ("attention_map", 1), ("attention_map", 2)}
    assert any("attention_map" in line and "max abs diff" in line for line in report.failures)
    with pytest.raises(ParityError, match="logits"):
        report.raise_on_failure()
    only_map = verify_onnx(two_output_onnx, WithMap(tiny_model, map_offset=0.25), tiny_spec(), batch_sizes=(2,))
    assert {p.output for p in only_map.outputs if not p.ok} == {"attention_map"}


def test_near_zero_reference_fails_as_vacuous(tmp_path: Path, tiny_model: TinySdpaClassifier) -> None:
    # A model whose outputs are ~1e-41 (like a randomly initialised MobileViT): graph and model agree
    # exactly, yet the check must fail, because any graph would have passed.
    vanishing = WithMap(tiny_model, logits_scale=1e-41)
    onnx_path = tmp_path / "vanishing.onnx"
    export_onnx(vanishing, tiny_spec(), onnx_path, output_names=("logits", "attention_map"))
    report = verify_onnx(onnx_path, vanishing, tiny_spec(), batch_sizes=(2,))
    assert [p.output for p in report.outputs if not p.ok] == ["logits"]
    assert "vacuous" in report.failures[0]


def test_fixed_batch_graph_is_rejected(tmp_path: Path, tiny_onnx: Path, tiny_model: TinySdpaClassifier) -> None:
    graph = onnx.load(str(tiny_onnx))
    graph.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2  # pin the batch to 2
    fixed = tmp_path / "fixed.onnx"
    onnx.save(graph, str(fixed))
    report = verify_onnx(fixed, tiny_model, tiny_spec())
    assert not report.symbolic_batch
    assert any("batch dim is not symbolic" in line for line in report.failures)
