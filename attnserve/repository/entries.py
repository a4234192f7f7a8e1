"""Triton model-repository entries derived from a ModelSpec: configs, writing, reading back, choosing the file.

Entry contract (the serving side relies on it):

    model_repository/
      NAME/config.pbtxt          platform "onnxruntime_onnx", max_batch_size, input `pixels` (TYPE_UINT8,
                                 dims = spec.io.input_shape, FORMAT_NCHW for images), output `logits`
                                 (TYPE_FP32, [num_classes], label_filename "labels.txt"), dynamic_batching
                                 from the spec (left out when spec.serving.dynamic_batching is False),
                                 instance_group [{count}] (no kind: Triton picks GPU when present),
                                 parameters { key: "attnserve_spec" ... } = the ModelSpec JSON, and the
                                 CPU runner's `runtime` / `precision` / `model_file` / `intra_op_threads` /
                                 `allow_spinning` (`RunnerParameters`, from the spec; NVIDIA's onnxruntime
                                 backend ignores them)
      NAME/labels.txt            one label per line, in class order
      NAME/spec.json             the ModelSpec (same JSON as the parameter)
      NAME/<version>/model.onnx  new exports go to a new version folder; always the portable verified graph
                                 (what NVIDIA's container serves)
      NAME/<version>/model.ort.onnx  only when ORT's offline optimisation was kept (parity + measured gain on
                                 this CPU); the runner's `model_file` parameter then points the embedded
                                 server's CPU runner at it (ORT-optimised graphs are tied to the CPU provider)
      NAME_explain/...           the same, plus output `attention_map` (TYPE_FP32, dims from the model)
      NAME_trt/...               platform "tensorrt_plan", <version>/model.plan; written only when an engine
                                 was built (Triton cannot load a plan-less entry, and the GPU compose build
                                 step runs `attnserve export --tensorrt`, which builds the engine and writes
                                 the entry in one go)
      NAME_preprocess/, NAME_pipeline/, ...  python-backend (`<version>/model.py`) and ensemble entries
                                 (`add_python_entry`)

This module is the one writer of entries: the export, the pipelines, the CPU-variant choice, `tune` and live
loading all write through `add_model`, `add_python_entry` and `update_entry`. Each writes a new version folder
or adds files next to existing ones; none rewrites a file inside a version folder, which a running server may
hold open.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from attnserve.errors import UserInputError
from attnserve.repository.config import (
    SPEC_PARAMETER,
    DynamicBatching,
    InstanceGroup,
    ModelConfig,
    Platform,
    QueuePolicy,
    TensorConfig,
    read_config,
)
from attnserve.repository.layout import (
    CONFIG_FILENAME,
    LABELS_FILENAME,
    ONNX_FILENAME,
    ORT_OPTIMIZED_FILENAME,
    PLAN_FILENAME,
    PYTHON_MODEL_FILENAME,
    latest_version_dir,
    next_version,
    repository_entries,
)
from attnserve.repository.runner import MODEL_FILE_PARAMETER, RunnerParameters
from attnserve.spec import ATTENTION_OUTPUT_NAME, DETECTION_OUTPUTS, INPUT_NAME, OUTPUT_NAME, SPEC_FILENAME, ModelSpec

logger = logging.getLogger(__name__)

ONNX_PLATFORM: Platform = "onnxruntime_onnx"
TENSORRT_PLATFORM: Platform = "tensorrt_plan"
ENSEMBLE_PLATFORM: Platform = "ensemble"


# ---------------------------------------------------------------------------------------------------------
# configs from a spec
# ---------------------------------------------------------------------------------------------------------
def pixels_input(spec: ModelSpec) -> TensorConfig:
    """The uint8 `pixels` input of every exported model (NCHW images carry `FORMAT_NCHW`)."""
    return TensorConfig(
        name=INPUT_NAME,
        data_type="TYPE_UINT8",
        format="FORMAT_NCHW" if spec.io.layout == "NCHW" else None,
        dims=tuple(spec.io.input_shape),
    )


def logits_output(spec: ModelSpec) -> TensorConfig:
    """The fp32 `logits` output, with the labels file for Triton's classification extension."""
    return TensorConfig(
        name=OUTPUT_NAME, data_type="TYPE_FP32", dims=(spec.num_classes,), label_filename=LABELS_FILENAME
    )


def detection_outputs(spec: ModelSpec) -> tuple[TensorConfig, ...]:
    """A detection model's K candidates: `boxes` fp32 (K, 4) in input pixels, `scores` fp32 (K,), `classes` int64."""
    count = spec.io.max_detections or 1
    boxes, scores, classes = DETECTION_OUTPUTS
    return (
        TensorConfig(name=boxes, data_type="TYPE_FP32", dims=(count, 4)),
        TensorConfig(name=scores, data_type="TYPE_FP32", dims=(count,)),
        TensorConfig(name=classes, data_type="TYPE_INT64", dims=(count,)),
    )


