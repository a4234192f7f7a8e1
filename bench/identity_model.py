"""A trivial python-backend model (`identity`: output = input) to measure the load tester itself.

`write_identity_model(repository)` writes `repository/identity/{config.pbtxt, 1/model.py}`. The model does no
work, so a load test against it measures the client + Triton's request path, not a network.
"""

from __future__ import annotations

from pathlib import Path

IDENTITY_MODEL = "identity"
IDENTITY_INPUT = "input"
IDENTITY_OUTPUT = "output"

_MODEL_PY = '''\
"""Identity python-backend model: each request's `input` comes back as `output`."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, "{input}")
            output = pb_utils.Tensor("{output}", tensor.as_numpy())
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
        return responses
'''

_CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: {max_batch_size}
input [ {{ name: "{input}" data_type: TYPE_UINT8 dims: [ {width} ] }} ]
output [ {{ name: "{output}" data_type: TYPE_UINT8 dims: [ {width} ] }} ]
instance_group [ {{ count: {instances} kind: KIND_CPU }} ]
{batching}
"""


def write_identity_model(
    repository: Path,
    name: str = IDENTITY_MODEL,
    *,
    max_batch_size: int = 256,
    width: int = 4,
    dynamic_batching: bool = True,
    max_queue_delay_us: int = 500,
    instances: int = 1,
) -> Path:
    """Write the identity model into `repository/name`; returns the entry folder."""
    model_dir = Path(repository) / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    batching = f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}" if dynamic_batching else ""
    (model_dir / "config.pbtxt").write_text(
        _CONFIG.format(
            name=name,
            max_batch_size=max_batch_size,
            input=IDENTITY_INPUT,
            output=IDENTITY_OUTPUT,
            width=width,
            instances=instances,
            batching=batching,
        )
    )
    (model_dir / "1" / "model.py").write_text(_MODEL_PY.format(input=IDENTITY_INPUT, output=IDENTITY_OUTPUT))
    return model_dir
