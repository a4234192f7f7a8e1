"""Triton model-repository entries derived from a ModelSpec.

Entry contract (the serving side relies on it):

    model_repository/
      NAME/config.pbtxt          platform "onnxruntime_onnx", max_batch_size, input `pixels` (TYPE_UINT8,
                                 dims = spec.input_shape, FORMAT_NCHW for images), output `logits`
                                 (TYPE_FP32, [num_classes], label_filename "labels.txt"), dynamic_batching
                                 from the spec (left out when spec.dynamic_batching is False),
                                 instance_group [{count}] (no kind: Triton picks GPU when present),
                                 parameters intra_op_threads / allow_spinning (the CPU runner's threads)
                                 parameters { key: "attnserve_spec" ... } = the ModelSpec JSON
      NAME/labels.txt            one label per line, in class order
      NAME/spec.json             the ModelSpec (same JSON as the parameter)
      NAME/<version>/model.onnx  new exports go to a new version folder; always the portable verified graph
                                 (what NVIDIA's container serves)
      NAME/<version>/model.ort.onnx  only when ORT's offline optimisation was kept (parity + measured gain on
                                 this CPU); the config's `model_file` parameter then points the embedded
                                 server's CPU runner at it (ORT-optimised graphs are tied to the CPU provider)
      NAME_explain/...           the same, plus output `attention_map` (TYPE_FP32, dims from the model)
      NAME_trt/...               platform "tensorrt_plan", <version>/model.plan; written only when an engine
                                 was built (Triton cannot load a plan-less entry, and the GPU compose build
                                 step runs `attnserve export --tensorrt`, which builds the engine and writes
                                 the entry in one go)
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from attnserve.export.triton_config import (
    SPEC_PARAMETER,
    DynamicBatching,
    InstanceGroup,
    ModelConfig,
    Platform,
    QueuePolicy,
    TensorConfig,
)

from attnserve.errors import UserInputError
from attnserve.spec import ATTENTION_OUTPUT_NAME, INPUT_NAME, OUTPUT_NAME, SPEC_FILENAME, ModelSpec

logger = logging.getLogger(__name__)

LABELS_FILENAME = "labels.txt"
CONFIG_FILENAME = "config.pbtxt"
ONNX_FILENAME = "model.onnx"
PLAN_FILENAME = "model.plan"


# ---------------------------------------------------------------------------------------------------------
# configs from a spec
# ---------------------------------------------------------------------------------------------------------
def pixels_input(spec: ModelSpec) -> TensorConfig:
    """The uint8 `pixels` input of every exported model (NCHW images carry `FORMAT_NCHW`)."""
    return TensorConfig(
        name=INPUT_NAME,
        data_type="TYPE_UINT8",
        format="FORMAT_NCHW" if spec.layout == "NCHW" else None,
        dims=tuple(spec.input_shape),
    )


def logits_output(spec: ModelSpec) -> TensorConfig:
    """The fp32 `logits` output, with the labels file for Triton's classification extension."""
    return TensorConfig(
        name=OUTPUT_NAME, data_type="TYPE_FP32", dims=(spec.num_classes,), label_filename=LABELS_FILENAME
    )


def dynamic_batching_for(spec: ModelSpec) -> DynamicBatching | None:
    """`dynamic_batching` from the spec: preferred sizes, queue delay and, when the spec bounds the queue
    (`max_queue_size` / `queue_timeout_us`; see ModelSpec for why that is opt-in), a queue that rejects."""
    if not spec.dynamic_batching:
        return None
    bounded = spec.max_queue_size > 0 or spec.queue_timeout_us > 0
    return DynamicBatching(
        preferred_batch_size=tuple(spec.preferred_batch_sizes),
        max_queue_delay_microseconds=spec.max_queue_delay_us,
        default_queue_policy=None
        if not bounded
        else QueuePolicy(
            timeout_action="REJECT",
            default_timeout_microseconds=spec.queue_timeout_us,
            max_queue_size=spec.max_queue_size,
        ),
    )


