"""The typed training metrics: written by `attnserve.models.train` to a run's `metrics.json`, read everywhere.

Torch-free, so readers (`attnserve models`, the demo, bench scripts) can load a run's metrics without torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from attnserve.errors import DataError

METRICS_FILENAME = "metrics.json"


class TrainingMetrics(BaseModel):
    """What one training run measured and what it trained on (the run folder's `metrics.json`).

    Fields added after the first version have defaults, so older run folders still load.
    """

    # NaN (no test samples, no step taken) is written as JSON `NaN`, as `json.dumps` did, and read back.
    model_config = ConfigDict(frozen=True, extra="ignore", ser_json_inf_nan="constants")

    test_accuracy: float
    """Top-1 accuracy on the held-out test split (NaN without test samples)."""
    confusion_matrix: list[list[int]]
    """Rows: true class, columns: predicted class (test split)."""
    chance_accuracy: float
    test_samples: int
    epochs: float
    """Epochs actually seen (samples seen / training samples); the time budget may end a run early."""
    train_seconds: float
    samples_per_second: float
    name: str = ""
    arch: str = ""
    dataset: str = ""
    labels: list[str] = Field(default_factory=list)
    train_samples: int = 0
    validation_samples: int = 0
    planned_epochs: int = 0
    batch_size: int = 0
    steps: int = 0
    stopped_by: Literal["epochs", "time"] = "epochs"
    best_step: int = 0
    """The step whose weights were kept (the last step unless a validation part picked an earlier one)."""
    validation_accuracy: float | None = None
    """Accuracy of the kept weights on the validation part of the training files (class folders only)."""
    final_train_loss: float = float("nan")
    data_seconds: float = 0.0
    eval_seconds: float = 0.0
    max_minutes: float = 0.0
    seed: int = 0
    torch_threads: int = 0
    recipe: dict[str, Any] = Field(default_factory=dict)
    skipped_files: list[str] = Field(default_factory=list)
    """Unreadable files left out (`path: reason`); `--strict` aborts instead."""
    empty_classes: list[str] = Field(default_factory=list)
    tiny_classes: list[str] = Field(default_factory=list)
    augment: str = "shift"
    """Training-only augmentation (`attnserve.models.train.AUGMENTATIONS`)."""
    coco_map: float | None = None
    """Detectors: COCO mAP@[.5:.95] on the held-out scenes (pycocotools); `test_accuracy` is NaN for them."""
    coco_map50: float | None = None
    """Detectors: COCO mAP@.5 on the held-out scenes."""
    coco_map75: float | None = None
    curve: list[dict[str, float]] = Field(default_factory=list)
    """Detectors: the training curve, `{seconds, step, loss, map, map50, map75}` on validation scenes."""

    def save(self, run_dir: Path) -> Path:
        """Write `run_dir/metrics.json`; returns its path."""
        path = Path(run_dir) / METRICS_FILENAME
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def load(cls, run_dir: Path) -> TrainingMetrics | None:
        """The metrics of `run_dir`, or None when it has no `metrics.json`.

        Raises:
            DataError: The file is not JSON or lacks the fields every run writes.
        """
        path = Path(run_dir) / METRICS_FILENAME
        if not path.is_file():
            return None
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except (ValueError, ValidationError) as exc:
            raise DataError(f"expected training metrics in {path}; cannot read them: {exc}") from exc
