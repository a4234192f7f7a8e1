"""CPU variants and the optimize gate, on the tiny exported classifier (real ONNX Runtime, real OpenVINO).

The gate tests use variants that really lose accuracy, never invented numbers:
- a static int8 (Q/DQ) model calibrated on black images only: its activation ranges are far too narrow, so
  it clips and loses top-1 points (the failure an unrepresentative calibration set causes in practice);
- int8 and bf16 logits are never bit-identical to fp32, so a cosine budget of 1.0 cannot be met by them.
Held-out labels are the fp32 model's own predictions ("teacher labels"): fp32 scores 100% by construction
and every top-1 flip of a variant is a point lost.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from export_fixtures import tiny_spec

from attnserve.errors import ShapeError, UserInputError
from attnserve.export.cpu_choice import (
    ChoiceData,
    ChoiceSettings,
    CpuChoiceReport,
    VariantRow,
    choose_cpu_variant,
    logits_parity,
    pick_fastest,
    render_markdown,
    serve_pick,
)
from attnserve.export.cpu_variants import (
    BASELINE_VARIANT,
    CPU_VARIANTS,
    INT8_DYNAMIC_FILENAME,
    INT8_QDQ_FILENAME,
    quantize_int8_dynamic,
    variant_by_name,
    variant_for,
)
from attnserve.runtimes.openvino_session import openvino_supports
from attnserve.runtimes.session import open_session

EVAL_SAMPLES = 256
INT8_QDQ_VARIANTS = ("onnxruntime_int8_qdq", "openvino_int8_qdq")


@pytest.fixture(scope="module")
def eval_pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (EVAL_SAMPLES, *tiny_spec().io.input_shape), dtype=np.uint8)


@pytest.fixture(scope="module")
def teacher_labels(tiny_onnx: Path, eval_pixels: np.ndarray) -> np.ndarray:
    session = open_session("onnxruntime", tiny_onnx, intra_op_threads=1)
    return session.run({"pixels": eval_pixels})["logits"].argmax(axis=1)


@pytest.fixture(scope="module")
def badly_calibrated(
    tiny_onnx: Path, eval_pixels: np.ndarray, teacher_labels: np.ndarray, tmp_path_factory: pytest.TempPathFactory
) -> CpuChoiceReport:
    """The whole table for a 'trained' tiny model whose Q/DQ variants were calibrated on black images."""
    black = np.zeros((8, *tiny_spec().io.input_shape), dtype=np.uint8)
    return choose_cpu_variant(
        tiny_spec(trained=True),
        tiny_onnx,
        tmp_path_factory.mktemp("variants"),
        ChoiceData(calibration_pixels=black, eval_pixels=eval_pixels, eval_labels=teacher_labels),
        ChoiceSettings(repeats=1, min_seconds=0.05),
    )


def _copy_rows(report: CpuChoiceReport) -> list[VariantRow]:
    return [row.model_copy(deep=True) for row in report.rows]


def test_every_cpu_variant_builds_loads_and_keeps_parity(badly_calibrated: CpuChoiceReport) -> None:
    report = badly_calibrated
    for variant in CPU_VARIANTS:
        row = report.row(variant.name)
        if variant.runtime == "openvino" and not openvino_supports(variant.precision):
            assert row.status == "skipped" and "bf16" in (row.reason or "")
            continue
        assert row.status == "ok", f"{row.variant}: {row.reason}"
        assert row.throughput_img_s and row.throughput_img_s > 0 and row.latency_b1_ms and row.latency_b1_ms > 0
        assert (Path(report.variants_dir) / row.model_file).is_file()
    assert report.row("openvino_fp32").max_abs_diff < 1e-4  # same graph, another runtime
    assert report.row("onnxruntime_int8_dynamic").cosine_mean > 0.99  # well-behaved int8
    if report.row("openvino_bf16").status == "ok":
        assert report.row("openvino_bf16").execution_precision == "bf16"  # read back from OpenVINO
        assert report.row("openvino_bf16").cosine_mean > 0.99
    assert report.fp32_accuracy_percent == 100.0  # teacher labels
    for name in ("tensorrt_fp16", "tensorrt_int8_qdq"):
        assert report.row(name).status == "skipped" and report.row(name).reason


def test_int8_files_quantise_matmul_only_and_keep_attention(badly_calibrated: CpuChoiceReport, tiny_onnx: Path) -> None:
    fp32_ops = {node.op_type for node in onnx.load(str(tiny_onnx)).graph.node}
    assert "Attention" in fp32_ops  # opset 23 fused attention: the op the QAttention trap rewrites
    for model_file, quantised_op in ((INT8_DYNAMIC_FILENAME, "MatMulInteger"), (INT8_QDQ_FILENAME, "QuantizeLinear")):
        graph = onnx.load(str(Path(badly_calibrated.variants_dir) / model_file)).graph
        ops = {node.op_type for node in graph.node}
        assert quantised_op in ops, f"{model_file} has no {quantised_op}: {sorted(ops)}"
        assert "Attention" in ops and "QAttention" not in ops


def test_accuracy_gate_rejects_the_badly_calibrated_variant(badly_calibrated: CpuChoiceReport) -> None:
    report = badly_calibrated
    budget = report.budget
    assert report.gate == "accuracy" and budget == tiny_spec().runtime.accuracy_budget_points
    for name in INT8_QDQ_VARIANTS:
        row = report.row(name)
        assert row.accuracy_drop_points > budget, f"premise: black-image calibration must lose points, {row}"
        assert row.within_gate is False and not row.picked and "outside the gate" in row.why
    picked = report.row(report.picked)
    assert picked.within_gate and picked.picked
    within = [row for row in report.rows if row.within_gate]
    assert all(row.accuracy_drop_points <= budget for row in within)
    assert picked.throughput_img_s == max(row.throughput_img_s for row in within)


def test_zero_budget_rejects_every_variant_that_loses_a_sample(badly_calibrated: CpuChoiceReport) -> None:
    rows = _copy_rows(badly_calibrated)
    picked = pick_fastest(rows, "accuracy", 0.0)
    losers = [row for row in rows if row.status == "ok" and row.accuracy_drop_points > 0]
    assert losers, "premise: some variant loses accuracy"
    assert all(row.within_gate is False and not row.picked for row in losers)
    assert picked.accuracy_drop_points <= 0


def test_cosine_gate_of_an_untrained_model(
    tiny_onnx: Path, eval_pixels: np.ndarray, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Untrained: no labels; a cosine budget of 1.0 cannot be met by int8, a loose one admits it."""
    calibration = np.random.default_rng(1).integers(0, 256, (16, *tiny_spec().io.input_shape), dtype=np.uint8)
    report = choose_cpu_variant(
        tiny_spec().with_runtime(cosine_budget=1.0),
        tiny_onnx,
        tmp_path_factory.mktemp("untrained"),
        ChoiceData(calibration_pixels=calibration, eval_pixels=eval_pixels[:64]),
        ChoiceSettings(repeats=1, min_seconds=0.02),
    )
    assert report.gate == "cosine" and report.budget == 1.0 and report.row("onnxruntime_fp32").accuracy_percent is None
    for name in ("onnxruntime_int8_dynamic", *INT8_QDQ_VARIANTS):
        row = report.row(name)
        assert row.cosine_mean < 1.0, "premise: int8 logits differ from fp32"
        assert row.within_gate is False and not row.picked
    assert not report.picked.startswith(("onnxruntime_int8", "openvino_int8"))
    loose = _copy_rows(report)
    pick_fastest(loose, "cosine", 0.5)
    assert all(row.within_gate for row in loose if row.status == "ok")


