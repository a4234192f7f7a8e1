"""Training of the detector on procedural scenes, evaluated with COCO mAP (pycocotools) on held-out scenes.

The same schedule as the classifiers (`attnserve.models.train`: AdamW, warm-up + cosine on progress =
max(steps / planned, seconds / budget)); a fresh scene set per run from the seed (the test scenes come from
another seed stream, never trained on). Every `CURVE_EVERY_S` seconds the mAP of a small validation set of
scenes is recorded: the training curve in `metrics.json`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from attnserve.boxes import BoxMapping
from attnserve.detection import CandidateSelection, Detection, coco_map, coco_results, detections_from_candidates
from attnserve.models.checkpoint import build_model, save_run
from attnserve.models.detector import CenterDetector, detection_loss, heads_targets
from attnserve.models.metrics import TrainingMetrics
from attnserve.models.scenes import Scene, coco_ground_truth, make_scenes, render_batch
from attnserve.models.train import LoopState, Recipe, _param_groups, lr_factor
from attnserve.preprocessing import to_chw
from attnserve.spec import ModelSpec

logger = logging.getLogger(__name__)

DETECTION_RECIPE = Recipe(epochs=40, batch_size=32, lr=2e-3, weight_decay=0.05, train_samples=12_000)
TEST_SCENES = 500
VALIDATION_SCENES = 100
CURVE_EVERY_S = 30.0
TEST_SEED_OFFSET = 1_000_003
"""Held-out scenes come from `seed + TEST_SEED_OFFSET` (validation from twice that): never from the training seed."""


@dataclass
class SceneSet:
    """Scenes drawn at the model's input size, with their boxes in those pixels and the CenterNet targets."""

    scenes: list[Scene]
    pixels: torch.Tensor  # (N, 3, H, W) uint8
    targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

    @classmethod
    def make(cls, count: int, seed: int, spec: ModelSpec) -> SceneSet:
        scenes = make_scenes(count, seed, aspect=spec.width / spec.height)
        pixels = torch.from_numpy(render_batch(scenes, spec.width, spec.height))
        boxes = [torch.from_numpy(scene.boxes(spec.width, spec.height)).float() for scene in scenes]
        labels = [torch.from_numpy(scene.labels()) for scene in scenes]
        return cls(scenes, pixels, heads_targets(boxes, labels, spec.num_classes, spec.height, spec.width))


@torch.inference_mode()
def evaluate_scenes(model: torch.nn.Module, scene_set: SceneSet, spec: ModelSpec) -> dict[str, float]:
    """COCO mAP of `model` on scenes drawn at the input size (every candidate counts: threshold 0)."""
    model.eval()
    identity = BoxMapping.for_image(spec.width, spec.height, spec.width, spec.height, spec.io.preprocessing)
    every = CandidateSelection(score_threshold=0.0)
    results: list[dict[str, Any]] = []
    for start in range(0, len(scene_set.scenes), 128):
        boxes, scores, classes = model(scene_set.pixels[start : start + 128])
        for offset in range(len(boxes)):
            found = detections_from_candidates(boxes[offset].numpy(), scores[offset].numpy(),
                                               classes[offset].numpy(), spec.io.labels, identity, every)  # fmt: skip
            results += coco_results(start + offset, found, spec.io.labels)
    sizes = [(spec.width, spec.height)] * len(scene_set.scenes)
    return coco_map(coco_ground_truth(scene_set.scenes, sizes), results)


@torch.inference_mode()
def detect_files(
    model: torch.nn.Module, spec: ModelSpec, files: Sequence[Path], score_threshold: float
) -> list[list[Detection]]:
    """In-process detections of image files, as the served pipeline computes them: each file decoded and resized
    by `to_chw` (the spec's preprocessing), the PyTorch model, then the same post-processing (threshold, top-k,
    boxes mapped back to the file's pixels). One list per file."""
    model.eval()
    selection = CandidateSelection(score_threshold=score_threshold)
    answers: list[list[Detection]] = []
    for path in files:
        with Image.open(path) as image:
            pixels = torch.from_numpy(to_chw(image, spec.channels, spec.height, spec.width, spec.io.preprocessing))
            mapping = BoxMapping.for_image(image.width, image.height, spec.width, spec.height, spec.io.preprocessing)
        boxes, scores, classes = (output[0].numpy() for output in model(pixels[None]))
        answers.append(detections_from_candidates(boxes, scores, classes, spec.io.labels, mapping, selection))
    return answers


