"""Repository entries follow the contract the serving side relies on, and new exports add versions."""

from __future__ import annotations

from pathlib import Path

import pytest
from export_fixtures import tiny_spec

from attnserve.errors import UserInputError
from attnserve.repository.config import parse_pbtxt
from attnserve.repository.entries import (
    read_entry_spec,
    write_explain_entry,
    write_model_entry,
    write_trt_entry,
)
from attnserve.spec import ModelSpec


def _parsed(entry: Path):
    return parse_pbtxt((entry / "config.pbtxt").read_text())


def test_model_entry_follows_the_contract(tmp_path: Path, tiny_onnx: Path) -> None:
    spec = tiny_spec().with_serving(max_queue_size=17, queue_timeout_us=1234, instance_count=2, max_queue_delay_us=300)
    entry = write_model_entry(spec, tiny_onnx, tmp_path / "repo")
    assert entry == tmp_path / "repo" / "tiny"
    config = _parsed(entry)
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == spec.serving.max_batch_size
    (pixels,) = config.input
    assert (pixels.name, pixels.data_type, pixels.format, list(pixels.dims)) == (
        "pixels",
        2,
        2,
        list(spec.io.input_shape),
    )
    (logits,) = config.output
    assert (logits.name, logits.data_type, list(logits.dims), logits.label_filename) == (
        "logits",
        11,
        [4],
        "labels.txt",
    )
    batching = config.dynamic_batching
    assert list(batching.preferred_batch_size) == list(spec.serving.preferred_batch_sizes)
    assert batching.max_queue_delay_microseconds == 300
    assert batching.default_queue_policy.max_queue_size == 17
    assert batching.default_queue_policy.default_timeout_microseconds == 1234
    assert config.instance_group[0].count == 2 and config.instance_group[0].kind == 0  # unset: KIND_AUTO
    assert (entry / "labels.txt").read_text().splitlines() == list(spec.io.labels)
    assert (entry / "1" / "model.onnx").read_bytes() == tiny_onnx.read_bytes()
    assert ModelSpec.model_validate_json(config.parameters["attnserve_spec"].string_value) == spec
    assert read_entry_spec(entry) == spec


def test_new_exports_go_to_a_new_version(tmp_path: Path, tiny_onnx: Path) -> None:
    spec = tiny_spec()
    write_model_entry(spec, tiny_onnx, tmp_path)
    write_model_entry(spec, tiny_onnx, tmp_path)
    write_model_entry(spec, tiny_onnx, tmp_path, version=7)
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir() if p.is_dir()) == ["1", "2", "7"]
    write_model_entry(spec, tiny_onnx, tmp_path)
    assert (tmp_path / "tiny" / "8" / "model.onnx").is_file()


def test_batching_off_leaves_dynamic_batching_out(tmp_path: Path, tiny_onnx: Path) -> None:
    entry = write_model_entry(tiny_spec().with_serving(dynamic_batching=False), tiny_onnx, tmp_path)
    assert not _parsed(entry).HasField("dynamic_batching")


def test_explain_and_trt_entries(tmp_path: Path, tiny_onnx: Path) -> None:
    spec = tiny_spec()
    explain = write_explain_entry(spec, tiny_onnx, tmp_path, attention_dims=(4, 4))
    config = _parsed(explain)
    assert config.name == "tiny_explain" and [o.name for o in config.output] == ["logits", "attention_map"]
    assert list(config.output[1].dims) == [4, 4] and config.output[1].data_type == 11
    plan = tmp_path / "engine.plan"
    plan.write_bytes(b"not really an engine")
    trt = write_trt_entry(spec, plan, tmp_path)
    trt_config = _parsed(trt)
    assert trt_config.platform == "tensorrt_plan" and trt_config.max_batch_size == spec.serving.max_batch_size
    assert (trt / "1" / "model.plan").is_file()


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        write_model_entry(tiny_spec(), tmp_path / "missing.onnx", tmp_path)


def test_kept_ort_graph_goes_beside_the_portable_one(tmp_path: Path, tiny_onnx: Path) -> None:
    from attnserve.repository.runner import MODEL_FILE_PARAMETER

    optimised = tmp_path / "model.ort.onnx"
    optimised.write_bytes(tiny_onnx.read_bytes())  # stands in for the optimised graph: the writer only places it
    entry = write_model_entry(tiny_spec(), tiny_onnx, tmp_path / "repo", cpu_onnx_path=optimised)
    config = _parsed(entry)
    assert config.parameters[MODEL_FILE_PARAMETER].string_value == "model.ort.onnx"  # the CPU runner's file
    assert (entry / "1" / "model.onnx").read_bytes() == tiny_onnx.read_bytes()  # NVIDIA's container: portable
    assert (entry / "1" / "model.ort.onnx").is_file()
    plain = _parsed(write_model_entry(tiny_spec(), tiny_onnx, tmp_path / "repo2"))
    assert plain.parameters[MODEL_FILE_PARAMETER].string_value == "model.onnx"
