"""The ModelSpec: one frozen, typed description of a deployable model.

Everything downstream is derived from it: the model's input normalisation, ONNX dynamic axes, the
TensorRT optimisation profile (min 1, opt = largest preferred batch, max = `serving.max_batch_size`),
`config.pbtxt`, `labels.txt`, and the repository entry names. Training writes it to
`runs/NAME/spec.json`; export reads it back. It imports neither torch nor Triton, so every package
(clients included) may use it.

Sections: identity (`name`, `arch`, `arch_args`, `kind`, `trained`) at the top; `io` (what goes in and comes
out), `serving` (Triton's batching, queue and instances), `runtime` (the CPU runner's knobs and the accuracy
budgets of its variants), `export` (opset, tolerances, precisions). One section changes with
`spec.with_serving(...)`, `with_runtime(...)`, `with_export(...)`, `with_io(...)`; the top level with
`spec.replace(...)`; every change is validated. `spec.json` files of the first, flat format still load.

Conventions recorded here once:
- Inputs are **uint8 pixels**; the model normalises inside `forward` with `io.mean`/`io.std`, which are in
  the 0..1 scale (applied to `pixels / 255`).
- Images and frames become pixels the way `io.preprocessing` says (default: squash the whole image to H x W),
  the same in training, in the client and in the served pipeline (`attnserve.preprocessing`).
- Image layout is NCHW: `io.input_shape = (C, H, W)`. Video layout is NTCHW: `io.input_shape = (T, C, H, W)`.
  The batch dimension is never part of `input_shape`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple, Self

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from attnserve.preprocessing import Preprocessing

INPUT_NAME = "pixels"
"""Name of the uint8 pixel input of every exported model."""
OUTPUT_NAME = "logits"
"""Name of the fp32 class-score output of every exported model."""
ATTENTION_OUTPUT_NAME = "attention_map"
"""Name of the second output of `NAME_explain` models."""
DETECTION_OUTPUTS = ("boxes", "scores", "classes")
"""Outputs of a `detection` model: K candidates per image, best first: boxes (K, 4) `[x0, y0, x1, y1]` in
model-input pixels (fp32), scores (K,) in 0..1 (fp32), class indices (K,) (int64)."""
DETECTIONS_OUTPUT = "detections"
"""The JSON output of a detector's `NAME_pipeline` (and its `NAME_postprocess` step), one string per image."""
ORIGINAL_SIZE = "original_size"
"""The int32 `[width, height]` of each decoded image, passed from `NAME_preprocess` to `NAME_postprocess`."""
IMAGE_BYTES_INPUT = "image"
"""The encoded-image input of an image or detection model's `NAME_preprocess` and `NAME_pipeline`."""
VIDEO_BYTES_INPUT = "video"
"""The encoded-video input of a video model's `NAME_preprocess`, `NAME_pipeline` and `NAME_timeline`."""


class TimelineTensors(NamedTuple):
    """The tensors of a video model's `NAME_timeline` entry: the encoded video and four optional scalars in (the
    window and stride in seconds, labels per segment, clips per request to `NAME`), one JSON string out."""

    video: str = VIDEO_BYTES_INPUT
    window: str = "window_s"
    stride: str = "stride_s"
    top_k: str = "top_k"
    clips: str = "clips_per_request"
    output: str = "timeline"
    """The JSON output (`attnserve.video.Timeline`)."""


TIMELINE_TENSORS = TimelineTensors()

Kind = Literal["image", "video", "detection"]
"""`detection` models take images (NCHW) and answer boxes (`DETECTION_OUTPUTS`), not `logits`."""
Layout = Literal["NCHW", "NTCHW"]
Precision = Literal["fp32", "fp16", "bf16", "int8"]
CpuRuntime = Literal["auto", "onnxruntime", "openvino"]

SPEC_FILENAME = "spec.json"
SPEC_PARAMETER = "attnserve_spec"
"""`config.pbtxt` parameter holding the ModelSpec JSON, so a server-side reader (and a client) can recover it."""

# Default batching of image models: the one place to change it (deployables and imported models use it).
DEFAULT_MAX_BATCH_SIZE = 16
DEFAULT_PREFERRED_BATCH_SIZES: tuple[int, ...] = (4, 8, 16)
DEFAULT_MAX_QUEUE_DELAY_US = 2_000


def preferred_batch_sizes_up_to(max_batch_size: int) -> tuple[int, ...]:
    """The default preferred batch sizes that fit under `max_batch_size` (an imported model's own max)."""
    return tuple(size for size in DEFAULT_PREFERRED_BATCH_SIZES if size <= max_batch_size)


