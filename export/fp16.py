"""fp16 ONNX for TensorRT, produced with NVIDIA ModelOpt's autocast and verified in ONNX Runtime on the CPU.

TensorRT 11 removed `BuilderFlag.FP16`: networks are strongly typed, so the precision must be in the ONNX
graph before the build (NVIDIA's migration guide: `modelopt.onnx.autocast.convert_to_mixed_precision`).
`keep_io_types=True` keeps the graph's contract (uint8 `pixels` in, fp32 `logits` out). The converted
graph is checked here against the fp32 graph: max abs diff within `spec.export.fp16_atol` (plus `spec.export.rtol`
scaled by the output magnitude) and the top-1 agreement, reported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from attnserve.errors import ExportError
from attnserve.export.onnx_graph import count_attention_nodes
from attnserve.export.reports import ParityReport
from attnserve.export.stages import ArtefactReport
from attnserve.export.torch2onnx import example_pixels
from attnserve.export.verify import ort_session, verify_against
from attnserve.spec import DETECTION_OUTPUTS, INPUT_NAME, OUTPUT_NAME, ModelSpec

DETECTION_SCORES = DETECTION_OUTPUTS[1]

logger = logging.getLogger(__name__)


class Fp16Report(ArtefactReport):
    """The fp16 graph against its fp32 source, in ONNX Runtime (CPU)."""

    fp32_path: Path
    fp16_path: Path
    converted_seconds: float
    fp16_initializers: int
    attention_nodes: int
    max_abs_diff: float
    top1_agreement: float
    """Share of samples (over all verified batches) whose fp16 arg-max equals the fp32 arg-max."""
    samples: int
    parity: ParityReport

    @property
    def ok(self) -> bool:
        return self.parity.ok


def modelopt_available() -> str | None:
    """None when ModelOpt's autocast imports, else the reason it does not (install the `fp16` extra)."""
    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError or its own dependency errors
        return f"nvidia-modelopt autocast unavailable ({type(exc).__name__}: {exc}); install the 'fp16' extra"
    return None


def convert_to_fp16(onnx_path: Path, spec: ModelSpec, fp16_path: Path | None = None) -> Path:
    """Convert an fp32 graph to fp16 compute with fp32/uint8 I/O (ModelOpt autocast).

    Args:
        onnx_path: the verified fp32 graph.
        spec: gives the calibration input's shape (autocast runs the graph once to find fp16 overflows;
            its own random data generator cannot produce uint8, so real-range uint8 pixels are given).
        fp16_path: output path (default `<stem>.fp16.onnx` beside the source).

    Returns:
        The path of the fp16 graph.

    Raises:
        ExportError: ModelOpt is missing or the conversion failed.
    """
    missing = modelopt_available()
    if missing:
        raise ExportError(missing)
    from modelopt.onnx.autocast import configure_logging, convert_to_mixed_precision

    # ModelOpt logs every step at INFO to stdout by default: a demo log filled with calibration chatter. Its
    # errors still show; our own fp16 stage reports the parity it checks.
    configure_logging(logging.DEBUG if logger.isEnabledFor(logging.DEBUG) else logging.ERROR)
    onnx_path = Path(onnx_path)
    fp16_path = Path(fp16_path or onnx_path.with_name(f"{onnx_path.stem}.fp16.onnx"))
    calibration_path = fp16_path.with_name(f"{fp16_path.stem}.calibration.npz")
    np.savez(calibration_path, **{INPUT_NAME: example_pixels(spec, 2, seed=123).numpy()})
    try:
        converted = convert_to_mixed_precision(
            onnx_path=str(onnx_path),
            low_precision_type="fp16",
            keep_io_types=True,
            calibration_data=str(calibration_path),
        )
    except Exception as exc:
        raise ExportError(f"ModelOpt fp16 conversion of {onnx_path.name} failed: {type(exc).__name__}: {exc}") from exc
    onnx.save(converted, str(fp16_path))
    return fp16_path


def verify_fp16(
    fp16_path: Path, fp32_path: Path, spec: ModelSpec, batch_sizes: Sequence[int] | None = None
) -> tuple[ParityReport, float, float, int]:
    """Compare the fp16 graph with the fp32 graph in ONNX Runtime.

    Returns:
        `(parity, max_abs_diff of the logits (a detector's scores), top1_agreement, samples)`.
    """
    fp32_session = ort_session(fp32_path)
    output_names = [o.name for o in fp32_session.get_outputs()]
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    fp16_session = ort_session(fp16_path)
    # a classifier's logits; a detector's candidate scores (its top-1 agreement: the same best candidate)
    primary = DETECTION_SCORES if spec.kind == "detection" else OUTPUT_NAME

    def reference(pixels: np.ndarray) -> list[np.ndarray]:
        expected = fp32_session.run(output_names, {INPUT_NAME: pixels})
        actual = fp16_session.run([primary], {INPUT_NAME: pixels})[0]
        pairs.append((expected[output_names.index(primary)], actual))
        return expected

    parity = verify_against(fp16_path, reference, spec, batch_sizes, atol=spec.export.fp16_atol, session=fp16_session)
    if not pairs:
        return parity, float("nan"), float("nan"), 0
    fp32_logits = np.concatenate([p[0] for p in pairs])
    fp16_logits = np.concatenate([p[1] for p in pairs]).astype(np.float32)
    max_abs_diff = float(np.max(np.abs(fp32_logits - fp16_logits)))
    agreement = float(np.mean(fp32_logits.argmax(axis=1) == fp16_logits.argmax(axis=1)))
    return parity, max_abs_diff, agreement, len(fp32_logits)


def export_fp16(onnx_path: Path, spec: ModelSpec, fp16_path: Path | None = None) -> Fp16Report:
    """Convert to fp16 and verify against the fp32 graph; the report is written to `<fp16 stem>.json`."""
    started = time.perf_counter()
    fp16_path = convert_to_fp16(onnx_path, spec, fp16_path)
    converted_seconds = time.perf_counter() - started
    parity, max_abs_diff, agreement, samples = verify_fp16(fp16_path, Path(onnx_path), spec)
    graph = onnx.load(str(fp16_path), load_external_data=False)
    report = Fp16Report(
        fp32_path=Path(onnx_path),
        fp16_path=fp16_path,
        converted_seconds=converted_seconds,
        fp16_initializers=sum(1 for t in graph.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16),
        attention_nodes=count_attention_nodes(graph),
        max_abs_diff=max_abs_diff,
        top1_agreement=agreement,
        samples=samples,
        parity=parity,
    )
    report.write_json(fp16_path.with_suffix(".json"))
    logger.info("fp16 %s: max abs diff %.3g, top-1 agreement %.3f", fp16_path.name, max_abs_diff, agreement)
    return report
