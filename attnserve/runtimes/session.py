"""The pluggable CPU runtimes: one small session interface, torch-free and Triton-free.

Both the export (the CPU-variant choice times the very sessions the server runs) and the serving side (the
python-backend runner) open models through `open_session`; neither imports the other. A runtime is a module
exposing

    def open_session(model_path: Path, *, intra_op_threads: int, options: Mapping[str, str]) -> Session

where `Session` satisfies the `Session` protocol below. The runner picks the module by the entry's runner
parameter `runtime` (`RUNTIMES`); `options` are the entry's string parameters, so a runtime may read its own
keys (`PRECISION_OPTION`). Adding a runtime = adding a module, an opener below and a line in `RUNTIMES`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from attnserve.errors import ShapeError, UnknownRuntimeError, UserInputError

DEFAULT_RUNTIME = "onnxruntime"
PRECISION_OPTION = "precision"
"""Session option naming the precision to run in (`fp32` when absent); runtimes without a choice ignore it."""


def _open_onnxruntime(model_path: Path, *, intra_op_threads: int, options: Mapping[str, str]) -> Session:
    from attnserve.runtimes.onnxruntime_session import open_session as open_onnxruntime  # onnxruntime: when used

    return open_onnxruntime(model_path, intra_op_threads=intra_op_threads, options=options)


def _open_openvino(model_path: Path, *, intra_op_threads: int, options: Mapping[str, str]) -> Session:
    from attnserve.runtimes.openvino_session import open_session as open_openvino  # the openvino extra: when used

    return open_openvino(model_path, intra_op_threads=intra_op_threads, options=options)


RUNTIMES: dict[str, Callable[..., Session]] = {"onnxruntime": _open_onnxruntime, "openvino": _open_openvino}
"""Runtime name -> its `open_session`; each imports its library only when a model is opened with it."""


def check_runtime_name(runtime: str) -> str:
    """`runtime` when it names a known runtime; else `UnknownRuntimeError` listing the known ones."""
    if runtime not in RUNTIMES:
        raise UnknownRuntimeError(runtime, list(RUNTIMES))
    return runtime


ALLOW_SPINNING_OPTION = "allow_spinning"
"""Session option `"1"` / `"0"`: whether idle intra-op threads spin-wait (ONNX Runtime
`session.intra_op.allow_spinning`); absent = on, ONNX Runtime's default."""


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

    @property
    def input_dims(self) -> dict[str, tuple[int, ...]]:
        """Per-sample dims of each input as the model declares them (no batch dim; -1 = variable)."""
        ...

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch: `{input name: array (B, ...)}` -> `{output name: array (B, ...)}` (every output)."""
        ...


class NamedIO:
    """The `Session` properties every runtime shares: names and per-sample dims, set once by the subclass."""

    _input_names: tuple[str, ...]
    _output_names: tuple[str, ...]
    _input_dims: dict[str, tuple[int, ...]]

    @property
    def input_names(self) -> tuple[str, ...]:
        return self._input_names

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._output_names

    @property
    def input_dims(self) -> dict[str, tuple[int, ...]]:
        return dict(self._input_dims)


def require_inputs(expected: tuple[str, ...], inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays of `expected`, in model order; a missing one raises `ShapeError` naming both sides."""
    missing = [name for name in expected if name not in inputs]
    if missing:
        raise ShapeError(f"missing inputs {missing}; the model expects {list(expected)}, got {sorted(inputs)}")
    return {name: inputs[name] for name in expected}


def per_sample_dims(shape: Sequence[object]) -> tuple[int, ...]:
    """A model input's declared shape without its batch dim; symbolic or unknown dims become -1."""
    return tuple(d if isinstance(d, int) and d > 0 else -1 for d in list(shape)[1:])


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
    value = str(options.get(ALLOW_SPINNING_OPTION, "1")).strip().lower()
    if value not in ("1", "0", "true", "false"):
        raise UserInputError(f"parameter {ALLOW_SPINNING_OPTION!r} must be 1/0/true/false, got {value!r}")
    return value in ("1", "true")


def open_session(
    runtime: str, model_path: Path | str, *, intra_op_threads: int, options: Mapping[str, str] | None = None
) -> Session:
    """Open `model_path` with the runtime named `runtime` (a key of `RUNTIMES`).

    Raises:
        UnknownRuntimeError: the runtime name is not known.
        UserInputError: the model file does not exist.
    """
    check_runtime_name(runtime)
    model_path = Path(model_path)
    if not model_path.is_file():
        raise UserInputError(f"model file for runtime {runtime!r} not found: expected {model_path}")
    return RUNTIMES[runtime](model_path, intra_op_threads=intra_op_threads, options=dict(options or {}))
