"""Python-backend shim: encoded image/video bytes -> uint8 pixels for one model (`NAME_preprocess`).

Copied as `1/model.py` by `attnserve.serving.pipelines.write_pipeline_entries`; the target size comes from
the entry's config parameters (`PreprocessTarget.to_parameters`). A payload that cannot be decoded fails
its own request, with the reason; the other requests of the batch are served.
"""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

from attnserve.errors import AttnserveError
from attnserve.repository.config import python_model_config
from attnserve.serving.python_models.preprocess import PreprocessTarget, decode
from attnserve.video import VideoLimits


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config, parameters = python_model_config(args)
        self.target = PreprocessTarget.from_parameters(parameters)
        self.limits = VideoLimits.from_parameters(parameters)
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]

    def _pixels(self, request: object) -> np.ndarray:
        payloads = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()  # (b, 1) of bytes
        samples = [decode(payload, self.target, self.limits) for payload in payloads.reshape(-1)]
        return np.stack(samples)  # (b, *target.output_shape)

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                pixels = self._pixels(request)
            except AttnserveError as exc:
                # a bad payload is the caller's error: INVALID_ARG (HTTP 400), not INTERNAL (500)
                error = pb_utils.TritonError(f"{self.input_name}: {exc}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, pixels)]))
        return responses
