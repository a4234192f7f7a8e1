"""Training of the deployable models: AdamW, linear warm-up + cosine decay, held-out evaluation.

The schedule runs on *progress* = max(steps done / planned steps, seconds spent / time budget), so a
run that would not finish its planned epochs within `max_minutes` still completes its cosine decay
on time instead of stopping at a high learning rate. Recipes (per deployable) are in `RECIPES`.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attnserve.catalogue import DEPLOYABLE_NAMES, TRAINABLE_NAMES, Deployable, default_spec, get_deployable
from attnserve.defaults import RUNS_DIR
from attnserve.errors import UserInputError
from attnserve.models.checkpoint import build_model, save_run
from attnserve.models.constants import RESIZE_MODES
from attnserve.models.data import DatasetSplits, load_dataset
from attnserve.models.metrics import TrainingMetrics
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
    # lr 1e-3: on a small class folder 1e-3 reached 67-94% (3 seeds) where 3e-3 reached 54-63% (bench/small_data.py)
    "vit_shapes": Recipe(epochs=14, batch_size=64, lr=1e-3, train_samples=12000),
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


def augment_folder_batch(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Label-preserving augmentation of a uint8 image batch (B, C, H, W) from a small class folder.

    A random rotation (any angle), mirror, zoom (0.8-1.15x) and shift (up to 1/8 of the side) with the
    border colour filling the corners, then a random channel order and, for half the images, inverted
    colours: a class is a shape, whatever its orientation, place or colours. Same shape and dtype out.
    """
    count = pixels.shape[0]
    angle = torch.rand(count, generator=generator) * (2 * math.pi)
    scale = 0.8 + 0.35 * torch.rand(count, generator=generator)
    mirror = torch.where(torch.rand(count, generator=generator) < 0.5, -1.0, 1.0)
    shift = (torch.rand(count, 2, generator=generator) - 0.5) * 0.5  # in [-1, 1] grid units: up to 1/8 side
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * mirror, -sin, shift[:, 0]], 1), torch.stack([sin * mirror, cos, shift[:, 1]], 1)], 1
    )  # (B, 2, 3): output grid -> input sampling positions
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    moved = F.grid_sample(pixels.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    channels = torch.argsort(torch.rand(count, pixels.shape[1], generator=generator), dim=1)  # (B, C)
    moved = torch.gather(moved, 1, channels[:, :, None, None].expand_as(moved))
    invert = torch.rand(count, generator=generator) < 0.5
    moved = torch.where(invert[:, None, None, None], 255.0 - moved, moved)
    return moved.round().clamp(0, 255).to(pixels.dtype)


@torch.inference_mode()
def predict(model: nn.Module, pixels: torch.Tensor, batch_size: int = EVAL_BATCH_SIZE) -> torch.Tensor:
    """Class predictions (N,) of a model (set to eval mode) on uint8 inputs (N, ...)."""
    model.eval()
    predictions = [
        model(pixels[start : start + batch_size]).argmax(dim=1) for start in range(0, len(pixels), batch_size)
    ]
    return torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.int64)


@dataclass(frozen=True)
class Evaluation:
    """A model's top-1 accuracy and confusion matrix on held-out data."""

    accuracy: float
    """NaN without samples."""
    confusion_matrix: list[list[int]]
    """Rows: true class, columns: predicted class."""


def evaluate(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, num_classes: int) -> Evaluation:
    """Accuracy and confusion matrix (rows: true class, columns: predicted) on held-out data."""
    predicted = predict(model, pixels)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels.numpy(), predicted.numpy()), 1)
    accuracy = float((predicted == labels).float().mean()) if len(labels) else float("nan")
    return Evaluation(accuracy, confusion.tolist())


def train(options: TrainOptions) -> TrainingMetrics:
    """Train a deployable model (or a preset under a name of its own), evaluate it on held-out data and write
    `runs_dir/NAME/`.

    On a class folder (`data_dir`) the run lasts `max_minutes` unless `epochs` is given (`FOLDER_EPOCHS`), a
    validation part of the training files picks the best weights seen (only when it holds at least
    `MIN_VALIDATION_SAMPLES` files; smaller folders train on every file and keep the final weights), unreadable
    files are skipped (counted in the metrics) unless `strict`, and empty or tiny classes are named.

    Args:
        options: The model's name and the run's budget, data, seed, folders and choices (`TrainOptions`).

    Returns:
        The metrics (also written to `metrics.json`): test accuracy and confusion matrix, train seconds,
        epochs, samples per second, chance accuracy, skipped files, empty classes, and what was trained on.

    Raises:
        UnknownModelError: For an unknown name.
        UserInputError: For a deployable that is not trained here, or a non-positive budget.
        DataError: Unreadable data (with `strict`: any unreadable file or empty class folder).
    """
    previous_threads = torch.get_num_threads()
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    try:
        return _train(options)
    finally:
        torch.set_num_threads(previous_threads)


