"""The runtime view: a copy of a model repository that the embedded CPU Triton (python backend only) can load.

NVIDIA's container serves `platform: "onnxruntime_onnx"` and `"tensorrt_plan"` entries itself. The wheel's
Triton has only the python backend, so each ONNX entry becomes a python-backend entry of the **same name,
inputs, outputs, max_batch_size, dynamic batching, queue policy and instance count**, whose `model.py`
runs the model through a pluggable CPU runtime (`attnserve.serving.python_models.runtime`). Clients
cannot tell the two apart. TensorRT entries are left out (they need a GPU), with a log line. Python-backend
and ensemble entries (pre-processing, pipelines) are used as they are.

The source repository is never modified; ONNX files are read in place (absolute `model_file`).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

from attnserve.serving.python_models.runtime import (
    DEFAULT_RUNTIME,
    INTRA_OP_THREADS_PARAMETER,
    MODEL_FILE_PARAMETER,
    RUNTIME_MODULES,
    RUNTIME_PARAMETER,
    intra_op_threads_for,
)
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from attnserve.errors import UnknownModelError, UserInputError

logger = logging.getLogger(__name__)

CONFIG_FILENAME = "config.pbtxt"
RUNNER_SHIM = Path(__file__).parent / "python_models" / "runner_model.py"
ONNX_PLATFORM = "onnxruntime_onnx"
TENSORRT_PLATFORM = "tensorrt_plan"
ENSEMBLE_PLATFORM = "ensemble"
DEFAULT_ONNX_FILENAME = "model.onnx"


def read_config(model_dir: Path) -> model_config_pb2.ModelConfig:
    """Parse `model_dir/config.pbtxt` with Triton's own protobuf classes.

    Raises:
        UserInputError: the file is missing or is not a valid model config.
    """
    config_path = Path(model_dir) / CONFIG_FILENAME
    if not config_path.is_file():
        raise UserInputError(f"expected a Triton config at {config_path}; not found")
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(config_path.read_text(), config)
    except text_format.ParseError as exc:
        raise UserInputError(f"{config_path} is not a valid Triton model config: {exc}") from exc
    if not config.name:
        config.name = model_dir.name
    return config


def write_config(config: model_config_pb2.ModelConfig, model_dir: Path) -> Path:
    """Render `config` as protobuf text into `model_dir/config.pbtxt`."""
    model_dir.mkdir(parents=True, exist_ok=True)
    config_path = model_dir / CONFIG_FILENAME
    config_path.write_text(text_format.MessageToString(config))
    return config_path


def repository_entries(repository: Path) -> dict[str, Path]:
    """Model name -> folder, for every folder of `repository` holding a `config.pbtxt`."""
    repository = Path(repository)
    if not repository.is_dir():
        raise UserInputError(f"model repository {repository} is not a folder")
    return {p.name: p for p in sorted(repository.iterdir()) if (p / CONFIG_FILENAME).is_file()}


def latest_version_dir(model_dir: Path, filename: str) -> Path | None:
    """The highest numeric version folder of `model_dir` that holds `filename`."""
    versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and (p / filename).exists()]
    return max(versions, key=lambda p: int(p.name), default=None)


def ensemble_dependencies(config: model_config_pb2.ModelConfig) -> list[str]:
    """Models an ensemble's steps call."""
    return [step.model_name for step in config.ensemble_scheduling.step]


def runner_config(
    source: model_config_pb2.ModelConfig, model_path: Path, runtime: str | None = None
) -> model_config_pb2.ModelConfig:
    """The python-backend twin of an `onnxruntime_onnx` config: same I/O, batching, queue and instances.

    Args:
        source: the ONNX entry's config.
        model_path: absolute path of the ONNX file the runner opens.
        runtime: CPU runtime override; default: the entry's own `runtime` parameter, else ONNX Runtime.
    """
    config = model_config_pb2.ModelConfig()
    config.CopyFrom(source)
    config.ClearField("platform")
    config.ClearField("default_model_filename")
    config.ClearField("optimization")  # execution accelerators are the onnxruntime backend's, not ours
    config.backend = "python"
    instance_count = sum(group.count or 1 for group in config.instance_group) or 1
    for group in config.instance_group:
        group.kind = model_config_pb2.ModelInstanceGroup.KIND_CPU  # the python stub runs on the CPU
        del group.gpus[:]
    chosen_runtime = runtime or (
        source.parameters[RUNTIME_PARAMETER].string_value if RUNTIME_PARAMETER in source.parameters else DEFAULT_RUNTIME
    )
    if chosen_runtime not in RUNTIME_MODULES:
        raise UnknownModelError(chosen_runtime, list(RUNTIME_MODULES))
    config.parameters[RUNTIME_PARAMETER].string_value = chosen_runtime
    config.parameters[MODEL_FILE_PARAMETER].string_value = str(model_path)
    # the entry's own thread count (a tuned one) stays; absent or 0 shares the cores between the instances
    threads = (
        source.parameters[INTRA_OP_THREADS_PARAMETER].string_value
        if INTRA_OP_THREADS_PARAMETER in source.parameters
        else ""
    )
    if not threads.isdigit() or int(threads) == 0:
        threads = str(intra_op_threads_for(instance_count))
    config.parameters[INTRA_OP_THREADS_PARAMETER].string_value = threads
    return config