def model_config_for(
    spec: ModelSpec,
    *,
    name: str | None = None,
    platform: Platform = "onnxruntime_onnx",
    extra_outputs: Sequence[TensorConfig] = (),
    default_model_filename: str | None = None,
    extra_parameters: Mapping[str, str] | None = None,
) -> ModelConfig:
    """The Triton config of one model served from `spec` (input `pixels`, output `logits`, batching).

    Args:
        spec: the deployable's spec; every batch size and shape comes from it.
        name: the Triton model name (default `spec.name`).
        platform: `onnxruntime_onnx` (default) or `tensorrt_plan`.
        extra_outputs: outputs after `logits` (the explain model's `attention_map`).
        default_model_filename: a file name other than Triton's default (`model.onnx` / `model.plan`).
        extra_parameters: more `parameters` entries (e.g. the CPU runner's `model_file`).
    """
    return ModelConfig(
        name=name or spec.name,
        platform=platform,
        max_batch_size=spec.max_batch_size,
        input=(pixels_input(spec),),
        output=(logits_output(spec), *extra_outputs),
        dynamic_batching=dynamic_batching_for(spec),
        instance_group=(InstanceGroup(count=spec.instance_count),),
        default_model_filename=default_model_filename,
        parameters={SPEC_PARAMETER: spec.model_dump_json(), **runner_parameters(spec), **(extra_parameters or {})},
    )


INTRA_OP_THREADS_PARAMETER = "intra_op_threads"
"""The CPU runner's threads per instance (`attnserve.serving.python_models.runtime.INTRA_OP_THREADS_PARAMETER`)."""
ALLOW_SPINNING_PARAMETER = "allow_spinning"
"""Whether the CPU runner's idle threads spin (`attnserve.serving.python_models.runtime.ALLOW_SPINNING_PARAMETER`)."""


def runner_parameters(spec: ModelSpec) -> dict[str, str]:
    """The CPU runner's knobs from the spec, as config parameters: threads per instance (0 = cores // instances,
    resolved by the runtime view) and whether idle threads spin. NVIDIA's onnxruntime backend ignores them."""
    return {
        INTRA_OP_THREADS_PARAMETER: str(spec.intra_op_threads),
        ALLOW_SPINNING_PARAMETER: "1" if spec.allow_spinning else "0",
    }


def explain_config_for(spec: ModelSpec, attention_dims: Sequence[int]) -> ModelConfig:
    """Config of `NAME_explain`: the main config plus output `attention_map` (per-sample dims, no batch)."""
    attention_output = TensorConfig(name=ATTENTION_OUTPUT_NAME, data_type="TYPE_FP32", dims=tuple(attention_dims))
    return model_config_for(spec, name=spec.explain_name, extra_outputs=(attention_output,))


def trt_config_for(spec: ModelSpec) -> ModelConfig:
    """Config of `NAME_trt` (`tensorrt_plan`): its profile max equals `spec.max_batch_size` by construction."""
    return model_config_for(spec, name=spec.trt_name, platform="tensorrt_plan")


# ---------------------------------------------------------------------------------------------------------
# writing entries
# ---------------------------------------------------------------------------------------------------------
def existing_versions(model_dir: Path) -> list[int]:
    """Numeric version folders present under `model_dir`, sorted."""
    if not Path(model_dir).is_dir():
        return []
    return sorted(int(p.name) for p in Path(model_dir).iterdir() if p.is_dir() and re.fullmatch(r"[1-9][0-9]*", p.name))


def next_version(model_dir: Path) -> int:
    """The version a new export gets: one past the highest existing version folder (1 for a new entry)."""
    versions = existing_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def write_labels(spec: ModelSpec, model_dir: Path) -> Path:
    """Write `labels.txt` (one label per line, in class order)."""
    bad = [label for label in spec.labels if "\n" in label or "\r" in label]
    if bad:
        raise UserInputError(f"labels must be single-line strings, got {bad!r}")
    labels_path = Path(model_dir) / LABELS_FILENAME
    labels_path.write_text("\n".join(spec.labels) + "\n")
    return labels_path


