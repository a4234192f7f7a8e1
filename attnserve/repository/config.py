"""Typed Triton model configurations, validated when built and rendered to `config.pbtxt` text.

The objects mirror the fields of Triton's `ModelConfig` protobuf (`model_config.proto`, Triton 2.51) that
this project uses: tensors, dynamic batching with a bounded queue, instance groups, parameters,
ensemble scheduling, version policy and the response cache. Rendering is done by one small protobuf
text-format writer (`render_pbtxt`), never by string templates; reading (`read_config`) parses the text with
Triton's own protobuf classes (`tritonclient.grpc.model_config_pb2`) and validates it back into the same
typed objects, so a config is written and read as one type.

Every package (export: model entries; serving: python-backend runners, pre-processing, ensembles) builds
its configs from these objects, so every `config.pbtxt` in the repository comes from one writer:

    config = ModelConfig(name="vit_preprocess", backend="python", max_batch_size=16,
                         input=[TensorConfig(name="image", data_type="TYPE_UINT8", dims=(-1,))],
                         output=[...], parameters={"mean": "0.5,0.5,0.5"})
    text = config.to_pbtxt()
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from attnserve.errors import UserInputError
from attnserve.repository.layout import CONFIG_FILENAME
from attnserve.spec import SPEC_PARAMETER

DataType = Literal[
    "TYPE_BOOL",
    "TYPE_UINT8",
    "TYPE_UINT16",
    "TYPE_UINT32",
    "TYPE_UINT64",
    "TYPE_INT8",
    "TYPE_INT16",
    "TYPE_INT32",
    "TYPE_INT64",
    "TYPE_FP16",
    "TYPE_FP32",
    "TYPE_FP64",
    "TYPE_STRING",
    "TYPE_BF16",
]
TensorFormat = Literal["FORMAT_NONE", "FORMAT_NHWC", "FORMAT_NCHW"]
InstanceKind = Literal["KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"]
TimeoutAction = Literal["REJECT", "DELAY"]
Platform = Literal["onnxruntime_onnx", "tensorrt_plan", "pytorch_libtorch", "tensorflow_savedmodel", "ensemble"]


class _ProtoMessage(BaseModel):
    """Base of the config objects: frozen, strict about unknown fields, rendered in field order.

    `_enum_fields` are rendered unquoted (protobuf enums); `_map_fields` are protobuf maps
    (`map<string, string>`, or `map<string, ModelParameters>` for `parameters`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    _enum_fields: ClassVar[frozenset[str]] = frozenset()
    _map_fields: ClassVar[frozenset[str]] = frozenset()

    def proto_items(self) -> Iterator[tuple[str, Any]]:
        """Yield `(proto field name, value)` for every field that is set (None/empty are left out)."""
        for field_name in type(self).model_fields:
            value = getattr(self, field_name)
            if value is None or (isinstance(value, (list, tuple, dict)) and len(value) == 0):
                continue
            yield field_name, value


# ---------------------------------------------------------------------------------------------------------
# protobuf text format
# ---------------------------------------------------------------------------------------------------------
def _quote(text: str) -> str:
    """A protobuf text-format string literal (C escapes, UTF-8 passed through)."""
    escaped = (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )
    return f'"{escaped}"'


def _scalar(value: Any, *, enum: bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return value if enum else _quote(value)
    raise TypeError(f"cannot render {type(value).__name__} {value!r} as a protobuf scalar")


def _render_message(message: _ProtoMessage, indent: int) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    for key, value in message.proto_items():
        enum = key in message._enum_fields
        if key in message._map_fields:
            for map_key, map_value in value.items():
                if isinstance(map_value, _ProtoMessage):
                    lines.append(f"{pad}{key} {{")
                    lines.append(f"{pad}  key: {_quote(map_key)}")
                    lines.append(f"{pad}  value {{")
                    lines.extend(_render_message(map_value, indent + 2))
                    lines.append(f"{pad}  }}")
                    lines.append(f"{pad}}}")
                else:
                    lines.append(f"{pad}{key} {{ key: {_quote(map_key)} value: {_quote(str(map_value))} }}")
        elif isinstance(value, _ProtoMessage):
            lines.append(f"{pad}{key} {{")
            lines.extend(_render_message(value, indent + 1))
            lines.append(f"{pad}}}")
        elif isinstance(value, (list, tuple)) and isinstance(value[0], _ProtoMessage):
            lines.append(f"{pad}{key} [")
            for position, item in enumerate(value):
                lines.append(f"{pad}  {{")
                lines.extend(_render_message(item, indent + 2))
                lines.append(f"{pad}  }}{',' if position < len(value) - 1 else ''}")
            lines.append(f"{pad}]")
        elif isinstance(value, (list, tuple)):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(item, enum=enum) for item in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value, enum=enum)}")
    return lines


def render_pbtxt(message: _ProtoMessage) -> str:
    """Render a config object as protobuf text format (what Triton reads from `config.pbtxt`)."""
    return "\n".join(_render_message(message, 0)) + "\n"


