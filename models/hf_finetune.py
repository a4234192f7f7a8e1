"""Fine-tune a local pretrained Hugging Face image classifier on a user's class folders (`train NAME --from-hf DIR`).

`DIR` is any `*ForImageClassification` `save_pretrained` folder (config.json + model.safetensors, with its
preprocessor_config.json). Its head is replaced by one for the folder's classes; images are decoded with the
processor's own steps (`attnserve.hf_preprocessing`: the transform `export --hf` will serve), and the chosen
augmentation is applied on top of them to training batches only. The run keeps the rules of `attnserve train
--data`: a held-out test split never seen in training or weight selection, a validation part when the folder is big
enough, and `--max-minutes` as the budget. It writes `RUNS_DIR/NAME/` as a `save_pretrained` folder (config with
the folder's labels, model.safetensors, the processor config) plus `metrics.json`: `export --hf RUNS_DIR/NAME`
takes it, under the name NAME.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from attnserve.errors import UserInputError
from attnserve.hf_preprocessing import input_steps
from attnserve.models.data import DatasetSplits, folder_dataset
from attnserve.models.hf_classifier import HFImageClassifier
from attnserve.models.metrics import TrainingMetrics
from attnserve.spec import IoSection, ModelSpec

if TYPE_CHECKING:
    from attnserve.models.train import TrainOptions

FINETUNE_RECIPE_ARGS: dict[str, Any] = dict(epochs=10, batch_size=32, lr=3e-4, weight_decay=0.05, warmup_fraction=0.1)
"""AdamW on every weight of the pretrained model (new head included), lr 3e-4 with 10% warm-up: a common fine-tuning
choice, not tuned here; `python -m bench.small_data --from-hf` measures it (docs/fine_tuning.md)."""
PROCESSOR_FILE = "preprocessor_config.json"
logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence Transformers' load report and progress bars: the head mismatch it lists is the intended new head."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load_config(source: Path) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig

    if not (source / "config.json").is_file() or not any(source.glob("*.safetensors")):
        raise UserInputError(
            f"--from-hf expects a save_pretrained folder with config.json and *.safetensors weights, got {source}"
        )
    try:
        return AutoConfig.from_pretrained(str(source), local_files_only=True)
    except (ValueError, OSError, KeyError) as exc:
        raise UserInputError(f"{source}/config.json is not a transformers config this version can read: {exc}") from exc


def _pretrained_with_new_head(source: Path, labels: tuple[str, ...]) -> nn.Module:
    """The pretrained model with a freshly initialised head for `labels` (also when the class count is the same)."""
    from transformers import AutoModelForImageClassification

    id2label = dict(enumerate(labels))
    try:
        with _quiet_transformers():
            hf_model = AutoModelForImageClassification.from_pretrained(
                str(source),
                num_labels=len(labels),
                id2label=id2label,
                label2id={label: index for index, label in id2label.items()},
                ignore_mismatched_sizes=True,  # the pretrained head has other classes
                local_files_only=True,
                use_safetensors=True,
            )
    except ValueError as exc:
        raise UserInputError(f"{source} is not an image classifier transformers can fine-tune: {exc}") from exc
    for module_name, module in hf_model.named_modules():
        if "classifier" in module_name and isinstance(module, nn.Linear) and hasattr(module, "reset_parameters"):
            module.reset_parameters()  # the old head's weights mean other classes, even at the same count
    logger.info("%s: pretrained weights loaded; a new head for %d classes", source, len(labels))
    return hf_model


def _spec(name: str, source: Path, config: Any) -> ModelSpec:
    steps = input_steps(config, source)
    channels = len(steps.mean)
    return ModelSpec(
        name=name,
        arch=f"hf:{config.model_type}",
        arch_args={"path": str(source.resolve())},
        kind="image",
        io=IoSection(
            layout="NCHW",
            input_shape=(channels, steps.height, steps.width),
            mean=steps.mean,
            std=steps.std,
            labels=("placeholder_a", "placeholder_b"),
            preprocessing=steps.preprocessing,
        ),
    )


def _save(run_dir: Path, source: Path, model: HFImageClassifier, metrics: TrainingMetrics) -> None:
    """The fine-tuned folder: save_pretrained + the source's processor config + metrics.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with _quiet_transformers():
        model.hf_model.save_pretrained(run_dir)
    if (source / PROCESSOR_FILE).is_file():
        shutil.copyfile(source / PROCESSOR_FILE, run_dir / PROCESSOR_FILE)
    metrics.save(run_dir)


def finetune_hf(name: str, source: Path, data_dir: Path, **options: Any) -> TrainingMetrics:
    """Fine-tune the classifier in `source` on the class folders in `data_dir` and write `runs_dir/NAME/`.

    Args:
        name: The new model's name (its run folder and, through `export --hf`, its served name).
        source: A `*ForImageClassification` `save_pretrained` folder (safetensors weights).
        data_dir: One folder of images per class.
        **options: `max_minutes`, `epochs`, `seed`, `runs_dir`, `augment`, `strict`, `progress`, `threads`: as
            `attnserve.models.train.train`.

    Returns:
        The metrics (also in `metrics.json`), with the accuracy on the held-out test split.

    Raises:
        UserInputError: For a folder that is not a classifier checkpoint, or a processor step attnserve cannot serve.
        DataError: For unreadable class folders.
    """
    from attnserve.models import train as training

    source, data_dir = Path(source), Path(data_dir)
    config = _load_config(source)
    spec = _spec(name, source, config)
    run_options = training.run_options(name, data_dir, options)
    threads = torch.get_num_threads()
    torch.set_num_threads(int(options.get("threads") or 1))
    try:
        torch.manual_seed(run_options.seed)
        started = time.perf_counter()
        data = folder_dataset(data_dir, spec, run_options.strict)
        spec = spec.with_io(labels=data.labels).replace(trained=True)
        model = HFImageClassifier(_pretrained_with_new_head(source, data.labels), spec.io.mean, spec.io.std)
        metrics = _fit_and_evaluate(run_options, model, spec, data, time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    _save(Path(run_options.runs_dir) / name, source, model, metrics)
    return metrics


def _fit_and_evaluate(
    run_options: TrainOptions, model: HFImageClassifier, spec: ModelSpec, data: DatasetSplits, data_seconds: float
) -> TrainingMetrics:
    """The `attnserve train --data` loop (validation split, best weights, budget) on the pretrained model."""
    from tqdm.auto import tqdm

    from attnserve.models import train as training

    recipe = training.Recipe(**FINETUNE_RECIPE_ARGS)
    train_index, validation_index = training._validation_split(data.train_labels, run_options.seed)
    keeper = training._BestWeights(data.train_pixels[validation_index], data.train_labels[validation_index])
    plan = training._plan(run_options, recipe, "image", len(train_index))
    show = run_options.progress and sys.stderr.isatty()
    bar = tqdm(total=plan.steps, desc=f"fine-tune {spec.name}", unit="step", disable=not show, leave=False)
    params = training._param_groups(model, recipe.weight_decay)
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, betas=(0.9, 0.999))
    model.train()
    train_data = (data.train_pixels[train_index], data.train_labels[train_index])
    started = time.perf_counter()
    fit = training._Fit(model, optimizer, recipe, plan, keeper)
    try:
        loop = training._fit(fit, train_data, run_options.seed, bar)
    finally:
        bar.close()
    train_seconds = time.perf_counter() - started
    keeper.maybe_check(model, loop.step, train_seconds, force=True)
    keeper.restore(model)
    return training._evaluate_run(run_options, fit, spec, data, loop, train_seconds, data_seconds)
