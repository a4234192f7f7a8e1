"""Typed Triton configs render to text that Triton's own protobuf parses back field for field."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from attnserve.repository.config import (
    DynamicBatching,
    EnsembleScheduling,
    EnsembleStep,
    InstanceGroup,
    ModelConfig,
    QueuePolicy,
    TensorConfig,
    VersionPolicy,
    VersionPolicyLatest,
    parse_pbtxt,
    spec_json_from_pbtxt,
)

PIXELS = TensorConfig(name="pixels", data_type="TYPE_UINT8", format="FORMAT_NCHW", dims=(3, 16, 16))
LOGITS = TensorConfig(name="logits", data_type="TYPE_FP32", dims=(4,), label_filename="labels.txt")


def test_onnx_config_round_trips_through_triton_protobuf() -> None:
    tricky = 'he said "hi"\\ \n and left'
    config = ModelConfig(
        name="tiny",
        platform="onnxruntime_onnx",
        max_batch_size=8,
        input=(PIXELS,),
        output=(LOGITS,),
        dynamic_batching=DynamicBatching(
            preferred_batch_size=(4, 8),
            max_queue_delay_microseconds=500,
            default_queue_policy=QueuePolicy(max_queue_size=32, default_timeout_microseconds=1000),
        ),
        instance_group=(InstanceGroup(count=2),),
        parameters={"note": tricky},
        version_policy=VersionPolicy(latest=VersionPolicyLatest(num_versions=2)),
    )
    parsed = parse_pbtxt(config.to_pbtxt())
    assert parsed.name == "tiny" and parsed.platform == "onnxruntime_onnx" and parsed.max_batch_size == 8
    assert parsed.input[0].name == "pixels" and list(parsed.input[0].dims) == [3, 16, 16]
    assert parsed.input[0].data_type == 2  # TYPE_UINT8
    assert parsed.input[0].format == 2  # FORMAT_NCHW
    assert parsed.output[0].label_filename == "labels.txt" and parsed.output[0].data_type == 11  # TYPE_FP32
    assert list(parsed.dynamic_batching.preferred_batch_size) == [4, 8]
    assert parsed.dynamic_batching.max_queue_delay_microseconds == 500
    policy = parsed.dynamic_batching.default_queue_policy
    assert (policy.max_queue_size, policy.default_timeout_microseconds, policy.timeout_action) == (
        32,
        1000,
        0,
    )  # REJECT
    assert parsed.instance_group[0].count == 2 and parsed.instance_group[0].kind == 0  # KIND_AUTO: unset
    assert parsed.parameters["note"].string_value == tricky
    assert parsed.version_policy.latest.num_versions == 2


def test_python_backend_and_ensemble_configs_parse() -> None:
    python_model = ModelConfig(
        name="tiny_preprocess",
        backend="python",
        max_batch_size=8,
        input=(TensorConfig(name="image", data_type="TYPE_UINT8", dims=(-1,)),),
        output=(PIXELS.model_copy(update={"format": None}),),
        instance_group=(InstanceGroup(count=1, kind="KIND_CPU"),),
        parameters={"mean": "0.5,0.5,0.5"},
    )
    parsed = parse_pbtxt(python_model.to_pbtxt())
    assert parsed.backend == "python" and parsed.instance_group[0].kind == 2  # KIND_CPU
    ensemble = ModelConfig(
        name="tiny_pipeline",
        platform="ensemble",
        max_batch_size=8,
        input=(TensorConfig(name="image", data_type="TYPE_UINT8", dims=(-1,)),),
        output=(LOGITS,),
        ensemble_scheduling=EnsembleScheduling(
            step=(
                EnsembleStep(model_name="tiny_preprocess", input_map={"image": "image"}, output_map={"pixels": "px"}),
                EnsembleStep(model_name="tiny", input_map={"pixels": "px"}, output_map={"logits": "logits"}),
            )
        ),
    )
    parsed = parse_pbtxt(ensemble.to_pbtxt())
    steps = parsed.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["tiny_preprocess", "tiny"]
    assert dict(steps[0].output_map) == {"pixels": "px"} and dict(steps[1].input_map) == {"pixels": "px"}


def test_spec_parameter_is_recoverable() -> None:
    spec_json = json.dumps({"name": "tiny", "labels": ["a", "b"]})
    config = ModelConfig(
        name="tiny",
        platform="onnxruntime_onnx",
        max_batch_size=2,
        input=(PIXELS,),
        output=(LOGITS,),
        parameters={"attnserve_spec": spec_json},
    )
    assert spec_json_from_pbtxt(config.to_pbtxt()) == json.loads(spec_json)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(platform="onnxruntime_onnx", backend="python"), "exactly one of platform or backend"),
        (dict(platform="onnxruntime_onnx", max_batch_size=0, dynamic_batching=DynamicBatching()), "max_batch_size > 0"),
        (
            dict(
                platform="onnxruntime_onnx",
                max_batch_size=4,
                dynamic_batching=DynamicBatching(preferred_batch_size=(8,)),
            ),
            "exceed max_batch_size",
        ),
        (dict(platform="onnxruntime_onnx", output=(LOGITS, LOGITS)), "unique"),
        (dict(platform="ensemble"), "ensemble_scheduling"),
    ],
)
def test_inconsistent_configs_are_rejected_with_the_reason(fields: dict, message: str) -> None:
    base = dict(name="bad", max_batch_size=4, input=(PIXELS,), output=(LOGITS,))
    with pytest.raises(ValidationError, match=message):
        ModelConfig(**{**base, **fields})


def test_bad_dims_and_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="positive or -1"):
        TensorConfig(name="x", data_type="TYPE_FP32", dims=(0, 3))
    with pytest.raises(ValidationError):
        TensorConfig(name="x", data_type="TYPE_FLOAT", dims=(3,))  # not a Triton data type
    with pytest.raises(ValidationError):
        ModelConfig(name="x", platform="onnxruntime_onnx", input=(PIXELS,), output=(LOGITS,), maxbatch=3)