def run_options(name: str, data_dir: Path, options: dict[str, Any]) -> TrainOptions:
    """The options of a class-folder run from `train`'s keyword arguments (for `--from-hf` fine-tuning), checked.

    Raises:
        UserInputError: For a non-positive budget or an unknown augmentation.
    """
    return TrainOptions(
        name, float(options.get("max_minutes", 5.0)), options.get("epochs"), Path(data_dir),
        int(options.get("seed", 0)), Path(options.get("runs_dir", RUNS_DIR)), None, bool(options.get("progress", True)),
        None, bool(options.get("strict", False)), options.get("augment", "shift"),
    )  # fmt: skip


FOLDER_EPOCHS = 1_000_000
"""Class folders without --epochs: planned epochs so many that the time budget ends the run, so `--max-minutes`
means what it says (a sample target of 200,000 used to end a 120-image run after 2,084 epochs, the same with a
3-minute budget as with the default)."""
FOLDER_SHIFT = 2
"""Class folders: random translation (pixels) of training images; small data needs the augmentation."""
AUGMENTATIONS = ("shift", "rotate-colour")
"""Training-only augmentations `train(augment=...)` offers. "rotate-colour" measured with bench/small_data.py (3
classes x 30 generated shapes, 1 minute, seeds 0-2, vit_shapes, 600 extra evaluation images): 71 / 89 / 70%
against 41 / 38 / 38% with "shift" (2026-12-02, load 0.6-2.0)."""
VALIDATION_FRACTION = 0.15
"""Class folders: share of each class's training files held out to pick the best weights."""
MIN_VALIDATION_SAMPLES = 30
"""Class folders: smaller validation parts are not made. Measured on 3 classes x 30 generated shapes (60 s, load
~5-6, 3 seeds): 12 validation images picked steps 132-195 of ~500-600 and the runs scored 38-42% on 600 extra
images; picking on 12 images (8.3 points each) follows noise and throws away most of the run and 11 files."""
VALIDATE_EVERY_S = 1.0


@dataclass(frozen=True)
class TrainOptions:
    """One training run (`attnserve train`'s flags); checked when built.

    Raises:
        UserInputError: A non-positive budget or thread count, or an unknown augmentation.
    """

    name: str
    """A trainable deployable name (`TRAINABLE_NAMES`), or any new model name with `preset`."""
    max_minutes: float = 5.0
    """Wall-clock budget of the optimisation loop (data loading and evaluation come on top)."""
    epochs: int | None = None
    """Planned epochs (default: the recipe's, or sized from the data for a class folder)."""
    data_dir: Path | None = None
    """A class-folder dataset to train on instead of the built-in one (labels from its folders)."""
    seed: int = 0
    """Seeds weights, shuffling, augmentation and the procedural training set."""
    runs_dir: Path = RUNS_DIR
    """Parent folder of the run folder."""
    arch_overrides: dict[str, Any] | None = None
    """Architecture arguments replacing the recipe's (e.g. a tiny variant for tests)."""
    progress: bool = True
    """Show a tqdm progress bar on stderr (only when stderr is a terminal)."""
    threads: int | None = DEFAULT_TRAIN_THREADS
    """torch intra-op threads during the run (restored afterwards); None keeps the current setting."""
    strict: bool = False
    """Abort on an unreadable file or an empty class folder instead of leaving it out."""
    augment: str = "shift"
    """Training-only image augmentation, one of `AUGMENTATIONS`: `"shift"` (a small random translation) or
    `"rotate-colour"` (`augment_folder_batch`: for classes that do not depend on orientation, mirroring or
    colours). Served inputs are never augmented."""
    preset: str | None = None
    """The deployable whose architecture, recipe and serving facts a new `name` starts from (default: `name`
    itself); the presets themselves stay as they are."""
    image_size: int | None = None
    """Class folders: the square input side (default: the preset's), recorded in the spec."""
    resize: str | None = None
    """Class folders: how images are fitted, `squash`, `letterbox` or `crop` (default: the preset's), recorded in
    the spec's preprocessing (the served pipeline and the client apply it too)."""

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise UserInputError(f"threads must be >= 1, got {self.threads}")
        if self.augment not in AUGMENTATIONS:
            raise UserInputError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {self.augment!r}")
        if self.max_minutes <= 0:
            raise UserInputError(f"max_minutes must be > 0, got {self.max_minutes}")

    @property
    def base(self) -> str:
        """The deployable the run starts from: `preset`, or `name` itself."""
        return self.preset or self.name