def add_model(
    repository: Path,
    config: ModelConfig,
    model_path: Path,
    *,
    spec: ModelSpec | None = None,
    version: int | None = None,
    model_filename: str | None = None,
) -> Path:
    """Write one entry: `repository/config.name/{config.pbtxt, labels.txt, spec.json, <version>/<model file>}`.

    Args:
        repository: the model repository folder (created when missing).
        config: the entry's Triton config; `config.name` is the folder name.
        model_path: the artefact to copy (an ONNX file, with its `.onnx.data` external weights if any,
            or a TensorRT plan).
        spec: when given, `labels.txt` and `spec.json` are written beside the config.
        version: the version folder; default is the next free one, so a new export never overwrites
            one a running server may hold.
        model_filename: the file name inside the version folder (default: Triton's default for the platform).

    Returns:
        The path of the copied model file inside the version folder.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise UserInputError(f"model file to add to the repository does not exist: {model_path}")
    model_dir = Path(repository) / config.name
    version = next_version(model_dir) if version is None else version
    if version < 1:
        raise UserInputError(f"a Triton model version is a positive integer, got {version}")
    if model_filename is None:
        model_filename = config.default_model_filename or (
            PLAN_FILENAME if config.platform == "tensorrt_plan" else ONNX_FILENAME
        )
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    target = version_dir / model_filename
    shutil.copyfile(model_path, target)
    # ONNX external data keeps its file name relative to the model: copy it under the same name.
    for external in model_path.parent.glob(f"{model_path.name}.data"):
        shutil.copyfile(external, version_dir / external.name)
    config.write(model_dir)
    if spec is not None:
        write_labels(spec, model_dir)
        spec.save(model_dir / SPEC_FILENAME)
    logger.info("wrote %s version %d (%s)", config.name, version, target)
    return target


CPU_MODEL_FILE_PARAMETER = "model_file"
"""Parameter naming the file (in the version folder) the embedded server's CPU runner opens
(`attnserve.serving.python_models.runtime.MODEL_FILE_PARAMETER`)."""
ORT_OPTIMIZED_FILENAME = "model.ort.onnx"


def write_model_entry(
    spec: ModelSpec,
    onnx_path: Path,
    repository: Path,
    *,
    version: int | None = None,
    cpu_onnx_path: Path | None = None,
) -> Path:
    """Write `repository/NAME/` for the main ONNX model (see the module docstring for the contract).

    Args:
        spec: the deployable's spec.
        onnx_path: the verified, portable graph (becomes `<version>/model.onnx`).
        repository: the model repository.
        version: version folder (default: the next free one).
        cpu_onnx_path: an ORT-optimised graph for the CPU runner (becomes `<version>/model.ort.onnx`, named
            by the `model_file` parameter); None leaves the CPU runner on `model.onnx`.

    Returns:
        The entry folder `repository/NAME`.
    """
    parameters = {CPU_MODEL_FILE_PARAMETER: ORT_OPTIMIZED_FILENAME} if cpu_onnx_path is not None else None
    config = model_config_for(spec, extra_parameters=parameters)
    target = add_model(repository, config, onnx_path, spec=spec, version=version)
    if cpu_onnx_path is not None:
        shutil.copyfile(cpu_onnx_path, target.parent / ORT_OPTIMIZED_FILENAME)
    return target.parent.parent


def write_explain_entry(
    spec: ModelSpec,
    onnx_path: Path,
    repository: Path,
    attention_dims: Sequence[int],
    *,
    version: int | None = None,
) -> Path:
    """Write `repository/NAME_explain/` (outputs `logits` and `attention_map`); returns the entry folder."""
    target = add_model(repository, explain_config_for(spec, attention_dims), onnx_path, spec=spec, version=version)
    return target.parent.parent


def write_trt_entry(spec: ModelSpec, plan_path: Path, repository: Path, *, version: int | None = None) -> Path:
    """Write `repository/NAME_trt/` for a built TensorRT engine; returns the entry folder."""
    target = add_model(repository, trt_config_for(spec), plan_path, spec=spec, version=version)
    return target.parent.parent


def read_entry_spec(model_dir: Path) -> ModelSpec:
    """Recover the ModelSpec of an entry (from `spec.json`, else from the config's `attnserve_spec` parameter)."""
    from attnserve.export.triton_config import spec_json_from_pbtxt

    model_dir = Path(model_dir)
    if (model_dir / SPEC_FILENAME).is_file():
        return ModelSpec.load(model_dir / SPEC_FILENAME)
    config_path = model_dir / CONFIG_FILENAME
    if not config_path.is_file():
        raise UserInputError(f"{model_dir} is not a model-repository entry: no {SPEC_FILENAME} or {CONFIG_FILENAME}")
    spec_dict = spec_json_from_pbtxt(config_path.read_text())
    if spec_dict is None:
        raise UserInputError(f"{config_path} has no {SPEC_PARAMETER!r} parameter and there is no {SPEC_FILENAME}")
    return ModelSpec.model_validate(spec_dict)
