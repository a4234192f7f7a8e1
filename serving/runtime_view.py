"""The runtime view: a copy of a model repository that the embedded CPU Triton (python backend only) can load.

NVIDIA's container serves `platform: "onnxruntime_onnx"` and `"tensorrt_plan"` entries itself. The wheel's
Triton has only the python backend, so each ONNX entry becomes a python-backend entry of the **same name,
inputs, outputs, max_batch_size, dynamic batching, queue policy and instance count**, whose `model.py`
runs the model through a pluggable CPU runtime (`attnserve.runtimes.session`). Clients
cannot tell the two apart. TensorRT entries are left out (they need a GPU), with a log line. Python-backend
and ensemble entries (pre-processing, pipelines) are used as they are.

The source repository is never modified; ONNX files are read in place (absolute `model_file`).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

from attnserve.errors import UnknownModelError, UserInputError
from attnserve.repository.config import ModelConfig, read_config
from attnserve.repository.entries import ENSEMBLE_PLATFORM, TENSORRT_PLATFORM, is_onnx_entry, served_file
from attnserve.repository.layout import PYTHON_MODEL_FILENAME, is_version_dir, repository_entries
from attnserve.repository.runner import RunnerParameters
from attnserve.runtimes.session import check_runtime_name, intra_op_threads_for

logger = logging.getLogger(__name__)

RUNNER_SHIM = Path(__file__).parent / "python_models" / "runner_model.py"


def ensemble_dependencies(config: ModelConfig) -> list[str]:
    """Models an ensemble's steps call."""
    if config.ensemble_scheduling is None:
        return []
    return [step.model_name for step in config.ensemble_scheduling.step]


def runner_config(source: ModelConfig, model_path: Path, runtime: str | None = None) -> ModelConfig:
    """The python-backend twin of an `onnxruntime_onnx` config: same I/O, batching, queue and instances.

    Args:
        source: the ONNX entry's config.
        model_path: absolute path of the ONNX file the runner opens.
        runtime: CPU runtime override; default: the entry's runner parameters (from its spec).

    Raises:
        UnknownRuntimeError: `runtime` (or the entry's) names no runtime.
    """
    entry_runner = RunnerParameters.from_parameters(source.parameters)
    instance_count = sum(group.count for group in source.instance_group) or 1
    runner = entry_runner.model_copy(
        update={
            "runtime": check_runtime_name(runtime or entry_runner.runtime),
            "model_file": str(model_path),
            # the entry's own thread count (a tuned one) stays; 0 shares the cores between the instances
            "intra_op_threads": entry_runner.intra_op_threads or intra_op_threads_for(instance_count),
        }
    )
    parameters = {key: value.string_value for key, value in source.parameters.items()}
    return ModelConfig.model_validate(
        {
            **source.model_dump(exclude={"platform", "default_model_filename", "parameters", "instance_group"}),
            "backend": "python",
            # the python stub runs on the CPU: no GPU kind, no GPU ids
            "instance_group": [
                group.model_copy(update={"kind": "KIND_CPU", "gpus": ()}) for group in source.instance_group
            ],
            "parameters": {**parameters, **runner.to_parameters()},
        }
    )


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
    if runtime is not None:
        check_runtime_name(runtime)

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
        if is_onnx_entry(config):
            model_path = served_file(
                model_dir, config
            )  # the runner's `model_file` (a picked CPU variant) or model.onnx
            if model_path is None:
                raise UserInputError(f"ONNX entry {name!r}: expected {model_dir}/<version>/<model file>; none found")
            shutil.copytree(model_dir, target_dir, ignore=_skip_version_dirs)
            runner_config(config, model_path, runtime).write(target_dir)
            (target_dir / "1").mkdir()
            shutil.copy2(RUNNER_SHIM, target_dir / "1" / PYTHON_MODEL_FILENAME)
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
    if is_version_dir(Path(directory)):
        return names
    return [n for n in names if is_version_dir(Path(directory) / n) or n == "__pycache__"]
