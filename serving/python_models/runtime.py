"""The pluggable CPU runtime behind the python-backend runner: one small session interface.

A runtime is a module exposing

    def open_session(model_path: Path, *, intra_op_threads: int, options: Mapping[str, str]) -> Session

where `Session` satisfies the `Session` protocol below. The runner model picks the module by the entry's
config parameter `runtime` (`RUNTIME_MODULES`); `options` are all of the entry's string parameters, so a
runtime may read its own keys (e.g. a precision hint). Adding a runtime = adding a module and a line here.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from attnserve.errors import ShapeError, UnknownModelError, UserInputError

DEFAULT_RUNTIME = "onnxruntime"
RUNTIME_MODULES: dict[str, str] = {
    "onnxruntime": "attnserve.serving.python_models.onnx_runner",
    "openvino": "attnserve.serving.python_models.openvino_runtime",
}
"""Config parameter `runtime` value -> module that implements `open_session`."""

# Config parameter keys of a runner entry (written by runtime_view, read by the runner model).
RUNTIME_PARAMETER = "runtime"
MODEL_FILE_PARAMETER = "model_file"
INTRA_OP_THREADS_PARAMETER = "intra_op_threads"
"""Threads per instance for one operator; absent or 0 = cores // instance_count."""
ALLOW_SPINNING_PARAMETER = "allow_spinning"
"""`"1"` / `"0"`: whether idle intra-op threads spin-wait (ONNX Runtime `session.intra_op.allow_spinning`)."""


@runtime_checkable
class Session(Protocol):
    """An inference session on one model file: named numpy arrays in, named numpy arrays out."""

    @property
    def input_names(self) -> tuple[str, ...]:
        """Names of the model's inputs, in model order."""
        ...

    @property
    def output_names(self) -> tuple[str, ...]:
        """Names of the model's outputs, in model order."""
        ...

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch: `{input name: array (B, ...)}` -> `{output name: array (B, ...)}` (every output)."""
        ...


def require_inputs(expected: tuple[str, ...], inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays of `expected`, in model order; a missing one raises `ShapeError` naming both sides."""
    missing = [name for name in expected if name not in inputs]
    if missing:
        raise ShapeError(f"missing inputs {missing}; the model expects {list(expected)}, got {sorted(inputs)}")
    return {name: inputs[name] for name in expected}


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def intra_op_threads_for(instance_count: int, cores: int | None = None) -> int:
    """Threads per session so that `instance_count` instances together use the cores once: cores // count."""
    if instance_count < 1:
        raise UserInputError(f"instance_count must be >= 1, got {instance_count}")
    return max(1, (cores if cores is not None else available_cores()) // instance_count)


def parse_allow_spinning(options: Mapping[str, str]) -> bool:
    """The `allow_spinning` parameter as a bool (absent = on, ONNX Runtime's default).

    Raises:
        UserInputError: the value is not one of 1/0/true/false.
    """
    value = str(options.get(ALLOW_SPINNING_PARAMETER, "1")).strip().lower()
    if value not in ("1", "0", "true", "false"):
        raise UserInputError(f"parameter {ALLOW_SPINNING_PARAMETER!r} must be 1/0/true/false, got {value!r}")
    return value in ("1", "true")


def threads_from_parameters(options: Mapping[str, str], instance_count: int) -> int:
    """Intra-op threads from the `intra_op_threads` parameter (0 or absent: cores // instance_count).

    Raises:
        UserInputError: the value is not a non-negative integer.
    """
    raw = str(options.get(INTRA_OP_THREADS_PARAMETER, "0")).strip() or "0"
    if not raw.isdigit():
        raise UserInputError(f"parameter {INTRA_OP_THREADS_PARAMETER!r} must be an integer >= 0, got {raw!r}")
    return int(raw) or intra_op_threads_for(instance_count)


def open_session(
    runtime: str, model_path: Path | str, *, intra_op_threads: int, options: Mapping[str, str] | None = None
) -> Session:
    """Open `model_path` with the runtime named `runtime` (a key of `RUNTIME_MODULES`).

    Raises:
        UnknownModelError: the runtime name is not known.
        UserInputError: the model file does not exist.
    """
    if runtime not in RUNTIME_MODULES:
        raise UnknownModelError(runtime, list(RUNTIME_MODULES))
    model_path = Path(model_path)
    if not model_path.is_file():
        raise UserInputError(f"model file for runtime {runtime!r} not found: expected {model_path}")
    module = importlib.import_module(RUNTIME_MODULES[runtime])
    return module.open_session(model_path, intra_op_threads=intra_op_threads, options=dict(options or {}))