def build_runtime_repository(
    source_repo: Path | str,
    work_dir: Path | str,
    models: Sequence[str] | None = None,
    *,
    runtime: str | None = None,
) -> tuple[Path, list[str], dict[str, str]]:
    """Write the CPU runtime view of `source_repo` into `work_dir/model_repository`.

    Args:
        source_repo: a repository as the export writes it (ONNX, TensorRT, python and ensemble entries).
        work_dir: folder for the view (its `model_repository` subfolder is replaced).
        models: names to serve; None = every entry. Ensembles pull in the models their steps call.
        runtime: CPU runtime for every ONNX entry (`onnxruntime`, `openvino`); None = each entry's own.

    Returns:
        `(path, loaded_names, skipped)`: the view's folder, the names to pass to `--load-model`, and
        `{name: reason}` for entries left out.

    Raises:
        UnknownModelError: a requested name is not in the repository.
        UserInputError: an entry's config is invalid or its model file is missing.
    """
    source_repo = Path(source_repo).resolve()
    entries = repository_entries(source_repo)
    configs = {name: read_config(model_dir) for name, model_dir in entries.items()}

    wanted = list(entries) if models is None else list(dict.fromkeys(models))
    for name in wanted:
        if name not in entries:
            raise UnknownModelError(name, list(entries))
    # ensembles need their steps' models loaded too
    queue = list(wanted)
    while queue:
        for dependency in ensemble_dependencies(configs[queue.pop()]):
            if dependency not in entries:
                raise UserInputError(f"ensemble step model {dependency!r} is not in {source_repo}")
            if dependency not in wanted:
                wanted.append(dependency)
                queue.append(dependency)

    view = Path(work_dir) / "model_repository"
    if view.exists():
        shutil.rmtree(view)
    view.mkdir(parents=True)
    loaded: list[str] = []
    skipped: dict[str, str] = {}
    for name in wanted:
        config, model_dir = configs[name], entries[name]
        target_dir = view / name
        if config.platform == TENSORRT_PLATFORM or config.backend == "tensorrt":
            skipped[name] = "TensorRT plan: needs a GPU and NVIDIA's container (docker compose); not served on CPU"
            logger.info("runtime view: leaving out %s (%s)", name, skipped[name])
            continue
        if config.platform == ONNX_PLATFORM or config.backend == "onnxruntime":
            # `model_file` (relative to the version folder) names a CPU variant picked by `attnserve optimize`
            chosen_file = (
                config.parameters[MODEL_FILE_PARAMETER].string_value
                if MODEL_FILE_PARAMETER in config.parameters
                else ""
            )
            filename = chosen_file or config.default_model_filename or DEFAULT_ONNX_FILENAME
            version_dir = latest_version_dir(model_dir, filename)
            if version_dir is None:
                raise UserInputError(f"ONNX entry {name!r}: expected {model_dir}/<version>/{filename}; none found")
            shutil.copytree(model_dir, target_dir, ignore=_skip_version_dirs)
            write_config(runner_config(config, version_dir / filename, runtime), target_dir)
            (target_dir / "1").mkdir()
            shutil.copy2(RUNNER_SHIM, target_dir / "1" / "model.py")
        elif config.backend == "python" or config.platform == ENSEMBLE_PLATFORM:
            shutil.copytree(model_dir, target_dir, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            skipped[name] = f"platform {config.platform or config.backend!r} has no CPU runner in the embedded server"
            logger.info("runtime view: leaving out %s (%s)", name, skipped[name])
            continue
        loaded.append(name)

    for name in list(loaded):  # an ensemble whose step was left out cannot load
        missing = [d for d in ensemble_dependencies(configs[name]) if d not in loaded]
        if missing:
            loaded.remove(name)
            shutil.rmtree(view / name)
            skipped[name] = f"ensemble step models not served: {missing}"
            logger.info("runtime view: leaving out %s (%s)", name, skipped[name])
    return view, loaded, skipped


def _skip_version_dirs(directory: str, names: list[str]) -> list[str]:
    """copytree filter: keep labels/spec files, leave the heavy version folders (the ONNX is read in place)."""
    if Path(directory).name.isdigit():
        return names
    return [n for n in names if n.isdigit() or n == "__pycache__"]
