"""Checkpoints: a run folder holds `model.safetensors`, `spec.json` (the ModelSpec) and `metrics.json`.

Loading never unpickles: weights come from safetensors, the architecture from `spec.arch` + `spec.arch_args`
and the spec's input facts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from attnserve.catalogue import DEPLOYABLE_NAMES, INPUT_FACT_ARGS, TRAINABLE_NAMES, default_spec
from attnserve.defaults import RUNS_DIR
from attnserve.errors import DataError, UnknownModelError
from attnserve.models.metrics import TrainingMetrics
from attnserve.models.registry import create_model
from attnserve.spec import SPEC_FILENAME, ModelSpec

WEIGHTS_FILENAME = "model.safetensors"

logger = logging.getLogger(__name__)


def spec_input_args(spec: ModelSpec) -> dict[str, Any]:
    """Constructor arguments derived from the spec's input facts (size, channels, frames, classes, mean/std)."""
    if spec.kind == "detection":  # the detector takes a non-square (H, W)
        return dict(img_size=(spec.height, spec.width), in_chans=spec.channels, num_classes=spec.num_classes,
                    mean=spec.io.mean, std=spec.io.std, max_detections=spec.io.max_detections)  # fmt: skip
    if spec.height != spec.width:
        raise ValueError(f"models take square inputs; spec {spec.name!r} has {spec.height}x{spec.width}")
    input_args: dict[str, Any] = dict(
        img_size=spec.height, in_chans=spec.channels, num_classes=spec.num_classes, mean=spec.io.mean, std=spec.io.std
    )
    if spec.kind == "video":
        input_args["num_frames"] = spec.frames
    return input_args


def build_model(spec: ModelSpec) -> nn.Module:
    """Build the spec's architecture with random weights, in eval mode.

    Raises:
        UnknownModelError: When `spec.arch` is not registered.
        ValueError: When `spec.arch_args` repeats an input fact that the spec already fixes.
    """
    clashes = sorted(set(spec.arch_args) & set(INPUT_FACT_ARGS))
    if clashes:
        raise ValueError(f"spec {spec.name!r}: arch_args {clashes} duplicate the spec's input facts; remove them")
    model = create_model(spec.arch, **spec_input_args(spec), **spec.arch_args)
    return model.eval()


def save_run(run_dir: Path, model: nn.Module, spec: ModelSpec, metrics: TrainingMetrics | None = None) -> Path:
    """Write `model.safetensors`, `spec.json` and (given metrics) `metrics.json` into `run_dir` (created if needed).

    Returns:
        The run folder.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {key: tensor.detach().to("cpu").contiguous() for key, tensor in model.state_dict().items()}
    save_file(state, str(run_dir / WEIGHTS_FILENAME), metadata={"arch": spec.arch, "name": spec.name})
    spec.save(run_dir / SPEC_FILENAME)
    if metrics is not None:
        metrics.save(run_dir)
    return run_dir


def has_checkpoint(run_dir: Path) -> bool:
    """True when `run_dir` holds both `spec.json` and `model.safetensors`."""
    run_dir = Path(run_dir)
    return (run_dir / SPEC_FILENAME).is_file() and (run_dir / WEIGHTS_FILENAME).is_file()


def load_run(run_dir: Path) -> tuple[nn.Module, ModelSpec]:
    """Load a run folder written by `save_run`: the model (eval mode) and its spec.

    Raises:
        DataError: When files are missing or the weights do not fit the spec's architecture.
    """
    run_dir = Path(run_dir)
    if not has_checkpoint(run_dir):
        raise DataError(f"expected a run folder with {SPEC_FILENAME} and {WEIGHTS_FILENAME}, got {run_dir}")
    spec = ModelSpec.load(run_dir / SPEC_FILENAME)
    model = build_model(spec)
    try:
        state = load_file(str(run_dir / WEIGHTS_FILENAME))
    except SafetensorError as exc:  # e.g. a pickle renamed to model.safetensors: refused, never unpickled
        raise DataError(f"expected a safetensors file at {run_dir / WEIGHTS_FILENAME}; cannot read it: {exc}") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DataError(
            f"weights in {run_dir / WEIGHTS_FILENAME} do not fit architecture {spec.arch!r}: {exc}"
        ) from exc
    return model.eval(), spec


def load_metrics(run_dir: Path) -> TrainingMetrics | None:
    """The run's `metrics.json`, or None when absent (`TrainingMetrics.load`; DataError when unreadable)."""
    return TrainingMetrics.load(run_dir)


class MissingCheckpointError(DataError):
    """A trainable deployable was asked for without its checkpoint, and random weights were not allowed."""


def missing_checkpoint(name: str, run_dir: Path) -> MissingCheckpointError:
    """The error for a trainable deployable without its checkpoint: names the path looked in and what to do."""
    run_dir = Path(run_dir)
    return MissingCheckpointError(
        f"no checkpoint for {name!r}: expected {run_dir / WEIGHTS_FILENAME} and {run_dir / SPEC_FILENAME} "
        f"(looked in {run_dir.resolve()}); run `attnserve train {name}` first, check --runs-dir, "
        "or pass --untrained to export random weights on purpose"
    )


def resolve(
    name_or_path: str | Path, runs_dir: Path = RUNS_DIR, *, allow_untrained: bool = False
) -> tuple[nn.Module, ModelSpec]:
    """A model and spec from a run folder, or from a deployable name.

    A deployable name uses `runs_dir/NAME/` when it holds a checkpoint. Without one, a deployable that is not
    trained here (`vit_tiny_patch16_224`, untrained on purpose) gets its untrained default (random weights,
    `spec.trained` False); a trainable one is refused unless `allow_untrained` (never silent random weights).

    Raises:
        UnknownModelError: When the argument is neither a run folder nor a deployable name.
        MissingCheckpointError: A trainable deployable has no checkpoint and `allow_untrained` is False.
    """
    path = Path(name_or_path)
    if path.is_dir() and (path / SPEC_FILENAME).is_file():
        return load_run(path)
    name = str(name_or_path)
    run_dir = Path(runs_dir) / name
    if has_checkpoint(run_dir):  # a deployable's run, or a model trained under a name of its own (`train --arch`)
        return load_run(run_dir)
    if name not in DEPLOYABLE_NAMES:
        raise UnknownModelError(name, DEPLOYABLE_NAMES)
    if name in TRAINABLE_NAMES and not allow_untrained:
        raise missing_checkpoint(name, run_dir)
    logger.warning("no checkpoint in %s: using UNTRAINED %s (random weights; marked trained=false)", run_dir, name)
    spec = default_spec(name)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same untrained weights every time
        model = build_model(spec)
    return model, spec
