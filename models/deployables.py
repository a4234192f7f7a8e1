"""The deployable models: names that `attnserve train`, export, serving and the demo refer to.

Each deployable is an architecture (a registry name + arguments), a dataset and the serving facts, all
captured by `default_spec(name)` as an untrained `ModelSpec`. Training writes the trained spec to
`runs/NAME/spec.json`; `attnserve.models.checkpoint.build_model(spec)` turns a spec back into a module.

Input facts (channels, size, frames, classes, mean/std) live in the spec's own fields and are passed
to the architecture by `build_model`; `arch_args` hold only architecture choices (depth, width, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from attnserve.errors import UnknownModelError
from attnserve.models.constants import IMAGENET_MEAN, IMAGENET_STD
from attnserve.spec import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_PREFERRED_BATCH_SIZES,
    Kind,
    Layout,
    ModelSpec,
)

DIGIT_LABELS = tuple(str(digit) for digit in range(10))
SHAPE_LABELS = ("circle", "square", "triangle", "cross")
DETECTION_LABELS = ("circle", "square", "triangle")
"""Object classes of the procedural detection scenes (attnserve.models.scenes)."""
MOTION_LABELS = ("right", "left", "right_and_back", "left_and_back")
"""Motion classes: steady drift right/left, or a fast trip right/left and back (see attnserve.models.data)."""

# Measured on the training split of each dataset (0..1 scale), see attnserve.models.data.
DIGITS_MEAN, DIGITS_STD = (0.3,), (0.32,)
SHAPES_MEAN, SHAPES_STD = (0.5, 0.5, 0.5), (0.29, 0.29, 0.29)
MOTION_MEAN, MOTION_STD = (0.5, 0.5, 0.5), (0.29, 0.29, 0.29)

INPUT_FACT_ARGS = ("img_size", "in_chans", "num_classes", "num_frames", "mean", "std", "max_detections")
"""Constructor arguments that `build_model` derives from the spec; they may not appear in `arch_args`."""


@dataclass(frozen=True)
class Deployable:
    """Recipe of one deployable: architecture, dataset and serving facts (see `default_spec`)."""

    arch: str
    dataset: str
    kind: Kind
    input_shape: tuple[int, ...]
    labels: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    arch_args: dict[str, Any] = field(default_factory=dict)
    spec_args: dict[str, Any] = field(default_factory=dict)

    @property
    def layout(self) -> Layout:
        return "NTCHW" if self.kind == "video" else "NCHW"


# Serving knobs of the deployables: images take the project's batch sizes with the queue delay and threads that
# `attnserve tune` chose on the project's 2-core machine (docs/tuning.md has the runs and the commands that reproduce
# them): a 100 us delay for vit_digits (on a quiet machine it cost the lone request nothing measurable against delay
# 0, 244 vs 240 req/s over three runs, and gained 27% at concurrency 16 by letting requests meet: 1,043 vs 821
# req/s) and delay 0 for cnn_cbam_digits (a 0.3 ms model: there the wait cost c=1 throughput ~20%), and for
# the small 32x32 models one instance on ONE intra-op thread without spinning (their operators are microseconds
# long: a second thread only adds hand-offs, and a spinning pool took a core from Triton and the client).
# Videos keep smaller batches and the spec's defaults (not tuned).
TUNED_MAX_QUEUE_DELAY_US = 100
_IMAGE_SERVING = dict(
    max_batch_size=DEFAULT_MAX_BATCH_SIZE,
    preferred_batch_sizes=DEFAULT_PREFERRED_BATCH_SIZES,
    max_queue_delay_us=TUNED_MAX_QUEUE_DELAY_US,
)
_SMALL_MODEL_THREADS = dict(intra_op_threads=1, allow_spinning=False)
HANDPICKED_SERVING: dict[str, Any] = {
    "dynamic_batching": True,
    "max_queue_delay_us": 2_000,
    "preferred_batch_sizes": (4, 8, 16),
    "max_batch_size": 16,
    "instance_count": 1,
    "intra_op_threads": 0,
    "allow_spinning": True,
}
"""The configuration every model shipped with before `attnserve tune` chose the defaults (the demo and
bench/tuned_defaults.py measure the tuned defaults against it)."""
NOBATCH_SERVING: dict[str, Any] = {**HANDPICKED_SERVING, "dynamic_batching": False}
"""Batching off, one instance on every core, the runtime's default spinning threads."""
_VIDEO_SERVING = dict(max_batch_size=8, preferred_batch_sizes=(2, 4, 8), atol=5e-4, rtol=1e-3)
_VIT_32 = dict(
    stem="conv", stem_depth=3, stem_width=32, embed_dim=128, depth=4, num_heads=4, mlp_ratio=2.0, drop_rate=0.0
)
_VIDEO_ARGS = dict(embed_dim=48, depth=2, num_heads=4, mlp_ratio=2.0, first_stride=4, stem_depth=2, stem_width=32)


def _digits_deployable(arch: str, arch_args: dict[str, Any], spec_args: dict[str, Any]) -> Deployable:
    """An image architecture on the digits (1x32x32), served with the tuned small-model knobs plus `spec_args`."""
    return Deployable(
        arch,
        "digits",
        "image",
        (1, 32, 32),
        DIGIT_LABELS,
        DIGITS_MEAN,
        DIGITS_STD,
        arch_args,
        dict(_IMAGE_SERVING, **_SMALL_MODEL_THREADS, **spec_args),
    )


