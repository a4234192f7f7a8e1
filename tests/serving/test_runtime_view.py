"""The CPU runtime view: ONNX entries become python-backend twins, TensorRT entries are left out."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnserve.errors import UnknownModelError, UnknownRuntimeError
from attnserve.repository.config import ModelConfig, read_config
from attnserve.repository.entries import served_file
from attnserve.repository.layout import repository_entries
from attnserve.repository.runner import MODEL_FILE_PARAMETER, PRECISION_PARAMETER, RUNTIME_PARAMETER
from attnserve.serving.runtime_view import build_runtime_repository


def test_onnx_entry_keeps_name_io_batching_queue_and_instances(tiny_repository: Path, tmp_path: Path) -> None:
    view, loaded, skipped = build_runtime_repository(tiny_repository, tmp_path / "view")
    source, runner = read_config(tiny_repository / "tiny"), read_config(view / "tiny")
    assert source.platform == "onnxruntime_onnx"
    assert runner.backend == "python" and not runner.platform
    assert runner.name == source.name and runner.max_batch_size == source.max_batch_size
    assert list(runner.input) == list(source.input) and list(runner.output) == list(source.output)
    assert runner.dynamic_batching == source.dynamic_batching
    assert runner.dynamic_batching.default_queue_policy.max_queue_size == 256
    assert [g.count for g in runner.instance_group] == [2]
    assert runner.parameters[RUNTIME_PARAMETER].string_value == "onnxruntime"
    assert Path(runner.parameters[MODEL_FILE_PARAMETER].string_value) == tiny_repository / "tiny" / "1" / "model.onnx"
    assert (view / "tiny" / "1" / "model.py").is_file() and (view / "tiny" / "labels.txt").is_file()
    assert not (view / "tiny" / "1" / "model.onnx").exists()  # read in place, not copied
    assert sorted(loaded) == ["tiny", "tiny_pipeline", "tiny_preprocess"]
    assert "tiny_trt" in skipped and "GPU" in skipped["tiny_trt"]
    assert not (view / "tiny_trt").exists()


def test_requested_pipeline_pulls_in_its_steps_and_runtime_override_applies(
    tiny_repository: Path, tmp_path: Path
) -> None:
    view, loaded, skipped = build_runtime_repository(
        tiny_repository, tmp_path / "view", ["tiny_pipeline"], runtime="openvino"
    )
    assert sorted(loaded) == ["tiny", "tiny_pipeline", "tiny_preprocess"] and skipped == {}
    assert read_config(view / "tiny").parameters[RUNTIME_PARAMETER].string_value == "openvino"


def test_unknown_model_lists_the_known_ones(tiny_repository: Path, tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError, match=r"unknown model 'vit'.*tiny_pipeline"):
        build_runtime_repository(tiny_repository, tmp_path / "view", ["vit"])


def test_pipeline_whose_model_is_left_out_is_skipped_with_the_reason(tiny_repository: Path, tmp_path: Path) -> None:
    # point the pipeline at the TensorRT entry: the CPU view cannot serve it, so the ensemble cannot load
    config_path = tiny_repository / "tiny_pipeline" / "config.pbtxt"
    config_path.write_text(config_path.read_text().replace('model_name: "tiny"\n', 'model_name: "tiny_trt"\n'))
    view, loaded, skipped = build_runtime_repository(tiny_repository, tmp_path / "view", ["tiny_pipeline"])
    assert "tiny_pipeline" not in loaded and "tiny_trt" in skipped[("tiny_pipeline")]


def test_every_written_config_reads_back_as_the_same_typed_config(tiny_repository: Path, tmp_path: Path) -> None:
    view, _, _ = build_runtime_repository(tiny_repository, tmp_path / "view")
    for repository in (tiny_repository, view):
        for name, model_dir in repository_entries(repository).items():
            config = read_config(model_dir)
            assert config.name == name
            assert ModelConfig.from_pbtxt(config.to_pbtxt()) == config  # typed write and read agree


def test_the_spec_drives_the_runner_and_an_unknown_runtime_has_its_own_error(
    tiny_repository: Path, tmp_path: Path
) -> None:
    from serving_helpers import tiny_spec

    from attnserve.repository.entries import write_model_entry

    spec = tiny_spec().with_runtime(cpu_runtime="openvino", cpu_precision="fp32")
    entry = write_model_entry(spec, served_file(tiny_repository / "tiny"), tmp_path / "repo")
    view, loaded, _ = build_runtime_repository(tmp_path / "repo", tmp_path / "view")
    runner = read_config(view / "tiny").parameters
    assert loaded == ["tiny"] and entry.name == "tiny"
    assert (runner[RUNTIME_PARAMETER].string_value, runner[PRECISION_PARAMETER].string_value) == ("openvino", "fp32")
    with pytest.raises(UnknownRuntimeError, match=r"unknown runtime 'tensorflow'; known runtimes: onnxruntime"):
        build_runtime_repository(tiny_repository, tmp_path / "view2", runtime="tensorflow")
