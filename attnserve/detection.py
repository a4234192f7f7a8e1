"""Detections as every stage speaks them, and their COCO mAP computed by pycocotools (never a hand-written AP).

A detection is `{"label": str, "score": float, "box": [x0, y0, x1, y1]}` in the pixels of the image it came
from (the served `NAME_pipeline` answers a JSON list of them, best first). `detections_from_candidates` turns a
detector's fixed-size candidates (model-input boxes, scores, class indices) into that list: score threshold,
class-aware NMS when asked (the CenterNet head needs none: its 3x3 peak pooling is its NMS), the top-k, and the
boxes mapped back to the original image through `attnserve.boxes.BoxMapping`. numpy only (no torch): the
python-backend post-processing step, the client and training all use it.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np

from attnserve.boxes import BoxMapping
from attnserve.errors import UserInputError


class Detection(TypedDict):
    """One detected object: its label, score (0..1) and box `[x0, y0, x1, y1]` in the image's own pixels."""

    label: str
    score: float
    box: list[float]


DEFAULT_SCORE_THRESHOLD = 0.3
"""Served answers keep candidates scoring at least this (mAP is computed with threshold 0: every candidate)."""
DEFAULT_TOP_K = 100
"""At most this many detections per image; the model's own candidate count K caps it too."""


@dataclass(frozen=True)
class CandidateSelection:
    """Which of a model's candidates an answer keeps (`select_candidates`)."""

    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    """Candidates below it are dropped."""
    top_k: int = DEFAULT_TOP_K
    """At most this many detections."""
    nms_iou: float | None = None
    """Class-aware NMS at this IoU (None: the model needs none)."""


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes (N, 4), best score first."""
    order, kept = np.argsort(-scores, kind="stable"), []
    areas = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    while len(order):
        best, order = order[0], order[1:]
        kept.append(best)
        x0, y0 = np.maximum(boxes[best, 0], boxes[order, 0]), np.maximum(boxes[best, 1], boxes[order, 1])
        x1, y1 = np.minimum(boxes[best, 2], boxes[order, 2]), np.minimum(boxes[best, 3], boxes[order, 3])
        inter = (x1 - x0).clip(0) * (y1 - y0).clip(0)
        iou = inter / np.maximum(areas[best] + areas[order] - inter, 1e-12)
        order = order[iou <= iou_threshold]
    return np.array(kept, dtype=np.int64)


def select_candidates(
    scores: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    top_k: int = DEFAULT_TOP_K,
    nms_iou: float | None = None,
) -> np.ndarray:
    """Indices of the candidates kept, best first: score at least the threshold, class-aware NMS when
    `nms_iou` is given, at most `top_k`."""
    keep = np.flatnonzero(scores >= score_threshold)
    if nms_iou is not None and len(keep):
        kept = []
        for label in np.unique(classes[keep]):
            members = keep[classes[keep] == label]
            kept.append(members[nms(boxes[members], scores[members], nms_iou)])
        keep = np.concatenate(kept)
    return keep[np.argsort(-scores[keep], kind="stable")][:top_k]


def detections_from_candidates(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    labels: Sequence[str],
    mapping: BoxMapping,
    selection: CandidateSelection | None = None,
) -> list[Detection]:
    """One image's candidates -> detections in original pixels, best first (`select_candidates` chooses them).

    Args:
        boxes: (K, 4) `[x0, y0, x1, y1]` in model-input pixels.
        scores: (K,) in 0..1.
        classes: (K,) class indices into `labels`.
        labels: Class names.
        mapping: Model input -> original image (`BoxMapping.for_image`).
        selection: Threshold, top-k and NMS (default: `CandidateSelection()`).

    Raises:
        UserInputError: A class index outside `labels`, or mismatched candidate shapes.
    """
    boxes, scores = np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64).reshape(-1)
    classes = np.asarray(classes).reshape(-1).astype(np.int64)
    if not len(boxes) == len(scores) == len(classes):
        raise UserInputError(f"candidates disagree: {len(boxes)} boxes, {len(scores)} scores, {len(classes)} classes")
    if len(classes) and (classes.min() < 0 or classes.max() >= len(labels)):
        raise UserInputError(f"class index outside 0..{len(labels) - 1}: {sorted(set(classes.tolist()))}")
    selection = selection or CandidateSelection()
    keep = select_candidates(scores, boxes, classes, selection.score_threshold, selection.top_k, selection.nms_iou)
    original = mapping.to_original(boxes[keep])
    return [
        Detection(label=labels[int(classes[i])], score=float(scores[i]), box=[float(v) for v in box])
        for i, box in zip(keep, original, strict=True)
    ]


def coco_results(image_id: int, detections: Sequence[Detection], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Detections -> COCO result records (`bbox` as x, y, width, height; `category_id` = label index)."""
    index = {label: position for position, label in enumerate(labels)}
    return [
        {
            "image_id": image_id,
            "category_id": index[d["label"]],
            "score": d["score"],
            "bbox": [d["box"][0], d["box"][1], d["box"][2] - d["box"][0], d["box"][3] - d["box"][1]],
        }  # fmt: skip
        for d in detections
    ]


def coco_results_of(answers: Sequence[Sequence[Detection]], labels: Sequence[str]) -> list[dict[str, Any]]:
    """One detection list per image (image id = its index) -> COCO result records of them all."""
    return [record for image_id, found in enumerate(answers) for record in coco_results(image_id, found, labels)]


def coco_map(ground_truth: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, float]:
    """COCO box mAP with pycocotools: `{"map": mAP@[.5:.95], "map50": mAP@.5, "map75": mAP@.75}`.

    Args:
        ground_truth: A COCO dataset dict (images, annotations, categories).
        results: COCO result records (`coco_results`) for those images.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and table
        truth = COCO()
        truth.dataset = ground_truth
        truth.createIndex()
        if not results:
            return {"map": 0.0, "map50": 0.0, "map75": 0.0}
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = evaluation.stats
    return {"map": float(stats[0]), "map50": float(stats[1]), "map75": float(stats[2])}