# Repository entry names derived from a model's name: `NAME_explain`, ... Clients, which hold a model name
# rather than a spec, use the functions; a spec offers the same as properties (`spec.explain_name`).
EXPLAIN_SUFFIX = "_explain"
TRT_SUFFIX = "_trt"
PIPELINE_SUFFIX = "_pipeline"
PREPROCESS_SUFFIX = "_preprocess"
POSTPROCESS_SUFFIX = "_postprocess"
TIMELINE_SUFFIX = "_timeline"
NOBATCH_SUFFIX = "_nobatch"
"""The demo's and benchmarks' twin of a model served without dynamic batching (the batching comparison)."""


def _entry(name: str, suffix: str) -> str:
    return name if name.endswith(suffix) else f"{name}{suffix}"


def explain_name(name: str) -> str:
    """`NAME_explain`: the model with outputs `logits` and `attention_map` (a name already ending so is kept)."""
    return _entry(name, EXPLAIN_SUFFIX)


def trt_name(name: str) -> str:
    """`NAME_trt`: the TensorRT engine entry (GPU hosts)."""
    return _entry(name, TRT_SUFFIX)


def pipeline_name(name: str) -> str:
    """`NAME_pipeline`: the ensemble taking encoded image/video bytes."""
    return _entry(name, PIPELINE_SUFFIX)


def preprocess_name(name: str) -> str:
    """`NAME_preprocess`: the python-backend decoder step of the pipeline."""
    return _entry(name, PREPROCESS_SUFFIX)


def postprocess_name(name: str) -> str:
    """`NAME_postprocess`: the python-backend step turning a detector's candidates into JSON detections."""
    return _entry(name, POSTPROCESS_SUFFIX)


def timeline_name(name: str) -> str:
    """`NAME_timeline`: the python-backend entry labelling a whole video with sliding clips (video models)."""
    return _entry(name, TIMELINE_SUFFIX)


def nobatch_name(name: str) -> str:
    """`NAME_nobatch`: the same model without dynamic batching (see `NOBATCH_SUFFIX`)."""
    return _entry(name, NOBATCH_SUFFIX)