# ---------------------------------------------------------------------------------------------------------
# config objects
# ---------------------------------------------------------------------------------------------------------
def _check_dims(dims: tuple[int, ...]) -> tuple[int, ...]:
    bad = [d for d in dims if d == 0 or d < -1]
    if bad:
        raise ValueError(f"dims must be positive or -1 (variable), got {list(dims)}")
    return dims


class Reshape(_ProtoMessage):
    """`reshape { shape: [...] }`: the shape the model sees, when it differs from `dims`."""

    shape: tuple[int, ...]


class TensorConfig(_ProtoMessage):
    """One `input` or `output` entry. `dims` exclude the batch dimension when `max_batch_size > 0`."""

    _enum_fields = frozenset({"data_type", "format"})

    name: str = Field(min_length=1)
    data_type: DataType
    format: TensorFormat | None = None
    """Inputs only: the image layout (lets Triton's clients and perf tools know it is an image)."""
    dims: tuple[int, ...]
    reshape: Reshape | None = None
    label_filename: str | None = None
    """Outputs only: a file in the model folder with one label per class (classification extension)."""
    optional: bool | None = None
    """Inputs only: the input may be left out of a request."""

    @field_validator("dims")
    @classmethod
    def _valid_dims(cls, dims: tuple[int, ...]) -> tuple[int, ...]:
        return _check_dims(dims)


class QueuePolicy(_ProtoMessage):
    """`default_queue_policy`: bound the queue so overload is rejected at once, not served late."""

    _enum_fields = frozenset({"timeout_action"})

    timeout_action: TimeoutAction = "REJECT"
    default_timeout_microseconds: NonNegativeInt = 0
    allow_timeout_override: bool | None = None
    max_queue_size: NonNegativeInt = 0
    """0 means unbounded."""


class DynamicBatching(_ProtoMessage):
    """`dynamic_batching { ... }`: Triton merges concurrent requests into one model execution."""

    preferred_batch_size: tuple[PositiveInt, ...] = ()
    max_queue_delay_microseconds: NonNegativeInt = 0
    preserve_ordering: bool | None = None
    default_queue_policy: QueuePolicy | None = None


class InstanceGroup(_ProtoMessage):
    """`instance_group [ { count, kind } ]`; leave `kind` unset so Triton picks GPU when one exists."""

    _enum_fields = frozenset({"kind"})

    name: str | None = None
    count: PositiveInt = 1
    kind: InstanceKind | None = None
    gpus: tuple[NonNegativeInt, ...] = ()


class ModelParameter(_ProtoMessage):
    """`ModelParameters { string_value }`: the value type of the `parameters` map."""

    string_value: str


def python_model_config(args: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The config a Python-backend model's `initialize(args)` receives (Triton's JSON form of `config.pbtxt`) and
    its `parameters` as plain strings."""
    config: dict[str, Any] = json.loads(args["model_config"])
    parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
    return config, parameters


class EnsembleStep(_ProtoMessage):
    """One step of an ensemble: maps the composing model's tensor names to ensemble tensor names."""

    _map_fields = frozenset({"input_map", "output_map"})

    model_name: str = Field(min_length=1)
    model_version: int = -1
    input_map: dict[str, str]
    """composing model's input name -> ensemble tensor name"""
    output_map: dict[str, str]
    """composing model's output name -> ensemble tensor name"""


class EnsembleScheduling(_ProtoMessage):
    """`ensemble_scheduling { step [ ... ] }`."""

    step: tuple[EnsembleStep, ...] = Field(min_length=1)


class VersionPolicyLatest(_ProtoMessage):
    num_versions: PositiveInt = 1


class VersionPolicySpecific(_ProtoMessage):
    versions: tuple[PositiveInt, ...] = Field(min_length=1)


class VersionPolicy(_ProtoMessage):
    """`version_policy`: exactly one of `latest`, `all`, `specific` (default: Triton serves the latest)."""

    latest: VersionPolicyLatest | None = None
    all: Literal[True] | None = None
    specific: VersionPolicySpecific | None = None

    def proto_items(self) -> Iterator[tuple[str, Any]]:
        if self.all:
            yield "all", _EmptyMessage()
        else:
            yield from super().proto_items()

    @model_validator(mode="after")
    def _exactly_one(self) -> VersionPolicy:
        chosen = [n for n in ("latest", "all", "specific") if getattr(self, n) is not None]
        if len(chosen) != 1:
            raise ValueError(f"version_policy needs exactly one of latest/all/specific, got {chosen or 'none'}")
        return self


class _EmptyMessage(_ProtoMessage):
    """An empty message (`all { }`)."""


class ResponseCache(_ProtoMessage):
    enable: bool = True


