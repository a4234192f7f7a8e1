"""Python-backend shim: serve an ONNX model on the CPU through a pluggable runtime (ONNX Runtime default).

Copied as `1/model.py` into each runner entry of the runtime view. Its config parameters are the typed
`attnserve.repository.runner.RunnerParameters` (set by `attnserve.serving.runtime_view`): `runtime`,
`precision`, `model_file` (absolute, or relative to the version folder), `intra_op_threads` (0 = cores //
instances), `allow_spinning`. The logic lives in `batch_runner` and `attnserve.runtimes`, importable without
Triton. A request that does not fit the model fails alone with INVALID_ARG (HTTP 400 / gRPC INVALID_ARGUMENT);
a failed run fails its batch with INTERNAL, logged with its traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from attnserve.errors import AttnserveError, UserInputError
from attnserve.repository.config import python_model_config
from attnserve.repository.runner import RunnerParameters
from attnserve.runtimes.session import intra_op_threads_for, open_session
from attnserve.serving.python_models.batch_runner import RequestInputs, TensorSpec, run_requests


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config, parameters = python_model_config(args)
        runner = RunnerParameters.from_parameters(parameters)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        model_path = version_dir / runner.model_file  # an absolute model_file replaces the folder
        instance_count = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
        threads = runner.intra_op_threads or intra_op_threads_for(instance_count)
        self.session = open_session(
            runner.runtime, model_path, intra_op_threads=threads, options={**parameters, **runner.session_options()}
        )
        # a dim the config leaves variable (-1) but the model fixes is checked against the model: a request
        # that does not fit is the caller's error (INVALID_ARG), not a failure of the batch (INTERNAL)
        model_dims = self.session.input_dims
        self.inputs = [TensorSpec.from_config(t).narrowed(model_dims.get(t["name"])) for t in config["input"]]
        self.outputs = [TensorSpec.from_config(tensor) for tensor in config["output"]]

    def execute(self, requests: list) -> list:
        request_inputs: list[RequestInputs] = []
        for request in requests:
            arrays: dict[str, Any] = {}
            missing: UserInputError | None = None
            for tensor in self.inputs:
                triton_tensor = pb_utils.get_input_tensor_by_name(request, tensor.name)
                if triton_tensor is None:
                    missing = UserInputError(f"missing input {tensor.name!r}")
                    break
                arrays[tensor.name] = triton_tensor.as_numpy()
            request_inputs.append(arrays if missing is None else missing)
        responses = []
        for result in run_requests(self.session.run, request_inputs, self.inputs, self.outputs):
            if isinstance(result, AttnserveError):
                # the caller's mistake is INVALID_ARG (HTTP 400 / gRPC INVALID_ARGUMENT); a failed run INTERNAL
                code = (
                    pb_utils.TritonError.INVALID_ARG
                    if isinstance(result, UserInputError)
                    else pb_utils.TritonError.INTERNAL
                )
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(result), code)))
            else:
                tensors = [pb_utils.Tensor(name, array) for name, array in result.items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        self.session = None  # type: ignore[assignment]
