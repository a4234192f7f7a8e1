"""Typed results of the export stages, written as JSON beside the artefacts.

Every stage returns a status (`ok` / `skipped` / `failed`), a reason when it is not `ok`, and its timing
(NVIDIA Model Navigator's habit), so a CPU-only run is a complete, honest record: the TensorRT stage says
`skipped` and why.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from attnserve.errors import ParityError

StageStatus = Literal["ok", "skipped", "failed"]


class _Report(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def write_json(self, path: Path) -> Path:
        """Write the report as indented JSON (creating the folder) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path


class StageResult(_Report):
    """One stage of the pipeline: what ran, whether it worked, why not, how long it took."""

    stage: str
    status: StageStatus
    reason: str | None = None
    seconds: float = 0.0
    details: dict[str, Any] = Field(default_factory=dict)


class StageRecorder:
    """Collects `StageResult`s; `with recorder.stage("name") as details:` times one stage.

    An exception inside the block records the stage as failed (with the error as reason) and re-raises.
    """

    def __init__(self) -> None:
        self.results: list[StageResult] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        details: dict[str, Any] = {}
        started = time.perf_counter()
        try:
            yield details
        except Exception as exc:
            self.results.append(
                StageResult(
                    stage=name,
                    status="failed",
                    reason=short_error(exc),
                    seconds=time.perf_counter() - started,
                    details=details,
                )
            )
            raise
        self.results.append(
            StageResult(stage=name, status="ok", seconds=time.perf_counter() - started, details=details)
        )

    def skipped(self, name: str, reason: str, **details: Any) -> StageResult:
        result = StageResult(stage=name, status="skipped", reason=reason, details=details)
        self.results.append(result)
        return result

    def failed(self, name: str, reason: str, seconds: float = 0.0, **details: Any) -> StageResult:
        result = StageResult(stage=name, status="failed", reason=reason, seconds=seconds, details=details)
        self.results.append(result)
        return result


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def short_error(exc: BaseException, limit: int = 800) -> str:
    """`Type: message` without colour codes, cut to `limit` characters (exporter errors can be pages long).

    The dynamo exporter's errors start with generic advice and put the cause under "## Exception summary";
    that cause is kept after the first line.
    """
    message = _ANSI_ESCAPE.sub("", str(exc)).strip()
    if "## Exception summary" in message:
        headline = message.splitlines()[0]
        cause = message.split("## Exception summary", 1)[1].strip()
        message = f"{headline} Cause: {cause}"
    text = f"{type(exc).__name__}: {message}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class OnnxExportReport(_Report):
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


class OutputParity(_Report):
    """One output at one batch size: ONNX Runtime vs the reference."""

    output: str
    batch_size: int
    max_abs_diff: float
    tolerance: float
    """`atol + rtol * reference_max_abs`: scales with the output's magnitude."""
    reference_max_abs: float
    ok: bool
    reason: str | None = None


class ParityReport(_Report):
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
