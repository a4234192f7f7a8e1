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
from attnserve.serving.python_models.preprocess import PreprocessTarget, decode, decode_image_with_size
from attnserve.video import VideoLimits


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config, parameters = python_model_config(args)
        self.target = PreprocessTarget.from_parameters(parameters)
        self.limits = VideoLimits.from_parameters(parameters)
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        # detection pipelines: a second output carries each original [width, height] to the post-processing
        self.size_name = config["output"][1]["name"] if len(config["output"]) > 1 else None

    def _outputs(self, request: object) -> list:
        payloads = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()  # (b, 1) of bytes
        if self.size_name is None:
            samples = [decode(payload, self.target, self.limits) for payload in payloads.reshape(-1)]
            return [pb_utils.Tensor(self.output_name, np.stack(samples))]  # (b, *target.output_shape)
        decoded = [decode_image_with_size(payload, self.target) for payload in payloads.reshape(-1)]
        return [pb_utils.Tensor(self.output_name, np.stack([pixels for pixels, _ in decoded])),
                pb_utils.Tensor(self.size_name, np.stack([size for _, size in decoded]))]  # fmt: skip

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                outputs = self._outputs(request)
            except AttnserveError as exc:
                # a bad payload is the caller's error: INVALID_ARG (HTTP 400), not INTERNAL (500)
                error = pb_utils.TritonError(f"{self.input_name}: {exc}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
