"""Architecture configs (`VideoConfig`, `VitConfig`, `CnnConfig`, `DetectorConfig`): the `arch_args` of a
`spec.json` written before the configs existed still build the same module through `create_model`, with the same
state-dict keys and shapes, so saved checkpoints keep loading."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import torch

from attnserve.models import create_model
from attnserve.models.video_transformer import TemporalTransformer, TimeSformer, VideoConfig

MOTION = {"img_size": 32, "in_chans": 3, "num_classes": 4, "mean": [0.5, 0.5, 0.5], "std": [0.29, 0.29, 0.29],
          "num_frames": 8, "embed_dim": 48, "depth": 2, "num_heads": 4, "mlp_ratio": 2.0, "first_stride": 4,
          "stem_depth": 2, "stem_width": 32}  # fmt: skip
DIGITS = {"img_size": 32, "in_chans": 1, "num_classes": 10, "mean": [0.3], "std": [0.32]}

SAVED_ARCH_ARGS: dict[str, tuple[str, dict[str, Any], str]] = {
    # deployable: (arch, input facts + arch_args as a spec.json holds them, sha256[:16] of its "key:shape" lines)
    "timesformer_motion": ("timesformer_divided_8x32", {**MOTION, "tubelet_size": 3}, "57d2ab7347be134f"),
    "temporal_motion": ("temporal_transformer_8x32", {**MOTION, "tubelet_size": 3}, "a5db6f46e3e9e60e"),
    "spatial_motion": ("spatial_transformer_8x32", {**MOTION, "tubelet_size": 1}, "cf01f24d264a1c09"),
    "vit_digits": ("vit_convstem_32", {**DIGITS, "stem": "conv", "stem_depth": 3, "stem_width": 32, "embed_dim": 128,
                                       "depth": 4, "num_heads": 4, "mlp_ratio": 2.0, "drop_rate": 0.0}, "597194fc3c08066d"),
    "cnn_cbam_digits": ("cnn_cbam_32", {**DIGITS, "widths": [16, 32, 64], "attn": "cbam", "first_stride": 2},
                        "fbf2581cecf80f97"),
    "det_shapes": ("vit_centernet", {"img_size": [64, 96], "in_chans": 3, "num_classes": 3, "mean": [0.5, 0.5, 0.5],
                                     "std": [0.29, 0.29, 0.29], "max_detections": 32, "embed_dim": 64, "depth": 3,
                                     "num_heads": 4, "mlp_ratio": 2.0, "stem_width": 24}, "84575967929806de"),
}  # fmt: skip
"""The hashes were taken from the modules the keyword constructors built before the configs."""


def _layout_hash(model: torch.nn.Module) -> str:
    lines = "\n".join(f"{key}:{tuple(value.shape)}" for key, value in sorted(model.state_dict().items()))
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


@pytest.mark.parametrize("deployable", sorted(SAVED_ARCH_ARGS))
def test_saved_arch_args_build_the_same_state_dict_layout(deployable: str) -> None:
    arch, arch_args, expected = SAVED_ARCH_ARGS[deployable]
    assert _layout_hash(create_model(arch, **arch_args)) == expected


def test_registry_and_config_build_the_same_weights() -> None:
    arch, arch_args, _ = SAVED_ARCH_ARGS["timesformer_motion"]
    torch.manual_seed(0)
    from_registry = create_model(arch, **arch_args)
    torch.manual_seed(0)
    from_config = TimeSformer(VideoConfig(**arch_args))
    assert from_config.config == from_registry.config
    for (key, left), (_, right) in zip(from_registry.state_dict().items(), from_config.state_dict().items()):
        assert torch.equal(left, right), key


def test_body_options_reach_their_architecture_only() -> None:
    model = create_model("temporal_transformer_8x32", depth=1, embed_dim=16, num_heads=2, frame_tokens="frame")
    assert isinstance(model, TemporalTransformer) and model.frame_tokens == "frame"
    with pytest.raises(TypeError, match="frame_tokens"):  # the divided model has no such option: refused, not ignored
        create_model("timesformer_divided_8x32", depth=1, frame_tokens="frame")
    with pytest.raises(TypeError, match="no_such_arg"):
        create_model("vit_patch4_32", no_such_arg=1)
