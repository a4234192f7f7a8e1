"""The on-disk layout of a Triton model repository: file names, version folders, entries, the served file.

    REPOSITORY/
      NAME/config.pbtxt            CONFIG_FILENAME: the entry's Triton config (typed: `repository.config`)
      NAME/labels.txt              LABELS_FILENAME: one label per line, in class order
      NAME/spec.json               the ModelSpec (`attnserve.spec.SPEC_FILENAME`)
      NAME/<version>/model.onnx    ONNX_FILENAME: versions are positive integers without leading zeros
      NAME/<version>/model.plan    PLAN_FILENAME: TensorRT entries

Every reader and writer of the layout goes through this module; nothing else spells these names.
"""

from __future__ import annotations

import re
from pathlib import Path

from attnserve.errors import UserInputError

CONFIG_FILENAME = "config.pbtxt"
LABELS_FILENAME = "labels.txt"
ONNX_FILENAME = "model.onnx"
"""Triton's default file name for `onnxruntime_onnx` entries; always the portable verified graph."""
PLAN_FILENAME = "model.plan"
"""Triton's default file name for `tensorrt_plan` entries."""
ORT_OPTIMIZED_FILENAME = "model.ort.onnx"
"""ONNX Runtime's offline-optimised graph, served only by the embedded CPU runner (tied to its provider)."""
PYTHON_MODEL_FILENAME = "model.py"
"""The file a python-backend entry's version folder holds."""

_VERSION = re.compile(r"[1-9][0-9]*")


def is_version_dir(path: Path) -> bool:
    """True for a folder whose name is a Triton model version (a positive integer, no leading zero)."""
    return path.is_dir() and _VERSION.fullmatch(path.name) is not None


def existing_versions(model_dir: Path) -> list[int]:
    """Numeric version folders present under `model_dir`, sorted."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if is_version_dir(p))


def next_version(model_dir: Path) -> int:
    """The version a new export gets: one past the highest existing version folder (1 for a new entry)."""
    versions = existing_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def latest_version_dir(model_dir: Path, filename: str) -> Path | None:
    """The highest version folder of `model_dir` that holds `filename` (None when no version does)."""
    holding = [v for v in existing_versions(model_dir) if (Path(model_dir) / str(v) / filename).exists()]
    return Path(model_dir) / str(holding[-1]) if holding else None


def repository_entries(repository: Path) -> dict[str, Path]:
    """Model name -> folder, for every folder of `repository` holding a `config.pbtxt`, sorted by name.

    Raises:
        UserInputError: `repository` is not a folder.
    """
    repository = Path(repository)
    if not repository.is_dir():
        raise UserInputError(f"model repository {repository} is not a folder")
    return {p.name: p for p in sorted(repository.iterdir()) if (p / CONFIG_FILENAME).is_file()}
