"""Pre-processing entries and `NAME_pipeline` ensembles: encoded bytes in, top-k labels out.

For a spec `NAME`, `write_pipeline_entries` writes two entries beside the model's own (three for video):

    NAME_preprocess  python backend: input `image` (or `video`) TYPE_STRING [1] -> `pixels` uint8 (spec shape);
                     the target size/channels/frames are config parameters; model.py = preprocess_model shim
    NAME_pipeline    ensemble: NAME_preprocess -> NAME; output `logits` with `labels.txt`, so a client asks
                     for top-k labels through Triton's classification extension (`class_count=k`)
    NAME_timeline    video only, python backend: input `video` TYPE_STRING [1] (+ optional window_s, stride_s,
                     top_k, clips_per_request) -> `timeline` JSON; sends the clips to NAME through BLS

Configs are built with the repository layer's typed `ModelConfig` objects (one writer for every config).
"""

from __future__ import annotations

import json
from pathlib import Path

from attnserve.repository.config import (
    SPEC_PARAMETER,
    EnsembleScheduling,
    EnsembleStep,
    InstanceGroup,
    ModelConfig,
    TensorConfig,
)
from attnserve.repository.entries import (
    ENSEMBLE_PLATFORM,
    add_python_entry,
    detection_outputs,
    dynamic_batching_for,
    logits_output,
    pixels_input,
)
from attnserve.serving.python_models.postprocess import DETECTIONS_OUTPUT, ORIGINAL_SIZE, DetectionTarget
from attnserve.serving.python_models.preprocess import PreprocessTarget
from attnserve.spec import (
    DETECTION_OUTPUTS,
    IMAGE_BYTES_INPUT,
    INPUT_NAME,
    OUTPUT_NAME,
    TIMELINE_TENSORS,
    VIDEO_BYTES_INPUT,
    ModelSpec,
)
from attnserve.video import VideoLimits

PREPROCESS_SHIM = Path(__file__).parent / "python_models" / "preprocess_model.py"
TIMELINE_SHIM = Path(__file__).parent / "python_models" / "timeline_model.py"
POSTPROCESS_SHIM = Path(__file__).parent / "python_models" / "postprocess_model.py"
TIMELINE_OPTIONS = {
    TIMELINE_TENSORS.window: "TYPE_FP32",
    TIMELINE_TENSORS.stride: "TYPE_FP32",
    TIMELINE_TENSORS.top_k: "TYPE_INT32",
    TIMELINE_TENSORS.clips: "TYPE_INT32",
}
"""Optional scalar inputs of `NAME_timeline`, per request."""


def timeline_config(spec: ModelSpec) -> ModelConfig:
    """`NAME_timeline`: python backend, one video per request, clips to `NAME` through BLS.

    `max_batch_size` 1 and no dynamic batching: a request is one whole video (its clips are the batch, formed
    inside and sent on to `NAME`).
    """
    options = tuple(
        TensorConfig(name=name, data_type=data_type, dims=(1,), optional=True)
        for name, data_type in TIMELINE_OPTIONS.items()
    )
    parameters = {
        **preprocess_parameters(spec),
        "classifier": spec.name,
        "classifier_max_batch_size": str(spec.serving.max_batch_size),
        "labels": json.dumps(list(spec.io.labels)),
    }
    return ModelConfig(
        name=spec.timeline_name,
        backend="python",
        max_batch_size=1,
        input=(TensorConfig(name=TIMELINE_TENSORS.video, data_type="TYPE_STRING", dims=(1,)), *options),
        output=(TensorConfig(name=TIMELINE_TENSORS.output, data_type="TYPE_STRING", dims=(1,)),),
        instance_group=(InstanceGroup(count=1, kind="KIND_CPU"),),
        parameters=parameters,
    )


def pipeline_input_name(spec: ModelSpec) -> str:
    """Name of the encoded-bytes input of `NAME_preprocess` and `NAME_pipeline`: `image` or `video`."""
    return VIDEO_BYTES_INPUT if spec.kind == "video" else IMAGE_BYTES_INPUT


def preprocess_target(spec: ModelSpec) -> PreprocessTarget:
    """What `NAME_preprocess` decodes to: the spec's channels, size, frames and declared preprocessing."""
    return PreprocessTarget(
        kind=spec.kind,
        channels=spec.channels,
        height=spec.height,
        width=spec.width,
        frames=spec.frames,
        preprocessing=spec.io.preprocessing,
    )


def preprocess_parameters(spec: ModelSpec) -> dict[str, str]:
    """Config parameters of `NAME_preprocess`: the target, and for video the limits (`VideoLimits`, env-settable)."""
    parameters = preprocess_target(spec).to_parameters()
    return {**parameters, **VideoLimits().to_parameters()} if spec.kind == "video" else parameters


def encoded_input(spec: ModelSpec) -> TensorConfig:
    """The bytes input: one encoded image or video per sample (TYPE_STRING, dims [1])."""
    return TensorConfig(name=pipeline_input_name(spec), data_type="TYPE_STRING", dims=(1,))


