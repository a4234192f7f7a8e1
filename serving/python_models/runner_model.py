"""Python-backend shim: serve an ONNX model on the CPU through a pluggable runtime (ONNX Runtime default).

Copied as `1/model.py` into each runner entry of the runtime view. Config parameters (set by
`attnserve.serving.runtime_view`): `runtime`, `model_file` (absolute, or relative to the version folder),
`intra_op_threads` (0 = cores // instances), `allow_spinning`. The logic lives in `batch_runner` and `runtime`, importable without Triton.
"""

from __future__ import annotations

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils
from attnserve.serving.python_models.batch_runner import TensorSpec, run_requests
from attnserve.serving.python_models.runtime import (
    DEFAULT_RUNTIME,
    MODEL_FILE_PARAMETER,
    RUNTIME_PARAMETER,
    open_session,
    threads_from_parameters,
)

from attnserve.errors import AttnserveError, UserInputError


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        version_dir = Path(args["model_repository"]) / args["model_version"]
        model_path = Path(parameters.get(MODEL_FILE_PARAMETER, "model.onnx"))
        if not model_path.is_absolute():
            model_path = version_dir / model_path
        instance_count = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
        threads = threads_from_parameters(parameters, instance_count)
        self.session = open_session(
            parameters.get(RUNTIME_PARAMETER, DEFAULT_RUNTIME), model_path, intra_op_threads=threads, options=parameters
        )
        self.inputs = [TensorSpec.from_config(tensor) for tensor in config["input"]]
        self.outputs = [TensorSpec.from_config(tensor) for tensor in config["output"]]

    def execute(self, requests: list) -> list:
        request_inputs = []
        for request in requests:
            arrays = {}
            for tensor in self.inputs:
                triton_tensor = pb_utils.get_input_tensor_by_name(request, tensor.name)
                if triton_tensor is None:
                    arrays = UserInputError(f"missing input {tensor.name!r}")
                    break
                arrays[tensor.name] = triton_tensor.as_numpy()
            request_inputs.append(arrays)
        responses = []
        for result in run_requests(self.session.run, request_inputs, self.inputs, self.outputs):
            if isinstance(result, AttnserveError):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(result))))
            else:
                tensors = [pb_utils.Tensor(name, array) for name, array in result.items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        self.session = None
