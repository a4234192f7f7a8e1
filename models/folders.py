"""Users' own data: class folders of images (ImageFolder style) or of video files (decoded with PyAV).

    root/                     root/
      cat/ a.png b.jpg          train/cat/... train/dog/...
      dog/ c.png          or    test/cat/...  test/dog/...   (`val/` works as `test/`)

Without `train/` and `test/`, a stratified 80/20 split with a fixed seed holds out the test part.
Images and frames become model inputs through the model's declared preprocessing
(`attnserve.preprocessing.to_chw`, the transform the client and the served pipeline apply too); clips are
sampled to T frames the way it says. numpy, Pillow and PyAV only (no torch): arrays are uint8, images
(C, H, W), clips (T, C, H, W).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attnserve.errors import DataError
from attnserve.models.synthetic import write_h264
from attnserve.preprocessing import (
    DEFAULT_PREPROCESSING,
    Preprocessing,
    frame_to_chw,
    open_image_bytes,
    sample_frame_indices,
    to_chw,
)
from attnserve.video import require_frames

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
SPLIT_SEED = 0
TEST_FRACTION = 0.2


def read_image(
    path: Path,
    channels: int,
    height: int,
    width: int | None = None,
    preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
) -> np.ndarray:
    """An image file as uint8 (channels, height, width) by the model's `preprocessing` (width defaults to height).

    Raises:
        DataError: When the file cannot be read or decoded, or exceeds the shared size limits.
    """
    try:
        payload = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc
    image = open_image_bytes(payload, where=str(path))
    return to_chw(image, channels, height, width or height, preprocessing)


def read_video(
    path: Path,
    frames: int,
    channels: int,
    height: int,
    width: int | None = None,
    preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
) -> np.ndarray:
    """A video file as uint8 (frames, channels, height, width): `frames` sampled decoded frames.

    A video shorter than `frames` is refused, as the server refuses it (`attnserve.video.require_frames`):
    training on repeated frames would teach the model clips it is never served.

    Raises:
        DataError: When the file cannot be decoded or holds fewer than `frames` frames.
    """
    import av

    try:
        with av.open(str(path)) as container:
            decoded = [frame.to_image() for frame in container.decode(video=0)]
    except (av.FFmpegError, OSError) as exc:
        raise DataError(f"cannot decode video {path}: {exc}") from exc
    require_frames(len(decoded), frames, what=f"video {path}")
    indices = sample_frame_indices(len(decoded), frames, preprocessing)
    return np.stack([frame_to_chw(decoded[i], channels, height, width or height, preprocessing) for i in indices])


def write_png(image: np.ndarray, path: Path) -> Path:
    """Write a uint8 (C, H, W) image (C = 1 or 3) as PNG."""
    from PIL import Image

    pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    Image.fromarray(np.ascontiguousarray(pixels)).save(path)
    return Path(path)


def write_mp4(clip: np.ndarray, path: Path, fps: int = 8) -> Path:
    """Write a uint8 (T, C, H, W) clip as H.264 MP4 (yuv420p: H and W should be even)."""
    write_h264(clip, str(path), fps)
    return Path(path)


def _all_class_files(root: Path, extensions: tuple[str, ...]) -> dict[str, list[Path]]:
    """Every class folder of `root` with its files (empty folders included, with no files)."""
    classes = sorted(folder for folder in root.iterdir() if folder.is_dir() and not folder.name.startswith("."))
    return {
        folder.name: sorted(path for path in folder.rglob("*") if path.suffix.lower() in extensions)
        for folder in classes
    }


def _list_class_files(root: Path, extensions: tuple[str, ...]) -> dict[str, list[Path]]:
    return {name: paths for name, paths in _all_class_files(root, extensions).items() if paths}


def empty_class_folders(root: Path, kind: str) -> list[str]:
    """Class folders of a dataset (`root`, or its `train/` and `test/`) that hold no file of `kind`.

    `class_files` leaves them out of the labels; the caller says so (a model cannot learn a class it never saw).
    """
    root = Path(root)
    extensions = IMAGE_EXTENSIONS if kind == "image" else VIDEO_EXTENSIONS
    splits = [root / split for split in ("train", "test", "val") if (root / split).is_dir()]
    if not (root / "train").is_dir():
        splits = [root]
    empty: set[str] = set()
    for split in splits:
        empty |= {name for name, paths in _all_class_files(split, extensions).items() if not paths}
    return sorted(empty)


def class_files(root: Path, kind: str) -> tuple[tuple[str, ...], list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Class names and (path, label) lists for the train and test splits of a class-folder dataset.

    Args:
        root: The dataset folder (see module docstring).
        kind: `"image"` or `"video"` (which file extensions count).

    Raises:
        DataError: When the folder is missing, has fewer than 2 non-empty class folders, or its train and
            test splits name different classes.
    """
    root = Path(root)
    extensions = IMAGE_EXTENSIONS if kind == "image" else VIDEO_EXTENSIONS
    if not root.is_dir():
        raise DataError(f"expected a folder of class folders, got {root} (not a folder)")
    test_root = next((root / split for split in ("test", "val") if (root / split).is_dir()), None)
    if (root / "train").is_dir() and test_root is not None:
        train_files, test_files = (
            _list_class_files(root / "train", extensions),
            _list_class_files(test_root, extensions),
        )
        if sorted(train_files) != sorted(test_files):
            raise DataError(
                f"train classes {sorted(train_files)} differ from test classes {sorted(test_files)} in {root}"
            )
        labels = tuple(sorted(train_files))
        train = [(path, labels.index(name)) for name in labels for path in train_files[name]]
        test = [(path, labels.index(name)) for name in labels for path in test_files[name]]
    else:
        files = _list_class_files(root, extensions)
        labels = tuple(sorted(files))
        rng = np.random.default_rng(SPLIT_SEED)
        train, test = [], []
        for label, name in enumerate(labels):
            paths = [files[name][index] for index in rng.permutation(len(files[name]))]
            held_out = max(1, round(len(paths) * TEST_FRACTION)) if len(paths) > 1 else 0
            test += [(path, label) for path in paths[:held_out]]
            train += [(path, label) for path in paths[held_out:]]
    if len(labels) < 2:
        raise DataError(
            f"expected at least 2 class folders holding {kind} files ({', '.join(extensions)}) in {root}, found {list(labels)}"
        )
    return labels, train, test


