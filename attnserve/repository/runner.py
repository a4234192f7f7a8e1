"""Typed parameters of the embedded server's CPU runner, as they travel in an entry's `config.pbtxt`.

An ONNX entry's config carries, as string `parameters`, what the python-backend runner of the runtime view
needs: which runtime opens which file in which precision, with how many threads. The export writes them from
the ModelSpec (`cpu_runtime`, `cpu_precision`), the CPU-variant choice rewrites them for its pick,
the runtime view fills in the absolute file and the thread count, and the runner shim reads them back. One
typed object does all four, so a key is never spelled twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, NonNegativeInt, field_validator

from attnserve.repository.layout import ONNX_FILENAME
from attnserve.runtimes.session import DEFAULT_RUNTIME, PRECISION_OPTION, check_runtime_name
from attnserve.spec import ModelSpec, Precision

RUNTIME_PARAMETER = "runtime"
MODEL_FILE_PARAMETER = "model_file"
PRECISION_PARAMETER = PRECISION_OPTION
INTRA_OP_THREADS_PARAMETER = "intra_op_threads"
DEFAULT_PRECISION: Precision = "fp32"


class RunnerParameters(BaseModel):
    """The CPU runner's parameters of one entry: runtime, precision, model file and threads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    runtime: str = DEFAULT_RUNTIME
    """A key of `attnserve.runtimes.session.RUNTIME_MODULES` (`onnxruntime`, `openvino`)."""
    precision: Precision = DEFAULT_PRECISION
    model_file: str = ONNX_FILENAME
    """File in the version folder (relative), or the absolute file the runtime view points the runner at."""
    intra_op_threads: NonNegativeInt = 0
    """Threads per session; 0 = the runner divides the cores among the entry's instances."""

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, runtime: str) -> str:
        return check_runtime_name(runtime)  # raises UnknownRuntimeError (not a pydantic error) for a bad name

    @classmethod
    def for_spec(cls, spec: ModelSpec, model_file: str = ONNX_FILENAME) -> RunnerParameters:
        """What the spec asks the CPU runner for (`auto` means the default runtime / fp32)."""
        runtime = DEFAULT_RUNTIME if spec.cpu_runtime == "auto" else spec.cpu_runtime
        precision = DEFAULT_PRECISION if spec.cpu_precision == "auto" else spec.cpu_precision
        return cls(runtime=runtime, precision=precision, model_file=model_file)

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> RunnerParameters:
        """Read the runner's keys from an entry's string parameters (other keys are ignored; missing = default).

        Values may be plain strings or `ModelParameter`s (anything with a `string_value`).
        """
        values = {key: getattr(value, "string_value", value) for key, value in parameters.items()}
        fields = {
            "runtime": values.get(RUNTIME_PARAMETER),
            "precision": values.get(PRECISION_PARAMETER),
            "model_file": values.get(MODEL_FILE_PARAMETER),
            "intra_op_threads": values.get(INTRA_OP_THREADS_PARAMETER),
        }
        return cls.model_validate({key: value for key, value in fields.items() if value})

    def to_parameters(self) -> dict[str, str]:
        """As config `parameters` (strings); `intra_op_threads` only when set."""
        parameters = {
            RUNTIME_PARAMETER: self.runtime,
            PRECISION_PARAMETER: self.precision,
            MODEL_FILE_PARAMETER: self.model_file,
        }
        if self.intra_op_threads:
            parameters[INTRA_OP_THREADS_PARAMETER] = str(self.intra_op_threads)
        return parameters

    def session_options(self) -> dict[str, str]:
        """The options a runtime session reads (its precision)."""
        return {PRECISION_OPTION: self.precision}