def _fit(model: CenterDetector, train_set: SceneSet, validation: SceneSet, spec: ModelSpec, budget_s: float,
         seed: int, curve: list[dict[str, float]]) -> LoopState:  # fmt: skip
    recipe = DETECTION_RECIPE
    optimizer = torch.optim.AdamW(_param_groups(model, recipe.weight_decay), lr=recipe.lr)
    generator = torch.Generator().manual_seed(seed)
    count = len(train_set.scenes)
    planned = recipe.epochs * (count // recipe.batch_size)
    state, started, last_curve = LoopState(), time.perf_counter(), 0.0
    model.train()
    while True:
        order = torch.randperm(count, generator=generator)
        for start in range(0, count - recipe.batch_size + 1, recipe.batch_size):
            elapsed = time.perf_counter() - started
            progress = max(state.step / planned, elapsed / budget_s)
            if progress >= 1.0:
                state.stopped_by = "epochs" if state.step >= planned else "time"
                return state
            if elapsed - last_curve >= CURVE_EVERY_S:
                last_curve = elapsed
                curve.append({"seconds": round(elapsed, 1), "step": state.step, "loss": state.loss,
                              **evaluate_scenes(model, validation, spec)})  # fmt: skip
                model.train()
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr * lr_factor(progress, recipe.warmup_fraction)
            index = order[start : start + recipe.batch_size]
            loss = detection_loss(model.forward_heads(train_set.pixels[index]),
                                  tuple(target[index] for target in train_set.targets))  # type: ignore[arg-type]  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            state.step, state.samples_seen, state.loss = state.step + 1, state.samples_seen + len(index), loss.item()


def train_detector(name: str, spec: ModelSpec, max_minutes: float, seed: int, runs_dir: Path,
                   train_samples: int | None = None, test_samples: int = TEST_SCENES) -> TrainingMetrics:  # fmt: skip
    """Train the detector deployable `name` (its untrained `spec`), evaluate COCO mAP, write `runs_dir/name/`.

    Args:
        name: The deployable's name.
        spec: Its untrained spec (input size, labels, architecture).
        max_minutes: Budget of the optimisation loop.
        seed: Seeds the weights, the order and the training scenes.
        runs_dir: Parent of the run folder.
        train_samples: Training scenes (default: the recipe's).
        test_samples: Held-out scenes for the final mAP.
    """
    torch.manual_seed(seed)
    data_started = time.perf_counter()
    train_set = SceneSet.make(train_samples or DETECTION_RECIPE.train_samples or 0, seed, spec)
    test_set = SceneSet.make(test_samples, seed + TEST_SEED_OFFSET, spec)
    validation = SceneSet.make(min(VALIDATION_SCENES, test_samples), seed + 2 * TEST_SEED_OFFSET, spec)
    data_seconds = time.perf_counter() - data_started
    spec = spec.replace(trained=True)
    model = build_model(spec)
    assert isinstance(model, CenterDetector)
    curve: list[dict[str, float]] = []
    started = time.perf_counter()
    state = _fit(model, train_set, validation, spec, max_minutes * 60.0, seed, curve)
    train_seconds = time.perf_counter() - started
    eval_started = time.perf_counter()
    scores = evaluate_scenes(model, test_set, spec)
    curve.append({"seconds": round(train_seconds, 1), "step": state.step, "loss": state.loss,
                  **evaluate_scenes(model, validation, spec)})  # fmt: skip
    metrics = TrainingMetrics(
        test_accuracy=float("nan"), confusion_matrix=[], chance_accuracy=0.0, test_samples=test_samples,
        epochs=state.samples_seen / len(train_set.scenes), train_seconds=train_seconds,
        samples_per_second=state.samples_seen / max(train_seconds, 1e-9), name=name, arch=spec.arch,
        dataset="procedural scenes", labels=list(spec.io.labels), train_samples=len(train_set.scenes),
        validation_samples=len(validation.scenes), planned_epochs=DETECTION_RECIPE.epochs,
        batch_size=DETECTION_RECIPE.batch_size, steps=state.step, stopped_by=state.stopped_by,  # type: ignore[arg-type]
        best_step=state.step, final_train_loss=state.loss, data_seconds=data_seconds,
        eval_seconds=time.perf_counter() - eval_started, max_minutes=max_minutes, seed=seed,
        torch_threads=torch.get_num_threads(), recipe=asdict(DETECTION_RECIPE), augment="none",
        coco_map=scores["map"], coco_map50=scores["map50"], coco_map75=scores["map75"], curve=curve,
    )  # fmt: skip
    save_run(Path(runs_dir) / name, model, spec, metrics)
    logger.info("%s: held-out mAP@[.5:.95] %.3f, mAP@.5 %.3f after %d steps in %.0f s", name, scores["map"],
                scores["map50"], state.step, train_seconds)  # fmt: skip
    return metrics