@dataclass(frozen=True)
class _Plan:
    """How a run is sized: epochs, batch, steps, augmentation, budget."""

    epochs: int
    batch_size: int
    steps: int
    shift: int
    budget_seconds: float
    augment: bool = False


def _plan(options: TrainOptions, recipe: Recipe, kind: str, train_count: int) -> _Plan:
    folder = options.data_dir is not None
    epochs = options.epochs
    if epochs is None:
        epochs = FOLDER_EPOCHS if folder else recipe.epochs
    if epochs < 1:
        raise UserInputError(f"epochs must be >= 1, got {epochs}")
    # small folders: several updates per epoch rather than one full batch
    batch_size = min(recipe.batch_size, max(16, train_count // 4)) if folder else recipe.batch_size
    shift = (max(recipe.max_shift, FOLDER_SHIFT) if folder else recipe.max_shift) if kind == "image" else 0
    steps = epochs * max(1, math.ceil(train_count / batch_size))
    if options.augment != "shift" and kind != "image":
        raise UserInputError(f"augment={options.augment!r} is for image models; {options.name!r} takes video")
    augment = options.augment == "rotate-colour"
    return _Plan(epochs, batch_size, steps, shift, options.max_minutes * 60.0, augment)


def _validation_split(labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified (train_index, validation_index): `VALIDATION_FRACTION` of each class with >= 3 samples.

    No validation part (every file trains, the final weights are kept) when it would hold fewer than
    `MIN_VALIDATION_SAMPLES` files: picking weights on a dozen images is noise.
    """
    if round(len(labels) * VALIDATION_FRACTION) < MIN_VALIDATION_SAMPLES:
        return torch.arange(len(labels)), torch.zeros(0, dtype=torch.int64)
    rng = np.random.default_rng(seed)
    train_index, validation_index = [], []
    for label in torch.unique(labels).tolist():
        members = rng.permutation(np.flatnonzero(labels.numpy() == label))
        held = max(1, round(len(members) * VALIDATION_FRACTION)) if len(members) >= 3 else 0
        validation_index += members[:held].tolist()
        train_index += members[held:].tolist()
    return torch.tensor(sorted(train_index)), torch.tensor(sorted(validation_index), dtype=torch.int64)


class _BestWeights:
    """Evaluates on the validation part now and then and keeps the best weights (accuracy, then loss)."""

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor) -> None:
        self.pixels, self.labels = pixels, labels
        self.best: tuple[float, float] | None = None
        self.state: dict[str, torch.Tensor] | None = None
        self.best_step, self.last_check, self.checks = 0, 0.0, 0

    def maybe_check(self, model: nn.Module, step: int, now: float, force: bool = False) -> None:
        if not len(self.labels) or (not force and now - self.last_check < VALIDATE_EVERY_S):
            return
        self.last_check, self.checks = now, self.checks + 1
        with torch.inference_mode():
            model.eval()
            logits = model(self.pixels)
            model.train()
        score = (float((logits.argmax(1) == self.labels).float().mean()), -float(F.cross_entropy(logits, self.labels)))
        if self.best is None or score > self.best:
            self.best, self.best_step = score, step
            self.state = {key: value.detach().clone() for key, value in model.state_dict().items()}

    def restore(self, model: nn.Module) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)


@dataclass(frozen=True)
class _Fit:
    """What the optimisation loop works on: the model and its optimiser, the recipe and plan, the best-weights keeper."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    recipe: Recipe
    plan: _Plan
    keeper: _BestWeights


@dataclass
class LoopState:
    """Where an optimisation loop stands: steps, samples seen, last loss, and what ended it (epochs or time)."""

    step: int = 0
    samples_seen: int = 0
    loss: float = float("nan")
    stopped_by: str = "epochs"


def _fit(fit: _Fit, data: tuple[torch.Tensor, torch.Tensor], seed: int, bar: Any) -> LoopState:
    """The optimisation loop: AdamW on the schedule's progress = max(steps / planned, seconds / budget)."""
    model, optimizer, recipe, plan, keeper = fit.model, fit.optimizer, fit.recipe, fit.plan, fit.keeper
    pixels_all, labels_all = data
    generator = torch.Generator().manual_seed(seed)
    loop, started = LoopState(), time.perf_counter()
    while loop.step < plan.steps:
        order = torch.randperm(len(labels_all), generator=generator)
        for start in range(0, len(labels_all), plan.batch_size):
            elapsed = time.perf_counter() - started
            run_progress = max(loop.step / plan.steps, elapsed / plan.budget_seconds)
            if run_progress >= 1.0:
                loop.stopped_by = "epochs" if loop.step >= plan.steps else "time"
                return loop
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr * lr_factor(run_progress, recipe.warmup_fraction)
            batch_index = order[start : start + plan.batch_size]
            batch = pixels_all[batch_index]
            if plan.augment:
                batch = augment_folder_batch(batch, generator)  # includes a shift
            else:
                batch = _random_shift(batch, plan.shift, generator)
            logits = model(batch)
            loss = F.cross_entropy(logits, labels_all[batch_index], label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loop.step, loop.samples_seen, loop.loss = loop.step + 1, loop.samples_seen + len(batch_index), loss.item()
            keeper.maybe_check(model, loop.step, elapsed)
            bar.update(1)
            bar.set_postfix(loss=f"{loop.loss:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.1e}")
    return loop


def _train(options: TrainOptions) -> TrainingMetrics:
    from tqdm.auto import tqdm

    name = options.name
    entry = _check_options(options)
    if entry.kind == "detection":
        return _train_detector(options)
    recipe = RECIPES.get(options.base, Recipe(epochs=10))
    torch.manual_seed(options.seed)
    data_started = time.perf_counter()
    base_spec = _run_spec(options)
    data = load_dataset(
        options.base, options.seed, options.data_dir, recipe.train_samples, strict=options.strict, spec=base_spec
    )
    data_seconds = time.perf_counter() - data_started
    spec = base_spec.with_io(labels=data.labels).replace(trained=True)
    model = build_model(spec)
    model.train()

    train_index = torch.arange(len(data.train_labels))
    validation_index = torch.zeros(0, dtype=torch.int64)
    if options.data_dir is not None:
        train_index, validation_index = _validation_split(data.train_labels, options.seed)
    keeper = _BestWeights(data.train_pixels[validation_index], data.train_labels[validation_index])
    plan = _plan(options, recipe, entry.kind, len(train_index))
    show = options.progress and sys.stderr.isatty()  # a log gets no bar redraws
    bar = tqdm(total=plan.steps, desc=f"train {name}", unit="step", disable=not show, leave=False)
    # built before the clock starts: its first construction imports torch._dynamo (11 s measured under load)
    optimizer = torch.optim.AdamW(_param_groups(model, recipe.weight_decay), lr=recipe.lr, betas=(0.9, 0.999))
    train_data = (data.train_pixels[train_index], data.train_labels[train_index])
    started = time.perf_counter()
    fit = _Fit(model, optimizer, recipe, plan, keeper)
    try:
        loop = _fit(fit, train_data, options.seed, bar)
    finally:
        bar.close()
    train_seconds = time.perf_counter() - started
    keeper.maybe_check(model, loop.step, train_seconds, force=True)
    keeper.restore(model)
    return _finish(options, fit, spec, data, loop, train_seconds, data_seconds)


def _train_detector(options: TrainOptions) -> TrainingMetrics:
    """Detectors train on their procedural scenes (`attnserve.models.detection_train`), scored by COCO mAP."""
    from attnserve.models.detection_train import train_detector

    if options.data_dir is not None or options.augment != "shift":
        raise UserInputError(f"{options.name!r} trains on procedural scenes only: --data and --augment do not apply")
    spec = _run_spec(options)
    return train_detector(options.name, spec, options.max_minutes, options.seed, options.runs_dir)


def _check_options(options: TrainOptions) -> Deployable:
    """The preset's recipe, after refusing what cannot work: an unknown name without a preset, a preset's name for
    another preset, a preset with no dataset and no folder, size or resize options without a folder."""
    name, preset = options.name, options.base
    if preset == name and name not in DEPLOYABLE_NAMES:
        raise UserInputError(
            f"{name!r} is not a preset model: train it under this name with --arch PRESET (one of "
            f"{', '.join(TRAINABLE_NAMES)}), e.g. `attnserve train {name} --arch vit_shapes --data DIR`"
        )
    if preset != name and name in DEPLOYABLE_NAMES:
        raise UserInputError(f"{name!r} is the name of a preset; pick a new name for a model built from {preset!r}")
    entry = get_deployable(preset)
    if preset not in TRAINABLE_NAMES and options.data_dir is None:
        raise UserInputError(
            f"{preset!r} is not trained here (no built-in dataset); trainable: {', '.join(TRAINABLE_NAMES)}"
        )
    if (options.image_size or options.resize) and options.data_dir is None:
        raise UserInputError("--image-size and --resize fit your own images: they need --data DIR")
    if options.resize is not None and options.resize not in RESIZE_MODES:
        raise UserInputError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {options.resize!r}")
    if options.image_size is not None and not 8 <= options.image_size <= 512:
        raise UserInputError(f"image_size must be in 8..512 pixels, got {options.image_size}")
    return entry


def _run_spec(options: TrainOptions) -> ModelSpec:
    """The untrained spec of the run: the preset's, under the run's name, size and resize mode."""
    spec = default_spec(options.base, **(options.arch_overrides or {}))
    io: dict[str, Any] = {}
    if options.image_size is not None:
        size = options.image_size
        io["input_shape"] = (*spec.io.input_shape[:-2], size, size)
    if options.resize is not None:
        io["preprocessing"] = replace(spec.io.preprocessing, resize=options.resize)
    return spec.with_io(**io).replace(name=options.name)


def _finish(options: TrainOptions, fit: _Fit, spec: ModelSpec, data: DatasetSplits, loop: LoopState, train_seconds: float,
            data_seconds: float) -> TrainingMetrics:  # fmt: skip
    """Evaluate on the held-out test split, write the run folder, return the metrics."""
    metrics = _evaluate_run(options, fit, spec, data, loop, train_seconds, data_seconds)
    save_run(Path(options.runs_dir) / options.name, fit.model, spec, metrics)
    logger.info("%s: test accuracy %.4f after %.1f epochs in %.0f s", options.name, metrics.test_accuracy,
                metrics.epochs, train_seconds)  # fmt: skip
    return metrics


def _evaluate_run(options: TrainOptions, fit: _Fit, spec: ModelSpec, data: DatasetSplits, loop: LoopState,
                  train_seconds: float, data_seconds: float) -> TrainingMetrics:  # fmt: skip
    """The run's metrics, with the accuracy on the held-out test split (never seen in training or selection)."""
    model, recipe, plan, keeper = fit.model, fit.recipe, fit.plan, fit.keeper
    eval_started = time.perf_counter()
    train_count = max(1, len(data.train_labels) - len(keeper.labels))
    evaluation = evaluate(model, data.test_pixels, data.test_labels, spec.num_classes)
    metrics = TrainingMetrics(
        test_accuracy=evaluation.accuracy,
        confusion_matrix=evaluation.confusion_matrix,
        name=options.name,
        arch=spec.arch,
        dataset=data.source,
        labels=list(data.labels),
        chance_accuracy=1.0 / spec.num_classes,
        train_samples=train_count,
        validation_samples=len(keeper.labels),
        test_samples=len(data.test_labels),
        epochs=loop.samples_seen / train_count,
        planned_epochs=plan.epochs,
        batch_size=plan.batch_size,
        steps=loop.step,
        stopped_by=loop.stopped_by,
        best_step=keeper.best_step if keeper.state is not None else loop.step,
        validation_accuracy=keeper.best[0] if keeper.best is not None else None,
        final_train_loss=loop.loss,
        train_seconds=train_seconds,
        data_seconds=data_seconds,
        eval_seconds=time.perf_counter() - eval_started,
        samples_per_second=loop.samples_seen / max(train_seconds, 1e-9),
        max_minutes=options.max_minutes,
        seed=options.seed,
        torch_threads=torch.get_num_threads(),  # during training
        recipe=asdict(recipe),
        skipped_files=list(data.skipped_files),
        empty_classes=list(data.empty_classes),
        tiny_classes=list(data.tiny_classes),
        augment="rotate-colour" if plan.augment else "shift",
    )
    return metrics