def preprocess_config(spec: ModelSpec) -> ModelConfig:
    """`NAME_preprocess`: python backend, batched like the model, decoding per request."""
    pixels = pixels_input(spec)
    sizes = (TensorConfig(name=ORIGINAL_SIZE, data_type="TYPE_INT32", dims=(2,)),) if spec.kind == "detection" else ()
    return ModelConfig(
        name=spec.preprocess_name,
        backend="python",
        max_batch_size=spec.serving.max_batch_size,
        input=(encoded_input(spec),),
        output=(TensorConfig(name=INPUT_NAME, data_type=pixels.data_type, dims=pixels.dims), *sizes),
        dynamic_batching=dynamic_batching_for(spec),
        instance_group=(InstanceGroup(count=1, kind="KIND_CPU"),),
        parameters=preprocess_parameters(spec),
    )


def detection_target(spec: ModelSpec) -> DetectionTarget:
    """What `NAME_postprocess` needs from a detection spec: labels, input size, preprocessing (default limits)."""
    return DetectionTarget(
        labels=spec.io.labels, width=spec.width, height=spec.height, preprocessing=spec.io.preprocessing
    )


def postprocess_config(spec: ModelSpec) -> ModelConfig:
    """`NAME_postprocess`: python backend, candidates + original size -> JSON detections, batched like the model."""
    return ModelConfig(
        name=spec.postprocess_name,
        backend="python",
        max_batch_size=spec.serving.max_batch_size,
        input=(*detection_outputs(spec), TensorConfig(name=ORIGINAL_SIZE, data_type="TYPE_INT32", dims=(2,))),
        output=(TensorConfig(name=DETECTIONS_OUTPUT, data_type="TYPE_STRING", dims=(1,)),),
        dynamic_batching=dynamic_batching_for(spec),
        instance_group=(InstanceGroup(count=1, kind="KIND_CPU"),),
        parameters=detection_target(spec).to_parameters(),
    )


def detection_pipeline_config(spec: ModelSpec) -> ModelConfig:
    """A detector's `NAME_pipeline`: `NAME_preprocess` (pixels + original size) -> `NAME` -> `NAME_postprocess`."""
    candidates = {name: name for name in DETECTION_OUTPUTS}
    return ModelConfig(
        name=spec.pipeline_name,
        platform=ENSEMBLE_PLATFORM,
        max_batch_size=spec.serving.max_batch_size,
        input=(encoded_input(spec),),
        output=(TensorConfig(name=DETECTIONS_OUTPUT, data_type="TYPE_STRING", dims=(1,)),),
        ensemble_scheduling=EnsembleScheduling(
            step=(
                EnsembleStep(
                    model_name=spec.preprocess_name,
                    input_map={IMAGE_BYTES_INPUT: IMAGE_BYTES_INPUT},
                    output_map={INPUT_NAME: INPUT_NAME, ORIGINAL_SIZE: ORIGINAL_SIZE},
                ),
                EnsembleStep(model_name=spec.name, input_map={INPUT_NAME: INPUT_NAME}, output_map=candidates),
                EnsembleStep(
                    model_name=spec.postprocess_name,
                    input_map={**candidates, ORIGINAL_SIZE: ORIGINAL_SIZE},
                    output_map={DETECTIONS_OUTPUT: DETECTIONS_OUTPUT},
                ),
            )  # fmt: skip
        ),
        parameters={SPEC_PARAMETER: spec.model_dump_json()},
    )


def pipeline_config(spec: ModelSpec) -> ModelConfig:
    """`NAME_pipeline`: ensemble of `NAME_preprocess` then `NAME`; `logits` keep the labels file."""
    if spec.kind == "detection":
        return detection_pipeline_config(spec)
    input_name = pipeline_input_name(spec)
    return ModelConfig(
        name=spec.pipeline_name,
        platform=ENSEMBLE_PLATFORM,
        max_batch_size=spec.serving.max_batch_size,
        input=(encoded_input(spec),),
        output=(logits_output(spec),),
        ensemble_scheduling=EnsembleScheduling(
            step=(
                EnsembleStep(
                    model_name=spec.preprocess_name,
                    input_map={input_name: input_name},
                    output_map={INPUT_NAME: INPUT_NAME},
                ),
                EnsembleStep(
                    model_name=spec.name, input_map={INPUT_NAME: INPUT_NAME}, output_map={OUTPUT_NAME: OUTPUT_NAME}
                ),
            )
        ),
        parameters={SPEC_PARAMETER: spec.model_dump_json()},
    )


def write_pipeline_entries(spec: ModelSpec, repository: Path | str) -> tuple[Path, Path]:
    """Write `NAME_preprocess` and `NAME_pipeline` (and `NAME_timeline` for video, `NAME_postprocess` for
    detection) into `repository`, each in its next free version (earlier versions stay: a running server may
    hold them; Triton serves the latest).

    The model entry `NAME` itself is the export's; the pipeline needs it in the same repository to load.

    Returns:
        The two entry folders `(preprocess_dir, pipeline_dir)`.
    """
    repository = Path(repository)
    preprocess_dir = add_python_entry(repository, preprocess_config(spec), PREPROCESS_SHIM)
    pipeline_dir = add_python_entry(repository, pipeline_config(spec), spec=spec)
    if spec.kind == "video":
        add_python_entry(repository, timeline_config(spec), TIMELINE_SHIM)
    if spec.kind == "detection":
        add_python_entry(repository, postprocess_config(spec), POSTPROCESS_SHIM)
    return preprocess_dir, pipeline_dir
