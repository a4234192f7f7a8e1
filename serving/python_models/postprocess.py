"""A detector's post-processing step: fixed-size candidates -> JSON detections in the original image's pixels.

Plain functions, importable without Triton: the `postprocess_model` shim (`NAME_postprocess`, the last step of a
detection `NAME_pipeline`) calls `detections_json` per image, and tests call it in-process. The step keeps the
candidates scoring at least the threshold, applies class-aware NMS when the model needs it, keeps the top-k, and
maps the boxes back through the model's `Preprocessing` with the original size the pre-processing step passed
on (`attnserve.boxes`). The answer is a JSON list, best first: `{"label", "score", "box": [x0, y0, x1, y1]}`;
an image with nothing above the threshold answers `[]`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from attnserve.boxes import BoxMapping
from attnserve.detection import (
    DEFAULT_SCORE_THRESHOLD,
    DEFAULT_TOP_K,
    CandidateSelection,
    Detection,
    detections_from_candidates,
)
from attnserve.errors import UserInputError
from attnserve.preprocessing import Preprocessing
from attnserve.spec import DETECTIONS_OUTPUT, ORIGINAL_SIZE

__all__ = ["DETECTIONS_OUTPUT", "ORIGINAL_SIZE", "DetectionTarget", "detections", "detections_json"]


@dataclass(frozen=True)
class DetectionTarget:
    """What the post-processing needs: labels, the model's input size and preprocessing, and the answer's limits."""

    labels: tuple[str, ...]
    width: int
    height: int
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    top_k: int = DEFAULT_TOP_K
    nms_iou: float | None = None

    def to_parameters(self) -> dict[str, str]:
        """As Triton config parameters (strings)."""
        parameters = {"labels": json.dumps(list(self.labels)), "width": str(self.width), "height": str(self.height),
                      "score_threshold": str(self.score_threshold), "top_k": str(self.top_k)}  # fmt: skip
        if self.nms_iou is not None:
            parameters["nms_iou"] = str(self.nms_iou)
        return {**parameters, **self.preprocessing.to_parameters()}

    @classmethod
    def from_parameters(cls, parameters: dict[str, str]) -> DetectionTarget:
        """Back from `to_parameters` (what the python-backend model reads from its config)."""
        try:
            return cls(
                labels=tuple(json.loads(parameters["labels"])),
                width=int(parameters["width"]),
                height=int(parameters["height"]),
                preprocessing=Preprocessing.from_parameters(parameters),
                score_threshold=float(parameters.get("score_threshold", DEFAULT_SCORE_THRESHOLD)),
                top_k=int(parameters.get("top_k", DEFAULT_TOP_K)),
                nms_iou=float(parameters["nms_iou"]) if "nms_iou" in parameters else None,
            )
        except (KeyError, ValueError) as exc:
            raise UserInputError(f"postprocess parameters need labels, width, height; got {parameters}") from exc


def detections(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, original_size: np.ndarray,
               target: DetectionTarget) -> list[Detection]:  # fmt: skip
    """One image's candidates (K, 4), (K,), (K,) and its original `[width, height]` -> detections."""
    width, height = (int(v) for v in np.asarray(original_size).reshape(-1)[:2])
    mapping = BoxMapping.for_image(width, height, target.width, target.height, target.preprocessing)
    selection = CandidateSelection(target.score_threshold, target.top_k, target.nms_iou)
    return detections_from_candidates(boxes, scores, classes, target.labels, mapping, selection)


def detections_json(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, original_size: np.ndarray,
                    target: DetectionTarget) -> bytes:  # fmt: skip
    """`detections` as the UTF-8 JSON the pipeline answers."""
    return json.dumps(detections(boxes, scores, classes, original_size, target)).encode()
