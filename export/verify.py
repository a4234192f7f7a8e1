"""Verify an exported ONNX graph: full `onnx.checker`, symbolic batch, ONNX Runtime vs reference outputs.

Parity is never vacuous: an output whose reference values are all ~0 (a randomly initialised MobileViT
gives logits of ~1e-41, which any tolerance accepts) fails the check instead of passing it. Tolerances scale
with the output: `atol + rtol * max|reference|`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from attnserve.export.onnx_graph import batch_dim_name, value_info_dims
from attnserve.export.reports import OutputParity, ParityReport
from attnserve.export.stages import StageResult, short_error
from attnserve.export.torch2onnx import example_pixels
from attnserve.spec import DETECTION_OUTPUTS, INPUT_NAME, ModelSpec

VACUOUS_FACTOR = 2.0
"""A reference output must reach `VACUOUS_FACTOR * tolerance` somewhere: at or below `tolerance` an all-zero
answer would pass the check, and the factor keeps a margin above that."""


def ort_session(onnx_path: Path, *, threads: int | None = None, optimized: bool = False):
    """An ONNX Runtime CPU session (graph optimisations off by default: verify the graph as written).

    Returns:
        `onnxruntime.InferenceSession`.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    )
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])


def torch_reference(model: nn.Module) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A reference function: uint8 pixels -> list of float32 outputs of `model` (in `inference_mode`)."""

    def run(pixels: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            outputs = model.eval()(torch.from_numpy(pixels))
        outputs = (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)
        return [o.detach().float().cpu().numpy() for o in outputs]

    return run


def compare_outputs(
    output_names: Sequence[str],
    actual: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    *,
    batch_size: int,
    atol: float,
    rtol: float,
    indices: Sequence[str] = (),
) -> list[OutputParity]:
    """Compare each output with its reference; the verdict names the reason when it fails.

    Outputs named in `indices` hold integers (a detector's class indices): they must be equal, and all-zero is a
    valid answer for them (one class everywhere), not a vacuous one.
    """
    results: list[OutputParity] = []
    for name, got, want in zip(output_names, actual, reference, strict=True):
        got = np.asarray(got, dtype=np.float64)
        want = np.asarray(want, dtype=np.float64)
        reference_max_abs = float(np.max(np.abs(want))) if want.size else 0.0
        tolerance = atol + rtol * reference_max_abs
        reason: str | None = None
        max_abs_diff = float("inf")
        if got.shape != want.shape:
            reason = f"shape {got.shape} != reference {want.shape}"
        elif not (np.all(np.isfinite(got)) and np.all(np.isfinite(want))):
            reason = "non-finite values (nan/inf) in the output or the reference"
        else:
            max_abs_diff = float(np.max(np.abs(got - want))) if want.size else 0.0
            if max_abs_diff > tolerance:
                reason = f"max abs diff {max_abs_diff:.3g} > tolerance {tolerance:.3g}"
            elif name in indices and max_abs_diff > 0:
                reason = f"indices differ (max abs diff {max_abs_diff:.3g})"
            elif reference_max_abs <= VACUOUS_FACTOR * tolerance and name not in indices:
                reason = (
                    f"reference is ~0 (max |ref| {reference_max_abs:.3g} <= {VACUOUS_FACTOR:g} x tolerance "
                    f"{tolerance:.3g}): an all-zero output would pass, parity would be vacuous"
                )
        results.append(
            OutputParity(
                output=name,
                batch_size=batch_size,
                max_abs_diff=max_abs_diff,
                tolerance=tolerance,
                reference_max_abs=reference_max_abs,
                ok=reason is None,
                reason=reason,
            )
        )
    return results


def align_candidates(actual: Sequence[np.ndarray], reference: Sequence[np.ndarray], atol: float,
                     rtol: float) -> list[np.ndarray]:  # fmt: skip
    """A detector's `(boxes, scores, classes)` from ONNX Runtime reordered into the reference's order.

    Top-k over near-equal scores may order candidates differently in two runtimes (an untrained model's scores
    tie within 1e-7), so candidates are matched one to one: same class, score and box within tolerance.
    A reference candidate left without a match keeps the runtime's value at its place, so the comparison that
    follows fails on it, unless its score ties the K-th score (within tolerance): there either runtime may keep
    another candidate of the same score, and the reference's value is taken as equal.
    """
    actual = [np.asarray(a, dtype=np.float64) for a in actual]  # boxes, scores, classes (+ per-candidate maps)
    reference = [np.asarray(a, dtype=np.float64) for a in reference]
    if len(actual) < 3 or any(a.shape[:2] != r.shape[:2] for a, r in zip(actual, reference, strict=True)):
        return actual
    boxes, scores, classes = actual[:3]
    ref_boxes, ref_scores, ref_classes = reference[:3]
    score_tol = atol + rtol * float(np.abs(ref_scores).max(initial=0.0))
    box_tol = atol + rtol * float(np.abs(ref_boxes).max(initial=0.0))
    aligned = [a.copy() for a in actual]
    for image in range(len(ref_scores)):
        free = np.ones(ref_scores.shape[1], dtype=bool)
        for index in range(ref_scores.shape[1]):
            fits = (free & (classes[image] == ref_classes[image, index])
                    & (np.abs(scores[image] - ref_scores[image, index]) <= score_tol)
                    & (np.abs(boxes[image] - ref_boxes[image, index]).max(axis=1) <= box_tol))  # fmt: skip
            if fits.any():
                match = int(np.flatnonzero(fits)[0])
                free[match] = False
                for target, source in zip(aligned, actual, strict=True):
                    target[image, index] = source[image, match]
            elif ref_scores[image, index] <= ref_scores[image, -1] + score_tol:  # a tie at the K-th place
                for target, source in zip(aligned, reference, strict=True):
                    target[image, index] = source[image, index]
    return aligned


def check_graph(onnx_path: Path) -> StageResult:
    """`onnx.checker.check_model(full_check=True)` (strict shape inference) as a stage result."""
    started = time.perf_counter()
    try:
        onnx.checker.check_model(str(onnx_path), full_check=True)
    except Exception as exc:  # noqa: BLE001 - the checker raises several types; all mean "invalid"
        return StageResult(
            stage="onnx.checker", status="failed", reason=short_error(exc), seconds=time.perf_counter() - started
        )
    return StageResult(stage="onnx.checker", status="ok", seconds=time.perf_counter() - started)


def _interface_failures(graph: onnx.ModelProto, spec: ModelSpec, dim: str | None) -> list[str]:
    """What is wrong with the graph's interface: one uint8 `pixels` input of the spec's shape, symbolic batch."""
    failures: list[str] = []
    inputs = [i for i in graph.graph.input if i.name not in {init.name for init in graph.graph.initializer}]
    if [i.name for i in inputs] != [INPUT_NAME]:
        failures.append(f"graph inputs: expected [{INPUT_NAME!r}], got {[i.name for i in inputs]}")
    elif inputs[0].type.tensor_type.elem_type != onnx.TensorProto.UINT8:
        got = onnx.TensorProto.DataType.Name(inputs[0].type.tensor_type.elem_type)
        failures.append(f"input {INPUT_NAME!r}: expected dtype UINT8, got {got}")
    elif value_info_dims(inputs[0])[1:] != list(spec.io.input_shape):
        failures.append(
            f"input {INPUT_NAME!r}: expected per-sample dims {list(spec.io.input_shape)}, got {value_info_dims(inputs[0])[1:]}"
        )
    if dim is None:
        failures.append(
            f"input {INPUT_NAME!r}: batch dim is not symbolic, got dims {value_info_dims(graph.graph.input[0])}"
        )
    for output in graph.graph.output:
        if not value_info_dims(output) or isinstance(value_info_dims(output)[0], int):
            failures.append(f"output {output.name!r}: batch dim is not symbolic, got dims {value_info_dims(output)}")

    return failures


def verify_against(
    onnx_path: Path,
    reference: Callable[[np.ndarray], list[np.ndarray]],
    spec: ModelSpec,
    batch_sizes: Sequence[int] | None = None,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    session=None,
) -> ParityReport:
    """Verify `onnx_path` against any reference function (a torch model, another ONNX graph, ...).

    Args:
        onnx_path: graph to check.
        reference: uint8 pixels `(B, *input_shape)` -> list of outputs in the graph's output order.
        spec: input shape, max batch and default tolerances.
        batch_sizes: default `(1, 2, spec.serving.max_batch_size)`.
        atol: absolute tolerance (default `spec.export.atol`).
        rtol: relative tolerance on `max|reference|` (default `spec.export.rtol`).
        session: an existing ONNX Runtime session for `onnx_path` (default: a new CPU session).

    Returns:
        A `ParityReport`; `report.ok` is False with one line per problem in `report.failures`.
    """
    started = time.perf_counter()
    onnx_path = Path(onnx_path)
    atol = spec.export.atol if atol is None else atol
    rtol = spec.export.rtol if rtol is None else rtol
    batch_sizes = sorted(set(batch_sizes or (1, 2, spec.serving.max_batch_size)))
    failures: list[str] = []

    checker = check_graph(onnx_path)
    if checker.status != "ok":
        failures.append(f"onnx.checker: {checker.reason}")

    graph = onnx.load(str(onnx_path), load_external_data=False)
    dim = batch_dim_name(graph)
    failures += _interface_failures(graph, spec, dim)

    parity: list[OutputParity] = []
    if not failures:
        session = session or ort_session(onnx_path)
        output_names = [o.name for o in session.get_outputs()]
        for batch_size in batch_sizes:
            pixels = example_pixels(spec, batch_size, seed=batch_size).numpy()
            try:
                actual = session.run(output_names, {INPUT_NAME: pixels})
            except Exception as exc:  # noqa: BLE001 - ORT errors are strings from C++; report them
                failures.append(f"ONNX Runtime failed at batch {batch_size}: {short_error(exc, 300)}")
                continue
            expected = reference(pixels)
            if len(expected) != len(output_names):
                failures.append(f"reference gives {len(expected)} outputs, graph has {output_names}")
                break
            indices: tuple[str, ...] = ()
            if spec.kind == "detection":
                actual, indices = align_candidates(actual, expected, atol, rtol), (DETECTION_OUTPUTS[2],)
            parity.extend(compare_outputs(output_names, actual, expected, batch_size=batch_size, atol=atol, rtol=rtol,
                                          indices=indices))  # fmt: skip
        failures.extend(f"output {p.output!r} at batch {p.batch_size}: {p.reason}" for p in parity if not p.ok)

    return ParityReport(
        onnx_path=onnx_path,
        checker=checker,
        symbolic_batch=dim is not None,
        batch_dim=dim,
        batch_sizes=list(batch_sizes),
        outputs=parity,
        failures=failures,
        seconds=time.perf_counter() - started,
    )


def verify_onnx(
    onnx_path: Path,
    model: nn.Module,
    spec: ModelSpec,
    batch_sizes: Sequence[int] | None = None,
    *,
    atol: float | None = None,
    rtol: float | None = None,
) -> ParityReport:
    """Verify an exported graph against its PyTorch model at batch 1, 2 and `spec.serving.max_batch_size`.

    Checks: `onnx.checker` full check, input `pixels` uint8 with `spec.io.input_shape`, symbolic batch on every
    input and output, and ONNX Runtime (CPU) vs PyTorch for every output within
    `atol + rtol * max|reference|`, failing when the reference is ~0. The report is written to
    `onnx_path.with_suffix(".parity.json")`.

    Returns:
        The `ParityReport` (call `raise_on_failure()` to turn failures into `ParityError`).
    """
    report = verify_against(onnx_path, torch_reference(model), spec, batch_sizes, atol=atol, rtol=rtol)
    report.write_json(Path(onnx_path).with_suffix(".parity.json"))
    return report