def decode_items(
    items: list[tuple[Path, int]],
    kind: str,
    input_shape: tuple[int, ...],
    preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
    strict: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode (path, label) items to uint8 (N, *input_shape) pixels and int64 labels.

    Args:
        items: Files and their class indices.
        kind: `"image"` or `"video"`.
        input_shape: The model's per-sample shape (C, H, W) or (T, C, H, W).
        preprocessing: The model's declared preprocessing.
        strict: Raise on the first unreadable file; otherwise skip it.

    Returns:
        `(pixels, labels, skipped)`: skipped holds one `"path: reason"` per unreadable file (empty when strict).

    Raises:
        DataError: An unreadable file when `strict`.
    """
    height, width = input_shape[-2], input_shape[-1]
    arrays, labels, skipped = [], [], []
    for path, label in items:
        try:
            if kind == "image":
                arrays.append(read_image(path, input_shape[0], height, width, preprocessing))
            else:
                arrays.append(read_video(path, input_shape[0], input_shape[1], height, width, preprocessing))
        except DataError as exc:
            if strict:
                raise
            message = str(exc)  # the decoders name the file already; other errors get it prefixed
            skipped.append(message if str(path) in message else f"{path}: {message}")
            continue
        labels.append(label)
    pixels = np.stack(arrays) if arrays else np.zeros((0, *input_shape), dtype=np.uint8)
    return pixels, np.array(labels, dtype=np.int64), skipped
