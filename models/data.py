"""Datasets of the deployable models (offline, deterministic) and helpers for demos and accuracy gates.

- `load_dataset(name, seed, data_dir=None)`: train/test `DatasetSplits` (uint8 torch tensors) for a
  deployable name (its built-in dataset) or a user's class folder (`data_dir`, see `attnserve.models.folders`).
- `sample_inputs(name, n, seed)`: n held-out inputs (numpy uint8) and labels of a deployable's dataset.
- `write_samples(name, out_dir, n)`: PNG images / MP4 clips of held-out samples, named `IIII_LABEL.ext`.

Held-out data never overlaps training data: digits use a fixed stratified split; the procedural sets
draw their test part from `HELD_OUT_SEED + seed` (training draws from `seed`, with seeds below 10**6).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attnserve.catalogue import default_spec, get_deployable
from attnserve.errors import DataError
from attnserve.models.folders import class_files, decode_items, empty_class_folders, write_mp4, write_png
from attnserve.models.synthetic import digits_arrays, motion_arrays, shapes_arrays
from attnserve.spec import ModelSpec

HELD_OUT_SEED = 1_000_000
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2
TINY_CLASS_FILES = 5
"""A class with fewer training files than this gets a warning: too few to learn it reliably."""
SYNTHETIC_SIZES = {"shapes": (6000, 1000), "motion": (3000, 800)}
"""(train, test) sample counts of the procedural datasets."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetSplits:
    """Train and held-out test data: uint8 pixels (N, *input_shape) and int64 labels (N,)."""

    train_pixels: torch.Tensor
    train_labels: torch.Tensor
    test_pixels: torch.Tensor
    test_labels: torch.Tensor
    labels: tuple[str, ...]
    source: str
    skipped_files: tuple[str, ...] = ()
    """Unreadable files left out (`"path: reason"`), for class-folder data read without `strict`."""
    empty_classes: tuple[str, ...] = ()
    """Class folders without a single file, left out of `labels`."""
    tiny_classes: tuple[str, ...] = ()
    """Classes with fewer than `TINY_CLASS_FILES` readable training files."""

    @classmethod
    def from_arrays(
        cls,
        arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        labels: Sequence[str],
        source: str,
        **notes: tuple[str, ...],
    ) -> DatasetSplits:
        """Splits from numpy (train_x, train_y, test_x, test_y), sharing their memory; `notes`: the fields above."""
        train_x, train_y, test_x, test_y = (torch.from_numpy(array) for array in arrays)
        return cls(train_x, train_y, test_x, test_y, tuple(labels), source, **notes)


def _digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    pixels, labels = digits_arrays(size=32)
    train_x, test_x, train_y, test_y = train_test_split(
        pixels, labels, test_size=DIGITS_TEST_FRACTION, stratify=labels, random_state=DIGITS_SPLIT_SEED
    )
    return train_x, train_y, test_x, test_y


