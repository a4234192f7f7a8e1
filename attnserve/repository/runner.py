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

from pydantic import BaseModel, ConfigDict, NonNegativeInt, ValidationError, field_validator

from attnserve.errors import UserInputError
from attnserve.repository.layout import ONNX_FILENAME
from attnserve.runtimes.session import (
    ALLOW_SPINNING_OPTION,
    DEFAULT_RUNTIME,
    PRECISION_OPTION,
    check_runtime_name,
    parse_allow_spinning,
)
from attnserve.spec import ModelSpec, Precision

RUNTIME_PARAMETER = "runtime"
MODEL_FILE_PARAMETER = "model_file"
PRECISION_PARAMETER = PRECISION_OPTION
INTRA_OP_THREADS_PARAMETER = "intra_op_threads"
"""Threads per instance for one operator; 0 = cores // instance_count (resolved by the runtime view)."""
ALLOW_SPINNING_PARAMETER = ALLOW_SPINNING_OPTION
DEFAULT_PRECISION: Precision = "fp32"


class RunnerParameters(BaseModel):
    """The CPU runner's parameters of one entry: runtime, precision, model file and threads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    runtime: str = DEFAULT_RUNTIME
    """A key of `attnserve.runtimes.session.RUNTIMES` (`onnxruntime`, `openvino`)."""
    precision: Precision = DEFAULT_PRECISION
    model_file: str = ONNX_FILENAME
    """File in the version folder (relative), or the absolute file the runtime view points the runner at."""
    intra_op_threads: NonNegativeInt = 0
    """Threads per session; 0 = the runner divides the cores among the entry's instances."""
    allow_spinning: bool = True
    """Whether idle intra-op threads spin-wait (ONNX Runtime's default: on)."""

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, runtime: str) -> str:
        return check_runtime_name(runtime)  # raises UnknownRuntimeError (not a pydantic error) for a bad name

    @classmethod
    def for_spec(cls, spec: ModelSpec, model_file: str = ONNX_FILENAME) -> RunnerParameters:
        """What the spec asks the CPU runner for (`auto` means the default runtime / fp32)."""
        runtime = DEFAULT_RUNTIME if spec.runtime.cpu_runtime == "auto" else spec.runtime.cpu_runtime
        precision = DEFAULT_PRECISION if spec.runtime.cpu_precision == "auto" else spec.runtime.cpu_precision
        return cls(
            runtime=runtime,
            precision=precision,
            model_file=model_file,
            intra_op_threads=spec.runtime.intra_op_threads,
            allow_spinning=spec.runtime.allow_spinning,
        )

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> RunnerParameters:
        """Read the runner's keys from an entry's string parameters (other keys are ignored; missing = default).

        Values may be plain strings or `ModelParameter`s (anything with a `string_value`).

        Raises:
            UnknownRuntimeError: `runtime` names no runtime.
            UserInputError: another value is malformed (the message names it).
        """
        values = {key: getattr(value, "string_value", value) for key, value in parameters.items()}
        fields = {
            "runtime": values.get(RUNTIME_PARAMETER),
            "precision": values.get(PRECISION_PARAMETER),
            "model_file": values.get(MODEL_FILE_PARAMETER),
            "intra_op_threads": (values.get(INTRA_OP_THREADS_PARAMETER) or "").strip(),
            "allow_spinning": parse_allow_spinning(values),
        }
        try:
            return cls.model_validate(
                {key: value for key, value in fields.items() if value != "" and value is not None}
            )
        except ValidationError as exc:
            raise UserInputError(f"CPU runner parameters {values} are malformed: {exc}") from exc

    def to_parameters(self) -> dict[str, str]:
        """As config `parameters` (strings)."""
        return {
            RUNTIME_PARAMETER: self.runtime,
            PRECISION_PARAMETER: self.precision,
            MODEL_FILE_PARAMETER: self.model_file,
            INTRA_OP_THREADS_PARAMETER: str(self.intra_op_threads),
            ALLOW_SPINNING_PARAMETER: "1" if self.allow_spinning else "0",
        }

    def session_options(self) -> dict[str, str]:
        """The options a runtime session reads (precision, spinning)."""
        return {PRECISION_OPTION: self.precision, ALLOW_SPINNING_OPTION: "1" if self.allow_spinning else "0"}
