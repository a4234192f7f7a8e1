"""Python-backend shim: a detector's candidates + original size -> JSON detections (`NAME_postprocess`).

Copied as `1/model.py` by `attnserve.serving.pipelines.write_pipeline_entries` for detection models; the labels,
input size, preprocessing and thresholds come from the entry's config parameters (`DetectionTarget`). The logic
is `postprocess.detections_json`, importable without Triton.
"""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

from attnserve.errors import AttnserveError
from attnserve.repository.config import python_model_config
from attnserve.serving.python_models.postprocess import (
    DETECTIONS_OUTPUT,
    ORIGINAL_SIZE,
    DetectionTarget,
    detections_json,
)
from attnserve.spec import DETECTION_OUTPUTS


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        _, parameters = python_model_config(args)
        self.target = DetectionTarget.from_parameters(parameters)

    def _answers(self, request: object) -> np.ndarray:
        boxes, scores, classes = (
            pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in DETECTION_OUTPUTS
        )
        sizes = pb_utils.get_input_tensor_by_name(request, ORIGINAL_SIZE).as_numpy()
        answers = [detections_json(boxes[i], scores[i], classes[i], sizes[i], self.target) for i in range(len(boxes))]
        return np.array(answers, dtype=np.object_).reshape(-1, 1)  # (b, 1) of JSON bytes

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                tensor = pb_utils.Tensor(DETECTIONS_OUTPUT, self._answers(request))
            except AttnserveError as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses
