"""Pre-processing entries and `NAME_pipeline` ensembles: encoded bytes in, top-k labels out.

For a spec `NAME`, `write_pipeline_entries` writes two entries beside the model's own:

    NAME_preprocess  python backend: input `image` (or `video`) TYPE_STRING [1] -> `pixels` uint8 (spec shape);
                     the target size/channels/frames are config parameters; model.py = preprocess_model shim
    NAME_pipeline    ensemble: NAME_preprocess -> NAME; output `logits` with `labels.txt`, so a client asks
                     for top-k labels through Triton's classification extension (`class_count=k`)

Configs are built with the repository layer's typed `ModelConfig` objects (one writer for every config).
"""

from __future__ import annotations

import shutil
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
    dynamic_batching_for,
    logits_output,
    pixels_input,
    write_labels,
)
from attnserve.repository.layout import PYTHON_MODEL_FILENAME
from attnserve.serving.python_models.preprocess import PreprocessTarget
from attnserve.spec import INPUT_NAME, OUTPUT_NAME, SPEC_FILENAME, ModelSpec

PREPROCESS_SHIM = Path(__file__).parent / "python_models" / "preprocess_model.py"


def pipeline_input_name(spec: ModelSpec) -> str:
    """Name of the encoded-bytes input of `NAME_preprocess` and `NAME_pipeline`: `image` or `video`."""
    return spec.kind


def preprocess_target(spec: ModelSpec) -> PreprocessTarget:
    """What `NAME_preprocess` decodes to: the spec's channels, size, frames and declared preprocessing."""
    return PreprocessTarget(
        kind=spec.kind,
        channels=spec.channels,
        height=spec.height,
        width=spec.width,
        frames=spec.frames,
        preprocessing=spec.preprocessing,
    )


def encoded_input(spec: ModelSpec) -> TensorConfig:
    """The bytes input: one encoded image or video per sample (TYPE_STRING, dims [1])."""
    return TensorConfig(name=pipeline_input_name(spec), data_type="TYPE_STRING", dims=(1,))


def preprocess_config(spec: ModelSpec) -> ModelConfig:
    """`NAME_preprocess`: python backend, batched like the model, decoding per request."""
    pixels = pixels_input(spec)
    return ModelConfig(
        name=spec.preprocess_name,
        backend="python",
        max_batch_size=spec.max_batch_size,
        input=(encoded_input(spec),),
        output=(TensorConfig(name=INPUT_NAME, data_type=pixels.data_type, dims=pixels.dims),),
        dynamic_batching=dynamic_batching_for(spec),
        instance_group=(InstanceGroup(count=1, kind="KIND_CPU"),),
        parameters=preprocess_target(spec).to_parameters(),
    )


def pipeline_config(spec: ModelSpec) -> ModelConfig:
    """`NAME_pipeline`: ensemble of `NAME_preprocess` then `NAME`; `logits` keep the labels file."""
    input_name = pipeline_input_name(spec)
    return ModelConfig(
        name=spec.pipeline_name,
        platform=ENSEMBLE_PLATFORM,
        max_batch_size=spec.max_batch_size,
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
    """Write `NAME_preprocess` and `NAME_pipeline` into `repository` (replacing earlier ones).

    The model entry `NAME` itself is the export's; the pipeline needs it in the same repository to load.

    Returns:
        The two entry folders `(preprocess_dir, pipeline_dir)`.
    """
    repository = Path(repository)
    preprocess_dir = repository / spec.preprocess_name
    if preprocess_dir.exists():
        shutil.rmtree(preprocess_dir)
    preprocess_config(spec).write(preprocess_dir)
    (preprocess_dir / "1").mkdir()
    shutil.copy2(PREPROCESS_SHIM, preprocess_dir / "1" / PYTHON_MODEL_FILENAME)

    pipeline_dir = repository / spec.pipeline_name
    if pipeline_dir.exists():
        shutil.rmtree(pipeline_dir)
    pipeline_config(spec).write(pipeline_dir)
    (pipeline_dir / "1").mkdir()  # Triton needs a version folder, even an empty one, for an ensemble
    write_labels(spec, pipeline_dir)
    spec.save(pipeline_dir / SPEC_FILENAME)
    return preprocess_dir, pipeline_dir