class ModelConfig(_ProtoMessage):
    """A Triton `ModelConfig`, validated when built; `to_pbtxt()` gives the `config.pbtxt` text."""

    _map_fields = frozenset({"parameters"})

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    platform: Platform | None = None
    backend: str | None = None
    version_policy: VersionPolicy | None = None
    max_batch_size: NonNegativeInt = 0
    """0: the model has no batch dimension; >0: every tensor gets a leading batch dim up to this size."""
    input: tuple[TensorConfig, ...] = Field(min_length=1)
    output: tuple[TensorConfig, ...] = Field(min_length=1)
    dynamic_batching: DynamicBatching | None = None
    ensemble_scheduling: EnsembleScheduling | None = None
    instance_group: tuple[InstanceGroup, ...] = ()
    default_model_filename: str | None = None
    parameters: dict[str, ModelParameter] = Field(default_factory=dict)
    response_cache: ResponseCache | None = None

    @field_validator("parameters", mode="before")
    @classmethod
    def _wrap_parameter_strings(cls, value: Any) -> Any:
        # Accept plain strings: {"key": "value"} -> {"key": ModelParameter(string_value="value")}.
        if isinstance(value, Mapping):
            return {k: ModelParameter(string_value=v) if isinstance(v, str) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelConfig:
        if (self.platform is None) == (self.backend is None):
            raise ValueError(
                f"model {self.name!r}: set exactly one of platform or backend, got platform={self.platform!r}, "
                f"backend={self.backend!r}"
            )
        if (self.platform == "ensemble") != (self.ensemble_scheduling is not None):
            raise ValueError(f"model {self.name!r}: ensemble_scheduling goes with platform 'ensemble' and only there")
        if self.platform == "ensemble" and (self.instance_group or self.dynamic_batching):
            raise ValueError(f"model {self.name!r}: an ensemble takes neither instance_group nor dynamic_batching")
        names = [t.name for t in (*self.input, *self.output)]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model {self.name!r}: tensor names must be unique, repeated: {duplicates}")
        for tensor in self.input:
            if tensor.label_filename is not None:
                raise ValueError(f"model {self.name!r}: label_filename belongs on an output, not input {tensor.name!r}")
        for tensor in self.output:
            if tensor.format is not None or tensor.optional is not None:
                raise ValueError(f"model {self.name!r}: format/optional belong on inputs, not output {tensor.name!r}")
        if self.dynamic_batching is not None:
            if self.max_batch_size == 0:
                raise ValueError(f"model {self.name!r}: dynamic_batching needs max_batch_size > 0")
            too_big = [b for b in self.dynamic_batching.preferred_batch_size if b > self.max_batch_size]
            if too_big:
                raise ValueError(
                    f"model {self.name!r}: preferred_batch_size {too_big} exceed max_batch_size {self.max_batch_size}"
                )
        return self

    def to_pbtxt(self) -> str:
        """The `config.pbtxt` text of this configuration."""
        return render_pbtxt(self)

    def write(self, model_dir: Path) -> Path:
        """Write `model_dir/config.pbtxt` (creating the folder) and return its path."""
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        config_path = model_dir / CONFIG_FILENAME
        config_path.write_text(self.to_pbtxt())
        return config_path

    @classmethod
    def from_pbtxt(cls, text: str, *, default_name: str | None = None) -> ModelConfig:
        """Parse `config.pbtxt` text (Triton's protobuf parser) into a validated `ModelConfig`.

        Args:
            text: the protobuf text.
            default_name: the name when the text has none (Triton uses the folder name).

        Raises:
            UserInputError: the text is not a Triton config, or uses fields this typed model does not hold.
        """
        from google.protobuf import json_format, text_format

        try:
            message = parse_pbtxt(text)
        except text_format.ParseError as exc:
            raise UserInputError(f"not a valid Triton model config: {exc}") from exc
        fields = json_format.MessageToDict(message, preserving_proto_field_name=True)
        if not fields.get("name") and default_name:
            fields["name"] = default_name
        policy = fields.get("version_policy", {})
        if "all" in policy:  # `all { }` is an empty message; the typed field is `all: true`
            policy["all"] = True
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise UserInputError(f"Triton model config {fields.get('name')!r} does not validate: {exc}") from exc

    def spec_json(self) -> str | None:
        """The `attnserve_spec` parameter (the ModelSpec JSON) when present."""
        parameter = self.parameters.get(SPEC_PARAMETER)
        return parameter.string_value if parameter else None


def parse_pbtxt(text: str) -> Any:
    """Parse `config.pbtxt` text into Triton's own `ModelConfig` protobuf (raises on any unknown field).

    Returns:
        A `tritonclient.grpc.model_config_pb2.ModelConfig` message.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def read_config(model_dir: Path) -> ModelConfig:
    """The typed config of the entry in `model_dir` (`model_dir/config.pbtxt`; name defaults to the folder).

    Raises:
        UserInputError: the file is missing or is not a valid model config.
    """
    config_path = Path(model_dir) / CONFIG_FILENAME
    if not config_path.is_file():
        raise UserInputError(f"expected a Triton config at {config_path}; not found")
    try:
        return ModelConfig.from_pbtxt(config_path.read_text(), default_name=Path(model_dir).name)
    except UserInputError as exc:
        raise UserInputError(f"{config_path}: {exc}") from exc


def spec_json_from_pbtxt(text: str) -> dict[str, Any] | None:
    """Read the ModelSpec dict stored under `parameters { key: "attnserve_spec" }`, or None."""
    spec_json = ModelConfig.from_pbtxt(text, default_name="unnamed").spec_json()
    return None if spec_json is None else json.loads(spec_json)
