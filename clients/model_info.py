"""What a client knows about a served model, read from the server's metadata and config (never hard-coded).

`ModelInfo.from_server(metadata, config)` accepts the JSON forms of both protocols (gRPC's JSON writes int64
as strings; HTTP writes numbers). `validate_inputs` checks names, dtypes and shapes before anything is sent,
so a bad request fails locally with a message that says what was expected and what arrived.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attnserve.dtypes import TRITON_TO_NUMPY
from attnserve.errors import DTypeError, ShapeError, UserInputError
from attnserve.preprocessing import Preprocessing
from attnserve.spec import SPEC_PARAMETER, spec_sections

_NUMPY_DTYPES = TRITON_TO_NUMPY  # Triton datatype -> numpy dtype (`attnserve.dtypes`, the one table)


@dataclass(frozen=True)
class TensorInfo:
    """One input or output: its name, Triton datatype and shape (batch dim included as -1 when batched)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    labelled: bool = False
    """True when the config gives the output a `label_filename` (the classification extension works)."""

    @property
    def numpy_dtype(self) -> Any:
        return _NUMPY_DTYPES[self.datatype]


@dataclass(frozen=True)
class ModelInfo:
    """A served model as the server describes it."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    max_batch_size: int
    layout: str | None
    """`NCHW` / `NTCHW` for pixel inputs (from the config's `format` or the input rank), None for others."""
    dynamic_batching: bool
    config: dict[str, Any] = field(repr=False, default_factory=dict)

    @classmethod
    def from_server(cls, metadata: Mapping[str, Any], config: Mapping[str, Any]) -> ModelInfo:
        """Build from `get_model_metadata` + `get_model_config` JSON (either protocol)."""
        config = dict(config.get("config", config))  # gRPC wraps the config in {"config": ...}
        max_batch_size = int(config.get("max_batch_size", 0) or 0)
        labelled = {str(o["name"]) for o in config.get("output", []) if o.get("label_filename")}
        formats = {str(i["name"]): str(i.get("format", "FORMAT_NONE")) for i in config.get("input", [])}
        inputs = tuple(_tensor(t) for t in metadata.get("inputs", []))
        outputs = tuple(_tensor(t, labelled=str(t["name"]) in labelled) for t in metadata.get("outputs", []))
        layout = None
        if len(inputs) == 1 and inputs[0].datatype != "BYTES":
            per_sample_rank = len(inputs[0].shape) - (1 if max_batch_size > 0 else 0)
            fmt = formats.get(inputs[0].name, "FORMAT_NONE")
            if fmt in ("FORMAT_NCHW", "FORMAT_NHWC"):
                layout = fmt.removeprefix("FORMAT_")
            elif per_sample_rank == 3:
                layout = "NCHW"
            elif per_sample_rank == 4:
                layout = "NTCHW"
        return cls(
            name=str(metadata["name"]),
            versions=tuple(str(v) for v in metadata.get("versions", [])),
            platform=str(metadata.get("platform", "")),
            inputs=inputs,
            outputs=outputs,
            max_batch_size=max_batch_size,
            layout=layout,
            dynamic_batching="dynamic_batching" in config,
            config=config,
        )

    # lookups -------------------------------------------------------------------------------------
    def input(self, name: str | None = None) -> TensorInfo:
        """The input called `name`, or the only input when `name` is None."""
        return _pick(self.inputs, name, self.name, "input")

    def output(self, name: str | None = None) -> TensorInfo:
        """The output called `name`, or the only (first labelled, then first) output when `name` is None."""
        if name is None:
            labelled = [o for o in self.outputs if o.labelled]
            if labelled:
                return labelled[0]
            return self.outputs[0]
        return _pick(self.outputs, name, self.name, "output")

    def sample_shape(self, tensor: TensorInfo) -> tuple[int, ...]:
        """Per-sample shape (no batch dim) of `tensor`."""
        return tensor.shape[1:] if self.max_batch_size > 0 else tensor.shape

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the pixel input."""
        shape = self.sample_shape(self.input())
        if self.layout == "NHWC":
            return shape[0], shape[1]
        return shape[-2], shape[-1]

    @property
    def channels(self) -> int:
        shape = self.sample_shape(self.input())
        return {"NCHW": shape[0], "NHWC": shape[-1], "NTCHW": shape[1] if len(shape) == 4 else 0}.get(
            self.layout or "", 0
        )

    @property
    def spec(self) -> dict[str, Any]:
        """The attnserve `ModelSpec` JSON of the entry (config parameter `attnserve_spec`) in sections (a server
        of the flat first format is read the same way), {} when there is none."""
        parameters = self.config.get("parameters") or {}
        raw = parameters.get(SPEC_PARAMETER) or {}
        text = raw.get("string_value", raw.get("stringValue", "")) if isinstance(raw, Mapping) else ""
        try:
            return spec_sections(json.loads(text)) if text else {}
        except (ValueError, TypeError, AttributeError):
            return {}

    @property
    def spec_io(self) -> dict[str, Any]:
        """The `io` section of `spec` (labels, preprocessing, ...), {} when there is none."""
        io = self.spec.get("io")
        return dict(io) if isinstance(io, Mapping) else {}

    @property
    def preprocessing(self) -> Preprocessing:
        """The model's declared image/frame preprocessing (defaults for entries that declare none)."""
        return Preprocessing.from_mapping(self.spec_io.get("preprocessing"))

    @property
    def trained(self) -> bool | None:
        """False when the entry serves untrained (random) weights, True when trained, None when unknown."""
        trained = self.spec.get("trained")
        return None if trained is None else bool(trained)

    @property
    def frames(self) -> int | None:
        return self.sample_shape(self.input())[0] if self.layout == "NTCHW" else None

    # validation ----------------------------------------------------------------------------------
    def validate_inputs(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Check names, dtypes and shapes of `inputs` against the metadata.

        Raises:
            UserInputError: an input is missing or unknown.
            DTypeError: an array's dtype differs from the model's.
            ShapeError: an array's shape (or batch size) does not fit the model.
        """
        expected_names = {t.name for t in self.inputs}
        if set(inputs) != expected_names:
            raise UserInputError(f"model {self.name!r} takes inputs {sorted(expected_names)}, got {sorted(inputs)}")
        for tensor in self.inputs:
            array = inputs[tensor.name]
            if not isinstance(array, np.ndarray):
                raise DTypeError(
                    f"model {self.name!r} input {tensor.name!r}: expected a numpy array, got {type(array).__name__}"
                )
            if tensor.datatype == "BYTES":
                if array.dtype != np.object_ and array.dtype.kind not in ("S", "U"):
                    raise DTypeError(
                        f"model {self.name!r} input {tensor.name!r}: expected BYTES (object/bytes array), "
                        f"got {array.dtype}"
                    )
            elif array.dtype != np.dtype(tensor.numpy_dtype):
                raise DTypeError(
                    f"model {self.name!r} input {tensor.name!r}: expected dtype {np.dtype(tensor.numpy_dtype)} "
                    f"({tensor.datatype}), got {array.dtype}"
                )
            _check_shape(self, tensor, array.shape)


def _check_shape(info: ModelInfo, tensor: TensorInfo, shape: tuple[int, ...]) -> None:
    expected = tensor.shape
    shown = (
        "["
        + ", ".join(
            "N" if (i == 0 and info.max_batch_size > 0) else ("?" if d < 0 else str(d)) for i, d in enumerate(expected)
        )
        + "]"
    )
    prefix = f"model {info.name!r} input {tensor.name!r}"
    if len(shape) != len(expected):
        raise ShapeError(f"{prefix}: expected shape {shown} (rank {len(expected)}), got {list(shape)}")
    dims = list(zip(shape, expected))
    if info.max_batch_size > 0:
        batch = shape[0]
        if not 1 <= batch <= info.max_batch_size:
            raise ShapeError(
                f"{prefix}: batch size must be 1..{info.max_batch_size} (max_batch_size), got {batch} "
                f"(shape {list(shape)})"
            )
        dims = dims[1:]
    if any(want >= 0 and got != want for got, want in dims):
        raise ShapeError(f"{prefix}: expected shape {shown}, got {list(shape)}")


def _tensor(raw: Mapping[str, Any], labelled: bool = False) -> TensorInfo:
    return TensorInfo(
        name=str(raw["name"]),
        datatype=str(raw["datatype"]),
        shape=tuple(int(d) for d in raw.get("shape", [])),
        labelled=labelled,
    )


def _pick(tensors: tuple[TensorInfo, ...], name: str | None, model: str, what: str) -> TensorInfo:
    if name is None:
        if len(tensors) != 1:
            raise UserInputError(
                f"model {model!r} has {len(tensors)} {what}s {[t.name for t in tensors]}; name the one you want"
            )
        return tensors[0]
    for tensor in tensors:
        if tensor.name == name:
            return tensor
    raise UserInputError(f"model {model!r} has no {what} {name!r}; its {what}s: {[t.name for t in tensors]}")