def test_table_is_written_as_json_and_markdown(badly_calibrated: CpuChoiceReport) -> None:
    variants_dir = Path(badly_calibrated.variants_dir)
    table = CpuChoiceReport.model_validate(json.loads((variants_dir / "cpu_variants.json").read_text()))
    assert table.picked == badly_calibrated.picked and len(table.rows) == len(badly_calibrated.rows)
    markdown = (variants_dir / "cpu_variants.md").read_text()
    assert markdown == render_markdown(badly_calibrated)
    for row in table.rows:
        assert f"| {row.variant} | {row.status} |" in markdown
    assert "shared machine" in markdown


def test_serve_pick_writes_an_entry_the_runtime_view_serves(badly_calibrated: CpuChoiceReport, tmp_path: Path) -> None:
    from attnserve.repository.config import read_config
    from attnserve.repository.entries import read_entry_spec
    from attnserve.serving.runtime_view import build_runtime_repository

    spec = tiny_spec(trained=True)
    report = badly_calibrated.model_copy(deep=True)
    qdq = variant_by_name("openvino_int8_qdq")  # serve a non-default file to see model_file travel
    report = report.model_copy(
        update={
            "picked": qdq.name,
            "picked_runtime": qdq.runtime,
            "picked_precision": qdq.precision,
            "picked_model_file": qdq.model_file,
        }
    )
    entry = serve_pick(spec, report, tmp_path / "repo")
    served = read_entry_spec(entry)
    assert (served.runtime.cpu_runtime, served.runtime.cpu_precision) == ("openvino", "int8")
    assert (entry / "1" / "model.onnx").is_file() and (entry / "1" / INT8_QDQ_FILENAME).is_file()
    assert (entry / "cpu_variants.json").is_file()

    view, loaded, _ = build_runtime_repository(tmp_path / "repo", tmp_path / "work")
    parameters = {key: value.string_value for key, value in read_config(view / spec.name).parameters.items()}
    assert loaded == [spec.name]
    assert parameters["runtime"] == "openvino" and parameters["precision"] == "int8"
    assert Path(parameters["model_file"]) == (entry / "1" / INT8_QDQ_FILENAME).resolve()
    session = open_session(parameters["runtime"], parameters["model_file"], intra_op_threads=1, options=parameters)
    assert session.run({"pixels": np.zeros((2, *spec.io.input_shape), np.uint8)})["logits"].shape == (
        2,
        spec.num_classes,
    )


