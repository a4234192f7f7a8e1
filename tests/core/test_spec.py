"""The ModelSpec is the one source of truth: its validators must refuse inconsistent specs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from attnserve.spec import ModelSpec


def _image_spec(**overrides) -> ModelSpec:
    fields = dict(
        name="digits",
        arch="vit",
        kind="image",
        layout="NCHW",
        input_shape=(1, 32, 32),
        mean=(0.5,),
        std=(0.25,),
        labels=tuple(str(d) for d in range(10)),
    )
    fields.update(overrides)
    return ModelSpec(**fields)


def test_derived_facts_and_entry_names() -> None:
    spec = _image_spec(max_batch_size=16, preferred_batch_sizes=(4, 8))
    assert (spec.channels, spec.height, spec.width, spec.frames) == (1, 32, 32, None)
    assert spec.num_classes == 10
    assert spec.opt_batch_size == 8
    assert (spec.explain_name, spec.trt_name, spec.pipeline_name) == (
        "digits_explain",
        "digits_trt",
        "digits_pipeline",
    )


def test_video_spec_frames() -> None:
    spec = ModelSpec(
        name="motion",
        arch="timesformer",
        kind="video",
        layout="NTCHW",
        input_shape=(8, 3, 32, 32),
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        labels=("left", "right", "up", "down"),
    )
    assert (spec.frames, spec.channels) == (8, 3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"input_shape": (32, 32)}, "rank 3"),
        ({"kind": "video"}, "does not match layout"),
        ({"mean": (0.5, 0.5)}, "one value per channel"),
        ({"preferred_batch_sizes": (4, 32), "max_batch_size": 16}, "exceed max_batch_size"),
        ({"labels": ("a", "a")}, "unique"),
        ({"name": "Bad-Name"}, "pattern"),
        ({"unknown_field": 1}, "Extra inputs"),
    ],
)
def test_inconsistent_specs_are_refused_with_the_reason(overrides: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _image_spec(**overrides)


def test_spec_is_frozen() -> None:
    spec = _image_spec()
    with pytest.raises(ValidationError):
        spec.max_batch_size = 4  # type: ignore[misc]


def test_save_load_round_trip(tmp_path) -> None:
    spec = _image_spec(arch_args={"depth": 2}, trained=True)
    path = spec.save(tmp_path / "run")
    assert path.name == "spec.json"
    assert ModelSpec.load(tmp_path / "run") == spec
