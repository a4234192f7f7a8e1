"""Datasets: determinism, splits, the motion set's no-leak property, class folders, sample files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from attnserve.catalogue import DEPLOYABLE_NAMES, get_deployable
from attnserve.errors import DataError
from attnserve.models.data import load_dataset, sample_inputs, write_samples
from attnserve.models.folders import read_image, read_video, write_png
from attnserve.models.synthetic import MOTION_OFFSETS, digits_arrays, motion_arrays, shapes_arrays


@pytest.mark.parametrize("generate", [shapes_arrays, motion_arrays])
def test_procedural_sets_are_deterministic(generate) -> None:
    first_pixels, first_labels = generate(24, seed=3)
    again_pixels, again_labels = generate(24, seed=3)
    other_pixels, _ = generate(24, seed=4)
    assert first_pixels.dtype == np.uint8 and first_labels.dtype == np.int64
    assert np.array_equal(first_pixels, again_pixels) and np.array_equal(first_labels, again_labels)
    assert not np.array_equal(first_pixels, other_pixels)


def test_shapes_and_motion_shapes_and_classes() -> None:
    images, image_labels = shapes_arrays(200, seed=0)
    clips, clip_labels = motion_arrays(200, seed=0)
    assert images.shape == (200, 3, 32, 32) and clips.shape == (200, 8, 3, 32, 32)
    assert set(image_labels.tolist()) == {0, 1, 2, 3} and set(clip_labels.tolist()) == set(range(len(MOTION_OFFSETS)))
    assert images.std() > 30 and clips.std() > 30  # not blank


def test_digits_are_real_and_upsampled() -> None:
    pixels, labels = digits_arrays(size=32)
    assert pixels.shape == (1797, 1, 32, 32) and set(labels.tolist()) == set(range(10))


def test_digits_split_is_fixed_and_disjoint() -> None:
    first, second = load_dataset("vit_digits", seed=0), load_dataset("cnn_cbam_digits", seed=5)
    assert len(first.train_labels) + len(first.test_labels) == 1797
    assert np.array_equal(first.test_pixels.numpy(), second.test_pixels.numpy())
    train_rows = {row.tobytes() for row in first.train_pixels.numpy()}
    overlap = sum(row.tobytes() in train_rows for row in first.test_pixels.numpy())
    assert overlap <= 3  # load_digits holds a few exact duplicate images, nothing more


def _column_profiles(clips: np.ndarray) -> np.ndarray:
    """(N, T, C, H, W) -> (N, T, W): how far each column is from the clip's background colour."""
    pixels = clips.astype(np.float32)
    background = np.median(pixels, axis=(1, 3, 4), keepdims=True)  # (N, 1, C, 1, 1)
    return np.abs(pixels - background).mean(axis=(2, 3))