def _motion_deployable(arch: str, tubelet_size: int) -> Deployable:
    """A video architecture on the procedural motion dataset (8 frames of 3x32x32), with the video serving knobs."""
    return Deployable(
        arch,
        "motion",
        "video",
        (8, 3, 32, 32),
        MOTION_LABELS,
        MOTION_MEAN,
        MOTION_STD,
        dict(_VIDEO_ARGS, tubelet_size=tubelet_size),
        dict(_VIDEO_SERVING),
    )


DEPLOYABLES: dict[str, Deployable] = {
    "vit_digits": _digits_deployable("vit_convstem_32", dict(_VIT_32), {}),
    "cnn_cbam_digits": _digits_deployable(
        "cnn_cbam_32",
        dict(widths=(16, 32, 64), attn="cbam", first_stride=2),
        dict(atol=5e-4, max_queue_delay_us=0),  # tuned: its 0.3 ms compute makes a 100 us wait cost c=1 ~20%
    ),
    "vit_shapes": Deployable(
        "vit_convstem_32",
        "shapes",
        "image",
        (3, 32, 32),
        SHAPE_LABELS,
        SHAPES_MEAN,
        SHAPES_STD,
        # Sized for a user's small class folder (its main use): measured with bench/small_data.py (3 classes x 30
        # images, rotate-colour, 1 minute, seeds 0-2, 600 extra images): 67 / 87 / 94% against 58 / 55 / 59% for
        # dim 96, depth 3, stem 32 (fewer parameters, ~2x the steps per minute; the same lr 1e-3). On its procedural
        # 4-class set (`attnserve train vit_shapes`) it still reached 96.9% in 89 s.
        dict(_VIT_32, embed_dim=48, depth=2, num_heads=2, stem_width=16),
        dict(_IMAGE_SERVING, **_SMALL_MODEL_THREADS),  # not tuned itself: the same size class as vit_digits
    ),
    "timesformer_motion": _motion_deployable("timesformer_divided_8x32", tubelet_size=3),
    # The 3-frame tubelet stem of timesformer_motion: with strictly per-frame tokens (tubelet_size=1) the
    # temporal-only model stayed at chance within 3-minute budgets (5 variants tried).
    "temporal_motion": _motion_deployable("temporal_transformer_8x32", tubelet_size=3),
    "spatial_motion": _motion_deployable("spatial_transformer_8x32", tubelet_size=1),
    "vit_tiny_patch16_224": Deployable(
        "vit_tiny_patch16_224",
        "none",
        "image",
        (3, 224, 224),
        tuple(f"class_{index}" for index in range(1000)),
        IMAGENET_MEAN,
        IMAGENET_STD,
        dict(patch_size=16, embed_dim=192, depth=12, num_heads=3),
        dict(_IMAGE_SERVING, precisions=("fp32", "fp16")),
    ),
    # The detector (models/detector.py): procedural scenes of 3 shape classes drawn at 96x64 (docs/detection.md).
    "det_shapes": Deployable(
        "vit_centernet",
        "scenes",
        "detection",
        (3, 64, 96),
        DETECTION_LABELS,
        SHAPES_MEAN,
        SHAPES_STD,
        dict(embed_dim=64, depth=3, num_heads=4, mlp_ratio=2.0, stem_width=24),
        dict(_IMAGE_SERVING, atol=1e-3, max_detections=32),
    ),
}

DEPLOYABLE_NAMES: tuple[str, ...] = tuple(DEPLOYABLES)
TRAINABLE_NAMES: tuple[str, ...] = tuple(name for name, entry in DEPLOYABLES.items() if entry.dataset != "none")

_TINY_BY_FAMILY: dict[str, dict[str, Any]] = {
    "vision_transformer": dict(embed_dim=16, depth=1, num_heads=2, stem_width=8),
    "cnn_attention": dict(widths=(8, 16)),
    "video_transformer": dict(embed_dim=16, depth=1, num_heads=2, stem_width=8),
    "detector": dict(embed_dim=16, depth=1, num_heads=2, stem_width=8),
}


def get_deployable(name: str) -> Deployable:
    """The recipe of a deployable name; raises `UnknownModelError` listing the known names."""
    if name not in DEPLOYABLES:
        raise UnknownModelError(name, DEPLOYABLE_NAMES)
    return DEPLOYABLES[name]


def tiny_arch_overrides(name: str) -> dict[str, Any]:
    """Architecture overrides that make a deployable (or registry architecture) tiny, for fast tests.

    Use as `default_spec(name, **tiny_arch_overrides(name))` or `create_model(arch, **tiny_arch_overrides(arch))`.
    """
    arch = DEPLOYABLES[name].arch if name in DEPLOYABLES else name
    from attnserve.models.registry import model_family  # imports torch: only when asked

    return dict(_TINY_BY_FAMILY.get(model_family(arch), {}))


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
        layout=entry.layout,
        input_shape=entry.input_shape,
        mean=entry.mean,
        std=entry.std,
        labels=entry.labels,
        trained=False,
        **entry.spec_args,
    )