def _synthetic(dataset: str, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if dataset == "shapes":
        return shapes_arrays(count, seed)
    if dataset == "motion":
        return motion_arrays(count, seed)
    raise ValueError(f"no procedural dataset {dataset!r}; expected 'shapes' or 'motion'")


def _check_seed(seed: int) -> None:
    if not 0 <= seed < HELD_OUT_SEED:
        raise ValueError(f"seed must be in [0, {HELD_OUT_SEED}) so training never draws held-out data, got {seed}")


def load_dataset(
    name: str,
    seed: int = 0,
    data_dir: Path | None = None,
    train_count: int | None = None,
    strict: bool = False,
    spec: ModelSpec | None = None,
) -> DatasetSplits:
    """Train/test splits for deployable `name`: its built-in dataset, or the class folders in `data_dir`.

    Args:
        name: A trainable deployable name (fixes the per-sample input shape and kind).
        seed: Seeds the procedural training set (the held-out set does not depend on it, see module doc).
        data_dir: A user's class-folder dataset; images/clips are resized to the deployable's input.
        train_count: Size of a procedural training set (default `SYNTHETIC_SIZES`); ignored otherwise.
        strict: Class folders only: abort on an unreadable file or an empty class folder instead of leaving
            it out (with a warning and its count in the result).
        spec: Class folders only: decode to this spec's input shape and preprocessing instead of the deployable's
            (a model trained under its own name, size or resize mode).

    Raises:
        UnknownModelError: For an unknown name.
        DataError: For an unreadable folder, or a name without a dataset and no `data_dir`.
    """
    entry = get_deployable(name)
    _check_seed(seed)
    if data_dir is not None:
        return folder_dataset(Path(data_dir), spec or default_spec(name), strict)
    if entry.dataset == "digits":
        train_x, train_y, test_x, test_y = _digits_split()
        labels, source = entry.io.labels, "sklearn.load_digits"
    elif entry.dataset in SYNTHETIC_SIZES:
        default_train_count, test_count = SYNTHETIC_SIZES[entry.dataset]
        train_x, train_y = _synthetic(entry.dataset, train_count or default_train_count, seed)
        test_x, test_y = _synthetic(entry.dataset, test_count, HELD_OUT_SEED)
        labels, source = entry.io.labels, f"procedural:{entry.dataset}"
    else:
        raise DataError(f"{name!r} has no built-in dataset (it is not trained here); pass a data folder")
    return DatasetSplits.from_arrays((train_x, train_y, test_x, test_y), labels, source)


def folder_dataset(data_dir: Path, spec: ModelSpec, strict: bool = False) -> DatasetSplits:
    """A user's class folders, decoded to `spec`'s input by its declared preprocessing (see `load_dataset`)."""
    kind, shape, preprocessing = spec.kind, spec.io.input_shape, spec.io.preprocessing  # the transform as served
    labels, train_items, test_items = class_files(data_dir, kind)
    if not test_items:
        raise DataError(f"expected at least 2 files per class in {data_dir} to hold some out for testing")
    empty = empty_class_folders(data_dir, kind)
    if empty and strict:
        raise DataError(f"class folders without any {kind} file in {data_dir}: {empty} (--strict)")
    for folder in empty:
        logger.warning("class folder %r in %s holds no %s file: left out of the labels", folder, data_dir, kind)
    train_x, train_y, skipped = decode_items(train_items, kind, shape, preprocessing, strict)
    test_x, test_y, skipped_test = decode_items(test_items, kind, shape, preprocessing, strict)
    skipped += skipped_test
    if skipped:
        logger.warning("skipped %d unreadable file(s) in %s: %s", len(skipped), data_dir, "; ".join(skipped[:5]))
    counts = np.bincount(train_y, minlength=len(labels))
    tiny = tuple(label for label, count in zip(labels, counts) if count < TINY_CLASS_FILES)
    if any(count == 0 for count in counts):
        raise DataError(
            f"no readable training file left for classes {[label for label, c in zip(labels, counts) if c == 0]}"
        )
    for label in tiny:
        logger.warning(
            "class %r has only %d training file(s): too few to learn it reliably", label, counts[labels.index(label)]
        )
    return DatasetSplits.from_arrays(
        (train_x, train_y, test_x, test_y),
        labels,
        f"folder:{data_dir.resolve()}",
        skipped_files=tuple(skipped),
        empty_classes=tuple(empty),
        tiny_classes=tiny,
    )


def sample_inputs(name: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` held-out inputs of a deployable's dataset: uint8 (n, *input_shape) and int64 labels (n,).

    Digits: drawn from the fixed test split (cycled when n exceeds its 360 samples). Shapes/motion: the
    procedural test distribution (`HELD_OUT_SEED + seed`; seed 0 gives the first samples of the test set).
    `vit_tiny_patch16_224` (no dataset): shapes rendered at 224x224, labels are the shape index (the
    untrained 1000-class model has no meaningful labels). `det_shapes`: held-out detection scenes; the label is
    the class of the scene's first object (-1 for an empty scene).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _check_seed(seed)
    entry = get_deployable(name)
    if entry.dataset == "digits":
        _, _, test_x, test_y = _digits_split()
        order = np.random.default_rng(seed).permutation(len(test_y)) if seed else np.arange(len(test_y))
        picked = np.resize(order, n)
        return test_x[picked], test_y[picked]
    if entry.dataset in SYNTHETIC_SIZES:
        return _synthetic(entry.dataset, n, HELD_OUT_SEED + seed)  # seed 0: the test split's first n samples
    if entry.dataset == "scenes":  # detection scenes: the label is the first object's class (-1: an empty scene)
        from attnserve.models.scenes import make_scenes, render_batch

        scenes = make_scenes(n, HELD_OUT_SEED + seed, aspect=entry.io.input_shape[2] / entry.io.input_shape[1])
        firsts = np.array([scene.objects[0].label if scene.objects else -1 for scene in scenes], dtype=np.int64)
        return render_batch(scenes, entry.io.input_shape[2], entry.io.input_shape[1]), firsts
    return shapes_arrays(n, HELD_OUT_SEED + seed, size=entry.io.input_shape[-1])


def write_samples(name: str, out_dir: Path, n: int, seed: int = 0) -> list[Path]:
    """Write `n` held-out samples of a deployable as files: PNG per image, H.264 MP4 per clip.

    Files are named `IIII_LABEL.png|mp4` (LABEL = the class name), in `out_dir` (created if needed).

    Returns:
        The written paths, in sample order.
    """
    entry = get_deployable(name)
    pixels, labels = sample_inputs(name, n, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    label_names = entry.io.labels if entry.dataset != "none" else ("circle", "square", "triangle", "cross")
    paths = []
    for index, (sample, label) in enumerate(zip(pixels, labels)):
        stem = f"{index:04d}_{label_names[int(label)]}"
        if entry.kind == "image":
            paths.append(write_png(sample, out_dir / f"{stem}.png"))
        else:
            paths.append(write_mp4(sample, out_dir / f"{stem}.mp4"))
    return paths