def test_variant_lookup() -> None:
    assert variant_for("onnxruntime", "fp32") == BASELINE_VARIANT
    assert variant_for("openvino", "int8", INT8_QDQ_FILENAME).name == "openvino_int8_qdq"
    with pytest.raises(UserInputError, match="known variants"):
        variant_by_name("tflite_int4")
    with pytest.raises(UserInputError, match="no CPU variant"):
        variant_for("openvino", "int8", "model.onnx")


def test_bad_inputs_say_what_was_expected(tiny_onnx: Path, eval_pixels: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="one held-out label per evaluation sample"):
        choose_cpu_variant(
            tiny_spec(trained=True),
            tiny_onnx,
            tmp_path,
            ChoiceData(calibration_pixels=eval_pixels[:4], eval_pixels=eval_pixels[:8]),
            ChoiceSettings(measure_speed=False),
        )
    with pytest.raises(ShapeError, match=r"shape \(N>=1, 3, 16, 16\)"):
        choose_cpu_variant(
            tiny_spec(),
            tiny_onnx,
            tmp_path,
            ChoiceData(calibration_pixels=eval_pixels[:4], eval_pixels=np.zeros((4, 3, 8, 8), np.uint8)),
            ChoiceSettings(measure_speed=False),
        )
    with pytest.raises(UserInputError, match="uint8"):
        choose_cpu_variant(
            tiny_spec(),
            tiny_onnx,
            tmp_path,
            ChoiceData(calibration_pixels=eval_pixels[:4].astype(np.float32), eval_pixels=eval_pixels[:4]),
            ChoiceSettings(measure_speed=False),
        )
    with pytest.raises(UserInputError, match="does not exist"):
        quantize_int8_dynamic(tmp_path / "missing.onnx", tmp_path / "out.onnx")
    with pytest.raises(UserInputError, match=r"\(N, classes\)"):
        logits_parity(np.zeros((2, 4)), np.zeros((3, 4)))


def test_optimize_command_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`attnserve optimize vit_digits`: export, variants, table in runs/ and reports/, the entry serves the pick."""
    from attnserve.cli import main
    from attnserve.repository.entries import read_entry_spec

    runs, repository, reports = tmp_path / "runs", tmp_path / "repo", tmp_path / "reports"
    exit_code = main(
        [
            "optimize",
            "vit_digits",
            "--runs-dir",
            str(runs),
            "--repository",
            str(repository),
            "--reports-dir",
            str(reports),
            "--repeats",
            "1",
            "--min-seconds",
            "0.02",
            "--eval-samples",
            "16",
            "--calibration-samples",
            "8",
        ]
    )
    assert exit_code == 0
    table = CpuChoiceReport.model_validate_json((reports / "vit_digits.json").read_text())
    assert (runs / "vit_digits" / "cpu_variants" / "cpu_variants.json").is_file()
    served = read_entry_spec(repository / "vit_digits")
    assert (served.runtime.cpu_runtime, served.runtime.cpu_precision) == (table.picked_runtime, table.picked_precision)
    assert f"picked {table.picked}" in capsys.readouterr().out

    assert main(["optimize", "vit_digits", "--budget-points", "-1", "--runs-dir", str(runs)]) == 1
    assert "--budget-points must be >= 0, got -1" in capsys.readouterr().err
