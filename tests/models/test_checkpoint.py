"""Deployable specs, build_model, save_run -> load_run round trip, resolve."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from attnserve.catalogue import DEPLOYABLE_NAMES, default_spec
from attnserve.errors import DataError, UnknownModelError
from attnserve.models.checkpoint import MissingCheckpointError, build_model, load_metrics, load_run, resolve, save_run
from attnserve.models.metrics import TrainingMetrics
from attnserve.models.registry import tiny_arch_overrides
from attnserve.spec import ModelSpec

EXPECTED_NAMES = {
    "vit_digits",
    "cnn_cbam_digits",
    "vit_shapes",
    "timesformer_motion",
    "temporal_motion",
    "spatial_motion",
    "vit_tiny_patch16_224",
    "det_shapes",
}


def test_deployable_names() -> None:
    assert set(DEPLOYABLE_NAMES) == EXPECTED_NAMES


@pytest.mark.parametrize("name", DEPLOYABLE_NAMES)
def test_default_spec_is_consistent(name: str) -> None:
    spec = default_spec(name)
    assert spec.name == name and spec.trained is False
    assert (spec.io.layout == "NCHW") == (spec.kind in ("image", "detection"))
    assert spec.serving.max_batch_size == (8 if spec.kind == "video" else 16)
    assert ModelSpec.model_validate_json(spec.model_dump_json()) == spec  # JSON round trip


def test_vit_tiny_spec() -> None:
    spec = default_spec("vit_tiny_patch16_224")
    assert spec.io.input_shape == (3, 224, 224) and spec.num_classes == 1000 and spec.io.labels[0] == "class_0"
    assert spec.io.mean == pytest.approx((0.485, 0.456, 0.406)) and spec.io.std == pytest.approx((0.229, 0.224, 0.225))


def test_input_facts_cannot_be_overridden() -> None:
    with pytest.raises(ValueError, match="img_size"):
        default_spec("vit_digits", img_size=64)
    with pytest.raises(UnknownModelError, match="vit_digits"):
        default_spec("no_such_model")


@pytest.fixture(scope="module", params=DEPLOYABLE_NAMES)
def tiny_spec(request: pytest.FixtureRequest) -> ModelSpec:
    return default_spec(request.param, **tiny_arch_overrides(request.param))


def test_build_model_follows_spec(tiny_spec: ModelSpec) -> None:
    model = build_model(tiny_spec)
    assert not model.training
    assert tuple(model.input_shape) == tiny_spec.io.input_shape
    pixels = torch.zeros((2, *tiny_spec.io.input_shape), dtype=torch.uint8)
    with torch.inference_mode():
        outputs = model(pixels)
    if tiny_spec.kind == "detection":  # boxes, scores, classes: K candidates each
        assert [tuple(o.shape) for o in outputs] == [
            (2, tiny_spec.io.max_detections, 4),
            *[(2, tiny_spec.io.max_detections)] * 2,
        ]
    else:
        assert outputs.shape == (2, tiny_spec.num_classes)
    torch.testing.assert_close(model.normalize.mean.flatten(), torch.tensor(tiny_spec.io.mean))
    torch.testing.assert_close(model.normalize.std.flatten(), torch.tensor(tiny_spec.io.std))


def test_save_load_round_trip_is_exact(tiny_spec: ModelSpec, tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_model(tiny_spec)
    metrics = TrainingMetrics(
        test_accuracy=0.5, confusion_matrix=[[1, 0], [0, 1]], chance_accuracy=0.5, test_samples=2, epochs=1.0,
        train_seconds=1.0, samples_per_second=2.0, final_train_loss=float("nan"),
    )  # fmt: skip
    run_dir = save_run(tmp_path / tiny_spec.name, model, tiny_spec, metrics)
    assert {path.name for path in run_dir.iterdir()} == {"model.safetensors", "spec.json", "metrics.json"}
    loaded, loaded_spec = load_run(run_dir)
    assert loaded_spec == tiny_spec
    assert json.loads((run_dir / "metrics.json").read_text())["confusion_matrix"] == [[1, 0], [0, 1]]
    again = load_metrics(run_dir)  # NaN (a run without a step) survives the round trip
    assert again is not None and again.model_dump(exclude={"final_train_loss"}) == metrics.model_dump(
        exclude={"final_train_loss"}
    )
    assert math.isnan(again.final_train_loss)
    original_state, loaded_state = model.state_dict(), loaded.state_dict()
    assert original_state.keys() == loaded_state.keys()
    for key, tensor in original_state.items():
        assert torch.equal(tensor, loaded_state[key]), key
    pixels = torch.randint(0, 256, (2, *tiny_spec.io.input_shape), dtype=torch.uint8)
    with torch.inference_mode():
        expected, again_out = model(pixels), loaded(pixels)
    for one, other in zip(*(o if isinstance(o, tuple) else (o,) for o in (expected, again_out)), strict=True):
        assert torch.equal(one, other)


def test_unreadable_metrics_are_a_data_error(tmp_path: Path) -> None:
    assert load_metrics(tmp_path) is None
    (tmp_path / "metrics.json").write_text('{"confusion_matrix": []}\n')
    with pytest.raises(DataError, match="test_accuracy"):
        load_metrics(tmp_path)


def test_load_run_rejects_missing_or_mismatched_weights(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="spec.json"):
        load_run(tmp_path)
    spec = default_spec("vit_digits", **tiny_arch_overrides("vit_digits"))
    save_run(tmp_path, build_model(spec), spec)
    bigger = default_spec("vit_digits", **{**tiny_arch_overrides("vit_digits"), "embed_dim": 32})
    bigger.save(tmp_path)
    with pytest.raises(DataError, match="do not fit"):
        load_run(tmp_path)


def test_resolve_prefers_a_trained_run(tmp_path: Path) -> None:
    name = "cnn_cbam_digits"
    with pytest.raises(MissingCheckpointError, match=str(tmp_path / name)):
        resolve(name, runs_dir=tmp_path)  # never silent random weights for a trainable model
    model, spec = resolve(name, runs_dir=tmp_path, allow_untrained=True)
    assert spec == default_spec(name) and not spec.trained
    again, _ = resolve(name, runs_dir=tmp_path, allow_untrained=True)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))

    tiny = default_spec(name, **tiny_arch_overrides(name)).replace(trained=True)
    save_run(tmp_path / name, build_model(tiny), tiny)
    _, resolved_spec = resolve(name, runs_dir=tmp_path)
    assert resolved_spec == tiny
    _, by_path = resolve(str(tmp_path / name))
    assert by_path == tiny
    with pytest.raises(UnknownModelError, match="vit_digits"):
        resolve("nope", runs_dir=tmp_path)
    _, untrained_on_purpose = resolve("vit_tiny_patch16_224", runs_dir=tmp_path)  # not trainable here: allowed
    assert not untrained_on_purpose.trained