def model_outputs(spec: ModelSpec) -> tuple[TensorConfig, ...]:
    """The outputs of the model entry: `logits` (classifiers) or the detection candidates."""
    return detection_outputs(spec) if spec.kind == "detection" else (logits_output(spec),)


def dynamic_batching_for(spec: ModelSpec) -> DynamicBatching | None:
    """`dynamic_batching` from the spec: preferred sizes, queue delay and, when the spec bounds the queue
    (`max_queue_size` / `queue_timeout_us`; see ModelSpec for why that is opt-in), a queue that rejects."""
    if not spec.serving.dynamic_batching:
        return None
    bounded = spec.serving.max_queue_size > 0 or spec.serving.queue_timeout_us > 0
    return DynamicBatching(
        preferred_batch_size=tuple(spec.serving.preferred_batch_sizes),
        max_queue_delay_microseconds=spec.serving.max_queue_delay_us,
        default_queue_policy=None
        if not bounded
        else QueuePolicy(
            timeout_action="REJECT",
            default_timeout_microseconds=spec.serving.queue_timeout_us,
            max_queue_size=spec.serving.max_queue_size,
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

    ONNX entries carry the CPU runner's parameters from the spec (`RunnerParameters.for_spec`).
    """
    runner = RunnerParameters.for_spec(spec).to_parameters() if platform == ONNX_PLATFORM else {}
    return ModelConfig(
        name=name or spec.name,
        platform=platform,
        max_batch_size=spec.serving.max_batch_size,
        input=(pixels_input(spec),),
        output=(*model_outputs(spec), *extra_outputs),
        dynamic_batching=dynamic_batching_for(spec),
        instance_group=(InstanceGroup(count=spec.serving.instance_count),),
        default_model_filename=default_model_filename,
        parameters={SPEC_PARAMETER: spec.model_dump_json(), **runner, **(extra_parameters or {})},
    )


def explain_config_for(spec: ModelSpec, attention_dims: Sequence[int]) -> ModelConfig:
    """Config of `NAME_explain`: the main config plus output `attention_map` (per-sample dims, no batch)."""
    attention_output = TensorConfig(name=ATTENTION_OUTPUT_NAME, data_type="TYPE_FP32", dims=tuple(attention_dims))
    return model_config_for(spec, name=spec.explain_name, extra_outputs=(attention_output,))


def trt_config_for(spec: ModelSpec) -> ModelConfig:
    """Config of `NAME_trt` (`tensorrt_plan`): its profile max equals `spec.serving.max_batch_size` by construction."""
    return model_config_for(spec, name=spec.trt_name, platform="tensorrt_plan")


# ---------------------------------------------------------------------------------------------------------
# writing entries
# ---------------------------------------------------------------------------------------------------------
def write_labels(spec: ModelSpec, model_dir: Path) -> Path:
    """Write `labels.txt` (one label per line, in class order)."""
    bad = [label for label in spec.io.labels if "\n" in label or "\r" in label]
    if bad:
        raise UserInputError(f"labels must be single-line strings, got {bad!r}")
    labels_path = Path(model_dir) / LABELS_FILENAME
    labels_path.write_text("\n".join(spec.io.labels) + "\n")
    return labels_path


def add_model(
    repository: Path,
    config: ModelConfig,
    model_path: Path,
    *,
    spec: ModelSpec | None = None,
    version: int | None = None,
    model_filename: str | None = None,
    extra_files: Mapping[str, Path] | None = None,
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
        extra_files: more files for the same version folder, by their name there (a CPU-only graph the
            runner's `model_file` names).

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
            PLAN_FILENAME if config.platform == TENSORRT_PLATFORM else ONNX_FILENAME
        )
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    target = version_dir / model_filename
    shutil.copyfile(model_path, target)
    # ONNX external data keeps its file name relative to the model: copy it under the same name.
    for external in model_path.parent.glob(f"{model_path.name}.data"):
        shutil.copyfile(external, version_dir / external.name)
    for filename, source in (extra_files or {}).items():
        shutil.copyfile(source, version_dir / filename)
    _write_config_and_spec(model_dir, config, spec)
    logger.info("wrote %s version %d (%s)", config.name, version, target)
    return target


def add_python_entry(
    repository: Path, config: ModelConfig, python_model: Path | None = None, *, spec: ModelSpec | None = None
) -> Path:
    """Write a python-backend entry (`<version>/model.py` copied from `python_model`) or, without a file, an
    ensemble's (an empty version folder: Triton needs one), in the next free version; returns the entry folder.

    Args:
        repository: the model repository folder (created when missing).
        config: the entry's config; `config.name` is the folder name.
        python_model: the python-backend shim to copy as `model.py` (None for an ensemble).
        spec: when given, `labels.txt` and `spec.json` are written beside the config.
    """
    model_dir = Path(repository) / config.name
    version_dir = model_dir / str(next_version(model_dir))
    version_dir.mkdir(parents=True)
    if python_model is not None:
        shutil.copy2(python_model, version_dir / PYTHON_MODEL_FILENAME)
    _write_config_and_spec(model_dir, config, spec)
    logger.info("wrote %s %s", config.name, version_dir.name)
    return model_dir


def update_entry(
    model_dir: Path, config: ModelConfig, spec: ModelSpec, extra_files: Mapping[str, Path | None] | None = None
) -> list[Path]:
    """Give an existing entry a new config and spec (a reload applies them), copying `extra_files` into its latest
    version folder under their names when absent there (a file a running server may hold is never rewritten).

    Returns:
        The files written.
    """
    model_dir = Path(model_dir)
    written: list[Path] = []
    if extra_files:
        version_dir = latest_version_dir(model_dir, ONNX_FILENAME)
        if version_dir is None:
            raise UserInputError(f"{model_dir}: expected a version folder holding {ONNX_FILENAME}; none found")
        for filename, source in extra_files.items():
            if (version_dir / filename).exists():
                continue
            if source is None or not Path(source).is_file():
                raise UserInputError(f"{filename} for {model_dir.name}: expected its source file, got {source}")
            written.append(Path(shutil.copyfile(source, version_dir / filename)))
    return [*written, *_write_config_and_spec(model_dir, config, spec)]


def _write_config_and_spec(model_dir: Path, config: ModelConfig, spec: ModelSpec | None) -> list[Path]:
    written = [config.write(model_dir)]
    if spec is not None:
        written += [write_labels(spec, model_dir), spec.save(model_dir / SPEC_FILENAME)]
    return written


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
            by the runner's `model_file` parameter); None leaves the CPU runner on `model.onnx`.

    Returns:
        The entry folder `repository/NAME`.
    """
    runner = RunnerParameters.for_spec(spec, ORT_OPTIMIZED_FILENAME if cpu_onnx_path is not None else ONNX_FILENAME)
    config = model_config_for(spec, extra_parameters=runner.to_parameters())  # the main entry may serve model.ort.onnx
    extra_files = {ORT_OPTIMIZED_FILENAME: cpu_onnx_path} if cpu_onnx_path is not None else None
    target = add_model(repository, config, onnx_path, spec=spec, version=version, extra_files=extra_files)
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


# ---------------------------------------------------------------------------------------------------------
# reading entries
# ---------------------------------------------------------------------------------------------------------
def read_entry_spec(model_dir: Path) -> ModelSpec:
    """Recover the ModelSpec of an entry (from `spec.json`, else from the config's `attnserve_spec` parameter)."""
    model_dir = Path(model_dir)
    if (model_dir / SPEC_FILENAME).is_file():
        return ModelSpec.load(model_dir / SPEC_FILENAME)
    if not (model_dir / CONFIG_FILENAME).is_file():
        raise UserInputError(f"{model_dir} is not a model-repository entry: no {SPEC_FILENAME} or {CONFIG_FILENAME}")
    spec_json = read_config(model_dir).spec_json()
    if spec_json is None:
        raise UserInputError(
            f"{model_dir / CONFIG_FILENAME} has no {SPEC_PARAMETER!r} parameter and no {SPEC_FILENAME}"
        )
    return ModelSpec.model_validate_json(spec_json)


def model_entry_specs(repository: Path) -> dict[str, ModelSpec]:
    """Spec of every model entry of `repository` that a spec names (not its explain/trt/pipeline twins)."""
    specs: dict[str, ModelSpec] = {}
    for name, model_dir in repository_entries(repository).items():
        try:
            spec = read_entry_spec(model_dir)
        except UserInputError:
            continue  # not an attnserve export (no spec)
        if spec.name == name:
            specs[name] = spec
    return specs


def is_onnx_entry(config: ModelConfig) -> bool:
    """An entry NVIDIA's onnxruntime backend serves (the embedded server runs it through the CPU runner)."""
    return config.platform == ONNX_PLATFORM or config.backend == "onnxruntime"


def served_file_name(config: ModelConfig) -> str:
    """The file the CPU runner opens in an ONNX entry's version folder: the runner's `model_file`, else
    the config's `default_model_filename`, else `model.onnx`."""
    chosen = config.parameters.get(MODEL_FILE_PARAMETER)
    return (chosen.string_value if chosen else "") or config.default_model_filename or ONNX_FILENAME


def served_file(model_dir: Path, config: ModelConfig | None = None) -> Path | None:
    """The model file the CPU runner serves for the entry in `model_dir`: `served_file_name` in the highest
    version folder that holds it (None for an entry that is not ONNX, or has no such file)."""
    config = config or read_config(model_dir)
    if not is_onnx_entry(config):
        return None
    filename = served_file_name(config)
    version_dir = latest_version_dir(Path(model_dir), filename)
    return None if version_dir is None else version_dir / filename
