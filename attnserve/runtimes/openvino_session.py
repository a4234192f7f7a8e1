"""The OpenVINO session (runtime `openvino`): a second CPU runtime beside ONNX Runtime.

OpenVINO reads the same ONNX file ONNX Runtime reads. Precision comes from the session option `precision`
(the entry's runner parameter) and becomes OpenVINO's `INFERENCE_PRECISION_HINT`: `bf16` runs the matrix products in
bfloat16 (AVX-512 BF16 / AMX), `int8` comes from the Q/DQ nodes of a quantised ONNX file (its other
layers stay fp32). The module implements `open_session` (see `attnserve.runtimes.session`) and imports only
numpy and openvino at call time: it runs inside Triton's python-backend stub.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from attnserve.errors import UserInputError
from attnserve.runtimes.session import PRECISION_OPTION, require_inputs

logger = logging.getLogger(__name__)

DEFAULT_PRECISION = "fp32"
OPENVINO_PRECISION_HINTS: dict[str, str] = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
"""Our precision name -> OpenVINO `INFERENCE_PRECISION_HINT`. int8 lives in the model's Q/DQ nodes, so the
hint for its non-quantised layers is fp32."""
_CPU_CAPABILITY_FOR_HINT = {"bf16": "BF16", "f16": "FP16"}


def openvino_supports(precision: str) -> bool:
    """True when this CPU runs `precision` natively in OpenVINO (bf16 needs AVX-512 BF16 or AMX)."""
    import openvino as ov

    hint = OPENVINO_PRECISION_HINTS.get(precision)
    if hint is None:
        return False
    capability = _CPU_CAPABILITY_FOR_HINT.get(hint)
    return capability is None or capability in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVINOSession:
    """An OpenVINO CPU model behind the `Session` interface (named arrays in, named arrays out).

    One compiled model, one infer request, one stream (`PERFORMANCE_HINT=LATENCY`) using every thread it
    is given: Triton's python backend hands an instance one batch at a time; parallelism across requests
    comes from dynamic batching and `instance_count`, not from OpenVINO streams. A lock keeps concurrent
    in-process callers (benchmarks) from sharing the request.

    Args:
        model_path: the model file (ONNX, or OpenVINO IR).
        intra_op_threads: inference threads (cores // instances of this model).
        precision: `fp32`, `bf16`, `fp16` or `int8` (see `OPENVINO_PRECISION_HINTS`).

    Raises:
        UserInputError: the file does not exist, the precision is unknown, or this CPU cannot run it
            (OpenVINO would otherwise fall back to fp32 silently, and a `bf16` entry must run in bf16).
    """

    def __init__(self, model_path: Path | str, *, intra_op_threads: int, precision: str = DEFAULT_PRECISION) -> None:
        import openvino as ov

        model_path = Path(model_path)
        if not model_path.is_file():
            raise UserInputError(f"OpenVINO model file not found: expected {model_path}")
        if precision not in OPENVINO_PRECISION_HINTS:
            raise UserInputError(f"precision must be one of {sorted(OPENVINO_PRECISION_HINTS)}, got {precision!r}")
        if not openvino_supports(precision):
            raise UserInputError(f"this CPU cannot run OpenVINO in {precision}: no native support")
        if intra_op_threads < 1:
            raise UserInputError(f"intra_op_threads must be >= 1, got {intra_op_threads}")
        self.model_path = model_path
        self.precision = precision
        self.intra_op_threads = intra_op_threads
        config = {
            "INFERENCE_PRECISION_HINT": OPENVINO_PRECISION_HINTS[precision],
            "INFERENCE_NUM_THREADS": intra_op_threads,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        core = ov.Core()
        self._compiled = core.compile_model(core.read_model(str(model_path)), "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()
        self._input_names = tuple(port.get_any_name() for port in self._compiled.inputs)
        self._output_names = tuple(port.get_any_name() for port in self._compiled.outputs)
        self.execution_precision: str = self._compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        """The precision OpenVINO compiled for (`bf16`, `f32`, ...), read back, not assumed."""
        logger.info(
            "OpenVINO compiled %s: precision %s (runs %s), %d threads",
            model_path.name,
            precision,
            self.execution_precision,
            intra_op_threads,
        )

    @property
    def input_names(self) -> tuple[str, ...]:
        return self._input_names

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._output_names

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch: `{input name: (B, ...)}` -> `{output name: (B, ...)}`, arrays the caller owns."""
        arrays = require_inputs(self._input_names, inputs)
        with self._lock:
            results = self._request.infer({name: np.ascontiguousarray(array) for name, array in arrays.items()})
            # copy: the request's output buffers are reused by the next call
            by_name = {port.get_any_name(): np.array(value, copy=True) for port, value in results.items()}
        return {name: by_name[name] for name in self._output_names}


def open_session(model_path: Path, *, intra_op_threads: int, options: Mapping[str, str]) -> OpenVINOSession:
    """The `runtime` module entry point (see `attnserve.runtimes.session`).

    `options` are the entry's config parameters; this runtime reads `precision` (default `fp32`).
    """
    precision = options.get(PRECISION_OPTION) or DEFAULT_PRECISION
    return OpenVINOSession(model_path, intra_op_threads=intra_op_threads, precision=precision)
