"""Training of the deployable models: AdamW, linear warm-up + cosine decay, held-out evaluation.

The schedule runs on *progress* = max(steps done / planned steps, seconds spent / time budget), so a
run that would not finish its planned epochs within `max_minutes` still completes its cosine decay
on time instead of stopping at a high learning rate. Recipes (per deployable) are in `RECIPES`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attnserve.errors import UserInputError
from attnserve.models.checkpoint import build_model, save_run
from attnserve.models.data import DatasetSplits, load_dataset
from attnserve.models.deployables import TRAINABLE_NAMES, default_spec, get_deployable
from attnserve.spec import ModelSpec

logger = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 256
DEFAULT_TRAIN_THREADS = 1
"""Intra-op threads while training. These models are small: on the shared 2 cores (load average ~7), one
thread trained 10-17x faster than two (OpenMP threads spin-waiting for descheduled partners)."""


@dataclass(frozen=True)
class Recipe:
    """Optimisation settings of one deployable.

    Attributes:
        epochs: Planned epochs (the time budget may shorten them; the schedule adapts).
        batch_size: Training batch size.
        lr: Peak learning rate (AdamW).
        weight_decay: AdamW weight decay (not applied to biases, norms, embeddings).
        warmup_fraction: Share of the run spent warming the learning rate up linearly.
        label_smoothing: Cross-entropy label smoothing.
        max_shift: Random translation of training images by up to this many pixels (0 = none).
        train_samples: Size of a procedural training set (None: the dataset's default); more unique
            samples instead of more epochs keeps the models from memorising.
    """

    epochs: int
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    label_smoothing: float = 0.0
    max_shift: int = 0
    train_samples: int | None = None


RECIPES: dict[str, Recipe] = {
    "vit_digits": Recipe(epochs=15, batch_size=64, lr=2e-3, max_shift=2, label_smoothing=0.1),
    "cnn_cbam_digits": Recipe(epochs=8, batch_size=64, lr=3e-3, max_shift=2),
    "vit_shapes": Recipe(epochs=14, batch_size=64, lr=3e-3, train_samples=12000),
    "timesformer_motion": Recipe(epochs=10, batch_size=32, lr=2e-3),
    "temporal_motion": Recipe(epochs=6, batch_size=32, lr=2e-3, train_samples=6000),
    "spatial_motion": Recipe(epochs=6, batch_size=32, lr=2e-3),
}


def lr_factor(progress: float, warmup_fraction: float) -> float:
    """Learning-rate multiplier at `progress` in [0, 1]: linear warm-up, then cosine decay to 0."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup_fraction > 0 and progress < warmup_fraction:
        return progress / warmup_fraction
    decay = (progress - warmup_fraction) / max(1e-12, 1.0 - warmup_fraction)
    return 0.5 * (1.0 + math.cos(math.pi * decay))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # No decay on biases, norm scales, tokens and position embeddings (1-D or named embeddings).
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if parameter.ndim <= 1 or "pos_" in name or "token" in name or name.endswith("query"):
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _random_shift(pixels: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image of a uint8 batch (B, C, H, W) by up to `max_shift` pixels (zero fill)."""
    if max_shift <= 0:
        return pixels
    height, width = pixels.shape[-2:]
    padded = F.pad(pixels, (max_shift,) * 4)  # (B, C, H + 2s, W + 2s)
    offsets = torch.randint(0, 2 * max_shift + 1, (pixels.shape[0], 2), generator=generator)
    return torch.stack(
        [padded[index, :, dy : dy + height, dx : dx + width] for index, (dy, dx) in enumerate(offsets.tolist())]
    )


@torch.inference_mode()
def predict(model: nn.Module, pixels: torch.Tensor, batch_size: int = EVAL_BATCH_SIZE) -> torch.Tensor:
    """Class predictions (N,) of a model (set to eval mode) on uint8 inputs (N, ...)."""
    model.eval()
    predictions = [
        model(pixels[start : start + batch_size]).argmax(dim=1) for start in range(0, len(pixels), batch_size)
    ]
    return torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.int64)


def evaluate(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Accuracy and confusion matrix (rows: true class, columns: predicted) on held-out data."""
    predicted = predict(model, pixels)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels.numpy(), predicted.numpy()), 1)
    accuracy = float((predicted == labels).float().mean()) if len(labels) else float("nan")
    return {"test_accuracy": accuracy, "confusion_matrix": confusion.tolist()}


