"""Python-backend shim `NAME_timeline`: one encoded video -> a JSON timeline of per-segment top-k labels.

Copied as `1/model.py` by `attnserve.serving.pipelines.write_pipeline_entries` for video models. Per request:
decode the video once (`attnserve.video`, limits from the config parameters), plan sliding windows (optional
request inputs `window_s`, `stride_s`, left out or negative = the defaults; `window_s = 0` classifies the whole
video as one clip), sample each window
uniformly to the model's frames, resize/crop each used frame once, and send the clips to the classifier
`NAME` through Triton's BLS in requests of up to its `max_batch_size` clips, so its dynamic batcher runs
them as batches (`clips_per_request = 1` sends one clip per request: the unbatched baseline of the bench).
A bad video fails its own request with INVALID_ARG (HTTP 400) and the reason; the server keeps serving.
"""

from __future__ import annotations

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils

from attnserve.errors import AttnserveError, InferenceError
from attnserve.repository.config import python_model_config
from attnserve.serving.python_models.preprocess import PreprocessTarget, to_pixels
from attnserve.spec import (
    INPUT_NAME,
    OUTPUT_NAME,
    TIMELINE_TENSORS,
)
from attnserve.video import Timeline, VideoLimits, clip_indices, decode_video, plan_timeline, timeline_result


def _optional(request: object, name: str) -> float | None:
    """An optional scalar input; left out or negative = the default (None)."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    value = None if tensor is None else float(tensor.as_numpy().reshape(-1)[0])
    return None if value is None or value < 0 else value


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config, parameters = python_model_config(args)
        self.target = PreprocessTarget.from_parameters(parameters)
        self.limits = VideoLimits.from_parameters(parameters)
        self.classifier = parameters["classifier"]
        self.classifier_batch = int(parameters["classifier_max_batch_size"])
        self.labels = tuple(json.loads(parameters["labels"]))

    def _classify(self, clips: np.ndarray, per_request: int) -> np.ndarray:
        """(S, T, C, H, W) uint8 -> logits (S, classes): BLS requests of `per_request` clips each."""
        logits = []
        for start in range(0, len(clips), per_request):
            request = pb_utils.InferenceRequest(
                model_name=self.classifier,
                requested_output_names=[OUTPUT_NAME],
                inputs=[pb_utils.Tensor(INPUT_NAME, np.ascontiguousarray(clips[start : start + per_request]))],
            )
            response = request.exec()
            if response.has_error():
                raise InferenceError(f"{self.classifier}: {response.error().message()}")
            logits.append(pb_utils.get_output_tensor_by_name(response, OUTPUT_NAME).as_numpy())
        return np.concatenate(logits)

    def _timeline(self, request: object) -> Timeline:
        payload = pb_utils.get_input_tensor_by_name(request, TIMELINE_TENSORS.video).as_numpy().reshape(-1)[0]
        frames = int(self.target.frames or 1)
        started = time.perf_counter()
        video = decode_video(payload, self.limits, needed=frames)
        decoded = time.perf_counter()
        window_s, stride_s = _optional(request, TIMELINE_TENSORS.window), _optional(request, TIMELINE_TENSORS.stride)
        segments = plan_timeline(len(video.frames), video.fps, frames, window_s, stride_s)
        indices = [clip_indices(segment, frames, self.target.preprocessing) for segment in segments]
        pixels = {int(i): to_pixels(video.frames[i], self.target) for i in np.unique(np.concatenate(indices))}
        clips = np.stack([np.stack([pixels[int(i)] for i in clip]) for clip in indices])  # (S, T, C, H, W)
        resized = time.perf_counter()
        asked = int(_optional(request, TIMELINE_TENSORS.clips) or 0)
        per_request = min(asked, self.classifier_batch) if asked > 0 else self.classifier_batch
        logits = self._classify(clips, per_request)
        classified = time.perf_counter()
        top_k = int(_optional(request, TIMELINE_TENSORS.top_k) or 3)
        result = timeline_result(logits, segments, self.labels, top_k, video.fps)
        timings = {"decode": decoded - started, "resize": resized - decoded, "classify": classified - resized}
        return result.model_copy(
            update={"clips_per_request": per_request, "timings_s": {k: round(v, 4) for k, v in timings.items()}}
        )

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                result = self._timeline(request)
            except InferenceError as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INTERNAL)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            except AttnserveError as exc:
                # a bad video or window is the caller's error: INVALID_ARG (HTTP 400), not INTERNAL (500)
                error = pb_utils.TritonError(f"video: {exc}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            encoded = np.array([result.model_dump_json().encode()], dtype=np.object_)
            responses.append(
                pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(TIMELINE_TENSORS.output, encoded)])
            )
        return responses
