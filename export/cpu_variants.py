"""CPU precision variants of a verified fp32 ONNX model: what they are, how they are built, how they run.

A variant is one (runtime, precision, model file) triple that the CPU runner can serve through its config
parameters `runtime`, `precision` and `model_file`:

| variant                          | runtime      | precision | model file                 |
| -------------------------------- | ------------ | --------- | -------------------------- |
| `onnxruntime_fp32`               | onnxruntime  | fp32      | `model.onnx` (the export)  |
| `onnxruntime_int8_dynamic`       | onnxruntime  | int8      | `model.int8_dynamic.onnx`  |
| `onnxruntime_int8_qdq`           | onnxruntime  | int8      | `model.int8_qdq.onnx`      |
| `openvino_fp32`                  | openvino     | fp32      | `model.onnx`               |
| `openvino_bf16`                  | openvino     | bf16      | `model.onnx`               |
| `openvino_int8_qdq`              | openvino     | int8      | `model.int8_qdq.onnx`      |
| `tensorrt_fp16`, `tensorrt_int8` | tensorrt     | (GPU)     | built on a GPU host        |

int8 quantises only `MatMul` and `Gemm`: ONNX Runtime's quantiser otherwise rewrites the opset-23
`Attention` node into a `com.microsoft.QAttention` that ONNX Runtime then refuses to load (docs/measured.md#int8-qattention).
The static variant is a Q/DQ graph (the format TensorRT's explicit quantisation also builds from),
calibrated on training images; the held-out split is only ever used to evaluate.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from attnserve.errors import ExportError, ShapeError, UserInputError
from attnserve.export.stages import Stage, StageRunner
from attnserve.repository.layout import ONNX_FILENAME, PLAN_FILENAME
from attnserve.runtimes.openvino_session import openvino_supports
from attnserve.spec import INPUT_NAME, ModelSpec, Precision

logger = logging.getLogger(__name__)

VariantRuntime = Literal["onnxruntime", "openvino", "tensorrt"]
Quantization = Literal["none", "int8_dynamic", "int8_qdq"]

FP32_FILENAME = ONNX_FILENAME
INT8_DYNAMIC_FILENAME = "model.int8_dynamic.onnx"
INT8_QDQ_FILENAME = "model.int8_qdq.onnx"
QUANTIZED_OP_TYPES: tuple[str, ...] = ("MatMul", "Gemm")
"""The only op types int8 quantisation touches (the `Attention` -> `QAttention` trap, docs/measured.md#int8-qattention)."""
CALIBRATION_BATCH_SIZE = 8


class CpuVariant(BaseModel):
    """One servable (runtime, precision, model file) candidate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    runtime: VariantRuntime
    precision: Precision
    quantization: Quantization = "none"
    model_file: str = FP32_FILENAME
    """File name inside the repository entry's version folder (and inside the variants folder)."""

    @property
    def name(self) -> str:
        suffix = self.quantization if self.quantization != "none" else self.precision
        return f"{self.runtime}_{suffix}"

    @property
    def is_baseline(self) -> bool:
        """The fp32 ONNX Runtime entry every other variant is compared with."""
        return self == BASELINE_VARIANT


BASELINE_VARIANT = CpuVariant(runtime="onnxruntime", precision="fp32")
CPU_VARIANTS: tuple[CpuVariant, ...] = (
    BASELINE_VARIANT,
    CpuVariant(runtime="onnxruntime", precision="int8", quantization="int8_dynamic", model_file=INT8_DYNAMIC_FILENAME),
    CpuVariant(runtime="onnxruntime", precision="int8", quantization="int8_qdq", model_file=INT8_QDQ_FILENAME),
    CpuVariant(runtime="openvino", precision="fp32"),
    CpuVariant(runtime="openvino", precision="bf16"),
    CpuVariant(runtime="openvino", precision="int8", quantization="int8_qdq", model_file=INT8_QDQ_FILENAME),
)
"""Every CPU candidate, baseline first."""
GPU_VARIANTS: tuple[CpuVariant, ...] = (
    CpuVariant(runtime="tensorrt", precision="fp16", model_file=PLAN_FILENAME),
    CpuVariant(runtime="tensorrt", precision="int8", quantization="int8_qdq", model_file=PLAN_FILENAME),
)
"""GPU rows of the same table: built by the TensorRT stage on a GPU host, listed here as skipped otherwise."""


def variant_by_name(name: str) -> CpuVariant:
    """The CPU or GPU variant called `name` (e.g. `openvino_bf16`)."""
    for variant in (*CPU_VARIANTS, *GPU_VARIANTS):
        if variant.name == name:
            return variant
    raise UserInputError(
        f"unknown variant {name!r}; known variants: {', '.join(v.name for v in (*CPU_VARIANTS, *GPU_VARIANTS))}"
    )


def variant_for(runtime: str, precision: str, model_file: str = FP32_FILENAME) -> CpuVariant:
    """The CPU variant a repository entry's (`runtime`, `precision`, `model_file`) parameters describe."""
    for variant in CPU_VARIANTS:
        if (variant.runtime, variant.precision, variant.model_file) == (runtime, precision, model_file):
            return variant
    known = ", ".join(f"({v.runtime}, {v.precision}, {v.model_file})" for v in CPU_VARIANTS)
    raise UserInputError(f"no CPU variant runs ({runtime}, {precision}, {model_file}); known: {known}")


def tensorrt_unavailable_reason() -> str | None:
    """Why the TensorRT rows cannot be built here (None when TensorRT and a CUDA GPU are both present)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (its wheels download from NVIDIA's index, unreachable here)"
    try:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU on this host"
    except ImportError:
        return "torch is not installed, cannot check for a CUDA GPU"
    return None


def unavailable_reason(variant: CpuVariant) -> str | None:
    """Why `variant` cannot run on this host, or None when it can."""
    if variant.runtime == "tensorrt":
        reason = tensorrt_unavailable_reason()
        return reason or "TensorRT engines are built by `attnserve export --tensorrt` on the GPU host"
    if variant.runtime == "openvino":
        try:
            import openvino  # noqa: F401
        except ImportError:
            return "OpenVINO is not installed (pip install 'attnserve[openvino]')"
        if not openvino_supports(variant.precision):
            return f"this CPU has no native {variant.precision} support in OpenVINO"
    return None


# ---------------------------------------------------------------------------------------------------------
# building the int8 files
# ---------------------------------------------------------------------------------------------------------
def _check_onnx_file(onnx_path: Path) -> Path:
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise UserInputError(f"fp32 ONNX file does not exist: {onnx_path}")
    return onnx_path


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantiser logs a line per tensor on the root logger; keep only its errors."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8_dynamic(fp32_onnx: Path, out_path: Path) -> Path:
    """Dynamic int8 (weights int8 per tensor, activations quantised at run time) of MatMul/Gemm only.

    Args:
        fp32_onnx: the verified fp32 model.
        out_path: where the int8 model goes.

    Returns:
        `out_path`.

    Raises:
        ExportError: ONNX Runtime's quantiser failed.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32_onnx = _check_onnx_file(fp32_onnx)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet_root_logger():
            quantize_dynamic(
                fp32_onnx, out_path, op_types_to_quantize=list(QUANTIZED_OP_TYPES), weight_type=QuantType.QInt8
            )
    except Exception as exc:
        raise ExportError(f"dynamic int8 quantisation of {fp32_onnx} failed: {type(exc).__name__}: {exc}") from exc
    return out_path


class _PixelBatches:
    """ONNX Runtime `CalibrationDataReader` over uint8 pixel batches."""

    def __init__(self, pixels: np.ndarray, batch_size: int) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            {INPUT_NAME: pixels[start : start + batch_size]} for start in range(0, len(pixels), batch_size)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def check_pixels(pixels: np.ndarray, spec: ModelSpec, what: str) -> np.ndarray:
    """Check a batch of model inputs against the spec: uint8, shape `(N, *spec.io.input_shape)`, N >= 1."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise UserInputError(f"{what} must be uint8 pixels, got dtype {pixels.dtype}")
    expected = tuple(spec.io.input_shape)
    if pixels.ndim != len(expected) + 1 or tuple(pixels.shape[1:]) != expected or len(pixels) == 0:
        raise ShapeError(f"{what} must have shape (N>=1, {', '.join(map(str, expected))}), got {pixels.shape}")
    return pixels


def quantize_int8_qdq(
    fp32_onnx: Path,
    out_path: Path,
    calibration_pixels: np.ndarray,
    *,
    batch_size: int = CALIBRATION_BATCH_SIZE,
) -> Path:
    """Static int8 Q/DQ model of MatMul/Gemm: per-channel int8 weights, activation ranges from calibration.

    Args:
        fp32_onnx: the verified fp32 model.
        out_path: where the Q/DQ model goes.
        calibration_pixels: uint8 inputs from the *training* split, shape `(N, *input_shape)`.
        batch_size: calibration batch size (bounds memory; ranges are min/max over all batches).

    Returns:
        `out_path`.

    Raises:
        ExportError: ONNX Runtime's quantiser failed.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    fp32_onnx = _check_onnx_file(fp32_onnx)
    if calibration_pixels.dtype != np.uint8 or calibration_pixels.ndim < 2 or len(calibration_pixels) == 0:
        raise UserInputError(
            f"calibration needs a non-empty uint8 batch (N, ...), got {calibration_pixels.dtype} {calibration_pixels.shape}"
        )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet_root_logger():
            quantize_static(
                fp32_onnx,
                out_path,
                _PixelBatches(calibration_pixels, batch_size),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OP_TYPES),
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
    except Exception as exc:
        raise ExportError(
            f"static int8 (Q/DQ) quantisation of {fp32_onnx} failed: {type(exc).__name__}: {exc}"
        ) from exc
    return out_path


@dataclass(frozen=True)
class BuiltFile:
    """One model file of the variants: where it is, or why it could not be built, and how long it took."""

    model_file: str
    path: Path | None
    error: str | None
    seconds: float


def build_variant_files(
    fp32_onnx: Path,
    out_dir: Path,
    calibration_pixels: np.ndarray,
    variants: Sequence[CpuVariant] = CPU_VARIANTS,
) -> dict[str, BuiltFile]:
    """Write every model file the given variants need into `out_dir`.

    The fp32 file is copied as `model.onnx`; int8 files are quantised from it. A quantiser failure does not
    stop the others: its entry carries the error, so the table can say `failed` and why.

    Returns:
        model file name -> `BuiltFile`.
    """
    fp32_onnx = _check_onnx_file(fp32_onnx)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32_copy = out_dir / FP32_FILENAME
    if fp32_copy.resolve() != fp32_onnx.resolve():
        shutil.copyfile(fp32_onnx, fp32_copy)
        for external in fp32_onnx.parent.glob(f"{fp32_onnx.name}.data"):
            shutil.copyfile(external, out_dir / f"{FP32_FILENAME}.data")
    built = {FP32_FILENAME: BuiltFile(FP32_FILENAME, fp32_copy, None, 0.0)}
    builders = {
        INT8_DYNAMIC_FILENAME: lambda path: quantize_int8_dynamic(fp32_copy, path),
        INT8_QDQ_FILENAME: lambda path: quantize_int8_qdq(fp32_copy, path, calibration_pixels),
    }
    runner = StageRunner()
    for model_file in sorted({v.model_file for v in variants if v.runtime != "tensorrt"} - {FP32_FILENAME}):
        path = runner.run(Stage(f"build {model_file}", partial(builders[model_file], out_dir / model_file)))
        built[model_file] = BuiltFile(model_file, path, runner.last.reason, round(runner.last.seconds, 3))
    return built