class _Section(BaseModel):
    """A frozen part of the spec; `replace(**changes)` is its validated copy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def replace(self, **changes: Any) -> Self:
        """This section with `changes` applied, validated again (an unknown field is refused)."""
        return self.model_validate({**self.model_dump(), **changes})


class IoSection(_Section):
    """What goes in and what comes out: the input tensor, its normalisation, the labels, the preprocessing."""

    layout: Layout
    input_shape: tuple[PositiveInt, ...] = Field(description="per-sample shape, no batch: (C,H,W) or (T,C,H,W)")
    input_dtype: Literal["uint8"] = "uint8"
    mean: tuple[float, ...]
    std: tuple[PositiveFloat, ...]
    labels: tuple[str, ...] = Field(min_length=2)
    preprocessing: Preprocessing = Preprocessing()
    """How an image or frame becomes `input_shape` (resize mode, channel order, frame sampling); training, the
    Python client and the served `NAME_pipeline` all apply it through `attnserve.preprocessing.to_chw`."""
    max_detections: PositiveInt | None = None
    """Detection models only: K, the fixed number of candidates per image the graph outputs (`DETECTION_OUTPUTS`);
    the served answer keeps those above the score threshold, so an image never gets more than K detections."""

    @model_validator(mode="after")
    def _check_shape(self) -> IoSection:
        rank = {"NCHW": 3, "NTCHW": 4}[self.layout]
        if len(self.input_shape) != rank:
            raise ValueError(
                f"layout {self.layout} needs input_shape of rank {rank} (no batch), got {self.input_shape}"
            )
        channels = self.input_shape[0] if self.layout == "NCHW" else self.input_shape[1]
        if not (len(self.mean) == len(self.std) == channels):
            raise ValueError(
                f"mean/std need one value per channel ({channels}), got {len(self.mean)} and {len(self.std)}"
            )
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        return self


class ServingSection(_Section):
    """How Triton serves the model: dynamic batching, the queue policy and the instance count."""

    max_batch_size: PositiveInt = DEFAULT_MAX_BATCH_SIZE
    preferred_batch_sizes: tuple[PositiveInt, ...] = DEFAULT_PREFERRED_BATCH_SIZES
    max_queue_delay_us: NonNegativeInt = DEFAULT_MAX_QUEUE_DELAY_US
    dynamic_batching: bool = True
    max_queue_size: NonNegativeInt = 0
    """Bounded queue: requests beyond it are rejected at once (UNAVAILABLE) instead of waiting; 0 = unbounded.
    Off by default: on Triton 2.51 a bounded queue stalls the batcher (docs/measured.md#bounded-queue); the
    overload tests run with both set."""
    queue_timeout_us: NonNegativeInt = 0
    """Requests that waited longer than this in the queue are rejected (0 = no timeout; see `max_queue_size`)."""
    instance_count: PositiveInt = 1

    @model_validator(mode="after")
    def _check_batches(self) -> ServingSection:
        too_big = [b for b in self.preferred_batch_sizes if b > self.max_batch_size]
        if too_big:
            raise ValueError(f"preferred_batch_sizes {too_big} exceed max_batch_size {self.max_batch_size}")
        return self

    @property
    def opt_batch_size(self) -> int:
        """The TensorRT profile's opt batch: the largest preferred batch (or max when none)."""
        return max(self.preferred_batch_sizes, default=self.max_batch_size)


class RuntimeSection(_Section):
    """The CPU runner: runtime x precision (picked by measurement behind an accuracy gate) and its threads."""

    cpu_runtime: CpuRuntime = "onnxruntime"
    cpu_precision: Precision | Literal["auto"] = "fp32"
    intra_op_threads: NonNegativeInt = 0
    """Threads one instance's CPU runtime uses for one operator; 0 = cores // instance_count."""
    allow_spinning: bool = True
    """Whether the CPU runtime's idle intra-op threads spin-wait for work (ONNX Runtime's
    `session.intra_op.allow_spinning`; its default is on). Off hands the cores back to Triton and the
    client between batches; OpenVINO has no such switch and ignores it."""
    accuracy_budget_points: float = Field(default=0.5, ge=0)
    """A low-precision variant may lose at most this many top-1 points against fp32 (trained models)."""
    cosine_budget: float = Field(default=0.999, gt=0, le=1)
    """Untrained models: a variant's logits must keep at least this cosine similarity to fp32."""


class ExportSection(_Section):
    """The ONNX export and its verification against PyTorch."""

    opset: int = Field(default=23, ge=17)
    atol: PositiveFloat = 1e-4
    rtol: float = Field(default=1e-3, ge=0)
    fp16_atol: PositiveFloat = 5e-2
    precisions: tuple[Precision, ...] = ("fp32",)


SECTIONS: dict[str, type[_Section]] = {
    "io": IoSection,
    "serving": ServingSection,
    "runtime": RuntimeSection,
    "export": ExportSection,
}
"""The spec's sections by field name."""
_SECTION_OF_FLAT_KEY = {field: section for section, model in SECTIONS.items() for field in model.model_fields}
"""Each key of the first (flat) spec format that now lives in a section -> that section."""
_IDENTITY_FIELDS = ("name", "arch", "arch_args", "kind", "trained")


def spec_sections(data: Mapping[str, Any]) -> dict[str, Any]:
    """A spec mapping in sections: a first-format (flat) spec has its keys moved into their sections.

    Used by `ModelSpec` when it reads JSON, and by readers of a served config's spec parameter (clients).

    Raises:
        ValueError: The mapping mixes flat keys and sections, or a flat spec has keys neither format knows.
    """
    flat = [key for key in data if key in _SECTION_OF_FLAT_KEY]
    if not flat:
        return dict(data)
    where = ", ".join(f"{key} -> {_SECTION_OF_FLAT_KEY[key]}.{key}" for key in flat)
    mixed = [key for key in data if key in SECTIONS]
    if mixed:
        raise ValueError(
            f"a spec holds its fields in sections {sorted(SECTIONS)}, got sections {mixed} together with flat "
            f"keys ({where}); change a section with spec.with_serving(...), with_runtime(...), ..."
        )
    unknown = sorted(key for key in data if key not in _SECTION_OF_FLAT_KEY and key not in _IDENTITY_FIELDS)
    if unknown:
        raise ValueError(
            f"unknown keys {unknown} in a flat (first-format) spec; it may hold {list(_IDENTITY_FIELDS)} and "
            f"{sorted(_SECTION_OF_FLAT_KEY)}"
        )
    moved: dict[str, Any] = {key: value for key, value in data.items() if key not in _SECTION_OF_FLAT_KEY}
    for key in flat:
        moved.setdefault(_SECTION_OF_FLAT_KEY[key], {})[key] = data[key]
    return moved


class ModelSpec(BaseModel):
    """Frozen description of one deployable model (see module docstring for conventions and sections)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="deployable name; also the Triton model name")
    arch: str = Field(description="registry name passed to attnserve.models.create_model")
    arch_args: dict[str, Any] = Field(default_factory=dict, description="overrides passed to create_model")
    kind: Kind
    trained: bool = False
    """True when weights come from `runs/NAME/` (a training run), False for random/untrained weights."""

    io: IoSection
    serving: ServingSection = ServingSection()
    runtime: RuntimeSection = RuntimeSection()
    export: ExportSection = ExportSection()

    @model_validator(mode="before")
    @classmethod
    def _sections_of_first_format(cls, data: Any) -> Any:
        return spec_sections(data) if isinstance(data, Mapping) else data

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelSpec:
        if (self.kind == "video") != (self.io.layout == "NTCHW"):
            raise ValueError(f"kind {self.kind!r} does not match layout {self.io.layout!r} (video <-> NTCHW)")
        if (self.kind == "detection") != (self.io.max_detections is not None):
            raise ValueError(f"max_detections is set for detection models and only for them (kind {self.kind!r}, "
                             f"max_detections {self.io.max_detections})")  # fmt: skip
        return self

    # changing a spec: every copy is validated again ----------------------------------------------
    def replace(self, **changes: Any) -> ModelSpec:
        """This spec with top-level `changes` (identity fields or whole sections), validated again.

        A key of a section (e.g. `max_batch_size`) is refused with the section it belongs to.
        """
        return type(self).model_validate({**self.model_dump(), **changes})

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> ModelSpec:
        """A copy; an `update` goes through `replace` (validated; a section's field is refused, not ignored)."""
        return self.replace(**update) if update else super().model_copy(deep=deep)

    def with_io(self, **changes: Any) -> ModelSpec:
        """This spec with fields of its `io` section changed (validated)."""
        return self.replace(io=self.io.replace(**changes))

    def with_serving(self, **changes: Any) -> ModelSpec:
        """This spec with fields of its `serving` section changed (validated)."""
        return self.replace(serving=self.serving.replace(**changes))

    def with_runtime(self, **changes: Any) -> ModelSpec:
        """This spec with fields of its `runtime` section changed (validated)."""
        return self.replace(runtime=self.runtime.replace(**changes))

    def with_export(self, **changes: Any) -> ModelSpec:
        """This spec with fields of its `export` section changed (validated)."""
        return self.replace(export=self.export.replace(**changes))

    # derived facts -------------------------------------------------------------------------------
    @property
    def channels(self) -> int:
        return self.io.input_shape[0] if self.io.layout == "NCHW" else self.io.input_shape[1]

    @property
    def height(self) -> int:
        return self.io.input_shape[-2]

    @property
    def width(self) -> int:
        return self.io.input_shape[-1]

    @property
    def frames(self) -> int | None:
        return self.io.input_shape[0] if self.io.layout == "NTCHW" else None

    @property
    def num_classes(self) -> int:
        return len(self.io.labels)

    @property
    def output_names(self) -> tuple[str, ...]:
        """The exported graph's outputs: `logits`, or for detection models `DETECTION_OUTPUTS`."""
        return DETECTION_OUTPUTS if self.kind == "detection" else (OUTPUT_NAME,)

    @property
    def explain_name(self) -> str:
        return explain_name(self.name)

    @property
    def trt_name(self) -> str:
        return trt_name(self.name)

    @property
    def pipeline_name(self) -> str:
        return pipeline_name(self.name)

    @property
    def preprocess_name(self) -> str:
        return preprocess_name(self.name)

    @property
    def postprocess_name(self) -> str:
        return postprocess_name(self.name)

    @property
    def timeline_name(self) -> str:
        return timeline_name(self.name)

    def without_batching(self) -> ModelSpec:
        """The `NAME_nobatch` twin: the same model served without dynamic batching (for the comparison)."""
        return self.replace(name=nobatch_name(self.name), serving=self.serving.replace(dynamic_batching=False))

    # persistence ---------------------------------------------------------------------------------
    def save(self, path: Path) -> Path:
        """Write the spec as JSON; `path` may be a run folder or a file."""
        path = Path(path)
        if path.is_dir() or path.suffix != ".json":
            path = path / SPEC_FILENAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> ModelSpec:
        """Read a spec from a JSON file or a run folder holding `spec.json` (either format)."""
        path = Path(path)
        if path.is_dir():
            path = path / SPEC_FILENAME
        return cls.model_validate(json.loads(path.read_text()))
