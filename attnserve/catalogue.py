"""The deployables: the names that `attnserve train`, export, serving and the demo refer to.

Each deployable is an architecture (a registry name and the arguments that differ from that architecture's own
defaults), a dataset, its input facts (`io`) and how it is served (`serving`, `runtime`, `export`), captured by
`default_spec(name)` as an untrained `ModelSpec`. Training writes the trained spec to `runs/NAME/spec.json`;
`attnserve.models.checkpoint.build_model(spec)` turns a spec back into a module. Torch-free, beside the spec's own
defaults, so every stage may read it while `attnserve.models` keeps only architectures, data and training.

A section states only what differs from the defaults in `attnserve.spec`; docs/measured.md#deployable-serving has
the measurements behind the tuned values and the commands that reproduce them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from attnserve.errors import UnknownModelError
from attnserve.spec import (
    ExportSection,
    IoSection,
    Kind,
    ModelSpec,
    RuntimeSection,
    ServingSection,
)

DIGIT_LABELS = tuple(str(digit) for digit in range(10))
SHAPE_LABELS = ("circle", "square", "triangle", "cross")
DETECTION_LABELS = ("circle", "square", "triangle")
"""Object classes of the procedural detection scenes (attnserve.models.scenes)."""
MOTION_LABELS = ("right", "left", "right_and_back", "left_and_back")
"""Motion classes: steady drift right/left, or a fast trip right/left and back (see attnserve.models.data)."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Measured on the training split of each dataset (0..1 scale), see attnserve.models.data.
DIGITS_MEAN, DIGITS_STD = (0.3,), (0.32,)
SHAPES_MEAN, SHAPES_STD = (0.5, 0.5, 0.5), (0.29, 0.29, 0.29)
MOTION_MEAN, MOTION_STD = (0.5, 0.5, 0.5), (0.29, 0.29, 0.29)

INPUT_FACT_ARGS = ("img_size", "in_chans", "num_classes", "num_frames", "mean", "std", "max_detections")
"""Constructor arguments that `build_model` derives from the spec; they may not appear in `arch_args`."""


@dataclass(frozen=True)
class Deployable:
    """Recipe of one deployable: architecture, dataset, input facts and serving sections (see `default_spec`)."""

    arch: str
    dataset: str
    kind: Kind
    io: IoSection
    arch_args: dict[str, Any] = field(default_factory=dict)
    serving: ServingSection = ServingSection()
    runtime: RuntimeSection = RuntimeSection()
    export: ExportSection = ExportSection()


# Images: the queue delay `attnserve tune` chose on the project's 2-core machine (docs/measured.md#deployable-serving).
TUNED_SERVING = ServingSection(max_queue_delay_us=100)
# The 32x32 models: one intra-op thread without spinning, their operators are microseconds long
# (docs/measured.md#deployable-serving).
SMALL_MODEL_RUNTIME = RuntimeSection(intra_op_threads=1, allow_spinning=False)
HANDPICKED_SERVING = ServingSection()
"""The batching every model shipped with before `attnserve tune` chose the defaults: the spec's own defaults
(the demo and bench/tuned_defaults.py measure the tuned defaults against it)."""
NOBATCH_SERVING = HANDPICKED_SERVING.replace(dynamic_batching=False)
"""Batching off (the batching comparison)."""
_VIDEO_SERVING = ServingSection(max_batch_size=8, preferred_batch_sizes=(2, 4, 8))
_VIDEO_ARGS = dict(embed_dim=48, first_stride=4, stem_depth=2)


def handpicked_twin(spec: ModelSpec, name: str, serving: ServingSection = HANDPICKED_SERVING) -> ModelSpec:
    """`spec` as `name`, served with `serving` and the runtime's default threads (all cores, spinning)."""
    threads = RuntimeSection()
    runtime = spec.runtime.replace(intra_op_threads=threads.intra_op_threads, allow_spinning=threads.allow_spinning)
    return spec.replace(name=name, serving=serving, runtime=runtime)


def _io(kind: Kind, shape: tuple[int, ...], labels: tuple[str, ...], mean: tuple[float, ...],
        std: tuple[float, ...], **more: Any) -> IoSection:  # fmt: skip
    return IoSection(
        layout="NTCHW" if kind == "video" else "NCHW", input_shape=shape, mean=mean, std=std, labels=labels, **more
    )


def _digits_deployable(arch: str, arch_args: dict[str, Any], **sections: Any) -> Deployable:
    """An image architecture on the digits (1x32x32), served with the tuned small-model sections unless given."""
    io = _io("image", (1, 32, 32), DIGIT_LABELS, DIGITS_MEAN, DIGITS_STD)
    recipe: dict[str, Any] = {"serving": TUNED_SERVING, "runtime": SMALL_MODEL_RUNTIME, **sections}
    return Deployable(arch, "digits", "image", io, arch_args, **recipe)


