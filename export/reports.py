"""Typed results of the export stages, written as JSON beside the artefacts.

Every stage is recorded by `export.stages` with a status (`ok` / `skipped` / `failed`), a reason when it is
not `ok`, and its timing (NVIDIA Model Navigator's habit), so a CPU-only run is a complete, honest record: the
TensorRT stage says `skipped` and why. The typed results of the stages are these reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import computed_field

from attnserve.errors import ParityError
from attnserve.export.stages import ArtefactReport, StageResult


class OnnxExportReport(ArtefactReport):
    """Result of `torch2onnx.export_onnx`."""

    onnx_path: Path
    exporter: Literal["dynamo", "torchscript"]
    opset: int
    example_batch: int
    input_names: list[str]
    output_names: list[str]
    batch_dim: str | None
    """The symbolic name of the batch dimension in the saved graph (None: not symbolic)."""
    op_histogram: dict[str, int]
    attention_nodes: int
    """ONNX `Attention` nodes (opset 23) plus `com.microsoft` fused attention nodes."""
    stages: list[StageResult]
    """Every exporter attempt, in order: a failed dynamo attempt followed by the TorchScript fallback."""
    seconds: float


class OutputParity(ArtefactReport):
    """One output at one batch size: ONNX Runtime vs the reference."""

    output: str
    batch_size: int
    max_abs_diff: float
    tolerance: float
    """`atol + rtol * reference_max_abs`: scales with the output's magnitude."""
    reference_max_abs: float
    ok: bool
    reason: str | None = None


class ParityReport(ArtefactReport):
    """Result of `verify.verify_onnx` (or a variant check): checker, symbolic batch, per-output parity."""

    onnx_path: Path
    checker: StageResult
    symbolic_batch: bool
    batch_dim: str | None
    batch_sizes: list[int]
    outputs: list[OutputParity]
    failures: list[str]
    """One line per problem, naming the output, batch size and max abs diff."""
    seconds: float

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return not self.failures

    def raise_on_failure(self) -> ParityReport:
        """Raise `ParityError` listing every failure; returns self when all is well."""
        if self.failures:
            raise ParityError(f"{self.onnx_path.name}: " + "; ".join(self.failures))
        return self

    def max_abs_diff(self, output: str | None = None) -> float:
        """Largest difference over batch sizes (for one output, or all)."""
        diffs = [p.max_abs_diff for p in self.outputs if output is None or p.output == output]
        return max(diffs, default=float("nan"))
