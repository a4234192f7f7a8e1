"""PyTorch -> ONNX with a symbolic batch dimension, falling back from the dynamo exporter to TorchScript.

The dynamo exporter (`torch.onnx.export(..., dynamo=True)`) at opset 23 turns SDPA into the standard ONNX
`Attention` operator. Some architectures fail in it (Hugging Face Swin with a symbolic batch fails in the
decomposition step: docs/measured.md#dynamo-fallback); then the TorchScript-based exporter (`dynamo=False`, at most opset 20) is
tried, and the report keeps both attempts with their reasons. If both fail, `ExportError` carries both.

The exported graph takes `pixels` (uint8, `(B, *spec.io.input_shape)`) and returns `logits` (and, for
explain models, `attention_map`); models normalise inside `forward`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path

import torch
from torch import nn

from attnserve.errors import ExportError, ShapeError
from attnserve.export.onnx_graph import batch_dim_name, count_attention_nodes, op_histogram
from attnserve.export.reports import OnnxExportReport
from attnserve.export.stages import Stage, StageRunner
from attnserve.spec import INPUT_NAME, OUTPUT_NAME, ModelSpec

logger = logging.getLogger(__name__)

BATCH_DIM = "batch"
TORCHSCRIPT_MAX_OPSET = 20
"""`torch.onnx._constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET` in torch 2.13."""
_EXTERNAL_DATA_BYTES = 1_800_000_000
"""Protobuf caps a single file at 2 GiB: larger models keep their weights in `model.onnx.data`."""


def example_pixels(spec: ModelSpec, batch_size: int, *, seed: int = 0) -> torch.Tensor:
    """Deterministic random uint8 pixels of shape `(batch_size, *spec.io.input_shape)`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch_size, *spec.io.input_shape), dtype=torch.uint8, generator=generator)


def _parameter_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters()) + sum(
        b.numel() * b.element_size() for b in model.buffers()
    )


def _check_example_output(model: nn.Module, pixels: torch.Tensor, output_names: Sequence[str]) -> None:
    """Run the model once so a wrong input/output contract fails here with a clear message."""
    with torch.inference_mode():
        outputs = model(pixels)
    outputs = (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)
    if len(outputs) != len(output_names):
        raise ShapeError(f"model returns {len(outputs)} output(s), expected {len(output_names)}: {list(output_names)}")
    for name, tensor in zip(output_names, outputs):
        if not isinstance(tensor, torch.Tensor) or tensor.shape[0] != pixels.shape[0]:
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ShapeError(f"output {name!r} must be a tensor with batch {pixels.shape[0]} first, got {shape}")


@contextlib.contextmanager
def _quiet_torchvision_notice() -> Iterator[None]:
    """The dynamo exporter warns once per torchvision op that torchvision is absent (it is, here: docs/measured.md#timm)."""
    registration_logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration_logger.level
    registration_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        registration_logger.setLevel(level)


def _export_dynamo(
    model: nn.Module, pixels: torch.Tensor, onnx_path: Path, opset: int, output_names: Sequence[str], max_batch: int
) -> None:
    batch = torch.export.Dim(BATCH_DIM, min=1, max=max_batch)
    with _quiet_torchvision_notice():
        program = torch.onnx.export(
            model,
            (pixels,),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(output_names),
            dynamic_shapes=({0: batch},),  # positional: works whatever the forward argument is called
            optimize=True,
            verbose=False,
        )
    if program is None:
        raise ExportError("the dynamo exporter returned no program")
    program.save(str(onnx_path), external_data=_parameter_bytes(model) > _EXTERNAL_DATA_BYTES)


def _export_torchscript(
    model: nn.Module, pixels: torch.Tensor, onnx_path: Path, opset: int, output_names: Sequence[str]
) -> None:
    dynamic_axes = {name: {0: BATCH_DIM} for name in (INPUT_NAME, *output_names)}
    torch.onnx.export(
        model,
        (pixels,),
        str(onnx_path),
        dynamo=False,
        opset_version=min(opset, TORCHSCRIPT_MAX_OPSET),
        input_names=[INPUT_NAME],
        output_names=list(output_names),
        dynamic_axes=dynamic_axes,
        do_constant_folding=True,
    )