def train(
    name: str,
    *,
    max_minutes: float = 5.0,
    epochs: int | None = None,
    data_dir: Path | None = None,
    seed: int = 0,
    runs_dir: Path = Path("runs"),
    arch_overrides: dict[str, Any] | None = None,
    progress: bool = True,
    threads: int | None = DEFAULT_TRAIN_THREADS,
) -> dict[str, Any]:
    """Train a deployable model, evaluate it on held-out data and write `runs_dir/NAME/`.

    Args:
        name: A trainable deployable name (`TRAINABLE_NAMES`).
        max_minutes: Wall-clock budget of the optimisation loop (data loading and evaluation come on top).
        epochs: Planned epochs (default: the recipe's); the budget may end the run earlier.
        data_dir: A class-folder dataset to train on instead of the built-in one (labels from its folders).
        seed: Seeds weights, shuffling, augmentation and the procedural training set.
        runs_dir: Parent folder of the run folder.
        arch_overrides: Architecture arguments replacing the recipe's (e.g. a tiny variant for tests).
        progress: Show a tqdm progress bar on stderr.
        threads: torch intra-op threads during the run (restored afterwards); None keeps the current setting.

    Returns:
        The metrics (also written to `metrics.json`): test_accuracy, confusion_matrix, train_seconds,
        epochs, samples_per_second, chance_accuracy, and what was trained on.

    Raises:
        UnknownModelError: For an unknown name.
        UserInputError: For a deployable that is not trained here, or a non-positive budget.
    """
    previous_threads = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise UserInputError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        return _train(name, max_minutes, epochs, data_dir, seed, Path(runs_dir), arch_overrides, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    name: str,
    max_minutes: float,
    epochs: int | None,
    data_dir: Path | None,
    seed: int,
    runs_dir: Path,
    arch_overrides: dict[str, Any] | None,
    progress: bool,
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    entry = get_deployable(name)
    if name not in TRAINABLE_NAMES and data_dir is None:
        raise UserInputError(
            f"{name!r} is not trained here (no built-in dataset); trainable: {', '.join(TRAINABLE_NAMES)}"
        )
    if max_minutes <= 0:
        raise UserInputError(f"max_minutes must be > 0, got {max_minutes}")
    recipe = RECIPES.get(name, Recipe(epochs=10))
    planned_epochs = epochs if epochs is not None else recipe.epochs
    if planned_epochs < 1:
        raise UserInputError(f"epochs must be >= 1, got {planned_epochs}")

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    data_started = time.perf_counter()
    data: DatasetSplits = load_dataset(name, seed=seed, data_dir=data_dir, train_count=recipe.train_samples)
    data_seconds = time.perf_counter() - data_started
    base_spec = default_spec(name, **(arch_overrides or {}))
    spec = ModelSpec.model_validate({**base_spec.model_dump(), "labels": data.labels, "trained": True})
    model = build_model(spec)
    model.train()
    optimizer = torch.optim.AdamW(_param_groups(model, recipe.weight_decay), lr=recipe.lr, betas=(0.9, 0.999))

    train_count = len(data.train_labels)
    steps_per_epoch = max(1, math.ceil(train_count / recipe.batch_size))
    planned_steps = planned_epochs * steps_per_epoch
    budget_seconds = max_minutes * 60.0
    shift = recipe.max_shift if entry.kind == "image" else 0
    step, samples_seen, loss_value = 0, 0, float("nan")
    started = time.perf_counter()
    bar = tqdm(total=planned_steps, desc=f"train {name}", unit="step", disable=not progress, leave=False)
    stopped_by = "epochs"
    try:
        while step < planned_steps:
            order = torch.randperm(train_count, generator=generator)
            for start in range(0, train_count, recipe.batch_size):
                elapsed = time.perf_counter() - started
                run_progress = max(step / planned_steps, elapsed / budget_seconds)
                if run_progress >= 1.0:
                    stopped_by = "epochs" if step >= planned_steps else "time"
                    break
                for group in optimizer.param_groups:
                    group["lr"] = recipe.lr * lr_factor(run_progress, recipe.warmup_fraction)
                batch_index = order[start : start + recipe.batch_size]
                pixels = _random_shift(data.train_pixels[batch_index], shift, generator)
                logits = model(pixels)
                loss = F.cross_entropy(logits, data.train_labels[batch_index], label_smoothing=recipe.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                samples_seen += len(batch_index)
                loss_value = loss.item()
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.1e}")
            else:
                continue
            break
    finally:
        bar.close()
    train_seconds = time.perf_counter() - started

    eval_started = time.perf_counter()
    metrics: dict[str, Any] = evaluate(model, data.test_pixels, data.test_labels, spec.num_classes)
    metrics.update(
        name=name,
        arch=spec.arch,
        dataset=data.source,
        labels=list(data.labels),
        chance_accuracy=1.0 / spec.num_classes,
        train_samples=train_count,
        test_samples=len(data.test_labels),
        epochs=samples_seen / train_count,
        planned_epochs=planned_epochs,
        steps=step,
        stopped_by=stopped_by,
        final_train_loss=loss_value,
        train_seconds=train_seconds,
        data_seconds=data_seconds,
        eval_seconds=time.perf_counter() - eval_started,
        samples_per_second=samples_seen / max(train_seconds, 1e-9),
        max_minutes=max_minutes,
        seed=seed,
        torch_threads=torch.get_num_threads(),  # during training
        recipe=asdict(recipe),
    )
    save_run(Path(runs_dir) / name, model, spec, metrics)
    logger.info(
        "%s: test accuracy %.4f after %.1f epochs in %.0f s",
        name,
        metrics["test_accuracy"],
        metrics["epochs"],
        train_seconds,
    )
    return metrics
