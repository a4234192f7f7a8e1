"""The ModelSpec is the one source of truth: its validators must refuse inconsistent specs."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from attnserve.spec import IoSection, ModelSpec, ServingSection


def _image_spec(**overrides: Any) -> ModelSpec:
    """A 1x32x32 digits spec; `overrides` are top-level fields, or `io` / `serving` fields (keyed by section)."""
    io = dict(layout="NCHW", input_shape=(1, 32, 32), mean=(0.5,), std=(0.25,), labels=tuple(map(str, range(10))))
    fields: dict[str, Any] = dict(name="digits", arch="vit", kind="image")
    io.update(overrides.pop("io", {}))
    fields.update(overrides)
    return ModelSpec.model_validate({**fields, "io": io})


def test_derived_facts_and_entry_names() -> None:
    spec = _image_spec(serving={"max_batch_size": 16, "preferred_batch_sizes": (4, 8)})
    assert (spec.channels, spec.height, spec.width, spec.frames) == (1, 32, 32, None)
    assert spec.num_classes == 10
    assert spec.serving.opt_batch_size == 8
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
        io=IoSection(
            layout="NTCHW",
            input_shape=(8, 3, 32, 32),
            mean=(0.5,) * 3,
            std=(0.5,) * 3,
            labels=("left", "right", "up", "down"),
        ),
    )
    assert (spec.frames, spec.channels) == (8, 3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"io": {"input_shape": (32, 32)}}, "rank 3"),
        ({"kind": "video"}, "does not match layout"),
        ({"kind": "detection"}, "max_detections"),
        ({"io": {"mean": (0.5, 0.5)}}, "one value per channel"),
        ({"serving": {"preferred_batch_sizes": (4, 32), "max_batch_size": 16}}, "exceed max_batch_size"),
        ({"io": {"labels": ("a", "a")}}, "unique"),
        ({"name": "Bad-Name"}, "pattern"),
        ({"unknown_field": 1}, "Extra inputs"),
        ({"serving": {"max_batch": 4}}, "Extra inputs"),
    ],
)
def test_inconsistent_specs_are_refused_with_the_reason(overrides: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _image_spec(**overrides)


def test_spec_and_its_sections_are_frozen() -> None:
    spec = _image_spec()
    with pytest.raises(ValidationError):
        spec.serving.max_batch_size = 4  # type: ignore[misc]
    with pytest.raises(ValidationError):
        spec.serving = ServingSection()  # type: ignore[misc]


def test_a_section_changes_through_its_validated_copy_and_nothing_else_moves() -> None:
    spec = _image_spec()
    smaller = spec.with_serving(max_batch_size=4, preferred_batch_sizes=(2, 4))
    assert (smaller.serving.max_batch_size, smaller.serving.preferred_batch_sizes) == (4, (2, 4))
    assert smaller.replace(serving=spec.serving) == spec
    assert spec.with_runtime(intra_op_threads=1).runtime.intra_op_threads == 1
    assert spec.with_export(opset=18).export.opset == 18
    assert spec.with_io(labels=("a", "b")).num_classes == 2
    with pytest.raises(ValidationError, match="exceed max_batch_size"):
        spec.with_serving(max_batch_size=4)  # the preferred sizes (4, 8, 16) no longer fit
    with pytest.raises(ValidationError, match="Extra inputs"):
        spec.with_runtime(max_batch_size=4)  # a field of another section


def test_a_flat_key_in_a_copy_is_refused_naming_its_section_not_ignored() -> None:
    spec = _image_spec()
    for change in (lambda: spec.model_copy(update={"max_batch_size": 4}), lambda: spec.replace(opset=18)):
        with pytest.raises(ValidationError, match=r"max_batch_size -> serving\.max_batch_size|opset -> export\.opset"):
            change()
    assert spec.model_copy(update={"name": "other"}).name == "other"
    assert spec.model_copy() == spec


def test_save_load_round_trip(tmp_path) -> None:
    spec = _image_spec(arch_args={"depth": 2}, trained=True, runtime={"allow_spinning": False})
    path = spec.save(tmp_path / "run")
    assert path.name == "spec.json"
    assert ModelSpec.load(tmp_path / "run") == spec
    assert ModelSpec.load(spec.save(tmp_path / "again")).model_dump_json() == spec.model_dump_json()