def _attempt(export: Callable[[], object], onnx_path: Path) -> str:
    """Run one exporter quietly and return the saved graph's symbolic batch dim (ExportError when fixed).

    The exporters print progress and warnings; they are kept out of the CLI's output (logged at debug).
    """
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export()
    finally:
        logger.debug("exporter output:\n%s", captured.getvalue())
    dim = batch_dim_name(onnx_path)
    if dim is None:
        raise ExportError(f"the exported batch dim is fixed, expected symbolic {BATCH_DIM!r}")
    return dim


def export_onnx(
    model: nn.Module,
    spec: ModelSpec,
    onnx_path: Path,
    *,
    opset: int | None = None,
    example_batch: int = 2,
    output_names: Sequence[str] = (OUTPUT_NAME,),
    allow_fallback: bool = True,
) -> OnnxExportReport:
    """Export `model` to ONNX with a symbolic batch dimension (dynamo first, TorchScript as fallback).

    Args:
        model: takes uint8 pixels `(B, *spec.io.input_shape)` and returns one tensor per `output_names`,
            each with the batch first.
        spec: the deployable's spec (input shape, max batch, default opset).
        onnx_path: where to write the graph (its folder is created).
        opset: ONNX opset (default `spec.export.opset`; 23 gives the fused `Attention` op, 18 decomposes it).
        example_batch: batch size of the tracing example; >= 2 so the batch cannot specialise to 1.
        output_names: graph output names, in the order the model returns them.
        allow_fallback: try the TorchScript exporter when the dynamo exporter fails.

    Returns:
        The report (exporter used, both attempts, op histogram, attention node count); it is also written
        to `onnx_path.with_suffix(".export.json")`.

    Raises:
        ExportError: both exporters failed (the message carries both reasons).
        ShapeError: the model's outputs do not match `output_names` / the batch.
    """
    if example_batch < 2:
        raise ShapeError(f"example_batch must be >= 2 so the batch dim stays symbolic, got {example_batch}")
    opset = spec.export.opset if opset is None else opset
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    pixels = example_pixels(spec, example_batch)
    _check_example_output(model, pixels, output_names)
    max_batch = max(spec.serving.max_batch_size, example_batch)

    runner = StageRunner()
    started = time.perf_counter()
    exporter: str | None = None
    attempts = [("torch2onnx.dynamo", lambda: _export_dynamo(model, pixels, onnx_path, opset, output_names, max_batch))]
    if allow_fallback:
        attempts.append(
            ("torch2onnx.torchscript", lambda: _export_torchscript(model, pixels, onnx_path, opset, output_names))
        )
    for stage_name, attempt in attempts:
        # an attempt that fails is recorded (and logged at info with its traceback), then the next is tried
        stage = Stage(
            stage_name, partial(_attempt, attempt, onnx_path), summary="batch_dim={}".format, log_level=logging.INFO
        )
        runner.run(stage)
        if runner.last.ok:
            exporter = stage_name.rsplit(".", 1)[1]
            break

    if exporter is None:
        reasons = "; ".join(f"{r.stage}: {r.reason}" for r in runner.results)
        raise ExportError(f"could not export {spec.name!r} to ONNX: {reasons}")

    graph_opset = opset if exporter == "dynamo" else min(opset, TORCHSCRIPT_MAX_OPSET)
    report = OnnxExportReport(
        onnx_path=onnx_path,
        exporter=exporter,  # type: ignore[arg-type]
        opset=graph_opset,
        example_batch=example_batch,
        input_names=[INPUT_NAME],
        output_names=list(output_names),
        batch_dim=batch_dim_name(onnx_path),
        op_histogram=op_histogram(onnx_path),
        attention_nodes=count_attention_nodes(onnx_path),
        stages=runner.results,
        seconds=time.perf_counter() - started,
    )
    report.write_json(onnx_path.with_suffix(".export.json"))
    return report
