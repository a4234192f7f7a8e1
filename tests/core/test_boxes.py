"""Boxes map from the model's input back to the original image exactly as `to_chw` resized it (every mode)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from attnserve.boxes import BoxMapping
from attnserve.detection import CandidateSelection, coco_map, detections_from_candidates, nms
from attnserve.errors import UserInputError
from attnserve.preprocessing import Preprocessing, to_chw

INPUT_W, INPUT_H = 96, 64


def _bright_box(chw: np.ndarray) -> np.ndarray:
    """The pixel-corner box of the bright pixels of a (C, H, W) image."""
    ys, xs = np.nonzero(chw.max(axis=0) > 127)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


@pytest.mark.parametrize("mode", ["squash", "letterbox", "crop"])
@pytest.mark.parametrize("size", [(300, 120), (90, 200), (192, 128)])
def test_mapping_inverts_the_resize_on_real_pixels(mode: str, size: tuple[int, int]) -> None:
    """A white rectangle drawn on a non-square original is found in the model input where `to_input` puts it,
    and the box found there maps back onto the original rectangle (within one input pixel's size)."""
    width, height = size
    original_box = np.array([0.3 * width, 0.35 * height, 0.6 * width, 0.7 * height]).round()
    image = Image.new("RGB", size, (0, 0, 0))
    ImageDraw.Draw(image).rectangle(tuple(original_box - [0, 0, 1, 1]), fill=(255, 255, 255))
    preprocessing = Preprocessing(resize=mode)  # type: ignore[arg-type]
    seen = _bright_box(to_chw(image, 3, INPUT_H, INPUT_W, preprocessing))
    mapping = BoxMapping.for_image(width, height, INPUT_W, INPUT_H, preprocessing)
    expected_seen = mapping.to_input(original_box)[0].clip(0, [INPUT_W, INPUT_H, INPUT_W, INPUT_H])  # crop cuts
    np.testing.assert_allclose(expected_seen, seen, atol=1.0)
    visible = mapping.to_original([0, 0, INPUT_W, INPUT_H])[0]  # the part of the original the model sees
    visible_box = np.concatenate([np.maximum(original_box[:2], visible[:2]), np.minimum(original_box[2:], visible[2:])])
    back = mapping.to_original(seen)[0]
    np.testing.assert_allclose(back, visible_box, atol=max(mapping.scale_x, mapping.scale_y))
    np.testing.assert_allclose(mapping.to_original(mapping.to_input(original_box))[0], original_box, atol=1e-9)


def test_letterbox_padding_clips_to_the_image_border() -> None:
    mapping = BoxMapping.for_image(100, 100, INPUT_W, INPUT_H, Preprocessing(resize="letterbox"))
    assert (mapping.offset_x, mapping.offset_y) == (16.0, 0.0)
    np.testing.assert_allclose(mapping.to_original([0, 0, 96, 64])[0], [0, 0, 100, 100])


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(UserInputError, match="positive sizes"):
        BoxMapping.for_image(0, 10, INPUT_W, INPUT_H, Preprocessing())


def test_candidates_become_thresholded_mapped_detections() -> None:
    mapping = BoxMapping.for_image(192, 128, INPUT_W, INPUT_H, Preprocessing())  # squash: x2 each axis
    boxes = np.array([[10, 10, 20, 20], [11, 10, 21, 20], [50, 30, 60, 40], [0, 0, 5, 5]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.1], dtype=np.float32)
    selection = CandidateSelection(score_threshold=0.3)
    found = detections_from_candidates(boxes, scores, np.array([0, 0, 1, 2]), ("a", "b", "c"), mapping, selection)
    assert [d["label"] for d in found] == ["a", "a", "b"]
    assert found[0]["box"] == [20.0, 20.0, 40.0, 40.0]
    deduplicated = detections_from_candidates(boxes, scores, np.array([0, 0, 1, 2]), ("a", "b", "c"), mapping,
                                              CandidateSelection(0.3, nms_iou=0.5))  # fmt: skip
    assert [d["label"] for d in deduplicated] == ["a", "b"]
    assert detections_from_candidates(boxes, scores * 0, np.zeros(4), ("a", "b"), mapping) == []
    assert list(nms(boxes[:2].astype(np.float64), scores[:2].astype(np.float64), 0.5)) == [0]
    with pytest.raises(UserInputError, match="class index"):
        detections_from_candidates(
            boxes, scores, np.array([0, 0, 1, 7]), ("a", "b", "c"), mapping, CandidateSelection(0.0)
        )


def test_coco_map_of_exact_answers_is_one() -> None:
    truth = {
        "images": [{"id": 0, "width": 50, "height": 40}],
        "annotations": [{"id": 1, "image_id": 0, "category_id": 0, "bbox": [5, 5, 10, 10], "area": 100, "iscrowd": 0}],
        "categories": [{"id": 0, "name": "a"}],
    }
    exact = [{"image_id": 0, "category_id": 0, "score": 0.9, "bbox": [5, 5, 10, 10]}]
    assert coco_map(truth, exact)["map"] == pytest.approx(1.0)
    assert coco_map(truth, [])["map50"] == 0.0
