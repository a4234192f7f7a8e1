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
from attnserve.models.deployables import tiny_arch_overrides
from attnserve.models.folders import write_png
from attnserve.models.metrics import TrainingMetrics
from attnserve.models.synthetic import shapes_arrays
from attnserve.models.train import evaluate, lr_factor, train


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
        "cnn_cbam_digits",
        max_minutes=2,
        epochs=1,
        seed=0,
        runs_dir=runs_dir,
        arch_overrides=tiny_arch_overrides("cnn_cbam_digits"),
        progress=False,
    )
    return metrics, runs_dir / "cnn_cbam_digits"


def test_train_writes_a_loadable_run(digits_run: tuple[TrainingMetrics, Path]) -> None:
    metrics, run_dir = digits_run
    assert {path.name for path in run_dir.iterdir()} == {"model.safetensors", "spec.json", "metrics.json"}
    assert json.loads((run_dir / "metrics.json").read_text())["test_accuracy"] == metrics.test_accuracy
    assert TrainingMetrics.load(run_dir) == metrics  # the typed metrics round-trip through metrics.json
    model, spec = load_run(run_dir)
    assert spec.trained and spec.name == "cnn_cbam_digits" and spec.labels == tuple("0123456789")
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


def test_train_on_a_user_folder(tmp_path: Path) -> None:
    images, labels = shapes_arrays(24, seed=0)
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = tmp_path / "data" / ("circle" if label == 0 else "not_circle")
        folder.mkdir(parents=True, exist_ok=True)
        write_png(image, folder / f"{index}.png")
    metrics = train(
        "vit_shapes",
        max_minutes=1,
        epochs=1,
        data_dir=tmp_path / "data",
        runs_dir=tmp_path / "runs",
        arch_overrides=tiny_arch_overrides("vit_shapes"),
        progress=False,
    )
    model, spec = load_run(tmp_path / "runs" / "vit_shapes")
    assert spec.labels == ("circle", "not_circle") and metrics.labels == ["circle", "not_circle"]
    with torch.inference_mode():
        assert model(torch.from_numpy(images[:2])).shape == (2, 2)


def test_train_rejects_bad_requests(tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError):
        train("vit_nothing", max_minutes=1, runs_dir=tmp_path)
    with pytest.raises(UserInputError, match="not trained here"):
        train("vit_tiny_patch16_224", max_minutes=1, runs_dir=tmp_path)
    with pytest.raises(UserInputError, match="max_minutes"):
        train("vit_digits", max_minutes=0, runs_dir=tmp_path)


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
    with pytest.raises(SystemExit):
        main(["train", "vit_nothing"])
    assert "vit_digits" in capsys.readouterr().err
