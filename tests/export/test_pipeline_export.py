"""The whole pipeline on a tiny module: stages recorded, fp16 verified, TensorRT skipped with its reason,
one value drives max_batch_size, the ONNX batch axis and the TensorRT profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from export_fixtures import TINY_TRANSFORMER, TinySdpaClassifier, tiny_spec

from attnserve.cli import main
from attnserve.export.fp16 import modelopt_available
from attnserve.export.onnx2trt import count_fused_attention_layers, profile_for, tensorrt_unavailable, trtexec_command
from attnserve.export.pipeline import ExportOptions, ExportReport, export_module
from attnserve.export.verify import verify_onnx
from attnserve.repository.config import parse_pbtxt
from attnserve.repository.entries import trt_config_for
from attnserve.spec import ModelSpec

MAX_BATCH = 6  # deliberately not a power of two: a mismatch anywhere would show


@pytest.fixture(scope="module")
def pipeline_report(tmp_path_factory: pytest.TempPathFactory, tiny_model: TinySdpaClassifier) -> ExportReport:
    root = tmp_path_factory.mktemp("pipeline")
    spec = tiny_spec().with_serving(max_batch_size=MAX_BATCH, preferred_batch_sizes=(2, 4))
    options = ExportOptions(fp16=True, tensorrt=True)
    return export_module(tiny_model, spec, root / "repo", work_dir=root / "work", options=options)


def test_stages_are_recorded_in_order(pipeline_report: ExportReport) -> None:
    names = [s.stage for s in pipeline_report.stages]
    assert names == ["onnx", "verify", "ort_optimize", "explain", "fp16", "onnx2trt", "repository"]
    saved = json.loads((pipeline_report.work_dir / "export_report.json").read_text())
    assert [s["stage"] for s in saved["stages"]] == names
    ort = pipeline_report.ort
    assert ort is not None and ort.parity.ok and ort.speedup > 0 and ort.reason
    assert set(pipeline_report.entries) >= {"tiny", "tiny_explain"}


def test_tensorrt_is_built_or_skipped_with_the_reason(pipeline_report: ExportReport) -> None:
    trt = pipeline_report.tensorrt
    assert trt is not None
    reason = tensorrt_unavailable()
    if reason is not None:
        assert trt.stage.status == "skipped" and trt.stage.reason == reason
        assert "tiny_trt" not in pipeline_report.entries  # no engine, no entry Triton could not load
    else:  # pragma: no cover - GPU hosts with TensorRT
        assert trt.stage.status == "ok" and trt.plan_path.is_file() and "tiny_trt" in pipeline_report.entries
    assert trt.profile.batch_range == (1, 4, MAX_BATCH)
    assert "--maxShapes=pixels:6x3x16x16" in trt.trtexec and "--minShapes=pixels:1x3x16x16" in trt.trtexec


@pytest.mark.skipif(modelopt_available() is not None, reason=str(modelopt_available()))
def test_fp16_onnx_is_written_and_verified(pipeline_report: ExportReport) -> None:
    fp16 = pipeline_report.fp16
    assert fp16 is not None and fp16.ok, fp16.parity.failures if fp16 else None
    assert fp16.fp16_path.is_file() and fp16.fp16_initializers > 0
    assert 0 < fp16.max_abs_diff <= pipeline_report.spec.export.fp16_atol  # fp16 really changed the numbers
    assert fp16.top1_agreement >= 0.9 and fp16.samples == 1 + 2 + MAX_BATCH
    assert fp16.attention_nodes == 2  # the fused Attention nodes survive the conversion


def test_one_value_drives_max_batch_onnx_axis_and_trt_profile(pipeline_report: ExportReport) -> None:
    spec = pipeline_report.spec
    config = parse_pbtxt((pipeline_report.repository / "tiny" / "config.pbtxt").read_text())
    trt_config = parse_pbtxt(trt_config_for(spec).to_pbtxt())
    profile = profile_for(spec)
    assert config.max_batch_size == trt_config.max_batch_size == profile.max_shape[0] == spec.serving.max_batch_size
    assert profile.opt_shape[0] == max(config.dynamic_batching.preferred_batch_size) == spec.serving.opt_batch_size
    assert list(profile.max_shape[1:]) == list(config.input[0].dims)
    # the ONNX batch axis is symbolic and the graph runs (and matches) at exactly that max batch
    parity = pipeline_report.parity
    assert parity.batch_dim == "batch" and MAX_BATCH in parity.batch_sizes and parity.ok
    # the exported batch bound is the spec's max: the graph runs there, and one past it is outside the spec
    assert verify_onnx(pipeline_report.onnx.onnx_path, TinySdpaClassifier().eval(), spec, (MAX_BATCH,)).ok
    export_details = pipeline_report.onnx.stages[-1]
    assert export_details.status == "ok" and export_details.summary == "batch_dim=batch"


def test_engine_inspector_json_counts_mha_layers() -> None:
    info = {
        "Layers": [
            {"Name": "/blocks.0/attn/_gemm_mha_v2", "LayerType": "kgen", "TacticName": "sm90_xmma"},
            {"Name": "/blocks.0/mlp/fc1", "LayerType": "CaskGemm", "TacticName": "sm90_gemm"},
            "Reformatting CopyNode for Input Tensor 0 to fused_mha_1",
            {
                "Name": "Reformatting CopyNode for Output Tensor 0 to /blocks.1/attn/_gemm_mha_v2",
                "LayerType": "Reformat",
            },
            "/blocks.1/attn/fused_mha_1",
        ]
    }
    fused = count_fused_attention_layers(info)
    assert fused["fused_attention_layers"] == 2  # the two MHA kernels; the reformat copies next to them are not
    assert fused["fused_attention_names"] == ["/blocks.0/attn/_gemm_mha_v2", "/blocks.1/attn/fused_mha_1"]
    assert count_fused_attention_layers({"Layers": []})["fused_attention_layers"] == 0


def test_trtexec_line_takes_the_profile_from_the_spec() -> None:
    spec = tiny_spec().with_serving(max_batch_size=8, preferred_batch_sizes=(2, 8))
    line = trtexec_command(Path("m.onnx"), Path("m.plan"), spec)
    assert "--optShapes=pixels:8x3x16x16" in line and "--maxShapes=pixels:8x3x16x16" in line


def test_cli_exports_a_local_hf_config(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = dict(TINY_TRANSFORMER, num_hidden_layers=1)
    transformers.ViTConfig(**config, image_size=16, patch_size=8, num_labels=3).save_pretrained(tmp_path / "tiny_vit")
    code = main(
        [
            "export",
            "--hf",
            str(tmp_path / "tiny_vit"),
            "--hf-name",
            "hf_tiny",
            "--no-optimize",
            "--no-explain",
            "--repository",
            str(tmp_path / "repo"),
            "--runs-dir",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 0
    config = parse_pbtxt((tmp_path / "repo" / "hf_tiny" / "config.pbtxt").read_text())
    assert list(config.input[0].dims) == [3, 16, 16] and list(config.output[0].dims) == [3]
    assert main(["export"]) == 1  # nothing to export: a one-line error, not a traceback


def test_cli_exports_at_the_opset_the_spec_says(tmp_path: Path) -> None:
    """Regression: `--opset` defaulted to 23 and overrode a spec.json saying 18 (silently exported at 23)."""
    import onnx

    from attnserve.catalogue import default_spec
    from attnserve.models.checkpoint import build_model, save_run
    from attnserve.models.registry import tiny_arch_overrides

    spec = default_spec("vit_shapes", **tiny_arch_overrides("vit_shapes")).with_export(opset=18)
    run_dir = save_run(tmp_path / "runs" / "vit_shapes", build_model(spec), spec)
    options = ["--no-optimize", "--no-explain", "--repository", str(tmp_path / "repo"), "--runs-dir", str(tmp_path)]
    assert main(["export", str(run_dir), *options]) == 0
    entry = tmp_path / "repo" / "vit_shapes"
    graph = onnx.load(str(entry / "1" / "model.onnx"), load_external_data=False)
    assert {o.domain: o.version for o in graph.opset_import}[""] == 18
    assert ModelSpec.load(entry).export.opset == 18
    # an explicit option still wins, and the exported spec says so
    assert main(["export", str(run_dir), "--opset", "23", *options]) == 0
    graph = onnx.load(str(entry / "2" / "model.onnx"), load_external_data=False)
    assert {o.domain: o.version for o in graph.opset_import}[""] == 23 and ModelSpec.load(entry).export.opset == 23