def _motion_deployable(arch: str, **arch_args: Any) -> Deployable:
    """A video architecture on the procedural motion dataset (8 frames of 3x32x32), with smaller batches."""
    io = _io("video", (8, 3, 32, 32), MOTION_LABELS, MOTION_MEAN, MOTION_STD)
    arch_args = dict(_VIDEO_ARGS, **arch_args)
    return Deployable(arch, "motion", "video", io, arch_args, _VIDEO_SERVING, export=ExportSection(atol=5e-4))


DEPLOYABLES: dict[str, Deployable] = {
    "vit_digits": _digits_deployable("vit_convstem_32", {}),
    # Its 0.3 ms compute makes a 100 us wait cost c=1 ~20% (docs/measured.md#deployable-serving).
    "cnn_cbam_digits": _digits_deployable(
        "cnn_cbam_32",
        dict(widths=(16, 32, 64), first_stride=2),
        serving=ServingSection(max_queue_delay_us=0),
        export=ExportSection(atol=5e-4),
    ),
    # Sized for a user's small class folder, its main use (docs/measured.md#vit-shapes-size).
    "vit_shapes": Deployable(
        "vit_convstem_32",
        "shapes",
        "image",
        _io("image", (3, 32, 32), SHAPE_LABELS, SHAPES_MEAN, SHAPES_STD),
        dict(embed_dim=48, depth=2, num_heads=2, stem_width=16),
        TUNED_SERVING,  # not tuned itself: the same size class as vit_digits
        SMALL_MODEL_RUNTIME,
    ),
    "timesformer_motion": _motion_deployable("timesformer_divided_8x32"),  # its own 3-frame tubelet stem
    # A 3-frame tubelet stem as timesformer_motion's: per-frame tokens stayed at chance (docs/measured.md#video-motion).
    "temporal_motion": _motion_deployable("temporal_transformer_8x32", tubelet_size=3),
    "spatial_motion": _motion_deployable("spatial_transformer_8x32"),  # per-frame tokens
    "vit_tiny_patch16_224": Deployable(
        "vit_tiny_patch16_224",
        "none",
        "image",
        _io("image", (3, 224, 224), tuple(f"class_{index}" for index in range(1000)), IMAGENET_MEAN, IMAGENET_STD),
        serving=TUNED_SERVING,
        export=ExportSection(precisions=("fp32", "fp16")),
    ),
    # The detector (models/detector.py): procedural scenes of 3 shape classes drawn at 96x64 (docs/detection.md).
    "det_shapes": Deployable(
        "vit_centernet",
        "scenes",
        "detection",
        _io("detection", (3, 64, 96), DETECTION_LABELS, SHAPES_MEAN, SHAPES_STD, max_detections=32),
        serving=TUNED_SERVING,
        export=ExportSection(atol=1e-3),
    ),
}

DEPLOYABLE_NAMES: tuple[str, ...] = tuple(DEPLOYABLES)
TRAINABLE_NAMES: tuple[str, ...] = tuple(name for name, entry in DEPLOYABLES.items() if entry.dataset != "none")


def get_deployable(name: str) -> Deployable:
    """The recipe of a deployable name; raises `UnknownModelError` listing the known names."""
    if name not in DEPLOYABLES:
        raise UnknownModelError(name, DEPLOYABLE_NAMES)
    return DEPLOYABLES[name]


def default_spec(name: str, **arch_overrides: Any) -> ModelSpec:
    """The untrained `ModelSpec` of a deployable (`trained=False`).

    Args:
        name: One of `DEPLOYABLE_NAMES`.
        **arch_overrides: Architecture arguments replacing the recipe's (e.g. `depth=1, embed_dim=16` for a
            tiny test variant); input facts (size, channels, classes, frames, mean/std) cannot be overridden.

    Returns:
        The spec; `attnserve.models.checkpoint.build_model(spec)` builds the module.

    Raises:
        UnknownModelError: For a name that is not a deployable.
        ValueError: When an override names an input fact.
    """
    entry = get_deployable(name)
    input_facts = sorted(set(arch_overrides) & set(INPUT_FACT_ARGS))
    if input_facts:
        raise ValueError(
            f"arch overrides {input_facts} are input facts fixed by the deployable {name!r}; only architecture arguments may be overridden"
        )
    arch_args = {**entry.arch_args, **arch_overrides}
    # JSON has no tuples: store lists so that a spec read back from spec.json compares equal.
    arch_args = {key: list(value) if isinstance(value, tuple) else value for key, value in arch_args.items()}
    return ModelSpec(
        name=name,
        arch=entry.arch,
        arch_args=arch_args,
        kind=entry.kind,
        trained=False,
        io=entry.io,
        serving=entry.serving,
        runtime=entry.runtime,
        export=entry.export,
    )