def _displacements(profiles: np.ndarray) -> np.ndarray:
    """(N, T, W) -> (N, T-1): circular shift that best aligns each frame's profile with the next one."""
    spectra = np.fft.rfft(profiles - profiles.mean(axis=-1, keepdims=True), axis=-1)
    correlation = np.fft.irfft(np.conj(spectra[:, :-1]) * spectra[:, 1:], n=profiles.shape[-1], axis=-1)
    shifts = correlation.argmax(axis=-1)
    width = profiles.shape[-1]
    return np.where(shifts >= width // 2, shifts - width, shifts).astype(np.float32)


def _held_out_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression

    split = len(labels) * 3 // 4
    classifier = LogisticRegression(max_iter=500).fit(features[:split], labels[:split])
    return float(classifier.score(features[split:], labels[split:]))


def test_motion_label_needs_frame_order() -> None:
    """No single frame and no unordered set of frames reveals the motion class; ordered frames do.

    The same features (displacements between consecutive frames' column profiles) classify ordered
    clips almost perfectly but shuffled clips at chance, and frame 0 alone is at chance too. The ordered
    case is what makes this test able to fail: the features do carry the label when order is kept.
    """
    clips, labels = motion_arrays(800, seed=7)
    chance = 1.0 / len(MOTION_OFFSETS)
    ordered = _held_out_accuracy(_displacements(_column_profiles(clips)), labels)
    rng = np.random.default_rng(0)
    shuffled_clips = np.stack([clip[rng.permutation(len(clip))] for clip in clips])
    shuffled = _held_out_accuracy(_displacements(_column_profiles(shuffled_clips)), labels)
    first_frame = _held_out_accuracy(_column_profiles(clips)[:, 0], labels)
    assert ordered > 0.9
    assert shuffled < chance + 0.1
    assert first_frame < chance + 0.1


def test_motion_first_frame_pixels_do_not_predict_label() -> None:
    clips, labels = motion_arrays(800, seed=8)
    frame0 = clips[:, 0].astype(np.float32).reshape(len(clips), 3, 8, 4, 8, 4).mean(axis=(3, 5)).reshape(len(clips), -1)
    assert _held_out_accuracy(frame0 / 255.0, labels) < 1.0 / len(MOTION_OFFSETS) + 0.1


@pytest.mark.parametrize("name", DEPLOYABLE_NAMES)
def test_sample_inputs_match_the_spec_and_are_deterministic(name: str) -> None:
    pixels, labels = sample_inputs(name, 3, seed=2)
    again, again_labels = sample_inputs(name, 3, seed=2)
    assert pixels.dtype == np.uint8 and pixels.shape == (3, *get_deployable(name).io.input_shape)
    assert np.array_equal(pixels, again) and np.array_equal(labels, again_labels)


def test_sample_inputs_come_from_the_held_out_split() -> None:
    pixels, labels = sample_inputs("vit_shapes", 5, seed=0)
    dataset = load_dataset("vit_shapes", seed=0)
    assert np.array_equal(pixels, dataset.test_pixels[:5].numpy()) and np.array_equal(
        labels, dataset.test_labels[:5].numpy()
    )


def test_write_samples_images_and_videos(tmp_path: Path) -> None:
    image_paths = write_samples("vit_digits", tmp_path / "digits", 2)
    pixels, labels = sample_inputs("vit_digits", 2)
    assert [path.suffix for path in image_paths] == [".png", ".png"]
    assert image_paths[0].name.endswith(f"_{labels[0]}.png")
    assert np.array_equal(read_image(image_paths[0], 1, 32), pixels[0])  # PNG is lossless

    video_paths = write_samples("timesformer_motion", tmp_path / "motion", 2)
    clips, _ = sample_inputs("timesformer_motion", 2)
    decoded = read_video(video_paths[1], 8, 3, 32)
    assert decoded.shape == clips[1].shape
    assert np.abs(decoded.astype(np.int16) - clips[1]).mean() < 20  # H.264: close, not exact


def test_image_folder_dataset(tmp_path: Path) -> None:
    images, labels = shapes_arrays(20, seed=0, size=40)
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = tmp_path / ("round" if label == 0 else "other")
        folder.mkdir(exist_ok=True)
        write_png(image, folder / f"{index}.png")
    dataset = load_dataset("vit_shapes", data_dir=tmp_path)
    assert dataset.labels == ("other", "round")
    assert dataset.train_pixels.shape[1:] == (3, 32, 32)  # resized to the model's input
    assert len(dataset.train_labels) + len(dataset.test_labels) == 20 and len(dataset.test_labels) >= 2


def test_folder_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a folder"):
        load_dataset("vit_shapes", data_dir=tmp_path / "missing")
    (tmp_path / "only").mkdir()
    write_png(np.zeros((3, 8, 8), np.uint8), tmp_path / "only" / "a.png")
    with pytest.raises(DataError, match="at least 2 class folders"):
        load_dataset("vit_shapes", data_dir=tmp_path)


def test_a_video_shorter_than_the_clip_is_refused_not_padded(tmp_path: Path) -> None:
    from attnserve.errors import DataError
    from attnserve.models.folders import write_mp4

    clips, _ = sample_inputs("timesformer_motion", 1)
    short = write_mp4(clips[0][:3], tmp_path / "short.mp4")  # 3 of the 8 frames the model takes
    with pytest.raises(DataError, match=r"short\.mp4 holds 3 frames: the model needs a video of at least 8"):
        read_video(short, 8, 3, 32)
    assert read_video(short, 3, 3, 32).shape == (3, 3, 32, 32)
