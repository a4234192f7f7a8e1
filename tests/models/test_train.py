"""Training plumbing on tiny models (no training to accuracy here: that is bench/train_table.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from attnserve.cli import main
from attnserve.errors import UnknownModelError, UserInputError
from attnserve.models.checkpoint import load_run
from attnserve.models.folders import write_png
from attnserve.models.metrics import TrainingMetrics
from attnserve.models.registry import tiny_arch_overrides
from attnserve.models.synthetic import shapes_arrays
from attnserve.models.train import (
    MIN_VALIDATION_SAMPLES,
    RECIPES,
    TrainOptions,
    _plan,
    _validation_split,
    augment_folder_batch,
    evaluate,
    lr_factor,
    train,
)


def test_lr_schedule_warms_up_then_decays_to_zero() -> None:
    assert lr_factor(0.0, 0.1) == 0.0
    assert lr_factor(0.05, 0.1) == pytest.approx(0.5)
    assert lr_factor(0.1, 0.1) == pytest.approx(1.0)
    assert lr_factor(0.55, 0.1) == pytest.approx(0.5)
    assert lr_factor(1.0, 0.1) == pytest.approx(0.0)
    values = [lr_factor(p / 100, 0.1) for p in range(10, 101)]
    assert all(later <= earlier for earlier, later in zip(values, values[1:]))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainingMetrics, Path]:
    runs_dir = tmp_path_factory.mktemp("runs")
    metrics = train(
        TrainOptions(
            "cnn_cbam_digits",
            max_minutes=2,
            epochs=1,
            seed=0,
            runs_dir=runs_dir,
            arch_overrides=tiny_arch_overrides("cnn_cbam_digits"),
            progress=False,
        )
    )
    return metrics, runs_dir / "cnn_cbam_digits"


def test_train_writes_a_loadable_run(digits_run: tuple[TrainingMetrics, Path]) -> None:
    metrics, run_dir = digits_run
    assert {path.name for path in run_dir.iterdir()} == {"model.safetensors", "spec.json", "metrics.json"}
    assert json.loads((run_dir / "metrics.json").read_text())["test_accuracy"] == metrics.test_accuracy
    assert TrainingMetrics.load(run_dir) == metrics  # the typed metrics round-trip through metrics.json
    model, spec = load_run(run_dir)
    assert spec.trained and spec.name == "cnn_cbam_digits" and spec.io.labels == tuple("0123456789")
    assert metrics.epochs == pytest.approx(1.0) and metrics.stopped_by == "epochs"
    confusion = np.array(metrics.confusion_matrix)
    assert confusion.shape == (10, 10) and confusion.sum() == metrics.test_samples == 360
    assert metrics.test_accuracy == pytest.approx(np.trace(confusion) / confusion.sum())
    assert metrics.train_seconds > 0 and metrics.samples_per_second > 0


def test_reloaded_model_reproduces_the_metrics(digits_run: tuple[TrainingMetrics, Path]) -> None:
    from attnserve.models.data import load_dataset

    metrics, run_dir = digits_run
    model, spec = load_run(run_dir)
    data = load_dataset("cnn_cbam_digits")
    again = evaluate(model, data.test_pixels, data.test_labels, spec.num_classes)
    assert again.confusion_matrix == metrics.confusion_matrix


@pytest.mark.parametrize("augment", [None, "rotate-colour"])
def test_train_on_a_user_folder(tmp_path: Path, augment: str | None) -> None:
    images, labels = shapes_arrays(24, seed=0)
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = tmp_path / "data" / ("circle" if label == 0 else "not_circle")
        folder.mkdir(parents=True, exist_ok=True)
        write_png(image, folder / f"{index}.png")
    metrics = train(
        TrainOptions(
            "vit_shapes",
            max_minutes=1,
            epochs=1,
            data_dir=tmp_path / "data",
            runs_dir=tmp_path / "runs",
            arch_overrides=tiny_arch_overrides("vit_shapes"),
            progress=False,
            **({"augment": augment} if augment else {}),
        )
    )
    model, spec = load_run(tmp_path / "runs" / "vit_shapes")
    assert spec.io.labels == ("circle", "not_circle") and metrics.labels == ["circle", "not_circle"]
    # the default is shift: rotation and colour changes only on request, and recorded
    assert metrics.augment == (augment or "shift") and metrics.steps >= 1
    assert TrainingMetrics.load(tmp_path / "runs" / "vit_shapes").augment == (augment or "shift")
    with torch.inference_mode():
        assert model(torch.from_numpy(images[:2])).shape == (2, 2)


def test_rotate_colour_is_planned_only_when_asked_and_only_for_images() -> None:
    def options(augment: str) -> TrainOptions:
        return TrainOptions("vit_shapes", 1.0, data_dir=Path("data"), progress=False, augment=augment)

    assert _plan(options("rotate-colour"), RECIPES["vit_shapes"], "image", 60).augment
    assert not _plan(options("shift"), RECIPES["vit_shapes"], "image", 60).augment
    with pytest.raises(UserInputError, match="image models"):
        _plan(options("rotate-colour"), RECIPES["temporal_motion"], "video", 60)


def test_train_rejects_bad_requests(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="--arch PRESET"):
        train(TrainOptions("vit_nothing", max_minutes=1, runs_dir=tmp_path))
    with pytest.raises(UnknownModelError):
        train(TrainOptions("my_model", preset="vit_nothing", max_minutes=1, runs_dir=tmp_path))
    with pytest.raises(UserInputError, match="name of a preset"):
        train(TrainOptions("vit_digits", preset="vit_shapes", max_minutes=1, runs_dir=tmp_path))
    with pytest.raises(UserInputError, match="need --data"):
        train(TrainOptions("my_model", preset="vit_shapes", image_size=48, max_minutes=1, runs_dir=tmp_path))
    with pytest.raises(UserInputError, match="not trained here"):
        train(TrainOptions("vit_tiny_patch16_224", max_minutes=1, runs_dir=tmp_path))
    with pytest.raises(UserInputError, match="max_minutes"):
        train(TrainOptions("vit_digits", max_minutes=0, runs_dir=tmp_path))
    with pytest.raises(UserInputError, match="augment must be one of"):
        train(TrainOptions("vit_digits", max_minutes=1, runs_dir=tmp_path, augment="rotate"))


def test_cli_lists_models_with_status(
    digits_run: tuple[TrainingMetrics, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, run_dir = digits_run
    assert main(["models", "--runs-dir", str(run_dir.parent)]) == 0
    listing = capsys.readouterr().out
    for name in ("vit_digits", "timesformer_motion", "vit_tiny_patch16_224", "vit_convstem_32"):
        assert name in listing
    assert "cnn_cbam_digits" in listing and "trained (test accuracy" in listing
    assert "not trained (attnserve train vit_digits)" in listing


def test_cli_train_rejects_unknown_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "vit_nothing"]) == 1
    error = capsys.readouterr().err
    assert "vit_digits" in error and "--arch" in error
    assert main(["train", "My-Model", "--arch", "vit_shapes"]) == 1
    assert "lowercase" in capsys.readouterr().err
    assert main(["train", "my_model", "--from-hf", "somewhere"]) == 1  # no --data
    assert "--data" in capsys.readouterr().err
    assert main(["train", "my_model", "--from-hf", "somewhere", "--data", "d", "--resize", "crop"]) == 1
    assert "--resize cannot go with --from-hf" in capsys.readouterr().err


def _shape_folder(root: Path, count: int = 24) -> Path:
    images, labels = shapes_arrays(count, seed=0, size=40)
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = root / ("circle" if label == 0 else "not_circle")
        folder.mkdir(parents=True, exist_ok=True)
        write_png(image[:, :, : 40 - index % 9], folder / f"{index}.png")  # non-square, both ways after resize
    return root


def test_a_new_name_from_a_preset_records_its_size_and_resize_and_leaves_the_preset_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from attnserve.models.checkpoint import resolve

    argv = ["train", "my_shapes", "--arch", "vit_shapes", "--data", str(_shape_folder(tmp_path / "data"))]
    argv += ["--image-size", "48", "--resize", "letterbox", "--epochs", "1", "--runs-dir", str(tmp_path / "runs")]
    assert main([*argv, "--no-progress"]) == 0
    assert not (tmp_path / "runs" / "vit_shapes").exists()
    model, spec = resolve("my_shapes", tmp_path / "runs")  # what `attnserve export my_shapes` loads
    assert spec.name == "my_shapes" and spec.arch == "vit_convstem_32" and spec.io.input_shape == (3, 48, 48)
    assert spec.io.preprocessing.resize == "letterbox" and spec.io.labels == ("circle", "not_circle")
    with torch.inference_mode():
        assert model(torch.zeros(2, 3, 48, 48, dtype=torch.uint8)).shape == (2, 2)
    assert main(["models", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "`attnserve export my_shapes`" in capsys.readouterr().out  # listed with the command that serves it


def test_a_folder_run_lasts_its_budget(tmp_path: Path) -> None:
    """`--max-minutes` means what it says: without --epochs the budget, not a sample count, ends a folder run."""
    metrics = train(
        TrainOptions(
            "vit_shapes",
            max_minutes=0.02,
            data_dir=_shape_folder(tmp_path / "data"),
            runs_dir=tmp_path / "runs",
            arch_overrides=tiny_arch_overrides("vit_shapes"),
            progress=False,
        )
    )
    assert metrics.stopped_by == "time"


def test_folder_augmentation_keeps_the_shape_and_its_two_colours() -> None:
    # a white square on black, centred: any rotation, mirror, zoom and shift keeps a square of similar area
    # inside the frame; the colours may be permuted or inverted but stay one background and one foreground
    image = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    image[:, :, 11:21, 11:21] = 255
    batch = image.repeat(64, 1, 1, 1)
    augmented = augment_folder_batch(batch, torch.Generator().manual_seed(0))
    assert augmented.shape == batch.shape and augmented.dtype == torch.uint8
    assert not torch.equal(augmented, batch)  # it does change the pixels
    again = augment_folder_batch(batch, torch.Generator().manual_seed(0))
    assert torch.equal(augmented, again)  # seeded: a run is reproducible
    for picture in augmented:
        corner = picture[:, 0, 0]  # the background (border colour fills the rotated-in corners)
        foreground = (picture.int() - corner[:, None, None].int()).abs().amax(dim=0) > 127  # (H, W)
        area = int(foreground.sum())
        assert 0.5 * 100 <= area <= 1.5 * 100, area  # zoom 0.8-1.15x of a 10x10 square, blurred edges
        assert not foreground[0].any() and not foreground[-1].any()  # nothing pushed out of the frame
        assert set(corner.tolist()) in ({0}, {255})  # black or inverted white background, channels agree


def test_validation_part_only_when_large_enough_to_pick_weights_on() -> None:
    small = torch.arange(90) % 3  # 15% would be 14 files: too few to pick weights on, all train
    train_index, validation_index = _validation_split(small, seed=0)
    assert len(validation_index) == 0 and torch.equal(train_index, torch.arange(90))
    large = torch.arange(600) % 3  # 15% = 90 files, stratified
    train_index, validation_index = _validation_split(large, seed=0)
    assert len(validation_index) >= MIN_VALIDATION_SAMPLES
    assert torch.bincount(large[validation_index]).tolist() == [30, 30, 30]
    assert not set(train_index.tolist()) & set(validation_index.tolist())
    assert len(train_index) + len(validation_index) == 600


@pytest.mark.parametrize(
    ("name", "accuracy", "augment", "hinted"),
    [
        ("vit_shapes", 0.40, "shift", True),  # below twice chance (3 classes): the hint
        ("vit_shapes", 0.90, "shift", False),  # learnt: no hint
        ("vit_shapes", 0.40, "rotate-colour", False),  # already augmented
        ("timesformer_motion", 0.40, "shift", False),  # video: the option does not apply
    ],
)
def test_weak_image_runs_get_the_augmentation_hint(name: str, accuracy: float, augment: str, hinted: bool) -> None:
    from attnserve.models.cli import _data_notes

    metrics = TrainingMetrics(
        name=name, test_accuracy=accuracy, chance_accuracy=1 / 3, augment=augment, confusion_matrix=[[0]],
        test_samples=18, epochs=1.0, train_seconds=1.0, samples_per_second=1.0,
    )  # fmt: skip
    hints = [line for line in _data_notes(metrics) if "--augment rotate-colour" in line]
    assert bool(hints) == hinted
